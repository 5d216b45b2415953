"""Where mail goes: `sluice resolve DOMAIN` (dns/dns.c on ldns) against
tests/lib/fakedns.py, an authoritative test server that also injects
SERVFAIL, REFUSED, timeouts, slow answers and truncation.

Each test runs the real binary with a generated config in its own folder:
the MX order and shuffling of equal preferences (RFC 5321 section 5.1),
implicit MX, null MX (RFC 7505), NXDOMAIN and SERVFAIL typed permanent
and temporary (exit 69 and 75), TC -> TCP, CNAMEs, IP-literal MX data,
the self rule and max_mx_hosts.  The unit test tests/unit/test_dns.c
covers the ordering step and the self rule by listening address."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import sluicetest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from sluicetest import BIN, SANITIZER_PATTERNS, main, test  # noqa: E402

EX_TEMPFAIL, EX_UNAVAILABLE = 75, 69

ZONE = """\
$TTL 300
; the plain case: three preferences, mx1 with IPv6 and IPv4
example.test.            IN MX 10 mx1.example.test.
example.test.            IN MX 20 mx2.example.test.
example.test.            IN MX 30 mx3.example.test.
mx1.example.test.        IN A     127.0.0.2
mx1.example.test.        IN AAAA  ::1
mx2.example.test.        IN A     127.0.0.3
mx3.example.test.        IN A     127.0.0.4
dead.example.test.       IN A     127.0.0.9
; two hosts share the best preference
eq.test.                 IN MX 10 a.eq.test.
eq.test.                 IN MX 10 b.eq.test.
eq.test.                 IN MX 20 c.eq.test.
a.eq.test.               IN A     127.0.0.11
b.eq.test.               IN A     127.0.0.12
c.eq.test.               IN A     127.0.0.13
; MX hosts without addresses: one does not exist, one has only a TXT
noaddr.test.             IN MX 10 ghost.noaddr.test.
noaddr.test.             IN MX 15 txtonly.noaddr.test.
noaddr.test.             IN MX 20 mx2.example.test.
txtonly.noaddr.test.     IN TXT   "no address here"
allnoaddr.test.          IN MX 10 ghost.noaddr.test.
allnoaddr.test.          IN MX 20 txtonly.noaddr.test.
deadmx.test.             IN MX 10 dead.example.test.
; no MX
implicit.test.           IN A     127.0.0.5
implicit.test.           IN AAAA  ::5
v6only.test.             IN AAAA  ::6
nothing.test.            IN TXT   "neither MX nor address"
nullmx.test.             IN MX 0  .
; an MX host whose lookup fails for now, another that does not exist
servfailmx.test.         IN MX 10 servfail.mx.test.
servfailmx.test.         IN MX 20 ghost.noaddr.test.
tc.example.test.         IN MX 10 mx2.example.test.
slow.example.test.       IN MX 10 mx2.example.test.
; CNAMEs: for the domain, and for an MX host (RFC 2181 10.3 says no,
; the world does it anyway)
alias.test.              IN CNAME example.test.
cnamemx.test.            IN MX 10 mxalias.test.
mxalias.test.            IN CNAME mx2.example.test.
; MX data must be names (RFC 5321 section 5.1), not addresses
literal.test.            IN MX 5  192.0.2.1.
literal.test.            IN MX 6  [192.0.2.2].
literal.test.            IN MX 10 mx2.example.test.
; the relay itself (hostname = relay.test) in the MX list
selfmx.test.             IN MX 5  mx1.example.test.
selfmx.test.             IN MX 10 RELAY.TEST.
selfmx.test.             IN MX 20 mx3.example.test.
selfbest.test.           IN MX 10 relay.test.
selfbest.test.           IN MX 20 mx2.example.test.
relay.test.              IN A     127.0.0.10
"""

MX1 = ["mx1.example.test 10 ::1 2525", "mx1.example.test 10 127.0.0.2 2525"]
MX2 = ["mx2.example.test 20 127.0.0.3 2525"]
MX3 = ["mx3.example.test 30 127.0.0.4 2525"]


class World:
    """One test's fakedns and folder; `resolve` runs `sluice resolve`.
    Registered with the harness, which keeps the folder on failure."""

    def __init__(self, zone=ZONE, dns_host="127.0.0.1", secure=(), servfail=()):
        self.dir = tempfile.mkdtemp(prefix="sluice-test-")
        self.proc = None  # nothing for the harness to stop
        sluicetest._cleanups.append(self)
        self.dns = FakeDNS(zone, host=dns_host, secure=secure, servfail=servfail)
        self.runs = 0

    def resolve(self, domain, **config):
        """Returns (exit status, stdout lines, seconds taken)."""
        cfg = {"dns_servers": self.dns.server, "dns_timeout": "2s",
               "hostname": "relay.test", "delivery_port": "2525"}
        cfg.update(config)
        self.runs += 1
        path = os.path.join(self.dir, "resolve-%d.conf" % self.runs)
        with open(path, "w") as f:
            for k, v in cfg.items():
                f.write("%s = %s\n" % (k, v))
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        t0 = time.monotonic()
        p = subprocess.run([BIN, "resolve", domain, "-c", path], capture_output=True,
                           timeout=60, env=env, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        with open(os.path.join(self.dir, "resolve-%d.out" % self.runs), "wb") as f:
            f.write(p.stdout + p.stderr)
        for pat in SANITIZER_PATTERNS:
            assert pat not in p.stderr, "sanitizer report: %s" % p.stderr.decode()[-3000:]
        return p.returncode, p.stdout.decode().splitlines(), took

    def expect(self, domain, lines, **config):
        rc, out, _ = self.resolve(domain, **config)
        assert (rc, out) == (0, lines), "%s: rc %d, got %r, want %r" % (domain, rc, out, lines)

    def expect_fail(self, domain, rc, prefix, **config):
        got_rc, out, took = self.resolve(domain, **config)
        assert got_rc == rc and len(out) == 1 and out[0].startswith(prefix), \
            "%s: rc %d, got %r, want %d %r" % (domain, got_rc, out, rc, prefix)
        return out[0], took

    def cleanup(self, keep):
        self.dns.stop(keep=keep)
        if keep:
            print("#   kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


@test
def mx_hosts_in_preference_order():
    w = World()
    w.expect("example.test", MX1 + MX2 + MX3)
    # Names are not case-sensitive and may be absolute.
    w.expect("EXAMPLE.Test.", MX1 + MX2 + MX3)


@test
def equal_preferences_in_both_orders():
    w = World()
    seen = set()
    for _ in range(30):
        rc, out, _ = w.resolve("eq.test")
        assert rc == 0 and len(out) == 3, out
        assert sorted(out[:2]) == ["a.eq.test 10 127.0.0.11 2525",
                                   "b.eq.test 10 127.0.0.12 2525"], out
        assert out[2] == "c.eq.test 20 127.0.0.13 2525", out
        seen.add(tuple(out[:2]))
    # Each run is a fair coin: 30 equal runs would be a 2 in 10^9 event.
    assert len(seen) == 2, seen


@test
def mx_without_address_is_skipped():
    w = World()
    w.expect("noaddr.test", ["mx2.example.test 20 127.0.0.3 2525"])
    w.expect_fail("allnoaddr.test", EX_UNAVAILABLE,
                  "permanent 5.4.4 no usable address for allnoaddr.test")


@test
def dead_mx_is_still_listed():
    # Nothing listens on 127.0.0.9: that is for delivery to find out.
    World().expect("deadmx.test", ["dead.example.test 10 127.0.0.9 2525"])


@test
def no_mx_means_implicit_mx():
    w = World()
    w.expect("implicit.test", ["implicit.test -1 ::5 2525",
                               "implicit.test -1 127.0.0.5 2525"])
    w.expect_fail("nothing.test", EX_UNAVAILABLE,
                  "permanent 5.1.2 domain nothing.test has no MX and no address")


@test
def inet_protocols_limits_address_families():
    w = World()
    w.expect("implicit.test", ["implicit.test -1 127.0.0.5 2525"], inet_protocols="ipv4")
    w.expect("implicit.test", ["implicit.test -1 ::5 2525"], inet_protocols="ipv6")
    w.expect("example.test", ["mx1.example.test 10 127.0.0.2 2525"] + MX2 + MX3,
             inet_protocols="ipv4")
    w.expect("example.test", ["mx1.example.test 10 ::1 2525"], inet_protocols="ipv6")
    w.expect_fail("v6only.test", EX_UNAVAILABLE, "permanent 5.1.2 ", inet_protocols="ipv4")


@test
def null_mx_is_permanent():
    World().expect_fail("nullmx.test", EX_UNAVAILABLE,
                        "permanent 5.1.10 nullmx.test does not accept mail (null MX")


@test
def nxdomain_is_permanent():
    World().expect_fail("nx.example.test", EX_UNAVAILABLE,
                        "permanent 5.1.2 domain nx.example.test does not exist (NXDOMAIN)")


@test
def servfail_and_refused_are_temporary():
    w = World()
    w.expect_fail("servfail.example.test", EX_TEMPFAIL,
                  "temporary 4.4.3 DNS lookup of MX for servfail.example.test failed: SERVFAIL")
    w.expect_fail("refused.example.test", EX_TEMPFAIL,
                  "temporary 4.4.3 DNS lookup of MX for refused.example.test failed: REFUSED")
    # The only MX host that might have an address cannot be looked up
    # now: try again later rather than bounce.
    w.expect_fail("servfailmx.test", EX_TEMPFAIL,
                  "temporary 4.4.3 DNS lookup of ")


@test
def timeout_is_temporary_and_bounded():
    w = World()
    line, took = w.expect_fail("timeout.example.test", EX_TEMPFAIL,
                               "temporary 4.4.3 DNS lookup of MX for timeout.example.test",
                               dns_timeout="1s")
    # One server, one try of dns_timeout: a generous bound, not a speed test.
    assert took < 10, "took %.1f s" % took
    # A slow (1.5 s) answer within dns_timeout is an answer.
    w.expect("slow.example.test", ["mx2.example.test 10 127.0.0.3 2525"], dns_timeout="3s")


@test
def truncated_answer_retried_over_tcp():
    w = World()
    w.expect("tc.example.test", ["mx2.example.test 10 127.0.0.3 2525"])
    log = w.dns.log()
    assert "udp tc.example.test. MX -> NOERROR 0" in log, log
    assert "tcp tc.example.test. MX -> NOERROR 1" in log, log


@test
def cnames_are_followed():
    w = World()
    w.expect("alias.test", MX1 + MX2 + MX3)
    w.expect("cnamemx.test", ["mxalias.test 10 127.0.0.3 2525"])


@test
def ip_literal_mx_is_skipped():
    w = World()
    w.expect("literal.test", ["mx2.example.test 10 127.0.0.3 2525"])
    assert "192.0.2" not in w.dns.log(), "an IP literal was looked up:\n" + w.dns.log()


@test
def self_in_mx_list_keeps_better_hosts():
    World().expect("selfmx.test", ["mx1.example.test 5 ::1 2525",
                                   "mx1.example.test 5 127.0.0.2 2525"])


@test
def self_at_best_preference_is_a_loop():
    w = World()
    w.expect_fail("selfbest.test", EX_UNAVAILABLE,
                  "permanent 5.4.6 mail for selfbest.test loops back to myself")
    # The same list seen by another host is fine.
    w.expect("selfbest.test", ["relay.test 10 127.0.0.10 2525",
                               "mx2.example.test 20 127.0.0.3 2525"],
             hostname="other.test")


@test
def max_mx_hosts_caps_hosts_not_addresses():
    w = World()
    w.expect("example.test", MX1, max_mx_hosts="1")
    w.expect("example.test", MX1 + MX2, max_mx_hosts="2")
    w.expect("example.test", MX1 + MX2 + MX3, max_mx_hosts="3")


@test
def ipv6_name_server():
    w = World(dns_host="::1")
    assert w.dns.server.startswith("[::1]:"), w.dns.server
    w.expect("example.test", MX1 + MX2 + MX3)
    w.expect("tc.example.test", ["mx2.example.test 10 127.0.0.3 2525"])


SEC_ZONE = """\
$TTL 300
; sec.test and its hosts are signed (the fake resolver sets AD); insec.test
; is not
sec.test.                IN MX 10 mx.sec.test.
sec.test.                IN MX 20 mx2.sec.test.
mx.sec.test.             IN A     127.0.0.20
_2525._tcp.mx.sec.test.  IN TLSA  3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
_2525._tcp.mx.sec.test.  IN TLSA  2 0 2 ab
mx2.sec.test.            IN A     127.0.0.21
mixed.sec.test.          IN MX 10 host.insec.test.
host.insec.test.         IN A     127.0.0.22
_2525._tcp.host.insec.test. IN TLSA 3 1 1 00
insec.test.              IN MX 10 mx.sec.test.
cn.sec.test.             IN CNAME cn.insec.test.
cn.insec.test.           IN MX 10 mx.sec.test.
nomx.sec.test.           IN A     127.0.0.23
"""


@test
def dnssec_trust_ad_marks_secure_answers_and_reads_tlsa():
    """dnssec = trust-ad: queries carry AD, a reply's AD from the loopback
    resolver makes its answer secure, TLSA is asked only for hosts whose
    address was secure (a secure "no TLSA" is told apart), a CNAME chain
    is secure only if every hop is, and a TLSA lookup failure is an error
    (DANE defers on it, never sends in plaintext)."""
    w = World(SEC_ZONE, secure=["sec.test"], servfail=["_2525._tcp.mx2.sec.test"])
    on = {"dnssec": "trust-ad"}
    w.expect("sec.test", [
        "mx.sec.test 10 127.0.0.20 2525 mx=secure addr=secure",
        "  tlsa 3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff secure",
        "  tlsa 2 0 2 ab secure",
        "mx2.sec.test 20 127.0.0.21 2525 mx=secure addr=secure",
        "  tlsa error 4.7.5 TLSA lookup error for mx2.sec.test:2525 (DNS lookup of TLSA for "
        "_2525._tcp.mx2.sec.test failed: SERVFAIL)"], **on)
    # A secure MX naming a host in an unsigned zone: no TLSA question.
    w.expect("mixed.sec.test", [
        "host.insec.test 10 127.0.0.22 2525 mx=secure addr=insecure"], **on)
    assert "_2525._tcp.host.insec.test" not in w.dns.log(), w.dns.log()
    # An unsigned domain's MX pointing into the signed zone.
    w.expect("insec.test", [
        "mx.sec.test 10 127.0.0.20 2525 mx=insecure addr=secure",
        "  tlsa 3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff secure",
        "  tlsa 2 0 2 ab secure"], **on)
    # A CNAME out of the signed zone: the chain is insecure.
    w.expect("cn.sec.test", [
        "mx.sec.test 10 127.0.0.20 2525 mx=insecure addr=secure",
        "  tlsa 3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff secure",
        "  tlsa 2 0 2 ab secure"], **on)
    # No MX (a secure NODATA) and no TLSA (a secure NXDOMAIN).
    w.expect("nomx.sec.test", [
        "nomx.sec.test -1 127.0.0.23 2525 mx=secure addr=secure",
        "  tlsa none secure"], **on)
    log = w.dns.log()
    assert "udp mx.sec.test. A -> NOERROR 1 ad" in log, log
    assert "udp host.insec.test. A -> NOERROR 1\n" in log, log


@test
def dnssec_off_asks_without_ad_and_shows_nothing():
    """With dnssec off (the default), queries do not ask for AD, so even
    the signed zone's answers come back without it, and the output is the
    plain "NAME PREF ADDRESS PORT"."""
    w = World(SEC_ZONE, secure=["sec.test"])
    w.expect("sec.test", ["mx.sec.test 10 127.0.0.20 2525", "mx2.sec.test 20 127.0.0.21 2525"])
    log = w.dns.log()
    assert "mx.sec.test. A -> NOERROR 1" in log and " ad" not in log, log
    assert "TLSA" not in log, log


def trusted_servers_inside_a_namespace():
    """Run inside `unshare -n`: a name server on a non-loopback address
    (192.0.2.53 on the namespace's loopback device) whose AD bit is only
    believed once dnssec_trusted_servers names it."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "192.0.2.53/32", "dev", "lo"], check=True)
    w = World(SEC_ZONE, dns_host="192.0.2.53", secure=["sec.test"])
    try:
        on = {"dnssec": "trust-ad"}
        w.expect("nomx.sec.test", ["nomx.sec.test -1 127.0.0.23 2525 mx=insecure addr=insecure"],
                 **on)
        w.expect("nomx.sec.test", ["nomx.sec.test -1 127.0.0.23 2525 mx=secure addr=secure",
                                   "  tlsa none secure"],
                 dnssec_trusted_servers="192.0.2.0/24", **on)
        assert " ad" in w.dns.log(), w.dns.log()
    finally:
        w.cleanup(keep=False)
    print("trusted ok")


@test
def ad_from_a_remote_resolver_needs_dnssec_trusted_servers():
    # A fresh network namespace: the test never touches the host's addresses.
    r = subprocess.run(["unshare", "-n", sys.executable, __file__, "--trusted-inner"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "trusted ok" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


if __name__ == "__main__":
    if sys.argv[1:] == ["--trusted-inner"]:
        trusted_servers_inside_a_namespace()
        sys.exit(0)
    main()
