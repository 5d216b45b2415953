"""Relay control and per-address connection limits.  The harness sets
relay_networks = 127.0.0.1/32, ::1/128 and relay_domains = inbound.test, so
a client bound to 127.0.0.66 is untrusted: it may only send to
inbound.test, and no address trick may turn sluice into an open relay.
Clients in relay_networks may relay anywhere and are exempt from
max_connections_per_ip."""
import os
import re
import smtplib
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import swaks  # noqa: E402
from sluicetest import Server, main, test  # noqa: E402

UNTRUSTED = "127.0.0.66"
DENIED = r"554 5\.7\.1 .*Relay access denied"

# Each must be refused for an untrusted client: 554 5.7.1, or a 501
# syntax error; never 250.
TRICKS = [
    "<x@example.net>",
    "<postmaster@example.net>",
    "<user%example.net@inbound.test>",
    "<USER%EXAMPLE.NET@INBOUND.TEST>",
    "<user%example.net%inbound.test@inbound.test>",
    '<"user@example.net"@inbound.test>',
    '<"user%example.net"@inbound.test>',
    r'<"user\@example.net"@inbound.test>',
    '<"user!example.net"@inbound.test>',
    "<@inbound.test:user@example.net>",
    "<@inbound.test,@inbound.test:user@example.net>",
    "<user@example.net@inbound.test>",
    "<user@[127.0.0.1]>",
    "<user@[127.0.0.66]>",
    "<user@[192.0.2.1]>",
    "<user@[IPv6:::1]>",
    "<user@[inbound.test]>",
    "<user@inbound.test.>",
    "<user@INBOUND.TEST.>",
    "<user!example.net@inbound.test>",
    "<example.net!user@inbound.test>",
    "<user@sub.inbound.test>",
    "<user@inbound.test.example.net>",
    "<user@xinbound.test>",
    "<user@inbound.testx>",
    "<user@inbound.test:25>",
    "<user@inbound.test >",
    "user@example.net",
    "<x@example.net> NOTIFY=NEVER",
]


def untrusted(srv):
    c = srv.connect(source=UNTRUSTED)
    c.ehlo()
    return c


def try_rcpts(c, rcpts):
    """RCPT each address; returns {address: reply text}."""
    return {r: c.cmd("RCPT TO:" + r)[1] for r in rcpts}


@test
def untrusted_client_only_to_relay_domains():
    srv = Server()
    c = untrusted(srv)
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<x@example.net>", DENIED)
    c.cmd("RCPT TO:<user@inbound.test>", "250 2.1.5")
    c.cmd("RCPT TO:<user@INBOUND.TEST>", "250 2.1.5")
    c.cmd("RCPT TO:<Other.User@Inbound.Test>", "250 2.1.5")
    c.cmd("RCPT TO:<y@example.org>", DENIED)
    c.cmd("DATA", "354 ")
    c.send(b"Subject: in\r\n\r\nx\r\n.\r\n")
    qid = c.reply("250 2.0.0 Ok: queued as")[1].split()[-1]
    c.finish()
    rows = srv.query("select address, domain from recipients where msg_id=? order by rcpt_no", (qid,))
    assert rows == [("user@inbound.test", "inbound.test"), ("user@INBOUND.TEST", "inbound.test"),
                    ("Other.User@Inbound.Test", "inbound.test")], rows
    assert srv.query("select client_ip from messages") == [(UNTRUSTED,)]
    assert b"([127.0.0.66])" in srv.body(qid)[:200]


@test
def relay_tricks_refused_for_untrusted_client():
    srv = Server(config={"max_errors": "1000"})
    c = untrusted(srv)
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    got = try_rcpts(c, TRICKS)
    bad = {r: t for r, t in got.items()
           if not (re.match(DENIED, t) or re.match(r"501 5\.\d\.\d ", t))}
    assert not bad, "relay tricks not refused: %r" % bad
    # No recipient was accepted, so there is no transaction to complete.
    c.cmd("DATA", "554 5.5.1")
    # With the null sender too (bounces are no exception).
    c.cmd("RSET", "250 ")
    c.cmd("MAIL FROM:<>", "250 ")
    got = try_rcpts(c, TRICKS)
    assert not any(t.startswith("2") for t in got.values()), got
    c.cmd("DATA", "554 5.5.1")
    c.finish()
    assert srv.query("select count(*) from messages") == [(0,)]
    assert srv.query("select count(*) from recipients") == [(0,)]


@test
def postmaster_always_accepted():
    # RFC 5321 section 4.5.1: <Postmaster> must be accepted from anyone;
    # that is not relaying.  postmaster@elsewhere is.
    srv = Server()
    c = untrusted(srv)
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<Postmaster>", "250 2.1.5")
    c.cmd("RCPT TO:<postmaster@example.net>", DENIED)
    c.cmd("RCPT TO:<postmaster@inbound.test>", "250 2.1.5")
    c.finish()


@test
def wildcard_relay_domains():
    srv = Server(config={"relay_domains": "inbound.test, *.lab.test", "max_errors": "100"})
    c = untrusted(srv)
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    for ok in ("<user@a.lab.test>", "<user@A.LAB.TEST>", "<user@mx-1.lab.test>",
               "<user@inbound.test>"):
        c.cmd("RCPT TO:" + ok, "250 2.1.5")
    got = try_rcpts(c, ["<user@lab.test>", "<user@xlab.test>", "<user@a.lab.test.evil.net>",
                        "<user@a.lab.testx>", "<user@sub.inbound.test>", "<user@.lab.test>",
                        "<user%evil.net@a.lab.test>", "<user@a.lab.test.>"])
    bad = {r: t for r, t in got.items()
           if not (re.match(DENIED, t) or re.match(r"501 5\.\d\.\d ", t))}
    assert not bad, "accepted: %r" % bad
    assert re.match(DENIED, got["<user@lab.test>"]), got["<user@lab.test>"]
    c.finish()


@test
def trusted_client_relays_anywhere():
    srv = Server()
    c = srv.connect(source="127.0.0.1")
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    rcpts = ["x@example.net", "y@example.org", "user@[192.0.2.1]", "user%other@example.com",
             "user@inbound.test"]
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send(b"Subject: out\r\n\r\nx\r\n.\r\n")
    qid = c.reply("250 2.0.0 Ok: queued as")[1].split()[-1]
    c.finish()
    rows = srv.query("select address from recipients where msg_id=? order by rcpt_no", (qid,))
    assert [r[0] for r in rows] == rcpts, rows


@test
def relay_networks_are_cidr_ranges():
    # 127.0.0.64/30 holds .64-.67: .66 is trusted there, .68 is not, and
    # 127.0.0.1 is no longer trusted either.
    srv = Server(config={"relay_networks": "127.0.0.64/30"})
    for source, want in (("127.0.0.66", "250 2.1.5"), ("127.0.0.67", "250 2.1.5"),
                         ("127.0.0.68", DENIED), ("127.0.0.1", DENIED)):
        c = srv.connect(source=source)
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        code, text = c.cmd("RCPT TO:<x@example.net>")
        assert re.match(want, text), "%s: expected %r, got %r" % (source, want, text)
        c.finish()


@test
def smtplib_untrusted_client():
    srv = Server()
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(UNTRUSTED, 0)) as s:
        refused = s.sendmail("a@client.test", ["x@example.net", "user@inbound.test"],
                             b"Subject: s\r\n\r\nx\r\n")
        assert list(refused) == ["x@example.net"], refused
        code, text = refused["x@example.net"]
        assert code == 554 and text.startswith(b"5.7.1 "), refused
        try:
            s.sendmail("a@client.test", ["x@example.net"], b"Subject: s\r\n\r\nx\r\n")
            raise AssertionError("relay to x@example.net accepted")
        except smtplib.SMTPRecipientsRefused as e:
            assert e.recipients["x@example.net"][0] == 554, e.recipients
    rows = srv.query("select address from recipients")
    assert rows == [("user@inbound.test",)], rows


@test
def swaks_untrusted_and_trusted():
    srv = Server()
    rc, out = swaks(srv, "x@example.net", source=UNTRUSTED)
    assert re.search(r"<\*\* 554 5\.7\.1 .*Relay access denied", out), out
    assert rc != 0, out
    rc, out = swaks(srv, "user%example.net@inbound.test", source=UNTRUSTED)
    assert re.search(r"<\*\* 554 5\.7\.1 ", out), out
    assert rc != 0, out
    assert srv.query("select count(*) from messages") == [(0,)]
    rc, out = swaks(srv, "user@inbound.test", source=UNTRUSTED)
    assert rc == 0 and "queued as" in out, out
    rc, out = swaks(srv, "x@example.net", source="127.0.0.1")
    assert rc == 0 and "queued as" in out, out
    rows = srv.query("select r.address, m.client_ip from recipients r join messages m "
                     "on m.id = r.msg_id order by m.received_at, r.address")
    assert sorted(rows) == [("user@inbound.test", UNTRUSTED), ("x@example.net", "127.0.0.1")], rows


@test
def max_connections_per_ip():
    srv = Server(config={"max_connections_per_ip": "2", "workers": "16"})
    held = []
    for _ in range(2):
        c = srv.connect(source=UNTRUSTED)
        c.reply("220 ")
        held.append(c)
    third = srv.connect(source=UNTRUSTED)
    third.reply(r"421 4\.7\.0 ")
    assert third.closed(), "refused connection left open"
    # The limit is per address: another untrusted address is served.
    other = srv.connect(source="127.0.0.67")
    other.ehlo()
    other.finish()
    # The two held sessions still work.
    for c in held:
        c.cmd("EHLO client.test", "250 ")
    # When one ends, its slot is released (the release follows the close,
    # so retry until it shows up).
    held.pop().finish()
    deadline = time.time() + 10
    while True:
        c = srv.connect(source=UNTRUSTED)
        code, text = c.reply()
        if code == 220:
            break
        assert code == 421 and time.time() < deadline, text
        c.close()
        time.sleep(0.02)
    c.cmd("EHLO client.test", "250 ")
    c.finish()
    held.pop().finish()


@test
def relay_networks_exempt_from_connection_limit():
    srv = Server(config={"max_connections_per_ip": "2", "workers": "16"})
    trusted = []
    for _ in range(5):
        c = srv.connect(source="127.0.0.1")
        c.reply("220 ")
        trusted.append(c)
    for c in trusted:
        c.cmd("EHLO client.test", "250 ")
    # Untrusted clients are still limited meanwhile.
    u = [srv.connect(source=UNTRUSTED) for _ in range(3)]
    u[0].reply("220 ")
    u[1].reply("220 ")
    u[2].reply(r"421 4\.7\.0 ")
    assert u[2].closed()
    for c in trusted + u[:2]:
        c.finish()


if __name__ == "__main__":
    main()
