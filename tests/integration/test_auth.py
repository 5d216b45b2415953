"""SMTP AUTH (RFC 4954): `sluice passwd`, PLAIN and LOGIN over TLS, the
replies to every failure, relaying after AUTH, the submission listener,
sender_login_match, the MAIL AUTH= parameter, reloading auth_users on
SIGHUP, and swaks as a real client."""
import base64
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import plain, tls_context  # noqa: E402
from sluicetest import BIN, Client, Server, free_port, main, test  # noqa: E402
import certs  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # crypt

PKI = certs.pki()
ALICE_PW = "Tr0ub4dor&3 horse"
BOB_PW = "b0b-pass:word"
OUTSIDER = "127.0.0.66"  # not in relay_networks

_hashes = {}


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def passwd(user, password):
    """Run `sluice passwd USER` with the password on stdin."""
    return subprocess.run([BIN, "passwd", user], input=password, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def user_line(user, pw, senders=None):
    if (user, pw) not in _hashes:
        r = passwd(user, (pw + "\n").encode())
        assert r.returncode == 0, r.stderr
        _hashes[(user, pw)] = r.stdout.decode().strip()
    line = _hashes[(user, pw)]
    return line + (":" + senders if senders is not None else "")


def write_users(path, lines):
    with open(path + ".tmp", "w") as f:
        f.write("# sluice test users\n\n" + "".join(l + "\n" for l in lines))
    os.replace(path + ".tmp", path)


def auth_server(config=None, users=None, extra_listen=None):
    """A server with TLS (test cert) and auth_users (default: alice)."""
    srv = Server(start=False, extra_listen=extra_listen)
    cert, key = certs.install(PKI.a, srv.dir)
    srv.users = os.path.join(srv.dir, "users")
    write_users(srv.users, users if users is not None else [user_line("alice", ALICE_PW)])
    srv.config.update(tls_cert=cert, tls_key=key, auth_users=srv.users,
                      auth_failure_delay="0")
    srv.config.update(config or {})
    srv.start()
    return srv


def tls_client(srv, port=None, source=None, ehlo=True):
    """A raw client after EHLO, STARTTLS and (when `ehlo`) EHLO again."""
    c = Client(srv.host, port or srv.port, source=source)
    c.ehlo()
    c.cmd("STARTTLS", "220 ")
    assert c.buf == b""
    c.sock = ssl.create_default_context(cafile=PKI.ca).wrap_socket(
        c.sock, server_hostname="relay.test")
    if ehlo:
        c.cmd("EHLO client.test", "250 ")
    return c


# -------- sluice passwd --------

@test
def passwd_command():
    r = passwd("alice", (ALICE_PW + "\n").encode())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.fullmatch(r"alice:\$y\$[./0-9A-Za-z$]+\n", out), out
    assert ALICE_PW not in out and ALICE_PW not in r.stderr.decode()
    again = passwd("alice", (ALICE_PW + "\n").encode()).stdout.decode()
    assert again != out, "the same salt twice"
    try:
        import crypt  # the system's crypt(3): an independent check
        h = out.strip().split(":", 1)[1]
        assert crypt.crypt(ALICE_PW, h) == h
        assert crypt.crypt(ALICE_PW + "x", h) != h
    except ImportError:
        pass
    for user, data in (("alice", b""), ("alice", b"\n"), ("ali:ce", b"pw\n"),
                       ("", b"pw\n"), ("al ice", b"pw\n")):
        r = passwd(user, data)
        assert r.returncode != 0, (user, data, r.stdout)
        assert r.stdout == b"", (user, data, r.stdout)
        assert r.stderr, (user, data)


# -------- successful AUTH, relaying and the stored message --------

def _relay_after_auth(srv, authenticate):
    """From an untrusted address: relaying refused without AUTH, allowed
    after; returns the queue ID."""
    c = tls_client(srv, source=OUTSIDER)
    c.cmd("MAIL FROM:<alice@client.test>", "250 ")
    c.cmd("RCPT TO:<x@example.net>", "554 5.7.1")
    c.cmd("RSET", "250 ")
    authenticate(c)
    qid = c.mail(sender="<alice@client.test>", rcpts=("<x@example.net>",))
    c.cmd("QUIT", "221 ")
    row = srv.query("select auth_user, protocol, client_ip, tls_version from messages where id=?",
                    (qid,))
    assert row == [("alice", "ESMTPSA", OUTSIDER, "TLS1.3")], row
    body = srv.body(qid)
    hdr = body.split(b"\r\n\r\n", 1)[0].decode()
    assert "(authenticated user alice)" in hdr, hdr
    assert "with ESMTPSA id %s" % qid in hdr, hdr
    assert "(using TLS1.3 with cipher " in hdr, hdr
    assert "proto=ESMTPSA" in srv.log()
    assert "authenticated user=alice" in srv.log()
    return qid


@test
def auth_plain_initial_response():
    srv = auth_server()
    _relay_after_auth(srv, lambda c: c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW),
                                           "235 2.7.0"))


@test
def auth_plain_with_challenge():
    srv = auth_server()

    def auth(c):
        c.cmd("AUTH PLAIN", "334 ")
        c.cmd(plain("alice", ALICE_PW, authz="alice"), "235 2.7.0")
    _relay_after_auth(srv, auth)


@test
def auth_login():
    srv = auth_server()

    def auth(c):
        code, text = c.cmd("AUTH LOGIN")
        assert text == "334 VXNlcm5hbWU6", text
        code, text = c.cmd(b64("alice"))
        assert text == "334 UGFzc3dvcmQ6", text
        c.cmd(b64(ALICE_PW), "235 2.7.0")
    _relay_after_auth(srv, auth)
    # LOGIN with the user name as initial response.
    c = tls_client(srv)
    assert c.cmd("AUTH LOGIN " + b64("alice"))[1] == "334 UGFzc3dvcmQ6"
    c.cmd(b64(ALICE_PW), "235 2.7.0")
    c.cmd("QUIT", "221 ")


@test
def smtplib_login_and_send():
    srv = auth_server()
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(OUTSIDER, 0)) as s:
        s.starttls(context=tls_context())
        s.ehlo()
        assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
        s.login("alice", ALICE_PW)
        assert s.sendmail("alice@client.test", ["a@example.net", "b@example.org"],
                          b"Subject: auth\r\n\r\nx\r\n") == {}
    assert srv.query("select auth_user, protocol from messages") == [("alice", "ESMTPSA")]


# -------- failures --------

@test
def wrong_password_three_strikes():
    srv = auth_server()
    c = tls_client(srv)
    c.cmd("AUTH PLAIN " + plain("alice", "wrong"), "535 5.7.8")
    c.cmd("NOOP", "250 ")  # the session goes on
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd(b64("alice"), "334 ")
    c.cmd(b64("also wrong"), "535 5.7.8")
    c.cmd("AUTH PLAIN " + plain("alice", "third"), "535 5.7.8")
    c.reply("421 4.7.0")
    assert c.closed()
    assert re.search(r"\(3 of 3; 3 from this client in 60s\)", srv.log()), srv.log()[-2000:]
    # A new session may try again (and succeed).
    c = tls_client(srv)
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    c.cmd("QUIT", "221 ")


@test
def unknown_user_same_reply():
    srv = auth_server()
    c = tls_client(srv)
    wrong = c.cmd("AUTH PLAIN " + plain("alice", "nope"), "535 5.7.8")[1]
    unknown = c.cmd("AUTH PLAIN " + plain("mallory", "nope"), "535 5.7.8")[1]
    assert wrong == unknown, (wrong, unknown)  # no user enumeration
    # User names are case-sensitive.
    c.cmd("AUTH PLAIN " + plain("ALICE", ALICE_PW), "535 5.7.8")
    c.reply("421 4.7.0")


@test
def auth_protocol_errors():
    srv = auth_server({"max_errors": "100"})
    # Before TLS: not advertised, and refused with 538.
    c = srv.connect()
    _, text = c.ehlo()
    assert "AUTH" not in text, text
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "538 5.7.11")
    c.cmd("AUTH LOGIN", "538 5.7.11")
    c.cmd("QUIT", "221 ")

    c = tls_client(srv, ehlo=False)
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "503 5.5.1")  # EHLO first
    c.cmd("EHLO client.test", "250 ")
    c.cmd("AUTH CRAM-MD5", "504 5.5.4")
    c.cmd("AUTH", "501 ")
    c.cmd("AUTH PLAIN !!not*base64!!", "501 5.5.2")
    c.cmd("AUTH PLAIN " + b64("no nuls here"), "501 5.5.2")
    c.cmd("AUTH PLAIN", "334 ")
    c.cmd("*", "501 ")
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
    c.cmd("*", "501 ")
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
    c.cmd(b64("alice"), "334 UGFzc3dvcmQ6")
    c.cmd("*", "501 ")
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd("%%%", "501 5.5.2")
    # Proxy authorisation is not allowed.
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW, authz="bob"), "535 5.7.8")
    # None of the above was a third password failure: the session is
    # still open, and a good AUTH works (not inside a transaction).
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "503 5.5.1")  # in a transaction
    c.cmd("RSET", "250 ")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 2.7.0")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "503 5.5.1")  # twice
    c.cmd("AUTH LOGIN", "503 5.5.1")
    c.cmd("QUIT", "221 ")


@test
def password_never_logged():
    srv = auth_server({"log_level": "debug", "max_errors": "100"})
    secrets = [ALICE_PW, b64(ALICE_PW), plain("alice", ALICE_PW),
               "wrong-Pa55", b64("wrong-Pa55"), plain("alice", "wrong-Pa55")]
    c = tls_client(srv)
    c.cmd("AUTH PLAIN " + plain("alice", "wrong-Pa55"), "535 ")
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd(b64("alice"), "334 ")
    c.cmd(b64("wrong-Pa55"), "535 ")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    c.cmd("QUIT", "221 ")
    c = tls_client(srv)
    c.cmd("AUTH PLAIN", "334 ")
    c.cmd(plain("alice", ALICE_PW), "235 ")
    c.cmd("QUIT", "221 ")
    c = tls_client(srv)
    c.cmd("AUTH LOGIN " + b64("alice"), "334 ")
    c.cmd(b64(ALICE_PW), "235 ")
    c.cmd("QUIT", "221 ")
    # Before TLS, the refused AUTH line carries the credentials too.
    c = srv.connect()
    c.ehlo()
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "538 ")
    c.cmd("QUIT", "221 ")
    srv.wait_log(r"(?s)(disconnect from .*){4}")
    log = srv.log()
    assert "authenticated user=alice" in log
    for s in secrets:
        assert s not in log, "secret %r in the log:\n%s" % (s, log)


@test
def auth_survives_ehlo_and_rset():
    # RFC 4954 section 4: after AUTH, a second EHLO or RSET does not undo
    # it (and AUTH stays refused with 503).
    srv = auth_server()
    c = tls_client(srv, source=OUTSIDER)
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    c.cmd("RSET", "250 ")
    c.cmd("EHLO again.test", "250 ")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "503 5.5.1")
    qid = c.mail(rcpts=("<r@example.net>",))
    c.cmd("QUIT", "221 ")
    assert srv.query("select auth_user, helo from messages where id=?", (qid,)) == \
        [("alice", "again.test")]


# -------- the submission listener --------

@test
def submission_requires_auth():
    p = free_port()
    srv = auth_server(extra_listen=["127.0.0.1:%d/submission" % p])  # trust: no
    c = tls_client(srv, port=p)
    c.cmd("MAIL FROM:<alice@client.test>", "530 5.7.0 Authentication required")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    qid = c.mail(sender="<alice@client.test>", rcpts=("<r@example.net>",))
    c.cmd("QUIT", "221 ")
    assert srv.query("select auth_user, protocol from messages where id=?", (qid,)) == \
        [("alice", "ESMTPSA")]
    # Without TLS: no AUTH, no mail, even from 127.0.0.1.
    c = Client(srv.host, p)
    _, text = c.ehlo()
    assert "STARTTLS" in text and "AUTH" not in text, text
    c.cmd("MAIL FROM:<alice@client.test>", "530 5.7.0")
    c.cmd("QUIT", "221 ")
    # The smtp listener is unchanged: 127.0.0.1 relays without AUTH.
    c = srv.connect()
    c.ehlo()
    c.mail()
    c.cmd("QUIT", "221 ")


@test
def submission_trust_networks():
    p = free_port()
    srv = auth_server({"submission_trust_networks": "yes"},
                      extra_listen=["127.0.0.1:%d/submission" % p])
    c = tls_client(srv, port=p)
    qid = c.mail(rcpts=("<r@example.net>",))
    c.cmd("QUIT", "221 ")
    assert srv.query("select auth_user, protocol from messages where id=?", (qid,)) == \
        [(None, "ESMTPS")]
    c = tls_client(srv, port=p, source=OUTSIDER)
    c.cmd("MAIL FROM:<a@client.test>", "530 5.7.0")
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    c.cmd("MAIL FROM:<alice@client.test>", "250 ")
    c.cmd("RCPT TO:<r@example.net>", "250 ")
    c.cmd("QUIT", "221 ")


# -------- sender_login_match --------

@test
def sender_login_match():
    srv = auth_server({"sender_login_match": "yes"},
                      users=[user_line("alice", ALICE_PW, "alice@example.com, @alice.test"),
                             user_line("carol@example.org", "carol pw")])
    c = tls_client(srv, source=OUTSIDER)
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    for sender, ok in (("<alice@example.com>", True), ("<x@alice.test>", True),
                       ("<>", True), ("<alice@EXAMPLE.COM>", True),
                       ("<bob@example.com>", False), ("<alice@example.com.evil.test>", False),
                       ("<x@sub.alice.test.evil>", False)):
        code, text = c.cmd("MAIL FROM:" + sender)
        if ok:
            assert code == 250, (sender, text)
            c.cmd("RSET", "250 ")
        else:
            assert code == 553 and text.startswith("553 5.7.1"), (sender, text)
    qid = c.mail(sender="<x@alice.test>", rcpts=("<r@example.net>",))
    c.cmd("QUIT", "221 ")
    assert srv.query("select sender, auth_user from messages where id=?", (qid,)) == \
        [("x@alice.test", "alice")]
    # Without a senders field: only the user name itself.
    c = tls_client(srv, source=OUTSIDER)
    c.cmd("AUTH PLAIN " + plain("carol@example.org", "carol pw"), "235 ")
    c.cmd("MAIL FROM:<someone@example.org>", "553 5.7.1")
    c.cmd("MAIL FROM:<carol@example.org>", "250 ")
    c.cmd("QUIT", "221 ")


@test
def mail_auth_parameter():
    srv = auth_server()
    c = tls_client(srv)
    c.cmd("AUTH PLAIN " + plain("alice", ALICE_PW), "235 ")
    c.cmd("MAIL FROM:<a@b.test> AUTH=<>", "250 ")
    c.cmd("RSET", "250 ")
    c.cmd("MAIL FROM:<a@b.test> AUTH=alice+40example.com", "250 ")
    c.cmd("RCPT TO:<r@example.net>", "250 ")
    c.cmd("RSET", "250 ")
    c.cmd("QUIT", "221 ")
    # RFC 4954 section 5: an unauthenticated client's AUTH= is accepted
    # (and treated as AUTH=<>), not refused.
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@b.test> AUTH=<>", "250 ")
    c.cmd("QUIT", "221 ")


# -------- SIGHUP --------

@test
def sighup_reloads_auth_users():
    srv = auth_server()
    c = tls_client(srv)
    c.cmd("AUTH PLAIN " + plain("bob", BOB_PW), "535 ")
    c.cmd("QUIT", "221 ")
    mark = len(srv.log())
    write_users(srv.users, [user_line("alice", ALICE_PW), user_line("bob", BOB_PW)])
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"configuration reloaded .*2 auth users", start=mark)
    for user, pw in (("bob", BOB_PW), ("alice", ALICE_PW)):
        c = tls_client(srv)
        c.cmd("AUTH PLAIN " + plain(user, pw), "235 ")
        c.cmd("QUIT", "221 ")
    # A broken file: reported, the old users kept.
    mark = len(srv.log())
    write_users(srv.users, [user_line("alice", ALICE_PW), "carol", user_line("dave", "dave pw")])
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"keeping the old auth_users", start=mark)
    assert "configuration reloaded" not in srv.log()[mark:]
    assert srv.proc.poll() is None
    for user, pw, expect in (("bob", BOB_PW, "235 "), ("alice", ALICE_PW, "235 "),
                             ("dave", "dave pw", "535 ")):
        c = tls_client(srv)
        c.cmd("AUTH PLAIN " + plain(user, pw), expect)
        c.cmd("QUIT", "221 ")


# -------- swaks --------

def _swaks(srv, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port),
                        "--local-interface", OUTSIDER, "--tls", "--tls-verify",
                        "--tls-ca-path", PKI.ca, "--ehlo", "swaks.test",
                        "--from", "alice@client.test", "--to", "r@example.net",
                        "--body", "from swaks"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


@test
def swaks_auth():
    srv = auth_server()
    for mech in ("PLAIN", "LOGIN"):
        rc, out = _swaks(srv, "-a", mech, "-au", "alice", "-ap", ALICE_PW)
        assert rc == 0, (mech, out[-2000:])
        assert "235 2.7.0" in out, out[-2000:]
    rc, out = _swaks(srv, "-a", "PLAIN", "-au", "alice", "-ap", "wrong")
    assert rc == 28, (rc, out[-2000:])
    rows = srv.query("select auth_user, protocol, client_ip from messages")
    assert rows == [("alice", "ESMTPSA", OUTSIDER)] * 2, rows
    assert ALICE_PW not in srv.log()


if __name__ == "__main__":
    main()
