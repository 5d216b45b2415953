"""SMTP smuggling: the end of DATA is only <CRLF>.<CRLF>.  For each
near-terminator byte sequence, a message that carries a complete second
transaction behind it must give one clear 5xx and store nothing (the
default bare_newline = reject), or be stored as ONE message with CRLF line
endings (bare_newline = normalize).  Never a second, smuggled message.
Also: NUL octets, over-long lines, dot-unstuffing, BDAT, and swaks sending
raw DATA."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import swaks  # noqa: E402
from sluicetest import Server, main, test  # noqa: E402

PREFIX = b"From: a@client.test\r\nSubject: smuggle\r\n\r\nfirst line"
SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"smuggled\r\n")
# The data ends with the smuggled block and the real "<CRLF>.<CRLF>".
TERMINATOR = b".\r\n"

BARE = r"550 5\.5\.2 "
NUL = r"554 5\.6\.0 "
# name: (sequence, reply with bare_newline = reject, reply with normalize
# or None when it must be accepted, the acceptable normalised forms of the
# sequence in the stored body)
CASES = {
    "lf_dot_lf": (b"\n.\n", BARE, None, [b"\r\n.\r\n"]),
    "lf_dot_crlf": (b"\n.\r\n", BARE, None, [b"\r\n.\r\n"]),
    "crlf_dot_lf": (b"\r\n.\n", BARE, None, [b"\r\n.\r\n", b"\r\n\r\n"]),
    "cr_dot_crlf": (b"\r.\r\n", BARE, None, [b"\r\n.\r\n"]),
    "crlf_dot_cr": (b"\r\n.\r", BARE, None, [b"\r\n.\r\n", b"\r\n\r\n"]),
    "cr_dot_cr": (b"\r.\r", BARE, None, [b"\r\n.\r\n"]),
    "bare_lf_in_line": (b" bare\nlf\r\n", BARE, None, [b" bare\r\nlf\r\n"]),
    "bare_cr_in_line": (b" bare\rcr\r\n", BARE, None, [b" bare\r\ncr\r\n"]),
    "crlf_nul_dot_crlf": (b"\r\n\x00.\r\n", NUL, NUL, None),
}
BARE_ENDING_RE = rb"\r(?!\n)|(?<!\r)\n"


def start_data(c, rcpt="<rcpt@example.net>"):
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:" + rcpt, "250 ")
    c.cmd("DATA", "354 ")


def end_session(c):
    """NOOP must get its own reply (no smuggled command was run and no
    reply is pending), then QUIT; nothing else may come."""
    c.cmd("NOOP", r"250 2\.0\.0 Ok$")
    c.cmd("QUIT", "221 ")
    assert c.closed(), "still open after QUIT"
    assert c.buf == b"", "unexpected replies after QUIT: %r" % c.buf


def assert_no_smuggled_message(srv):
    assert srv.query("select count(*) from recipients where address like '%victim%'") == [(0,)]
    assert srv.query("select count(*) from messages where sender = 'evil@x'") == [(0,)]


def assert_nothing_stored(srv):
    assert_no_smuggled_message(srv)
    assert srv.query("select count(*) from messages") == [(0,)]
    assert srv.query("select count(*) from recipients") == [(0,)]
    assert srv.query("select count(*) from body_chunks") == [(0,)]
    assert srv.query("select count(*) from incoming") == [(0,)]


def message_text(srv, qid):
    """The stored message without our Received header."""
    stored = srv.body(qid)
    m = re.match(rb"Received: .*?\r\n(\t.*?\r\n)+", stored, re.S)
    assert m, stored[:300]
    return stored[m.end():]


def smuggle(srv, seq, split=False):
    """Send one message with `seq` and a whole transaction behind it;
    returns the client and the reply to the end of data."""
    c = srv.connect()
    c.ehlo()
    start_data(c)
    data = PREFIX + seq + SMUGGLED + TERMINATOR
    if split:
        for i in range(len(data)):
            c.send(data[i:i + 1])
    else:
        c.send(data)
    return c, c.reply()


def check_reject(name, seq, want, split=False):
    srv = Server()
    c, (code, text) = smuggle(srv, seq, split)
    assert re.match(want, text), "%s: expected %r, got %r" % (name, want, text)
    end_session(c)
    assert_nothing_stored(srv)


def check_normalize(name, seq, want, forms, split=False):
    srv = Server(config={"bare_newline": "normalize"})
    c, (code, text) = smuggle(srv, seq, split)
    if want is not None:
        assert re.match(want, text), "%s: expected %r, got %r" % (name, want, text)
        end_session(c)
        assert_nothing_stored(srv)
        return
    assert re.match(r"250 2\.0\.0 Ok: queued as \w+$", text), "%s: %r" % (name, text)
    qid = text.split()[-1]
    end_session(c)
    assert_no_smuggled_message(srv)
    assert srv.query("select id from messages") == [(qid,)]
    assert srv.query("select address from recipients") == [("rcpt@example.net",)]
    body = message_text(srv, qid)
    assert not re.search(BARE_ENDING_RE, body), "%s: bare CR/LF stored: %r" % (name, body)
    assert body in [PREFIX + f + SMUGGLED for f in forms], "%s: stored %r" % (name, body)
    size = srv.query("select size from messages")[0][0]
    assert size == len(body), (size, len(body))


def register(name, fn):
    fn.__name__ = name
    test(fn)


for _name, (_seq, _rej, _norm, _forms) in CASES.items():
    register("reject_" + _name,
             lambda n=_name, s=_seq, w=_rej: check_reject(n, s, w))
    register("normalize_" + _name,
             lambda n=_name, s=_seq, w=_norm, f=_forms: check_normalize(n, s, w, f))


SPLIT_CASES = ("crlf_dot_cr", "lf_dot_crlf", "cr_dot_cr", "crlf_nul_dot_crlf")


@test
def reject_one_octet_per_write():
    # The decoder's state survives any split of the input.
    for name in SPLIT_CASES:
        seq, rej, norm, forms = CASES[name]
        check_reject(name, seq, rej, split=True)


@test
def normalize_one_octet_per_write():
    for name in SPLIT_CASES:
        seq, rej, norm, forms = CASES[name]
        check_normalize(name, seq, norm, forms, split=True)


@test
def clean_message_after_rejected_one():
    # After the 5xx the session is in a clean state: the next transaction
    # stores exactly one message, without any of the earlier data.
    srv = Server()
    c, (code, text) = smuggle(srv, b"\n.\n")
    assert re.match(BARE, text), text
    start_data(c, "<next@example.net>")
    c.send(b"Subject: clean\r\n\r\nok\r\n.\r\n")
    qid = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    end_session(c)
    assert_no_smuggled_message(srv)
    assert srv.query("select id from messages") == [(qid,)]
    assert message_text(srv, qid) == b"Subject: clean\r\n\r\nok\r\n"


@test
def nul_octet_refused():
    for mode in ("reject", "normalize"):
        srv = Server(config={"bare_newline": mode})
        c = srv.connect()
        c.ehlo()
        start_data(c)
        c.send(b"Subject: nul\r\n\r\nhello\x00world\r\n.\r\n")
        c.reply(NUL)
        end_session(c)
        assert_nothing_stored(srv)


@test
def line_length_limit_in_data():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.ehlo()
    # 998 octets plus CRLF is the longest line (RFC 5322 section 2.1.1).
    ok_line = b"a" * 998
    start_data(c)
    c.send(b"Subject: long\r\n\r\n" + ok_line + b"\r\n.\r\n")
    qid = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    for line in (b"b" * 999, b"c" * 5000, b"Subject: " + b"d" * 990):
        start_data(c)
        c.send(b"Subject: long\r\n\r\n" + line + b"\r\n.\r\n")
        c.reply(NUL)     # 554 5.6.0
    # A leading dot that is unstuffed does not count: "." + 998 octets.
    start_data(c)
    c.send(b"Subject: long\r\n\r\n." + ok_line + b"\r\n.\r\n")
    qid2 = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    end_session(c)
    assert sorted(r[0] for r in srv.query("select id from messages")) == sorted([qid, qid2])
    assert message_text(srv, qid) == b"Subject: long\r\n\r\n" + ok_line + b"\r\n"
    assert message_text(srv, qid2) == b"Subject: long\r\n\r\n" + ok_line + b"\r\n"


@test
def dot_unstuffing():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    start_data(c)
    sent = (b"Subject: dots\r\n\r\n..x\r\n..\r\n...\r\n. space\r\nmid.dle.\r\n"
            b"..\r\nend\r\n.\r\n")
    c.send(sent)
    qid = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    # The message ends at the first "." line; what follows is commands.
    start_data(c)
    c.send(b"before\r\n.\r\nafter\r\n.\r\nNOOP\r\n")
    qid2 = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    c.reply(r"500 5\.5\.1 ")             # "after" is not a command
    c.reply(r"500 5\.5\.1 ")             # neither is "."
    c.reply(r"250 2\.0\.0 Ok$")
    # An empty message: the terminator right after 354 (the first line
    # counts as preceded by CRLF).
    start_data(c)
    c.send(b".\r\n")
    qid3 = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    end_session(c)
    assert message_text(srv, qid) == (b"Subject: dots\r\n\r\n.x\r\n.\r\n..\r\n space\r\n"
                                      b"mid.dle.\r\n.\r\nend\r\n")
    assert message_text(srv, qid2) == b"before\r\n"
    assert message_text(srv, qid3) == b""
    assert srv.query("select size from messages where id=?", (qid3,)) == [(0,)]
    assert srv.query("select count(*) from messages") == [(3,)]


@test
def bdat_has_no_terminator():
    # With CHUNKING the chunk sizes end the message: "<CRLF>.<CRLF>" and
    # the commands behind it are plain message data, stored as sent.
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<rcpt@example.net>", "250 ")
    chunk = PREFIX + b"\r\n.\r\n" + SMUGGLED + TERMINATOR
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    qid = c.reply(r"250 2\.0\.0 Ok: queued as \w+$")[1].split()[-1]
    # Bare LF in a text-mode chunk is refused like in DATA.
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<rcpt@example.net>", "250 ")
    bad = PREFIX + b"\n.\n" + SMUGGLED + TERMINATOR
    c.send(b"BDAT %d LAST\r\n" % len(bad) + bad)
    c.reply(BARE)
    end_session(c)
    assert_no_smuggled_message(srv)
    assert srv.query("select id from messages") == [(qid,)]
    assert message_text(srv, qid) == chunk


# swaks sends the data as given and adds CRLF: it ends with "\r\n.\r\n".
SWAKS_DATA = PREFIX + b"\n.\n" + SMUGGLED + b"."


@test
def swaks_raw_bare_lf_rejected():
    srv = Server()
    rc, out = swaks(srv, data=SWAKS_DATA)
    assert re.search(r"<\*\* 550 5\.5\.2 ", out), out
    assert rc != 0, out
    assert_nothing_stored(srv)


@test
def swaks_raw_bare_lf_normalized():
    srv = Server(config={"bare_newline": "normalize"})
    rc, out = swaks(srv, data=SWAKS_DATA)
    assert rc == 0, out
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as", out), out
    assert_no_smuggled_message(srv)
    (qid,), = srv.query("select id from messages")
    assert message_text(srv, qid) == PREFIX + b"\r\n.\r\n" + SMUGGLED


if __name__ == "__main__":
    main()
