"""The WAL stays bounded: under sustained intake queue.db-wal never grows
past its cap plus the group-commit batch that crossed it, and goes back to
nothing when the relay is idle.  A reader holding a read transaction open
makes the WAL grow (SQLite cannot reuse it while that snapshot lives): the
relay keeps accepting mail, logs why, and recovers once the reader ends.

The cap is 64 MiB; these tests set a small one through SLUICE_TEST_WAL_CAP
(a test setting the server logs, not a configuration key) so that a few
thousand messages cross it many times.  The WAL's size is what the file
system reports, sampled every millisecond while the load runs."""
import asyncio
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import poll_until, Server, main, test  # noqa: E402

CAP = 256 * 1024
RESTART_RE = r"WAL checkpoint: restart wal_bytes=(\d+) cap_bytes=(\d+) batch_bytes=(\d+)"


def wal_server():
    """A server with the small cap (the variable is read at start)."""
    os.environ["SLUICE_TEST_WAL_CAP"] = str(CAP)
    try:
        srv = Server(config={"workers": "40"})
    finally:
        del os.environ["SLUICE_TEST_WAL_CAP"]
    srv.wait_log(r"WAL cap %d bytes from SLUICE_TEST_WAL_CAP" % CAP)
    return srv


def wal_size(srv):
    try:
        return os.path.getsize(srv.db + "-wal")
    except FileNotFoundError:
        return 0


class Sampler(threading.Thread):
    """The largest size of queue.db-wal seen while it runs."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.largest, self.done = srv, 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.largest = max(self.largest, wal_size(self.srv))
            time.sleep(0.001)

    def finish(self):
        self.done.set()
        self.join()
        return self.largest


def load(srv, total, sessions=32):
    """Send `total` small messages over `sessions` persistent sessions as
    fast as the server answers (asyncio: threads with blocking sockets
    leave the writer idle between commits, and then the WAL starts over
    without any help); returns the queue IDs acknowledged."""
    body = b"Subject: load\r\n\r\n" + (b"x" * 98 + b"\r\n") * 10 + b".\r\n"
    acked = []

    async def reply(r):
        while True:
            line = await r.readline()
            if line[3:4] != b"-":
                return line

    async def session(n):
        r, w = await asyncio.open_connection(srv.host, srv.port)
        assert (await reply(r)).startswith(b"220 ")
        w.write(b"EHLO client.test\r\n")
        assert (await reply(r)).startswith(b"250 ")
        for _ in range(n):
            w.write(b"MAIL FROM:<sender@client.test>\r\n"
                    b"RCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            for code in (b"250 ", b"250 ", b"354 "):
                line = await reply(r)
                assert line.startswith(code), line
            w.write(body)
            m = re.match(rb"250 2\.0\.0 Ok: queued as (\w+)", await reply(r))
            assert m, "no 250 after the data"
            acked.append(m.group(1).decode())
        w.write(b"QUIT\r\n")
        assert (await reply(r)).startswith(b"221 ")
        w.close()

    async def run():
        await asyncio.wait_for(asyncio.gather(
            *(session(total // sessions) for _ in range(sessions))), 300)

    asyncio.run(run())
    assert len(acked) == total // sessions * sessions, len(acked)
    return acked


def restarts(srv, start=0):
    """(wal_bytes, batch_bytes) of each forced checkpoint logged."""
    out = []
    for m in re.finditer(RESTART_RE, srv.log()[start:]):
        assert int(m.group(2)) == CAP, m.group(0)
        out.append((int(m.group(1)), int(m.group(3))))
    return out


def in_queue(srv, acked):
    ids = {r[0] for r in srv.query("select id from messages")}
    missing = [q for q in acked if q not in ids]
    assert not missing, "%d acknowledged messages missing" % len(missing)


@test
def wal_stays_under_cap_plus_one_batch():
    srv = wal_server()
    sampler = Sampler(srv)
    sampler.start()
    acked = load(srv, 4000)
    largest = sampler.finish()
    rs = restarts(srv)
    # The cap was crossed many times, and each time the WAL started over.
    assert len(rs) >= 10, "only %d forced checkpoints" % len(rs)
    batch = max(b for _, b in rs)
    assert largest <= CAP + batch, \
        "WAL file reached %d bytes; cap %d + largest batch %d" % (largest, CAP, batch)
    # Whatever sluice reports: a batch holds at most one message per
    # session, each touching at most about ten pages.
    assert largest <= CAP + 32 * 10 * 4120, largest
    assert "WAL checkpoint blocked" not in srv.log()
    in_queue(srv, acked)
    assert srv.query("PRAGMA integrity_check") == [("ok",)]
    # Idle: the WAL is copied into queue.db and truncated.
    poll_until(lambda: wal_size(srv) == 0, timeout=15, what="the idle WAL truncated")
    assert len(set(acked)) == len(acked) == srv.query("select count(*) from messages")[0][0]


@test
def open_read_transaction_grows_wal_logged_then_recovers():
    srv = wal_server()
    load(srv, 192)
    # A sqlite3 shell inside BEGIN, its snapshot taken by the SELECT.
    shell = subprocess.Popen(["sqlite3", "-readonly", srv.db], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        shell.stdin.write(b"BEGIN;\nSELECT count(*) FROM messages;\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip() == b"192"
        start = len(srv.log())
        blocked = load(srv, 2000)
        # SQLite cannot start the WAL over under the reader's snapshot:
        # the WAL grows past the cap, mail is still accepted, and the
        # relay says why.
        assert wal_size(srv) > 4 * CAP, wal_size(srv)
        log = srv.wait_log(r"WAL checkpoint blocked: wal_bytes=\d+ cap_bytes=%d: .*"
                           r"read transaction open" % CAP, start=start)
        assert not restarts(srv, start), "the WAL started over under an open snapshot"
        # The reader still sees its snapshot.
        shell.stdin.write(b"SELECT count(*) FROM messages;\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip() == b"192"
        shell.stdin.write(b"COMMIT;\n.quit\n")
        shell.stdin.close()
        assert shell.wait(30) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    # With the reader gone, the next forced checkpoint succeeds, and from
    # then on the file stays under the cap plus a batch.
    # (The writer retries with a backoff of up to 5 s: load until it has.)
    start = len(srv.log())
    after = []
    while not restarts(srv, start):
        assert len(after) < 20000, "no forced checkpoint after the reader ended"
        after += load(srv, 320)
    assert re.search(r"WAL checkpoint: restart .*\(no longer blocked\)", srv.log()[start:])
    sampler = Sampler(srv)
    sampler.start()
    after += load(srv, 2000)
    largest = sampler.finish()
    batch = max(b for _, b in restarts(srv, start))
    assert largest <= CAP + batch, (largest, CAP, batch)
    poll_until(lambda: wal_size(srv) == 0, timeout=15, what="the idle WAL truncated")
    in_queue(srv, blocked + after)
    assert srv.query("PRAGMA integrity_check") == [("ok",)]


if __name__ == "__main__":
    main()
