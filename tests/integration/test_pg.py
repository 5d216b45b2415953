#!/usr/bin/env python3
"""
The PostgreSQL queue as only a shared queue can be tested: several nodes
on one database, a node that dies or stalls in the middle of a delivery,
and a database that does not make commits durable.  (The accept, delivery
and queue CLI tests run on PostgreSQL too: tests/run.sh's pg: pass.)

Every test uses a real PostgreSQL started by the test file on 127.0.0.1 and
a high port (pgcluster), a database of its own, fake DNS and SMTP sinks
on loopback.
"""
import atexit
import base64
import json
import os
import pwd
import re
import select
import signal
import smtplib
import sqlite3
import subprocess
import threading
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mxtest  # noqa: E402
import pgcluster  # noqa: E402
import psycopg2  # noqa: E402
from fixtures import require_root  # noqa: E402
from mxtest import send, wait_state  # noqa: E402
from sluicetest import BIN, Server, free_port, main, poll_until, test  # noqa: E402

ZONE = """\
$ORIGIN test.
$TTL 60
dest            MX 10 mx.dest
mx.dest         A 127.0.0.2
"""

Env = mxtest.FileDNS(ZONE).env

_cluster = []


def cluster():
    """One PostgreSQL for the file, started when first needed."""
    if not _cluster:
        _cluster.append(pgcluster.Cluster())
        atexit.register(_cluster[0].close)
    return _cluster[0]


def node(env, uri, name, start=True, **cfg):
    """A sluice node on the queue at `uri`."""
    config = env.config(**cfg) if env is not None else {}
    config.update({"queue_path": uri, "node_name": name})
    srv = Server(config=config, start=False)
    srv.pg = srv.db = uri
    if start:
        srv.start()
    return srv


def refused_start(srv):
    """Start `srv` and see it exit with a failure (its log says why)."""
    srv.write_config()
    srv.logfile = open(srv.logpath, "ab")
    srv.start(wait=False)
    assert srv.proc.wait(30) != 0
    srv.proc = None
    srv.logfile.close()


def attempts(srv, qid):
    return srv.query("select node, status from attempts where msg_id = ? order by id", (qid,))


@test
def an_unsafe_database_is_refused_unless_allowed():
    """fsync = off, or synchronous_commit = off for sluice's database:
    sluice will not say 250 on such commits unless told to."""
    with pgcluster.Cluster(fsync=False) as unsafe:
        srv = node(None, unsafe.new_db(), "n1", start=False)
        refused_start(srv)
        log = srv.log()
        assert re.search(r"error main: fatal: queue postgresql://\S+: the database runs with "
                         r"fsync = off, synchronous_commit = on: mail acknowledged with 250 "
                         r"could be lost in a crash \(allow_unsafe_database = yes accepts "
                         r"that\)\n", log), log
        srv.config["allow_unsafe_database"] = "yes"
        srv.start()
        assert "warning queue: the queue database runs with fsync = off" in srv.log(), srv.log()
        qid = send(srv, ["u@dest.test"])
        assert srv.query("select count(*) from recipients where msg_id = ?", (qid,)) == [(1,)]
        srv.stop()
    # synchronous_commit = off set for the database alone.
    uri = cluster().new_db()
    pgcluster.run_sql(uri, "alter database %s set synchronous_commit = off"
                      % uri.rsplit("/", 1)[1], autocommit=True)
    srv = node(None, uri, "n2", start=False)
    refused_start(srv)
    assert "synchronous_commit = off" in srv.log(), srv.log()


@test
def the_password_in_queue_path_is_never_shown():
    """A password in the URI: the log, `sluice health` and the errors say
    "***" instead."""
    uri = cluster().new_db().replace("postgres@", "postgres:s3cret@")
    srv = node(None, uri, "n1")
    assert re.search(r"queue=postgresql://postgres:\*\*\*@127\.0\.0\.1:\d+/\w+ ",
                     srv.log()), srv.log()
    p = subprocess.run([BIN, "health", "-c", srv.cfgpath], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and "queue postgresql://postgres:***@" in p.stdout, p
    srv.stop()
    srv.config["queue_path"] = uri.rsplit(":", 1)[0] + ":1/nodb"
    srv.write_config()
    p = subprocess.run([BIN, "queue", "list", "-c", srv.cfgpath], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0 and "cannot connect to postgresql://postgres:***@" in p.stderr, p
    assert "s3cret" not in srv.log() + p.stdout + p.stderr


@test
def a_database_restart_during_intake_loses_no_acknowledged_mail():
    """pg_ctl restart while clients send: what got a 250 is in the queue,
    the rest got a 4xx, and the node carries on on new connections
    (intake, delivery and the listener)."""
    with Env() as env, pgcluster.Cluster() as pg:
        sink = env.sink("127.0.0.2")
        uri = pg.new_db()
        a = node(env, uri, "node-a")
        acked, refused, stop = [], [], threading.Event()

        def client(k):
            i = 0
            while not stop.is_set():
                i += 1
                rcpt = "c%d-%d@dest.test" % (k, i)
                try:
                    with smtplib.SMTP(a.host, a.port, timeout=30) as c:
                        c.ehlo("client.test")
                        c.mail("<sender@senders.test>")
                        c.rcpt("<%s>" % rcpt)
                        code, text = c.data(b"Subject: r\r\n\r\nhello\r\n")
                    m = re.search(rb"queued as (\w+)", text)
                    if m is None:
                        refused.append((code, text))
                    else:
                        acked.append((m.group(1).decode(), rcpt))
                except smtplib.SMTPResponseException as e:
                    refused.append((e.smtp_code, e.smtp_error))
                except smtplib.SMTPRecipientsRefused as e:
                    refused.extend(e.recipients.values())
                time.sleep(0.02)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            poll_until(lambda: len(acked) >= 20, 20, "mail before the restart")
            pg.stop()
            time.sleep(1)
            pg.start()
            n = len(acked)
            poll_until(lambda: len(acked) >= n + 20, 30, "mail after the restart")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert refused, "no session saw the database gone"
        assert all(code in (421, 451, 452) for code, _ in refused), refused
        # Clients are not told where the database is; the log says.
        assert not [t for _, t in refused if b"127.0.0.1" in t or b"port" in t], refused
        a.wait_log(r"warning queue: cannot reach the queue database: connection to server at "
                   r"\"127\.0\.0\.1\", port %d failed" % pg.port)
        ids = {qid for qid, _ in acked}
        stored = {r[0] for r in a.query("select id from messages")}
        assert ids <= stored, "acknowledged, not stored: %s" % sorted(ids - stored)
        # Everything acknowledged is delivered, once each.
        poll_until(lambda: a.query("select count(*) from recipients where state = 'delivered' "
                                   "and msg_id in (%s)" % ",".join("'%s'" % i for i in ids))
                   == [(len(ids),)], 60, "the acknowledged mail delivered")
        got = [r for e, _ in sink.messages() for r in e["rcpt_tos"]]
        assert sorted(set(got)) == sorted(set(r for _, r in acked) | set(got)), got
        assert len(got) == len(set(got)), "a recipient delivered twice"
        a.wait_log(r"info queue: reconnected to the queue database")


@test
def a_full_database_disk_answers_452():
    """The bodies' tablespace on a small tmpfs that fills up: 452 4.3.1
    (the client may try again later, or smaller), never a 250 without its
    row; room again, mail again."""
    require_root("it mounts a small tmpfs for a tablespace")
    uri = cluster().new_db()
    srv = node(None, uri, "n1")
    # In the cluster's folder: the server's user can reach it there.
    mnt = os.path.join(cluster().dir, "small-%d" % os.getpid())
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], check=True)
    space = "small_%d" % os.getpid()
    try:
        pw = pwd.getpwnam("postgres")
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        pgcluster.run_sql(uri, "create tablespace %s location '%s'" % (space, mnt),
                          autocommit=True)
        pgcluster.run_sql(uri, "alter table body_chunks set tablespace %s" % space)
        pgcluster.run_sql(uri, "alter index body_chunks_pkey set tablespace %s" % space)
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (1024 * 1024))
        # Incompressible: PostgreSQL compresses what it stores out of line.
        body = b"Subject: big\r\n\r\n" + base64.encodebytes(os.urandom(150 * 1024)).replace(
            b"\n", b"\r\n")
        acked, refused = [], []
        c = srv.connect()
        c.ehlo()
        for _ in range(40):
            c.cmd("MAIL FROM:<s@senders.test>", "250 ")
            c.cmd("RCPT TO:<u@dest.test>", "250 ")
            c.cmd("DATA", "354 ")
            c.send(body + b".\r\n")
            code, text = c.reply()
            if code == 250:
                acked.append(re.search(r"queued as (\w+)", text).group(1))
            else:
                refused.append(text)
                c.cmd("RSET", "250 ")
                if len(refused) >= 2:
                    break
        assert acked and refused, (len(acked), refused)
        assert all(t.startswith("452 4.3.1 Insufficient system storage") for t in refused), \
            refused
        assert {r[0] for r in srv.query("select id from messages")} == set(acked)
        os.unlink(filler)
        c.cmd("MAIL FROM:<s@senders.test>", "250 ")
        c.cmd("RCPT TO:<u@dest.test>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(b"Subject: small\r\n\r\nroom again\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
        c.cmd("QUIT", "221 ")
        srv.stop()
    finally:
        if srv.proc is not None:
            srv.kill9()
        pgcluster.run_sql(uri, "drop table if exists body_chunks cascade")
        pgcluster.run_sql(cluster().uri(), "drop tablespace if exists %s" % space,
                          autocommit=True)
        subprocess.run(["umount", mnt])
        os.rmdir(mnt)


@test
def a_locked_queue_is_unhealthy_within_the_timeout():
    """sluice health against a PostgreSQL queue another session keeps from
    writing: unhealthy, within --timeout, not at the lock's end."""
    srv = node(None, cluster().new_db(), "n1")
    con = psycopg2.connect(srv.db)
    try:
        con.cursor().execute("lock table nodes in exclusive mode")
        t0 = time.time()
        p = subprocess.run([BIN, "health", "--timeout", "2", "-c", srv.cfgpath],
                           capture_output=True, text=True, timeout=30)
        took = time.time() - t0
        assert p.returncode == 1 and re.match(
            r"unhealthy: queue postgresql://\S+: cannot write: 4\.3\.0 Queue write error "
            r"\(ERROR: +canceling statement due to lock timeout", p.stdout), p.stdout
        assert took < 5, took
    finally:
        con.rollback()
        con.close()
    p = subprocess.run([BIN, "health", "-c", srv.cfgpath], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout


def sqlite_rows(path, sql):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@test
def migrate_an_sqlite_queue_to_postgresql():
    """sluice queue migrate: every message, recipient state, body,
    attempt and policy of an SQLite queue copied into an empty PostgreSQL
    queue, where a node carries on with it; never into one that holds
    mail."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", rcpt_reply="451 4.7.1 try later")
        srv = env.server(retry_schedule="1h")
        ids = [send(srv, ["m%d@dest.test" % i]) for i in range(3)]
        for qid, i in zip(ids, range(3)):
            wait_state(srv, qid, "m%d@dest.test" % i, "deferred", attempts=1)
        held = send(srv, ["held@dest.test"])
        wait_state(srv, held, "held@dest.test", "deferred", attempts=1)
        subprocess.run([BIN, "queue", "hold", held, "-c", srv.cfgpath], check=True,
                       capture_output=True, timeout=30)
        srv.execute("insert into sts_policies values ('p.test', 'id1', 'enforce', "
                    "'mx.p.test', 86400, 1, 86401, 'version: STSv1', NULL)")
        assert srv.stop() == 0
        mx.stop()
        uri = cluster().new_db()
        p = subprocess.run([BIN, "queue", "migrate", uri, "-c", srv.cfgpath],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p
        assert p.stdout.startswith("migrated %s to %s:\n  4 messages\n  4 recipients\n"
                                   % (srv.db, uri)), p.stdout
        assert "  4 attempts\n" in p.stdout and "  1 MTA-STS policies\n" in p.stdout, p.stdout
        for table, cols in (("messages", "id, received_at, sender, size, stored_size, helo"),
                            ("recipients", "msg_id, rcpt_no, address, state, attempts, "
                                           "next_attempt_at, last_reply"),
                            ("body_chunks", "msg_id, seq, data"),
                            ("attempts", "id, msg_id, rcpt_no, at, status, reply"),
                            ("sts_policies", "domain, id, mode, policy_text")):
            q = "select %s from %s order by 1, 2" % (cols, table)
            want = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in sqlite_rows(srv.db, q)]
            assert pgcluster.run_sql(uri, q) == want, table
        # A node on the new queue: the held mail stays held, the rest goes.
        sink = env.sink("127.0.0.2")
        n = node(env, uri, "node-a")
        for qid, i in zip(ids, range(3)):
            subprocess.run([BIN, "queue", "retry", qid, "-c", n.cfgpath], check=True,
                           capture_output=True, timeout=30)
            wait_state(n, qid, "m%d@dest.test" % i, "delivered")
        assert n.query("select state from recipients where msg_id = ?", (held,)) == [("held",)]
        assert len(sink.messages()) == 3
        assert n.query("select max(id) from attempts")[0][0] > 4
        # Never into a queue that holds mail; never to a file.
        p = subprocess.run([BIN, "queue", "migrate", uri, "-c", srv.cfgpath],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and p.stderr == (
            "sluice: nothing was migrated: the PostgreSQL queue already holds 4 messages: "
            "a migration goes into an empty one\n"), p.stderr
        p = subprocess.run([BIN, "queue", "migrate", "/tmp/x.db", "-c", srv.cfgpath],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "goes to a PostgreSQL queue" in p.stderr, p.stderr


def documented_queries(postgresql):
    """docs/queries.md's SQL, as one backend runs it: a ```sql block,
    unless a ```sql postgresql twin follows it (on PostgreSQL)."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "queries.md")) as f:
        blocks = re.findall(r"^```(sql(?: postgresql)?)\n(.*?)^```", f.read(), re.S | re.M)
    out = []
    for i, (lang, text) in enumerate(blocks):
        twin = i + 1 < len(blocks) and blocks[i + 1][0] == "sql postgresql"
        if lang == "sql postgresql" and postgresql:
            out.append(text)
        elif lang == "sql" and not (postgresql and twin):
            out.append(text)
    return out


@test
def documented_queries_run_on_a_postgresql_queue():
    queries = documented_queries(True)
    assert len(queries) == 12, len(queries)
    with Env() as env:
        env.scripted("127.0.0.2")
        uri = cluster().new_db()
        srv = node(env, uri, "n1")
        done = send(srv, ["now@dest.test"])
        wait_state(srv, done, "now@dest.test", "delivered")
        srv.stop()
        srv.config["delivery_threads"] = "0"
        srv.start()
        held = send(srv, ["held@dest.test"])
        subprocess.run([BIN, "queue", "hold", held, "-c", srv.cfgpath], check=True,
                       capture_output=True, timeout=30)
        srv.execute("update messages set auth_user = 'alice' where id = ?", (done,))
        results = []
        for q in queries:
            try:
                results.append(pgcluster.run_sql(uri, q))
            except psycopg2.Error as e:
                raise AssertionError("query failed: %s\n%s" % (e, q))
        assert any(r and r[0][0] == held for r in results), results
        assert any(r and r[0][0] == "alice" and r[0][1] == 1 for r in results), results
        assert any(("dest.test", 1, 0, 0.0) == tuple(r[0][:4]) for r in results if r
                   and len(r[0]) == 4 and r[0][0] == "dest.test"), results


@test
def a_version_1_queue_is_upgraded_in_place_and_a_newer_one_refused():
    """The first schema (version 1, without the autovacuum settings of
    version 2) with mail in it: the next start upgrades it in place and
    keeps the mail; a schema newer than this sluice is refused."""
    uri = cluster().new_db()
    srv = node(None, uri, "n1")
    qid = send(srv, ["u@dest.test"])
    srv.stop()
    srv.execute_many([
        ("alter table recipients reset (autovacuum_vacuum_scale_factor, "
         "autovacuum_analyze_scale_factor)", ()),
        ("alter table body_chunks reset (autovacuum_vacuum_scale_factor)", ()),
        ("alter table attempts reset (autovacuum_vacuum_scale_factor)", ()),
        ("update sluice_schema set version = 1", ())])
    srv.start()
    srv.wait_log(r"info queue: upgraded the queue schema to version 2")
    assert srv.query("select version from sluice_schema") == [(2,)]
    opts = dict(srv.query("select relname, array_to_string(reloptions, ',') from pg_class "
                          "where relname in ('recipients', 'body_chunks', 'attempts')"))
    assert opts == {"recipients": "autovacuum_vacuum_scale_factor=0.02,"
                                  "autovacuum_analyze_scale_factor=0.05",
                    "body_chunks": "autovacuum_vacuum_scale_factor=0.02",
                    "attempts": "autovacuum_vacuum_scale_factor=0.05"}, opts
    assert srv.query("select state from recipients where msg_id = ?", (qid,)) == [("queued",)]
    srv.stop()
    srv.execute("update sluice_schema set version = 99")
    p = subprocess.run([BIN, "queue", "list", "-c", srv.cfgpath], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and re.search(r"has queue schema version 99, newer than this "
                                           r"sluice \(2\)", p.stderr), p.stderr
    refused_start(srv)
    assert "queue schema version 99 is newer than this sluice (2)" in srv.log(), srv.log()


@test
def an_sqlite_queue_has_no_nodes():
    srv = Server()
    p = subprocess.run([BIN, "queue", "nodes", "-c", srv.cfgpath], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and p.stdout == "" and p.stderr == (
        "sluice: an SQLite queue belongs to one node: only a PostgreSQL queue has nodes\n"), p


def send_many(srv, rcpts):
    """One message per recipient over one SMTP session; their IDs."""
    ids = []
    with smtplib.SMTP(srv.host, srv.port, timeout=30) as c:
        c.ehlo("client.test")
        for r in rcpts:
            c.mail("<sender@senders.test>")
            c.rcpt("<%s>" % r)
            code, text = c.data(b"Subject: m\r\n\r\nhello\r\n")
            assert code == 250, (code, text)
            ids.append(re.search(rb"queued as (\w+)", text).group(1).decode())
    return ids


@test
def two_nodes_deliver_each_recipient_exactly_once():
    """1,000 messages accepted by two nodes on one database, delivered by
    both: each recipient reaches the sink once, with one attempt."""
    n = 1000
    with Env() as env:
        sink = env.sink("127.0.0.2")
        uri = cluster().new_db()
        a = node(env, uri, "node-a", delivery_threads="4")
        b = node(env, uri, "node-b", delivery_threads="4")
        rcpts = ["r%d@dest.test" % i for i in range(n)]
        send_many(a, rcpts[0::2])
        send_many(b, rcpts[1::2])
        poll_until(lambda: a.query("select count(*) from recipients where state = 'delivered'")
                   == [(n,)], 120, "%d delivered" % n)
        got = sorted(r for env_, _ in sink.messages() for r in env_["rcpt_tos"])
        assert got == sorted(rcpts), "%d deliveries for %d recipients" % (len(got), n)
        rows = a.query("select node, count(*) from attempts group by node order by node")
        assert sum(c for _, c in rows) == n, rows
        assert [r[0] for r in rows] == ["node-a", "node-b"], rows
        accepted = a.query("select node, count(*) from messages group by node order by node")
        assert accepted == [("node-a", n // 2), ("node-b", n // 2)], accepted
        assert a.query("select name from nodes order by name") == [("node-a",), ("node-b",)]


@test
def destination_concurrency_holds_across_nodes():
    """destination_concurrency = 2 on two nodes: each takes 1, so the MX
    never sees more than 2 transactions at once; one node alone takes 2."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", data_delay=0.5)
        uri = cluster().new_db()
        cfg = dict(delivery_lease="3s", destination_concurrency="2", delivery_threads="4")
        a = node(env, uri, "node-a", **cfg)
        b = node(env, uri, "node-b", **cfg)
        for srv in (a, b):
            srv.wait_log(r"info deliver: 2 nodes deliver from the queue: each takes 1/2 of "
                         r"every destination's concurrency and rate")
        ids = [send(a if i % 2 else b, ["c%d@dest.test" % i]) for i in range(12)]
        for i, qid in enumerate(ids):
            wait_state(a, qid, "c%d@dest.test" % i, "delivered", timeout=30)
        assert mx.max_transactions <= 2, mx.max_transactions
        nodes = {r[0] for r in a.query("select node from attempts")}
        assert nodes == {"node-a", "node-b"}, nodes
        # node-b goes: node-a alone takes the whole concurrency again.
        b.stop()
        a.wait_log(r"info deliver: 1 node delivers from the queue: each takes 1/1", timeout=20)


@test
def a_dead_nodes_delivery_is_taken_over_when_its_lease_ends():
    """A node killed (-9) in the middle of a delivery: another node leaves
    the recipient alone while the lease runs, then delivers it."""
    with Env() as env:
        stall = mxtest.stalling_mx("127.0.0.2", env.port)
        try:
            uri = cluster().new_db()
            a = node(env, uri, "node-a", delivery_lease="4s", delivery_command_timeout="60s")
            qid = send(a, ["k@dest.test"])
            poll_until(lambda: select.select([stall], [], [], 0)[0], 10,
                       "the delivery connection")
            lease = a.query("select lease_owner, "
                            "lease_until - extract(epoch from now())::bigint "
                            "from recipients where msg_id = ?", (qid,))
            assert lease[0][0] == "node-a" and 0 < lease[0][1] <= 4, lease
            a.kill9()
        finally:
            stall.close()
        sink = env.sink("127.0.0.2")
        b = node(env, uri, "node-b")
        t0 = time.time()
        wait_state(b, qid, "k@dest.test", "delivered", timeout=20)
        # Not before the lease ran out (it was at most 4 s from the kill).
        assert attempts(b, qid) == [("node-b", "sent")], attempts(b, qid)
        assert len(sink.messages()) == 1
        assert time.time() - t0 < 15


def wakeups(srv):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.metrics_port,
                                timeout=10) as r:
        text = r.read().decode()
    return int(re.search(r"^sluice_queue_wakeups_total (\d+)$", text, re.M).group(1))


def insert_mail(srv, qid, rcpt):
    """A message put in by SQL, as an administrator could: no NOTIFY."""
    t = int(time.time())
    srv.execute_many([
        ("insert into messages (id, received_at, sender, size, stored_size, client_ip, "
         "protocol) values (?, ?, 's@senders.test', 20, 20, '127.0.0.1', 'ESMTP')", (qid, t)),
        ("insert into recipients (msg_id, rcpt_no, address, domain, next_attempt_at) "
         "values (?, 0, ?, 'dest.test', ?)", (qid, rcpt, t)),
        ("insert into body_chunks (msg_id, seq, data) values (?, 0, ?)",
         (qid, b"Subject: sql\r\n\r\nhello\r\n"))])


@test
def another_nodes_mail_wakes_delivery_and_polling_remains():
    """Node A only accepts; node B delivers.  A's commit wakes B (LISTEN/
    NOTIFY, counted in sluice_queue_wakeups_total); mail that no NOTIFY
    announces (put in by SQL) is still delivered, by polling; a listening
    connection that is killed is made again."""
    with Env() as env:
        sink = env.sink("127.0.0.2")
        uri = cluster().new_db()
        a = node(env, uri, "node-a", delivery_threads="0")
        b = node(env, uri, "node-b", start=False)
        b.metrics_port = free_port()
        b.config["metrics_listen"] = "127.0.0.1:%d" % b.metrics_port
        b.start()
        qid = send(a, ["w1@dest.test"])
        wait_state(b, qid, "w1@dest.test", "delivered")
        assert wakeups(b) >= 1, wakeups(b)
        # Without a NOTIFY: delivered all the same, and no wake-up counted.
        before = wakeups(b)
        insert_mail(b, "SQL0000000000001", "w2@dest.test")
        wait_state(b, "SQL0000000000001", "w2@dest.test", "delivered")
        assert wakeups(b) == before, (wakeups(b), before)
        # The listening connection is killed: B listens again.
        killed = pgcluster.run_sql(uri, "select pg_terminate_backend(pid) from pg_stat_activity "
                                   "where query = 'LISTEN sluice_mail'")
        assert killed == [(True,)], killed
        b.wait_log(r"warning queue: lost the connection that listens for other nodes' mail")
        b.wait_log(r"info queue: listening for other nodes' mail again")
        qid = send(a, ["w3@dest.test"])
        wait_state(b, qid, "w3@dest.test", "delivered")
        poll_until(lambda: wakeups(b) > before, 5, "a wake-up after listening again")
        assert sorted(r for e, _ in sink.messages() for r in e["rcpt_tos"]) == \
            ["w1@dest.test", "w2@dest.test", "w3@dest.test"]


@test
def a_live_nodes_long_delivery_keeps_its_lease():
    """A delivery that lasts longer than delivery_lease: the heartbeat
    renews the lease, and the other node leaves the recipient alone."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", data_delay=7)
        uri = cluster().new_db()
        a = node(env, uri, "node-a", delivery_lease="3s")
        b = node(env, uri, "node-b", delivery_lease="3s", delivery_threads="0")
        b.stop()
        b.config["delivery_threads"] = "2"
        qid = send(a, ["h@dest.test"])
        poll_until(lambda: mx.transactions > 0, 10, "the transaction at the MX")
        b.start()
        # sluice queue nodes: both nodes, and the lease node-a holds.
        p = subprocess.run([BIN, "queue", "nodes", "--json", "-c", b.cfgpath],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p
        nodes = {n["name"]: n for n in json.loads(p.stdout)}
        assert sorted(nodes) == ["node-a", "node-b"], nodes
        assert nodes["node-a"]["leases"] == 1 and nodes["node-b"]["leases"] == 0, nodes
        assert all(n["heartbeat_age_seconds"] <= 5 and n["version"] for n in nodes.values())
        p = subprocess.run([BIN, "queue", "nodes", "-c", a.cfgpath],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and re.search(
            r"^NODE +STARTED +HEARTBEAT +AGO +LEASES +VERSION\n"
            r"node-a +\S+Z +\S+Z +\d+s +1  \S+\n"
            r"node-b +\S+Z +\S+Z +\d+s +0  \S+\n\Z", p.stdout), p.stdout
        wait_state(a, qid, "h@dest.test", "delivered", timeout=20)
        time.sleep(1.5)
        assert attempts(a, qid) == [("node-a", "sent")], attempts(a, qid)
        assert mx.connections == 1 and len(mx.messages) == 1, (mx.connections, len(mx.messages))
        beats = a.query("select heartbeat_at - started_at from nodes where name = 'node-a'")
        assert beats[0][0] >= 6, beats


@test
def the_fence_refuses_the_late_result_of_a_stalled_node():
    """A node stopped (SIGSTOP) after sending the data: its lease ends,
    another node delivers; when the first wakes and has its answer, its
    attempt is not recorded (the lease is no longer its own)."""
    with Env() as env:
        # The MX answers the data after 2 s: time to stop the node first.
        mx = env.scripted("127.0.0.2", data_delay=2)
        uri = cluster().new_db()
        a = node(env, uri, "node-a", delivery_lease="3s")
        qid = send(a, ["f@dest.test"])
        poll_until(lambda: mx.transactions > 0, 10, "the transaction at the MX")
        time.sleep(0.5)  # the message's few octets are sent by then
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            b = node(env, uri, "node-b", delivery_lease="3s")
            wait_state(b, qid, "f@dest.test", "delivered", timeout=20)
            assert attempts(b, qid) == [("node-b", "sent")], attempts(b, qid)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        a.wait_log(r"warning queue: id=%s rcpt_no=0: the attempt is not recorded: the "
                   r"recipient is no longer this node's \(its lease passed to another node"
                   % qid, timeout=20)
        time.sleep(0.5)
        assert attempts(b, qid) == [("node-b", "sent")], attempts(b, qid)
        assert b.query("select state, attempts from recipients where msg_id = ?",
                       (qid,)) == [("delivered", 1)]
        # At least once: the MX has it twice, the queue once.
        assert len(mx.messages) == 2, len(mx.messages)


if __name__ == "__main__":
    main()
