#!/usr/bin/python3
"""
fakedns - a small authoritative DNS server for tests, on python3-dnslib.

Run it as a program (with Debian's /usr/bin/python3, which has dnslib):

    /usr/bin/python3 tests/lib/fakedns.py --listen 127.0.0.1 --port P --zone FILE

It serves the records of FILE (BIND-like lines, "name [TTL] [IN] TYPE data",
$ORIGIN and $TTL allowed; parsed by dnslib's RR.fromZone) over UDP and TCP
on the same port, and prints "READY" on stdout once both are listening.
With --port 0 it picks a free port and prints "PORT N" before "READY".
It exits cleanly (status 0) on SIGTERM or SIGINT.  Each query is logged
on stderr as one line: "PROTO NAME TYPE -> RCODE NANSWERS".

Answers, for a query of NAME and TYPE:
  - the records of NAME with that TYPE (any TYPE for ANY);
  - else NAME's CNAME, as a record: CNAMEs are never chased here, so the
    client has to follow them (which is what the tests want to see);
  - else NOERROR with no answer (NODATA) when NAME exists (it owns records
    or has names below it), and NXDOMAIN when it does not.

DNSSEC, as a local validating resolver would answer (--secure SUFFIX, any
number of times): a reply for a name at or below SUFFIX has AD set when the
query had AD or DO set (RFC 6840 section 5.7); others never have AD.  The
log line then ends in " ad".  --servfail NAME answers SERVFAIL for that
exact name (any type), e.g. a TLSA name.  --negative-ttl N puts an SOA
record with TTL and minimum N in the authority section of NXDOMAIN and
NODATA answers (RFC 2308), so that resolvers cache them for N seconds.

Fault injection, by the first label of NAME:
  servfail.*  SERVFAIL
  refused.*   REFUSED
  timeout.*   no answer at all (UDP and TCP)
  slow.*      the normal answer, after 1.5 s
  tc.*        over UDP an empty answer with TC set; over TCP the normal one

Python tests use the FakeDNS class below:

    with FakeDNS(zone_text) as dns:
        ... dns.port ..., dns.log() ...

It starts this program on a free port, waits for READY, and stops it by
its PID (SIGTERM, then SIGKILL if it lingers).
"""
import argparse
import os
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time

SLOW_DELAY = 1.5
FAULTS = ("servfail", "refused", "timeout", "slow", "tc")


def _key(label):
    """Case-insensitive lookup key of a name: lower case, trailing dot."""
    s = str(label).lower()
    return s if s.endswith(".") else s + "."


class Zone:
    """The records, indexed by owner name; the set of names that exist."""

    def __init__(self, text):
        from dnslib import RR
        self.records = {}
        self.existing = set()
        for rr in RR.fromZone(text):
            name = _key(rr.rname)
            self.records.setdefault(name, []).append(rr)
            # The name and every ancestor exist (empty non-terminals
            # answer NODATA, not NXDOMAIN: RFC 8020).
            labels = name.rstrip(".").split(".")
            for i in range(len(labels)):
                self.existing.add(".".join(labels[i:]) + ".")


class FakeServer:
    """The query logic shared by the UDP and TCP listeners."""

    def __init__(self, zone, secure=(), servfail=(), negative_ttl=None):
        self.zone = zone
        self.negative_ttl = negative_ttl
        self.secure = [_key(x) for x in secure]
        self.servfail = set(_key(x) for x in servfail)
        self.loglock = threading.Lock()

    def log(self, line):
        with self.loglock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def respond(self, data, proto):
        """The wire reply to `data`, or None to stay silent."""
        from dnslib import DNSRecord, QTYPE, RCODE
        try:
            req = DNSRecord.parse(data)
        except Exception as e:  # garbage: no reply, like a real server
            self.log("%s unparsable query: %s" % (proto, e))
            return None
        if not req.questions:
            return None
        q = req.q
        name = _key(q.qname)
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        first = name.split(".", 1)[0]
        reply = req.reply()  # QR, AA, RA, same ID, question, RD copied
        asked_ad = bool(req.header.ad) or any(
            getattr(r, "rtype", None) == QTYPE.OPT and (r.ttl & 0x8000) for r in req.ar)
        reply.header.ad = 0  # reply() copies the query's bits
        reply.header.cd = 0
        if asked_ad and any(name == s or name.endswith("." + s) for s in self.secure):
            reply.header.ad = 1
        fault = first if first in FAULTS else None
        if name in self.servfail:
            fault = "servfail"
        if fault == "timeout":
            self.log("%s %s %s -> (no answer)" % (proto, name, qtype))
            return None
        if fault == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif fault == "refused":
            reply.header.rcode = RCODE.REFUSED
        elif fault == "tc" and proto == "udp":
            reply.header.tc = 1
        else:
            if fault == "slow":
                time.sleep(SLOW_DELAY)
            rrs = self.zone.records.get(name, [])
            found = [rr for rr in rrs
                     if q.qtype == QTYPE.ANY or rr.rtype == q.qtype]
            if not found and q.qtype != QTYPE.CNAME:
                found = [rr for rr in rrs if rr.rtype == QTYPE.CNAME]
            for rr in found:
                reply.add_answer(rr)
            if not found and name not in self.zone.existing:
                reply.header.rcode = RCODE.NXDOMAIN
            if not found and self.negative_ttl is not None:
                from dnslib import RR, SOA
                n = self.negative_ttl
                reply.add_auth(RR("test.", QTYPE.SOA, ttl=n, rdata=SOA(
                    "ns.test.", "hostmaster.test.", (1, n, n, n, n))))
        self.log("%s %s %s -> %s %d%s" % (proto, name, qtype,
                                          RCODE.get(reply.header.rcode),
                                          len(reply.rr), " ad" if reply.header.ad else ""))
        return reply.pack()


def _udp_handler(fake):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            out = fake.respond(data, "udp")
            if out is not None:
                sock.sendto(out, self.client_address)
    return Handler


def _tcp_handler(fake):
    class Handler(socketserver.BaseRequestHandler):
        def _read(self, n):
            buf = b""
            while len(buf) < n:
                chunk = self.request.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
            return buf

        def handle(self):
            self.request.settimeout(30)
            try:
                while True:  # several queries per connection (RFC 7766)
                    head = self._read(2)
                    if head is None:
                        return
                    data = self._read(struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    out = fake.respond(data, "tcp")
                    if out is not None:
                        self.request.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return
    return Handler


def _servers(host, port, fake):
    """Bind UDP and TCP on the same port (a free one when port is 0)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET

    class UDP(socketserver.ThreadingUDPServer):
        address_family = fam
        daemon_threads = True

    class TCP(socketserver.ThreadingTCPServer):
        address_family = fam
        daemon_threads = True
        allow_reuse_address = True

    for _ in range(50):
        udp = UDP((host, port), _udp_handler(fake))
        try:
            tcp = TCP((host, udp.server_address[1]), _tcp_handler(fake))
        except OSError:
            udp.server_close()
            if port != 0:
                raise
            continue  # the TCP side of that free UDP port was taken
        return udp, tcp
    raise OSError("no free port for both UDP and TCP")


def serve(argv=None):
    ap = argparse.ArgumentParser(description="authoritative test DNS server")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--secure", action="append", default=[])
    ap.add_argument("--servfail", action="append", default=[])
    ap.add_argument("--negative-ttl", type=int)
    args = ap.parse_args(argv)
    with open(args.zone) as f:
        zone = Zone(f.read())
    fake = FakeServer(zone, args.secure, args.servfail, args.negative_ttl)
    udp, tcp = _servers(args.listen, args.port, fake)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1},
                                daemon=True) for s in (udp, tcp)]
    for t in threads:
        t.start()
    if args.port == 0:
        print("PORT %d" % udp.server_address[1])
    print("READY", flush=True)
    while not stop.wait(1.0):
        pass
    for s in (udp, tcp):
        s.shutdown()
        s.server_close()
    return 0


class FakeDNS:
    """A running fakedns on a free port (or on `port`: to start one again
    where a stopped one was), serving `zone_text`; names at or below one of
    `secure` are answered with AD (when asked), names in `servfail` with
    SERVFAIL."""

    def __init__(self, zone_text, host="127.0.0.1", timeout=10, port=0, secure=(),
                 servfail=(), negative_ttl=None):
        self.host = host
        self.dir = tempfile.mkdtemp(prefix="fakedns-")
        self.zonepath = os.path.join(self.dir, "test.zone")
        self.logpath = os.path.join(self.dir, "fakedns.log")
        with open(self.zonepath, "w") as f:
            f.write(zone_text)
        self._logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.abspath(__file__), "--listen", host,
             "--port", str(port), "--zone", self.zonepath]
            + [a for x in secure for a in ("--secure", x)]
            + [a for x in servfail for a in ("--servfail", x)]
            + (["--negative-ttl", str(negative_ttl)] if negative_ttl is not None else []),
            stdout=subprocess.PIPE, stderr=self._logfile, stdin=subprocess.DEVNULL)
        self.port = port or None   # with port 0, the program says which
        try:
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        deadline = time.time() + timeout
        buf = b""
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode().splitlines():
                    if line.startswith("PORT "):
                        self.port = int(line.split()[1])
                    if line == "READY" and self.port is not None:
                        return
        raise AssertionError("fakedns not ready (exit %s): %s" % (self.proc.poll(), self.log()))

    @property
    def server(self):
        """"HOST:PORT" for the dns_servers setting."""
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def log(self):
        """The query log so far (one line per query)."""
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, keep=False):
        """Stop by PID; returns the exit status.  `keep` keeps the folder."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
            self._logfile.close()
        if keep:
            print("#   kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(keep=exc_type is not None)
        return False


if __name__ == "__main__":
    sys.exit(serve())
