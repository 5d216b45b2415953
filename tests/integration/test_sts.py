"""MTA-STS (RFC 8461) end to end on loopback: the _mta-sts TXT records and
the mta-sts.DOMAIN addresses come from fakedns, the policies from an
HTTPS server in this process (tests/lib/policyserver.py, on
mta_sts_port), the MX hosts are scripted SMTP servers with STARTTLS.  The
policy server's and the good MX hosts' certificates chain to the test
root that tls_ca_file names.

Address plan: 127.0.0.1 sluice and fakedns; 127.0.0.60 the policy
server, 127.0.0.61 a policy server with a certificate for another name;
127.0.0.62-.69 the MX hosts, all on the test's delivery port."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import certs  # noqa: E402
import mxtest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from mxtest import send, wait_state  # noqa: E402
from policyserver import PolicyServer  # noqa: E402
from sluicetest import BIN, free_port, main, poll_until, test  # noqa: E402

TLS_WAIT = 15


def policy(mode, *mx, max_age=86400):
    return (200, "text/plain; charset=utf-8",
            "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
                mode, "".join("mx: %s\r\n" % m for m in mx), max_age))


def zone(domains, txt_ids):
    """The domains' MX hosts and policy hosts, with TXT records for the
    domains in txt_ids (their ids); a TTL of 1 s."""
    lines = ["$TTL 1"]
    for d, (mxs, pol_addr) in domains.items():
        for pref, (host, addr) in enumerate(mxs):
            lines.append("%s. IN MX %d %s." % (d, 10 * (pref + 1), host))
            lines.append("%s. IN A %s" % (host, addr))
        lines.append("mta-sts.%s. IN A %s" % (d, pol_addr))
        if d in txt_ids:
            lines.append('_mta-sts.%s. IN TXT "v=STSv1; id=%s;"' % (d, txt_ids[d]))
    return "\n".join(lines) + "\n"


DOMAINS = {
    # enforce, its MX listed
    "a.sts.test": ([("mx.a.sts.test", "127.0.0.62")], "127.0.0.60"),
    # enforce, the first MX not listed, the second one listed
    "b.sts.test": ([("rogue.b.sts.test", "127.0.0.63"), ("mx.b.sts.test", "127.0.0.64")],
                   "127.0.0.60"),
    # enforce, the MX presents a certificate for another name
    "c.sts.test": ([("mx.c.sts.test", "127.0.0.65")], "127.0.0.60"),
    # testing, the same kind of MX: delivered
    "d.sts.test": ([("mx.d.sts.test", "127.0.0.66")], "127.0.0.60"),
    # a redirect, text/html, a policy host with a wrong certificate: no policy
    "e.sts.test": ([("mx.e.sts.test", "127.0.0.67")], "127.0.0.60"),
    "f.sts.test": ([("mx.f.sts.test", "127.0.0.67")], "127.0.0.60"),
    "g.sts.test": ([("mx.g.sts.test", "127.0.0.67")], "127.0.0.61"),
}


@test
def mta_sts_enforce_testing_and_bad_policies():
    """enforce: delivered to a listed MX with a verified certificate
    (security sts), an unlisted MX is never contacted, an MX whose
    certificate does not verify defers; testing: delivered anyway; a
    redirect, a text/html policy and a policy host whose certificate does
    not verify leave no policy (plain opportunistic TLS), and the
    policies fetched are in sts_policies."""
    p = certs.DanePKI()
    names = ["mta-sts.%s" % d for d in DOMAINS]
    pol_chain = p.leaf(names[0], also=names[1:])
    wrong = p.leaf("not-the-policy-host.test")
    with mxtest.Env(None) as env:
        dport = free_port()
        ids = {d: "1" for d in DOMAINS}
        dns = FakeDNS(zone(DOMAINS, ids) + "".join(
            '_smtp._tls.%s. IN TXT "v=TLSRPTv1; rua=mailto:r@%s"\n' % (d, d)
            for d in ("a.sts.test", "c.sts.test")))
        env.dns_server = dns.server
        ps = PolicyServer("127.0.0.60", dport, *pol_chain)
        ps2 = PolicyServer("127.0.0.61", dport, *wrong)
        try:
            ps.policies["mta-sts.a.sts.test"] = policy("enforce", "mx.a.sts.test")
            ps.policies["mta-sts.b.sts.test"] = policy("enforce", "*.b.sts.test.x",
                                                       "mx.b.sts.test")
            ps.policies["mta-sts.c.sts.test"] = policy("enforce", "*.c.sts.test")
            ps.policies["mta-sts.d.sts.test"] = policy("testing", "*.d.sts.test")
            ps.policies["mta-sts.e.sts.test"] = (301, "text/plain", "",
                                                 {"Location": "https://elsewhere/"})
            ps.policies["mta-sts.f.sts.test"] = (200, "text/html",
                                                 policy("enforce", "nothing.test")[2])
            mx = {}
            for d, (mxs, _) in DOMAINS.items():
                for host, addr in mxs:
                    if addr in mx:
                        continue
                    cert = (p.leaf(host) if d in ("a.sts.test", "b.sts.test")
                            else p.leaf("someone-else.test"))
                    mx[addr] = env.scripted(addr, tls=cert)
            srv = env.server(mta_sts_port=dport, tls_ca_file=p.root, tlsrpt="yes")
            q = {d: send(srv, ["u@%s" % d]) for d in DOMAINS}
            for d in ("a.sts.test", "b.sts.test", "d.sts.test", "e.sts.test", "f.sts.test",
                      "g.sts.test"):
                wait_state(srv, q[d], "u@%s" % d, "delivered", timeout=TLS_WAIT)
            st, _, last = wait_state(srv, q["c.sts.test"], "u@c.sts.test", "deferred",
                                     timeout=TLS_WAIT)
            assert last.startswith("4.7.5 ") and "TLS handshake failed" in last, last
            sec = {d: srv.query("select security, security_why, mx_host from attempts "
                                "where msg_id = ? order by id desc limit 1", (q[d],))[0]
                   for d in DOMAINS}
            assert sec["a.sts.test"] == ("sts", "MTA-STS enforce, policy id 1",
                                         "mx.a.sts.test"), sec["a.sts.test"]
            assert sec["b.sts.test"][0] == "sts" and sec["b.sts.test"][2] == "mx.b.sts.test"
            assert mx["127.0.0.63"].connections == 0
            assert sec["d.sts.test"] == ("encrypted", "MTA-STS testing, policy id 1",
                                         "mx.d.sts.test"), sec["d.sts.test"]
            for d in ("e.sts.test", "f.sts.test", "g.sts.test"):
                assert sec[d] == ("encrypted", None, "mx.%s" % d), (d, sec[d])
            rows = srv.query("select domain, id, mode, mx, max_age, expires_at - fetched_at "
                             "from sts_policies order by domain")
            assert rows == [("a.sts.test", "1", "enforce", "mx.a.sts.test", 86400, 86400),
                            ("b.sts.test", "1", "enforce", "*.b.sts.test.x\nmx.b.sts.test",
                             86400, 86400),
                            ("c.sts.test", "1", "enforce", "*.c.sts.test", 86400, 86400),
                            ("d.sts.test", "1", "testing", "*.d.sts.test", 86400, 86400)], rows
            log = srv.log()
            assert "MTA-STS policy of e.sts.test: HTTP status 301 (redirects are not " \
                   "followed)" in log, log[-3000:]
            assert 'MTA-STS policy of f.sts.test: Content-Type "text/html", not ' \
                   'text/plain' in log
            assert "MTA-STS policy of g.sts.test: TLS with mta-sts.g.sts.test" in log
            # TLS-RPT: the sessions under the policies, by result.
            import json
            today = time.strftime("%Y-%m-%d", time.gmtime())
            r = subprocess.run([BIN, "tlsrpt", "show", "--date", today, "-c", srv.cfgpath],
                               capture_output=True, text=True, timeout=30)
            reps = {json.loads(x)["policies"][0]["policy"]["policy-domain"]: json.loads(x)
                    for x in r.stdout.splitlines()}
            assert sorted(reps) == ["a.sts.test", "c.sts.test"], r
            pa = reps["a.sts.test"]["policies"][0]
            assert pa["policy"]["policy-type"] == "sts"
            assert pa["policy"]["mx-host"] == ["mx.a.sts.test"]
            assert pa["policy"]["policy-string"] == [
                "version: STSv1", "mode: enforce", "mx: mx.a.sts.test", "max_age: 86400"]
            assert pa["summary"]["total-successful-session-count"] == 1
            pc = reps["c.sts.test"]["policies"][0]
            assert pc["summary"]["total-successful-session-count"] == 0
            assert pc["failure-details"][0]["result-type"] == "certificate-host-mismatch", pc
            assert pc["failure-details"][0]["receiving-mx-hostname"] == "mx.c.sts.test"
            # One fetch per domain, however many messages.
            assert sorted(h for h, _ in ps.requests if h == "mta-sts.a.sts.test") == \
                ["mta-sts.a.sts.test"], ps.requests
        finally:
            ps.stop()
            ps2.stop()
            dns.stop()


@test
def mta_sts_cache_outlives_the_txt_record_and_a_new_id_refetches():
    """A cached policy stays in force when its TXT record disappears (an
    attacker stripping it gains nothing); a new id in the TXT record
    fetches the policy again, and "mode: none" withdraws it."""
    p = certs.DanePKI()
    d = "a.sts.test"
    pol_chain = p.leaf("mta-sts.%s" % d)
    with mxtest.Env(None) as env:
        dport = free_port()
        only_a = {d: DOMAINS[d]}
        dns = FakeDNS(zone(only_a, {d: "1"}))
        env.dns_server = dns.server
        ps = PolicyServer("127.0.0.60", dport, *pol_chain)
        # The MX presents a certificate for another name: under
        # enforce it defers, without a policy it delivers.
        mxs = env.scripted("127.0.0.62", tls=p.leaf("someone-else.test"))
        try:
            ps.policies["mta-sts.%s" % d] = policy("enforce", "mx.a.sts.test")
            srv = env.server(mta_sts_port=dport, tls_ca_file=p.root,
                             retry_schedule="1s")
            first = send(srv, ["u@%s" % d])
            wait_state(srv, first, "u@%s" % d, "deferred", timeout=TLS_WAIT)
            # The TXT record goes: still enforced (deferred again).
            dns.stop()
            dns = FakeDNS(zone(only_a, {}), port=int(env.dns_server.split(":")[1]),
                          negative_ttl=1)
            time.sleep(1.5)  # the resolver cache's TTL (negative ones too)
            n = len(ps.requests)
            done = srv.query("select attempts from recipients")[0][0]
            wait_state(srv, first, "u@%s" % d, "deferred", timeout=TLS_WAIT,
                       attempts=done + 2)
            assert len(ps.requests) == n and mxs.messages == []
            # A new id with mode none: fetched again, the policy is
            # withdrawn, and the mail goes.
            ps.policies["mta-sts.%s" % d] = policy("none")
            dns.stop()
            dns = FakeDNS(zone(only_a, {d: "2"}), port=int(env.dns_server.split(":")[1]))
            wait_state(srv, first, "u@%s" % d, "delivered", timeout=TLS_WAIT)
            assert len(ps.requests) == n + 1
            assert srv.query("select id, mode from sts_policies") == [("2", "none")]
        finally:
            ps.stop()
            dns.stop()


@test
def mta_sts_policies_are_refreshed_before_they_expire():
    """A cached policy close to its end (a quarter of max_age left) is
    fetched again in the background, without mail to the domain: the
    fetch count grows and fetched_at moves while the queue is idle."""
    p = certs.DanePKI()
    d = "a.sts.test"
    only_a = {d: DOMAINS[d]}
    with mxtest.Env(None) as env:
        dport = free_port()
        dns = FakeDNS(zone(only_a, {d: "1"}))
        env.dns_server = dns.server
        ps = PolicyServer("127.0.0.60", dport, *p.leaf("mta-sts.%s" % d))
        mx = env.scripted("127.0.0.62", tls=p.leaf("mx.a.sts.test"))
        try:
            ps.policies["mta-sts.%s" % d] = policy("enforce", "mx.a.sts.test", max_age=8)
            srv = env.server(mta_sts_port=dport, tls_ca_file=p.root, mta_sts_refresh="1s")
            qid = send(srv, ["u@%s" % d])
            wait_state(srv, qid, "u@%s" % d, "delivered", timeout=TLS_WAIT)
            first = srv.query("select fetched_at from sts_policies")[0][0]
            assert len(ps.requests) == 1, ps.requests
            poll_until(lambda: len(ps.requests) >= 2 or None, 15, "a background refresh")
            poll_until(lambda: srv.query("select fetched_at from sts_policies")[0][0] > first
                       or None, 5, "the refreshed row")
            assert len(mx.messages) == 1
        finally:
            ps.stop()
            dns.stop()


@test
def a_kept_connection_does_not_skip_a_domains_policy():
    """Two domains on one MX host (one site): mail to the one without a
    policy leaves a kept connection that is not used for the one with an
    enforce policy, whose mail gets its own verified session."""
    p = certs.DanePKI()
    d = "a.sts.test"
    doms = {d: DOMAINS[d], "h.sts.test": (DOMAINS[d][0], "127.0.0.60")}
    with mxtest.Env(None) as env:
        dport = free_port()
        dns = FakeDNS(zone(doms, {d: "1"}))
        env.dns_server = dns.server
        ps = PolicyServer("127.0.0.60", dport, *p.leaf("mta-sts.%s" % d))
        mx = env.scripted("127.0.0.62", tls=p.leaf("mx.a.sts.test"))
        try:
            ps.policies["mta-sts.%s" % d] = policy("enforce", "mx.a.sts.test")
            srv = env.server(mta_sts_port=dport, tls_ca_file=p.root, delivery_threads=1)
            first = send(srv, ["u@%s" % d])   # the policy is fetched and cached
            wait_state(srv, first, "u@%s" % d, "delivered", timeout=TLS_WAIT)
            lax = send(srv, ["v@h.sts.test"])
            wait_state(srv, lax, "v@h.sts.test", "delivered", timeout=TLS_WAIT)
            strict = send(srv, ["w@%s" % d])
            wait_state(srv, strict, "w@%s" % d, "delivered", timeout=TLS_WAIT)
            sec = lambda q: srv.query("select security from attempts where msg_id = ?",  # noqa
                                      (q,))[0][0]
            assert (sec(first), sec(lax), sec(strict)) == ("sts", "encrypted", "sts")
            assert mx.connections >= 3, mx.connections
        finally:
            ps.stop()
            dns.stop()


if __name__ == "__main__":
    main()
