"""TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with real clients
(smtplib, swaks, gnutls-cli, openssl s_client), the STARTTLS command
injection class of bugs (CVE-2011-0411), protocol versions, handshake
timeouts, the self-signed certificate and certificate reload on SIGHUP."""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import passwd_line, tls_context, tls_server  # noqa: E402
from sluicetest import Server, free_port, main, test  # noqa: E402
import certs  # noqa: E402

# ssl.TLSVersion.TLSv1 / TLSv1_1 are deprecated: we use them on purpose.
warnings.filterwarnings("ignore", category=DeprecationWarning)

PKI = certs.pki()

RECEIVED_TLS_RE = (rb"^Received: from (\S+) \(\[127\.0\.0\.1\]\)\r\n"
                   rb"\t\(using (TLS1\.[23]) with cipher (\S+) \((\d+) bits\)\)\r\n"
                   rb"\tby relay\.test \(sluice\) with (\w+) id (\w{16})\r\n")


def starttls(c, context=None, hostname="relay.test"):
    """STARTTLS on a raw sluicetest Client, then the handshake."""
    c.cmd("STARTTLS", "220 2.0.0")
    assert c.buf == b"", "data after the 220 in plaintext: %r" % c.buf
    c.sock = (context or tls_context()).wrap_socket(c.sock, server_hostname=hostname)
    return c


def last_session_log(srv):
    """The 'disconnect' line of the last session."""
    text = srv.wait_log(r"disconnect from ")
    return re.findall(r"disconnect from .*", text)[-1]


def peer_cert(srv, port=None):
    """(serial, CN) of the certificate a new STARTTLS session sees."""
    with smtplib.SMTP(srv.host, port or srv.port, local_hostname="client.test") as s:
        s.starttls(context=tls_context())
        d = s.sock.getpeercert()
    cn = dict(x[0] for x in d["subject"])["commonName"]
    return int(d["serialNumber"], 16), cn


def smtps_cert(port):
    """(serial, CN) of the certificate a new smtps session sees."""
    with smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", context=tls_context()) as s:
        d = s.sock.getpeercert()
    cn = dict(x[0] for x in d["subject"])["commonName"]
    return int(d["serialNumber"], 16), cn


# -------- STARTTLS and a whole transaction --------

@test
def starttls_smtplib_full_transaction():
    srv = tls_server()
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        s.ehlo()
        assert s.has_extn("starttls"), s.esmtp_features
        code, _ = s.starttls(context=tls_context())
        assert code == 220
        version, (_, _, bits) = s.sock.version(), s.sock.cipher()
        assert version == "TLSv1.3", version
        refused = s.sendmail("a@client.test", ["x@example.net"],
                             b"Subject: tls\r\n\r\nover tls\r\n")
        assert refused == {}
    rows = srv.query("select id, protocol, tls_version, tls_cipher, auth_user from messages")
    assert len(rows) == 1, rows
    qid, proto, tv, tc, au = rows[0]
    assert (proto, tv, au) == ("ESMTPS", "TLS1.3", None), rows
    assert tc and tc != "unknown", tc
    body = srv.body(qid)
    m = re.match(RECEIVED_TLS_RE, body)
    assert m, "no TLS Received header in %r" % body[:400]
    assert b"(using TLS1.3 with cipher " in body
    assert m.group(2).decode() == tv and m.group(3).decode() == tc, m.groups()
    assert int(m.group(4)) == bits, (m.group(4), bits)
    assert m.group(5) == b"ESMTPS" and m.group(6).decode() == qid, m.groups()
    assert body.endswith(b"\r\nSubject: tls\r\n\r\nover tls\r\n"), body
    assert re.search(r"TLS established: TLS1\.3 \S+ \(%d bits\)" % bits, srv.log())
    assert "id=%s from=<a@client.test>" % qid in srv.log()
    assert "proto=ESMTPS" in srv.log()


@test
def starttls_swaks_full_transaction():
    srv = tls_server()
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port),
                        "--tls", "--tls-verify", "--tls-ca-path", PKI.ca,
                        "--ehlo", "swaks.test", "--from", "s@client.test",
                        "--to", "y@example.org", "--header", "Subject: swaks tls",
                        "--body", "hello from swaks"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out[-2000:]
    assert "TLS started" in out, out[-2000:]
    rows = srv.query("select id, protocol, tls_version, tls_cipher, helo from messages")
    assert len(rows) == 1, rows
    qid, proto, tv, tc, helo = rows[0]
    assert proto == "ESMTPS" and tv in ("TLS1.3", "TLS1.2") and tc and helo == "swaks.test", rows
    body = srv.body(qid)
    m = re.match(RECEIVED_TLS_RE, body)
    assert m and m.group(1) == b"swaks.test" and m.group(5) == b"ESMTPS", body[:400]
    assert ("(using %s with cipher %s " % (tv, tc)).encode() in body
    assert b"hello from swaks" in body


# -------- what is advertised, and STARTTLS misuse --------

@test
def ehlo_advertises_starttls_then_auth():
    srv = tls_server(start=False)
    users = os.path.join(srv.dir, "users")
    with open(users, "w") as f:
        f.write(passwd_line("alice", "s3cret pass").decode())
    srv.config["auth_users"] = users
    srv.start()
    c = srv.connect()
    _, text = c.ehlo()
    ext = text.splitlines()
    assert "250-STARTTLS" in ext, text
    assert not any(" AUTH" in l or "-AUTH" in l for l in ext), text
    c.cmd("STARTTLS now", "501 5.5.4")  # no argument allowed (RFC 3207 4)
    c.cmd("NOOP", "250 ")               # still in plaintext, still usable
    starttls(c)
    _, text = c.cmd("EHLO client.test", "250 ")
    ext = [l[4:] for l in text.splitlines()]
    assert "STARTTLS" not in ext, text
    assert "AUTH PLAIN LOGIN" in ext, text
    c.cmd("STARTTLS", "503 5.5.1")      # TLS already active
    c.cmd("NOOP", "250 2.0.0")          # the session goes on over TLS
    c.cmd("QUIT", "221 ")
    assert c.closed()


@test
def no_auth_advertised_without_auth_users():
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    starttls(c)
    _, text = c.cmd("EHLO client.test", "250 ")
    assert "AUTH" not in text, text
    c.cmd("AUTH PLAIN AGFsaWNlAHB3", "502 5.5.1")
    c.cmd("QUIT", "221 ")


def _injection(payload, after):
    """STARTTLS with `payload` pipelined in the same plaintext write."""
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    c.send(b"STARTTLS\r\n" + payload)
    c.reply("220 2.0.0")
    # Nothing else may follow in plaintext; a plaintext reply arriving
    # later would also make the handshake below fail.
    assert c.buf == b"", c.buf
    c.sock = tls_context().wrap_socket(c.sock, server_hostname="relay.test")
    c.send(b"EHLO after.test\r\n")
    code, text = c.reply()
    # The first reply in the TLS stream must be the EHLO's.
    assert code == 250 and text.startswith("250-relay.test\n"), text
    ncmd = 3
    for line, expect in after:
        c.cmd(line, expect)
        ncmd += 1
    c.cmd("QUIT", "221 ")
    ncmd += 1
    assert c.closed()
    assert c.buf == b"", "extra replies in the TLS stream: %r" % c.buf
    # EHLO, STARTTLS, EHLO, the later commands, QUIT: the injected
    # command was never executed.
    line = last_session_log(srv)
    assert "commands=%d " % ncmd in line, line
    for cmd in set(re.findall(rb"^(\w+)", payload, re.M)):
        cmd = cmd.decode()
        ours = [l for l, e in after if l.startswith(cmd) and e[0] in "45"]
        got = re.findall(r'reject: .*command="%s' % cmd, srv.log())
        assert len(got) == len(ours), srv.log()
    return srv


@test
def starttls_injection_rset_discarded():
    _injection(b"RSET\r\n", [])


@test
def starttls_injection_mail_discarded():
    # Had MAIL been run after the handshake, RCPT would be accepted (or the
    # MAIL reply would come before the EHLO's).
    _injection(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@example.net>\r\n",
               [("RCPT TO:<c@example.net>", "503 5.5.1")])


@test
def starttls_resets_session():
    srv = tls_server()
    c = srv.connect()
    c.ehlo("before.test")
    starttls(c)
    # RFC 3207 4.2: knowledge from before TLS is discarded; EHLO again.
    c.cmd("MAIL FROM:<a@client.test>", "503 5.5.1")
    c.cmd("EHLO after.test", "250 ")
    qid = c.mail()
    c.cmd("QUIT", "221 ")
    row = srv.query("select helo, protocol from messages where id=?", (qid,))
    assert row == [("after.test", "ESMTPS")], row
    assert re.match(rb"Received: from after\.test ", srv.body(qid)), srv.body(qid)[:200]


@test
def starttls_mid_transaction_drops_it():
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<x@example.net>", "250 ")
    starttls(c)
    c.cmd("EHLO client.test", "250 ")
    # The plaintext transaction did not survive the handshake.
    c.cmd("DATA", "503 ")
    c.cmd("QUIT", "221 ")
    assert srv.query("select count(*) from messages") == [(0,)]


# -------- implicit TLS (RFC 8314) --------

@test
def smtps_trusted_client_without_auth():
    p = free_port()
    srv = tls_server({"submission_trust_networks": "yes"},
                     extra_listen=["127.0.0.1:%d/smtps" % p])
    # The greeting only comes after the handshake.
    raw = socket.create_connection(("127.0.0.1", p), timeout=10)
    raw.settimeout(0.5)
    try:
        early = raw.recv(100)
    except socket.timeout:
        early = b""
    assert early == b"", "plaintext sent before the handshake: %r" % early
    raw.settimeout(10)
    t = tls_context().wrap_socket(raw, server_hostname="relay.test")
    data = b""
    while b"\r\n" not in data:
        chunk = t.recv(1000)
        assert chunk, data
        data += chunk
    assert data.startswith(b"220 relay.test "), data
    t.close()

    with smtplib.SMTP_SSL("127.0.0.1", p, local_hostname="client.test", context=tls_context()) as s:
        code, text = s.ehlo()
        assert code == 250
        assert not s.has_extn("starttls"), text
        assert s.docmd("STARTTLS")[0] in (502, 503)  # never a 220
        refused = s.sendmail("a@client.test", ["x@example.net"], b"Subject: s\r\n\r\nsmtps\r\n")
        assert refused == {}
    rows = srv.query("select id, protocol, tls_version, tls_cipher, auth_user from messages")
    assert len(rows) == 1 and rows[0][1:3] == ("ESMTPS", "TLS1.3") and rows[0][3], rows
    assert rows[0][4] is None, rows
    assert re.match(RECEIVED_TLS_RE, srv.body(rows[0][0])), srv.body(rows[0][0])[:300]

    # An untrusted client on the same listener needs AUTH.
    with smtplib.SMTP_SSL("127.0.0.1", p, local_hostname="client.test", context=tls_context(),
                          source_address=("127.0.0.66", 0)) as s:
        s.ehlo()
        code, text = s.docmd("MAIL FROM:<a@client.test>")
        assert (code, text[:5]) == (530, b"5.7.0"), (code, text)


@test
def smtps_needs_auth_without_trust():
    p = free_port()
    srv = tls_server(extra_listen=["127.0.0.1:%d/smtps" % p], start=False)  # trust: no
    users = os.path.join(srv.dir, "users")
    with open(users, "w") as f:
        f.write(passwd_line("alice", "smtps pw").decode())
    srv.config.update(auth_users=users, auth_failure_delay="0")
    srv.start()
    with smtplib.SMTP_SSL("127.0.0.1", p, local_hostname="client.test", context=tls_context()) as s:
        s.ehlo()
        code, text = s.docmd("MAIL FROM:<a@client.test>")
        assert code == 530 and text.startswith(b"5.7.0 Authentication required"), (code, text)
        # AUTH is offered at once: the connection is already encrypted.
        assert "PLAIN" in s.esmtp_features.get("auth", ""), s.esmtp_features
        s.login("alice", "smtps pw")
        assert s.sendmail("alice@client.test", ["x@example.net"], b"Subject: a\r\n\r\nx\r\n") == {}
    assert srv.query("select protocol, auth_user from messages") == [("ESMTPSA", "alice")]
    # The plain smtp listener still relays for 127.0.0.1 without AUTH.
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        assert s.sendmail("a@client.test", ["x@example.net"], b"Subject: p\r\n\r\nx\r\n") == {}


@test
def smtps_swaks_tls_on_connect():
    p = free_port()
    srv = tls_server({"submission_trust_networks": "yes"},
                     extra_listen=["127.0.0.1:%d/smtps" % p])
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p), "--tls-on-connect",
                        "--tls-verify", "--tls-ca-path", PKI.ca, "--ehlo", "swaks.test",
                        "--from", "s@client.test", "--to", "z@example.com",
                        "--body", "implicit tls"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out[-2000:]
    assert "STARTTLS" not in re.findall(r"<~? *250[- ].*", out).__str__(), out
    rows = srv.query("select protocol, tls_version, helo from messages")
    assert len(rows) == 1 and rows[0][0] == "ESMTPS" and rows[0][1] and rows[0][2] == "swaks.test", rows


@test
def smtps_plaintext_client_gets_nothing():
    p = free_port()
    srv = tls_server({"submission_trust_networks": "yes"},
                     extra_listen=["127.0.0.1:%d/smtps" % p])
    raw = socket.create_connection(("127.0.0.1", p), timeout=10)
    raw.settimeout(0.5)
    try:
        early = raw.recv(100)
    except socket.timeout:
        early = b""
    assert early == b"", early
    raw.sendall(b"EHLO plain.test\r\nMAIL FROM:<a@client.test>\r\n")
    raw.settimeout(5)
    got = b""
    try:
        while True:
            d = raw.recv(4096)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    raw.close()
    assert b"220" not in got and b"250" not in got, got
    srv.wait_log(r"TLS handshake failed")
    # The server still serves.
    with smtplib.SMTP_SSL("127.0.0.1", p, local_hostname="client.test", context=tls_context()) as s:
        assert s.sendmail("a@client.test", ["x@example.net"], b"Subject: s\r\n\r\nx\r\n") == {}
    assert srv.query("select count(*) from messages") == [(1,)]


@test
def failed_handshake_ends_session_cleanly():
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    c.cmd("STARTTLS", "220 ")
    c.send(b"this is not a TLS ClientHello\r\nMAIL FROM:<a@b.test>\r\n")
    assert c.closed(), "server kept the session open after a failed handshake"
    assert b"250" not in c.buf and b"503" not in c.buf, c.buf
    line = last_session_log(srv)
    assert "commands=2 " in line, line
    assert re.search(r"TLS handshake failed", srv.log())
    assert srv.proc.poll() is None
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        s.starttls(context=tls_context())
        assert s.sendmail("a@client.test", ["x@example.net"], b"Subject: s\r\n\r\nx\r\n") == {}
    assert srv.query("select protocol from messages") == [("ESMTPS",)]


# -------- protocol versions --------

@test
def tls_old_versions_refused():
    srv = tls_server()
    for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        before = srv.log().count("TLS handshake failed")
        s = smtplib.SMTP(srv.host, srv.port, local_hostname="client.test")
        try:
            s.starttls(context=tls_context(maximum=v, old=True))
            raise AssertionError("a %s handshake succeeded: %s" % (v, s.sock.version()))
        except (ssl.SSLError, OSError, smtplib.SMTPException):
            pass
        finally:
            s.close()
        # The client did offer the old version and the server refused it.
        srv.wait_log(r"(?s)(TLS handshake failed.*){%d}" % (before + 1))
    # gnutls-cli limited to TLS 1.0/1.1 as a second opinion.
    r = subprocess.run(["gnutls-cli", "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0",
                        "--starttls-proto=smtp", "--x509cafile", PKI.ca,
                        "--port", str(srv.port), "127.0.0.1"],
                       input=b"EHLO x\r\nQUIT\r\n", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    assert r.returncode != 0 and b"Handshake was completed" not in r.stdout, r.stdout[-1000:]
    assert "TLS established" not in srv.log(), srv.log()


@test
def old_version_gets_protocol_version_alert():
    """RFC 8446 4.2.1 / RFC 5246 E.1: a server refusing the client's
    versions aborts the handshake with a protocol_version alert (instead
    of just closing the TCP connection)."""
    srv = tls_server()
    s = smtplib.SMTP(srv.host, srv.port, local_hostname="client.test")
    try:
        s.starttls(context=tls_context(maximum=ssl.TLSVersion.TLSv1_1, old=True))
        raise AssertionError("a TLS 1.1 handshake succeeded")
    except ssl.SSLError as e:
        err = e
    finally:
        s.close()
    assert "ALERT_PROTOCOL_VERSION" in str(err), "no protocol_version alert: %r" % err


@test
def tls12_and_tls13_work():
    srv = tls_server()
    for maximum, minimum, want in ((ssl.TLSVersion.TLSv1_2, None, "TLS1.2"),
                                   (None, ssl.TLSVersion.TLSv1_3, "TLS1.3")):
        with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
            s.starttls(context=tls_context(maximum=maximum, minimum=minimum))
            assert s.sock.version() == want.replace("TLS", "TLSv"), s.sock.version()
            assert s.sendmail("a@client.test", ["x@example.net"],
                              ("Subject: %s\r\n\r\nx\r\n" % want).encode()) == {}
    rows = srv.query("select tls_version, tls_cipher, protocol from messages order by rowid")
    assert [r[0] for r in rows] == ["TLS1.2", "TLS1.3"], rows
    assert all(r[1] and r[2] == "ESMTPS" for r in rows), rows
    # TLS 1.2 only with forward secrecy and AEAD (the default priority).
    assert re.match(r"TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_\d+_GCM|CHACHA20_POLY1305)", rows[0][1]), rows


# -------- timeouts --------

@test
def handshake_timeout_disconnects():
    p = free_port()
    srv = tls_server({"command_timeout": "1s", "submission_trust_networks": "yes"},
                     extra_listen=["127.0.0.1:%d/smtps" % p])
    c = srv.connect()
    c.ehlo()
    c.cmd("STARTTLS", "220 ")
    # ... and no ClientHello.
    assert c.closed(timeout=8), "server still waiting for the handshake"
    # Implicit TLS: connect and say nothing.
    raw = socket.create_connection(("127.0.0.1", p), timeout=8)
    got = b""
    try:
        while True:
            d = raw.recv(4096)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("smtps session without a handshake was not ended")
    raw.close()
    assert b"220" not in got, got
    assert len(re.findall(r"TLS handshake failed", srv.log())) >= 2, srv.log()


# -------- certificates --------

@test
def selfsigned_certificate_generated_and_reused():
    srv = Server()
    cert = os.path.join(srv.dir, "selfsigned-cert.pem")
    key = os.path.join(srv.dir, "selfsigned-key.pem")
    assert os.path.exists(cert) and os.path.exists(key), os.listdir(srv.dir)
    assert "generated a self-signed certificate" in srv.log(), srv.log()
    assert os.stat(key).st_mode & 0o077 == 0, oct(os.stat(key).st_mode)
    pem = open(cert).read()
    der = ssl.PEM_cert_to_DER_cert(pem)
    noverify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE

    def seen():
        with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
            s.starttls(context=noverify)
            got = s.sock.getpeercert(binary_form=True)
            assert s.sendmail("a@client.test", ["x@example.net"], b"Subject: s\r\n\r\nx\r\n") == {}
            return got

    assert seen() == der
    _, cn = certs.peer_serial_and_cn(der)
    assert cn == "relay.test", cn
    # Not trusted by a verifying client, of course.
    try:
        with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
            s.starttls(context=tls_context())
        raise AssertionError("self-signed certificate verified against the test CA")
    except ssl.SSLCertVerificationError:
        pass
    srv.restart()
    assert open(cert).read() == pem, "the self-signed certificate was regenerated"
    assert srv.log().count("generated a self-signed certificate") == 1, srv.log()
    assert seen() == der


@test
def selfsigned_certificate_follows_the_hostname():
    """A self-signed pair made for another host name is replaced, with a
    log line that says why: at a start and on SIGHUP.  So is one whose key
    does not match (a crash between writing the key and the certificate)."""
    srv = Server()
    cert = os.path.join(srv.dir, "selfsigned-cert.pem")
    key = os.path.join(srv.dir, "selfsigned-key.pem")
    noverify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE

    def seen():
        """(CN, DER) of what a STARTTLS client gets."""
        with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
            s.starttls(context=noverify)
            der = s.sock.getpeercert(binary_form=True)
        return certs.peer_serial_and_cn(der)[1], der

    def on_disk():
        return certs.peer_serial_and_cn(ssl.PEM_cert_to_DER_cert(open(cert).read()))[1]

    assert seen()[0] == on_disk() == "relay.test"
    assert "replacing the self-signed certificate" not in srv.log(), srv.log()

    # A new name at the next start.
    srv.stop()
    srv.config["hostname"] = "relay2.test"
    mark = len(srv.log())
    srv.start()
    log = srv.log()[mark:]
    assert ("info tls: replacing the self-signed certificate: %s was made for "
            "relay.test, not relay2.test" % cert) in log, log
    assert "generated a self-signed certificate for relay2.test" in log, log
    assert seen()[0] == on_disk() == "relay2.test"
    assert os.stat(key).st_mode & 0o077 == 0, oct(os.stat(key).st_mode)
    assert not os.path.exists(cert + ".tmp") and not os.path.exists(key + ".tmp")

    # The same name again: kept, nothing said.
    der = seen()[1]
    srv.restart()
    assert seen()[1] == der
    assert srv.log().count("generated a self-signed certificate") == 2, srv.log()

    # A new name on SIGHUP: sessions after the reload get the new pair.
    srv.config["hostname"] = "relay3.test"
    srv.write_config()
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    log = srv.wait_log(r"SIGHUP: configuration reloaded", start=mark)
    assert "was made for relay2.test, not relay3.test" in log, log
    assert seen()[0] == on_disk() == "relay3.test"

    # A key that does not match the certificate beside it.
    srv.stop()
    old_pem = open(cert).read()
    shutil.copyfile(PKI.a.key, key)
    mark = len(srv.log())
    srv.start()
    log = srv.log()[mark:]
    assert re.search(r"replacing the self-signed certificate: certificate \S+ does not "
                     r"match key \S+", log), log
    assert open(cert).read() != old_pem
    assert seen()[0] == "relay3.test"


@test
def configured_certificate_verifies():
    srv = tls_server()
    # smtplib: server_hostname is "127.0.0.1", matched against the IP SAN.
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test") as s:
        s.starttls(context=tls_context())
        serial, _ = certs.peer_serial_and_cn(s.sock.getpeercert(binary_form=True))
        assert serial == PKI.a.serial, serial
        assert s.noop()[0] == 250
    # A verifying client expecting another name refuses it.
    c = srv.connect()
    c.ehlo()
    try:
        starttls(c, hostname="other.test")
        raise AssertionError("certificate accepted for other.test")
    except ssl.SSLCertVerificationError:
        pass
    c.close()
    r = subprocess.run(["gnutls-cli", "--starttls-proto=smtp", "--x509cafile", PKI.ca,
                        "--port", str(srv.port), "127.0.0.1"],
                       input=b"EHLO gnutls.test\r\nQUIT\r\n", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out[-1500:]
    assert "The certificate is trusted" in out, out[-1500:]
    assert "250-relay.test\r\n" in out and "221 2.0.0" in out, out[-1500:]
    assert "STARTTLS" not in out.split("Handshake was completed", 1)[1], out[-1500:]
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-CAfile", PKI.ca,
                        "-verify_return_error", "-verify_ip", "127.0.0.1",
                        "-connect", "127.0.0.1:%d" % srv.port],
                       input=b"EHLO openssl.test\r\nQUIT\r\n", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0 and "Verify return code: 0 (ok)" in out, out[-1500:]


@test
def sighup_reloads_certificate():
    p = free_port()
    srv = tls_server(extra_listen=["127.0.0.1:%d/smtps" % p])
    assert peer_cert(srv) == (PKI.a.serial, PKI.a.cn)
    assert smtps_cert(p) == (PKI.a.serial, PKI.a.cn)
    # A session in the middle of a transaction on certificate A.
    s = smtplib.SMTP(srv.host, srv.port, local_hostname="client.test")
    s.starttls(context=tls_context())
    s.ehlo()
    assert s.mail("a@client.test")[0] == 250
    assert s.rcpt("x@example.net")[0] == 250
    mark = len(srv.log())
    certs.install(PKI.b, srv.dir)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"certificate reloaded", start=mark)
    code, text = s.data(b"Subject: across reload\r\n\r\nx\r\n")
    assert code == 250, (code, text)
    s.quit()
    assert peer_cert(srv) == (PKI.b.serial, PKI.b.cn)
    assert smtps_cert(p) == (PKI.b.serial, PKI.b.cn)

    # A broken certificate file: reported, the old one kept.
    mark = len(srv.log())
    with open(os.path.join(srv.dir, "cert.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"keeping the old certificate", start=mark)
    assert "configuration reloaded" not in srv.log()[mark:], srv.log()[mark:]
    assert srv.proc.poll() is None
    assert peer_cert(srv) == (PKI.b.serial, PKI.b.cn)

    # A certificate that does not match its key: refused too.
    mark = len(srv.log())
    with open(PKI.a.cert) as src, open(os.path.join(srv.dir, "cert.pem"), "w") as f:
        f.write(src.read())  # key.pem is still B's key
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"keeping the old certificate", start=mark)
    assert peer_cert(srv) == (PKI.b.serial, PKI.b.cn)
    assert smtps_cert(p) == (PKI.b.serial, PKI.b.cn)
    assert srv.query("select count(*) from messages") == [(1,)]


# -------- the TLS read path --------

@test
def client_data_coalesced_with_finished():
    """The client's EHLO in the same TCP segment as its TLS 1.3 Finished:
    the server must read it from what TLS has already buffered."""
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    c.cmd("STARTTLS", "220 ")
    sock = c.sock
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(minimum=ssl.TLSVersion.TLSv1_3).wrap_bio(inc, out, server_hostname="relay.test")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            if data:
                sock.sendall(data)
            d = sock.recv(65536)
            assert d, "server closed during the handshake"
            inc.write(d)
    obj.write(b"EHLO early.test\r\nMAIL FROM:<a@client.test>\r\n")
    sock.sendall(out.read())  # client Finished + application data, one write
    got = b""
    sock.settimeout(5)
    while not re.search(rb"\r\n250 2\.1\.0[^\r]*\r\n", got):
        try:
            got += obj.read(65536)
            continue
        except ssl.SSLWantReadError:
            pass
        try:
            d = sock.recv(65536)
        except socket.timeout:
            raise AssertionError("no reply to data sent with the Finished: %r" % got)
        assert d, "closed; got %r" % got
        inc.write(d)
    assert got.startswith(b"250-relay.test\r\n"), got
    sock.close()


@test
def large_message_over_tls():
    srv = tls_server()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 3 + b"\r\n"
    body = b"Subject: large\r\n\r\n" + b"".join(b"%06d " % i + line for i in range(20000))
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        s.starttls(context=tls_context())
        assert s.sendmail("a@client.test", ["x@example.net"], body) == {}
    (qid, size), = srv.query("select id, size from messages")
    assert size == len(body), (size, len(body))
    stored = srv.body(qid)
    assert re.match(RECEIVED_TLS_RE, stored), stored[:300]
    assert stored[stored.index(b"Subject: large"):] == body


# -------- shutdown --------

def _shutdown_with_stalled_handshake(stall):
    """SIGTERM while a client stalls in the TLS handshake.  It is not in a
    transaction, so like any idle session it must end at once (or at
    the latest when shutdown_grace is over), not at command_timeout
    (5 minutes)."""
    p = free_port()
    srv = tls_server({"shutdown_grace": "1s", "submission_trust_networks": "yes"},
                     extra_listen=["127.0.0.1:%d/smtps" % p])
    conn = stall(srv, p)
    srv.wait_log(r"connect from ")
    rc = srv.stop(timeout=6)  # grace 1s + a wide margin
    assert rc == 0, rc
    conn.close()


@test
def shutdown_with_stalled_starttls_handshake():
    def stall(srv, p):
        c = srv.connect()
        c.ehlo()
        c.cmd("STARTTLS", "220 ")
        return c  # ... and no ClientHello
    _shutdown_with_stalled_handshake(stall)


@test
def shutdown_with_stalled_smtps_handshake():
    _shutdown_with_stalled_handshake(
        lambda srv, p: socket.create_connection(("127.0.0.1", p), timeout=10))


# -------- pipelining over TLS --------

@test
def pipelining_over_tls():
    srv = tls_server()
    c = srv.connect()
    c.ehlo()
    starttls(c)
    _, text = c.cmd("EHLO client.test", "250 ")
    assert "PIPELINING" in text
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.net>\r\n"
           b"RCPT TO:<c@example.net>\r\nDATA\r\n")
    c.reply("250 2.1.0")
    c.reply("250 2.1.5")
    c.reply("250 2.1.5")
    c.reply("354 ")
    c.send(b"Subject: pipelined\r\n\r\nx\r\n.\r\nMAIL FROM:<>\r\n")
    c.reply("250 2.0.0 Ok: queued as")
    c.reply("250 2.1.0")
    # A batch larger than one TLS record (16 KiB).
    n = 800
    c.send(b"".join(b"RCPT TO:<r%04d@example.net>\r\n" % i for i in range(n)) + b"DATA\r\n")
    for _ in range(n):
        c.reply("250 2.1.5")
    c.reply("354 ")
    c.send(b"Subject: big\r\n\r\ny\r\n.\r\nQUIT\r\n")
    c.reply("250 2.0.0")
    c.reply("221 ")
    counts = srv.query("select m.protocol, count(r.address) from messages m join recipients r "
                       "on r.msg_id = m.id group by m.id order by m.rowid")
    assert counts == [("ESMTPS", 2), ("ESMTPS", n)], counts


if __name__ == "__main__":
    main()
