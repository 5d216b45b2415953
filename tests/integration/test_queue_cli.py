"""sluice queue (the queue CLI) against a live server: list (text and
--json) and its filters, show, export, retry, hold/release, delete and
bounce while deliveries run, stats, purge (in batches), bad input, broken
UTF-8 and control characters on the terminal, queues of another schema
version, and every query of docs/queries.md run with `sqlite3 -readonly`
on the live database.

Delivery tests route dest.test and senders.test to MX, the scripted
SMTP server of tests/lib/mxtest.py in this process (127.0.0.1, a free
port) whose RCPT replies the test controls: 451 to make a recipient deferred, or held back until the
test lets it go (a delivery in progress).  retry_schedule is 1h, so a
deferred recipient moves only when the CLI says so."""
import datetime
import email
import email.policy
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from mxtest import ScriptedMX  # noqa: E402
from sluicetest import (BIN, ROOT, SANITIZER_PATTERNS, Server, free_port,  # noqa: E402
                        main, poll_until, sqlite_test, test)

SENDER = "sender@senders.test"
ADMIN_REPLY = "5.0.0 Returned to sender by the queue administrator"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UNKNOWN = "0000000000000000"


class MX(ScriptedMX):
    """The remote MX (tests/lib/mxtest.py), on 127.0.0.1: RCPT replies 451
    for addresses in `tempfail` (or all, with tempfail_all); an address
    in `gates` is answered only once its event is set (gates_reached
    tells when the client got there).  `envelopes` are the messages."""

    def __init__(self):
        self.tempfail = set()
        self.tempfail_all = False
        self.gates = {}
        self.gates_reached = set()
        super().__init__("127.0.0.1", free_port(), rcpt_reply=self._rcpt)

    def _rcpt(self, addr):
        if addr in self.gates:
            self.gates_reached.add(addr)
            self.gates[addr].wait(20)
        if self.tempfail_all or addr in self.tempfail:
            return "451 4.7.1 try again later"
        return "250 2.1.5 Ok"

    def to(self, rcpt):
        return [m for m in self.envelopes if rcpt in m[1]]


class Env:
    """A live server delivering to an MX (stopped when the test ends)."""

    def __init__(self, **extra):
        self.mx = MX()
        route = "127.0.0.1:%d" % self.mx.port
        cfg = {
            "delivery_threads": "2",
            "routes": "dest.test:%s, senders.test:%s" % (route, route),
            # Routes go to an IP: no DNS query is ever needed.
            "dns_servers": "127.0.0.1:%d" % free_port(),
            "dns_timeout": "1s",
            "retry_schedule": "1h",
            "connect_timeout": "2s",
            "delivery_command_timeout": "30s",
        }
        cfg.update(extra)
        self.srv = Server(config=cfg)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.mx.stop()
        return False


# ---- helpers ----

def queue(srv, *args, check=None):
    """Run `sluice queue ARGS -c CONFIG`: (status, stdout, stderr).
    `check`: the exit status expected."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("TSAN_OPTIONS", "halt_on_error=0")
    cmd = [BIN, "queue"] + list(args) + (["-c", srv.cfgpath] if srv else [])
    p = subprocess.run(cmd, capture_output=True, timeout=60, env=env)
    for pat in SANITIZER_PATTERNS:
        assert pat not in p.stderr, "sanitizer report from %s:\n%s" % (
            " ".join(args), p.stderr.decode("utf-8", "replace")[-3000:])
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    if check is not None:
        assert p.returncode == check, "queue %s: status %d, want %d\nstdout: %s\nstderr: %s" % (
            " ".join(args), p.returncode, check, out[-1500:], err[-1500:])
    return p.returncode, out, err


def qjson(srv, *args):
    return json.loads(queue(srv, *args, check=0)[1])


def ids_of(listing):
    return [m["id"] for m in listing]


def said(srv, want, *args):
    """`sluice queue ARGS` succeeds and prints exactly `want`."""
    out = queue(srv, *args, check=0)[1]
    assert out == want, "queue %s printed %r, want %r" % (" ".join(args), out, want)


def listed(srv, want, *args):
    """`sluice queue list --json ARGS` lists exactly the IDs `want`."""
    got = ids_of(qjson(srv, "list", "--json", *args))
    assert got == want, "queue list %s: %r, want %r" % (" ".join(args), got, want)


def send(srv, rcpts, sender="<%s>" % SENDER, body=None):
    c = srv.connect()
    try:
        c.ehlo()
        if body is None:
            body = b"From: %s\r\nSubject: cli test\r\n\r\nhello\r\n" % SENDER.encode()
        return c.mail(sender=sender, rcpts=["<%s>" % r for r in rcpts], body=body + b".\r\n")
    finally:
        c.close()


def write_db(srv, sql, args=()):
    srv.execute(sql, args)


def rcpt_rows(srv, msg_id):
    return srv.query("select address, state, attempts, last_reply, notified from recipients "
                     "where msg_id=? order by rcpt_no", (msg_id,))


def wait_state(srv, msg_id, state, attempts=0, timeout=10):
    def check():
        rows = rcpt_rows(srv, msg_id)
        return rows if rows and all(r[1] == state and r[2] >= attempts for r in rows) else None
    try:
        return poll_until(check, timeout, "%s in state %s" % (msg_id, state))
    except AssertionError as e:
        raise AssertionError("%s; now %r; log:\n%s" % (e, rcpt_rows(srv, msg_id), srv.log()[-1500:]))


def rows_left(srv, msg_id):
    return {t: srv.query("select count(*) from %s where %s=?" % (t, "id" if t == "messages" else "msg_id"),
                         (msg_id,))[0][0]
            for t in ("messages", "recipients", "attempts", "body_chunks")}


def rfc3339_of(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# ---- reading the queue ----

@test
def list_text_and_json_with_filters():
    srv = Server()
    m1 = send(srv, ["x@dest.test", "y@Other.Test"], sender="<alice@senders.test>")
    m2 = send(srv, ["z@dest.test"], sender="<>")
    m3 = send(srv, ["w@dest.test"], sender="<bob@senders.test>")
    # A reply with terminal control sequences, as a hostile MX could send.
    evil = "451 4.3.0 \x1b[2Jcleared\x07"
    write_db(srv, "update recipients set state='deferred', attempts=1, last_reply=? "
             "where msg_id=? and rcpt_no=0", (evil, m1))
    old = int(time.time()) - 7200
    write_db(srv, "update messages set received_at=? where id=?", (old, m3))

    rc, out, err = queue(srv, "list", check=0)
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "(451 4.3.0 ?[2Jcleared?)" in out, out
    for i in (m1, m2, m3):
        assert i in out, (i, out)
    # Oldest first: m3 was "received" two hours ago.
    assert out.index(m3) < out.index(m1) < out.index(m2), out
    assert re.search(r"^%s\s+\S+\s+\d+\s+<>$" % m2, out, re.M), out
    assert re.search(r"^%s\s+2h\s+\d+\s+<bob@senders\.test>$" % m3, out, re.M), out
    assert re.search(r"^\s+deferred\s+<x@dest\.test>\s+1 attempt", out, re.M), out
    assert re.search(r"^\s+queued\s+<y@Other\.Test>  0 attempts$", out, re.M), out
    assert re.search(r"^-- 3 messages, 4 recipients \(3 queued, 1 deferred\), \d+ bytes$",
                     out, re.M), out

    listing = qjson(srv, "list", "--json")
    assert ids_of(listing) == [m3, m1, m2], ids_of(listing)
    db = {r[0]: r[1:] for r in srv.query("select id, received_at, size, sender from messages")}
    for m in listing:
        received_at, size, sender = db[m["id"]]
        assert RFC3339.match(m["received_at"]), m["received_at"]
        assert m["received_at"] == rfc3339_of(received_at), (m["received_at"], received_at)
        assert m["size"] == size and isinstance(m["size"], int), (m["size"], size)
        assert m["sender"] == sender, (m["sender"], sender)
        for r in m["recipients"]:
            assert set(r) >= {"address", "state", "attempts", "next_attempt_at", "last_reply"}, r
            assert RFC3339.match(r["next_attempt_at"]), r
    by_id = {m["id"]: m for m in listing}
    assert by_id[m2]["sender"] == "", by_id[m2]
    r1 = by_id[m1]["recipients"]
    assert [(r["address"], r["state"], r["attempts"]) for r in r1] == [
        ("x@dest.test", "deferred", 1), ("y@Other.Test", "queued", 0)], r1
    assert r1[0]["last_reply"] == evil and r1[1]["last_reply"] is None, r1

    # Filters.
    listed(srv, [m1], "--domain", "OTHER.test")
    listed(srv, [m3, m1, m2], "--domain", "dest.test")
    listed(srv, [m3], "--older-than", "1h")
    said(srv, "[]\n", "list", "--json", "--older-than", "3h")
    assert "-- no message matches" in queue(srv, "list", "--older-than", "3h", check=0)[1]
    listed(srv, [m1], "--status", "deferred")
    listed(srv, [], "--status", "deferred", "--domain", "other.test")
    listed(srv, [], "--status", "held")
    assert "1 recipient held" in queue(srv, "hold", m2, check=0)[1]
    listed(srv, [m2], "--status", "held")
    # Held is pending: still in the default list.
    listed(srv, [m3, m1, m2])
    assert "1 recipient bounced" in queue(srv, "bounce", m2, check=0)[1]
    listed(srv, [m3, m1])
    bounced = qjson(srv, "list", "--json", "--status", "bounced")
    assert ids_of(bounced) == [m2], bounced
    r = bounced[0]["recipients"][0]
    assert (r["state"], r["next_attempt_at"], r["last_reply"]) == ("bounced", None, ADMIN_REPLY), r


@test
def show_and_export():
    srv = Server()
    body = (b"From: carol@senders.test\r\nSubject: show me\r\nX-Evil: \x1b]0;title\x07end\r\n"
            b"\r\nbody-token-51c2\r\n")
    m1 = send(srv, ["a@dest.test", "b@other.test"], body=body)
    # A large message: many 64 KiB chunks, concatenated by seq.
    big = b"Subject: big\r\n\r\n" + b"".join(b"line %06d %s\r\n" % (i, b"x" * 60) for i in range(4000))
    m2 = send(srv, ["c@dest.test"], body=big)

    rc, out, err = queue(srv, "show", m1, check=0)
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    for pat in (r"^Message %s$" % m1, r"^\s+sender:\s+<%s>$" % re.escape(SENDER),
                r"^\s+received:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                r"^\s+client:\s+127\.0\.0\.1 port \d+, HELO client\.test$",
                r"^\s+protocol:\s+ESMTP$", r"^\s+TLS:\s+none$", r"^\s+body type:\s+7BIT$",
                r"^\s+#0 <a@dest\.test>$", r"^\s+#1 <b@other\.test>$", r"^\s+state:\s+queued, 0 attempts",
                r"^Received: from client\.test", r"^Subject: show me$", r"^X-Evil: \?\]0;title\?end$"):
        assert re.search(pat, out, re.M), (pat, out)
    assert "body-token-51c2" not in out, out
    out = queue(srv, "show", m1.lower(), "--body", check=0)[1]
    assert re.search(r"^Subject: show me$", out, re.M) and "body-token-51c2" in out, out

    # export: exactly the stored octets, which end with what was sent.
    for m, sent in ((m1, body), (m2, big)):
        p = subprocess.run([BIN, "queue", "export", m, "-c", srv.cfgpath], capture_output=True)
        assert p.returncode == 0, p.stderr
        stored = srv.body(m)
        assert p.stdout == stored, (len(p.stdout), len(stored))
        assert stored.endswith(sent), stored[-200:]
        assert len(stored) == srv.query("select stored_size from messages where id=?", (m,))[0][0]
    assert srv.query("select count(*) from body_chunks where msg_id=?", (m2,))[0][0] > 2

    # The body goes when every recipient is final; show and export say so.
    queue(srv, "bounce", m1, check=0)
    write_db(srv, "delete from body_chunks where msg_id=?", (m1,))
    rc, out, err = queue(srv, "export", m1, check=1)
    assert out == "" and "body is gone" in err, (out, err)
    out = queue(srv, "show", m1, check=0)[1]
    assert "the message itself is gone" in out, out
    assert re.search(r"\(no host\)\s+bounced", out) and ADMIN_REPLY in out, out


# ---- changes while deliveries run ----

@test
def retry_delivers_a_deferred_recipient_now():
    with Env() as env:
        srv, mx = env.srv, env.mx
        mx.tempfail_all = True
        qid = send(srv, ["r@dest.test"])
        wait_state(srv, qid, "deferred", attempts=1)
        r = qjson(srv, "list", "--json")[0]["recipients"][0]
        assert (r["state"], r["attempts"]) == ("deferred", 1), r
        assert r["last_reply"].startswith("451 4.7.1"), r
        # retry_schedule = 1h: next attempt an hour away.
        assert parse_time(r["next_attempt_at"]) > time.time() + 3000, r
        out = queue(srv, "show", qid, check=0)[1]
        assert re.search(r"127\.0\.0\.1 \[127\.0\.0\.1\]:%d\s+deferred" % mx.port, out), out
        mx.tempfail_all = False
        out = queue(srv, "retry", qid, check=0)[1]
        assert out == "%s: 1 recipient due now\n" % qid, out
        wait_state(srv, qid, "delivered", timeout=10)
        assert [m[1] for m in mx.to("r@dest.test")] == [["r@dest.test"]], mx.envelopes
        r = qjson(srv, "list", "--json", "--status", "delivered")[0]["recipients"][0]
        assert (r["state"], r["next_attempt_at"]) == ("delivered", None), r
        # Delivered and released: nothing left to export.
        assert "body is gone" in queue(srv, "export", qid, check=1)[2]


@test
def hold_keeps_mail_and_release_delivers_it():
    with Env() as env:
        srv, mx = env.srv, env.mx
        mx.tempfail_all = True
        held = send(srv, ["h@dest.test"])
        other = send(srv, ["o@dest.test"])
        wait_state(srv, held, "deferred", attempts=1)
        wait_state(srv, other, "deferred", attempts=1)
        said(srv, "%s: 1 recipient held\n" % held, "hold", held)
        mx.tempfail_all = False
        # --all and --domain leave held recipients alone.
        said(srv, "1 recipient due now at DEST.test\n", "retry", "--domain", "DEST.test")
        wait_state(srv, other, "delivered")
        said(srv, "0 recipients due now\n", "retry", "--all")
        time.sleep(1.5)  # more than a dispatcher round
        assert rcpt_rows(srv, held) == [("h@dest.test", "held", 1, "451 4.7.1 try again later", 0)]
        assert mx.to("h@dest.test") == [], mx.envelopes
        said(srv, "%s: 1 recipient released, due now\n" % held, "release", held)
        wait_state(srv, held, "delivered")
        assert len(mx.to("h@dest.test")) == 1 and len(mx.to("o@dest.test")) == 1, mx.envelopes


@test
def release_of_a_never_tried_recipient_queues_it():
    srv = Server()
    qid = send(srv, ["n@dest.test"])
    queue(srv, "hold", qid, check=0)
    before = int(time.time())
    write_db(srv, "update recipients set next_attempt_at=? where msg_id=?", (before + 9999, qid))
    queue(srv, "release", qid, check=0)
    row = srv.query("select state, next_attempt_at from recipients where msg_id=?", (qid,))
    assert row[0][0] == "queued" and before <= row[0][1] <= int(time.time()), row
    # Held twice, released twice: only what was held changes.
    said(srv, "%s: 0 recipients released, due now\n" % qid, "release", qid)


@test
def delete_while_the_server_runs():
    with Env() as env:
        srv, mx = env.srv, env.mx
        mx.tempfail_all = True
        deferred = send(srv, ["d@dest.test"])
        wait_state(srv, deferred, "deferred", attempts=1)
        out = queue(srv, "delete", deferred, check=0)[1]
        assert out == "%s: deleted, with its 1 recipient\n" % deferred, out
        assert rows_left(srv, deferred) == {"messages": 0, "recipients": 0, "attempts": 0,
                                            "body_chunks": 0}
        mx.tempfail_all = False
        said(srv, "0 recipients due now\n", "retry", "--all")
        assert "no message %s in the queue" % deferred in queue(srv, "show", deferred, check=1)[2]

        # Deleted in the middle of its delivery: the attempt records
        # nothing, and the message is never sent again.
        gate = threading.Event()
        mx.gates["slow@dest.test"] = gate
        busy = send(srv, ["slow@dest.test"])
        poll_until(lambda: "slow@dest.test" in mx.gates_reached, 10, "the delivery in progress")
        queue(srv, "delete", busy, check=0)
        gate.set()
        poll_until(lambda: mx.to("slow@dest.test"), 10, "the delivery that was in progress")
        time.sleep(1.5)  # the attempt is recorded, a dispatcher round passes
        assert rows_left(srv, busy) == {"messages": 0, "recipients": 0, "attempts": 0,
                                        "body_chunks": 0}, rows_left(srv, busy)
        assert mx.to("d@dest.test") == [] and len(mx.to("slow@dest.test")) == 1, mx.envelopes


@test
def bounce_sends_the_failure_notice():
    with Env() as env:
        srv, mx = env.srv, env.mx
        mx.tempfail = {"b1@dest.test", "b2@dest.test", "n@dest.test"}
        qid = send(srv, ["b1@dest.test", "ok@dest.test", "b2@dest.test"],
                   body=b"Subject: to bounce\r\nMessage-ID: <cli-bounce@senders.test>\r\n\r\nx\r\n")
        poll_until(lambda: [r[1] for r in rcpt_rows(srv, qid)] == ["deferred", "delivered", "deferred"],
                   10, "b1, b2 deferred and ok delivered")
        out = queue(srv, "bounce", qid, check=0)[1]
        assert out == "%s: 2 recipients bounced; the notice goes to <%s>\n" % (qid, SENDER), out
        att = srv.query("select rcpt_no, status, mx_host, reply from attempts "
                        "where msg_id=? and status='bounced' order by rcpt_no", (qid,))
        assert att == [(0, "bounced", None, ADMIN_REPLY), (2, "bounced", None, ADMIN_REPLY)], att
        try:
            notice = poll_until(lambda: [m for m in mx.envelopes if m[0] == ""], 10,
                                "the failure notice at the sender's MX")
        except AssertionError:
            raise AssertionError("no failure notice reached <%s> within 10 s after "
                                 "'sluice queue bounce' (the server must report recipients "
                                 "bounced by the administrator); recipients: %r"
                                 % (SENDER, rcpt_rows(srv, qid)))
        assert len(notice) == 1 and notice[0][1] == [SENDER], notice
        msg = email.message_from_bytes(notice[0][2], policy=email.policy.compat32)
        assert "MAILER-DAEMON" in msg["From"], msg["From"]
        assert msg.get_content_type() == "multipart/report", msg.get_content_type()
        assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
        status = msg.get_payload()[1]
        assert status.get_content_type() == "message/delivery-status", status.get_content_type()
        per_rcpt = status.get_payload()[1:]
        finals = sorted(b["Final-Recipient"].split(";")[1].strip() for b in per_rcpt)
        assert finals == ["b1@dest.test", "b2@dest.test"], finals
        assert all(b["Action"] == "failed" and b["Status"] == "5.0.0" for b in per_rcpt), \
            [(b["Action"], b["Status"]) for b in per_rcpt]
        rows = poll_until(lambda: [r for r in rcpt_rows(srv, qid) if r[4] & 1] and rcpt_rows(srv, qid),
                          5, "bounced recipients reported")
        assert rows == [("b1@dest.test", "bounced", 1, ADMIN_REPLY, 1),
                        ("ok@dest.test", "delivered", 1, rows[1][3], 0),
                        ("b2@dest.test", "bounced", 1, ADMIN_REPLY, 1)], rows

        # The null sender: reported, but no notice is ever sent.
        null = send(srv, ["n@dest.test"], sender="<>")
        wait_state(srv, null, "deferred", attempts=1)
        out = queue(srv, "bounce", null, check=0)[1]
        assert out == "%s: 1 recipient bounced; no notice (the sender is <>)\n" % null, out
        poll_until(lambda: rcpt_rows(srv, null)[0][4] & 1, 10, "the null sender's bounce reported")
        notices = srv.query("select count(*) from messages where sender='' and id != ?", (null,))
        assert notices == [(1,)], notices
        said(srv, "%s: nothing to bounce (no recipient pending)\n" % null, "bounce", null)


# ---- stats and purge ----

@test
def stats_show_the_configured_rates():
    srv = Server(config={"destination_rate": "30/1m",
                         "destination_rates": "gmail.com:20/1m, [SMTP.Relay.example]:2/1s"})
    out = queue(srv, "stats", check=0)[1]
    assert ("rates:          30/1m per destination; gmail.com 20/1m, "
            "[smtp.relay.example] 2/1s\n") in out, out
    s = qjson(srv, "stats", "--json")
    assert s["destination_rate"] == "30/1m", s
    assert s["destination_rates"] == {"gmail.com": "20/1m", "[smtp.relay.example]": "2/1s"}, s


@test
def stats_and_purge():
    srv = Server()
    finished = send(srv, ["a@dest.test", "b@other.test"])
    held = send(srv, ["c@dest.test"])
    queued = send(srv, ["d@dest.test"])
    queue(srv, "bounce", finished, check=0)
    queue(srv, "hold", held, check=0)
    s = qjson(srv, "stats", "--json")
    assert s["recipients"] == {"queued": 1, "deferred": 0, "held": 1, "delivered": 0, "bounced": 2}, s
    sizes = dict(srv.query("select id, size from messages"))
    assert (s["messages"], s["pending_messages"], s["pending_size"]) == (
        3, 2, sizes[held] + sizes[queued]), s
    assert s["oldest_pending_id"] == held and RFC3339.match(s["oldest_pending_at"]), s
    assert 0 <= s["oldest_pending_seconds"] < 60, s
    doms = {d["domain"]: d for d in s["domains"]}
    assert set(doms) == {"dest.test", "other.test"}, doms
    assert [doms["dest.test"][k] for k in ("queued", "deferred", "held", "delivered", "bounced")] == \
        [1, 0, 1, 0, 1], doms
    assert doms["other.test"]["bounced"] == 1 and \
        doms["other.test"]["oldest_pending_seconds"] is None, doms
    out = queue(srv, "stats", check=0)[1]
    assert "recipients:     1 queued, 0 deferred, 1 held, 0 delivered, 2 bounced" in out, out
    assert "oldest pending: %s, received" % held in out, out
    assert re.search(r"^dest\.test\s+1\s+0\s+1\s+0\s+1\s+\d+s$", out, re.M), out
    assert re.search(r"^other\.test\s+0\s+0\s+0\s+0\s+1\s+-$", out, re.M), out
    assert "rates:          none by default\n" in out, out
    assert s["destination_rate"] is None and s["destination_rates"] == {}, s

    # purge: finished messages only, by the time of their last activity.
    out = queue(srv, "purge", check=0)[1]
    assert out.startswith("0 finished messages purged (last activity more than 7d ago)"), out
    out = queue(srv, "purge", "--older-than", "1h", check=0)[1]
    assert out.startswith("0 finished"), out
    last = srv.query("select max(last_attempt_at) from recipients where msg_id=?", (finished,))[0][0]
    poll_until(lambda: time.time() >= last + 1.1, 3, "a second to pass")
    out = queue(srv, "purge", "--older-than", "0s", check=0)[1]
    assert out.startswith("1 finished message purged"), out
    assert rows_left(srv, finished) == {"messages": 0, "recipients": 0, "attempts": 0,
                                        "body_chunks": 0}
    assert rows_left(srv, held)["recipients"] == 1 and rows_left(srv, queued)["body_chunks"] == 1, \
        (rows_left(srv, held), rows_left(srv, queued))
    assert qjson(srv, "stats", "--json")["messages"] == 2


@test
def oldest_pending_skips_finished_mail_and_ties_go_by_id():
    srv = Server()
    done = send(srv, ["f@dest.test"])
    a = send(srv, ["a@dest.test"])
    b = send(srv, ["b@dest.test", "c@other.test"])
    queue(srv, "bounce", done, check=0)
    queue(srv, "hold", b, check=0)
    # The finished message is the oldest: it must not count.  a and b
    # arrived in the same second: the lower ID is the oldest.
    t = int(time.time()) - 3600
    write_db(srv, "update messages set received_at=? where id=?", (t - 86400, done))
    write_db(srv, "update messages set received_at=? where id in (?, ?)", (t, a, b))
    s = qjson(srv, "stats", "--json")
    assert s["recipients"] == {"queued": 1, "deferred": 0, "held": 2, "delivered": 0,
                               "bounced": 1}, s
    sizes = dict(srv.query("select id, size from messages"))
    assert (s["messages"], s["pending_messages"], s["pending_size"]) == (
        3, 2, sizes[a] + sizes[b]), s
    assert s["oldest_pending_id"] == min(a, b), (s, a, b)
    assert s["oldest_pending_at"] == rfc3339_of(t), (s, t)
    assert 3600 <= s["oldest_pending_seconds"] < 3660, s
    out = queue(srv, "stats", check=0)[1]
    assert "oldest pending: %s, received 1h ago\n" % min(a, b) in out, out

    # Nothing pending: no oldest, but the finished message still counts.
    said(srv, "%s: deleted, with its 1 recipient\n%s: deleted, with its 2 recipients\n" % (a, b),
         "delete", a, b)
    s = qjson(srv, "stats", "--json")
    assert (s["messages"], s["pending_messages"], s["pending_size"]) == (1, 0, 0), s
    assert (s["oldest_pending_id"], s["oldest_pending_at"], s["oldest_pending_seconds"]) == \
        (None, None, None), s
    assert "oldest pending: (nothing pending)" in queue(srv, "stats", check=0)[1]


@test
def delete_takes_several_messages_in_one_transaction():
    srv = Server()
    a = send(srv, ["a@dest.test", "b@dest.test"])
    b = send(srv, ["c@dest.test"])
    keep = send(srv, ["d@dest.test"])
    write_db(srv, "insert into attempts (msg_id, rcpt_no, at, status, reply) "
             "values (?, 0, 1, 'deferred', '451 later')", (a,))
    # An ID given twice is deleted once, and reported as asked.
    said(srv, "%s: deleted, with its 2 recipients\n%s: deleted, with its 1 recipient\n"
         "%s: deleted, with its 2 recipients\n" % (a, b, a), "delete", a, b, a)
    for m in (a, b):
        assert rows_left(srv, m) == {"messages": 0, "recipients": 0, "attempts": 0,
                                     "body_chunks": 0}, (m, rows_left(srv, m))
    assert rows_left(srv, keep) == {"messages": 1, "recipients": 1, "attempts": 0,
                                    "body_chunks": 1}, rows_left(srv, keep)
    # All or nothing: with an ID already gone, nothing is deleted.
    rc, out, err = queue(srv, "delete", keep, a, check=1)
    assert "no message %s in the queue" % a in err and out == "", (out, err)
    assert rows_left(srv, keep)["messages"] == 1
    said(srv, "%s: deleted, with its 1 recipient\n" % keep, "delete", keep)
    assert srv.query("select count(*) from messages") == [(0,)]


@test
def purge_goes_in_batches_past_the_batch_size():
    srv = Server()
    pending = send(srv, ["p@dest.test"])
    old = int(time.time()) - 7200
    n = 1001  # DB_PRUNE_MAX + 1: two batches
    statements = []
    for i in range(n):
        mid = "P%015d" % i
        statements += [
            ("insert into messages (id, received_at, sender, size, stored_size, "
             "client_ip, protocol) values (?, ?, 's@x.test', 10, 10, "
             "'127.0.0.1', 'ESMTP')", (mid, old)),
            ("insert into recipients (msg_id, rcpt_no, address, domain, state, "
             "next_attempt_at, last_attempt_at) values (?, 0, 'r@x.test', "
             "'x.test', ?, 0, ?)", (mid, "delivered" if i % 2 else "bounced", old)),
            ("insert into attempts (msg_id, rcpt_no, at, status) "
             "values (?, 0, ?, 'sent')", (mid, old))]
    srv.execute_many(statements)
    write_db(srv, "update messages set received_at=? where id=?", (old, pending))
    out = queue(srv, "purge", "--older-than", "1h", check=0)[1]
    assert out == "%d finished messages purged (last activity more than 1h ago)\n" % n, out
    assert srv.query("select count(*) from messages") == [(1,)], srv.query("select count(*) from messages")
    assert srv.query("select count(*) from recipients where msg_id like 'P%'") == [(0,)]
    assert srv.query("select count(*) from attempts") == [(0,)]
    assert rows_left(srv, pending)["recipients"] == 1
    said(srv, "0 finished messages purged (last activity more than 1h ago)\n",
         "purge", "--older-than", "1h")


@test
def in_flight_follows_the_lease():
    srv = Server()
    qid = send(srv, ["l@dest.test", "m@dest.test"])
    write_db(srv, "update recipients set lease_until=? where msg_id=? and rcpt_no=0",
             (int(time.time()) + 600, qid))
    write_db(srv, "update recipients set lease_until=? where msg_id=? and rcpt_no=1",
             (int(time.time()) - 10, qid))
    r = qjson(srv, "list", "--json")[0]["recipients"]
    assert [x["in_flight"] for x in r] == [True, False], r
    out = queue(srv, "list", check=0)[1]
    assert re.search(r"<l@dest\.test>  0 attempts, being delivered$", out, re.M), out
    assert re.search(r"<m@dest\.test>  0 attempts$", out, re.M), out
    out = queue(srv, "show", qid, check=0)[1]
    assert out.count("being delivered now") == 1, out


@sqlite_test
def broken_and_control_utf8_is_shown_safely():
    srv = Server()
    qid = send(srv, ["u@dest.test"])
    # Stored as a BLOB: octets that are not UTF-8 reach the CLI as they are.
    reply = b"caf\xc3\xa9 \xc2\x85x \xff end \xe2\x82"
    write_db(srv, "update recipients set state='deferred', last_reply=? where msg_id=?",
             (reply, qid))
    out = queue(srv, "list", check=0)[1]
    # C1 control U+0085 and broken octets: one '?' per octet.
    assert "(caf\u00e9 ??x ? end ??)\n" in out, repr(out)
    r = qjson(srv, "list", "--json")[0]["recipients"][0]
    assert r["last_reply"] == "caf\u00e9 \x85x \ufffd end \ufffd\ufffd", repr(r["last_reply"])
    # A body whose UTF-8 sequences are cut by chunk ends.
    chunks = [b"Subject: t\r\n\r\nA\xe2\x82", b"\xacB \xe0\x80", b"\x80C\xc2", b"\x85D\r\n"]
    write_db(srv, "delete from body_chunks where msg_id=?", (qid,))
    for i, c in enumerate(chunks):
        write_db(srv, "insert into body_chunks (msg_id, seq, data) values (?, ?, ?)", (qid, i, c))
    out = queue(srv, "show", qid, "--body", check=0)[1]
    assert out.endswith("Message:\nSubject: t\n\nA\u20acB ???C??D\n"), repr(out[-200:])
    p = subprocess.run([BIN, "queue", "export", qid, "-c", srv.cfgpath], capture_output=True)
    assert p.returncode == 0 and p.stdout == b"".join(chunks), p


@sqlite_test
def queue_of_another_schema_is_refused_clearly():
    srv = Server()
    for version, want in (
            (0, "sluice: no queue at {p} (the file holds no queue yet)\n"),
            (2, "sluice: {p} has queue schema version 2; start sluice serve once to upgrade "
                "it to version 9\n"),
            (99, "sluice: {p} has queue schema version 99, newer than this sluice (9)\n")):
        path = os.path.join(srv.dir, "v%d.db" % version)
        con = sqlite3.connect(path)
        con.execute("create table t (x)")
        con.execute("pragma user_version = %d" % version)
        con.commit()
        con.close()
        cfg = os.path.join(srv.dir, "v%d.conf" % version)
        with open(cfg, "w") as f:
            f.write("queue_path = %s\n" % path)
        # Read-only (list) and read-write (hold) opens say the same.
        for args in (["list"], ["hold", UNKNOWN]):
            rc, out, err = queue(None, "-c", cfg, *args, check=1)
            assert err == want.format(p=path) and out == "", (args, err)


# ---- docs/queries.md ----

def documented_queries():
    with open(os.path.join(ROOT, "docs", "queries.md")) as f:
        text = f.read()
    return re.findall(r"^```sql\n(.*?)^```", text, re.S | re.M)


@sqlite_test
def documented_queries_run_on_a_live_queue():
    queries = documented_queries()
    assert len(queries) >= 10, "only %d sql blocks in docs/queries.md" % len(queries)
    with Env() as env:
        srv, mx = env.srv, env.mx
        mx.tempfail = {"later@dest.test", "held@dest.test"}
        done = send(srv, ["now@dest.test", "later@dest.test"])
        held = send(srv, ["held@dest.test"])
        wait_state(srv, held, "deferred", attempts=1)
        poll_until(lambda: [r[1] for r in rcpt_rows(srv, done)] == ["delivered", "deferred"], 10,
                   "one delivered, one deferred")
        queue(srv, "hold", held, check=0)
        write_db(srv, "update messages set auth_user='alice' where id=?", (done,))
        results = []
        for q in queries:
            p = subprocess.run(["sqlite3", "-readonly", "-bail", srv.db], input=q.encode(),
                               capture_output=True, timeout=30)
            assert p.returncode == 0 and p.stderr == b"", "query failed (%d): %s\n%s" % (
                p.returncode, p.stderr.decode(), q)
            results.append(p.stdout.decode())
        # A few answers are known.
        assert any(held in r and "held@dest.test" in r for r in results), results
        assert any(re.search(r"^alice\|1\|2\|", r, re.M) for r in results), results
        assert any("dest.test|1|0|0.0" in r for r in results), results


# ---- bad input ----

@test
def bad_input_is_refused_clearly():
    srv = Server()
    qid = send(srv, ["k@dest.test"])
    for cmd in (["show", UNKNOWN], ["export", UNKNOWN], ["hold", UNKNOWN], ["delete", UNKNOWN],
                ["bounce", UNKNOWN], ["retry", UNKNOWN], ["release", UNKNOWN]):
        rc, out, err = queue(srv, *cmd, check=1)
        assert "sluice: no message %s in the queue" % UNKNOWN in err, (cmd, err)
    # All or nothing: one unknown ID and nothing changes.
    rc, out, err = queue(srv, "hold", qid, UNKNOWN, check=1)
    assert "nothing was changed" in err and out == "", (out, err)
    assert rcpt_rows(srv, qid)[0][1] == "queued", rcpt_rows(srv, qid)
    usage = [
        (["show", "not-an-id"], "is not a queue ID"),
        (["show", qid + "0"], "is not a queue ID"),
        (["hold", "\x1b[31m"], '"?[31m" is not a queue ID'),
        (["list", "--status", "stuck"], 'unknown state "stuck"'),
        (["list", "--older-than", "5x"], 'bad duration "5x"'),
        (["purge", "--older-than", "-1h"], 'bad duration "-1h"'),
        (["frobnicate"], 'unknown command "frobnicate"'),
        (["list", "--colour"], "unknown option --colour"),
        (["show", qid, "--json"], "--json does not apply here"),
        (["show"], "show needs a queue ID"),
        (["retry"], "retry takes IDs, --all or --domain D"),
        (["retry", "--all", qid], "retry takes IDs, --all or --domain D"),
        (["stats", "extra"], "unexpected argument extra"),
    ]
    for args, msg in usage:
        rc, out, err = queue(srv, *args, check=2)
        assert msg in err and "\x1b" not in err, (args, err)
    rc, out, err = queue(None, "list", "-c", srv.cfgpath, "--status", check=2)
    assert "--status needs a value" in err, err
    rc, out, err = queue(srv, check=2)
    assert "usage: sluice queue" in err and out == "", (out, err)
    rc, out, err = queue(srv, "help", check=0)
    assert "usage: sluice queue" in out and "purge" in out, out
    # -c may come anywhere; a queue that does not exist is reported.
    missing = os.path.join(srv.dir, "nowhere.conf")
    with open(missing, "w") as f:
        f.write("queue_path = %s\n" % os.path.join(srv.dir, "none.db"))
    rc, out, err = queue(None, "-c", missing, "list", check=1)
    assert err == "sluice: no queue at %s\n" % os.path.join(srv.dir, "none.db"), err
    assert not os.path.exists(os.path.join(srv.dir, "none.db"))
    rc, out, err = queue(None, "list", "-c", srv.cfgpath, "--json", check=0)
    assert ids_of(json.loads(out)) == [qid], out


if __name__ == "__main__":
    main()
