"""DANE with real DNSSEC end to end (tests/lib/dnssec.py): knotd signs the
zone test., unbound validates it against knotd's key and sets AD, and
sluice with dnssec = trust-ad and outbound_tls = dane asks unbound: the
MX, address and TLSA answers are secure, a host whose TLSA record matches
its certificate gets the mail, one whose record does not is deferred.

Address plan: 127.0.0.1 sluice, knotd and unbound (high ports);
127.0.0.80-.81 the MX hosts on the test's delivery port."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import certs  # noqa: E402
import mxtest  # noqa: E402
from dnssec import SignedZone  # noqa: E402
from mxtest import send, wait_state  # noqa: E402
from sluicetest import BIN, main, test  # noqa: E402


@test
def dane_over_a_validated_signed_zone():
    p = certs.DanePKI()
    with mxtest.Env(None) as env:
        ok = p.leaf("mx.ok.test")
        records = "\n".join([
            "ok IN MX 10 mx.ok",
            "mx.ok IN A 127.0.0.80",
            "_%d._tcp.mx.ok IN TLSA 3 1 1 %s" % (env.port, certs.spki_sha256(ok[0])),
            "bad IN MX 10 mx.bad",
            "mx.bad IN A 127.0.0.81",
            "_%d._tcp.mx.bad IN TLSA 3 1 1 %s" % (env.port, "00" * 32),
        ])
        with SignedZone(records) as z:
            env.dns_server = z.resolver
            good = env.scripted("127.0.0.80", tls=ok)
            bad = env.scripted("127.0.0.81", tls=p.leaf("mx.bad.test"))
            srv = env.server(outbound_tls="dane", dnssec="trust-ad")
            r = subprocess.run([BIN, "resolve", "ok.test", "-c", srv.cfgpath],
                               capture_output=True, text=True, timeout=30)
            assert r.stdout.splitlines() == [
                "mx.ok.test 10 127.0.0.80 %d mx=secure addr=secure" % env.port,
                "  tlsa 3 1 1 %s secure" % certs.spki_sha256(ok[0])], r
            a = send(srv, ["u@ok.test"])
            b = send(srv, ["u@bad.test"])
            wait_state(srv, a, "u@ok.test", "delivered", timeout=20)
            st, _, last = wait_state(srv, b, "u@bad.test", "deferred", timeout=20)
            assert "DANE authentication failed" in last, last
            assert srv.query("select security, security_why from attempts where msg_id = ?",
                             (a,)) == [("dane", "DANE-EE 3 1 1")]
            assert len(good.messages) == 1 and bad.messages == []


if __name__ == "__main__":
    main()
