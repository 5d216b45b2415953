"""Dead destinations are suspended, not hammered (issue 9, item 5).

After every address of a destination fails at the connection level, its
other recipients are deferred without a connection ("delivery temporarily
suspended", with the reason), one probe goes per retry interval, and
delivery resumes at once when a probe succeeds.  Destinations are sites:
domains with the same MX host set share one suspension and one
destination_concurrency.

Connections are counted where they arrive: a scripted MX that accepts and
closes at once counts accepted connections; for a closed port the attempts
table tells a real connection attempt ("connect to ...") from a deferral
without one ("delivery temporarily suspended").

Address plan, all on loopback:
  127.0.0.1  sluice, fakedns
  127.0.0.3  mx.shared.test: the one MX of a.test, b.test and c.test
  127.0.0.4  the smarthost
  127.0.0.5  the MX of senders.test, where notices go
  127.0.0.6  mx.dead.test: nothing listens there until a test starts a sink
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import mxtest  # noqa: E402
from mxtest import attempts_of, send, wait_state  # noqa: E402
from fixtures import metric  # noqa: E402
from sluicetest import free_port, main, poll_until, test  # noqa: E402

ZONE = """\
$ORIGIN test.
$TTL 60
senders         MX 10 mx.senders
mx.senders      A 127.0.0.5
dead            MX 10 mx.dead
mx.dead         A 127.0.0.6
a               MX 10 mx.shared
b               MX 10 mx.shared
c               MX 10 mx.shared
mx.shared       A 127.0.0.3
"""
SUSPENDED = "delivery temporarily suspended"

# The peers of one test, with the file's DNS server.
Env = mxtest.FileDNS(ZONE).env


def states(srv):
    return srv.query("select address, state, attempts, next_attempt_at, last_reply "
                     "from recipients order by address")


def wait_all(srv, n, pred, timeout=20, what="recipients"):
    """Until `n` recipients satisfy pred(row) (rows of states())."""
    def check():
        rows = states(srv)
        return rows if len(rows) == n and all(pred(r) for r in rows) else None
    try:
        return poll_until(check, timeout, what)
    except AssertionError as e:
        raise AssertionError("%s; now %r; log tail:\n%s" % (e, states(srv), srv.log()[-2000:]))


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


@test
def dead_smarthost_one_probe_per_interval():
    """20 messages to a smarthost that accepts and drops every connection:
    one connection finds it dead, the others are deferred without one, and
    then one probe goes per retry interval (2 s here), however many
    recipients wait."""
    with Env() as env:
        hub = env.scripted("127.0.0.4", mode="accept_close")
        srv = env.server(smarthost="127.0.0.4:%d" % env.port, smarthost_tls="none",
                         retry_schedule="2s", delivery_threads="4")
        t0 = time.time()
        ids = [send(srv, ["r%d@dest%d.test" % (i, i % 3)]) for i in range(20)]
        wait_all(srv, 20, lambda r: r[1] == "deferred" and r[2] >= 1)
        srv.wait_log(r"site=\[127\.0\.0\.4\] delivery temporarily suspended: 4\.4\.2 "
                     r"127\.0\.0\.4\[127\.0\.0\.4\]:%d: connection lost" % env.port)
        assert hub.connections <= 2 + (time.time() - t0) / 2, (
            "%d connections for 20 messages within %.1f s"
            % (hub.connections, time.time() - t0))
        # Every recipient was deferred; all but the ones that connected
        # without a connection, saying why.
        rows = srv.query("select reply, mx_host from attempts")
        suspended = [r for r in rows if SUSPENDED in r[0]]
        assert len(suspended) >= 20 - hub.connections, rows
        assert all(r[0].startswith("4.4.2 %s: " % SUSPENDED) and r[1] is None
                   for r in suspended), suspended[:3]
        # The log line comes just after the queue records the deferral.
        srv.wait_log(r"id=%s rcpt=<r19@dest1\.test> relay=none delay=\d+s "
                     r"dsn=4\.4\.2 status=deferred \(4\.4\.2 %s: " % (ids[19], SUSPENDED))
        # Then one probe per interval, while every recipient comes due
        # again each interval.
        time.sleep(7)
        times = list(hub.connection_times)
        later = [t for t in times if t > t0 + 0.5]
        assert len(later) >= 2, "no probes: %r" % gaps(times)
        assert min(gaps(later)) >= 1.0, "probes closer than the interval: %r" % gaps(later)
        elapsed = time.time() - t0
        assert len(times) <= 2 + elapsed / 2, "%d connections in %.1f s: %r" % (
            len(times), elapsed, gaps(times))
        assert min(r[2] for r in states(srv)) >= 3, states(srv)
        assert srv.query("select count(*) from recipients where state != 'deferred'") == [(0,)]


@test
def dead_mx_resumes_at_once_when_the_probe_succeeds():
    """A dead MX (closed port): the recipients are deferred until their
    own next retry is an hour away; when the MX comes back, the next
    probe (within the 2 s interval) finds it, and every recipient is
    delivered at once, exactly once, not an hour later."""
    with Env() as env:
        mport = free_port()
        srv = env.server(retry_schedule="2s, 1h", metrics_listen="127.0.0.1:%d" % mport)
        ids = {"r%d@dead.test" % i: send(srv, ["r%d@dead.test" % i]) for i in range(10)}
        rows = wait_all(srv, 10, lambda r: r[1] == "deferred" and r[2] >= 2)
        now = time.time()
        assert all(r[3] > now + 1800 for r in rows), rows   # next retry in an hour
        att = srv.query("select reply, mx_host from attempts")
        tried = [a for a in att if a[0].startswith("4.4.1 connect to mx.dead.test[127.0.0.6]")]
        deferred = [a for a in att if SUSPENDED in a[0]]
        assert len(tried) + len(deferred) == len(att), att
        assert len(deferred) >= 10, att
        assert all(a[0].startswith("4.4.1 %s: connect to mx.dead.test[127.0.0.6]:%d: "
                                   "Connection refused" % (SUSPENDED, env.port))
                   for a in deferred), deferred[:3]
        assert len(tried) <= 4, "%d connection attempts for 10 messages: %r" % (len(tried), att)
        assert metric(mport, "sluice_destinations_suspended") == 1
        assert metric(mport, "sluice_destination_suspensions_total") == 1
        srv.wait_log(r"site=mx\.dead\.test delivery temporarily suspended: 4\.4\.1 connect to "
                     r"mx\.dead\.test\[127\.0\.0\.6\]:%d: Connection refused "
                     r"\(one probe every 2s until it answers\)" % env.port)
        # The MX comes back.
        back = time.time()
        sink = env.sink("127.0.0.6")
        wait_all(srv, 10, lambda r: r[1] == "delivered", timeout=30)
        assert time.time() - back < 600, "delivered at the next retry, not at once"
        srv.wait_log(r"site=mx\.dead\.test delivery resumed after \d+s suspended; "
                     r"(9|10) deferred recipients due now")
        got = sorted(m[0]["rcpt_tos"][0] for m in sink.messages())
        assert got == sorted(ids), got
        assert metric(mport, "sluice_destinations_suspended") == 0
        time.sleep(1.5)
        assert len(sink.messages()) == 10


@test
def domains_with_one_mx_set_share_a_suspension():
    """a.test and b.test have the same MX host: once a.test found it
    dead, b.test's recipients are deferred without a connection."""
    with Env() as env:
        mx = env.scripted("127.0.0.3", mode="accept_close")
        srv = env.server(retry_schedule="30s")
        qa = send(srv, ["x@a.test"])
        wait_state(srv, qa, "x@a.test", "deferred", attempts=1)
        assert mx.connections == 1
        qb = send(srv, ["y@b.test"])
        qc = send(srv, ["z@c.test"])
        st, n, last_b = wait_state(srv, qb, "y@b.test", "deferred", attempts=1)
        st, n, last_c = wait_state(srv, qc, "z@c.test", "deferred", attempts=1)
        for last in (last_b, last_c):
            assert last.startswith("4.4.2 %s: mx.shared.test[127.0.0.3]:%d: connection lost"
                                   % (SUSPENDED, env.port)), last
        assert mx.connections == 1, "%d connections" % mx.connections
        assert attempts_of(srv, qb)[0][1] is None
        srv.wait_log(r"site=mx\.shared\.test delivery temporarily suspended")
        assert "site=b.test" not in srv.log() and "site=c.test" not in srv.log()


@test
def domains_with_one_mx_set_share_destination_concurrency():
    """destination_concurrency counts per MX host set: with a limit of 2,
    four threads and mail for three domains at one MX, the MX never has
    more than 2 transactions at once (3 domains x 2 would be 6)."""
    with Env() as env:
        mx = env.scripted("127.0.0.3", data_delay=0.4)
        srv = env.server(destination_concurrency="2", delivery_threads="6")
        ids = []
        for i in range(4):
            for d in ("a", "b", "c"):
                ids.append(("m%d@%s.test" % (i, d), send(srv, ["m%d@%s.test" % (i, d)])))
        for rcpt, qid in ids:
            wait_state(srv, qid, rcpt, "delivered", timeout=30)
        assert len(mx.messages) == 12, len(mx.messages)
        assert mx.max_transactions <= 2, "%d transactions at once" % mx.max_transactions
        assert mx.max_transactions == 2, "never 2 at once: %d" % mx.max_transactions


@test
def one_refused_connection_does_not_suspend_a_busy_site():
    """As Postfix's failed cohort: a site that answers, with 4 deliveries
    in flight, is not suspended because one of them was refused (421 at
    the greeting); only that recipient is deferred."""
    with Env() as env:
        mx = env.scripted("127.0.0.3", data_delay=1, refuse=(3,))
        srv = env.server(delivery_threads="0")
        ids = [("n%d@a.test" % i, send(srv, ["n%d@a.test" % i])) for i in range(9)]
        assert srv.stop() == 0
        # Delivery on: the first delivery alone (a new site), then four at
        # a time, the 3rd connection of which is refused.
        srv.config.update(delivery_threads="4", destination_concurrency="4",
                          max_messages_per_connection="1", retry_schedule="2s")
        srv.start()
        for rcpt, qid in ids:
            wait_state(srv, qid, rcpt, "delivered", timeout=30)
        deferred = srv.query("select reply from attempts where status='deferred'")
        assert len(deferred) == 1 and "421 4.3.2" in deferred[0][0], deferred
        assert SUSPENDED not in srv.log(), srv.log()[-2000:]
        assert len(mx.messages) == 9 and mx.max_transactions == 4, \
            (len(mx.messages), mx.max_transactions)


if __name__ == "__main__":
    main()
