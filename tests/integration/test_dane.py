"""DANE for SMTP (RFC 7672) end to end on loopback: sluice with
`outbound_tls = dane` (or `dane-only`) and `dnssec = trust-ad` resolves
through fakedns, which sets AD for the signed zone dane.test (as a local
validating resolver would) and serves TLSA records made for each test's
certificates; the MX hosts are scripted SMTP servers with STARTTLS and a
chain of leaf + intermediate under a test root that sluice does not
trust (so only DANE can authenticate them).

Address plan: 127.0.0.1 sluice and fakedns; 127.0.0.31-.45 the MX hosts,
one per case, all on the test's delivery port.  Each attempt's
`security` and `security_why` columns and its log line say what the TLS
proved."""
import os
import re
import subprocess
import sys

import dkim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import certs  # noqa: E402
import mxtest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from mxtest import send, wait_messages, wait_state  # noqa: E402
from policyserver import PolicyServer  # noqa: E402
from sluicetest import BIN, Server, free_port, main, poll_until, test  # noqa: E402

TLS_WAIT = 15
ZEROS = "00" * 32

_pki = None


def pki():
    global _pki
    if _pki is None:
        _pki = certs.DanePKI()
    return _pki


class World:
    """An Env whose DNS is made for its port: cases are (name, address,
    certificate or None for no STARTTLS, TLSA lines, secure)."""

    def __init__(self, env, cases, extra_zone="", servfail=()):
        self.env = env
        port = env.port
        lines = ["$TTL 300"]
        for name, addr, _, tlsa, secure in cases:
            zone = "dane.test" if secure else "plain.test"
            host = "mx-%s.%s" % (name, zone)
            lines.append("%s.%s. IN MX 10 %s." % (name, zone, host))
            lines.append("%s. IN A %s" % (host, addr))
            for t in tlsa:
                lines.append("_%d._tcp.%s. IN TLSA %s" % (port, host, t))
        lines.append(extra_zone % {"port": port})
        self.dns = FakeDNS("\n".join(lines) + "\n", secure=["dane.test"],
                           servfail=[s % {"port": port} for s in servfail])
        env.dns_server = self.dns.server
        self.mx = {}
        for name, addr, chain, _, _ in cases:
            self.mx[name] = env.scripted(addr, tls=chain)

    def stop(self):
        self.dns.stop()


def attempt(srv, qid):
    rows = srv.query("select security, security_why, mx_host, status, reply from attempts "
                     "where msg_id = ? order by id", (qid,))
    assert rows, "no attempt of %s" % qid
    return rows


@test
def dane_ee_and_ta_authenticate_and_mismatches_defer():
    """3 1 1 matching the leaf: delivered as dane, SNI sent.  A 3 1 1
    that matches nothing: deferred, no mail sent.  2 0 1 on the
    intermediate with the MX name in the leaf: dane.  2 0 1 with a leaf
    for another name: deferred (DANE-TA checks the name).  An expired
    leaf: fine for 3 1 1 (no expiry check), refused for 2 0 1.  Only
    PKIX usages (0/1): encryption without authentication.  A 3 1 2
    beside a 3 1 1 outranks it: a matching 3 1 1 no longer counts, a
    matching 3 1 2 does."""
    p = pki()
    inter = certs.der_sha256(p.inter)
    with mxtest.Env(None) as env:
        leaf = {n: p.leaf("mx-%s.dane.test" % n) for n in ("ee", "bad", "ta", "unusable", "agile", "agile2")}
        other = p.leaf("somewhere.else.test")
        old_ee = p.leaf("mx-oldee.dane.test", expired=True)
        old_ta = p.leaf("mx-oldta.dane.test", expired=True)
        cases = [
            ("ee", "127.0.0.31", leaf["ee"], ["3 1 1 " + certs.spki_sha256(leaf["ee"][0])], True),
            ("bad", "127.0.0.32", leaf["bad"], ["3 1 1 " + ZEROS], True),
            ("ta", "127.0.0.33", leaf["ta"], ["2 0 1 " + inter], True),
            ("taname", "127.0.0.34", other, ["2 0 1 " + inter], True),
            ("oldee", "127.0.0.35", old_ee, ["3 1 1 " + certs.spki_sha256(old_ee[0])], True),
            ("oldta", "127.0.0.36", old_ta, ["2 0 1 " + inter], True),
            ("unusable", "127.0.0.37", leaf["unusable"],
             ["1 1 1 " + certs.spki_sha256(leaf["unusable"][0]), "0 0 1 " + inter], True),
            # Digest agility: a SHA-512 record of the same usage and
            # selector outranks the SHA-256 one, which is then ignored.
            ("agile", "127.0.0.75", leaf["agile"],
             ["3 1 1 " + certs.spki_sha256(leaf["agile"][0]), "3 1 2 " + ZEROS * 2], True),
            ("agile2", "127.0.0.76", leaf["agile2"],
             ["3 1 1 " + ZEROS, "3 1 2 " + certs.spki_sha256(leaf["agile2"][0], "sha512")], True),
        ]
        w = World(env, cases)
        try:
            srv = env.server(outbound_tls="dane", dnssec="trust-ad")
            ids = {n: send(srv, ["u@%s.dane.test" % n]) for n, *_ in cases}
            for n in ("ee", "ta", "oldee", "unusable", "agile2"):
                wait_state(srv, ids[n], "u@%s.dane.test" % n, "delivered", timeout=TLS_WAIT)
            for n in ("bad", "taname", "oldta", "agile"):
                st, _, last = wait_state(srv, ids[n], "u@%s.dane.test" % n, "deferred",
                                         timeout=TLS_WAIT)
                assert last.startswith("4.7.5 ") and "DANE authentication failed" in last, \
                    (n, last)
                assert w.mx[n].messages == [], (n, w.mx[n].messages)
                assert w.mx[n].tls_sessions >= 1, n
            assert attempt(srv, ids["ee"])[0][:3] == ("dane", "DANE-EE 3 1 1", "mx-ee.dane.test")
            assert attempt(srv, ids["ta"])[0][:2] == ("dane", "DANE-TA 2 0 1")
            assert attempt(srv, ids["oldee"])[0][:2] == ("dane", "DANE-EE 3 1 1")
            assert attempt(srv, ids["agile2"])[0][:2] == ("dane", "DANE-EE 3 1 2")
            assert "matches no TLSA record" in rcpt_reply(srv, ids["agile"])
            assert attempt(srv, ids["unusable"])[0][:2] == \
                ("encrypted", "TLSA records, none usable: encryption required")
            assert "matches no TLSA record" in rcpt_reply(srv, ids["bad"])
            assert "matches neither mx-taname.dane.test nor taname.dane.test" in \
                rcpt_reply(srv, ids["taname"]), rcpt_reply(srv, ids["taname"])
            assert "does not verify to the DANE-TA anchor" in rcpt_reply(srv, ids["oldta"])
            assert w.mx["ee"].sni == ["mx-ee.dane.test"], w.mx["ee"].sni
            shown = subprocess.run([BIN, "queue", "show", ids["ee"], "-c", srv.cfgpath],
                                   capture_output=True, text=True, timeout=30).stdout
            assert "security=dane (DANE-EE 3 1 1)" in shown, shown
            assert srv.query("select security from attempts_log where id = ?",
                             (ids["ee"],)) == [("dane",)]
            srv.wait_log(r"id=%s rcpt=<u@ee\.dane\.test> relay=mx-ee\.dane\.test\[127\.0\.0\.31\]"
                         r":\d+ tls=dane \(DANE-EE 3 1 1\) delay=" % ids["ee"])
        finally:
            w.stop()


def rcpt_reply(srv, qid):
    return srv.query("select last_reply from recipients where msg_id = ?", (qid,))[0][0]


@test
def tlsa_failure_defers_insecure_host_is_not_asked_and_next_mx_is_tried():
    """A TLSA lookup that fails (SERVFAIL) defers the host, never
    plaintext; a host whose address is not secure gets no TLSA question
    and plain opportunistic TLS (may); an MX with usable TLSA records that
    does not offer STARTTLS is skipped for the next MX."""
    p = pki()
    with mxtest.Env(None) as env:
        good = p.leaf("mx-nextmx2.dane.test")
        cases = [
            ("fail", "127.0.0.38", p.leaf("mx-fail.dane.test"), [], True),
            ("open", "127.0.0.39", p.leaf("mx-open.plain.test"), ["3 1 1 " + ZEROS], False),
            ("nextmx", "127.0.0.40", None, ["3 1 1 " + ZEROS], True),
        ]
        extra = ("nextmx.dane.test. IN MX 20 mx-nextmx2.dane.test.\n"
                 "mx-nextmx2.dane.test. IN A 127.0.0.41\n"
                 "_%(port)d._tcp.mx-nextmx2.dane.test. IN TLSA 3 1 1 " +
                 certs.spki_sha256(good[0]) + "\n")
        w = World(env, cases, extra, servfail=["_%(port)d._tcp.mx-fail.dane.test"])
        try:
            mx2 = env.scripted("127.0.0.41", tls=good)
            srv = env.server(outbound_tls="dane", dnssec="trust-ad")
            fail = send(srv, ["u@fail.dane.test"])
            open_ = send(srv, ["u@open.plain.test"])
            nxt = send(srv, ["u@nextmx.dane.test"])
            st, _, last = wait_state(srv, fail, "u@fail.dane.test", "deferred", timeout=TLS_WAIT)
            assert last.startswith("4.7.5 TLSA lookup error for mx-fail.dane.test"), last
            assert w.mx["fail"].connections == 0
            wait_state(srv, open_, "u@open.plain.test", "delivered", timeout=TLS_WAIT)
            assert attempt(srv, open_)[0][:2] == \
                ("encrypted", "address not DNSSEC-secure: no TLSA lookup")
            assert "_tcp.mx-open.plain.test" not in w.dns.log(), w.dns.log()
            wait_state(srv, nxt, "u@nextmx.dane.test", "delivered", timeout=TLS_WAIT)
            assert w.mx["nextmx"].messages == [] and w.mx["nextmx"].connections >= 1
            wait_messages(mx2, 1)
            assert attempt(srv, nxt)[-1][:3] == ("dane", "DANE-EE 3 1 1", "mx-nextmx2.dane.test")
            srv.wait_log(r"mx-nextmx\.dane\.test\S* does not offer STARTTLS, which its TLSA "
                         r"records \(DANE\) require")
        finally:
            w.stop()


@test
def dane_only_defers_without_usable_records_and_config_needs_dnssec():
    """dane-only: a host without secure TLSA records is deferred, one with
    usable records delivers; outbound_tls = dane without dnssec =
    trust-ad is a configuration error."""
    p = pki()
    with mxtest.Env(None) as env:
        ok = p.leaf("mx-strict.dane.test")
        cases = [
            ("strict", "127.0.0.42", ok, ["3 1 1 " + certs.spki_sha256(ok[0])], True),
            ("none", "127.0.0.43", p.leaf("mx-none.dane.test"), [], True),
            ("lax", "127.0.0.44", p.leaf("mx-lax.plain.test"), [], False),
        ]
        w = World(env, cases)
        try:
            srv = env.server(outbound_tls="dane-only", dnssec="trust-ad")
            a = send(srv, ["u@strict.dane.test"])
            b = send(srv, ["u@none.dane.test"])
            c = send(srv, ["u@lax.plain.test"])
            wait_state(srv, a, "u@strict.dane.test", "delivered", timeout=TLS_WAIT)
            for qid, rcpt, why in ((b, "u@none.dane.test", "no secure TLSA records"),
                                   (c, "u@lax.plain.test", "address not DNSSEC-secure")):
                st, _, last = wait_state(srv, qid, rcpt, "deferred", timeout=TLS_WAIT)
                assert last.startswith("4.7.5 ") and why in last and "dane-only" in last, last
            assert w.mx["none"].connections == 0 and w.mx["lax"].connections == 0
            bad = Server(config=env.config(outbound_tls="dane"), start=False)
            bad.write_config()
            r = subprocess.run([BIN, "check-config", "-c", bad.cfgpath], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 1 and \
                "outbound_tls = dane needs dnssec = trust-ad" in r.stderr, r
        finally:
            w.stop()


@test
def tls_policy_sets_the_level_per_destination():
    """tls_policy overrides outbound_tls per destination: a domain with
    dane is authenticated by its TLSA records while another domain's
    mismatching records are not even looked at (may); encrypt defers a
    domain whose MX lacks STARTTLS; ".domain" covers subdomains (none:
    no STARTTLS at all).  A DANE level without dnssec, and an unknown
    level, are configuration errors."""
    p = pki()
    with mxtest.Env(None) as env:
        ee = p.leaf("mx-pee.dane.test")
        cases = [
            ("pee", "127.0.0.46", ee, ["3 1 1 " + certs.spki_sha256(ee[0])], True),
            ("pbad", "127.0.0.47", p.leaf("mx-pbad.dane.test"), ["3 1 1 " + ZEROS], True),
            ("nostls", "127.0.0.48", None, [], False),
            ("x.sub", "127.0.0.49", p.leaf("mx-x.sub.plain.test"), [], False),
        ]
        # same.plain.test shares pee's MX host, so its site, without a policy.
        w = World(env, cases, "same.plain.test. IN MX 10 mx-pee.dane.test.\n")
        try:
            srv = env.server(dnssec="trust-ad", delivery_threads=1,
                             tls_policy="pee.dane.test:dane, nostls.plain.test:encrypt, "
                             ".sub.plain.test:none")
            ids = {n: send(srv, ["u@%s.%s.test" % (n, "dane" if sec else "plain")])
                   for n, _, _, _, sec in cases}
            wait_state(srv, ids["pee"], "u@pee.dane.test", "delivered", timeout=TLS_WAIT)
            wait_state(srv, ids["pbad"], "u@pbad.dane.test", "delivered", timeout=TLS_WAIT)
            wait_state(srv, ids["x.sub"], "u@x.sub.plain.test", "delivered", timeout=TLS_WAIT)
            st, _, last = wait_state(srv, ids["nostls"], "u@nostls.plain.test", "deferred",
                                     timeout=TLS_WAIT)
            assert "does not offer STARTTLS, which the TLS policy requires" in last, last
            assert attempt(srv, ids["pee"])[0][:2] == ("dane", "DANE-EE 3 1 1")
            assert attempt(srv, ids["pbad"])[0][:2] == ("encrypted", None)
            assert attempt(srv, ids["x.sub"])[0][:2] == ("none", None)
            assert w.mx["x.sub"].tls_sessions == 0
            assert "_tcp.mx-pbad.dane.test" not in w.dns.log()
            # A connection kept after mail under one level never carries
            # mail of another to the same site.
            before = w.mx["pee"].connections
            lax = send(srv, ["v@same.plain.test"])
            wait_state(srv, lax, "v@same.plain.test", "delivered", timeout=TLS_WAIT)
            again = send(srv, ["v@pee.dane.test"])
            wait_state(srv, again, "v@pee.dane.test", "delivered", timeout=TLS_WAIT)
            assert attempt(srv, lax)[0][0] == "encrypted"
            assert attempt(srv, again)[0][:2] == ("dane", "DANE-EE 3 1 1")
            assert w.mx["pee"].connections == before + 2, (before, w.mx["pee"].connections)
            for policy, err in (("bank.test:dane-only",
                                 "tls_policy bank.test:dane-only needs dnssec = trust-ad"),
                                ("bank.test:secure", 'bad level "secure" in tls_policy'),
                                ("[bank.test:verify", 'bad destination "[bank.test" in '
                                                      'tls_policy')):
                bad = Server(config=env.config(tls_policy=policy), start=False)
                bad.write_config()
                r = subprocess.run([BIN, "check-config", "-c", bad.cfgpath],
                                   capture_output=True, text=True, timeout=30)
                assert r.returncode == 1 and err in r.stderr, (policy, r)
        finally:
            w.stop()


@test
def tlsa_at_a_cname_target_first_then_at_the_mx_name():
    """An MX name that is a CNAME (secure chain): TLSA is asked at the
    name it leads to first, which is then the SNI and a DANE-TA reference
    name; without records there, at the MX name (RFC 7672 section
    2.2.2)."""
    p = pki()
    inter = certs.der_sha256(p.inter)
    with mxtest.Env(None) as env:
        real = p.leaf("real-cn.dane.test")
        other = p.leaf("real-cn2.dane.test")
        zone = ("cn.dane.test. IN MX 10 mx-cn.dane.test.\n"
                "mx-cn.dane.test. IN CNAME real-cn.dane.test.\n"
                "real-cn.dane.test. IN A 127.0.0.58\n"
                "_%(port)d._tcp.real-cn.dane.test. IN TLSA 2 0 1 " + inter + "\n"
                "cn2.dane.test. IN MX 10 mx-cn2.dane.test.\n"
                "mx-cn2.dane.test. IN CNAME real-cn2.dane.test.\n"
                "real-cn2.dane.test. IN A 127.0.0.59\n"
                "_%(port)d._tcp.mx-cn2.dane.test. IN TLSA 3 1 1 " +
                certs.spki_sha256(other[0]) + "\n")
        w = World(env, [], zone)
        try:
            mx1 = env.scripted("127.0.0.58", tls=real)
            mx2 = env.scripted("127.0.0.59", tls=other)
            srv = env.server(outbound_tls="dane", dnssec="trust-ad")
            a = send(srv, ["u@cn.dane.test"])
            b = send(srv, ["u@cn2.dane.test"])
            wait_state(srv, a, "u@cn.dane.test", "delivered", timeout=TLS_WAIT)
            wait_state(srv, b, "u@cn2.dane.test", "delivered", timeout=TLS_WAIT)
            assert attempt(srv, a)[0][:2] == ("dane", "DANE-TA 2 0 1")
            assert attempt(srv, b)[0][:2] == ("dane", "DANE-EE 3 1 1")
            assert mx1.sni == ["real-cn.dane.test"], mx1.sni
            assert mx2.sni == ["mx-cn2.dane.test"], mx2.sni
        finally:
            w.stop()


@test
def tlsrpt_results_are_recorded_and_reported():
    """With tlsrpt = yes, each TLS session to a domain that publishes
    _smtp._tls is counted by policy and result, and `sluice tlsrpt show`
    prints that day's report per domain: a DANE success, a DANE failure
    (tlsa-invalid, with the addresses and MX), a session without a policy;
    a domain without a TLS-RPT record gets no report."""
    import json
    import time as _time
    p = pki()
    with mxtest.Env(None) as env:
        ree = p.leaf("mx-ree.dane.test")
        cases = [
            ("ree", "127.0.0.50", ree, ["3 1 1 " + certs.spki_sha256(ree[0])], True),
            ("rbad", "127.0.0.51", p.leaf("mx-rbad.dane.test"), ["3 1 1 " + ZEROS], True),
            ("rplain", "127.0.0.52", p.leaf("someone.else.test"), [], False),
            ("rquiet", "127.0.0.53", p.leaf("mx-rquiet.dane.test"),
             ["3 1 1 " + ZEROS], True),
        ]
        hport = free_port()
        extra = "".join('_smtp._tls.%s. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,'
                        'https://tlsrpt.reports.test:%d/v1/"\n' % (d, hport)
                        for d in ("ree.dane.test", "rbad.dane.test", "rplain.plain.test"))
        extra += ("reports.test. IN MX 10 mx.reports.test.\n"
                  "mx.reports.test. IN A 127.0.0.54\n"
                  "tlsrpt.reports.test. IN A 127.0.0.55\n")
        w = World(env, cases, extra)
        inbox = env.scripted("127.0.0.54")
        poster = PolicyServer("127.0.0.55", hport, *p.leaf("tlsrpt.reports.test"))
        try:
            # The reports are DKIM-signed with the hostname's key.
            keyfile = os.path.join(env.tmp, "relay.key")
            k = subprocess.run([BIN, "dkim", "keygen", "relay.test", "s", "--key", keyfile,
                                "--ed25519"], capture_output=True, text=True, timeout=60)
            assert k.returncode == 0, k
            txt = "".join(re.findall(r'"([^"]*)"', k.stdout))
            srv = env.server(outbound_tls="dane", dnssec="trust-ad", tlsrpt="yes",
                             tlsrpt_organization="Test Org", retry_schedule="30s",
                             tls_ca_file=p.root, dkim_keys="relay.test:s:" + keyfile)
            ids = {n: send(srv, ["u@%s.%s.test" % (n, "dane" if sec else "plain")])
                   for n, _, _, _, sec in cases}
            wait_state(srv, ids["ree"], "u@ree.dane.test", "delivered", timeout=TLS_WAIT)
            wait_state(srv, ids["rplain"], "u@rplain.plain.test", "delivered",
                       timeout=TLS_WAIT)
            wait_state(srv, ids["rbad"], "u@rbad.dane.test", "deferred", timeout=TLS_WAIT)
            wait_state(srv, ids["rquiet"], "u@rquiet.dane.test", "deferred", timeout=TLS_WAIT)
            today = _time.strftime("%Y-%m-%d", _time.gmtime())
            r = subprocess.run([BIN, "tlsrpt", "show", "--date", today, "-c", srv.cfgpath],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r
            reports = {json.loads(line)["policies"][0]["policy"]["policy-domain"]:
                       json.loads(line) for line in r.stdout.splitlines()}
            assert sorted(reports) == ["rbad.dane.test", "ree.dane.test",
                                       "rplain.plain.test"], r.stdout
            rep = reports["ree.dane.test"]
            assert rep["organization-name"] == "Test Org"
            assert rep["contact-info"] == "postmaster@relay.test"
            assert rep["date-range"] == {"start-datetime": today + "T00:00:00Z",
                                         "end-datetime": today + "T23:59:59Z"}
            assert rep["policies"] == [{
                "policy": {"policy-type": "tlsa",
                           "policy-string": ["3 1 1 " + certs.spki_sha256(ree[0])],
                           "policy-domain": "ree.dane.test"},
                "summary": {"total-successful-session-count": 1,
                            "total-failure-session-count": 0},
                "failure-details": []}], rep
            bad = reports["rbad.dane.test"]["policies"][0]
            assert bad["summary"]["total-successful-session-count"] == 0
            assert bad["summary"]["total-failure-session-count"] >= 1
            d = bad["failure-details"][0]
            assert (d["result-type"], d["receiving-mx-hostname"], d["receiving-ip"],
                    d["sending-mta-ip"]) == ("tlsa-invalid", "mx-rbad.dane.test",
                                             "127.0.0.51", "127.0.0.1"), d
            plain = reports["rplain.plain.test"]["policies"][0]
            assert plain["policy"]["policy-type"] == "no-policy-found", plain
            assert plain["summary"]["total-successful-session-count"] == 1, plain
            assert srv.query("select count(*) from tlsrpt_results where policy_domain = "
                             "'rquiet.dane.test'") == [(0,)]
            # Sent: one mail per domain (gzipped JSON, TLS-Required: No,
            # a null sender) to the mailto: address, and POSTed.
            r = subprocess.run([BIN, "tlsrpt", "send", "--date", today, "-c", srv.cfgpath],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r
            got = mxtest.wait_messages(inbox, 3, timeout=TLS_WAIT)
            import email
            import gzip
            mailed = {}
            for sender, rcpts, data in inbox.envelopes:
                assert sender == "" and rcpts == ["tlsrpt@reports.test"], (sender, rcpts)
                msg = email.message_from_bytes(data)
                assert msg["TLS-Required"] == "No", msg
                assert dkim.verify(data, dnsfunc=lambda name, timeout=5: txt.encode()
                                   if name == b"s._domainkey.relay.test." else None), data[:600]
                # RFC 8460 wants the report's own fields under the signature.
                sig = dkim.util.parse_tag_value(
                    b"".join(msg["DKIM-Signature"].encode().split()))
                signed = sig[b"h"].lower().split(b":")
                for field in (b"tls-report-domain", b"tls-report-submitter",
                              b"tls-required", b"subject", b"from"):
                    assert field in signed, (field, signed)
                assert msg.get_content_type() == "multipart/report"
                assert msg.get_param("report-type") == "tlsrpt"
                part = msg.get_payload()[1]
                assert part.get_content_type() == "application/tlsrpt+gzip"
                body = json.loads(gzip.decompress(part.get_payload(decode=True)))
                mailed[msg["TLS-Report-Domain"]] = body
                assert msg["Subject"].startswith("Report Domain: %s Submitter: relay.test "
                                                 "Report-ID: <" % msg["TLS-Report-Domain"])
            assert mailed == reports, (mailed, reports)
            assert len(got) == 3
            posted = {json.loads(gzip.decompress(b))["policies"][0]["policy"]["policy-domain"]:
                      (h, path, ct) for h, path, ct, b in poster.posts}
            assert posted == {d: ("tlsrpt.reports.test", "/v1/", "application/tlsrpt+gzip")
                              for d in reports}, posted
        finally:
            poster.stop()
            w.stop()


@test
def tlsrpt_daily_send_goes_once():
    """With tlsrpt = yes the server sends yesterday's reports on its own,
    tlsrpt_send_after past midnight UTC, by the path of `sluice tlsrpt
    send`, and notes the day in tlsrpt_sent so that a restart does not
    send them again."""
    import gzip
    import json
    import sqlite3
    import time as _time
    p = pki()
    with mxtest.Env(None) as env:
        hport = free_port()
        zone = ('_smtp._tls.day.dane.test. IN TXT "v=TLSRPTv1; '
                'rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test:%d/r"\n'
                "reports.test. IN MX 10 mx.reports.test.\n"
                "mx.reports.test. IN A 127.0.0.56\n"
                "tlsrpt.reports.test. IN A 127.0.0.57\n") % hport
        w = World(env, [], zone)
        inbox = env.scripted("127.0.0.56")
        poster = PolicyServer("127.0.0.57", hport, *p.leaf("tlsrpt.reports.test"))
        try:
            srv = env.server(tls_ca_file=p.root)
            srv.stop()
            now = int(_time.time())
            yesterday = now - now % 86400 - 86400
            con = sqlite3.connect(srv.db)
            con.executemany(
                "insert into tlsrpt_results (day, policy_domain, policy_type, mx_host, "
                "result_type, receiving_ip, count) values (?, 'day.dane.test', "
                "'no-policy-found', 'mx.day.dane.test', ?, '192.0.2.9', ?)",
                [(yesterday, "", 5), (yesterday, "starttls-not-supported", 2)])
            con.commit()
            con.close()
            srv.config.update({"tlsrpt": "yes", "tlsrpt_send_after": "0s",
                               "mta_sts_refresh": "1s"})
            srv.start()
            mxtest.wait_messages(inbox, 1, timeout=TLS_WAIT)
            poll_until(lambda: poster.posts or None, TLS_WAIT, "the POST")
            for body in (poster.posts[0][3],):
                rep = json.loads(gzip.decompress(body))
                pol = rep["policies"][0]
                assert pol["summary"] == {"total-successful-session-count": 5,
                                          "total-failure-session-count": 2}, rep
                assert pol["failure-details"][0]["result-type"] == "starttls-not-supported"
            assert srv.query("select day from tlsrpt_sent") == [(yesterday,)]
            srv.wait_log(r"tlsrpt: the reports of %d \(1 domain\) sent" % yesterday)
            srv.stop()
            srv.start()
            _time.sleep(2.5)
            assert len(inbox.messages) == 1 and len(poster.posts) == 1
        finally:
            poster.stop()
            w.stop()


if __name__ == "__main__":
    main()
