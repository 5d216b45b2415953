"""Accepting mail: a full transaction stored byte for byte, pipelining,
BDAT, restart persistence, and the session's basic replies."""
import os
import re
import smtplib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import Server, main, sqlite_test, test  # noqa: E402

RECEIVED_RE = (rb"^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
               rb"\tby relay\.test \(sluice\) with ESMTP id (\w{16})\r\n"
               rb"\tfor <rcpt@example\.net>;\r\n"
               rb"\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n")


@test
def full_transaction_stored_byte_for_byte():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    body = (b"From: a@client.test\r\nSubject: exact\r\n\r\nline 1\r\n"
            b"..leading dot\r\n\r\nlast\r\n")
    qid = c.mail(body=body + b".\r\n")
    c.cmd("QUIT", "221 ")
    stored = srv.body(qid)
    m = re.match(RECEIVED_RE, stored)
    assert m, "no Received header in %r" % stored[:300]
    assert m.group(1).decode() == qid
    expected = body.replace(b"\r\n..leading", b"\r\n.leading")
    assert stored[m.end():] == expected, stored[m.end():]
    row = srv.query("select sender, size, stored_size, body_type, client_ip, helo, protocol "
                    "from messages where id=?", (qid,))[0]
    assert row == ("sender@client.test", len(expected), len(stored), "7BIT",
                   "127.0.0.1", "client.test", "ESMTP"), row
    rc = srv.query("select address, domain, state, attempts from recipients where msg_id=?", (qid,))
    assert rc == [("rcpt@example.net", "example.net", "queued", 0)], rc
    assert "id=%s from=<sender@client.test>" % qid in srv.log()


@test
def smtplib_sendmail_and_views():
    srv = Server()
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        refused = s.sendmail("a@client.test", ["x@example.net", "y@example.org"],
                             b"Subject: two\r\n\r\nbody\r\n")
        assert refused == {}
    rows = srv.query("select recipient, domain, state from queue order by recipient")
    assert rows == [("x@example.net", "example.net", "queued"),
                    ("y@example.org", "example.org", "queued")], rows
    doms = srv.query("select domain, recipients, queued from queue_by_domain order by domain")
    assert doms == [("example.net", 1, 1), ("example.org", 1, 1)], doms


@test
def pipelining_replies_in_order():
    srv = Server()
    c = srv.connect()
    c.reply("220 ")
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.net>\r\n"
           b"RCPT TO:<bad address>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
    assert "PIPELINING" in c.reply("250 ")[1]
    c.reply("250 2.1.0")
    c.reply("250 2.1.5")
    c.reply("501 5.1.3")
    c.reply("250 2.1.5")
    c.reply("354 ")
    # The end of data and the next transaction and QUIT in one write.
    c.send(b"Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\n"
           b"DATA\r\n")
    c.reply("250 2.0.0 Ok: queued as")
    c.reply("250 2.1.0")
    c.reply("250 2.1.5")
    c.reply("354 ")
    c.send(b"bounce\r\n.\r\nQUIT\r\n")
    c.reply("250 2.0.0")
    c.reply("221 ")
    n = srv.query("select count(*) from messages")[0][0]
    assert n == 2, n
    assert srv.query("select sender from messages where sender=''") == [("",)]


@test
def bdat_chunks_and_binarymime():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test> BODY=BINARYMIME", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    part1 = b"Subject: bin\r\n\r\n\x00\x01"
    part2 = b"\xff\n\rraw.\r\n.\r\n"
    c.send(b"BDAT %d\r\n" % len(part1) + part1)
    c.reply(r"250 2\.0\.0 Ok: %d octets" % len(part1))
    c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    code, text = c.reply("250 2.0.0 Ok: queued as")
    qid = text.split()[-1]
    stored = srv.body(qid)
    assert stored.endswith(part1 + part2), stored
    assert srv.query("select body_type from messages where id=?", (qid,)) == [("BINARYMIME",)]
    # DATA is refused for BINARYMIME.
    c.cmd("MAIL FROM:<a@client.test> BODY=BINARYMIME", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("RSET", "250 ")
    # BDAT 0 LAST with an earlier chunk, text mode.
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.send(b"BDAT 9\r\nSubject: ")
    c.reply("250 ")
    c.send(b"BDAT 0 LAST\r\n")
    c.reply("250 2.0.0 Ok: queued as")


@test
def queue_survives_restart():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    qid = c.mail()
    c.close()
    srv.restart()
    assert srv.query("select id from messages") == [(qid,)]
    c = srv.connect()
    c.ehlo()
    qid2 = c.mail()
    assert qid2 != qid
    assert srv.query("select count(*) from messages")[0][0] == 2


@sqlite_test
def version_1_queue_is_upgraded_in_place():
    srv = Server(start=False)
    import sqlite3
    con = sqlite3.connect(srv.db)
    con.executescript(open(os.path.join(os.path.dirname(__file__), "..", "fixtures",
                                        "schema-v1.sql")).read())
    con.execute("insert into messages (id, received_at, sender, size, stored_size, client_ip,"
                " protocol) values ('OLD', 1, 'a@b', 1, 1, '127.0.0.1', 'ESMTP')")
    con.execute("insert into recipients (msg_id, rcpt_no, address, domain, next_attempt_at)"
                " values ('OLD', 0, 'c@d', 'd', 1)")
    con.execute("pragma user_version = 1")
    con.commit()
    con.close()
    srv.start()
    assert "upgraded the queue schema to version 2" in srv.log()
    assert "upgraded the queue schema to version 3" in srv.log()
    assert "upgraded the queue schema to version 4" in srv.log()
    assert "upgraded the queue schema to version 5" in srv.log()
    assert "upgraded the queue schema to version 6" in srv.log()
    assert "upgraded the queue schema to version 7" in srv.log()
    assert "upgraded the queue schema to version 8" in srv.log()
    assert "upgraded the queue schema to version 9" in srv.log()
    assert srv.query("pragma user_version") == [(9,)]
    assert srv.query("select count(*) from tlsrpt_results") == [(0,)]
    assert srv.query("select requiretls, tls_required_no from messages") == [(0, 0)]
    assert srv.query("select count(*) from sts_policies") == [(0,)]
    assert [r[1] for r in srv.query("pragma table_info(attempts)")][-2:] == \
        ["security", "security_why"]
    assert srv.query("select count(*) from sqlite_master where type = 'index'"
                     " and name in ('recipients_unreported', 'recipients_leased')") == [(2,)]
    assert srv.query("select address, lease_until from recipients where msg_id='OLD'") == [("c@d", None)]
    c = srv.connect()
    c.ehlo()
    c.mail()
    assert srv.query("select count(*) from messages")[0][0] == 2


@test
def basic_commands():
    srv = Server(config={"max_errors": "50"})
    c = srv.connect()
    c.reply("220 relay.test ESMTP")
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")
    c.cmd("HELO", "501 5.5.4")
    c.cmd("HELO client.test", "250 relay.test")
    c.cmd("MAIL FROM:<a@b.test> SIZE=10", "555 5.5.4")   # no ESMTP after HELO
    c.cmd("EHLO client.test", "250 SMTPUTF8")
    c.cmd("RCPT TO:<a@b.test>", "503 5.5.1")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("NOOP", "250 2.0.0")
    c.cmd("VRFY postmaster", "252 2.5.0")
    c.cmd("EXPN staff", "502 5.5.1")
    c.cmd("HELP", "214 2.0.0")
    c.cmd("TURN", "502 5.5.1")
    c.cmd("FOO bar", "500 5.5.1")
    c.cmd("MAIL FROM:<a@b.test>", "250 2.1.0")
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("RCPT TO:<x@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40example.net", "250 2.1.5")
    c.cmd("RSET", "250 2.0.0")
    c.cmd("DATA", "503 5.5.1")
    c.cmd("QUIT", "221 2.0.0")
    assert c.closed()


@test
def dsn_parameters_stored():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test> RET=HDRS ENVID=QQ+2B1 SMTPUTF8 BODY=8BITMIME", "250 ")
    c.cmd("RCPT TO:<b@example.net> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@example.net", "250 ")
    c.cmd("RCPT TO:<c@example.net> NOTIFY=NEVER", "250 ")
    c.cmd("DATA", "354 ")
    c.send("Subject: é\r\n\r\nünïcode\r\n.\r\n".encode())
    qid = c.reply("250 ")[1].split()[-1]
    row = srv.query("select dsn_ret, dsn_envid, smtputf8, body_type, protocol from messages where id=?", (qid,))
    assert row == [("HDRS", "QQ+2B1", 1, "8BITMIME", "UTF8SMTP")], row
    rc = srv.query("select address, notify, orcpt from recipients where msg_id=? order by rcpt_no", (qid,))
    assert rc == [("b@example.net", "SUCCESS,DELAY", "rfc822;b@example.net"),
                  ("c@example.net", "NEVER", None)], rc


if __name__ == "__main__":
    main()
