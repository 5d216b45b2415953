"""`sluice health`: exit 0 only when the relay completes an SMTP handshake
on its first listener and its queue is writable; "unhealthy: REASON" and
exit 1 otherwise.  Fake listeners in this file stand in for a relay that
greets badly or not at all; a small tmpfs (tests run as root) holds queues
on a read-only or full file system."""
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import BIN, SANITIZER_PATTERNS, Server, main, sqlite_test, test  # noqa: E402


def health(srv, *args, env_extra=None):
    """Run `sluice health -c CONFIG ARGS`; returns (status, output, seconds)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.update(env_extra or {})
    t0 = time.time()
    p = subprocess.run([BIN, "health", "-c", srv.cfgpath] + list(args), capture_output=True,
                       env=env, timeout=60)
    for pat in SANITIZER_PATTERNS:
        assert pat not in p.stderr, "sanitizer report:\n%s" % p.stderr.decode(errors="replace")
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace"), time.time() - t0


class FakeListener:
    """Accepts connections on loopback; sends `greeting` (or nothing) and
    keeps each connection open until stop()."""

    def __init__(self, greeting=None, answer=None):
        self.greeting, self.answer = greeting, answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            if self.greeting:
                c.sendall(self.greeting)
            if self.answer:
                c.settimeout(5)
                try:
                    if c.recv(1024):
                        c.sendall(self.answer)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        for c in self.conns:
            c.close()


def fake_config(port):
    """A server folder and config (not started) whose first listener is `port`."""
    srv = Server(start=False)
    srv.config["listen"] = "127.0.0.1:%d" % port
    srv.write_config()
    return srv


class Tmpfs:
    """A small tmpfs in srv.dir holding a copy of the server's queue."""

    def __init__(self, srv, size="4m"):
        self.srv, self.size = srv, size
        self.mnt = os.path.join(srv.dir, "fs")
        self.queue = os.path.join(self.mnt, "queue.db")

    def __enter__(self):
        if os.geteuid() != 0:
            raise AssertionError("this test must run as root (it mounts a tmpfs)")
        os.mkdir(self.mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + self.size, "tmpfs", self.mnt],
                       check=True)
        src = sqlite3.connect("file:%s?mode=ro" % self.srv.db, uri=True)
        dst = sqlite3.connect(self.queue)
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = WAL")
        src.close()
        dst.close()
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", self.mnt], check=False)
        return False


@test
def healthy_server_exits_0_with_ok_line():
    srv = Server()
    rc, out, _ = health(srv)
    assert rc == 0, out
    assert re.fullmatch(r"ok: SMTP on 127\.0\.0\.1:%d answered in \d+ ms; queue %s writable\n"
                        % (srv.port, re.escape(srv.db)), out), out


@test
def healthy_server_on_ipv6_loopback():
    srv = Server(host="::1")
    rc, out, _ = health(srv)
    assert rc == 0 and out.startswith("ok: SMTP on [::1]:%d answered in " % srv.port), out


@test
def stopped_server_is_connection_refused():
    srv = Server()
    assert srv.stop() == 0
    rc, out, _ = health(srv)
    assert (rc, out) == (1, "unhealthy: 127.0.0.1:%d: connection refused\n" % srv.port), (rc, out)


@test
def greeting_554_is_unhealthy():
    # A reply of several lines is shown by its first, as "554 ...".
    for greeting, shown in ((b"554 go away\r\n", "554 go away"),
                            (b"554-5.3.2 busy right now\r\n554 5.3.2 come back later\r\n",
                             "554 5.3.2 busy right now")):
        fake = FakeListener(greeting)
        try:
            srv = fake_config(fake.port)
            rc, out, _ = health(srv)
            assert (rc, out) == (1, 'unhealthy: 127.0.0.1:%d: greeting was "%s"\n'
                                 % (fake.port, shown)), (rc, out)
        finally:
            fake.stop()


@test
def ehlo_refused_is_unhealthy():
    fake = FakeListener(b"220 fake ESMTP\r\n", answer=b"502 5.5.1 no EHLO here\r\n")
    try:
        srv = fake_config(fake.port)
        rc, out, _ = health(srv)
        assert (rc, out) == (1, 'unhealthy: 127.0.0.1:%d: EHLO was answered "502 5.5.1 no '
                             'EHLO here"\n' % fake.port), (rc, out)
    finally:
        fake.stop()


@test
def ehlo_unanswered_is_unhealthy_within_the_timeout():
    fake = FakeListener(b"220 fake ESMTP\r\n")
    try:
        srv = fake_config(fake.port)
        rc, out, took = health(srv, "--timeout", "1")
        assert rc == 1 and out == ("unhealthy: 127.0.0.1:%d: no reply to EHLO within 1 s\n"
                                   % fake.port), (rc, out)
        assert took < 5, took
    finally:
        fake.stop()


@test
def silent_server_times_out():
    fake = FakeListener(None)
    try:
        srv = fake_config(fake.port)
        rc, out, took = health(srv, "--timeout", "2")
        assert (rc, out) == (1, "unhealthy: 127.0.0.1:%d: no greeting within 2 s\n"
                             % fake.port), (rc, out)
        assert 1.5 < took < 6, took
    finally:
        fake.stop()


@test
def implicit_tls_first_listener():
    srv = Server(start=False)
    srv.config["listen"] = "127.0.0.1:%d/smtps" % srv.port
    srv.start()
    rc, out, _ = health(srv)
    assert rc == 0 and out.startswith("ok: SMTP on 127.0.0.1:%d answered in " % srv.port), out
    # A plain-text server where TLS is expected fails the handshake.
    fake = FakeListener(b"220 plain ESMTP\r\n")
    try:
        srv.config["listen"] = "127.0.0.1:%d/smtps" % fake.port
        srv.write_config()
        rc, out, _ = health(srv, "--timeout", "3")
        assert rc == 1 and out.startswith(
            "unhealthy: 127.0.0.1:%d: TLS handshake failed" % fake.port), out
    finally:
        fake.stop()


@sqlite_test
def queue_on_read_only_file_system():
    srv = Server()
    with Tmpfs(srv) as fs:
        subprocess.run(["mount", "-o", "remount,ro", fs.mnt], check=True)
        rc, out, _ = health(srv, env_extra={"SLUICE_QUEUE_PATH": fs.queue})
        assert (rc, out) == (1, "unhealthy: queue %s: read-only file system\n" % fs.queue), out
    # The server's own queue is fine.
    assert health(srv)[0] == 0


@sqlite_test
def queue_on_full_file_system():
    srv = Server()
    with Tmpfs(srv, size="2m") as fs:
        with open(os.path.join(fs.mnt, "filler"), "wb") as f:
            try:
                f.write(b"\0" * (2 * 1024 * 1024))
            except OSError:
                pass
        rc, out, _ = health(srv, env_extra={"SLUICE_QUEUE_PATH": fs.queue})
        assert rc == 1 and re.fullmatch(r"unhealthy: queue %s: only \d+ KiB free on its file "
                                        r"system\n" % re.escape(fs.queue), out), out


@test
def missing_queue_is_unhealthy():
    srv = Server()
    path = os.path.join(srv.dir, "nowhere", "queue.db")
    rc, out, _ = health(srv, env_extra={"SLUICE_QUEUE_PATH": path})
    assert (rc, out) == (1, "unhealthy: queue %s: does not exist\n" % path), out


@sqlite_test
def locked_queue_is_unhealthy_within_the_timeout():
    srv = Server()
    con = sqlite3.connect(srv.db, timeout=5, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        rc, out, took = health(srv, "--timeout", "2")
        assert rc == 1 and out == ("unhealthy: queue %s: cannot write: database is locked\n"
                                   % srv.db), out
        assert took < 5, took
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert health(srv)[0] == 0


@test
def usage_errors_exit_2():
    srv = Server(start=False)
    srv.write_config()
    for args in (["--timeout", "soon"], ["--timeout", "0"], ["--bogus"]):
        rc, out, _ = health(srv, *args)
        assert rc == 2 and "usage: sluice health" in out, (args, rc, out)


if __name__ == "__main__":
    main()
