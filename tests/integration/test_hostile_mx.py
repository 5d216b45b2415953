"""Hostile peers on the delivery side (issue 9, item 6): an MX that
trickles one octet per second, sends a 10 MB EHLO reply or a reply that
never ends, never answers after the data, or closes in the middle of a
reply; the DNS server gone; the disk full while an attempt is recorded.

Each must end in a bounded wait (the attempt's duration stays within the
configured timeouts, far below what the peer would take), a deferral with a
clear reason, and nothing lost or doubled: the message stays queued and is
delivered, once, when the peer behaves.

Address plan, all on loopback:
  127.0.0.1  sluice, fakedns (each DNS test has its own)
  127.0.0.2  mx.dest.test: the scripted MX
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fakedns import FakeDNS  # noqa: E402
from fixtures import SmallDisk, require_root  # noqa: E402
import mxtest  # noqa: E402
from mxtest import attempts_of, rcpt_row, send, wait_state  # noqa: E402
from sluicetest import Server, main, poll_until, rss_limit_kb, test  # noqa: E402

ZONE = """\
$ORIGIN test.
$TTL 60
dest            MX 10 mx.dest
mx.dest         A 127.0.0.2
senders         MX 10 mx.senders
mx.senders      A 127.0.0.5
"""

# The peers of one test, with the file's DNS server.
Env = mxtest.FileDNS(ZONE).env


def durations(srv, qid):
    return [r[0] for r in srv.query("select duration_ms from attempts where msg_id=? "
                                    "order by id", (qid,))]


def behaves_then_delivered(srv, mx, qid, rcpt):
    """The MX turns normal: the message is delivered, exactly once."""
    mx.mode = "normal"
    wait_state(srv, qid, rcpt, "delivered", timeout=20)
    time.sleep(1.5)   # a second delivery would come within a retry
    assert len(mx.messages) == 1, "%d copies acknowledged" % len(mx.messages)
    att = attempts_of(srv, qid)
    assert [a[0] for a in att].count("sent") == 1, att


@test
def mx_trickling_one_octet_per_second():
    """The greeting at one octet per second would take 20 s: the reply's
    deadline (delivery_command_timeout, 3 s) ends the wait."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", mode="trickle")
        srv = env.server(retry_schedule="2s")
        qid = send(srv, ["t@dest.test"])
        st, n, last = wait_state(srv, qid, "t@dest.test", "deferred", attempts=1, timeout=20)
        assert last == "4.4.2 mx.dest.test[127.0.0.2]:%d: timeout waiting for reply" % env.port, \
            last
        assert durations(srv, qid)[0] < 10000, durations(srv, qid)
        behaves_then_delivered(srv, mx, qid, "t@dest.test")


@test
def mx_sending_a_10_mb_ehlo_reply():
    """10,000 lines of 1,000 octets: sluice stops reading at the 100th
    line of the reply and defers; memory stays bounded."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", mode="huge_ehlo")
        srv = env.server(retry_schedule="2s")
        before = srv.peak_rss_kb()
        qid = send(srv, ["e@dest.test"])
        st, n, last = wait_state(srv, qid, "e@dest.test", "deferred", attempts=1)
        assert last.startswith("4.5.0 mx.dest.test[127.0.0.2]:%d: malformed reply: more "
                               "than 100 lines, or lines with different codes (250-xxx"
                               % env.port), last
        assert srv.peak_rss_kb() - before < rss_limit_kb(8 * 1024), \
            (before, srv.peak_rss_kb())
        behaves_then_delivered(srv, mx, qid, "e@dest.test")


@test
def mx_sending_a_10_mb_ehlo_line():
    """One EHLO reply line of 10 MB: read and dropped past its first
    octets, so memory stays bounded; the session either goes on with the
    line cut, or defers with a clear reason (a reply line that long is no
    SMTP reply: RFC 5321 section 4.5.3.1.5) and delivers once the MX
    behaves."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", mode="huge_ehlo_line")
        srv = env.server(retry_schedule="2s")
        before = srv.peak_rss_kb()
        qid = send(srv, ["l@dest.test"])
        st, n, last = wait_state(srv, qid, "l@dest.test", ("delivered", "deferred"),
                                 timeout=20)
        assert srv.peak_rss_kb() - before < rss_limit_kb(8 * 1024), \
            (before, srv.peak_rss_kb())
        if st == "deferred":
            assert last.startswith("4.5.0 mx.dest.test[127.0.0.2]:%d: " % env.port), last
        behaves_then_delivered(srv, mx, qid, "l@dest.test")


@test
def mx_sending_an_endless_reply():
    """The reply to MAIL FROM never ends ("250-" lines as fast as the
    socket takes them): sluice stops at 100 lines and defers."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", mode="endless")
        srv = env.server(retry_schedule="2s")
        qid = send(srv, ["x@dest.test"])
        st, n, last = wait_state(srv, qid, "x@dest.test", "deferred", attempts=1)
        assert last.startswith("4.5.0 mx.dest.test[127.0.0.2]:%d: malformed reply: more "
                               "than 100 lines, or lines with different codes "
                               "(250-2.1.0 and there is more" % env.port), last
        assert durations(srv, qid)[0] < 10000, durations(srv, qid)
        behaves_then_delivered(srv, mx, qid, "x@dest.test")


@test
def mx_silent_after_the_data():
    """The MX reads the message and its final dot and never answers: after
    delivery_data_timeout the message is deferred (it may or may not have
    been taken: RFC 5321 section 6.1 prefers a duplicate to a loss), and
    it is not sent again at once on a new connection, also when the
    silent connection was a kept one."""
    with Env() as env:
        mx = env.scripted("127.0.0.2")
        srv = env.server(retry_schedule="3s", delivery_data_timeout="2s",
                         delivery_threads="1")
        q1 = send(srv, ["first@dest.test"])
        wait_state(srv, q1, "first@dest.test", "delivered")
        # The connection is kept for the next message: it turns silent.
        mx.mode = "silent_after_data"
        q2 = send(srv, ["s@dest.test"])
        st, n, last = wait_state(srv, q2, "s@dest.test", "deferred", attempts=1)
        assert last == "4.4.2 mx.dest.test[127.0.0.2]:%d: timeout waiting for reply" % env.port, \
            last
        assert len(mx.unanswered) == 1, "sent %d times" % len(mx.unanswered)
        assert durations(srv, q2)[0] < 10000, durations(srv, q2)
        assert mx.connections == 1, mx.connections
        mx.mode = "normal"
        wait_state(srv, q2, "s@dest.test", "delivered", timeout=20)
        time.sleep(1.5)
        assert len(mx.messages) == 2, len(mx.messages)
        assert [a[0] for a in attempts_of(srv, q2)] == ["deferred", "sent"], attempts_of(srv, q2)


@test
def mx_closing_in_the_middle_of_a_reply():
    """The MX closes the connection in the middle of its reply to RCPT
    (after a first line, inside the second)."""
    with Env() as env:
        mx = env.scripted("127.0.0.2", mode="close_mid_reply")
        srv = env.server(retry_schedule="2s")
        qid = send(srv, ["c@dest.test"])
        st, n, last = wait_state(srv, qid, "c@dest.test", "deferred", attempts=1)
        assert last == "4.4.2 mx.dest.test[127.0.0.2]:%d: connection lost" % env.port, last
        behaves_then_delivered(srv, mx, qid, "c@dest.test")


@test
def dns_server_gone():
    """The DNS server is gone: the MX lookup fails (fast, or within
    dns_timeout), the domain is suspended (its other mail is deferred
    without a lookup), and the mail goes once the server is back."""
    with Env() as env:
        own = FakeDNS(ZONE.replace("$TTL 60", "$TTL 1"))
        try:
            port = own.port
            env.dns_server = own.server
            mx = env.scripted("127.0.0.2")
            srv = env.server(retry_schedule="2s", dns_timeout="2s")
            own.stop()
            ids = [send(srv, ["d%d@dest.test" % i]) for i in range(5)]
            for i, qid in enumerate(ids):
                st, n, last = wait_state(srv, qid, "d%d@dest.test" % i, "deferred",
                                         attempts=1, timeout=20)
                assert last.startswith("4.4.3 "), last
                assert "DNS lookup of MX for dest.test failed" in last, last
                assert max(durations(srv, qid)) < 10000, durations(srv, qid)
            srv.wait_log(r"site=dest\.test delivery temporarily suspended: 4\.4\.3 DNS lookup "
                         r"of MX for dest\.test failed")
            suspended = srv.query("select count(*) from attempts where reply like "
                                  "'4.4.3 delivery temporarily suspended: DNS lookup%'")[0][0]
            assert suspended >= 3, srv.query("select reply from attempts")
            own = FakeDNS(ZONE, port=port)
            for i, qid in enumerate(ids):
                wait_state(srv, qid, "d%d@dest.test" % i, "delivered", timeout=20)
            srv.wait_log(r"site=dest\.test delivery resumed after")
            time.sleep(1.5)
            assert len(mx.messages) == 5, len(mx.messages)
            assert srv.query("select count(*) from attempts where status='sent'") == [(5,)]
        finally:
            own.stop()


# ---- the disk full while an attempt is recorded ----

def fill_after_wal_truncation(srv, disk):
    """Fill the disk once the idle WAL has been truncated (a second after
    the last commit): until then the next commit could go into the WAL's
    old blocks and need no new one.  The MX holds its reply meanwhile."""
    wal = srv.db + "-wal"
    poll_until(lambda: not os.path.exists(wal) or os.path.getsize(wal) == 0, 3,
               "the idle WAL to be truncated")
    disk.fill()


@test
def disk_full_while_recording_a_delivery():
    """The MX takes the message while the queue's disk is full, so the
    delivery cannot be recorded: the delivery thread keeps the outcome and
    records it once there is room.  The message is not sent again (a
    lease keeps it), nothing is lost, and the queue stays consistent."""
    require_root("it mounts a small tmpfs")
    with Env() as env:
        mx = env.scripted("127.0.0.2", data_delay=4)
        srv = Server(start=False, config=env.config(retry_schedule="2s"))
        with SmallDisk(srv, 4) as disk:
            srv.start()
            qid = send(srv, ["full@dest.test"])
            # The transaction is under way (claimed, leased): fill the disk.
            poll_until(lambda: mx.transactions > 0, 10, "a transaction at the MX")
            fill_after_wal_truncation(srv, disk)
            srv.wait_log(r"id=%s cannot record the attempt: 4\.3\.1 Insufficient system "
                         r"storage \(kept in memory; trying again\)" % qid, timeout=15)
            assert len(mx.messages) == 1
            time.sleep(3)   # more than a retry interval: no second copy
            assert len(mx.messages) == 1, len(mx.messages)
            assert rcpt_row(srv, qid, "full@dest.test")[0] == "queued"
            disk.free()
            wait_state(srv, qid, "full@dest.test", "delivered", timeout=45)
            srv.wait_log(r"id=%s attempt recorded after \d+ failed tr" % qid)
            assert len(mx.messages) == 1, len(mx.messages)
            assert [a[0] for a in attempts_of(srv, qid)] == ["sent"], attempts_of(srv, qid)
            assert srv.stop() == 0
            assert srv.query("pragma integrity_check") == [("ok",)]


@test
def disk_full_while_recording_a_deferral():
    """The MX defers (451 after the data) while the disk is full: the
    deferral is kept until it can be written; then the message is
    delivered once the MX and the disk behave."""
    require_root("it mounts a small tmpfs")
    with Env() as env:
        mx = env.scripted("127.0.0.2", data_delay=4, data_reply="451 4.3.0 try later")
        srv = Server(start=False, config=env.config(retry_schedule="1s"))
        with SmallDisk(srv, 4) as disk:
            srv.start()
            qid = send(srv, ["def@dest.test"])
            poll_until(lambda: mx.transactions > 0, 10, "a transaction at the MX")
            fill_after_wal_truncation(srv, disk)
            srv.wait_log(r"id=%s cannot record the attempt: 4\.3\.1 " % qid, timeout=15)
            assert rcpt_row(srv, qid, "def@dest.test")[:2] == ("queued", 0)
            mx.data_reply = "250 2.0.0 Ok: queued"
            mx.data_delay = 0
            disk.free()
            st, n, last = wait_state(srv, qid, "def@dest.test", "delivered", timeout=45)
            time.sleep(1.5)
            assert len(mx.messages) == 1, len(mx.messages)
            assert [a[0] for a in attempts_of(srv, qid)] == ["deferred", "sent"], \
                attempts_of(srv, qid)
            assert attempts_of(srv, qid)[0][5].startswith("451 4.3.0"), attempts_of(srv, qid)
            assert srv.stop() == 0
            assert srv.query("pragma integrity_check") == [("ok",)]


if __name__ == "__main__":
    main()
