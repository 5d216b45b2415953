"""
mxtest - the peers and helpers of the delivery tests (test_delivery.py,
test_hostile_mx.py, test_suspend.py): a scripted SMTP server that can also
misbehave, the Env that starts a test's peers and its sluice, and helpers
that send a message and wait for a recipient's state.

ScriptedMX is a small SMTP server in the test's own process, for what the
aiosmtpd sink (sink.py) cannot do: scripted replies (451 to every RCPT,
535 to AUTH, 555 to parameters of extensions it did not advertise),
CHUNKING/BDAT with a scripted reply to the middle chunks, the first reply
after STARTTLS in the same TCP segment as the TLS 1.3 session tickets, and
hostile behaviour (`mode`, which a test may change while it runs; it
applies from the next command, also on connections already open):

  normal            a correct server
  trickle           every reply, the greeting too, one octet per second
  huge_ehlo         an EHLO reply of 10 MB (10,000 lines of 1,000 octets)
  huge_ehlo_line    an EHLO reply whose first line is 10 MB long
  endless           the reply to MAIL FROM never ends ("250-" lines)
  silent_after_data reads the message and its final dot, never answers
  close_mid_reply   closes in the middle of the reply to RCPT
  accept_close      accepts the connection and closes it at once
  greet421          "421 4.3.2 busy" as its greeting, then closes
  drop_next         closes the connection at its next command, without
                    a reply, and goes back to normal (a server that ended
                    an idle connection the client kept)

It counts accepted connections (`connections`, with their times in
`connection_times`) and the most transactions it had in progress at once
(`max_transactions`, from MAIL to the reply after the data; `data_delay`
seconds pass before that reply, `data_reply`; the connections numbered in
`refuse` are greeted with 421), and records every command and every
message it acknowledged with 250 (`messages`, and with its envelope in
`envelopes`: (mail_from, [rcpt], data)).  `rcpt_reply` is a reply, or a
function of the address that returns one (it may wait: a delivery held
in progress).  `replies` overrides any command by its verb: a reply
(lines joined by CRLF), None for no reply at all, or a list with one of
those for each use of the verb, in order.  verbs() waits for every
session to end and gives the verbs received.  `sni` lists the server
name each TLS client sent.  Every wait in it is
bounded, and stop() ends it.
"""
import atexit
import email
import email.policy
import os
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time

from fakedns import FakeDNS
from sink import Sink
from sluicetest import Server, free_port, poll_until

SENDER = "sender@senders.test"
MODES = ("normal", "trickle", "huge_ehlo", "huge_ehlo_line", "endless",
         "silent_after_data", "close_mid_reply", "accept_close", "greet421",
         "drop_next")


class _Plain:
    """Line and block I/O on a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("closed")
        self.buf += d

    def readline(self):
        try:
            while b"\n" not in self.buf:
                self._more()
        except EOFError:
            return b""
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def read_exactly(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data):
        self.sock.sendall(data)


class _TLS(_Plain):
    """Line I/O over server-side TLS on memory BIOs, so that this side
    decides what goes out in one write: what TLS has to send after the
    handshake (TLS 1.3 session tickets) waits and goes out together with
    the next reply, in one TCP segment."""

    def __init__(self, sock, ctx):
        super().__init__(sock)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = self.out.read()
                if pending:
                    sock.sendall(pending)
                d = sock.recv(65536)
                if not d:
                    raise EOFError("closed during the handshake")
                self.inc.write(d)
        # self.out now holds the session tickets: they wait for send().

    def _more(self):
        while True:
            try:
                d = self.obj.read(65536)
                if not d:
                    raise EOFError("closed")
                self.buf += d
                return
            except ssl.SSLWantReadError:
                pass
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed")
            self.inc.write(d)

    def send(self, data):
        self.obj.write(data)
        self.sock.sendall(self.out.read())


class ScriptedMX:
    """See the module's docstring."""

    PARAMS = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8",
              "RET": "DSN", "ENVID": "DSN", "NOTIFY": "DSN", "ORCPT": "DSN",
              "AUTH": "AUTH", "REQUIRETLS": "REQUIRETLS"}

    def __init__(self, host, port, ehlo=("SIZE", "8BITMIME"), rcpt_reply="250 2.1.5 Ok",
                 auth_reply="535 5.7.8 Authentication credentials invalid", tls=None,
                 mode="normal", chunk_reply=None, data_delay=0,
                 data_reply="250 2.0.0 Ok: queued", refuse=(), replies=None):
        assert mode in MODES, mode
        self.host, self.port = host, port
        self.ehlo = list(ehlo) + (["STARTTLS"] if tls else [])
        self.keywords = {e.split()[0].upper() for e in self.ehlo}
        self.rcpt_reply = rcpt_reply
        self.auth_reply = auth_reply
        # The reply to each BDAT chunk but the last (None: "250 ...").
        self.chunk_reply = chunk_reply
        self.mode = mode
        self.ctx = None
        self.sni = []   # the server name each TLS client sent (None: none)
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls)
            self.ctx.sni_callback = lambda obj, name, ctx: self.sni.append(name)
        self.commands = []
        self.messages = []
        self.envelopes = []
        self.unanswered = []   # messages read and never answered
        self.connections = 0
        self.sessions_ended = 0
        self.replies = dict(replies or {})
        self.connection_times = []
        self.data_delay = data_delay
        self.data_reply = data_reply   # the reply after the data
        self.refuse = set(refuse)      # connections (1, 2, ...) greeted 421
        self.transactions = 0       # in progress now
        self.max_transactions = 0
        self.tls_sessions = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        mx = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with mx.lock:
                    mx.connections += 1
                    mx.connection_times.append(time.time())
                    number = mx.connections
                self.request.settimeout(30)
                state = {"tx": False}
                try:
                    if number in mx.refuse:
                        self.request.sendall(b"421 4.3.2 scripted.test busy\r\n")
                        return
                    mx._session(self.request, state)
                except (OSError, ValueError, EOFError, ssl.SSLError):
                    pass
                finally:
                    mx._tx(state, False)
                    with mx.lock:
                        mx.sessions_ended += 1

        class TCP(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 64

        self.srv = TCP((host, port), Handler)
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _bad_param(self, args):
        for p in args.split():
            kw = p.split("=", 1)[0].upper()
            if self.PARAMS.get(kw) not in self.keywords:
                return p
        return None

    def _linger(self, sock):
        """Stay connected and silent until the client goes or we stop."""
        sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                if not sock.recv(65536):
                    return
            except socket.timeout:
                continue

    def _say(self, io, s):
        data = s.encode() + b"\r\n"
        if self.mode == "trickle":
            for i in range(len(data)):
                if self.stopped.wait(1.0 if i else 0):
                    return
                io.send(data[i:i + 1])
        else:
            io.send(data)

    def _tx(self, state, on):
        """Count transactions in progress (`state` is the session's)."""
        with self.lock:
            if on and not state["tx"]:
                self.transactions += 1
                self.max_transactions = max(self.max_transactions, self.transactions)
            elif not on and state["tx"]:
                self.transactions -= 1
            state["tx"] = on

    def _session(self, sock, state):
        io = _Plain(sock)

        def say(s):
            self._say(io, s)
        if self.mode == "accept_close":
            return
        if self.mode == "greet421":
            say("421 4.3.2 scripted.test busy, try later")
            return
        say("220 scripted ESMTP")
        chunks = b""
        mail_from, rcpts = None, []
        while not self.stopped.is_set():
            raw = io.readline()
            if not raw:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            self.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            args = line.split(">", 1)[1] if ">" in line else ""
            addr = line.split("<", 1)[1].rsplit(">", 1)[0] if "<" in line else ""
            mode = self.mode   # a test may change it between commands
            if mode == "drop_next":
                self.mode = "normal"
                return
            if verb in self.replies:
                reply = self.replies[verb]
                if isinstance(reply, list):
                    reply = reply.pop(0)
                if reply is not None:
                    say(reply)
                continue
            if verb == "EHLO" and mode == "huge_ehlo":
                filler = "x" * 1000
                block = "".join("250-%s\r\n" % filler for _ in range(100)).encode()
                for _ in range(100):   # 10,000 lines, 10 MB
                    io.send(block)
                say("250 scripted.test")
            elif verb == "EHLO" and mode == "huge_ehlo_line":
                io.send(b"250-" + b"y" * (10 * 1024 * 1024) + b"\r\n")
                say("250 scripted.test")
            elif verb == "EHLO":
                ext = [e for e in self.ehlo
                       if not (e == "STARTTLS" and isinstance(io, _TLS))]
                lines = ["scripted.test"] + ext
                say("\r\n".join(("250 " if i == len(lines) - 1 else "250-") + x
                                for i, x in enumerate(lines)))
            elif verb == "HELO":
                say("250 scripted.test")
            elif verb == "STARTTLS" and self.ctx is not None and not isinstance(io, _TLS):
                say("220 2.0.0 go ahead")
                io = _TLS(sock, self.ctx)
                self.tls_sessions += 1
            elif verb == "AUTH":
                say(self.auth_reply)
            elif verb in ("MAIL", "RCPT") and self._bad_param(args):
                say("555 5.5.4 %s: parameter not supported" % self._bad_param(args))
            elif verb == "MAIL" and mode == "endless":
                line = b"250-2.1.0 and there is more\r\n"
                while not self.stopped.is_set():
                    io.send(line * 64)
                    time.sleep(0.01)
                return
            elif verb == "MAIL":
                chunks = b""
                mail_from, rcpts = addr, []
                self._tx(state, True)
                say("250 2.1.0 Ok")
            elif verb == "RCPT" and mode == "close_mid_reply":
                io.send(b"250-2.1.5 Ok, and\r\n250 2.1")
                return
            elif verb == "RCPT":
                reply = self.rcpt_reply
                if callable(reply):
                    reply = reply(addr)
                if reply.startswith("2"):
                    rcpts.append(addr)
                say(reply)
            elif verb == "DATA":
                say("354 go ahead")
                data = b""
                while True:
                    l = io.readline()
                    if not l or l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                if mode == "silent_after_data":
                    self.unanswered.append(data)
                    self._linger(sock)
                    return
                if self.data_delay:
                    self.stopped.wait(self.data_delay)
                reply = self.data_reply
                if reply.startswith("2"):
                    self.messages.append(data)
                    self.envelopes.append((mail_from, rcpts, data))
                self._tx(state, False)
                say(reply)
            elif verb == "BDAT" and "CHUNKING" in self.keywords:
                parts = line.split()
                size = int(parts[1])
                last = len(parts) > 2 and parts[2].upper() == "LAST"
                chunks += io.read_exactly(size)
                if last:
                    if self.data_delay:
                        self.stopped.wait(self.data_delay)
                    self.messages.append(chunks)
                    self.envelopes.append((mail_from, rcpts, chunks))
                    chunks = b""
                    self._tx(state, False)
                    say("250 2.0.0 Ok: queued")
                elif self.chunk_reply is not None:
                    say(self.chunk_reply)
                else:
                    say("250 2.0.0 %d octets received" % size)
            elif verb == "RSET":
                chunks = b""
                mail_from, rcpts = None, []
                self._tx(state, False)
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 not implemented")

    def verbs(self):
        """The verbs received, once every session has ended."""
        poll_until(lambda: self.connections > 0 and self.sessions_ended == self.connections,
                   10, "the end of the sessions at %s" % self.host)
        return [c.split(" ", 1)[0].upper() for c in self.commands]

    def stop(self):
        self.stopped.set()
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None


class FileDNS:
    """One fakedns for a whole test file (its zone never changes), started
    when first needed and stopped at exit; env() is an Env that uses it."""

    def __init__(self, zone):
        self.zone = zone
        self.dns = None

    def env(self):
        if self.dns is None:
            self.dns = FakeDNS(self.zone)
            atexit.register(self.dns.stop)
        return Env(self.dns.server)


class Env:
    """The peers of one test: sinks and scripted servers on one port,
    stopped by PID (or in process) when the test ends."""

    def __init__(self, dns_server):
        self.dns_server = dns_server
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="sluice-delivery-")
        self.peers = []
        self.n = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for p in reversed(self.peers):
            try:
                p.stop()
            except Exception:
                pass
        if exc_type is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("#   kept %s" % self.tmp)
        return False

    def sink(self, host, *extra):
        self.n += 1
        s = Sink(host, self.port, os.path.join(self.tmp, "sink-%s-%d" % (host, self.n)), *extra)
        self.peers.append(s)
        return s

    def scripted(self, host, **kw):
        s = ScriptedMX(host, self.port, **kw)
        self.peers.append(s)
        return s

    def config(self, **extra):
        c = {
            "delivery_threads": "2",
            "dns_servers": self.dns_server,
            "dns_timeout": "2s",
            "retry_schedule": "1s",
            "connect_timeout": "2s",
            "delivery_command_timeout": "3s",
            "delivery_port": str(self.port),
        }
        c.update({k: str(v) for k, v in extra.items()})
        return c

    def server(self, **extra):
        return Server(config=self.config(**extra))

    def file(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path


def stalling_mx(host, port):
    """A listening socket that accepts connections (the kernel's backlog)
    and never greets: a delivery to it is stuck mid-attempt.  Close it to
    end that."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    return s


def send(srv, rcpts, sender="<%s>" % SENDER, body=None, subject="test"):
    """One message; returns its queue ID.  `rcpts` are RCPT arguments."""
    c = srv.connect()
    try:
        c.ehlo()
        if body is None:
            body = ("From: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (SENDER, subject)).encode()
        return c.mail(sender=sender, rcpts=["<%s>" % r if "<" not in r else r for r in rcpts],
                      body=body + b".\r\n")
    finally:
        c.close()


def rcpt_row(srv, msg_id, address):
    rows = srv.query("select state, attempts, last_reply from recipients "
                     "where msg_id=? and address=?", (msg_id, address))
    assert len(rows) == 1, rows
    return rows[0]


def wait_state(srv, msg_id, address, states, timeout=10, attempts=0):
    """Poll until the recipient is in one of `states` (with at least
    `attempts` attempts); returns (state, attempts, last_reply)."""
    if isinstance(states, str):
        states = (states,)

    def check():
        r = rcpt_row(srv, msg_id, address)
        return r if r[0] in states and r[1] >= attempts else None
    try:
        return poll_until(check, timeout, "%s of %s in %s" % (address, msg_id, states))
    except AssertionError as e:
        raise AssertionError("%s; now %r; log tail:\n%s"
                             % (e, rcpt_row(srv, msg_id, address), srv.log()[-1500:]))


def wait_messages(peer, n, timeout=10, what="messages"):
    get = peer.messages if callable(getattr(peer, "messages", None)) else (lambda: peer.messages)
    return poll_until(lambda: get() if len(get()) >= n else None, timeout,
                      "%d %s at %s" % (n, what, getattr(peer, "host", "peer")))


def parse_dsn(data):
    """(message, per-message fields, [per-recipient fields], returned part)."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = msg.get_payload()
    assert parts[0].get_content_type() == "text/plain", [p.get_content_type() for p in parts]
    assert parts[1].get_content_type() == "message/delivery-status", \
        [p.get_content_type() for p in parts]
    blocks = parts[1].get_payload()
    assert len(blocks) >= 2, blocks
    returned = parts[2] if len(parts) > 2 else None
    return msg, blocks[0], blocks[1:], returned


def attempts_of(srv, msg_id):
    return srv.query("select status, mx_host, ip, port, tls, reply from attempts "
                     "where msg_id=? order by id", (msg_id,))
