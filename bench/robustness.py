"""
Regenerate docs/robustness.md (make robustness): every limit and defence of
sluice, the attack or fault it answers, and what this run measured.

Each row comes from a probe that starts the real binary (build/sluice, or
$SLUICE_BIN) on loopback with a generated configuration and attacks it with
real clients, or from the benchmark and harness scripts this one calls with
smaller numbers (bench/idle.py, bench/wal.py, tests/lib/crashloop.py,
bench/dead.py, the scripted MX of tests/lib/mxtest.py, the libFuzzer
targets).  A probe that cannot run here (clang missing, say) says so in its
row instead of a figure.  Nothing here passes or fails; the tests in
`make test` assert the behaviours, this records the figures.

    /usr/bin/python3 bench/robustness.py [--out docs/robustness.md]
        [--idle 10000] [--wal 50000] [--cycles 10] [--fuzz-seconds 10]
        [--dead 2000] [--only probe_a,probe_b]
"""
import argparse
import base64
import datetime
import os
import platform
import re
import socket
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import sluicetest  # noqa: E402
from sluicetest import BIN, Server, free_port, poll_until  # noqa: E402
import certs  # noqa: E402

ROWS = []


def row(defence, keys, attack, measure):
    """Register a probe: `measure()` returns the measured result (text)."""
    ROWS.append((defence, keys, attack, measure))
    return measure


def ms(t):
    if t < 0.01:
        return "%.1f ms" % (t * 1000)
    return "%.0f ms" % (t * 1000) if t < 10 else "%.1f s" % t


def cleanup():
    for srv in sluicetest._cleanups:
        srv.cleanup(keep=False)
    del sluicetest._cleanups[:]


def greet(srv, source, timeout=10):
    c = srv.connect(source=source, timeout=timeout)
    return c, c.reply()[1]


# -------- sessions and admission --------

def probe_idle(a):
    import idle
    r = idle.run(BIN, a.idle, 20, 100, 10)
    per = (r["rss_mb"] * 1024) / max(1, r["greeted"])
    return ("%d silent connections from %d addresses, 100 workers: all %d greeted, "
            "%d threads; trusted client's 220 in %s, its 250 in %s; RSS %.0f MB "
            "(%.1f KB per session)"
            % (a.idle, a.idle // 20, r["greeted"], r["threads"],
               ms(r["greet"]) if r["greet"] is not None else "none",
               ms(r["done"]) if r["done"] is not None else "none", r["rss_mb"], per))


def probe_max_connections(a):
    srv = Server(config={"max_connections": "50", "stress_threshold": "100"})
    held = [greet(srv, "127.0.0.%d" % (100 + i // 20))[0] for i in range(50)]
    c, text = greet(srv, "127.0.0.110")
    t, ttext = greet(srv, "127.0.0.1")
    srv.stop()
    cleanup()
    return "the 51st untrusted connection: \"%s\"; a trusted one: \"%s\"" % (
        text.strip(), ttext.split(" ESMTP")[0] + " ESMTP ...")


def probe_per_client(a):
    srv = Server(config={})
    held = [greet(srv, "127.0.0.66")[0] for _ in range(20)]
    c, text = greet(srv, "127.0.0.66")
    srv.stop()
    cleanup()
    return "the 21st connection from one address: \"%s\"" % text.strip()


def probe_rate(a):
    srv = Server(config={})
    t0 = time.time()
    n = 0
    while True:
        c, text = greet(srv, "127.0.0.66")
        c.close()
        if not text.startswith("220"):
            break
        n += 1
    srv.stop()
    cleanup()
    return "%d connections from one address in %s, then \"%s\"" % (n, ms(time.time() - t0),
                                                                 text.strip())


def auth_server(config):
    pki = certs.pki()
    srv = Server(start=False)
    c, k = certs.install(pki.a, srv.dir)
    path = os.path.join(srv.dir, "users")
    line = subprocess.run([BIN, "passwd", "alice"], input=b"s3cret\n",
                          capture_output=True, check=True).stdout
    with open(path, "wb") as f:
        f.write(line)
    srv.config.update(tls_cert=c, tls_key=k, auth_users=path)
    srv.config.update(config)
    srv.pki = pki
    return srv.start()


def auth_session(srv, source, timeout=10):
    c = srv.connect(source=source, timeout=timeout)
    c.reply("220 ")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("STARTTLS", "220 ")
    c.sock = ssl.create_default_context(cafile=srv.pki.ca).wrap_socket(
        c.sock, server_hostname="relay.test")
    c.cmd("EHLO client.test", "250 ")
    return c


def plain(pw):
    return base64.b64encode(b"\0alice\0" + pw).decode()


def probe_auth_rate(a):
    srv = auth_server({"auth_failure_delay": "0"})
    tries, text = 0, ""
    while tries < 100:
        c = auth_session(srv, "127.0.0.66")
        for _ in range(2):
            code, text = c.cmd("AUTH PLAIN " + plain(b"guess%d" % tries))
            if code != 535:
                break
            tries += 1
        c.close()
        if code != 535:
            break
    srv.stop()
    cleanup()
    return "%d wrong passwords from one address (2 per session), then \"%s\"" % (
        tries, text.strip())


def probe_auth_delay(a):
    srv = auth_server({"workers": "1", "auth_failure_delay": "2s"})
    c = auth_session(srv, "127.0.0.66")
    t0 = time.time()
    c.send("AUTH PLAIN %s\r\n" % plain(b"wrong"))
    time.sleep(0.1)
    t = srv.connect(timeout=5)
    t.reply("220 ")
    t.cmd("EHLO client.test", "250 ")
    t.mail(rcpts=("<x@inbound.test>",))
    served = time.time() - t0
    c.reply("535 ")
    answered = time.time() - t0
    srv.stop()
    cleanup()
    return ("with 1 worker, another client's whole transaction done %s after the "
            "wrong password; the 535 came after %s" % (ms(served), ms(answered)))


def probe_stress(a):
    srv = Server(config={"max_connections": "100", "stress_threshold": "50",
                         "stress_command_timeout": "2s"})
    idle = [greet(srv, "127.0.0.%d" % (100 + i // 20))[0] for i in range(50)]
    t0 = time.time()
    for c in idle:
        c.sock.settimeout(30)
        c.reply()
    took = time.time() - t0
    srv.stop()
    cleanup()
    return ("50 idle untrusted connections of max_connections = 100 (stress_threshold "
            "50%%): all ended with 421 4.4.2 within %s (command_timeout is 5 min)" % ms(took))


def probe_command_timeout(a):
    srv = Server(config={"command_timeout": "2s"})
    c, _ = greet(srv, "127.0.0.66")
    t0 = time.time()
    code, text = c.reply()
    took = time.time() - t0
    srv.stop()
    cleanup()
    return "an idle client: \"%s\" after %s (command_timeout = 2s)" % (text.strip(), ms(took))


def probe_data_rate(a):
    srv = Server(config={"data_timeout": "4s", "min_data_rate": "1000"})
    c, _ = greet(srv, "127.0.0.66")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<x@inbound.test>", "250 ")
    c.cmd("DATA", "354 ")
    t0 = time.time()
    c.sock.settimeout(0.2)
    text = ""
    while time.time() - t0 < 60:
        try:
            c.send(b"x" * 99 + b"\n")
        except OSError:
            break
        try:
            d = c.sock.recv(512)
            if d:
                text = d.decode(errors="replace")
                break
        except socket.timeout:
            pass
    took = time.time() - t0
    srv.stop()
    cleanup()
    return ("a client sending 500 octets/s in DATA (min_data_rate = 1000): \"%s\" after %s"
            % (text.strip(), ms(took)))


def probe_not_reading(a):
    srv = Server(config={"workers": "1", "command_timeout": "3s"})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.66", 0))
    s.connect(("127.0.0.1", srv.port))
    before = srv.peak_rss_kb()
    s.setblocking(False)
    sent, since, t0 = 0, None, time.time()
    while since is None or time.time() - since < 0.5:
        try:
            sent += s.send(b"EHLO c\r\n" * 10000)
            since = None
        except BlockingIOError:
            since = since or time.time()
            time.sleep(0.02)
        except OSError:
            break
    srv.wait_log(r"timeout: it does not read our replies", timeout=20)
    took = time.time() - t0
    grown = srv.peak_rss_kb() - before
    srv.stop()
    cleanup()
    s.close()
    return ("a client pipelining EHLO without reading: sluice stopped reading once its "
            "replies backed up, ended it %s after it began (command_timeout = 3s); "
            "RSS +%d KB" % (ms(took), grown))


def probe_long_line(a):
    srv = Server(config={})
    c, _ = greet(srv, "127.0.0.66")
    before = srv.peak_rss_kb()
    for _ in range(10):
        c.send(b"A" * (1024 * 1024))
    code, text = c.cmd("")
    grown = srv.peak_rss_kb() - before
    srv.stop()
    cleanup()
    return "a 10 MB command line: \"%s\"; RSS +%d KB" % (text.strip(), grown)


def probe_nul(a):
    srv = Server(config={})
    c, _ = greet(srv, "127.0.0.1")
    c.cmd("EHLO client.test", "250 ")
    code, text = c.cmd(b"MAIL FROM:<a@b.example>\0junk")
    srv.stop()
    cleanup()
    return "MAIL FROM:<a@b.example>\\0junk: \"%s\"" % text.strip()


def probe_errors(a):
    srv = Server(config={})
    c, _ = greet(srv, "127.0.0.66")
    n, text = 0, ""
    while n < 100:
        code, text = c.cmd("BOGUS")
        if code == 421:
            break
        n += 1
    srv.stop()
    cleanup()
    return "%d unknown commands, then \"%s\"" % (n, text.splitlines()[-1].strip())


def probe_smuggling(a):
    srv = Server(config={})
    c, _ = greet(srv, "127.0.0.1")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<x@inbound.test>", "250 ")
    c.cmd("DATA", "354 ")
    c.send(b"Subject: s\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@inbound.test>\r\n"
           b"DATA\r\nsmuggled\r\n.\r\n")
    code, text = c.reply()
    n = srv.query("select count(*) from messages")[0][0]
    srv.stop()
    cleanup()
    return ("\"\\n.\\r\\n\" followed by a second transaction inside the data: \"%s\"; "
            "messages stored: %d" % (text.strip(), n))


def probe_starttls_injection(a):
    srv = Server(config={})
    c, _ = greet(srv, "127.0.0.1")
    c.cmd("EHLO client.test", "250 ")
    c.send(b"STARTTLS\r\nRSET\r\n")
    code, text = c.reply()
    extra = b""
    c.sock.settimeout(0.5)
    try:
        extra = c.sock.recv(100)
    except socket.timeout:
        pass
    srv.stop()
    cleanup()
    return ("\"STARTTLS\\r\\nRSET\\r\\n\" in one packet: \"%s\", then %s before the handshake"
            % (text.strip(), "nothing" if not extra else repr(extra)))


def probe_messages_in_progress(a):
    srv = Server(config={"workers": "4", "max_connections_per_ip": "0"})
    part = (b"y" * 98 + b"\r\n") * 600
    before = srv.peak_rss_kb()
    held = []
    for i in range(200):
        c = srv.connect(source="127.0.0.%d" % (100 + i % 50), timeout=30)
        held.append(c)
        c.reply("220 ")
        c.cmd("EHLO client.test", "250 ")
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<x@inbound.test>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(part)
        poll_until(lambda: srv.query("select coalesce(sum(length(data)),0) from body_chunks")[0][0]
                   >= (i + 1) * len(part), timeout=30)
    grown = srv.peak_rss_kb() - before
    srv.stop()
    cleanup()
    return "200 clients stopped in the middle of DATA after 60 KB each: RSS +%.1f MB (%.0f KB each)" % (
        grown / 1024, grown / 200)


# -------- the queue --------

def probe_wal(a):
    import wal
    r = wal.run(BIN, a.wal, 50, False)
    batch = max([b for _, b, _ in r["restarts"]] or [0])
    return ("%d messages at full speed (%.0f/s): largest WAL %.1f MB (cap %.1f MB + largest "
            "batch %.2f MB); restart after kill -9: 220 in %s"
            % (a.wal, r["rate"], r["wal_max"] / 1048576, wal.CAP / 1048576, batch / 1048576,
               ms(r["greeting_s"])))


def probe_crashloop(a):
    import crashloop
    try:
        r = crashloop.run(a.cycles, 1, say=lambda *x: None)
    finally:
        cleanup()
    return ("%d kill -9 cycles under load with delivery on: %d acknowledged, 0 lost, "
            "0 queued twice, integrity ok; %d delivered twice"
            % (a.cycles, r["acknowledged"], r["delivered_twice"]))


# -------- delivery --------

DELIVERY_ZONE = """\
$ORIGIN test.
$TTL 60
dest            MX 10 mx.dest
mx.dest         A 127.0.0.2
"""


def hostile_mx(mode, what):
    """One message to an MX in `mode`: how long the attempt took, the
    deferral's reason, and whether it was delivered once the MX behaved."""
    import mxtest
    from fakedns import FakeDNS
    dns = FakeDNS(DELIVERY_ZONE)
    try:
        with mxtest.Env(dns.server) as env:
            mx = env.scripted("127.0.0.2", mode=mode)
            srv = env.server(retry_schedule="2s", delivery_data_timeout="3s")
            qid = mxtest.send(srv, ["h@dest.test"])
            st, n, last = mxtest.wait_state(srv, qid, "h@dest.test", "deferred", attempts=1,
                                            timeout=60)
            took = srv.query("select duration_ms from attempts where msg_id=? order by id",
                             (qid,))[0][0]
            mx.mode = "normal"
            mxtest.wait_state(srv, qid, "h@dest.test", "delivered", timeout=30)
            copies = len(mx.messages)
            srv.stop()
    finally:
        dns.stop()
        cleanup()
    return "%s: deferred after %s with \"%s\"; delivered %s when the MX behaved" % (
        what, ms(took / 1000.0), last, "once" if copies == 1 else "%d times" % copies)


def probe_trickle(a):
    return hostile_mx("trickle", "an MX sending one octet per second "
                      "(delivery_command_timeout = 3s)")


def probe_huge_ehlo(a):
    return hostile_mx("huge_ehlo", "a 10 MB EHLO reply of 10,000 lines")


def probe_endless(a):
    return hostile_mx("endless", "a reply that never ends")


def probe_silent_after_data(a):
    return hostile_mx("silent_after_data", "an MX silent after the data "
                      "(delivery_data_timeout = 3s)")


def probe_close_mid_reply(a):
    return hostile_mx("close_mid_reply", "an MX closing in the middle of a reply")


def probe_dns_gone(a):
    import mxtest
    from fakedns import FakeDNS
    dns = FakeDNS(DELIVERY_ZONE)
    server = dns.server
    dns.stop()
    try:
        with mxtest.Env(server) as env:
            srv = env.server()
            qid = mxtest.send(srv, ["h@dest.test"])
            st, n, last = mxtest.wait_state(srv, qid, "h@dest.test", "deferred", attempts=1,
                                            timeout=60)
            took = srv.query("select duration_ms from attempts where msg_id=?", (qid,))[0][0]
            srv.stop()
    finally:
        cleanup()
    return "no DNS server (dns_timeout = 2s): deferred after %s with \"%s\"" % (
        ms(took / 1000.0), last)


def probe_dead_smarthost(a):
    import dead
    injected, rows = dead.run(BIN, "drop", a.dead, 5, 3)
    return ("%d messages to a smarthost that drops every connection, retry every 5 s: "
            "connection attempts per interval %s, deferrals per interval %s"
            % (a.dead, ", ".join(str(r[1]) for r in rows), ", ".join(str(r[2]) for r in rows)))


# -------- fuzzing --------

def probe_fuzz(a):
    if subprocess.run(["which", "clang"], capture_output=True).returncode != 0:
        return "not run here: clang is missing (make deps installs it)"
    r = subprocess.run(["make", "-s", "fuzz", "FUZZ_SECONDS=%d" % a.fuzz_seconds],
                       cwd=ROOT, capture_output=True, text=True)
    execs = [int(x) for x in re.findall(r"ok - fuzz \w+: (\d+) executions", r.stdout)]
    if r.returncode != 0:
        return "make fuzz FAILED (exit %d): see its output" % r.returncode
    return ("%d targets, %d s each: %s executions, no crash, leak or undefined behaviour"
            % (len(execs), a.fuzz_seconds, "{:,}".format(sum(execs))))


# -------- the table --------

row("Idle sessions hold no worker: parked in an epoll set with their deadline",
    "workers",
    "pool exhaustion by silent connections (slowloris)", probe_idle)
row("Global cap on connections (untrusted clients)", "max_connections",
    "connection flood from many addresses", probe_max_connections)
row("Per-client connection count; a client is its /32 or IPv6 /64",
    "max_connections_per_ip, client_ipv4_prefix, client_ipv6_prefix",
    "one host (or one IPv6 /64) holding many connections", probe_per_client)
row("Per-client connection rate (sliding window)",
    "max_connection_rate, client_rate_time_unit",
    "reconnect flood from one host", probe_rate)
row("AUTH-failure rate per client across sessions",
    "max_auth_failure_rate, client_rate_time_unit",
    "password guessing over many sessions", probe_auth_rate)
row("auth_failure_delay as a parked wait", "auth_failure_delay",
    "guessing that sleeps workers", probe_auth_delay)
row("Stress mode: short timeouts for untrusted clients under load",
    "stress_threshold, stress_command_timeout",
    "slow exhaustion of connections", probe_stress)
row("Command timeout with 421", "command_timeout",
    "a client that connects and waits", probe_command_timeout)
row("Minimum data rate", "data_timeout, min_data_rate",
    "a client trickling its message", probe_data_rate)
row("Replies the client does not read: no more commands read, then a timeout",
    "command_timeout", "a client that pipelines and never reads", probe_not_reading)
row("Command line length (RFC 5321 4.5.3.1)", "-",
    "a 10 MB line", probe_long_line)
row("Control octets in a command refused, never cut at a NUL", "-",
    "C-string truncation", probe_nul)
row("Errors per session", "max_errors", "a fuzzing or confused client", probe_errors)
row("Only <CRLF>.<CRLF> ends DATA; bare LF refused", "bare_newline",
    "SMTP smuggling", probe_smuggling)
row("Input pipelined after STARTTLS discarded (RFC 3207 4.2)", "-",
    "STARTTLS command injection (CVE-2011-0411)", probe_starttls_injection)
row("A message being received holds at most 4 KB while its session waits; 16 MiB "
    "of data in all waits for the disk", "-",
    "many clients stopping in the middle of DATA", probe_messages_in_progress)
row("WAL under its cap: the writer forces a RESTART checkpoint past it", "-",
    "sustained intake growing queue.db-wal", probe_wal)
row("250 only after the commit is durable; recovery at start", "-",
    "kill -9 at random points", probe_crashloop)
row("Reply deadline per read, not per octet", "delivery_command_timeout",
    "a remote MX trickling its replies", probe_trickle)
row("Reply size bounds (100 lines of 1,024 octets)", "-",
    "a remote MX sending a huge EHLO reply", probe_huge_ehlo)
row("Reply size bounds", "-", "a remote MX whose reply never ends", probe_endless)
row("Data reply deadline; a broken connection is never resent at once", "delivery_data_timeout",
    "a remote MX that never answers after the data", probe_silent_after_data)
row("A reply cut short is a deferral", "-", "a remote MX closing mid-reply",
    probe_close_mid_reply)
row("DNS timeouts defer", "dns_timeout", "the DNS server gone", probe_dns_gone)
row("Dead destinations suspended: one probe per retry interval", "retry_schedule",
    "a dead smarthost with a full queue", probe_dead_smarthost)
row("Parsers fuzzed (commands, DATA/BDAT, AUTH, replies, DNS, config, DSN, dot-stuffing)",
    "-", "hostile input to every parser", probe_fuzz)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "robustness.md"))
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--wal", type=int, default=50000)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--fuzz-seconds", type=int, default=10)
    ap.add_argument("--dead", type=int, default=2000, help="messages for the dead smarthost")
    ap.add_argument("--only", help="probe functions to run (comma-separated names)")
    a = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for defence, keys, attack, measure in ROWS:
        if a.only and measure.__name__ not in a.only.split(","):
            continue
        t0 = time.time()
        try:
            got = measure(a)
        except Exception as e:  # a probe that broke says so in its row
            got = "probe failed: %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            cleanup()
        print("%-60s %6.1f s  %s" % (measure.__name__, time.time() - t0, got), flush=True)
        results.append((defence, keys, attack, got))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    with open(a.out, "w") as f:
        f.write(HEADER % {
            "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit, "cpus": os.cpu_count(), "kernel": platform.release()})
        f.write("| defence | settings | attack or fault | measured |\n|---|---|---|---|\n")
        for defence, keys, attack, got in results:
            f.write("| %s | %s | %s | %s |\n" % (defence, keys.replace("_", "\\_"), attack,
                                                 got.replace("|", "\\|")))
        f.write(FOOTER)
    print("wrote %s" % a.out)


HEADER = """# Robustness: limits and defences

Every limit and defence sluice has against a hostile network or a fault,
the attack or fault it answers, and what was measured. This file is
generated by `make robustness` (`bench/robustness.py`): each row is a probe
that starts the real binary on loopback and attacks it with real clients,
or a smaller run of a benchmark (`make bench-idle`, `make bench-wal`,
`make crashloop`, `make bench-dead`, `make fuzz`). The tests in `make test`
assert each behaviour; the figures here are measurements, and on a shared
machine they move from run to run.

Generated %(date)s at commit %(commit)s, %(cpus)d cores, Linux %(kernel)s.

"""

FOOTER = """
Tested in `make test` but not measured here: the disk full while a message
is received (tests/integration/test_durability.py) or while a delivery
attempt is recorded (tests/integration/test_hostile_mx.py), and the limits'
log lines and metrics (test_limits.py, test_metrics.py).

Not measured by this script, for the time they take:
`make container-test` (the image's defaults: no extra sysctls, non-root,
an arbitrary uid in group 0, loopback trusted only, so a client through a
published port cannot relay; its last output is in
[container.md](container.md)), the full 500,000-message WAL run and the
50-cycle crash loop (their figures are in [benchmark.md](benchmark.md)).
"""


if __name__ == "__main__":
    main()
