"""REQUIRETLS (RFC 8689) end to end on loopback, through two sluice
instances: a client hands sluice A a message with MAIL FROM ...
REQUIRETLS over STARTTLS; A finds the recipient's MX by a DNSSEC-secure
answer (fakedns sets AD for the signed zone rt.test) and delivers it to
sluice B, the MX, over TLS verified against the test root, with the
parameter; B stores it as a REQUIRETLS message.  Towards a next hop that
does not offer REQUIRETLS, or an MX found insecurely, the message comes
back (5.7.30, 5.7.10) with a notice that holds its header only; a
"TLS-Required: No" field lets a message through where DANE would stop it.

Address plan: 127.0.0.1 sluice A and fakedns; 127.0.0.71 sluice B (MX of
ok.rt.test); 127.0.0.72 a scripted MX without REQUIRETLS; 127.0.0.73 a
scripted MX whose TLSA record does not match."""
import os
import smtplib
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import certs  # noqa: E402
import mxtest  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from mxtest import wait_state  # noqa: E402
from sluicetest import Server, main, poll_until, test  # noqa: E402

TLS_WAIT = 15


def submit(srv, rcpt, requiretls=True, starttls=True, header=""):
    """A message to `rcpt` through sluice `srv` with smtplib; returns the
    queue ID from the 250 reply (or the SMTPException)."""
    c = smtplib.SMTP(srv.host, srv.port, timeout=20)
    try:
        c.ehlo("client.test")
        if starttls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c.starttls(context=ctx)
            c.ehlo("client.test")
        c.mail("sender@snd.rt.test", ["REQUIRETLS"] if requiretls else [])
        c.rcpt(rcpt)
        code, msg = c.data(("From: <sender@snd.rt.test>\r\nSubject: secret\r\n%s\r\n"
                            "the body, which a notice must not return\r\n") % header)
        assert code == 250, (code, msg)
        return msg.decode().split()[-1]
    finally:
        c.close()


@test
def requiretls_end_to_end_and_refused_without_it():
    p = certs.DanePKI()
    with mxtest.Env(None) as env:
        b_chain, b_key = p.leaf("mx.ok.rt.test")
        b = Server(host="127.0.0.71", config={
            "tls_cert": b_chain, "tls_key": b_key, "relay_domains": "ok.rt.test"})
        env.port = b.port  # every MX on B's port
        plain = p.leaf("mx.plain.rt.test")
        bad = p.leaf("mx.dane.rt.test")
        zone = "\n".join([
            "$TTL 300",
            "ok.rt.test. IN MX 10 mx.ok.rt.test.",
            "mx.ok.rt.test. IN A 127.0.0.71",
            "plain.rt.test. IN MX 10 mx.plain.rt.test.",
            "mx.plain.rt.test. IN A 127.0.0.72",
            "insecure.test. IN MX 10 mx.ok.rt.test.",
            "dane.rt.test. IN MX 10 mx.dane.rt.test.",
            "mx.dane.rt.test. IN A 127.0.0.73",
            "_%d._tcp.mx.dane.rt.test. IN TLSA 3 1 1 %s" % (b.port, "00" * 32),
            "snd.rt.test. IN MX 10 mx.snd.rt.test.",
            "mx.snd.rt.test. IN A 127.0.0.74",
        ]) + "\n"
        dns = FakeDNS(zone, secure=["rt.test"])
        env.dns_server = dns.server
        try:
            no_rt = env.scripted("127.0.0.72", tls=plain, ehlo=("SIZE", "8BITMIME"))
            danemx = env.scripted("127.0.0.73", tls=bad)
            # The sender's MX, where notices go (with REQUIRETLS).
            home = env.scripted("127.0.0.74", tls=p.leaf("mx.snd.rt.test"),
                                ehlo=("SIZE", "8BITMIME", "REQUIRETLS"))
            a = env.server(dnssec="trust-ad", outbound_tls="dane", tls_ca_file=p.root,
                           delivery_threads=1)
            # Not under TLS: the parameter is not known.
            c = smtplib.SMTP(a.host, a.port, timeout=20)
            c.ehlo("client.test")
            assert not c.has_extn("requiretls")
            code, msg = c.mail("sender@client.test", ["REQUIRETLS"])
            assert code == 555 and b"REQUIRETLS" in msg, (code, msg)
            c.close()
            # Through A to B, with REQUIRETLS all the way.
            qid = submit(a, "u@ok.rt.test")
            wait_state(a, qid, "u@ok.rt.test", "delivered", timeout=TLS_WAIT)
            assert a.query("select requiretls from messages where id = ?", (qid,)) == [(1,)]
            att = a.query("select security from attempts where msg_id = ?", (qid,))
            assert att == [("verified",)], att
            rows = poll_until(lambda: b.query("select requiretls, protocol from messages")
                              or None, 10, "the message at B")
            assert rows == [(1, "ESMTPS")], rows
            # A next hop without REQUIRETLS: returned, 5.7.30.
            q2 = submit(a, "v@plain.rt.test")
            st, _, last = wait_state(a, q2, "v@plain.rt.test", "bounced", timeout=TLS_WAIT)
            assert last.startswith("5.7.30 REQUIRETLS support required: mx.plain.rt.test"), last
            assert no_rt.messages == [] and no_rt.tls_sessions >= 1
            # An MX found without DNSSEC: returned, 5.7.10.
            q3 = submit(a, "w@insecure.test")
            st, _, last = wait_state(a, q3, "w@insecure.test", "bounced", timeout=TLS_WAIT)
            assert last.startswith("5.7.10 REQUIRETLS: the MX records of insecure.test are "
                                   "not DNSSEC-secure"), last
            # The notices: header only, themselves sent with REQUIRETLS.
            mxtest.wait_messages(home, 2, timeout=TLS_WAIT)
            for (sender, rcpts, data) in home.envelopes:
                assert sender == "" and rcpts == ["sender@snd.rt.test"], (sender, rcpts)
                assert b"text/rfc822-headers" in data and b"Subject: secret" in data, data
                assert b"which a notice must not return" not in data, data
            mails = [c for c in home.commands if c.upper().startswith("MAIL")]
            assert len(mails) == 2 and all(m.upper().endswith(" REQUIRETLS") for m in mails), \
                mails
            # "TLS-Required: No": delivered where DANE would defer it.
            q4 = submit(a, "x@dane.rt.test", requiretls=False, header="TLS-Required: No\r\n")
            wait_state(a, q4, "x@dane.rt.test", "delivered", timeout=TLS_WAIT)
            # The connection kept after it (one delivery thread) does not
            # carry mail that did not waive the policy.
            q5 = submit(a, "y@dane.rt.test", requiretls=False)
            st, _, last = wait_state(a, q5, "y@dane.rt.test", "deferred", timeout=TLS_WAIT)
            assert "DANE authentication failed" in last, last
            assert a.query("select tls_required_no from messages where id = ?", (q4,)) == [(1,)]
            assert len(danemx.messages) == 1
        finally:
            dns.stop()


if __name__ == "__main__":
    main()
