"""
The PostgreSQL queue benchmark (make bench-pg).  Not a test: it measures
and prints tables; nothing here passes or fails.

On one machine: a PostgreSQL started here (fsync on, loopback, a high
port; tests/lib/pgcluster.py), and beside it, in the same run, one sluice
node on SQLite as the reference.

  accept      smtp-source, 20 sessions, 1 KB messages, split evenly over
              1, 2 and 3 nodes on one database (delivery off); the SQLite
              node alone.  Also the CPU time the database server and the
              nodes spent per message.
  end to end  the same messages through the nodes to smtp-sink as the MX
              (found through a local DNS server), until all are delivered.
  size        the queue tables' size after --size-messages messages,
              after they are delivered, and after their rows are pruned
              and autovacuum has run (with the settings printed).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "lib"))
import bench  # noqa: E402
import pgcluster  # noqa: E402
from fakedns import FakeDNS  # noqa: E402


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            total += bench.cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            pass
    return total


def cluster_pids(pg):
    """The postmaster and its children (the backends come and go)."""
    root = pg.pid()
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True,
                         text=True).stdout.split()
    return [root] + [int(p) for p in out]


class PgCPU:
    """CPU seconds of the whole database server over a stretch of time:
    backends that exit meanwhile are counted by sampling every 0.2 s."""

    def __init__(self, pg):
        self.pg = pg
        self.seen = {}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.base = self._sample()
        self.t.start()

    def _sample(self):
        for pid in cluster_pids(self.pg):
            try:
                self.seen[pid] = bench.cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                pass
        return dict(self.seen)

    def _run(self):
        while not self.stop.wait(0.2):
            self._sample()

    def seconds(self):
        self.stop.set()
        self.t.join()
        self._sample()
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())


def node(uri, name, extra=""):
    return bench.Sluice(extra="node_name = %s\n%s" % (name, extra), queue_path=uri)


def pg_count(uri, sql):
    return pgcluster.run_sql(uri, sql)[0][0]


def accept(pg, n, k, sqlite=False):
    """(msgs/s over k nodes, db CPU us/msg, nodes' CPU us/msg)."""
    if sqlite:
        nodes = [bench.Sluice()]
        uri = None
    else:
        uri = pg.new_db()
        nodes = [node(uri, "n%d" % i, "delivery_threads = 0\n") for i in range(k)]
    try:
        for s in nodes:  # warm-up
            bench.smtp_source(s.port, 500, 20 // k or 1, False)
        dbcpu = PgCPU(pg) if not sqlite else None
        cpu0 = cpu_of([s.proc.pid for s in nodes])
        t0 = time.time()
        threads = [threading.Thread(target=bench.smtp_source,
                                    args=(s.port, n // k, max(20 // k, 1), False))
                   for s in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = (n // k * k) / (time.time() - t0)
        ncpu = cpu_of([s.proc.pid for s in nodes]) - cpu0
        db = dbcpu.seconds() if dbcpu else 0.0
        stored = (pg_count(uri, "select count(*) from messages") if uri
                  else nodes[0].count())
        assert stored == n // k * k + 500 * k, stored
    finally:
        for s in nodes:
            s.stop()
    return rate, db * 1e6 / n, ncpu * 1e6 / n


def e2e(pg, n, k, delivery, sqlite=False):
    if sqlite:
        nodes = [bench.Sluice(extra=delivery)]
        uri = None
    else:
        uri = pg.new_db()
        nodes = [node(uri, "n%d" % i, delivery) for i in range(k)]
    try:
        t0 = time.time()
        threads = [threading.Thread(target=bench.smtp_source,
                                    args=(s.port, n // k, max(20 // k, 1), False),
                                    kwargs={"rcpt": "r@dest.test"})
                   for s in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        want = n // k * k
        deadline = time.time() + 600
        while True:
            done = (pg_count(uri, "select count(*) from recipients where state = 'delivered'")
                    if uri else nodes[0].delivered())
            if done >= want:
                break
            if time.time() > deadline:
                raise RuntimeError("only %d of %d delivered" % (done, want))
            time.sleep(0.1)
        return want / (time.time() - t0)
    finally:
        for s in nodes:
            s.stop()


def wake_latency(pg, n):
    """Node A accepts, node B delivers: from A's 250 to the message's
    arrival at a sink (its file's mtime), one message at a time.  B is
    woken by LISTEN/NOTIFY; without it, by its look every second."""
    import smtplib
    from sink import Sink as FileSink
    tmp = tempfile.mkdtemp(prefix="sluice-wake-")
    port = bench.free_port()
    sink = FileSink("127.0.0.3", port, tmp)
    dns = FakeDNS("wake.test. 60 IN MX 10 mx.wake.test.\n"
                  "mx.wake.test. 60 IN A 127.0.0.3\n")
    delivery = ("dns_servers = 127.0.0.1:%d\ndelivery_port = %d\n"
                "outbound_tls = none\nhostname = relay.bench.test\n" % (dns.port, port))
    uri = pg.new_db()
    a = node(uri, "a", "delivery_threads = 0\n")
    b = node(uri, "b", delivery)
    lat = []
    try:
        time.sleep(2)
        for i in range(n):
            with smtplib.SMTP("127.0.0.1", a.port) as c:
                c.sendmail("s@bench.test", ["w%d@wake.test" % i], b"Subject: w\r\n\r\nx\r\n")
                t0 = time.time()  # the 250 has come
            deadline = t0 + 10
            while len([f for f in os.listdir(tmp) if f.endswith(".eml")]) <= i:
                if time.time() > deadline:
                    raise RuntimeError("not delivered")
                time.sleep(0.002)
            newest = max((os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".eml")),
                         key=os.path.getmtime)
            lat.append(max(0.0, os.path.getmtime(newest) - t0))
            time.sleep(0.05)
    finally:
        a.stop()
        b.stop()
        sink.stop()
        dns.stop()
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1 if len(lat) >= 100 else -1]


TABLES = ("messages", "recipients", "body_chunks", "attempts")


def sizes(uri):
    return {t: pg_count(uri, "select pg_total_relation_size('%s')" % t) for t in TABLES}


def size_table(pg, n, delivery):
    uri = pg.new_db()
    s = node(uri, "n0", "delivery_threads = 0\n")
    bench.smtp_source(s.port, n, 20, True, rcpt="r@dest.test")
    s.stop()
    pgcluster.run_sql(uri, "vacuum analyze", autocommit=True)
    queued = sizes(uri)
    s = node(uri, "n0", delivery)
    deadline = time.time() + 1800
    while pg_count(uri, "select count(*) from recipients where state = 'delivered'") < n:
        if time.time() > deadline:
            raise RuntimeError("not delivered")
        time.sleep(0.5)
    s.stop()
    delivered = sizes(uri)
    dead = pg_count(uri, "select coalesce(sum(n_dead_tup), 0) from pg_stat_user_tables")
    # Finished mail pruned (what finished_retention does), then vacuumed
    # the way autovacuum would (plain VACUUM: space reused, not returned).
    pgcluster.run_sql(uri, "delete from attempts")
    pgcluster.run_sql(uri, "delete from messages")
    pgcluster.run_sql(uri, "vacuum", autocommit=True)
    pruned = sizes(uri)
    return queued, delivered, pruned, dead


def mb(b):
    return "%7.1f MB" % (b / 1048576.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size-messages", type=int, default=100000)
    ap.add_argument("--only", choices=["accept", "e2e", "size", "wake"])
    ap.add_argument("--wake-messages", type=int, default=100)
    a = ap.parse_args()
    n = a.messages - a.messages % 6
    sink = bench.Sink("127.0.0.2")
    dns = FakeDNS("dest.test. 60 IN MX 10 mx.dest.test.\n"
                  "mx.dest.test. 60 IN A 127.0.0.2\n")
    delivery = ("dns_servers = 127.0.0.1:%d\ndelivery_port = %d\n"
                "outbound_tls = none\nhostname = relay.bench.test\n" % (dns.port, sink.port))
    pg = pgcluster.Cluster()
    try:
        print("sluice PostgreSQL queue benchmark: %d cores, PostgreSQL %s, fsync on, loopback"
              % (os.cpu_count(), pg_count(pg.uri(), "show server_version")))
        if a.only in (None, "accept"):
            print()
            print("accept: smtp-source, 20 sessions in all, 1 msg/connection, %d messages of 1 KB"
                  % n)
            print("%-24s %12s %16s %16s" % ("", "msgs/s", "database us/msg", "nodes us/msg"))
            r = accept(pg, n, 1, sqlite=True)
            print("%-24s %12.0f %16s %16.0f" % ("SQLite, 1 node", r[0], "-", r[2]))
            for k in (1, 2, 3):
                r = accept(pg, n, k)
                print("%-24s %12.0f %16.0f %16.0f" % ("PostgreSQL, %d node%s" % (
                    k, "s" if k > 1 else ""), r[0], r[1], r[2]))
                sys.stdout.flush()
        if a.only in (None, "e2e"):
            print()
            print("end to end: the same load through the nodes to smtp-sink, until delivered")
            print("%-24s %12.0f msgs/s" % ("SQLite, 1 node", e2e(pg, n, 1, delivery, True)))
            for k in (1, 2, 3):
                print("%-24s %12.0f msgs/s" % ("PostgreSQL, %d node%s" % (
                    k, "s" if k > 1 else ""), e2e(pg, n, k, delivery)))
                sys.stdout.flush()
        if a.only in (None, "wake"):
            p50, p99 = wake_latency(pg, a.wake_messages)
            print()
            print("wake-up: node A accepts, node B delivers; from A's 250 to arrival at a sink,")
            print("one message at a time (%d): p50 %.0f ms, p99 %.0f ms; B's own look comes"
                  " every 1000 ms" % (a.wake_messages, p50 * 1000, p99 * 1000))
            sys.stdout.flush()
        if a.only in (None, "size"):
            m = a.size_messages
            settings = pgcluster.run_sql(pg.uri(), "select name, setting from pg_settings where "
                                         "name in ('autovacuum', 'autovacuum_naptime', "
                                         "'autovacuum_vacuum_scale_factor', "
                                         "'autovacuum_vacuum_threshold') order by name")
            queued, delivered, pruned, dead = size_table(pg, m, delivery)
            print()
            print("table sizes (pg_total_relation_size), %d messages of 1 KB; %s"
                  % (m, ", ".join("%s=%s" % s for s in settings)))
            print("%-14s %12s %12s %18s" % ("", "queued", "delivered", "pruned + VACUUM"))
            for t in TABLES:
                print("%-14s %12s %12s %18s" % (t, mb(queued[t]), mb(delivered[t]),
                                                mb(pruned[t])))
            print("%-14s %12s %12s %18s" % ("total", mb(sum(queued.values())),
                                            mb(sum(delivered.values())),
                                            mb(sum(pruned.values()))))
            print("dead rows right after delivery (before autovacuum): %d" % dead)
    finally:
        pg.close()
        dns.stop()
        sink.stop()


if __name__ == "__main__":
    main()
