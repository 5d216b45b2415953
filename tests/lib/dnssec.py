"""
dnssec - real DNSSEC for the end-to-end tests: knotd serves the zone
`test.` and signs it on the fly (its own keys), unbound validates it with
knotd's key-signing key as the trust anchor and answers with AD, as a
local validating resolver in front of sluice would.

    with SignedZone(records) as z:   # records: zone lines under test.
        z.resolver                   # "127.0.0.1:PORT" for dns_servers

Both daemons run in the foreground from a temporary folder on free
loopback ports and are stopped by their PIDs.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def _free_port():
    """A port free for UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise OSError("no free port")


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


class SignedZone:
    def __init__(self, records):
        self.dir = tempfile.mkdtemp(prefix="sluice-dnssec-")
        self.procs = []
        try:
            self._start(records)
        except Exception:
            self.stop(keep=True)
            raise

    def _start(self, records):
        d = self.dir
        kport, uport = _free_port(), _free_port()
        os.makedirs(os.path.join(d, "db"))
        with open(os.path.join(d, "test.zone"), "w") as f:
            f.write("$ORIGIN test.\n$TTL 300\n"
                    "@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n"
                    "@ IN NS ns.test.\nns IN A 127.0.0.1\n" + records + "\n")
        with open(os.path.join(d, "knot.conf"), "w") as f:
            f.write("server:\n    listen: 127.0.0.1@%d\n    rundir: %s\n"
                    "database:\n    storage: %s/db\n"
                    "log:\n  - target: stderr\n    any: info\n"
                    "template:\n  - id: default\n    storage: %s\n    file: \"%%s.zone\"\n"
                    "    dnssec-signing: on\n    journal-content: none\n"
                    "    zonefile-sync: -1\n"
                    "zone:\n  - domain: test\n" % (kport, d, d, d))
        self._run(["knotd", "-c", os.path.join(d, "knot.conf")], "knot.log")

        def ksk():
            r = subprocess.run(["kdig", "@127.0.0.1", "-p", str(kport), "test.", "DNSKEY",
                                "+short"], capture_output=True, text=True, timeout=10)
            keys = [line for line in r.stdout.splitlines() if line.startswith("257 ")]
            return keys[0] if keys else None
        key = _wait(ksk, 20, "knotd to sign test.")
        with open(os.path.join(d, "ta.key"), "w") as f:
            f.write("test. IN DNSKEY %s\n" % key)
        with open(os.path.join(d, "unbound.conf"), "w") as f:
            f.write("server:\n  interface: 127.0.0.1@%d\n  port: %d\n  chroot: \"\"\n"
                    "  username: \"\"\n  directory: \"%s\"\n  do-daemonize: no\n"
                    "  use-syslog: no\n  logfile: \"\"\n  pidfile: \"\"\n  do-ip6: no\n"
                    "  module-config: \"validator iterator\"\n"
                    "  trust-anchor-file: \"%s/ta.key\"\n  domain-insecure: \".\"\n"
                    "  local-zone: \"test.\" nodefault\n  do-not-query-localhost: no\n"
                    "  val-log-level: 2\n"
                    "remote-control:\n  control-enable: no\n"
                    "stub-zone:\n  name: \"test.\"\n  stub-addr: 127.0.0.1@%d\n"
                    % (uport, uport, d, d, kport))
        self._run(["unbound", "-d", "-c", os.path.join(d, "unbound.conf")], "unbound.log")

        def secure():
            r = subprocess.run(["kdig", "@127.0.0.1", "-p", str(uport), "ns.test.", "A",
                                "+adflag"], capture_output=True, text=True, timeout=10)
            return " ad" in r.stdout.split("Flags:")[-1].split(";")[0]
        _wait(secure, 20, "unbound to validate test.")
        self.resolver = "127.0.0.1:%d" % uport

    def _run(self, argv, log):
        f = open(os.path.join(self.dir, log), "wb")
        self.procs.append((subprocess.Popen(argv, stdout=f, stderr=f,
                                            stdin=subprocess.DEVNULL), f))

    def stop(self, keep=False):
        for p, f in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            f.close()
        self.procs = []
        if keep:
            print("#   kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(keep=exc_type is not None)
        return False
