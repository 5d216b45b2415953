"""`sluice sendmail`: the sendmail(8) command line for cron jobs and scripts.

The message goes over SMTP to the running relay (the harness server keeps it
in the queue: delivery_threads = 0) or, with no relay answering, straight
into the queue file; a sink on 127.0.0.2 stands in for the remote MX when a
test follows the mail to the end.  Tests run as root (chown checks)."""
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from mxtest import ScriptedMX  # noqa: E402
from sink import Sink  # noqa: E402
from sluicetest import (BIN, SANITIZER_PATTERNS, Server, free_port, main,  # noqa: E402
                        poll_until, sqlite_test, test)

LOGIN = pwd.getpwuid(os.geteuid()).pw_name
DATE_RE = rb"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"


def sendmail(srv, args, data, via_env=False, argv=None, cfg=None):
    """Run sendmail with `data` on stdin; returns (status, stdout, stderr).
    The config is given with -C, or with SLUICE_CONFIG when `via_env`."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    cfg = cfg or srv.cfgpath
    if via_env:
        env["SLUICE_CONFIG"] = cfg
    else:
        args = ["-C", cfg] + args
    cmd = (argv or [BIN, "sendmail"]) + args
    if isinstance(data, str):
        data = data.encode()
    p = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=30)
    for pat in SANITIZER_PATTERNS:
        assert pat not in p.stderr, "sanitizer report:\n%s" % p.stderr.decode(errors="replace")
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def ids(srv):
    return [r[0] for r in srv.query("select id from messages order by received_at, id")]


def new_id(srv, before):
    """The one message that arrived since `before` (a list of ids)."""
    now = [i for i in ids(srv) if i not in before]
    assert len(now) == 1, "expected one new message, got %r" % now
    return now[0]


def rcpts(srv, msg_id):
    return sorted(r[0] for r in srv.query(
        "select address from recipients where msg_id=?", (msg_id,)))


def sender(srv, msg_id):
    return srv.query("select sender from messages where id=?", (msg_id,))[0][0]


def submit_ok(srv, args, data, **kw):
    """sendmail that must succeed silently; returns the new message's id."""
    before = ids(srv)
    rc, out, err = sendmail(srv, args, data, **kw)
    assert (rc, out, err) == (0, "", ""), (rc, out, err)
    return new_id(srv, before)


def headers(body):
    return body.split(b"\r\n\r\n", 1)[0]


@test
def t_takes_to_cc_bcc_and_drops_bcc():
    srv = Server()
    msg = ("To: Ann <ann@x.test>, \"Doe, Bob\" <bob@y.test>\n"
           "Cc: carl@z.test (Carl),\n dan@z.test\n"
           "Bcc: secret: eve@w.test, fay@w.test;\n"
           "Subject: hello\n\nbody\n")
    qid = submit_ok(srv, ["-t"], msg)
    assert rcpts(srv, qid) == ["ann@x.test", "bob@y.test", "carl@z.test",
                               "dan@z.test", "eve@w.test", "fay@w.test"], rcpts(srv, qid)
    body = srv.body(qid)
    assert b"Bcc" not in body and b"eve@w.test" not in body, body
    assert b"To: Ann <ann@x.test>, \"Doe, Bob\" <bob@y.test>\r\n" in body, body
    assert b"Cc: carl@z.test (Carl),\r\n dan@z.test\r\n" in body, body
    assert sender(srv, qid) == "%s@relay.test" % LOGIN


@test
def t_adds_recipients_from_the_command_line_too():
    srv = Server()
    qid = submit_ok(srv, ["-t", "extra@v.test"], "To: ann@x.test\nSubject: s\n\nb\n")
    assert rcpts(srv, qid) == ["ann@x.test", "extra@v.test"]


@test
def missing_from_date_message_id_are_added():
    srv = Server()
    qid = submit_ok(srv, ["-F", "Cron Daemon", "ann@x.test"], "Subject: s\n\nbody\n")
    h = headers(srv.body(qid))
    assert re.search(rb"\r\nFrom: Cron Daemon <%s@relay\.test>\r\n" % LOGIN.encode(), h), h
    assert re.search(rb"\r\nDate: %s\r\n" % DATE_RE, h), h
    assert re.search(rb"\r\nMessage-ID: <\w+@relay\.test>\r\n", h), h
    # A name with specials is quoted.
    qid = submit_ok(srv, ["-F", 'Ops, "night" team', "ann@x.test"], "Subject: s\n\nbody\n")
    assert b'From: "Ops, \\"night\\" team" <' in srv.body(qid), srv.body(qid)


@test
def present_from_date_message_id_are_kept():
    srv = Server()
    msg = ("From: Me <me@client.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
           "Message-Id: <abc@client.test>\nSubject: s\n\nbody\n")
    qid = submit_ok(srv, ["ann@x.test"], msg)
    h = headers(srv.body(qid))
    assert h.count(b"From:") == 1 and b"From: Me <me@client.test>" in h, h
    assert h.count(b"Date:") == 1 and b"Date: Mon, 1 Jan 2024 00:00:00 +0000" in h, h
    assert h.lower().count(b"message-id:") == 1, h


@test
def recipients_as_arguments_and_sender_with_f():
    srv = Server()
    qid = submit_ok(srv, ["-f", "robot@client.test", "ann@x.test", "<bob@y.test>", "root"],
                    "Subject: s\n\nb\n")
    assert sender(srv, qid) == "robot@client.test"
    # A bare local name is at this host.
    assert rcpts(srv, qid) == ["ann@x.test", "bob@y.test", "root@relay.test"]
    assert b"From: robot@client.test\r\n" in srv.body(qid)
    qid = submit_ok(srv, ["-frobot2@client.test", "--", "ann@x.test"], "b\n")
    assert sender(srv, qid) == "robot2@client.test"


@test
def null_sender_with_f_empty_or_angle_brackets():
    srv = Server()
    for arg in ("<>", ""):
        qid = submit_ok(srv, ["-f", arg, "ann@x.test"], "Subject: s\n\nb\n")
        assert sender(srv, qid) == "", (arg, sender(srv, qid))
        # The From header is still the user's address.
        assert b"From: %s@relay.test\r\n" % LOGIN.encode() in srv.body(qid)


@test
def lone_dot_ends_input_unless_i():
    srv = Server()
    data = "Subject: s\n\nbefore\n.\nafter\n"
    qid = submit_ok(srv, ["ann@x.test"], data)
    body = srv.body(qid)
    assert body.endswith(b"\r\n\r\nbefore\r\n") and b"after" not in body, body
    for opt in ("-i", "-oi"):
        qid = submit_ok(srv, [opt, "ann@x.test"], data)
        assert srv.body(qid).endswith(b"\r\n\r\nbefore\r\n.\r\nafter\r\n"), srv.body(qid)


@test
def lf_input_is_stored_with_crlf_and_dots_survive():
    srv = Server()
    qid = submit_ok(srv, ["-i", "ann@x.test"],
                    b"Subject: s\n\nline1\n.leading dot\n..two\nmixed\r\nno newline at end")
    body = srv.body(qid)
    assert b"\n" not in body.replace(b"\r\n", b""), body
    assert body.endswith(b"\r\n\r\nline1\r\n.leading dot\r\n..two\r\nmixed\r\n"
                         b"no newline at end\r\n"), body
    assert srv.query("select body_type from messages where id=?", (qid,))[0][0] == "7BIT"
    qid = submit_ok(srv, ["ann@x.test"], "Subject: s\n\ncaf\u00e9\n")
    assert srv.query("select body_type from messages where id=?", (qid,))[0][0] == "8BITMIME"


@test
def body_without_headers_gets_a_separating_empty_line():
    srv = Server()
    qid = submit_ok(srv, ["ann@x.test"], "just a line of text\n")
    body = srv.body(qid)
    assert re.search(rb"Message-ID: <\w+@relay\.test>\r\n\r\njust a line of text\r\n$", body), body


@test
def refused_recipient_exits_67_with_the_reply():
    # 127.0.0.1 is not trusted here: only relay_domains are accepted.
    srv = Server(config={"relay_networks": "10.0.0.0/8", "relay_domains": "inbound.test"})
    before = ids(srv)
    rc, out, err = sendmail(srv, ["ok@inbound.test", "far@elsewhere.test"], "Subject: s\n\nb\n")
    assert rc == 67, (rc, err)
    assert re.search(r"sendmail: recipient <far@elsewhere\.test> refused: 554 5\.7\.1 .*"
                     r"[Rr]elay access denied", err), err
    # The accepted one got the message.
    qid = new_id(srv, before)
    assert rcpts(srv, qid) == ["ok@inbound.test"]
    # Nobody accepted: nothing is sent.
    before = ids(srv)
    rc, out, err = sendmail(srv, ["far@elsewhere.test"], "Subject: s\n\nb\n")
    assert rc == 67 and "554 5.7.1" in err, (rc, err)
    assert ids(srv) == before


@test
def invoked_through_a_link_named_sendmail():
    srv = Server()
    d = tempfile.mkdtemp(prefix="sluice-sendmail-")
    try:
        link = os.path.join(d, "sendmail")
        os.symlink(os.path.abspath(BIN), link)
        qid = submit_ok(srv, ["-t"], "To: ann@x.test\nSubject: s\n\nb\n", argv=[link])
        assert rcpts(srv, qid) == ["ann@x.test"]
        qid = submit_ok(srv, ["-oi", "bob@y.test"], "Subject: s\n\nb\n", argv=[link],
                        via_env=True)
        assert rcpts(srv, qid) == ["bob@y.test"]
    finally:
        shutil.rmtree(d)


@test
def config_from_sluice_config_environment():
    srv = Server()
    qid = submit_ok(srv, ["ann@x.test"], "Subject: s\n\nb\n", via_env=True)
    assert rcpts(srv, qid) == ["ann@x.test"]


@test
def usage_errors_exit_64_bad_input_65():
    srv = Server()
    before = ids(srv)
    for args, pattern in ((["-i"], r"no recipients"),
                          (["-bs"], r"-bs is not supported"),
                          (["-bp"], r"-bp is not supported"),
                          (["-q"], r"option -q is not supported"),
                          (["-f"], r"-f needs a value"),
                          (["-t"], r"no recipients"),
                          (["bad address@x.test"], r"bad address")):
        rc, out, err = sendmail(srv, args, "Subject: s\n\nb\n")
        assert rc == 64 and re.search(pattern, err), (args, rc, err)
    for data, pattern in (("To: <ann@x.test\n\nb\n", r"To header: unterminated <address>"),
                          ("Cc: \"ann@x.test\n\nb\n", r"Cc header: unterminated quoted"),
                          ("x" * 1000 + "\n", r"line 1 is longer than 998 octets")):
        rc, out, err = sendmail(srv, ["-t", "bob@y.test"], data)
        assert rc == 65 and re.search(pattern, err), (data, rc, err)
    rc, out, err = sendmail(srv, ["-v", "-odi", "-oem", "-bm", "ann@x.test"], "b\n")
    assert rc == 0, (rc, err)
    assert len(ids(srv)) == len(before) + 1


@test
def stopped_server_message_goes_straight_into_the_queue():
    srv = Server()
    assert srv.stop() == 0
    rc, out, err = sendmail(srv, ["-f", "robot@client.test", "ann@x.test", "bob@y.test"],
                            "Subject: offline\n\nwritten while sluice was down\n")
    assert (rc, out, err) == (0, "", ""), (rc, out, err)
    rows = srv.query("select id, sender, protocol, client_ip, body_type, size, stored_size "
                     "from messages")
    assert len(rows) == 1, rows
    qid, snd, proto, ip, btype, size, stored = rows[0]
    assert (snd, proto, ip, btype) == ("robot@client.test", "local", "127.0.0.1", "7BIT"), rows
    assert rcpts(srv, qid) == ["ann@x.test", "bob@y.test"]
    body = srv.body(qid)
    m = re.match(rb"Received: from local \(uid %d\)\r\n\tby relay\.test \(sluice\) with local "
                 rb"id (\w+);\r\n\t%s\r\n" % (os.geteuid(), DATE_RE), body)
    assert m and m.group(1).decode() == qid, body
    assert len(body) == stored and stored - size == m.end(), (len(body), size, stored)
    assert body.endswith(b"\r\n\r\nwritten while sluice was down\r\n"), body
    assert srv.query("select count(*) from incoming")[0][0] == 0
    # The relay starts on it and shows it as queued mail.
    srv.start()
    assert srv.query("select state from queue where id=?", (qid,)) == [("queued",), ("queued",)]


@test
def stopped_server_large_message_is_chunked_byte_for_byte():
    srv = Server()
    assert srv.stop() == 0
    lines = ["line %06d %s" % (i, "x" * 60) for i in range(4000)]  # about 290 KB
    data = "Subject: big\n\n" + "\n".join(lines) + "\n"
    rc, out, err = sendmail(srv, ["ann@x.test"], data)
    assert rc == 0, (rc, err)
    qid = ids(srv)[0]
    chunks = srv.query("select length(data) from body_chunks where msg_id=? order by seq", (qid,))
    assert len(chunks) >= 5 and all(c[0] == 64 * 1024 for c in chunks[:-1]), chunks
    assert srv.body(qid).endswith(("\r\n".join(lines) + "\r\n").encode())


@sqlite_test
def queue_owned_by_another_user_exits_75():
    if os.geteuid() != 0:
        raise AssertionError("this test must run as root (it chowns the queue)")
    srv = Server()
    assert srv.stop() == 0
    st = os.stat(srv.db)
    os.chown(srv.db, 65534, st.st_gid)
    try:
        rc, out, err = sendmail(srv, ["ann@x.test"], "Subject: s\n\nb\n")
        assert rc == 75, (rc, err)
        assert "sluice is not running and the queue at %s belongs to another user" % srv.db \
            in err, err
        assert not os.path.exists(srv.db + "-wal") and not os.path.exists(srv.db + "-shm")
    finally:
        os.chown(srv.db, st.st_uid, st.st_gid)
    assert srv.query("select count(*) from messages")[0][0] == 0


@test
def no_relay_and_no_queue_exits_75():
    srv = Server(start=False)
    srv.write_config()
    rc, out, err = sendmail(srv, ["ann@x.test"], "Subject: s\n\nb\n")
    assert rc == 75, (rc, err)
    # (A PostgreSQL database without sluice's schema: "no queue at ...".)
    assert re.search(r"sluice is not running .* (has no queue yet|no queue at)", err), err
    # Why no relay answered, in lower case as in every other reason.
    assert err.endswith("; 127.0.0.1:%d: connection refused\n" % srv.port), err
    assert not os.path.exists(srv.db)


# Addresses the SMTP server's parser refuses (sendmail checks with it):
# an empty label, a leading dot, an unclosed address literal, bytes that are
# not UTF-8, a local part over 64 octets, and a '>' that would end the path
# early and smuggle a parameter.
BAD_ADDRESSES = ["ann@b..test", ".user@x.test", "user@[garbage", b"\xff\xfe@x.test",
                 "l" * 72 + "@x.test", "ann@x.test> SIZE=1"]


def as_bytes(s):
    return s if isinstance(s, bytes) else s.encode()


@test
def bad_addresses_are_refused_even_with_no_relay_answering():
    # With the relay stopped the message would go straight into the queue
    # file: sendmail's own check is all that keeps a bad address out.
    srv = Server()
    assert srv.stop() == 0
    for addr in BAD_ADDRESSES:
        rc, out, err = sendmail(srv, [addr], "Subject: s\n\nb\n")
        assert rc == 64 and err.startswith("sendmail: recipient: bad address "), (addr, rc, err)
        rc, out, err = sendmail(srv, ["-f", addr, "ann@x.test"], "Subject: s\n\nb\n")
        assert rc == 64 and err.startswith("sendmail: sender: bad address "), (addr, rc, err)
        for field in (b"To", b"Bcc"):
            data = field + b": Ann <ann@x.test>, " + as_bytes(addr) + b"\nSubject: s\n\nb\n"
            rc, out, err = sendmail(srv, ["-t"], data)
            assert rc == 65 and err.startswith("sendmail: %s header: bad address "
                                               % field.decode()), (addr, rc, err)
    # In angle brackets too, and said why.
    rc, out, err = sendmail(srv, ["-t"], "To: Bob <bob@y..test>\n\nb\n")
    assert (rc, err) == (65, 'sendmail: To header: bad address "bob@y..test" '
                             '(Bad recipient address syntax)\n'), (rc, err)
    rc, out, err = sendmail(srv, ["l" * 72 + "@x.test"], "b\n")
    assert rc == 64 and err.endswith("(Recipient address too long)\n"), (rc, err)
    assert srv.query("select count(*) from messages")[0][0] == 0
    # A bare local name still gets this host's name, then the same check.
    rc, out, err = sendmail(srv, ["ann..x"], "b\n")
    assert rc == 64 and 'bad address "ann..x@relay.test"' in err, (rc, err)


@test
def queue_file_takes_domain_and_smtputf8_from_the_parsed_path():
    srv = Server()
    assert srv.stop() == 0
    rc, out, err = sendmail(srv, ["-f", "<@hop.test:robot@Client.TEST>", "Ann@X.Test",
                                  "<@a.test,@b.test:bob@y.test>", "j\u00f6rg@B\u00fccher.test"],
                            "Subject: s\n\nb\n")
    assert (rc, err) == (0, ""), (rc, err)
    qid = ids(srv)[0]
    # Source routes are dropped; domains are lower-cased (ASCII letters).
    assert sender(srv, qid) == "robot@Client.TEST"
    got = sorted(srv.query("select address, domain from recipients where msg_id=?", (qid,)))
    assert got == [("Ann@X.Test", "x.test"), ("bob@y.test", "y.test"),
                   ("j\u00f6rg@B\u00fccher.test", "b\u00fccher.test")], got
    assert srv.query("select smtputf8 from messages where id=?", (qid,)) == [(1,)]
    before = ids(srv)
    rc, out, err = sendmail(srv, ["ann@x.test"], "Subject: s\n\nb\n")
    assert (rc, err) == (0, ""), (rc, err)
    assert srv.query("select smtputf8 from messages where id=?", (new_id(srv, before),)) == [(0,)]
    # Over SMTP the relay sees SMTPUTF8 on MAIL for a non-ASCII sender too.
    srv.start()
    qid = submit_ok(srv, ["-f", "r\u00f6bot@client.test", "ann@x.test"], "Subject: s\n\nb\n")
    assert sender(srv, qid) == "r\u00f6bot@client.test"
    assert srv.query("select smtputf8 from messages where id=?", (qid,)) == [(1,)]


def fake_relay(replies):
    """The relay's /smtp listener played by the scripted server of
    tests/lib/mxtest.py: no extensions, `replies` by verb."""
    return ScriptedMX("127.0.0.1", free_port(), ehlo=(), replies=replies)


def fake_relay_config(port, **extra):
    srv = Server(start=False, config=extra)
    srv.config["listen"] = "127.0.0.1:%d" % port
    srv.write_config()
    return srv


@test
def multiline_reply_is_shown_by_its_first_line():
    fake = fake_relay({"RCPT": "550-5.1.1 no such user here\r\n550 5.1.1 try another"})
    srv = fake_relay_config(fake.port)
    rc, out, err = sendmail(srv, ["ann@x.test"], "Subject: s\n\nb\n")
    assert rc == 67, (rc, err)
    assert err == "sendmail: recipient <ann@x.test> refused: 550 5.1.1 no such user here\n", err
    # The session ended politely.
    assert fake.verbs() == ["EHLO", "MAIL", "RCPT", "QUIT"], fake.commands
    fake.stop()


@test
def a_recipient_refused_for_now_stops_the_message_for_all():
    # All or none: had the first recipient been sent the message, the
    # caller's retry would send it to them twice.
    fake = fake_relay({"RCPT": ["250 ok", "452 4.5.3 too many recipients"]})
    srv = fake_relay_config(fake.port)
    rc, out, err = sendmail(srv, ["ann@x.test", "bob@x.test"], "Subject: s\n\nb\n")
    assert rc == 75, (rc, err)
    assert err.startswith("sendmail: recipient <bob@x.test> refused: 452 4.5.3 too many "
                          "recipients\nsendmail: 4.5.3 not sent: "), err
    assert fake.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "QUIT"], fake.commands
    fake.stop()


@test
def sender_or_message_refused_for_good_exits_69():
    for replies, said, verbs in (
            ({"MAIL": "553 5.1.8 bad sender domain"},
             "sendmail: sender <cron@client.test> refused: 553 5.1.8 bad sender domain\n",
             ["EHLO", "MAIL", "QUIT"]),
            ({"DATA": "554 5.6.0 not today"},
             "sendmail: message refused: 554 5.6.0 not today\n",
             ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"])):
        fake = fake_relay(replies)
        srv = fake_relay_config(fake.port)
        rc, out, err = sendmail(srv, ["-f", "cron@client.test", "ann@x.test"],
                                "Subject: s\n\nb\n")
        assert (rc, err) == (69, said), (rc, err)
        assert fake.verbs() == verbs, fake.commands
        fake.stop()


@test
def no_quit_after_a_malformed_or_missing_reply():
    # The reasons are the delivery client's (queue/smtpc.c), enhanced
    # status code first.
    for reply, why in (("hello there", "4.5.0 127.0.0.1:%d: malformed reply: hello there"),
                       (None, "4.4.2 127.0.0.1:%d: timeout waiting for reply")):
        fake = fake_relay({"MAIL": reply})
        srv = fake_relay_config(fake.port, delivery_command_timeout="1s")
        rc, out, err = sendmail(srv, ["ann@x.test"], "Subject: s\n\nb\n")
        assert (rc, err) == (75, "sendmail: %s\n" % (why % fake.port)), (rc, err)
        # Nothing sensible would answer QUIT: sendmail does not wait for it.
        assert fake.verbs() == ["EHLO", "MAIL"], fake.commands
        fake.stop()


@contextlib.contextmanager
def remote_mx():
    """A sink on 127.0.0.2 standing in for the remote MX: yields it and its port."""
    port = free_port("127.0.0.2")
    d = tempfile.mkdtemp(prefix="sluice-sink-")
    sink = Sink("127.0.0.2", port, d)
    try:
        yield sink, port
    finally:
        sink.stop()
        shutil.rmtree(d, ignore_errors=True)


def sink_config(port, **extra):
    c = {"delivery_threads": "1", "routes": "dest.test:127.0.0.2:%d" % port,
         "retry_schedule": "1s", "connect_timeout": "2s", "dns_timeout": "1s"}
    c.update(extra)
    return c


@test
def queued_while_stopped_is_delivered_after_start():
    with remote_mx() as (sink, port):
        srv = Server(config=sink_config(port), start=False)
        srv.start()
        assert srv.stop() == 0
        rc, out, err = sendmail(srv, ["-f", "cron@client.test", "ops@dest.test"],
                                "Subject: nightly\n\nall good\n")
        assert rc == 0, (rc, err)
        srv.start()
        msgs = poll_until(lambda: sink.messages(), 15, "delivery to the sink")
        env, data = msgs[0]
        assert env["mail_from"] == "cron@client.test" and env["rcpt_tos"] == ["ops@dest.test"], env
        assert data.startswith(b"Received: from local (uid "), data[:200]
        assert data.endswith(b"all good\r\n"), data


@test
def running_relay_without_smtp_listener_delivers_from_the_queue_file():
    # Only a /submission listener: sendmail writes into the live queue and
    # the relay's delivery threads find it without any signal.
    with remote_mx() as (sink, port):
        srv = Server(config=sink_config(port), start=False)
        srv.config["listen"] = "127.0.0.1:%d/submission" % srv.port
        srv.start()
        rc, out, err = sendmail(srv, ["ops@dest.test"], "Subject: live\n\nhello\n")
        assert (rc, err) == (0, ""), (rc, err)
        msgs = poll_until(lambda: sink.messages(), 15, "delivery to the sink")
        assert msgs[0][0]["rcpt_tos"] == ["ops@dest.test"]
        assert b"with local id" in msgs[0][1]


if __name__ == "__main__":
    main()
