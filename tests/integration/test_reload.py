#!/usr/bin/python3
"""SIGHUP reloads the whole configuration without dropping sessions; a
broken file is reported and the old configuration kept whole."""
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import Server, free_port, main, poll_until, test  # noqa: E402
import sink  # noqa: E402


def hup(srv, pattern):
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    return srv.wait_log(pattern, start=mark)


def relay_denied(srv, rcpt, source="127.0.0.1"):
    """True when RCPT to `rcpt` is refused as relaying."""
    c = srv.connect(source=source)
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    code, _ = c.cmd("RCPT TO:<%s>" % rcpt)
    c.cmd("QUIT", "221 ")
    c.close()
    return code == 554


@test
def policy_changes_apply_to_new_sessions_only():
    srv = Server(config={"relay_networks": "127.0.0.1/32"})
    # 127.0.0.2 is not trusted: only relay_domains are accepted from it.
    assert relay_denied(srv, "x@example.net", source="127.0.0.2")
    assert not relay_denied(srv, "x@inbound.test", source="127.0.0.2")
    # A session opened before the reload keeps the policy it started with.
    old = srv.connect(source="127.0.0.2")
    old.ehlo()
    srv.config["relay_networks"] = "127.0.0.0/8"
    srv.config["relay_domains"] = "other.test"
    srv.config["max_recipients"] = "2"
    srv.write_config()
    hup(srv, r"configuration reloaded")
    old.cmd("MAIL FROM:<a@client.test>", "250 ")
    old.cmd("RCPT TO:<x@example.net>", "554 ")
    old.cmd("RCPT TO:<y@inbound.test>", "250 ")
    old.cmd("QUIT", "221 ")
    # New sessions get the new one: trusted now, and the new limits.
    assert not relay_denied(srv, "x@example.net", source="127.0.0.2")
    c = srv.connect(source="127.0.0.2")
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<r1@example.net>", "250 ")
    c.cmd("RCPT TO:<r2@example.net>", "250 ")
    c.cmd("RCPT TO:<r3@example.net>", "452 4.5.3")
    c.cmd("QUIT", "221 ")


@test
def session_in_a_transaction_survives_reload():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<b@example.net>", "250 ")
    c.cmd("DATA", "354 ")
    c.send(b"Subject: across a reload\r\n\r\nfirst half\r\n")
    srv.config["hostname"] = "renamed.test"
    srv.write_config()
    hup(srv, r"configuration reloaded")
    c.send(b"second half\r\n.\r\n")
    code, text = c.reply("250 ")
    c.cmd("QUIT", "221 ")
    assert srv.query("select count(*) from messages") == [(1,)]
    # New sessions greet with the new hostname.
    n = srv.connect()
    code, text = n.reply("220 ")
    assert "renamed.test" in text, text
    n.close()


@test
def broken_file_keeps_the_old_configuration():
    srv = Server(config={"relay_networks": "127.0.0.1/32"})
    srv.config["relay_networks"] = "127.0.0.0/8"
    srv.config["max_recipients"] = "many"
    srv.config["no_such_key"] = "1"
    srv.write_config()
    text = hup(srv, r"keeping the old configuration")
    assert "max_recipients" in text and "no_such_key" in text, text
    assert "configuration reloaded" not in text
    assert srv.proc.poll() is None
    # The old policy (127.0.0.2 untrusted) is still in force, all of it.
    assert relay_denied(srv, "x@example.net", source="127.0.0.2")
    # A file that parses but names a missing smarthost password file is
    # refused as well (with delivery on).
    srv2 = Server(config={"delivery_threads": "1"})
    srv2.config["smarthost"] = "127.0.0.1:%d" % free_port()
    srv2.config["smarthost_password_file"] = os.path.join(srv2.dir, "missing")
    srv2.config["smarthost_user"] = "u"
    srv2.write_config()
    text = hup(srv2, r"keeping the old configuration")
    assert "smarthost_password_file" in text, text
    assert srv2.proc.poll() is None


@test
def listeners_are_reopened_by_difference():
    srv = Server()
    p2 = free_port()
    pending = srv.connect()  # accepted before the reload, on the kept socket
    srv.config["listen"] = "127.0.0.1:%d, 127.0.0.1:%d/submission" % (srv.port, p2)
    srv.write_config()
    hup(srv, r"listening on 127.0.0.1:%d/submission" % p2)
    pending.ehlo()
    pending.cmd("QUIT", "221 ")
    c = srv.connect()
    c.ehlo()
    c.cmd("QUIT", "221 ")
    from sluicetest import Client
    s = Client("127.0.0.1", p2)
    s.reply("220 ")
    s.cmd("EHLO client.test", "250 ")
    s.cmd("MAIL FROM:<a@client.test>", "530 ")  # submission: AUTH required
    s.close()
    # Drop the first listener: its port closes, the other stays.
    srv.config["listen"] = "127.0.0.1:%d/submission" % p2
    srv.write_config()
    hup(srv, r"no longer listening on 127.0.0.1:%d" % srv.port)
    try:
        srv.connect(timeout=2)
        raise AssertionError("the removed listener still accepts")
    except ConnectionRefusedError:
        pass
    s = Client("127.0.0.1", p2)
    s.reply("220 ")
    s.close()
    # A listener that cannot be opened is reported; the others stay.
    busy = free_port()
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", busy))
    blocker.listen(1)
    srv.config["listen"] = "127.0.0.1:%d/submission, 127.0.0.1:%d" % (p2, busy)
    srv.write_config()
    text = hup(srv, r"configuration reloaded")
    assert "cannot listen on 127.0.0.1:%d" % busy in text, text
    blocker.close()
    s = Client("127.0.0.1", p2)
    s.reply("220 ")
    s.close()
    assert srv.proc.poll() is None


@test
def routes_and_log_level_reload():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="sluice-reload-")
    pa, pb = free_port(), free_port()
    a = sink.Sink("127.0.0.1", pa, os.path.join(tmp, "a"))
    b = sink.Sink("127.0.0.1", pb, os.path.join(tmp, "b"))
    try:
        srv = Server(config={"delivery_threads": "2",
                             "routes": "example.net:127.0.0.1:%d" % pa,
                             "outbound_tls": "none"})
        c = srv.connect()
        c.ehlo()
        c.mail(rcpts=("<one@example.net>",))
        poll_until(lambda: len(a.messages()) == 1, 15, "delivery to the first route")
        srv.config["routes"] = "example.net:127.0.0.1:%d" % pb
        srv.config["log_level"] = "warning"
        srv.write_config()
        hup(srv, r"configuration reloaded")
        mark = len(srv.log())
        c.mail(rcpts=("<two@example.net>",))
        c.cmd("QUIT", "221 ")
        poll_until(lambda: len(b.messages()) == 1, 15, "delivery to the new route")
        assert len(a.messages()) == 1
        poll_until(lambda: srv.query(
            "select count(*) from recipients where state = 'delivered'") == [(2,)], 10)
        # log_level = warning: the info lines of the delivery are gone.
        assert "status=sent" not in srv.log()[mark:], srv.log()[mark:]
    finally:
        a.stop()
        b.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
