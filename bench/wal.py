"""
The WAL benchmark (make bench-wal).  Not a test: it measures and prints;
nothing here passes or fails.

smtp-source sends N messages (default 500,000; 1 KB, one recipient, 50
persistent sessions) as fast as sluice takes them, with delivery off.  A
thread samples the size of queue.db-wal every few milliseconds.  Printed,
each beside its reference from the same run:

- the largest WAL file seen, beside the cap plus the largest group-commit
  batch that sluice reports (its "WAL checkpoint: restart" log lines give
  the WAL's content and the batch that crossed the cap);
- the forced checkpoints: how many, and how long the writer waited;
- queue.db's size beside the data it holds (the messages' stored bytes);
- after kill -9 right after the last 250, the WAL left behind, the time
  from the restart to the 220 greeting (target under 2 s) and to the 250
  for one more message, and that every message is still there;
- the same run with the reference build first (make bench-wal: the one
  bench/run.sh builds, BASELINE_REF, by default the last commit before
  this work; --baseline BIN; BASELINE_REF=none for none).

Each run's folder is deleted afterwards (--keep keeps the last one).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (free_port, wait_port, smtp_source, PF, ENV)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAP = 64 * 1024 * 1024


def mb(n):
    return "%.1f MB" % (n / 1e6)


class Sampler(threading.Thread):
    """The WAL file's size every `period` seconds: the largest, and one
    sample a second for the record."""

    def __init__(self, path, period=0.002):
        super().__init__(daemon=True)
        self.path, self.period = path, period
        self.largest, self.series, self.stop = 0, [], False

    def run(self):
        t0 = next_at = time.time()
        while not self.stop:
            try:
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            self.largest = max(self.largest, size)
            if time.time() >= next_at:
                self.series.append((time.time() - t0, size))
                next_at += 1
            time.sleep(self.period)


def start(binary, folder, port, env):
    cfg = os.path.join(folder, "sluice.conf")
    with open(cfg, "w") as f:
        f.write("listen = 127.0.0.1:%d\nqueue_path = %s/queue.db\n"
                "workers = 200\ndelivery_threads = 0\n"
                "max_connections_per_ip = 0\n" % (port, folder))
    log = open(os.path.join(folder, "log"), "ab")
    t0 = time.time()
    proc = subprocess.Popen([binary, "serve", "-c", cfg], stderr=log, env=env)
    log.close()
    return proc, t0


def after_restart(port, t0, timeout=120):
    """Seconds from t0 until a 220 greeting is read on port, and until the
    250 for one message sent on that connection."""
    deadline = t0 + timeout
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), 0.5)
        except OSError:
            time.sleep(0.005)
            continue
        with s:
            s.settimeout(timeout)
            f = s.makefile("rb")
            if not f.readline().startswith(b"220"):
                continue
            greeting = time.time() - t0

            def reply():
                while True:
                    line = f.readline()
                    if line[3:4] != b"-":
                        return line

            s.sendall(b"EHLO bench.test\r\n")
            reply()
            s.sendall(b"MAIL FROM:<bench@client.test>\r\nRCPT TO:<rcpt@example.net>\r\n"
                      b"DATA\r\n")
            for _ in range(3):
                reply()
            s.sendall(b"Subject: after the restart\r\n\r\nhello\r\n.\r\n")
            line = reply()
            assert line.startswith(b"250"), line
            return greeting, time.time() - t0
    raise RuntimeError("no greeting on %d" % port)


def restarts(folder):
    """The writer's forced checkpoints: (wal_bytes, batch_bytes, ms)."""
    pat = re.compile(rb"WAL checkpoint: restart wal_bytes=(\d+) cap_bytes=\d+ "
                     rb"batch_bytes=(\d+) ms=(\d+)")
    with open(os.path.join(folder, "log"), "rb") as f:
        return [tuple(int(x) for x in m.groups()) for m in pat.finditer(f.read())]


def run(binary, n, sessions, keep):
    folder = tempfile.mkdtemp(prefix="sluice-walbench-")
    db = os.path.join(folder, "queue.db")
    port = bench.free_port()
    env = dict(os.environ)
    env.pop("SLUICE_TEST_WAL_CAP", None)
    proc, t0 = start(binary, folder, port, env)
    out = {"binary": binary}
    try:
        bench.wait_port(port)
        sampler = Sampler(db + "-wal")
        sampler.start()
        t0 = time.time()
        bench.smtp_source(port, n, sessions, True)
        out["rate"] = n / (time.time() - t0)
        # kill -9 right after the last 250: the WAL as load left it.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sampler.stop = True
        sampler.join()
        out["wal_max"] = sampler.largest
        out["series"] = sampler.series
        out["wal_at_kill"] = os.path.getsize(db + "-wal")
        out["db_at_kill"] = os.path.getsize(db)
        out["restarts"] = restarts(folder)

        proc, t0 = start(binary, folder, port, env)
        out["greeting_s"], out["first_250_s"] = after_restart(port, t0)
        time.sleep(3)  # idle: the WAL should be copied and truncated
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        out["messages"], out["data"] = con.execute(
            "SELECT count(*) - 1, coalesce(sum(stored_size), 0) FROM messages").fetchone()
        con.close()
        out["db_idle"] = os.path.getsize(db)
        out["wal_idle"] = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if keep:
            print("kept", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def report(r, n, sessions):
    print("  binary: %s" % r["binary"])
    print("  %d messages of 1 KB, %d persistent sessions, delivery off: %.0f msgs/s"
          % (n, sessions, r["rate"]))
    rs = r["restarts"]
    if rs:
        batch = max(b for _, b, _ in rs)
        ms = sorted(m for _, _, m in rs)
        print("  largest WAL file seen:   %10s   cap + largest batch: %s + %s = %s"
              % (mb(r["wal_max"]), mb(CAP), mb(batch), mb(CAP + batch)))
        print("  largest WAL content at a forced checkpoint: %s" % mb(max(w for w, _, _ in rs)))
        print("  forced checkpoints (writer waits): %d, median %d ms, largest %d ms"
              % (len(rs), ms[len(ms) // 2], ms[-1]))
    else:
        print("  largest WAL file seen:   %10s   cap: %s (no forced checkpoint logged)"
              % (mb(r["wal_max"]), mb(CAP)))
    print("  at kill -9: WAL %s, queue.db %s" % (mb(r["wal_at_kill"]), mb(r["db_at_kill"])))
    print("  restart to 220 greeting: %.2f s (target < 2 s), to the 250 of one more message: "
          "%.2f s" % (r["greeting_s"], r["first_250_s"]))
    print("  messages in the queue after the restart: %d of %d" % (r["messages"], n))
    print("  3 s after restart, idle: queue.db %s, WAL %s; data (sum of stored_size) %s"
          % (mb(r["db_idle"]), mb(r["wal_idle"]), mb(r["data"])))
    print("  WAL file size each second: %s" % " ".join(
        "%.0f" % (s / 1e6) for _, s in r["series"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500000, help="messages (500000)")
    ap.add_argument("-s", type=int, default=50, help="sessions (50)")
    ap.add_argument("--baseline", default=os.environ.get("BASELINE_BIN"),
                    help="a reference build, run first")
    ap.add_argument("--keep", action="store_true", help="keep the last run's folder")
    a = ap.parse_args()
    if a.baseline:
        print("reference build:")
        report(run(a.baseline, a.n, a.s, False), a.n, a.s)
        print()
    report(run(bench.BIN, a.n, a.s, a.keep), a.n, a.s)


if __name__ == "__main__":
    main()
