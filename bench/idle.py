"""
The idle-connection benchmark (make bench-idle).  Not a test: it measures
and prints; nothing here passes or fails.

10,000 connections from 500 untrusted loopback addresses (127.0.x.y, 20
each: within max_connections_per_ip) take their greeting and then say
nothing, as a pool-exhaustion attack does.  Then one trusted client
(127.0.0.1) connects: the time to its 220, and from MAIL to the 250 after
its data.  Also sluice's resident memory with the 10,000 sessions open,
and its thread count.

The same run measures a reference build (BASELINE_BIN, by default the last
build before sessions were parked: see bench/run-idle.sh), whose trusted
client waits for a free worker: its figures are printed beside, with a
bound on how long the benchmark waits.

Targets (issue 9): the trusted client's 220 within 100 ms and its 250
within 1 s; RSS with 10,000 sessions under 200 MB.
"""
import argparse
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def addresses(n, per):
    """n source addresses for n connections, `per` from each."""
    out = []
    for i in range(n):
        a = i // per
        out.append("127.0.%d.%d" % (1 + a // 250, 1 + a % 250))
    return out


def open_idle(port, n, per, deadline):
    """Open n connections concurrently and read each greeting; returns
    (sockets greeted, refused, not greeted by the deadline)."""
    sel = selectors.DefaultSelector()
    socks, greeted, refused = [], 0, 0
    pending = {}
    for src in addresses(n, per):
        s = socket.socket()
        s.setblocking(False)
        s.bind((src, 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
        socks.append(s)
        # Do not let more than 500 handshakes queue up at once.
        while len(pending) > 500 and time.time() < deadline:
            for key, _ in sel.select(0.5):
                greeted, refused = read_greeting(sel, key.fileobj, pending, greeted, refused)
    # Then wait for the rest, until nothing has come for 5 s (a server
    # whose workers are all taken never greets the ones it queued).
    last = time.time()
    while pending and time.time() < deadline and time.time() - last < 5:
        for key, _ in sel.select(0.5):
            greeted, refused = read_greeting(sel, key.fileobj, pending, greeted, refused)
            last = time.time()
    return socks, greeted, refused, len(pending)


def read_greeting(sel, s, pending, greeted, refused):
    try:
        d = s.recv(512)
    except OSError:
        d = b""
    pending[s] += d
    if b"\n" in pending[s] or not d:
        if pending[s].startswith(b"220 "):
            greeted += 1
        else:
            refused += 1
        sel.unregister(s)
        del pending[s]
    return greeted, refused


def trusted_client(port, wait):
    """(seconds to the 220, seconds from MAIL to the 250 after the data),
    None for what did not come within `wait` seconds."""
    s = socket.socket()
    s.settimeout(wait)
    t0 = time.time()
    s.connect(("127.0.0.1", port))
    f = s.makefile("rb")
    try:
        line = f.readline()
    except socket.timeout:
        return None, None
    if not line.startswith(b"220"):
        s.close()
        return None, None
    greet = time.time() - t0
    s.sendall(b"EHLO bench.test\r\n")
    while True:
        line = f.readline()
        if line[3:4] == b" ":
            break
    t1 = time.time()
    s.sendall(b"MAIL FROM:<bench@client.test>\r\n")
    f.readline()
    s.sendall(b"RCPT TO:<rcpt@example.net>\r\n")
    f.readline()
    s.sendall(b"DATA\r\n")
    f.readline()
    s.sendall(b"Subject: trusted\r\n\r\n" + (b"x" * 98 + b"\r\n") * 10 + b".\r\n")
    line = f.readline()
    done = time.time() - t1 if line.startswith(b"250") else None
    s.sendall(b"QUIT\r\n")
    s.close()
    return greet, done


def run(binary, n, per, workers, wait):
    d = tempfile.mkdtemp(prefix="sluice-bench-idle-")
    port = free_port()
    cfg = os.path.join(d, "sluice.conf")
    with open(cfg, "w") as f:
        f.write("listen = 127.0.0.1:%d\nqueue_path = %s/queue.db\nworkers = %d\n"
                "relay_networks = 127.0.0.1/32\ndelivery_threads = 0\n"
                "log_level = warning\nuser = root\n" % (port, d, workers))
    log = open(os.path.join(d, "log"), "wb")
    p = subprocess.Popen([binary, "serve", "-c", cfg], stderr=log)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        t0 = time.time()
        socks, greeted, refused, silent = open_idle(port, n, per, time.time() + 120)
        opened = time.time() - t0
        time.sleep(1)   # let the last sessions settle (and park)
        rss = status(p.pid, "VmRSS")
        threads = status(p.pid, "Threads")
        greet, done = trusted_client(port, wait)
        for s in socks:
            s.close()
        return dict(greeted=greeted, refused=refused, silent=silent, opened=opened,
                    rss_mb=rss / 1024.0, threads=threads, greet=greet, done=done)
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def fmt_s(v, wait):
    return "%.1f ms" % (v * 1000) if v is not None else "none in %d s" % wait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--per-address", type=int, default=20)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--wait", type=int, default=10,
                    help="how long the trusted client waits for each reply")
    ap.add_argument("--bin", default=os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build/sluice")))
    ap.add_argument("--baseline", default=os.environ.get("BASELINE_BIN"))
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    builds = [("this build", a.bin)]
    if a.baseline:
        builds.append(("reference", a.baseline))
    print("%d idle connections from %d addresses, workers = %d, then one trusted client"
          % (a.connections, a.connections // a.per_address, a.workers))
    print("%-12s %8s %8s %8s %10s %8s %18s %18s" % ("build", "greeted", "refused", "silent",
                                                   "RSS", "threads", "trusted 220", "trusted 250"))
    for name, binary in builds:
        r = run(binary, a.connections, a.per_address, a.workers, a.wait)
        print("%-12s %8d %8d %8d %7.1f MB %8d %18s %18s" % (
            name, r["greeted"], r["refused"], r["silent"], r["rss_mb"], r["threads"],
            fmt_s(r["greet"], a.wait), fmt_s(r["done"], a.wait)))
        sys.stdout.flush()
    print("targets: trusted 220 < 100 ms, 250 < 1 s, RSS < 200 MB with the sessions open")


if __name__ == "__main__":
    main()
