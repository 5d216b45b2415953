"""RFC 5321 session conformance: greeting, EHLO/HELO extensions, command
order, syntax and unknown-command replies, enhanced status codes on every
reply, address forms of section 4.1.2, SMTPUTF8, the limits of section
4.5.3.1 (line length, local part, recipients, message size, Received
headers), the Received header we add, VRFY/RSET/QUIT, max_errors and an
IPv6 client."""
import os
import re
import smtplib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import Server, main, test  # noqa: E402

DATE_RE = rb"\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n"
# RFC 3463 / RFC 2034: "CODE X.Y.Z text" with X the class of CODE.
ENHANCED_RE = r"^([245])\d\d \1\.\d{1,3}\.\d{1,3}( |$)"


def received_re(helo, ip, proto, rcpt=None):
    """The exact Received header sluice writes in front of a message."""
    forc = rb"\r\n\tfor <" + re.escape(rcpt.encode()) + rb">" if rcpt else b""
    return (rb"^Received: from " + re.escape(helo.encode()) + rb" \(" + re.escape(ip.encode())
            + rb"\)\r\n\tby relay\.test \(sluice\) with " + proto.encode()
            + rb" id (\w{16})" + forc + rb";\r\n" + DATE_RE)


def transaction(c, sender, rcpts, body):
    """MAIL, RCPT... (all must be accepted), DATA; returns the queue ID."""
    c.cmd("MAIL FROM:" + sender, "250 2.1.0")
    for r in rcpts:
        c.cmd("RCPT TO:" + r, "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send(body + b".\r\n")
    return c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]


def sized_message(n):
    """A message of exactly n octets (as received), CRLF lines of < 80."""
    msg = b"Subject: size\r\n\r\n"
    while n - len(msg) > 80:
        msg += b"x" * 78 + b"\r\n"
    rest = n - len(msg)
    assert rest >= 2
    return msg + b"y" * (rest - 2) + b"\r\n"


def stored_count(srv):
    return srv.query("select count(*) from messages")[0][0]


def ehlo_keywords(text):
    """EHLO reply lines after the first, as a list of "KEYWORD params"."""
    return [line[4:] for line in text.splitlines()[1:]]


@test
def greeting_and_ehlo_extensions():
    srv = Server(config={"max_message_size": "3145728"})
    c = srv.connect()
    c.reply(r"220 relay\.test ESMTP")
    code, text = c.cmd("EHLO client.test", "250 ")
    lines = text.splitlines()
    assert lines[0] == "250-relay.test", lines
    assert all(re.match(r"250[- ]", line) for line in lines), lines
    assert all(line[3] == "-" for line in lines[:-1]) and lines[-1][3] == " ", lines
    kw = ehlo_keywords(text)
    for ext in ("PIPELINING", "SIZE 3145728", "8BITMIME", "BINARYMIME", "CHUNKING",
                "ENHANCEDSTATUSCODES", "DSN", "STARTTLS", "SMTPUTF8"):
        assert ext in kw, "%s not advertised in %r" % (ext, kw)
    # AUTH only after TLS (RFC 4954 section 4), and only with auth_users.
    assert not any(k.split()[0] == "AUTH" for k in kw), kw
    c.finish()
    # smtplib sees the same extensions.
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        s.ehlo()
        for ext in ("pipelining", "size", "8bitmime", "binarymime", "chunking",
                    "enhancedstatuscodes", "dsn", "smtputf8"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == "3145728"


@test
def helo_gives_no_extensions():
    srv = Server()
    c = srv.connect()
    c.reply("220 ")
    code, text = c.cmd("HELO client.test", "250 relay.test")
    assert "\n" not in text, "HELO reply is multi-line: %r" % text
    assert not re.search(r"PIPELINING|SIZE|8BITMIME|CHUNKING|SMTPUTF8|DSN", text), text
    # A HELO session is plain SMTP: the Received header says so.
    qid = transaction(c, "<a@client.test>", ["<b@example.net>"], b"Subject: h\r\n\r\nx\r\n")
    c.finish()
    stored = srv.body(qid)
    m = re.match(received_re("client.test", "[127.0.0.1]", "SMTP", "b@example.net"), stored)
    assert m, stored[:300]
    assert srv.query("select protocol from messages") == [("SMTP",)]


@test
def command_order_enforced():
    srv = Server(config={"max_errors": "100"})
    c = srv.connect()
    c.reply("220 ")
    c.cmd("MAIL FROM:<a@client.test>", "503 5.5.1")
    c.cmd("RCPT TO:<b@example.net>", "503 5.5.1")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("BDAT 0 LAST", "503 5.5.1")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "503 5.5.1")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("MAIL FROM:<a@client.test>", "250 2.1.0")
    c.cmd("MAIL FROM:<a@client.test>", "503 5.5.1")     # nested MAIL
    c.cmd("DATA", "503 5.5.1")                          # no RCPT yet
    c.cmd("RSET", "250 2.0.0")
    # Every RCPT refused (syntax): DATA is "no valid recipients".
    c.cmd("MAIL FROM:<a@client.test>", "250 2.1.0")
    c.cmd("RCPT TO:<bad", "501 ")
    c.cmd("RCPT TO:<>", "501 ")
    c.cmd("DATA", "554 5.5.1")
    c.cmd("RSET", "250 ")
    c.finish()
    # Every RCPT refused by relay control, from an untrusted client.
    u = srv.connect(source="127.0.0.66")
    u.ehlo()
    u.cmd("MAIL FROM:<a@client.test>", "250 ")
    u.cmd("RCPT TO:<x@example.net>", "554 5.7.1")
    u.cmd("RCPT TO:<y@example.org>", "554 5.7.1")
    u.cmd("DATA", "554 5.5.1")
    # The session is still usable: a valid recipient, then DATA works.
    u.cmd("RCPT TO:<user@inbound.test>", "250 2.1.5")
    u.cmd("DATA", "354 ")
    u.send(b"Subject: o\r\n\r\nx\r\n.\r\n")
    u.reply("250 2.0.0 Ok: queued as")
    u.finish()
    assert stored_count(srv) == 1


@test
def syntax_errors_are_501():
    srv = Server(config={"max_errors": "100"})
    c = srv.connect()
    c.reply("220 ")
    c.cmd("EHLO", "501 5.5.4")
    c.cmd("HELO", "501 5.5.4")
    c.cmd("EHLO two words", "501 5.5.4")
    c.cmd("EHLO client.test", "250 ")
    for bad in ("MAIL", "MAIL FROM", "MAIL TO:<a@client.test>", "MAIL FROM:a@client.test",
                "MAIL FROM:<a@client.test", "MAIL FROM:<a@@client.test>",
                "MAIL FROM:<a b@client.test>", "MAIL FROM:<.a@client.test>",
                "MAIL FROM:<a..b@client.test>", "MAIL FROM:<a@client..test>",
                "MAIL FROM:<a@-client.test>", "MAIL FROM:<a@>", "MAIL FROM:<@client.test>",
                "MAIL FROM:<a@client.test>x", "MAIL FROM:<a@client.test> SIZE=ten",
                "MAIL FROM:<a@client.test> BODY=9BIT", "MAIL FROM:<a@client.test> SIZE=1 SIZE=1",
                "MAIL FROM:<a@[300.0.0.1]>", "MAIL FROM:<a@[IPv6:nonsense]>"):
        code, text = c.cmd(bad)
        assert code == 501 and re.match(r"501 5\.\d\.\d ", text), "%r -> %r" % (bad, text)
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    for bad in ("RCPT", "RCPT TO", "RCPT FROM:<b@example.net>", "RCPT TO:b@example.net",
                "RCPT TO:<b@example.net", "RCPT TO:<>", "RCPT TO:<b@example.net> NOTIFY=SOMETIMES",
                "RCPT TO:<b@example.net> NOTIFY=NEVER,SUCCESS", "RCPT TO:<b@@example.net>"):
        code, text = c.cmd(bad)
        assert code == 501 and re.match(r"501 5\.\d\.\d ", text), "%r -> %r" % (bad, text)
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.cmd("DATA now", "501 5.5.4")
    c.cmd("RSET please", "501 5.5.4")
    c.cmd("VRFY", "501 5.5.4")
    # Unknown parameters are 555, not 501 (RFC 5321 section 4.1.1.11).
    c.cmd("RSET", "250 ")
    c.cmd("MAIL FROM:<a@client.test> FROB=1", "555 5.5.4")
    c.finish()


@test
def unknown_and_unimplemented_commands():
    srv = Server(config={"max_errors": "100"})
    c = srv.connect()
    c.ehlo()
    for line in ("FOO", "FOO bar", "XYZZY", "MAILFROM:<a@b.test>", "EHLOclient.test", "DAT"):
        c.cmd(line, r"500 5\.5\.[12] ")
    for line in ("TURN", "ETRN example.net", "ATRN", "SEND FROM:<a@b.test>",
                 "SOML FROM:<a@b.test>", "SAML FROM:<a@b.test>", "EXPN staff"):
        c.cmd(line, r"502 5\.5\.1 ")
    # Verbs are case-insensitive (RFC 5321 section 2.4).
    c.cmd("noop", "250 2.0.0")
    c.cmd("mail from:<a@client.test>", "250 2.1.0")
    c.cmd("rcpt to:<b@example.net>", "250 2.1.5")
    c.cmd("rset", "250 2.0.0")
    c.cmd("HeLp", "214 2.0.0")
    c.finish()


@test
def every_reply_has_an_enhanced_status_code():
    srv = Server(config={"max_errors": "30", "max_message_size": "4096"})
    c = srv.connect()
    c.reply("220 ")
    replies = []

    def run(line):
        replies.append((line, c.cmd(line)[1]))

    for line in ("NOOP", "RSET", "HELP", "VRFY someone", "VRFY", "EXPN list", "TURN", "FOO",
                 "MAIL FROM:<a@client.test>", "RCPT TO:<b@example.net>", "DATA", "BDAT 0 LAST"):
        run(line)
    c.cmd("EHLO client.test", "250 ")       # exempt (RFC 2034 section 3)
    for line in ("MAIL FROM:<a@client.test> SIZE=99999999", "MAIL FROM:<a@client.test> FROB",
                 "MAIL FROM:<jö@client.test>", "MAIL FROM:<a@client.test>",
                 "MAIL FROM:<a@client.test>", "RCPT TO:<bad", "RCPT TO:<>",
                 "RCPT TO:<ü@example.net>", "RCPT TO:<b@example.net>", "DATA x", "NOOP " + "x" * 600):
        run(line)
    c.cmd("DATA", "354 ")                    # intermediate: no class 3 codes
    c.send(b"Subject: e\r\n\r\nx\r\n.\r\n")
    replies.append(("<data>", c.reply()[1]))
    run("MAIL FROM:<a@client.test>")
    run("RCPT TO:<b@example.net>")
    c.send(b"BDAT 3\r\nabc")
    replies.append(("BDAT 3", c.reply()[1]))
    c.send(b"BDAT 2 LAST\r\n\r\n")
    replies.append(("BDAT 2 LAST", c.reply()[1]))
    run("MAIL FROM:<a@client.test>")
    run("RCPT TO:<b@example.net>")
    c.cmd("DATA", "354 ")
    c.send(sized_message(5000) + b".\r\n")
    replies.append(("<big data>", c.reply()[1]))
    run("QUIT")
    assert len(replies) > 30, len(replies)
    bad = [(line, text) for line, text in replies
           if not all(re.match(ENHANCED_RE, x) for x in text.splitlines())]
    assert not bad, "replies without an enhanced status code: %r" % bad
    # The session-ending 421 of max_errors carries one too.
    e = Server(config={"max_errors": "1"}).connect()
    e.reply("220 ")
    e.send(b"FOO\r\n")
    e.reply("500 ")
    code, text = e.reply()
    assert code == 421 and re.match(ENHANCED_RE, text), text


@test
def address_forms_rfc5321():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    rcpts = [
        ('<"john doe"@example.net>', '"john doe"@example.net'),
        (r'<"a\"b\\c"@example.net>', r'"a\"b\\c"@example.net'),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        ("<@a.test,@b.test:routed@example.net>", "routed@example.net"),
        ("<@a.test:single@example.net>", "single@example.net"),
        ("<Postmaster>", "Postmaster"),
        ("<postmaster>", "Postmaster"),
        ("<user+tag/x=y!{}~^`'#$&*?|@example.org>", "user+tag/x=y!{}~^`'#$&*?|@example.org"),
        ("<first.last@sub-domain.example.net>", "first.last@sub-domain.example.net"),
    ]
    c.cmd("MAIL FROM:<>", "250 2.1.0")
    for raw, _ in rcpts:
        c.cmd("RCPT TO:" + raw, "250 2.1.5")
    c.cmd("DATA", "354 ")
    c.send(b"Subject: forms\r\n\r\nx\r\n.\r\n")
    qid = c.reply("250 ")[1].split()[-1]
    # Quoted local part and address literal as a sender; "FROM: <" with
    # one space is tolerated.
    qid2 = transaction(c, '<"quoted sender"@[192.0.2.7]>', ["<b@example.net>"], b"x\r\n")
    qid3 = transaction(c, "<@relay.example:src@client.test>", ["<b@example.net>"], b"x\r\n")
    c.cmd("MAIL FROM: <spaced@client.test>", "250 2.1.0")
    c.cmd("RSET", "250 ")
    c.finish()
    assert srv.query("select sender from messages where id=?", (qid,)) == [("",)]
    got = srv.query("select address from recipients where msg_id=? order by rcpt_no", (qid,))
    assert [r[0] for r in got] == [want for _, want in rcpts], got
    assert srv.query("select sender from messages where id=?", (qid2,)) == \
        [('"quoted sender"@[192.0.2.7]',)]
    assert srv.query("select sender from messages where id=?", (qid3,)) == [("src@client.test",)]


@test
def smtputf8_addresses():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<jörg@client.test>", r"553 5\.6\.7 ")
    c.cmd("MAIL FROM:<a@bücher.test>", r"553 5\.6\.7 ")
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<ünï@example.net>", r"553 5\.6\.7 ")
    c.cmd('RCPT TO:<"ü x"@example.net>', r"553 5\.6\.7 ")
    c.cmd("RSET", "250 ")
    c.cmd("MAIL FROM:<jörg@bücher.test> SMTPUTF8", "250 2.1.0")
    c.cmd("RCPT TO:<ünï@exämple.net>", "250 2.1.5")
    c.send(b"RCPT TO:<\xff\xfe@example.net>\r\n")       # not UTF-8 at all
    c.reply("501 5.1.3")
    c.cmd("DATA", "354 ")
    c.send("Subject: ü\r\n\r\nünïcödé\r\n.\r\n".encode())
    qid = c.reply("250 ")[1].split()[-1]
    c.finish()
    assert srv.query("select sender, smtputf8 from messages where id=?", (qid,)) == \
        [("jörg@bücher.test", 1)]
    assert srv.query("select address, domain from recipients where msg_id=?", (qid,)) == \
        [("ünï@exämple.net", "exämple.net")]
    assert srv.body(qid).endswith("Subject: ü\r\n\r\nünïcödé\r\n".encode())
    # smtplib with SMTPUTF8 sends UTF-8 commands.
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        refused = s.sendmail("émile@client.test", ["zoë@example.org"],
                             "Subject: x\r\n\r\nçà\r\n".encode(), mail_options=["SMTPUTF8"])
        assert refused == {}
    rows = srv.query("select m.sender, r.address from messages m join recipients r "
                     "on r.msg_id = m.id where m.id != ?", (qid,))
    assert rows == [("émile@client.test", "zoë@example.org")], rows


@test
def command_line_length_limit():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    # 512 octets including CRLF is the limit (RFC 5321 section 4.5.3.1.4).
    c.cmd("NOOP " + "x" * (512 - 2 - 5), "250 2.0.0")
    c.cmd("NOOP " + "x" * (512 - 2 - 5 + 1), "500 5.5.2")
    c.cmd("NOOP", "250 2.0.0")
    # Far longer than any buffer: one reply, and the rest of the line is
    # not read as commands.
    c.send(b"HELP " + b"y" * 5000 + b" QUIT\r\nNOOP\r\n")
    c.reply("500 5.5.2")
    c.reply(r"250 2\.0\.0 Ok$")
    # A transaction still works afterwards.
    transaction(c, "<a@client.test>", ["<b@example.net>"], b"x\r\n")
    c.finish()
    assert stored_count(srv) == 1


@test
def local_part_and_path_length_limits():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<%s@client.test>" % ("s" * 65), r"501 5\.1\.7 ")
    c.cmd("MAIL FROM:<%s@client.test>" % ("s" * 64), "250 2.1.0")
    c.cmd("RCPT TO:<%s@example.net>" % ("r" * 65), r"501 5\.1\.3 ")
    c.cmd("RCPT TO:<%s@example.net>" % ("r" * 64), "250 2.1.5")
    # The whole path is at most 256 octets with its angle brackets.
    domain = ".".join(["d" * 60] * 3) + ".example"          # 191 octets
    c.cmd("RCPT TO:<%s@%s>" % ("r" * 63, domain), "250 2.1.5")  # 256
    c.cmd("RCPT TO:<%s@%s>" % ("r" * 64, domain), r"501 5\.1\.3 ")  # 257
    c.cmd("DATA", "354 ")
    c.send(b"x\r\n.\r\n")
    qid = c.reply("250 ")[1].split()[-1]
    c.finish()
    got = srv.query("select address from recipients where msg_id=? order by rcpt_no", (qid,))
    assert got == [("r" * 64 + "@example.net",), ("r" * 63 + "@" + domain,)], got


@test
def too_many_recipients():
    srv = Server(config={"max_recipients": "3", "max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    for i in range(3):
        c.cmd("RCPT TO:<r%d@example.net>" % i, "250 2.1.5")
    c.cmd("RCPT TO:<r3@example.net>", "452 4.5.3")
    c.cmd("RCPT TO:<r4@example.net>", "452 4.5.3")
    c.cmd("DATA", "354 ")
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
    qid = c.reply("250 2.0.0 Ok: queued as")[1].split()[-1]
    # The limit is per transaction: the next one starts at zero.
    qid2 = transaction(c, "<a@client.test>", ["<s%d@example.net>" % i for i in range(3)], b"x\r\n")
    c.finish()
    got = srv.query("select address from recipients where msg_id=? order by rcpt_no", (qid,))
    assert got == [("r0@example.net",), ("r1@example.net",), ("r2@example.net",)], got
    assert srv.query("select count(*) from recipients where msg_id=?", (qid2,)) == [(3,)]


@test
def message_size_limits():
    srv = Server(config={"max_message_size": "2048", "max_errors": "50"})
    c = srv.connect()
    code, text = c.ehlo()
    assert "SIZE 2048" in ehlo_keywords(text), text
    # Declared size (RFC 1870).
    c.cmd("MAIL FROM:<a@client.test> SIZE=2049", "552 5.3.4")
    c.cmd("MAIL FROM:<a@client.test> SIZE=99999999999999999999", r"5\d\d ")
    c.cmd("MAIL FROM:<a@client.test> SIZE=2048", "250 2.1.0")
    c.cmd("RSET", "250 ")
    # Exactly at the limit: accepted; our Received header does not count.
    qid = transaction(c, "<a@client.test>", ["<b@example.net>"], sized_message(2048))
    # One octet over, and far over: refused after the data.
    for size in (2049, 300000):
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<b@example.net>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(sized_message(size) + b".\r\n")
        c.reply("552 5.3.4")
        c.cmd("NOOP", r"250 2\.0\.0 Ok$")
    # Too big even when the client lies in SIZE=.
    c.cmd("MAIL FROM:<a@client.test> SIZE=100", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.cmd("DATA", "354 ")
    c.send(sized_message(4000) + b".\r\n")
    c.reply("552 5.3.4")
    # BDAT: one chunk over the limit, and chunks that add up to too much.
    c.cmd("MAIL FROM:<a@client.test> BODY=8BITMIME", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    big = sized_message(2049)
    c.send(b"BDAT %d LAST\r\n" % len(big) + big)
    c.reply("552 5.3.4")
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.send(b"BDAT 1500\r\n" + big[:1500])
    c.reply("250 ")
    c.send(b"BDAT 549\r\n" + big[1500:])
    c.reply("552 5.3.4")
    c.cmd("RSET", "250 ")
    c.cmd("NOOP", r"250 2\.0\.0 Ok$")
    c.finish()
    assert srv.query("select id, size from messages") == [(qid, 2048)]
    assert srv.query("select count(distinct msg_id) from body_chunks") == [(1,)]
    assert srv.query("select count(*) from incoming") == [(0,)]


@test
def too_many_received_headers():
    srv = Server(config={"max_received_headers": "3", "max_errors": "50"})
    c = srv.connect()
    c.ehlo()

    def msg(n, body_extra=b""):
        hops = b"".join(b"Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:0%d +0000\r\n"
                        % (i, i + 1, i) for i in range(n))
        return hops + b"Subject: loop\r\n\r\nbody\r\n" + body_extra

    # Exactly at the limit: accepted.  Received lines in the body do not count.
    qid = transaction(c, "<a@client.test>", ["<b@example.net>"],
                      msg(3, b"Received: not a header\r\n" * 5))
    for n in (4, 10):
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<b@example.net>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(msg(n) + b".\r\n")
        c.reply("554 5.4.6")
    # The field name is case-insensitive.
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.cmd("DATA", "354 ")
    c.send(b"received: from a\r\n" + msg(3).replace(b"Received:", b"RECEIVED:", 1) + b".\r\n")
    c.reply("554 5.4.6")
    c.finish()
    assert srv.query("select id from messages") == [(qid,)]


@test
def received_header_format():
    srv = Server()
    c = srv.connect()
    c.ehlo("mx.client.test")
    body = b"Subject: r\r\n\r\nx\r\n"
    one = transaction(c, "<a@client.test>", ["<rcpt@example.net>"], body)
    two = transaction(c, "<a@client.test>", ["<r1@example.net>", "<r2@example.net>"], body)
    c.cmd("EHLO [127.0.0.1]", "250 ")
    lit = transaction(c, "<a@client.test>", ["<rcpt@example.net>"], body)
    c.finish()
    s1 = srv.body(one)
    m = re.match(received_re("mx.client.test", "[127.0.0.1]", "ESMTP", "rcpt@example.net"), s1)
    assert m, s1[:300]
    assert m.group(1).decode() == one
    assert s1[m.end():] == body
    s2 = srv.body(two)
    m = re.match(received_re("mx.client.test", "[127.0.0.1]", "ESMTP"), s2)
    assert m and m.group(1).decode() == two, s2[:300]
    assert b"for <" not in s2[:m.end()], s2[:300]
    assert s2[m.end():] == body
    s3 = srv.body(lit)
    assert re.match(received_re("[127.0.0.1]", "[127.0.0.1]", "ESMTP", "rcpt@example.net"), s3), s3[:300]
    sizes = srv.query("select id, size, stored_size from messages where id=?", (one,))
    assert sizes == [(one, len(body), len(s1))], sizes


@test
def received_header_keeps_long_helo_name():
    # A valid EHLO domain of 243 octets (RFC 5321 allows 255) must appear
    # whole in the Received header's "from" clause, not cut short.
    srv = Server()
    c = srv.connect()
    helo = ".".join(["h" * 60] * 4)
    c.ehlo(helo)
    qid = transaction(c, "<a@client.test>", ["<rcpt@example.net>"], b"x\r\n")
    c.finish()
    stored = srv.body(qid)
    m = re.match(received_re(helo, "[127.0.0.1]", "ESMTP", "rcpt@example.net"), stored)
    assert m, "Received header does not carry the EHLO name: %r" % stored[:400]
    assert srv.query("select helo from messages") == [(helo,)]


@test
def vrfy_rset_noop_quit():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    code, text = c.cmd("VRFY postmaster", r"252 2\.\d\.\d ")
    code, text = c.cmd("VRFY <someone@example.net>", r"252 2\.\d\.\d ")
    # RSET clears sender and recipients.
    c.cmd("MAIL FROM:<old@client.test>", "250 ")
    c.cmd("RCPT TO:<old@example.net>", "250 ")
    c.cmd("RSET", "250 2.0.0")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("RCPT TO:<x@example.net>", "503 5.5.1")
    # NOOP keeps the transaction.
    c.cmd("MAIL FROM:<new@client.test>", "250 2.1.0")
    c.cmd("NOOP", "250 2.0.0")
    c.cmd("RCPT TO:<new@example.net>", "250 ")
    c.cmd("NOOP", "250 2.0.0")
    c.cmd("DATA", "354 ")
    c.send(b"x\r\n.\r\n")
    qid = c.reply("250 ")[1].split()[-1]
    # EHLO in the middle of a transaction resets it (RFC 5321 4.1.4).
    c.cmd("MAIL FROM:<gone@client.test>", "250 ")
    c.cmd("RCPT TO:<gone@example.net>", "250 ")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("QUIT", "221 2.0.0")
    assert c.closed(), "connection still open after QUIT"
    assert srv.query("select id, sender from messages") == [(qid, "new@client.test")]
    assert srv.query("select address from recipients") == [("new@example.net",)]
    # smtplib agrees: VRFY is 252, RSET and NOOP 250, QUIT 221.
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        assert s.verify("someone")[0] == 252
        assert s.rset()[0] == 250
        assert s.noop()[0] == 250


@test
def max_errors_ends_session():
    srv = Server(config={"max_errors": "4"})
    c = srv.connect()
    c.ehlo()
    c.cmd("FOO", "500 ")
    c.cmd("RCPT TO:<a@example.net>", "503 ")
    c.cmd("MAIL FROM:<bad", "501 ")
    # The fourth error and a command behind it in one write: the session
    # ends after the fourth, the NOOP is never answered.
    c.send(b"TURN\r\nNOOP\r\n")
    c.reply("502 ")
    c.reply(r"421 4\.7\.0 ")
    assert c.closed()
    assert c.buf == b"", "data after 421: %r" % c.buf
    # Successful commands do not count.
    c = srv.connect()
    c.ehlo()
    for _ in range(10):
        c.cmd("NOOP", "250 ")
    c.cmd("FOO", "500 ")
    c.cmd("NOOP", "250 ")
    c.finish()


@test
def ipv6_client():
    srv = Server(host="::1")
    c = srv.connect()
    c.ehlo()
    qid = transaction(c, "<a@client.test>", ["<rcpt@example.net>"], b"Subject: 6\r\n\r\nx\r\n")
    c.finish()
    stored = srv.body(qid)
    m = re.match(received_re("client.test", "[IPv6:::1]", "ESMTP", "rcpt@example.net"), stored)
    assert m and m.group(1).decode() == qid, stored[:300]
    assert srv.query("select client_ip from messages") == [("::1",)]
    with smtplib.SMTP("::1", srv.port, local_hostname="client.test") as s:
        assert s.sendmail("a@client.test", ["b@example.net"], b"x\r\n") == {}
    assert stored_count(srv) == 2


if __name__ == "__main__":
    main()
