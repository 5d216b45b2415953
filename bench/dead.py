"""
The dead-smarthost benchmark (make bench-dead).  Not a test: it measures
and prints a table; nothing here passes or fails.

10,000 messages (smtp-source, 20 sessions) go into a sluice whose smarthost
is dead, with delivery on while they arrive.  Two kinds of dead:

  drop    the smarthost accepts each connection and closes it at once;
          connection attempts are counted where they arrive, by the
          listener in this script;
  closed  nothing listens on the smarthost's port (connection refused);
          attempts are counted from the queue: each attempt row that says
          "connect to ..." is one, a deferral without a connection says
          "delivery temporarily suspended".

For each retry interval (retry_schedule, 10 s here) it prints the
connection attempts, the deferrals recorded, the messages still queued and
the CPU time sluice used (the first interval includes the intake).  --bin runs another sluice binary (say, one built from an older
commit) for a before-and-after.
"""
import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PF = os.path.abspath(os.environ.get("PF_ROOT", os.path.join(ROOT, "bench/.cache/postfix")))
ENV = dict(os.environ, LD_LIBRARY_PATH=PF + "/usr/lib/postfix", MAIL_CONFIG=PF + "/conf")
HUB = "127.0.0.4"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on %d" % port)


class Dropper:
    """A smarthost that accepts each connection and closes it at once."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HUB, port))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.times = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.times.append(time.time())
            c.close()

    def stop(self):
        self.stopped = True
        self.thread.join()
        self.sock.close()


def cpu_seconds(pid):
    """User and system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(db, sql):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def run(binary, kind, n, interval, intervals):
    port = free_port(HUB)
    hub = Dropper(port) if kind == "drop" else None
    d = tempfile.mkdtemp(prefix="sluice-bench-dead-")
    db = os.path.join(d, "queue.db")
    cfg = os.path.join(d, "sluice.conf")
    lport = free_port()
    with open(cfg, "w") as f:
        f.write("listen = 127.0.0.1:%d\nqueue_path = %s\nworkers = 100\nuser = root\n"
                "log_level = warning\nmax_connections_per_ip = 0\n"
                "smarthost = %s:%d\nsmarthost_tls = none\nretry_schedule = %ds\n"
                "queue_lifetime = 5d\nconnect_timeout = 5s\n"
                % (lport, db, HUB, port, interval))
    log = open(os.path.join(d, "log"), "ab")
    proc = subprocess.Popen([binary, "serve", "-c", cfg], stderr=log)
    rows = []
    try:
        wait_port(lport)
        seen_cpu = cpu_seconds(proc.pid)
        t0 = time.time()
        subprocess.run([PF + "/usr/sbin/smtp-source", "-s", "20", "-m", str(n), "-l", "1024",
                        "-f", "bench@client.test", "-t", "r@dest.test",
                        "127.0.0.1:%d" % lport], env=ENV, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
        injected = time.time() - t0
        seen_conn = seen_att = 0
        for k in range(1, intervals + 1):
            time.sleep(max(0, t0 + k * interval - time.time()))
            att = count(db, "select count(*) from attempts")
            if hub is not None:
                conn = len(hub.times)
            else:
                conn = count(db, "select count(*) from attempts where reply like '4.4.1 connect to %'")
            queued = count(db, "select count(distinct msg_id) from recipients "
                               "where state in ('queued', 'deferred')")
            cpu = cpu_seconds(proc.pid)
            rows.append((k, conn - seen_conn, att - seen_att, queued, cpu - seen_cpu))
            seen_conn, seen_att, seen_cpu = conn, att, cpu
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        log.close()
        if hub is not None:
            hub.stop()
        shutil.rmtree(d, ignore_errors=True)
    return injected, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--interval", type=int, default=10, help="retry_schedule, seconds")
    ap.add_argument("--intervals", type=int, default=6)
    ap.add_argument("--bin", default=os.environ.get("SLUICE_BIN",
                                                      os.path.join(ROOT, "build/sluice")))
    ap.add_argument("--kind", choices=["drop", "closed", "both"], default="both")
    a = ap.parse_args()
    kinds = ["drop", "closed"] if a.kind == "both" else [a.kind]
    print("dead smarthost: %d messages (smtp-source, 20 sessions, delivery on), "
          "retry_schedule = %ds, %s" % (a.messages, a.interval, a.bin))
    for kind in kinds:
        injected, rows = run(a.bin, kind, a.messages, a.interval, a.intervals)
        print()
        print("%s: %s; injected in %.1f s" % (kind, {
            "drop": "accepts and closes each connection (counted by the listener)",
            "closed": "nothing listens (attempts table: 'connect to' rows)"}[kind], injected))
        print("%-10s %12s %20s %16s %12s" % ("interval", "connections", "deferrals recorded",
                                               "messages queued", "sluice CPU"))
        for k, conn, att, queued, cpu in rows:
            print("%-10s %12d %20d %16d %11.1fs"
                  % ("%d-%ds" % ((k - 1) * a.interval, k * a.interval), conn, att, queued, cpu))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
