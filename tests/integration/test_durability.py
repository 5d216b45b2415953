"""Durability: nothing acknowledged is ever lost and nothing unacknowledged
is ever queued, whatever happens to the server or the client (kill -9 in
the middle of DATA, disconnects, a full disk, SIGTERM and its grace
period), and large messages are stored byte for byte in bounded memory."""
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import SmallDisk, require_root  # noqa: E402
from sluicetest import poll_until, rss_limit_kb, Server, main, test  # noqa: E402

# Our Received header for a message from client.test to one recipient.
RECEIVED_RE = (rb"^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
               rb"\tby relay\.test \(sluice\) with ESMTP id (\w{16})\r\n"
               rb"\tfor <rcpt@example\.net>;\r\n"
               rb"\t[^\r\n]*\r\n")
QUEUED_RE = r"250 2\.0\.0 Ok: queued as (\w{16})"
QUEUE_CHUNK = 64 * 1024


# ---------------------------------------------------------------- helpers


def integrity_ok(srv):
    rows = srv.query("PRAGMA integrity_check")
    assert rows == [("ok",)], "integrity_check: %r" % rows


def wait_exit(srv, timeout=20):
    """Wait for a server that was already signalled to exit by itself
    (srv.stop() would send another signal); returns its exit status."""
    try:
        srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("sluice did not exit within %ds" % timeout)
    return srv.stop()   # the process is gone: no signal, just bookkeeping


def stored_payload(srv, qid):
    """The stored body of `qid` without our Received header (checked)."""
    stored = srv.body(qid)
    m = re.match(RECEIVED_RE, stored)
    assert m, "%s: no Received header in %r" % (qid, stored[:300])
    assert m.group(1).decode() == qid, (m.group(1), qid)
    return stored[m.end():]


def make_body(token, size, rng):
    """A message of about `size` octets, some lines starting with a dot.
    Returns (wire, expected): what to send (dot-stuffed, without the final
    dot) and what must be stored after the Received header."""
    lines = [b"Subject: " + token.encode(), b"X-Token: " + token.encode(), b""]
    n = 0
    while n < size:
        k = rng.randint(0, 76)
        line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 .") for _ in range(k))
        if rng.random() < 0.05:
            line = b"." + line
        lines.append(line)
        n += len(line) + 2
    expected = b"".join(l + b"\r\n" for l in lines)
    wire = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    return wire, expected


def filler(n):
    """n octets of plain message lines (no dots), 78 octets per line."""
    line = b"x" * 76 + b"\r\n"
    return (line * (n // len(line) + 1))[:n - n % len(line)]


def partial_in_db(srv):
    """(incoming rows, chunk rows) of messages not (yet) queued."""
    inc = srv.count("incoming")
    ch = srv.query("select count(*) from body_chunks where msg_id not in "
                   "(select id from messages)")[0][0]
    return inc, ch


# ------------------------------------------------------------ kill -9

@test
def kill9_during_data_leaves_nothing():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: never finished\r\n\r\n" + filler(2000))
    time.sleep(0.2)   # let the server read it (there is no reply to wait for)
    srv.kill9()
    c.close()
    srv.start()
    assert srv.count("messages") == 0
    assert srv.count("recipients") == 0
    assert srv.count("body_chunks") == 0
    assert srv.count("incoming") == 0
    integrity_ok(srv)
    # The restarted server works.
    c = srv.connect()
    c.ehlo()
    qid = c.mail()
    assert srv.query("select id from messages") == [(qid,)]


@test
def kill9_during_multichunk_data_reclaims_chunks():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: big partial\r\n\r\n" + filler(300 * 1024))
    # The chunks really were written before the kill.
    inc, ch = poll_until(lambda: (lambda p: p if p[0] == 1 and p[1] >= 3 else None)(partial_in_db(srv)),
                         what="partial chunks in the queue")
    srv.kill9()
    c.close()
    srv.start()
    log = srv.log()[srv._logstart:]
    assert re.search(r"reclaimed 1 partial message", log), log[-2000:]
    assert srv.count("messages") == 0
    assert srv.count("recipients") == 0
    assert srv.count("body_chunks") == 0, "chunks left after restart"
    assert srv.count("incoming") == 0, "incoming left after restart"
    integrity_ok(srv)


@test
def disconnect_during_data_drops_chunks():
    srv = Server()
    # Small: nothing was written yet.
    c = srv.connect()
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: gone\r\n\r\nabc\r\n")
    c.close()
    # Large: chunks were written, then the client vanishes.
    c = srv.connect()
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: gone too\r\n\r\n" + filler(300 * 1024))
    poll_until(lambda: partial_in_db(srv)[1] >= 3, what="partial chunks in the queue")
    c.close()
    poll_until(lambda: partial_in_db(srv) == (0, 0) and srv.count("body_chunks") == 0,
               what="the session to drop the partial chunks")
    srv.wait_log(r"disconnect from .*mails=0")
    assert srv.count("messages") == 0
    assert srv.count("recipients") == 0
    integrity_ok(srv)


class Crashers:
    """Clients that send mail until the server dies, recording what they
    sent and what was acknowledged."""

    def __init__(self, srv, rnd, rng):
        self.srv = srv
        self.rnd = rnd
        self.rng = rng
        self.lock = threading.Lock()
        self.bodies = {}        # token -> expected stored payload
        self.dot_sent = set()   # tokens whose final dot went out
        self.acked = {}         # qid -> token
        self.stalled = set()    # tokens deliberately left in mid-DATA
        self.round_acks = 0
        self.stall_ready = threading.Semaphore(0)
        self.errors = []

    def sender(self, i, seed):
        rng = random.Random(seed)
        try:
            c = self.srv.connect(timeout=10)
            c.ehlo()
        except (OSError, EOFError):
            return
        n = 0
        try:
            while True:
                token = "r%dc%dm%d" % (self.rnd, i, n)
                n += 1
                size = rng.choice((200, 3000, 40000, 70000, 150000, 300000))
                wire, expected = make_body(token, size, rng)
                with self.lock:
                    self.bodies[token] = expected
                c.begin_data()
                c.send_cut(wire, rng, 0.005)
                with self.lock:
                    self.dot_sent.add(token)
                c.send(b".\r\n")
                code, text = c.reply()
                if code != 250:
                    with self.lock:
                        self.errors.append("%s: %s" % (token, text))
                    return
                qid = re.match(QUEUED_RE, text).group(1)
                with self.lock:
                    self.acked[qid] = token
                    self.round_acks += 1
        except (OSError, EOFError, ValueError):
            return   # the server was killed
        except Exception as e:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append("client %d: %r" % (i, e))

    def staller(self, i):
        token = "r%ds%d" % (self.rnd, i)
        try:
            c = self.srv.connect(timeout=10)
            c.ehlo()
            c.begin_data()
            with self.lock:
                self.stalled.add(token)
            wire, _ = make_body(token, 200 * 1024, random.Random(i))
            c.send(wire)
        except (OSError, EOFError):
            return
        finally:
            self.stall_ready.release()
        c.closed(timeout=15)   # until the kill
        c.close()


def check_queue(srv, acked, bodies, dot_sent, stalled):
    """The queue after a crash: consistent, every acknowledged message
    present with its body, nothing that was not completely sent."""
    integrity_ok(srv)
    assert srv.count("incoming") == 0, "incoming rows survive the restart"
    inc, orphans = partial_in_db(srv)
    assert orphans == 0, "%d orphan chunks after restart" % orphans
    ids = {r[0] for r in srv.query("select id from messages")}
    for qid, token in acked.items():
        assert qid in ids, "acknowledged message %s (%s) lost" % (qid, token)
    unacked = 0
    for qid in ids:
        payload = stored_payload(srv, qid)
        m = re.match(rb"Subject: (\S+)\r\n", payload)
        assert m, "%s: unknown message %r" % (qid, payload[:100])
        token = m.group(1).decode()
        assert token not in stalled, "message %s queued though its data never ended" % token
        assert token in dot_sent, "message %s queued before its final dot" % token
        assert payload == bodies[token], "%s (%s): body differs" % (qid, token)
        rc = srv.query("select address, state from recipients where msg_id=?", (qid,))
        assert rc == [("rcpt@example.net", "queued")], (qid, rc)
        if qid not in acked:
            unacked += 1    # committed, but the 250 was lost in the kill
        else:
            assert acked[qid] == token, (qid, token, acked[qid])
    return unacked


@test
def kill9_loop_never_loses_acknowledged_mail():
    rng = random.Random(1234)
    srv = Server(config={"workers": "16"})
    all_acked = {}
    all_bodies = {}
    all_dots = set()
    all_stalled = set()
    lost_250 = 0
    for rnd in range(4):
        if rnd > 0:
            srv.start()
        cr = Crashers(srv, rnd, rng)
        threads = [threading.Thread(target=cr.sender, args=(i, rng.random()), daemon=True)
                   for i in range(6)]
        threads += [threading.Thread(target=cr.staller, args=(i,), daemon=True)
                    for i in range(2)]
        for t in threads:
            t.start()
        for _ in range(2):
            assert cr.stall_ready.acquire(timeout=10), "staller never got into DATA"
        # Kill when some mail went through and the stallers' chunks exist.
        target = rng.randint(3, 12)
        poll_until(lambda: cr.round_acks >= target and partial_in_db(srv)[0] >= 2,
                   timeout=20, what="acknowledged mail in round %d" % rnd)
        time.sleep(rng.random() * 0.05)
        srv.kill9()
        for t in threads:
            t.join(20)
            assert not t.is_alive(), "a client thread hangs after kill -9"
        assert not cr.errors, cr.errors
        all_acked.update(cr.acked)
        all_bodies.update(cr.bodies)
        all_dots |= cr.dot_sent
        all_stalled |= cr.stalled
        srv.start()
        # Check with everything sent so far (earlier rounds too).
        lost_250 = check_queue(srv, all_acked, all_bodies, all_dots, all_stalled)
        srv.kill9()
    assert len(all_acked) >= 12, len(all_acked)
    srv.start()
    n = srv.count("messages")
    assert n == len(all_acked) + lost_250, (n, len(all_acked), lost_250)


# ----------------------------------------------------------- big messages

def big_lines(total):
    """`total` octets of 76-character lines with CRLF, distinct lines,
    some starting with a dot; returns the unstuffed octets."""
    out = []
    n = 0
    i = 0
    while n < total:
        body = b"%010d " % i + b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+/!"[:65]
        if i % 97 == 0:
            body = b"." + body[1:]
        out.append(body + b"\r\n")
        n += 78
        i += 1
    return b"".join(out)


@test
def fifty_mb_data_message_byte_for_byte_bounded_memory():
    srv = Server(config={"max_message_size": "60m"})
    c = srv.connect(timeout=60)
    c.ehlo()
    c.mail()   # warm up
    before = srv.peak_rss_kb()
    payload = b"Subject: fifty\r\n\r\n" + big_lines(50 * 1024 * 1024)
    want = hashlib.sha256(payload).hexdigest()
    wire = payload.replace(b"\r\n.", b"\r\n..")
    del payload
    c.begin_data()
    c.send(wire)
    del wire
    c.send(b".\r\n")
    qid = c.reply(QUEUED_RE)[1].split()[-1]
    after = srv.peak_rss_kb()
    got = hashlib.sha256(stored_payload(srv, qid)).hexdigest()
    assert got == want, "stored body differs from what was sent"
    assert after - before < rss_limit_kb(64 * 1024), "peak RSS grew by %d kB" % (after - before)
    size = srv.query("select size from messages where id=?", (qid,))[0][0]
    assert size >= 50 * 1024 * 1024, size


@test
def fifty_mb_bdat_message_byte_for_byte_bounded_memory():
    srv = Server(config={"max_message_size": "60m"})
    c = srv.connect(timeout=60)
    c.ehlo()
    c.mail()   # warm up
    before = srv.peak_rss_kb()
    payload = b"Subject: fifty bdat\r\n\r\n" + big_lines(50 * 1024 * 1024)
    want = hashlib.sha256(payload).hexdigest()
    c.cmd("MAIL FROM:<sender@client.test>", "250 ")
    c.cmd("RCPT TO:<rcpt@example.net>", "250 ")
    step = 4 * 1024 * 1024 + 7   # chunk boundaries fall inside lines
    view = memoryview(payload)
    off = 0
    while off < len(payload):
        part = view[off:off + step]
        off += len(part)
        last = off >= len(payload)
        c.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b""))
        c.send(part)
        if not last:
            c.reply(r"250 2\.0\.0 Ok: %d octets" % len(part))
    qid = c.reply(QUEUED_RE)[1].split()[-1]
    after = srv.peak_rss_kb()
    del view, payload
    got = hashlib.sha256(stored_payload(srv, qid)).hexdigest()
    assert got == want, "stored body differs from what was sent"
    assert after - before < rss_limit_kb(64 * 1024), "peak RSS grew by %d kB" % (after - before)


# -------------------------------------------------------------- full disk

def fill_queue(srv, c, rng):
    """Send 100 KB messages until one is refused for lack of space;
    returns ({qid: expected payload}, the refusal)."""
    acked = {}
    for i in range(200):
        wire, expected = make_body("full%d" % i, 100 * 1024, rng)
        c.begin_data()
        c.send(wire + b".\r\n")
        code, text = c.reply()
        if code == 250:
            acked[re.match(QUEUED_RE, text).group(1)] = expected
            continue
        assert re.match(r"(452 4\.3\.1|451 4\.3\.0)", text), \
            "full disk: expected 452 4.3.1 or 451 4.3.0, got %r" % text
        assert acked, "the disk was full before the first message"
        return acked, text
    raise AssertionError("never ran out of space after 200 messages")


def check_full_queue(srv, acked):
    """Exactly the acknowledged messages are queued, byte for byte."""
    integrity_ok(srv)
    ids = {r[0] for r in srv.query("select id from messages")}
    assert ids == set(acked), "queued %r, acknowledged %r" % (ids, set(acked))
    for qid, expected in acked.items():
        assert stored_payload(srv, qid) == expected, "%s: body differs" % qid


def send_small_until_250(c, tries=3):
    """A small message once there is room (a write that failed for lack
    of space may take a retry or two); returns its queue ID."""
    text = None
    for _ in range(tries):
        c.begin_data()
        c.send(b"Subject: after\r\n\r\nroom again\r\n.\r\n")
        code, text = c.reply()
        if code == 250:
            return re.match(QUEUED_RE, text).group(1)
        assert re.match(r"45[12] ", text), text
        time.sleep(0.2)
    raise AssertionError("no 250 after space was freed: %r" % text)


@test
def full_disk_gives_4xx_never_250():
    require_root("it mounts a small tmpfs to fill the disk")
    srv = Server(start=False)
    with SmallDisk(srv, 3, filler_mb=1) as disk:
        srv.start()
        c = srv.connect()
        c.ehlo()
        acked, refusal = fill_queue(srv, c, random.Random(7))
        check_full_queue(srv, acked)
        # Still full: another message is refused, or if acknowledged, queued.
        c.begin_data()
        c.send(b"Subject: still full\r\n\r\n" + filler(100 * 1024) + b".\r\n")
        code, text = c.reply()
        assert code != 250 or re.match(QUEUED_RE, text).group(1) in \
            {r[0] for r in srv.query("select id from messages")}, text
        if code == 250:
            acked[re.match(QUEUED_RE, text).group(1)] = None
        else:
            assert re.match(r"45[12] 4\.3\.[01]", text), text
        # The session and the server keep serving while the disk is full.
        c.cmd("NOOP", "250 ")
        c2 = srv.connect()
        c2.ehlo()
        c2.cmd("QUIT", "221 ")
        # Make room: a small message is accepted again.
        os.unlink(disk.filler)
        qid = send_small_until_250(c)
        assert stored_payload(srv, qid) == b"Subject: after\r\n\r\nroom again\r\n"
        c.cmd("QUIT", "221 ")
        assert srv.stop() == 0
        # The queue as left on disk, read without the server.  Deleting
        # a refused message's chunks may itself have failed for lack of
        # space: they must then still be listed in `incoming`, to be
        # reclaimed at the next start.
        ids = {r[0] for r in srv.query("select id from messages")}
        assert ids == set(acked) | {qid}, (ids, set(acked), qid)
        stray = srv.query("select count(*) from body_chunks where msg_id not in "
                          "(select id from messages) and msg_id not in "
                          "(select msg_id from incoming)")[0][0]
        assert stray == 0, "%d chunks belong to no message and are not reclaimable" % stray
        integrity_ok(srv)


def take_all_space(path):
    """Fill the rest of a file system with the file `path`."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


@test
def restart_on_full_disk_starts_and_defers():
    """After a full-disk episode the server must still start on the full
    disk (an MTA that cannot start cannot even say 452), keep its queue,
    and accept mail again once there is room."""
    require_root("it mounts a small tmpfs to fill the disk")
    srv = Server(start=False)
    with SmallDisk(srv, 3, filler_mb=1) as disk:
        srv.start()
        c = srv.connect()
        c.ehlo()
        acked, _ = fill_queue(srv, c, random.Random(8))
        os.unlink(disk.filler)
        acked[send_small_until_250(c)] = b"Subject: after\r\n\r\nroom again\r\n"
        # More mail once there is room (so the queue's files grow again).
        wire, expected = make_body("room", 200 * 1024, random.Random(9))
        c.begin_data()
        c.send(wire + b".\r\n")
        acked[c.reply(QUEUED_RE)[1].split()[-1]] = expected
        c.cmd("QUIT", "221 ")
        reserve = os.path.join(disk.mnt, "reserve")
        with open(reserve, "wb") as f:
            f.write(b"\0" * (256 * 1024))
        assert srv.stop() == 0
        top_up = os.path.join(disk.mnt, "filler2")
        take_all_space(top_up)
        # The disk is full, to the last block.
        srv.start()
        check_full_queue(srv, acked)
        c = srv.connect()
        c.ehlo()
        c.begin_data()
        c.send(b"Subject: still full\r\n\r\n" + filler(100 * 1024) + b".\r\n")
        code, text = c.reply()
        if code == 250:
            qid = re.match(QUEUED_RE, text).group(1)
            assert qid in {r[0] for r in srv.query("select id from messages")}, text
        else:
            assert re.match(r"45[12] 4\.3\.[01]", text), text
        os.unlink(top_up)
        os.unlink(reserve)
        qid = send_small_until_250(c)
        assert stored_payload(srv, qid) == b"Subject: after\r\n\r\nroom again\r\n"
        c.cmd("QUIT", "221 ")
        assert srv.stop() == 0


# --------------------------------------------------------------- SIGTERM

def refused_connection(srv):
    try:
        c = srv.connect(timeout=5)
    except ConnectionRefusedError:
        return True
    c.close()
    return False


@test
def sigterm_lets_transaction_finish_and_ends_idle_sessions():
    srv = Server()
    busy = srv.connect()
    busy.ehlo()
    busy.begin_data()
    first = b"Subject: finishing\r\n\r\n" + filler(100 * 1024)
    busy.send(first)
    idle = srv.connect()
    idle.ehlo()
    srv.proc.send_signal(signal.SIGTERM)
    idle.reply(r"421 4\.3\.2 ")
    assert idle.closed(), "idle session not closed after its 421"
    assert refused_connection(srv), "a new connection was accepted after SIGTERM"
    rest = b"the end\r\n"
    busy.send(rest + b".\r\n")
    qid = busy.reply(QUEUED_RE)[1].split()[-1]
    # Then, outside a transaction, the session ends too.
    busy.reply(r"421 4\.3\.2 ")
    assert busy.closed()
    assert wait_exit(srv) == 0
    assert srv.query("select id from messages") == [(qid,)]
    assert stored_payload(srv, qid) == first + rest
    assert srv.count("incoming") == 0
    assert "stopped: 1 message accepted" in srv.log()


@test
def sigterm_grace_over_ends_stuck_data():
    srv = Server(config={"shutdown_grace": "1s"})
    c = srv.connect(timeout=15)
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: stuck\r\n\r\n" + filler(300 * 1024))
    poll_until(lambda: partial_in_db(srv)[1] >= 3, what="partial chunks in the queue")
    srv.proc.send_signal(signal.SIGTERM)
    c.reply(r"421 4\.3\.2 ")
    assert c.closed(), "not closed after the grace period's 421"
    assert wait_exit(srv) == 0
    assert srv.count("messages") == 0
    assert srv.count("body_chunks") == 0, "partial chunks left after shutdown"
    assert srv.count("incoming") == 0
    srv.start()
    integrity_ok(srv)
    assert srv.count("messages") == 0


@test
def second_sigterm_exits_at_once_queue_consistent():
    srv = Server(config={"shutdown_grace": "30s"})
    c = srv.connect()
    c.ehlo()
    bodies = {}
    for i in range(3):
        wire, expected = make_body("before%d" % i, 80 * 1024, random.Random(i))
        c.begin_data()
        c.send(wire + b".\r\n")
        bodies[c.reply(QUEUED_RE)[1].split()[-1]] = expected
    stuck = srv.connect(timeout=15)
    stuck.ehlo()
    stuck.begin_data()
    stuck.send(b"Subject: stuck\r\n\r\n" + filler(300 * 1024))
    poll_until(lambda: partial_in_db(srv)[1] >= 3, what="partial chunks in the queue")
    srv.proc.send_signal(signal.SIGTERM)
    srv.wait_log(r"SIGTERM: shutting down")
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_exit(srv) == 1
    assert stuck.closed(), "the stuck client was not disconnected"
    srv.start()
    integrity_ok(srv)
    assert {r[0] for r in srv.query("select id from messages")} == set(bodies)
    for qid, expected in bodies.items():
        assert stored_payload(srv, qid) == expected
    assert partial_in_db(srv) == (0, 0), "partial message survived the restart"


if __name__ == "__main__":
    main()
