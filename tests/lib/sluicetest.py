"""
sluicetest - the integration test harness for sluice.

Each test starts the real binary (build/sluice, or $SLUICE_BIN) with a
generated config in a fresh temporary folder, on a free port on loopback,
and drives it with real clients.  Every process a test starts is stopped by
its PID.  On failure the temporary folder is kept and its path printed.

Output protocol (counted by tests/run.sh): one line per test,
"ok - NAME" or "FAIL - NAME: reason".
"""
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, BUILD, "sluice"))
SANITIZER_PATTERNS = (b"ERROR: AddressSanitizer", b"runtime error:",
                      b"WARNING: ThreadSanitizer", b"ERROR: LeakSanitizer")

# Set by `make asan` / `make tsan`: sanitizers multiply memory use, so
# memory bounds in tests are scaled by rss_limit_kb().
SANITIZER = os.environ.get("SLUICE_SANITIZER", "")

_tests = []
_cleanups = []


def test(fn):
    """Register a test function."""
    _tests.append(fn)
    return fn


def sqlite_test(fn):
    """Register a test of the SQLite queue file itself (its upgrades from
    old versions, its WAL, file permissions): not run in tests/run.sh's
    PostgreSQL pass, which runs everything else on a PostgreSQL queue."""
    if not os.environ.get("SLUICE_TEST_PG"):
        _tests.append(fn)
    return fn


def rss_limit_kb(kb):
    """A memory bound for a test, scaled for sanitizer builds (TSan's
    shadow memory and per-thread caches cost the most)."""
    return kb * {"": 1, "thread": 8}.get(SANITIZER, 4)


def poll_until(fn, timeout=5.0, what="condition"):
    """Poll fn() until it returns a true value (bounded); return it."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for %s (last: %r)" % (what, v))
        time.sleep(0.05)


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host="127.0.0.1"):
    """A port to listen on, outside the kernel's ephemeral range: a port
    bind(0) picks there can be taken by any client connection (of this or
    another test) before the server binds it."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    lo, hi = _ephemeral_range()
    ranges = [(r0, r1) for r0, r1 in ((10000, lo), (hi + 1, 65536)) if r1 - r0 > 1000]
    rng = random.SystemRandom()
    for _ in range(200):
        r0, r1 = rng.choice(ranges)
        port = rng.randrange(r0, r1)
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_pg_dbs = [0]


def _pg_new_db(cluster_uri):
    """A new database in the cluster at `cluster_uri` (its postgres
    database's URI); its URI."""
    import pgcluster
    _pg_dbs[0] += 1
    name = "t%d_%d" % (os.getpid(), _pg_dbs[0])
    pgcluster.run_sql(cluster_uri, "CREATE DATABASE %s" % name, autocommit=True)
    return cluster_uri.rsplit("/", 1)[0] + "/" + name


class Server:
    """A running `sluice serve` with its own folder and config."""

    def __init__(self, host="127.0.0.1", config=None, start=True, extra_listen=None):
        self.dir = tempfile.mkdtemp(prefix="sluice-test-")
        self.host = host
        self.port = free_port(host)
        self.db = os.path.join(self.dir, "queue.db")
        # tests/run.sh's PostgreSQL pass: the queue in a database of its own.
        self.pg = os.environ.get("SLUICE_TEST_PG")
        if self.pg:
            self.db = _pg_new_db(self.pg)
        self.cfgpath = os.path.join(self.dir, "sluice.conf")
        self.logpath = os.path.join(self.dir, "sluice.log")
        hostport = "[%s]:%d" % (host, self.port) if ":" in host else "%s:%d" % (host, self.port)
        listen = [hostport] + (extra_listen or [])
        self.config = {
            "hostname": "relay.test",
            "listen": ", ".join(listen),
            "queue_path": self.db,
            "relay_networks": "127.0.0.1/32, ::1/128",
            "relay_domains": "inbound.test",
            "workers": "8",
            "shutdown_grace": "5s",
            # Intake tests inspect queued mail: nothing is delivered unless
            # a test turns delivery on.
            "delivery_threads": "0",
            # Tests run as root: stay root (privilege tests set a user).
            "user": "root",
        }
        self.config.update(config or {})
        self.proc = None
        self.logfile = None
        _cleanups.append(self)
        if start:
            self.start()

    def write_config(self):
        with open(self.cfgpath, "w") as f:
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, wait=True):
        self.write_config()
        self.logfile = open(self.logpath, "ab")
        self._logstart = os.path.getsize(self.logpath)
        env = dict(os.environ)
        # A small quarantine keeps RSS measurements meaningful under ASan.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=8")
        env.setdefault("TSAN_OPTIONS", "halt_on_error=0")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.cfgpath],
                                     stdout=self.logfile, stderr=self.logfile,
                                     stdin=subprocess.DEVNULL, env=env)
        if wait:
            self.wait_log(r"info main: ready", start=self._logstart)
        return self

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=15, start=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log()[start:]
            if re.search(pattern, text):
                return text
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("sluice exited (%s) while waiting for %r:\n%s"
                                     % (self.proc.returncode, pattern, text[-3000:]))
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %r in log:\n%s" % (pattern, self.log()[-3000:]))

    def peak_rss_kb(self):
        """Peak resident memory of the running server (VmHWM)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM for pid %d" % self.proc.pid)

    def check_sanitizers(self):
        data = open(self.logpath, "rb").read()
        for p in SANITIZER_PATTERNS:
            if p in data:
                raise AssertionError("sanitizer report in %s" % self.logpath)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop with `sig`; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("sluice did not stop within %ds after %s" % (timeout, sig))
        self.proc = None
        self.logfile.close()
        self.check_sanitizers()
        return rc

    def kill9(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.logfile.close()

    def restart(self):
        assert self.stop() == 0
        return self.start()

    def cleanup(self, keep):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if keep:
            print("#   kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients --
    def connect(self, source=None, timeout=10):
        return Client(self.host, self.port, source=source, timeout=timeout)

    def query(self, sql, args=()):
        if self.pg:
            import pgcluster
            return pgcluster.run_sql(self.db, sql, args)
        con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def execute(self, sql, args=()):
        """Change the queue by hand, as an administrator with SQL would
        (committed; either backend)."""
        self.execute_many([(sql, args)])

    def execute_many(self, statements):
        """(sql, args) pairs in one transaction."""
        if self.pg:
            import pgcluster
            pgcluster.run_many(self.db, statements)
            return
        con = sqlite3.connect(self.db, timeout=10)
        try:
            with con:
                for sql, args in statements:
                    con.execute(sql, args)
        finally:
            con.close()

    def count(self, table):
        """Rows in a table of the queue."""
        return self.query("select count(*) from %s" % table)[0][0]

    def body(self, msg_id):
        rows = self.query("select data from body_chunks where msg_id=? order by seq", (msg_id,))
        return b"".join(r[0] for r in rows)


class Client:
    """A raw-socket SMTP client: send exactly what the test says."""

    def __init__(self, host, port, source=None, timeout=10):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_cut(self, data, rng, pause):
        """Send `data` in four writes cut at random (`rng`), with up to
        `pause` seconds between them: a kill then often falls mid-data."""
        cuts = sorted(rng.randint(0, len(data)) for _ in range(3))
        prev = 0
        for cut in cuts + [len(data)]:
            self.send(data[prev:cut])
            prev = cut
            time.sleep(rng.random() * pause)

    def cmd(self, line, expect=None):
        """Send one command line (CRLF added) and read its reply."""
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(expect)

    def _readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; unparsed %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self, expect=None):
        """Read one (possibly multi-line) reply; returns (code, text).
        `expect` is a regex matched against "CODE TEXT" of the last line."""
        lines = []
        while True:
            line = self._readline()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        code = int(lines[-1][:3])
        text = "\n".join(lines)
        if expect is not None and not re.match(expect, lines[-1]):
            raise AssertionError("expected %r, got %r" % (expect, text))
        return code, text

    def closed(self, timeout=5):
        """True when the server closed the connection (EOF)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def ehlo(self, name="client.test"):
        self.reply("220 ")
        return self.cmd("EHLO " + name, "250 ")

    def finish(self):
        """QUIT and wait for the close, so the session is completely over."""
        self.cmd("QUIT", "221 2.0.0")
        assert self.closed(), "connection still open after QUIT"

    def begin_data(self):
        """MAIL, RCPT and DATA, up to the 354: the data is the test's."""
        self.cmd("MAIL FROM:<sender@client.test>", "250 ")
        self.cmd("RCPT TO:<rcpt@example.net>", "250 ")
        self.cmd("DATA", "354 ")

    def mail(self, sender="<sender@client.test>", rcpts=("<rcpt@example.net>",), body=None):
        """A whole transaction; returns the queue ID."""
        self.cmd("MAIL FROM:" + sender, "250 ")
        for r in rcpts:
            self.cmd("RCPT TO:" + r, "250 ")
        self.cmd("DATA", "354 ")
        self.send(body if body is not None else b"Subject: test\r\n\r\nhello\r\n.\r\n")
        code, text = self.reply("250 ")
        return re.search(r"queued as (\w+)", text).group(1)


def main():
    only = sys.argv[1:]
    failed = 0
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        name = "%s%s: %s" % (os.path.basename(sys.argv[0]),
                             " [postgresql]" if os.environ.get("SLUICE_TEST_PG") else "",
                             fn.__name__)
        start = len(_cleanups)
        ok = True
        try:
            fn()
            for srv in _cleanups[start:]:
                if srv.proc is not None:
                    srv.stop()
        except Exception as e:  # a failed test, whatever it raised
            ok = False
            failed += 1
            print("FAIL - %s: %s" % (name, str(e).splitlines()[0] if str(e) else type(e).__name__))
            for line in traceback.format_exc().splitlines()[-12:]:
                print("#   " + line)
        for srv in _cleanups[start:]:
            srv.cleanup(keep=not ok)
        del _cleanups[start:]
        if ok:
            print("ok - %s" % name)
        sys.stdout.flush()
    sys.exit(1 if failed else 0)
