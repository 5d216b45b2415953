"""
The accept benchmark for sluice (make bench).  Not a test: it measures and
prints a table; nothing here passes or fails.

For each load, Postfix's smtp-source sends 1 KB messages with one recipient
to (a) smtp-sink, which accepts without storing anything, and (b) sluice,
which stores every message durably before answering 250.  Both run in the
same run on the same machine, so the ratio sluice/smtp-sink is comparable
across machines even when absolute numbers are not.

Also measured: single-client latency (one persistent session, time from
MAIL to the 250 after the data, p50/p99), peak RSS of sluice at 100
sessions, and RSS growth while it receives one 50 MB message.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PF = os.path.abspath(os.environ.get("PF_ROOT", os.path.join(ROOT, "bench/.cache/postfix")))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build/sluice"))
TLSLOAD = os.path.join(ROOT, "build/bench/tlsload")
ENV = dict(os.environ, LD_LIBRARY_PATH=PF + "/usr/lib/postfix", MAIL_CONFIG=PF + "/conf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on %d" % port)


def rss_kb(pid, field="VmHWM"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def smtp_source(port, msgs, sessions, persistent, host="127.0.0.1", rcpt="rcpt@example.net"):
    args = [PF + "/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(msgs),
            "-l", "1024", "-f", "bench@client.test", "-t", rcpt]
    if persistent:
        args.insert(1, "-d")
    t0 = time.time()
    subprocess.run(args + ["%s:%d" % (host, port)], env=ENV, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    return msgs / (time.time() - t0)


class Sluice:
    def __init__(self, workers=200, extra="delivery_threads = 0\n", keep_dir=None,
                 binary=None, env=None, queue_path=None):
        self.dir = keep_dir or tempfile.mkdtemp(prefix="sluice-bench-")
        self.port = free_port()
        self.db = queue_path or os.path.join(self.dir, "queue.db")
        cfg = os.path.join(self.dir, "sluice.conf")
        with open(cfg, "w") as f:
            f.write("listen = 127.0.0.1:%d\nqueue_path = %s\nworkers = %d\n"
                    "max_message_size = 64m\nlog_level = warning\n"
                    "max_connections_per_ip = 0\n%s" % (self.port, self.db, workers, extra))
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen([binary or BIN, "serve", "-c", cfg], stderr=self.log,
                                     env=dict(os.environ, **(env or {})))
        wait_port(self.port)

    def delivered(self):
        import sqlite3
        con = sqlite3.connect(self.db)
        n = con.execute("select count(*) from recipients where state = 'delivered'").fetchone()[0]
        con.close()
        return n

    def wait_delivered(self, n, timeout=600):
        deadline = time.time() + timeout
        while self.delivered() < n:
            if time.time() > deadline:
                raise RuntimeError("only %d of %d delivered" % (self.delivered(), n))
            time.sleep(0.05)

    def halt(self):
        """Stop but keep the folder (for a restart on the same queue)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()

    def count(self):
        import sqlite3
        con = sqlite3.connect(self.db)
        n = con.execute("select count(*) from messages").fetchone()[0]
        con.close()
        return n

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sink:
    def __init__(self, host="127.0.0.1"):
        self.port = free_port()
        self.proc = subprocess.Popen([PF + "/usr/sbin/smtp-sink", "-u", "nobody", "-c",
                                      "%s:%d" % (host, self.port), "1000"], env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, host=host)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def latency(port, n):
    """Per-message latency over one persistent session (MAIL to 250)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line

    reply()
    s.sendall(b"EHLO bench.test\r\n")
    reply()
    body = b"Subject: latency\r\n\r\n" + (b"x" * 98 + b"\r\n") * 10 + b".\r\n"
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(b"MAIL FROM:<bench@client.test>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
        for _ in range(3):
            reply()
        s.sendall(body)
        line = reply()
        out.append(time.perf_counter() - t0)
        assert line.startswith(b"250"), line
    s.sendall(b"QUIT\r\n")
    s.close()
    out.sort()
    return out[len(out) // 2] * 1000, out[int(len(out) * 0.99)] * 1000


def tlsload(port, msgs, sessions, tls, persistent):
    """Run bench/tlsload; returns (msgs/s, handshakes/s)."""
    args = [TLSLOAD, "-s", str(sessions), "-m", str(msgs)]
    if tls:
        args.append("-t")
    if persistent:
        args.append("-p")
    out = subprocess.run(args + ["127.0.0.1", str(port)], check=True, timeout=600,
                         capture_output=True, text=True).stdout
    fields = dict(kv.split("=") for kv in out.split())
    return float(fields["msgs_per_s"]), float(fields["handshakes_per_s"])


def tls_table(n, runs):
    """TLS costs: the same generator with and without STARTTLS."""
    print()
    print("TLS (bench/tlsload, 20 sessions, %d messages; STARTTLS, RSA-2048 self-signed)" % n)
    print("%-34s %12s %12s %8s %8s" % ("load", "plain/s", "TLS/s", "ratio", "target"))
    srv = Sluice()
    try:
        tlsload(srv.port, 1000, 20, True, True)  # warm-up
        for persistent in (True, False):
            count = n if persistent else n // 5
            plain = median(tlsload(srv.port, count, 20, False, persistent)[0]
                           for _ in range(runs))
            res = sorted((tlsload(srv.port, count, 20, True, persistent) for _ in range(runs)))
            tls, hs = res[len(res) // 2]
            label = "persistent" if persistent else "1 msg/connection"
            print("%-34s %12.0f %12.0f %8.2f %8s   (%.0f handshakes/s)"
                  % (label, plain, tls, tls / plain, ">= 0.80" if persistent else "-", hs))
    finally:
        srv.stop()


def e2e_run(n, delivery, binary):
    """(injection rate, end-to-end rate, delivery-only rate) of one build."""
    srv = Sluice(extra=delivery, binary=binary)
    try:
        t0 = time.time()
        smtp_source(srv.port, n, 20, False, rcpt="r@dest.test")
        inject = n / (time.time() - t0)
        srv.wait_delivered(n)
        e2e = n / (time.time() - t0)
    finally:
        srv.stop()
    # Delivery alone: fill the queue with delivery off, then turn it on.
    srv = Sluice(binary=binary)
    smtp_source(srv.port, n, 20, True, rcpt="r@dest.test")
    srv.halt()
    srv = Sluice(extra=delivery, keep_dir=srv.dir, binary=binary)
    try:
        t0 = time.time()
        srv.wait_delivered(n)
        drain = n / (time.time() - t0)
    finally:
        srv.stop()
    return inject, e2e, drain


def e2e_table(n, baseline=None):
    """Relay throughput: smtp-source -> sluice -> smtp-sink as the MX found
    through a local DNS server; and delivery alone from a full queue; for
    this build and, beside it, the reference build."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
    from fakedns import FakeDNS
    sink = Sink("127.0.0.2")
    dns = FakeDNS("dest.test. 60 IN MX 10 mx.dest.test.\n"
                  "mx.dest.test. 60 IN A 127.0.0.2\n")
    delivery = ("dns_servers = 127.0.0.1:%d\ndelivery_port = %d\n"
                "outbound_tls = none\nhostname = relay.bench.test\n" % (dns.port, sink.port))
    try:
        direct = smtp_source(sink.port, n, 20, False, host="127.0.0.2", rcpt="r@dest.test")
        this = e2e_run(n, delivery, BIN)
        ref = e2e_run(n, delivery, baseline) if baseline else None
    finally:
        dns.stop()
        sink.stop()
    print()
    print("relay (smtp-source -> sluice -> smtp-sink via MX from local DNS; 20 sessions, %d messages)" % n)
    print("  smtp-source -> smtp-sink directly:  %6.0f msgs/s" % direct)
    print("%-38s %12s %12s" % ("", "sluice", "reference" if ref else ""))
    print("  injection into sluice:              %6.0f msgs/s %s"
          % (this[0], "%6.0f msgs/s" % ref[0] if ref else ""))
    print("  end to end (until all delivered):   %6.0f msgs/s %s  ratio %.2f to direct (target >= 0.33)"
          % (this[1], "%6.0f msgs/s" % ref[1] if ref else "", this[1] / direct))
    print("  delivery only, from a full queue:   %6.0f msgs/s %s"
          % (this[2], "%6.0f msgs/s" % ref[2] if ref else ""))


def big_message_rss(size_mb):
    srv = Sluice(workers=8)
    try:
        before = rss_kb(srv.proc.pid, "VmRSS")
        s = socket.create_connection(("127.0.0.1", srv.port))
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO bench.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<big@client.test>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
        for _ in range(3):
            f.readline()
        line = b"y" * 76 + b"\r\n"
        chunk = line * (1024 * 1024 // len(line))
        for _ in range(size_mb):
            s.sendall(chunk)
        s.sendall(b".\r\n")
        ok = f.readline()
        peak = rss_kb(srv.proc.pid, "VmHWM")
        s.close()
        assert ok.startswith(b"250"), ok
        return before, peak
    finally:
        srv.stop()


def accept_rate(binary, env, n, sessions, persistent, runs):
    """(messages/s, messages stored, peak RSS kB) of one build for one load."""
    srv = Sluice(binary=binary, env=env)
    try:
        # Warm up: the first commits grow a new WAL file, which costs a
        # journal commit each; a running relay is past that.
        smtp_source(srv.port, 1000, sessions, persistent)
        rate = median(smtp_source(srv.port, n, sessions, persistent) for _ in range(runs))
        stored = srv.count()
        hwm = rss_kb(srv.proc.pid)
    finally:
        srv.stop()
    assert stored == 1000 + n * runs, "stored %d" % stored
    return rate, stored, hwm


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid, timeout=30):
    """Wait until a server has finished what a run left it (a checkpoint)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(0.3)
        if cpu_seconds(pid) - c0 < 0.02:
            return


def rsa2048_sign_seconds():
    """One RSA-2048 signature on this machine (openssl speed)."""
    out = subprocess.run(["openssl", "speed", "-seconds", "2", "rsa2048"],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"^rsa\s+2048 bits\s+(\S+)s", out, re.M)
    return float(m.group(1)) if m else float("nan")


def dkim_table(n, runs):
    """Accept rate and CPU per message, signing off, with Ed25519, with
    RSA-2048 (20 sessions, one message per connection), same run, the
    three taking turns."""
    d = tempfile.mkdtemp(prefix="sluice-bench-dkim-")
    keys = {}
    for name, alg in (("ed25519", ["--ed25519"]), ("rsa2048", ["--rsa", "2048"])):
        keys[name] = os.path.join(d, name + ".pem")
        subprocess.run([BIN, "dkim", "keygen", "client.test", name, "--key", keys[name]] + alg,
                       check=True, stdout=subprocess.DEVNULL)
    print()
    print("DKIM signing at accept (smtp-source, 20 sessions, 1 msg/connection, %d messages of"
          " 1 KB; median of %d turns; ratio: median of the turns' ratios)" % (n, runs))
    print("%-10s %10s %8s %16s %16s" % ("signing", "msgs/s", "ratio", "CPU/msg (us)",
                                       "extra CPU (us)"))
    # The three servers run side by side and take turns, run by run, so a
    # drift of the machine's speed weighs on all three alike.
    names = ("off", "ed25519", "rsa2048")
    srvs, rates, cpus = {}, {m: [] for m in names}, {m: 0.0 for m in names}
    try:
        for name in names:
            extra = "delivery_threads = 0\n"
            if name != "off":
                extra += "dkim_keys = client.test:%s:%s\n" % (name, keys[name])
            srvs[name] = Sluice(extra=extra)
            smtp_source(srvs[name].port, 1000, 20, False)
        for _ in range(runs):
            for name in names:
                for other in names:
                    settle(srvs[other].proc.pid)
                c0 = cpu_seconds(srvs[name].proc.pid)
                rates[name].append(smtp_source(srvs[name].port, n, 20, False))
                cpus[name] += cpu_seconds(srvs[name].proc.pid) - c0
        import sqlite3
        for name in names:
            con = sqlite3.connect(srvs[name].db)
            signed = con.execute("select count(*) from body_chunks where seq <= 0 and "
                                 "substr(data, 1, 15) = cast('DKIM-Signature:' as blob)"
                                 ).fetchone()[0]
            con.close()
            assert (signed == 0) if name == "off" else (signed == 1000 + n * runs), \
                (name, signed)
    finally:
        for srv in srvs.values():
            srv.stop()
    # The ratio is the median of each turn's ratio to the turn's "off".
    base_cpu = cpus["off"] / (n * runs) * 1e6
    for name in names:
        rate, cpu = median(rates[name]), cpus[name] / (n * runs) * 1e6
        ratio = median([r / o for r, o in zip(rates[name], rates["off"])])
        print("%-10s %10.0f %8.2f %16.0f %16.0f" % (name, rate, ratio, cpu, cpu - base_cpu))
    sys.stdout.flush()
    # The reference: one signature as sluice makes it (GnuTLS), and
    # OpenSSL's for context (nettle's RSA is constant-time and slower).
    signtime = os.path.join(os.path.dirname(BIN), "bench", "signtime")
    sig = {name: float(subprocess.run([signtime, keys[name]], capture_output=True, text=True,
                                      check=True).stdout) * 1e6 for name in keys}
    print("one signature with GnuTLS: Ed25519 %.0f us, RSA-2048 %.0f us (OpenSSL's RSA-2048: "
          "%.0f us)" % (sig["ed25519"], sig["rsa2048"], rsa2048_sign_seconds() * 1e6))
    print("targets: Ed25519 ratio >= 0.90; RSA-2048 extra CPU <= 1.2 x one signature = %.0f us"
          % (1.2 * sig["rsa2048"]))
    shutil.rmtree(d, ignore_errors=True)


def median(values):
    v = sorted(values)
    return v[len(v) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--latency-samples", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--only", choices=["e2e", "accept", "dkim"], help="run one part")
    ap.add_argument("--baseline", default=os.environ.get("BASELINE_BIN"),
                    help="a reference build measured beside this one")
    ap.add_argument("--grace", default=os.environ.get("BENCH_GRACE"),
                    help="park grace values to compare, in ms (e.g. 0,20)")
    a = ap.parse_args()
    n = a.messages
    if a.only == "e2e":
        e2e_table(n, a.baseline)
        return
    if a.only == "dkim":
        dkim_table(n, a.runs)
        return
    builds = [("sluice", BIN, {})]
    if a.baseline:
        builds.append(("reference", a.baseline, {}))
    print("sluice accept benchmark: %d messages of 1 KB, 1 recipient; %d cores; median of %d runs"
          % (n, os.cpu_count(), a.runs))
    if a.baseline:
        print("reference: %s" % a.baseline)
    print()
    print("%-34s %12s %12s %8s %12s %8s %8s" % ("load", "smtp-sink/s", "sluice/s", "ratio",
                                               "reference/s", "ratio", "target"))
    rows = []
    for sessions in (20, 100):
        for persistent in (False, True):
            sink = Sink()
            try:
                sink_rate = median(smtp_source(sink.port, n, sessions, persistent)
                                   for _ in range(a.runs))
            finally:
                sink.stop()
            rates = []
            for name, binary, env in builds:
                rate, stored, hwm = accept_rate(binary, env, n, sessions, persistent, a.runs)
                rates.append(rate)
                if name == "sluice":
                    rows.append((sessions, persistent, hwm))
            label = "%d sessions, %s" % (sessions, "persistent" if persistent else "1 msg/connection")
            ref = ("%12.0f %8.2f" % (rates[1], rates[1] / sink_rate)) if len(rates) > 1 else "%12s %8s" % ("-", "-")
            print("%-34s %12.0f %12.0f %8.2f %s %8s   (peak RSS %.1f MB)"
                  % (label, sink_rate, rates[0], rates[0] / sink_rate, ref, ">= 0.50",
                     rows[-1][2] / 1024))
            sys.stdout.flush()
    if a.grace:
        print()
        print("park grace (a worker watches a waiting session this long before parking it;"
              " SLUICE_PARK_GRACE_MS)")
        for sessions, persistent in ((20, False), (20, True), (100, True)):
            line = "%d sessions, %s" % (sessions, "persistent" if persistent else "1 msg/connection")
            cells = []
            for g in a.grace.split(","):
                rate, _, _ = accept_rate(BIN, {"SLUICE_PARK_GRACE_MS": g}, n, sessions,
                                         persistent, a.runs)
                cells.append("%s ms: %6.0f/s" % (g, rate))
            print("%-34s %s" % (line, "   ".join(cells)))
            sys.stdout.flush()
    if a.only == "accept":
        return
    srv = Sluice()
    try:
        latency(srv.port, 200)  # warm-up
        p50, p99 = latency(srv.port, a.latency_samples)
    finally:
        srv.stop()
    print()
    print("single client latency (MAIL..250): p50 %.3f ms (target < 1), p99 %.3f ms (target < 3)" % (p50, p99))
    hwm100 = max(h for s, p, h in rows if s == 100)
    print("peak RSS at 100 sessions: %.1f MB (target < 48)" % (hwm100 / 1024))
    tls_table(n, a.runs)
    dkim_table(n, a.runs)
    e2e_table(n, a.baseline)
    print()
    before, peak = big_message_rss(50)
    print("one 50 MB message: RSS %.1f MB before, peak %.1f MB, growth %.1f MB (target < 8)"
          % (before / 1024, peak / 1024, (peak - before) / 1024))


if __name__ == "__main__":
    main()
