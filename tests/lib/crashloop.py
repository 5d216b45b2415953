#!/usr/bin/python3
"""
crashloop - kill -9 sluice at random points while clients load it and
delivery runs, many times over, then check that nothing acknowledged was
lost or doubled.

    /usr/bin/python3 tests/lib/crashloop.py [--cycles 50] [--seed N]

(make crashloop runs 50 cycles; tests/integration/test_crashloop.py runs a
short version in the suite.)  Each cycle starts sluice on the same queue,
lets six clients send mail (300 octets to 150 KB, written in pieces so
that the kill often falls inside DATA), and sends SIGKILL after a random
0.05-1.2 s; about one cycle in eight kills the server within its first
50 ms instead (recovery, reclaim, the first checkpoint).  Delivery runs
all along: the queue's only domain, dest.test, has its MX (found through
tests/lib/fakedns.py) at 127.0.0.2, where tests/lib/sink.py stores what
it receives.  The WAL cap is 256 KiB (SLUICE_TEST_WAL_CAP), so kills also
land in forced checkpoints.

Each message is told apart by its envelope sender (a token, unique per
attempt), which stays in the queue after delivery releases the body.
After the last cycle sluice restarts and delivers everything; then:

- PRAGMA integrity_check is ok;
- every message that got its 250 is in the queue exactly once, under the
  queue ID its 250 named; no message is in it twice; none whose final dot
  was never sent is in it at all;
- every queued message was delivered at least once, with the octets the
  client sent; none bounced.

Reported: the messages acknowledged, those committed whose 250 the kill
swallowed, and the duplicates: messages the sink received twice or more
(delivered, then the kill came before the queue recorded it).
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fakedns import FakeDNS  # noqa: E402
from sink import Sink  # noqa: E402
from sluicetest import Server, free_port, poll_until  # noqa: E402

ZONE = """\
$ORIGIN test.
$TTL 60
dest            MX 10 mx.dest
mx.dest         A 127.0.0.2
"""
WAL_CAP = 256 * 1024
SIZES = (300, 300, 3000, 3000, 20000, 70000, 150000)
QUEUED_RE = re.compile(r"250 2\.0\.0 Ok: queued as (\w{16})")


def make_body(token, size, rng):
    """About `size` octets of message with no line starting with a dot."""
    lines = [b"Subject: " + token.encode(), b""]
    n = 0
    while n < size:
        k = rng.randint(1, 76)
        lines.append(bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 ")
                           for _ in range(k)).lstrip(b" ") or b"x")
        n += len(lines[-1]) + 2
    return b"".join(l + b"\r\n" for l in lines)


class Clients:
    """Senders that send until the server dies, recording what they sent
    and what was acknowledged (shared by every cycle)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.digest = {}      # token -> sha256 of the payload
        self.dot_sent = set()  # tokens whose final dot went out
        self.acked = {}       # token -> queue ID from the 250
        self.errors = []

    def sender(self, srv, cycle, i, seed):
        rng = random.Random(seed)
        try:
            c = srv.connect(timeout=10)
            c.ehlo()
        except (OSError, EOFError, AssertionError):
            return   # killed before or during the greeting
        n = 0
        try:
            while True:
                token = "k%dc%dm%d" % (cycle, i, n)
                n += 1
                body = make_body(token, rng.choice(SIZES), rng)
                with self.lock:
                    self.digest[token] = hashlib.sha256(body).hexdigest()
                c.cmd("MAIL FROM:<%s@client.test>" % token, "250 ")
                c.cmd("RCPT TO:<r@dest.test>", "250 ")
                c.cmd("DATA", "354 ")
                c.send_cut(body, rng, 0.004)
                with self.lock:
                    self.dot_sent.add(token)
                c.send(b".\r\n")
                code, text = c.reply()
                if code != 250:
                    with self.lock:
                        self.errors.append("%s: %s" % (token, text))
                    return
                with self.lock:
                    self.acked[token] = QUEUED_RE.match(text).group(1)
        except (OSError, EOFError):
            return   # the server was killed
        except Exception as e:  # noqa: BLE001 - reported by the caller
            with self.lock:
                self.errors.append("client %d of cycle %d: %r" % (i, cycle, e))


def delivered(maildir):
    """{token: [sha256 of each copy the sink received, payload only]}."""
    out = {}
    for name in os.listdir(maildir):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(maildir, name)) as f:
            env = json.load(f)
        with open(os.path.join(maildir, name[:-5] + ".eml"), "rb") as f:
            data = f.read()
        token = env["mail_from"].split("@")[0].strip("<")
        # Our Received header comes first; the payload follows it.
        m = re.match(rb"Received: [^\r]*\r\n(?:\t[^\r]*\r\n)*", data)
        payload = data[m.end():] if m else data
        out.setdefault(token, []).append(hashlib.sha256(payload).hexdigest())
    return out


def run(cycles, seed, say=print):
    """The whole loop; returns the figures (a dict).  Raises
    AssertionError at the first broken promise; the caller cleans up the
    Server (sluicetest's test runner does, or main below)."""
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="crashloop-")
    dns = FakeDNS(ZONE)
    port = free_port("127.0.0.2")
    sink = Sink("127.0.0.2", port, os.path.join(tmp, "sink"))
    os.environ["SLUICE_TEST_WAL_CAP"] = str(WAL_CAP)
    ok = False
    try:
        srv = Server(start=False, config={
            "workers": "16",
            "delivery_threads": "2",
            "dns_servers": dns.server,
            "dns_timeout": "2s",
            "retry_schedule": "1s",
            "connect_timeout": "2s",
            "delivery_command_timeout": "5s",
            "delivery_port": str(port),
        })
        cl = Clients()
        early = 0
        for cycle in range(cycles):
            if rng.random() < 0.125:
                # Killed while it opens the queue (recovery, reclaim).
                srv.start(wait=False)
                time.sleep(rng.random() * 0.05)
                srv.kill9()
                early += 1
            srv.start()
            threads = [threading.Thread(target=cl.sender,
                                        args=(srv, cycle, i, rng.random()), daemon=True)
                       for i in range(6)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 1.2))
            srv.kill9()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a client hangs after kill -9"
            assert not cl.errors, cl.errors[:3]
        # Last start: deliver everything that is queued.
        srv.start()
        poll_until(lambda: srv.query(
            "select count(*) from recipients where state in ('queued', 'deferred')")[0][0] == 0,
            timeout=300, what="every queued recipient delivered")
        assert srv.stop() == 0
        rows = srv.query("PRAGMA integrity_check")
        assert rows == [("ok",)], "integrity_check: %r" % rows
        states = dict(srv.query("select state, count(*) from recipients group by state"))
        assert set(states) <= {"delivered"}, states
        queued = {}
        for sender, n, ids in srv.query(
                "select sender, count(*), group_concat(id) from messages group by sender"):
            token = sender.split("@")[0]
            assert n == 1, "message %s is in the queue %d times (%s)" % (token, n, ids)
            queued[token] = ids
        for token, qid in cl.acked.items():
            assert token in queued, "acknowledged message %s (%s) lost" % (token, qid)
            assert queued[token] == qid, (token, qid, queued[token])
        for token in queued:
            assert token in cl.dot_sent, "%s queued though its final dot was never sent" % token
        got = delivered(sink.maildir)
        for token in queued:
            assert token in got, "queued message %s never delivered" % token
            for digest in got[token]:
                assert digest == cl.digest[token], "%s delivered with other octets" % token
        for token in got:
            assert token in queued, "the sink received %s, which is not queued" % token
        dups = sorted(t for t in queued if len(got[t]) > 1)
        res = {
            "cycles": cycles,
            "early_kills": early,
            "acknowledged": len(cl.acked),
            "committed_250_lost": len(queued) - len(cl.acked),
            "dot_never_answered": len(cl.dot_sent) - len(cl.acked),
            "in_queue": len(queued),
            "delivered": sum(len(v) for v in got.values()),
            "delivered_twice": len(dups),
            "extra_copies": sum(len(got[t]) - 1 for t in dups),
            "forced_checkpoints": len(re.findall(r"WAL checkpoint: restart", srv.log())),
        }
        ok = True
        return res
    finally:
        del os.environ["SLUICE_TEST_WAL_CAP"]
        sink.stop()
        dns.stop()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say("#   kept %s" % tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args()
    print("crash loop: %d cycles, seed %d" % (a.cycles, a.seed), flush=True)
    import sluicetest
    t0 = time.time()
    failed = True
    try:
        res = run(a.cycles, a.seed)
        failed = False
    except AssertionError as e:
        print("FAIL: %s" % e)
    finally:
        for srv in sluicetest._cleanups:
            srv.cleanup(keep=failed)
    if failed:
        sys.exit(1)
    for k, v in res.items():
        print("  %-20s %d" % (k, v))
    print("ok: every acknowledged message queued exactly once and delivered; "
          "integrity ok (%.0f s)" % (time.time() - t0))


if __name__ == "__main__":
    main()
