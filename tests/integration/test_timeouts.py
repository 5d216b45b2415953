"""Timeouts and limits: idle and slow clients are ended with 421 4.4.2, and
whatever a client sends, a session's memory stays bounded.  (Idle sessions
hold no worker: test_parking.py.)"""
import os
import select
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import poll_until, rss_limit_kb, Server, main, test  # noqa: E402


def nothing_stored(srv):
    assert srv.count("messages") == 0
    assert srv.count("recipients") == 0
    # The session drops its partial chunks as it ends.
    poll_until(lambda: srv.count("body_chunks") == 0 and srv.count("incoming") == 0,
               what="partial chunks to be dropped")


def nothing_received(c, timeout):
    """True when nothing arrives on the connection within `timeout`."""
    r, _, _ = select.select([c.sock], [], [], timeout)
    return not r


@test
def idle_client_gets_421_and_is_closed():
    srv = Server(config={"command_timeout": "1s"})
    c = srv.connect(timeout=10)
    c.reply("220 ")
    c.reply(r"421 4\.4\.2 ")
    assert c.closed(), "not closed after 421 4.4.2"
    # Also after EHLO and in the middle of a transaction (between commands).
    c = srv.connect(timeout=10)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@client.test>", "250 ")
    c.reply(r"421 4\.4\.2 ")
    assert c.closed()
    # A client that keeps talking is not timed out by the idle timer.
    c = srv.connect(timeout=10)
    c.ehlo()
    for _ in range(4):
        time.sleep(0.4)
        c.cmd("NOOP", "250 ")
    c.cmd("QUIT", "221 ")
    srv.wait_log(r"reject: .*421 4\.4\.2")


@test
def data_timeout_ends_stalled_data():
    srv = Server(config={"data_timeout": "1s"})
    c = srv.connect(timeout=10)
    c.ehlo()
    c.begin_data()
    line = b"x" * 76 + b"\r\n"
    c.send(b"Subject: stalled\r\n\r\n" + line * 3000)   # > 3 queue chunks
    c.reply(r"421 4\.4\.2 ")
    assert c.closed(), "not closed after 421 4.4.2"
    nothing_stored(srv)


@test
def min_data_rate_ends_trickling_client():
    srv = Server(config={"data_timeout": "2s", "min_data_rate": "1000"})
    c = srv.connect(timeout=10)
    c.ehlo()
    c.begin_data()
    text = b"Subject: slow\r\n\r\n" + b"y" * 200 + b"\r\n"
    c.send(text[:2])
    reply = None
    # 1 octet every 0.2 s (5 octets/s, far below 1000/s); the whole text
    # would take 45 s, the server must end it well before.
    for i in range(2, len(text)):
        if not nothing_received(c, 0.2):
            break
        try:
            c.send(text[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        raise AssertionError("the trickling client was never cut off")
    code, reply = c.reply()
    assert reply.startswith("421 4.4.2"), "expected 421 4.4.2, got %r" % reply
    assert c.closed()
    nothing_stored(srv)


@test
def long_lines_memory_bounded():
    srv = Server(config={"max_message_size": "20m"})
    c = srv.connect(timeout=30)
    c.ehlo()
    c.mail()   # warm up
    before = srv.peak_rss_kb()
    # A 10 MB command line without a newline, then its end.
    block = b"A" * (1024 * 1024)
    for _ in range(10):
        c.send(block)
    c.send(b"\r\n")
    c.reply(r"500 5\.5\.2 ")
    c.cmd("NOOP", "250 ")   # the session is still in step
    # A 10 MB line inside a message.
    c.begin_data()
    c.send(b"Subject: long\r\n\r\n")
    for _ in range(10):
        c.send(block)
    c.send(b"\r\n.\r\n")
    c.reply(r"554 5\.6\.0 ")
    c.cmd("NOOP", "250 ")
    after = srv.peak_rss_kb()
    assert after - before < rss_limit_kb(16 * 1024), "peak RSS grew by %d kB" % (after - before)
    assert srv.count("messages") == 1   # only the warm-up
    c.cmd("QUIT", "221 ")


if __name__ == "__main__":
    main()
