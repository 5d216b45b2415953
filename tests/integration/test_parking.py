"""Idle sessions hold no worker: sessions waiting for a command, for slow
message data, in a stalled TLS handshake, in auth_failure_delay, or for a
client that does not read its replies are parked, so that a handful of
silent clients cannot take the relay down.  Parked sessions keep what a
session guarantees: pipelining order, timeouts with 421, TLS state,
shutdown grace.  Also: command lines with a NUL or control octet."""
import base64
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import tls_context, tls_server  # noqa: E402
from sluicetest import Server, main, poll_until, rss_limit_kb, test  # noqa: E402
import certs  # noqa: E402

PKI = certs.pki()


def threads(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no thread count")


def idle_clients(srv, n, per_addr=20, first=100):
    """n connections from untrusted loopback addresses that only read
    their greeting, then say nothing."""
    out = []
    for i in range(n):
        c = srv.connect(source="127.0.0.%d" % (first + i // per_addr), timeout=10)
        c.reply("220 ")
        out.append(c)
    return out


def transaction(c):
    c.cmd("EHLO client.test", "250 ")
    return c.mail(rcpts=("<x@inbound.test>",))


@test
def idle_connections_hold_no_worker():
    # 300 silent untrusted clients (15 addresses, 20 each: within
    # max_connections_per_ip) and 4 workers: a trusted client is still
    # greeted and served at once, long before command_timeout.
    srv = Server(config={"workers": "4", "command_timeout": "60s"})
    base = threads(srv)
    idle = idle_clients(srv, 300)
    c = srv.connect(timeout=5)       # would wait 60 s for a free worker
    c.reply("220 ")
    transaction(c)
    c.cmd("QUIT", "221 ")
    # No thread per session: the count did not grow with 300 sessions.
    assert threads(srv) == base, "threads %d -> %d" % (base, threads(srv))
    # The idle ones are still alive and can be served too.
    for c in idle[:: 50]:
        transaction(c)
        c.cmd("QUIT", "221 ")
    for c in idle:
        c.close()
    poll_until(lambda: "disconnect" in srv.log(), what="disconnects")


@test
def parked_session_keeps_pipelining_order():
    # Commands arrive in pieces with pauses longer than the park grace:
    # the session is parked between them and the replies still come back
    # in order, all of them, each batch in one piece.
    srv = Server(config={"workers": "2"})
    c = srv.connect(timeout=10)
    c.reply("220 ")
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRC")
    time.sleep(0.3)
    c.send(b"PT TO:<r1@example.net>\r\nRCPT TO:<r2@example.net>\r\nDA")
    time.sleep(0.3)
    c.send(b"TA\r\nSubject: pieces\r\n\r\nline one\r\n")
    time.sleep(0.3)
    c.send(b"line two\r\n.\r\nNOOP\r\n")
    c.reply("250 ")                   # EHLO
    c.reply("250 2.1.0")
    c.reply("250 2.1.5")
    c.reply("250 2.1.5")
    c.reply("354 ")
    code, text = c.reply("250 2.0.0 Ok: queued as ")
    c.reply("250 2.0.0 Ok")          # NOOP
    msg_id = text.split()[-1]
    body = srv.body(msg_id)
    assert body.endswith(b"Subject: pieces\r\n\r\nline one\r\nline two\r\n"), body
    rcpts = srv.query("select address from recipients where msg_id=? order by rcpt_no", (msg_id,))
    assert rcpts == [("r1@example.net",), ("r2@example.net",)], rcpts


@test
def idle_tls_sessions_are_parked_and_resume():
    # Sessions that did STARTTLS, then went quiet, hold no worker; each
    # resumes over TLS, including commands pipelined in one TLS record.
    srv = tls_server({"workers": "2", "command_timeout": "60s"})
    base = threads(srv)
    quiet = []
    for i in range(20):
        c = srv.connect(source="127.0.0.%d" % (100 + i), timeout=10)
        c.reply("220 ")
        c.cmd("EHLO client.test", "250 ")
        c.cmd("STARTTLS", "220 2.0.0")
        c.sock = tls_context().wrap_socket(c.sock, server_hostname="relay.test")
        quiet.append(c)
    t = srv.connect(timeout=5)
    t.reply("220 ")
    transaction(t)
    assert threads(srv) == base
    time.sleep(0.2)
    for c in quiet:
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n"
               b"RCPT TO:<x@inbound.test>\r\nDATA\r\n")
        c.reply("250 ")
        c.reply("250 2.1.0")
        c.reply("250 2.1.5")
        c.reply("354 ")
        c.send(b"Subject: tls\r\n\r\nparked and back\r\n.\r\n")
        c.reply("250 2.0.0 Ok: queued as ")
    rows = srv.query("select count(*), min(tls_version) from messages where tls_version is not null")
    assert rows[0][0] == 20 and rows[0][1].startswith("TLS1."), rows


@test
def stalled_handshakes_hold_no_worker():
    # Clients that connect to the implicit-TLS port and never say hello,
    # and clients that say STARTTLS and stop: parked in the handshake,
    # ended after command_timeout, never holding the workers.
    srv = Server(start=False)
    c, k = certs.install(PKI.a, srv.dir)
    smtps = srv.port + 1 if srv.port < 65000 else srv.port - 1
    srv.config.update(tls_cert=c, tls_key=k, workers="2", command_timeout="3s",
                      listen="127.0.0.1:%d, 127.0.0.1:%d/smtps" % (srv.port, smtps))
    srv.start()
    stalled = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", smtps), timeout=10)
        stalled.append(s)
    for i in range(10):
        s = srv.connect(source="127.0.0.%d" % (100 + i), timeout=10)
        s.reply("220 ")
        s.cmd("STARTTLS", "220 2.0.0")
        stalled.append(s.sock)
    t = srv.connect(timeout=5)
    t.reply("220 ")
    transaction(t)
    t.cmd("QUIT", "221 ")
    # All 20 are ended by the handshake timeout, each logged.
    poll_until(lambda: srv.log().count("TLS handshake failed: timeout") == 20,
               timeout=15, what="20 handshake timeouts")
    for s in stalled:
        s.settimeout(5)
        got = b""
        while True:   # at most a TLS alert, then the end
            d = s.recv(4096)
            if not d:
                break
            got += d
            assert len(got) < 4096, "not closed: %r" % got[:100]
        s.close()


@test
def slow_data_holds_no_worker():
    # Ten clients in the middle of DATA, each sending a line every 0.2 s,
    # and one worker: a trusted client is served meanwhile, and every slow
    # message arrives whole.
    srv = Server(config={"workers": "1", "min_data_rate": "10"})
    slow = []
    for i in range(10):
        c = srv.connect(source="127.0.0.%d" % (100 + i), timeout=10)
        c.ehlo()
        c.cmd("MAIL FROM:<slow@client.test>", "250 ")
        c.cmd("RCPT TO:<x@inbound.test>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(b"Subject: slow %d\r\n\r\n" % i)
        slow.append(c)
    for n in range(3):
        for c in slow:
            c.send(b"line %d\r\n" % n)
        time.sleep(0.2)
    t = srv.connect(timeout=5)
    t.reply("220 ")
    transaction(t)
    for c in slow:
        c.send(b".\r\n")
    for i, c in enumerate(slow):
        code, text = c.reply("250 2.0.0 Ok: queued as ")
        body = srv.body(text.split()[-1])
        assert body.endswith(b"Subject: slow %d\r\n\r\nline 0\r\nline 1\r\nline 2\r\n" % i), body


@test
def auth_failure_delay_holds_no_worker():
    # A failed AUTH waits auth_failure_delay before its 535, parked: with
    # one worker, another client is served during the delay.
    # (6 s: room for a loaded CI machine to serve the other client.)
    srv = tls_server({"workers": "1", "auth_failure_delay": "6s"}, users={"alice": "s3cret"})
    a = srv.connect(source="127.0.0.100", timeout=10)
    a.reply("220 ")
    a.cmd("EHLO client.test", "250 ")
    a.cmd("STARTTLS", "220 ")
    a.sock = tls_context().wrap_socket(a.sock, server_hostname="relay.test")
    a.cmd("EHLO client.test", "250 ")
    plain = base64.b64encode(b"\0alice\0wrong").decode()
    a.send("AUTH PLAIN %s\r\n" % plain)
    time.sleep(0.3)   # the delay has begun
    t = srv.connect(timeout=5)   # served within the 6 s delay
    t.reply("220 ")
    transaction(t)
    t.cmd("QUIT", "221 ")
    # Nothing for `a` yet, neither read nor waiting (a search of the log
    # for "535" also matched client ports such as 55359).
    ready = a.buf or a.sock.pending() or select.select([a.sock], [], [], 0)[0]
    assert not ready, "the 535 came before the other client was served"
    a.reply("535 5.7.8 ")
    a.cmd("NOOP", "250 ")


@test
def client_that_does_not_read_is_bounded():
    # A client pipelines commands without ever reading the replies: the
    # session stops reading once its replies back up (memory bounded), it
    # holds no worker meanwhile, and it is ended after command_timeout.
    srv = Server(config={"workers": "1", "command_timeout": "3s"})
    c = srv.connect(source="127.0.0.100", timeout=10)
    # A small receive window, set before connecting: our replies back up
    # in the server's socket, not in this client's kernel.
    c.sock.close()
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.bind(("127.0.0.101", 0))
    c.sock.connect(("127.0.0.1", srv.port))
    before = srv.peak_rss_kb()
    c.sock.setblocking(False)
    # EHLO: 8 octets in, some 250 out, so the replies back up first.
    chunk = b"EHLO c\r\n" * 10000
    sent, blocked_since = 0, None
    while blocked_since is None or time.time() - blocked_since < 0.5:
        try:
            sent += c.sock.send(chunk)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.time()
            time.sleep(0.02)
    # Both directions are full: the server stopped taking commands.
    t = srv.connect(timeout=2)
    t.reply("220 ")
    transaction(t)
    t.cmd("QUIT", "221 ")
    srv.wait_log(r"client=\[127\.0\.0\.101\] timeout: it does not read our replies", timeout=10)
    assert srv.peak_rss_kb() - before < rss_limit_kb(8 * 1024)
    assert sent < 64 * 1024 * 1024, sent
    c.close()


@test
def nul_and_control_octets_are_refused():
    srv = Server()
    c = srv.connect()
    c.ehlo()
    # RFC 5321 commands are text: a NUL, CR or other control octet gets a
    # 500, never a silent cut at the NUL.
    c.cmd(b"MAIL FROM:<a@b.example>\0junk", r"500 5\.5\.2 .*\(0x00\)")
    c.cmd(b"NOOP\0", r"500 5\.5\.2 .*\(0x00\)")
    c.cmd(b"NOOP\x01", r"500 5\.5\.2 .*\(0x01\)")
    c.cmd(b"NOOP\tx", r"500 5\.5\.2 .*\(0x09\)")
    c.cmd(b"NOOP\x7f", r"500 5\.5\.2 .*\(0x7f\)")
    c.cmd(b"NOOP a\rb", r"500 5\.5\.2 .*\(0x0d\)")
    c.cmd("MAIL FROM:<a@b.example>", "250 ")
    c.cmd(b"RCPT TO:<x@example.net>\0", r"500 5\.5\.2 ")
    c.cmd("RCPT TO:<x@example.net>", "250 ")
    # 8-bit text is not a control octet (SMTPUTF8 addresses are checked
    # by the address parser).
    c.cmd("NOOP caf\u00e9", "250 ")
    c.cmd("RSET", "250 ")
    assert srv.query("select count(*) from messages")[0][0] == 0
    assert 'command="MAIL FROM:<a@b.example>": 500 5.5.2' in srv.log()


@test
def nul_in_auth_login_is_refused():
    srv = tls_server({}, users={"alice": "s3cret"})
    c = srv.connect()
    c.reply("220 ")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("STARTTLS", "220 ")
    c.sock = tls_context().wrap_socket(c.sock, server_hostname="relay.test")
    c.cmd("EHLO client.test", "250 ")
    b64 = lambda b: base64.b64encode(b).decode()   # noqa: E731
    # "alice\0junk" must not be taken as "alice".
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd(b64(b"alice\0junk"), r"501 5\.5\.2 .*user name")
    c.cmd("AUTH LOGIN " + b64(b"alice"), "334 ")
    c.cmd(b64(b"s3cret\0junk"), r"501 5\.5\.2 .*password")
    # A NUL in the base64 line itself.
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd(b64(b"alice").encode() + b"\0junk", r"501 5\.5\.2 ")
    # The real thing still works.
    c.cmd("AUTH LOGIN", "334 ")
    c.cmd(b64(b"alice"), "334 ")
    c.cmd(b64(b"s3cret"), "235 ")
    assert "s3cret" not in srv.log() and b64(b"s3cret") not in srv.log()


@test
def shutdown_ends_idle_parked_at_once_and_waits_for_data():
    # SIGTERM: parked idle sessions get 421 4.3.2 at once; a parked session
    # in the middle of DATA gets shutdown_grace to finish its message.
    srv = Server(config={"workers": "2", "shutdown_grace": "10s"})
    idle = idle_clients(srv, 30)
    d = srv.connect(source="127.0.0.200", timeout=10)
    d.ehlo()
    d.cmd("MAIL FROM:<a@client.test>", "250 ")
    d.cmd("RCPT TO:<x@inbound.test>", "250 ")
    d.cmd("DATA", "354 ")
    d.send(b"Subject: graceful\r\n\r\nfirst half\r\n")
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGTERM)
    for c in idle:
        c.reply(r"421 4\.3\.2 ")
        assert c.closed()
    time.sleep(0.5)
    d.send(b"second half\r\n.\r\n")
    code, text = d.reply("250 2.0.0 Ok: queued as ")
    srv.proc.wait(30)
    assert srv.stop() == 0
    body = srv.body(text.split()[-1])
    assert body.endswith(b"first half\r\nsecond half\r\n"), body


@test
def messages_in_progress_memory_bounded():
    # 100 clients each send 60 KB of a message and wait: parked in the
    # middle of DATA (and of BDAT), a session hands what it buffered to the
    # queue, so waiting messages cost a few KB each, not a 64 KB chunk
    # buffer; every message then arrives whole.
    # ASan keeps freed memory in quarantine (8 MB here): none for this
    # measurement, which is about what is live.
    saved = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:quarantine_size_mb=0"
    try:
        srv = Server(config={"workers": "4", "max_connections_per_ip": "0"})
    finally:
        if saved is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = saved
    line = b"y" * 98 + b"\r\n"
    part = line * 600           # 60,000 octets
    # A warm-up: ten whole messages, so that the writer's cache and the
    # workers' buffers are counted before, not as part of the waiting.
    w = srv.connect(timeout=20)
    w.ehlo()
    for _ in range(10):
        w.mail(rcpts=("<x@inbound.test>",), body=b"Subject: w\r\n\r\n" + part + b".\r\n")
    w.close()
    before = srv.peak_rss_kb()
    clients = []
    for i in range(100):
        c = srv.connect(source="127.0.0.%d" % (100 + i % 50), timeout=20)
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<x@inbound.test>", "250 ")
        if i % 2 == 0:
            c.cmd("DATA", "354 ")
        clients.append(c)
    stored = lambda: srv.query("select coalesce(sum(length(data)), 0) from body_chunks")[0][0]  # noqa: E731
    base = stored()
    for i, c in enumerate(clients):
        msg = b"Subject: %03d\r\n\r\n" % i + part
        if i % 2:    # BDAT: one LAST chunk, all but its last 5 octets
            c.send(b"BDAT %d LAST\r\n" % (len(msg) + 5) + msg)
        else:
            c.send(msg)
        # One at a time, so that the peak is what waiting sessions hold,
        # not what waits for the disk (bounded on its own, at 16 MiB).
        poll_until(lambda: stored() >= base + (i + 1) * len(part), what="message %d stored" % i)
    grown = srv.peak_rss_kb() - before
    # A few KB per waiting message (its session, the writer's cache);
    # a 64 KB buffer each would be 6.4 MB more.
    assert grown < rss_limit_kb(100 * 32), "100 waiting messages: +%d kB" % grown
    for i, c in enumerate(clients):
        c.send(b"end\r\n" if i % 2 else b"end\r\n.\r\n")
    for i, c in enumerate(clients):
        code, text = c.reply("250 2.0.0 Ok: queued as ")
        body = srv.body(text.split()[-1])
        want = b"Subject: %03d\r\n\r\n" % i + part + b"end\r\n"
        assert body.endswith(want), (i, len(body), body[-200:])


@test
def data_waiting_for_the_disk_is_bounded():
    # Another process holds the queue's write lock for a few seconds (the
    # disk is slower than the network): 300 sessions each hand over two
    # parts of a message, parking between them.  What waits for the writer
    # is bounded (16 MiB in all, plus a chunk per worker), not 300 x 120 KB;
    # sessions wait for room instead.  Then everything is stored.
    import sqlite3
    srv = Server(config={"workers": "4", "max_connections_per_ip": "0"})
    part = (b"z" * 98 + b"\r\n") * 600      # 60,000 octets
    clients = []
    for i in range(300):
        c = srv.connect(source="127.0.0.%d" % (100 + i % 50), timeout=30)
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<x@inbound.test>", "250 ")
        c.cmd("DATA", "354 ")
        clients.append(c)
    before = srv.peak_rss_kb()
    lock = sqlite3.connect(srv.db, timeout=10)
    lock.execute("BEGIN IMMEDIATE")
    try:
        for c in clients:
            c.sock.setblocking(False)
        for round_ in range(2):
            for c in clients:
                try:
                    c.sock.send(part)   # what the kernel takes now
                except BlockingIOError:
                    pass
            time.sleep(1.5)
        grown = srv.peak_rss_kb() - before
    finally:
        lock.rollback()
        lock.close()
    assert grown < rss_limit_kb(24 * 1024), "waiting for the disk: +%d kB" % grown
    for c in clients:
        c.sock.setblocking(True)
    for c in clients:
        c.send(b".\r\n")
    for c in clients:
        c.reply("250 2.0.0 Ok: queued as ")
    assert srv.query("select count(*) from messages")[0][0] == 300


@test
def many_idle_sessions_memory_bounded():
    # 1,000 idle sessions cost little memory each (buffers are released
    # while a session is parked).
    srv = Server(config={"workers": "4", "max_connections_per_ip": "0"})
    before = srv.peak_rss_kb()
    idle = idle_clients(srv, 1000, per_addr=100)
    for c in idle:
        c.send(b"EHLO client.test\r\n")
    for c in idle:
        c.reply("250 ")
    grown = srv.peak_rss_kb() - before
    assert grown < rss_limit_kb(20 * 1024), "1000 idle sessions: +%d kB" % grown
    for c in idle:
        c.close()


if __name__ == "__main__":
    main()
