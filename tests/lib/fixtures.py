"""
fixtures - what several integration test files set up the same way: a
server with TLS (and users for AUTH, and a metrics endpoint), a client TLS
context trusting the test CA, AUTH PLAIN, swaks, reading one metric, a
small disk that fills up, and root checks.

    srv = tls_server({"workers": "4"}, users={"alice": "s3cret"})
    with smtplib.SMTP(...) as s: s.starttls(context=tls_context())
    metric(srv, "sluice_sessions_rejected_total", 'reason="per_ip_limit"')
"""
import base64
import os
import re
import ssl
import subprocess
import tempfile
import threading
import urllib.request

import certs
from sluicetest import BIN, Server, free_port


def require_root(why):
    """Fail (never skip) a test that needs root, saying what for."""
    if os.geteuid() != 0:
        raise AssertionError("this test must run as root (%s); CI runs it as root" % why)


def tls_context(maximum=None, minimum=None, old=False):
    """A verifying client context trusting the test CA.  old: let OpenSSL
    itself offer TLS 1.0/1.1 (the server must refuse them)."""
    c = ssl.create_default_context(cafile=certs.pki().ca)
    if old:
        c.set_ciphers("DEFAULT:@SECLEVEL=0")
        c.minimum_version = ssl.TLSVersion.TLSv1
    if minimum is not None:
        c.minimum_version = minimum
    if maximum is not None:
        c.maximum_version = maximum
    return c


def passwd_line(user, password):
    """The auth_users line `sluice passwd` prints for them."""
    pw = password.encode() if isinstance(password, str) else password
    return subprocess.run([BIN, "passwd", user], input=pw + b"\n",
                          capture_output=True, check=True).stdout


def tls_server(config=None, cert=None, users=None, metrics=False, extra_listen=None,
               start=True):
    """A server with test certificate `cert` (default: certs.pki().a).  users:
    {name: password} for auth_users (auth_failure_delay 0); metrics: a
    metrics endpoint on a free port (srv.metrics_port)."""
    srv = Server(start=False, extra_listen=extra_listen)
    c, k = certs.install(cert or certs.pki().a, srv.dir)
    srv.config.update(tls_cert=c, tls_key=k)
    if users:
        path = os.path.join(srv.dir, "users")
        with open(path, "wb") as f:
            for name, password in users.items():
                f.write(passwd_line(name, password))
        srv.config.update(auth_users=path, auth_failure_delay="0")
    if metrics:
        metrics_listen(srv)
    srv.config.update(config or {})
    if start:
        srv.start()
    return srv


def metrics_listen(srv):
    """Give `srv` (not started yet) a metrics endpoint on a free port."""
    srv.metrics_port = free_port()
    srv.config["metrics_listen"] = "127.0.0.1:%d" % srv.metrics_port
    return srv


def metrics_server(config=None, start=True):
    """A server with a metrics endpoint (srv.metrics_port)."""
    srv = metrics_listen(Server(start=False))
    srv.config.update(config or {})
    if start:
        srv.start()
    return srv


def metrics_text(port):
    return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                  timeout=5).read().decode()


def metric(srv_or_port, name, label=None):
    """The value of metric `name` (with `label`, as written between the
    braces) at a server's endpoint."""
    port = getattr(srv_or_port, "metrics_port", srv_or_port)
    sel = name + ("{%s}" % label if label else "")
    m = re.search(r"^%s (\S+)$" % re.escape(sel), metrics_text(port), re.M)
    assert m, "no %s in the metrics" % sel
    return float(m.group(1))


def plain(user, password, authz=""):
    """An AUTH PLAIN response (RFC 4616), base64 text."""
    def b(x):
        return x.encode() if isinstance(x, str) else x
    return base64.b64encode(b(authz) + b"\0" + b(user) + b"\0" + b(password)).decode()


def swaks(srv, to="rcpt@example.net", data=None, source=None):
    """Send one message with swaks; `data` (bytes) as given, not fixed
    up.  Returns (exit status, output)."""
    args = ["swaks", "--server", "127.0.0.1", "--port", str(srv.port),
            "--helo", "client.test", "--from", "a@client.test", "--to", to,
            "--timeout", "20"]
    if source:
        args += ["--li", source]
    if data is not None:
        with tempfile.NamedTemporaryFile("wb", suffix=".eml", dir=srv.dir,
                                         delete=False) as f:
            f.write(data)
        args += ["--data", "@" + f.name, "--no-data-fixup"]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class SmallDisk:
    """A tmpfs of `size_mb` inside srv.dir holding the queue, with a
    `filler_mb` file in it (self.filler); unmounted on exit (the server
    killed first).  fill() takes every free block, and keeps taking any
    that sluice frees (its idle WAL truncation gives blocks back), until
    free().  Needs root."""

    def __init__(self, srv, size_mb, filler_mb=0):
        self.srv = srv
        self.size_mb, self.filler_mb = size_mb, filler_mb
        self.mnt = os.path.join(srv.dir, "small")
        self.filler = os.path.join(self.mnt, "filler")
        self.hog = os.path.join(self.mnt, "hog")
        self.stop = threading.Event()
        self.taker = None

    def __enter__(self):
        os.mkdir(self.mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % self.size_mb, "tmpfs",
                        self.mnt], check=True)
        if self.filler_mb:
            with open(self.filler, "wb") as f:
                f.write(b"\0" * (self.filler_mb * 1024 * 1024))
        self.srv.db = os.path.join(self.mnt, "queue.db")
        self.srv.config["queue_path"] = self.srv.db
        return self

    def fill(self):
        self.stop.clear()
        self.taker = threading.Thread(target=self._take, daemon=True)
        self._take_once()
        self.taker.start()

    def _take_once(self):
        with open(self.hog, "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    def _take(self):
        while not self.stop.wait(0.02):
            self._take_once()

    def free(self):
        self.stop.set()
        self.taker.join()
        os.unlink(self.hog)

    def __exit__(self, *exc):
        if self.taker is not None and not self.stop.is_set():
            self.stop.set()
            self.taker.join()
        if self.srv.proc is not None:
            self.srv.kill9()
        subprocess.run(["umount", self.mnt], check=False)
        return False
