"""The HAProxy PROXY protocol (v1 and v2) on /proxy listeners: the client
address from the header is the one relay decisions, per-client limits,
logs, the Received header and the queue use; a balancer outside
proxy_networks, a missing, bad or late header get at most a 421, never a
220; LOCAL keeps the balancer's address; the header may arrive in pieces
and TLS may follow it at once (smtps); a PROXY line on an ordinary
listener is an unknown command; DKIM-signed mail through a PROXY
listener."""
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

import dkim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import BIN, Client, Server, free_port, main, test  # noqa: E402

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
TRUSTED = "198.51.100.7"   # in relay_networks below
OUTSIDER = "192.0.2.9"     # not


def v1(src, sport=40000, dst=None, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = dst or ("::1" if ":" in src else "127.0.0.1")
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, sport=40000, dst="127.0.0.1", dport=25, cmd=1, tlv=b""):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
        fam = 0x21
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11
    body = addrs + struct.pack("!HH", sport, dport) + tlv
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def proxy_server(kind="smtp", **extra):
    srv = Server(start=False)
    cfg = {"listen": "127.0.0.1:%d/%s/proxy" % (srv.port, kind),
           "proxy_networks": "127.0.0.1/32",
           "relay_networks": "127.0.0.1/32, 198.51.100.0/24",
           "command_timeout": "3s"}
    cfg.update(extra)
    srv.config.update(cfg)
    return srv.start()


def through(srv, header, source=None):
    """A connection from the balancer that has sent `header`; greeted."""
    c = srv.connect(source=source)
    c.send(header)
    c.reply("220 ")
    return c


def refused_without_220(c):
    """Whatever comes is at most one 421, then the connection closes."""
    c.sock.settimeout(10)
    data = b""
    while True:
        try:
            chunk = c.sock.recv(4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    assert b"220" not in data, data
    assert data == b"" or re.fullmatch(rb"421 4\.\d\.\d [^\r\n]*\r\n", data), data
    return data


@test
def v1_and_v2_give_the_real_client():
    srv = proxy_server()
    for make in (v1, v2):
        # An outside client may not relay, whatever the balancer's address.
        c = through(srv, make(OUTSIDER, 41000))
        c.cmd("EHLO client.test", "250 ")
        c.cmd("MAIL FROM:<a@client.test>", "250 ")
        c.cmd("RCPT TO:<x@example.net>", r"554 5\.7\.1 ")
        c.cmd("QUIT", "221 ")
        # A client of relay_networks may.
        c = through(srv, make(TRUSTED, 42000))
        c.cmd("EHLO client.test", "250 ")
        qid = c.mail(rcpts=("<x@example.net>",))
        c.close()
        body = srv.body(qid)
        assert b"Received: from client.test ([198.51.100.7])" in body, body[:300]
        row = srv.query("select client_ip, client_port from messages where id=?", (qid,))
        assert row == [(TRUSTED, 42000)], row
        srv.wait_log(r"connect from \[198\.51\.100\.7\]:42000 listener=127\.0\.0\.1:\d+/smtp/proxy "
                     r"trusted proxy=127\.0\.0\.1")
    # IPv6 clients too.
    c = through(srv, v2("2001:db8::5", 43000))
    c.cmd("EHLO client.test", "250 ")
    c.cmd("QUIT", "221 ")
    srv.wait_log(r"connect from \[IPv6:2001:db8::5\]:43000 .* proxy=127\.0\.0\.1")
    c = through(srv, v1("2001:db8::6", 43001))
    c.cmd("QUIT", "221 ")
    srv.wait_log(r"connect from \[IPv6:2001:db8::6\]:43001 ")


@test
def balancer_outside_proxy_networks_is_refused():
    srv = proxy_server()
    c = srv.connect(source="127.0.0.7")
    c.send(v1(TRUSTED))
    data = refused_without_220(c)
    assert b"not a trusted proxy" in data, data
    srv.wait_log(r"reject: client=\[127\.0\.0\.7\]: not in proxy_networks")


@test
def missing_bad_or_late_header_gets_no_greeting():
    srv = proxy_server()
    bad = [b"EHLO client.test\r\n",                       # no header at all
           b"PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n",    # bad address
           b"PROXY TCP4 192.0.2.9 127.0.0.1 1 65536\r\n",  # bad port
           b"PROXY TCP4  192.0.2.9 127.0.0.1 1 2\r\n",     # two spaces
           b"PROXY TCP4 192.0.2.9 127.0.0.1 1\r\n",        # a field short
           b"PROXY TCP6 2001:db8::1 127.0.0.1 1 2\r\n",   # mixed families
           b"PROXY " + b"x" * 200,                          # no CRLF in 107
           V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,    # version 3
           V2_SIG + b"\x21\x11\x02\x01" + b"\x00" * 600,   # too long
           V2_SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12]    # UDP
    for header in bad:
        c = srv.connect()
        c.send(header)
        data = refused_without_220(c)
        assert b"no valid PROXY header" in data, (header, data)
    # Nothing at all: a 421 when command_timeout (3 s here) runs out.
    c = srv.connect()
    t0 = time.time()
    data = refused_without_220(c)
    assert b"timeout" in data and time.time() - t0 < 8, data
    srv.wait_log(r"reject: proxy=127\.0\.0\.1 listener=.*: no PROXY header")


@test
def local_and_unknown_keep_the_balancers_address():
    srv = proxy_server()
    for header in (V2_SIG + b"\x20\x00\x00\x00",     # v2 LOCAL (health check)
                   b"PROXY UNKNOWN\r\n",
                   b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        c = through(srv, header)
        c.cmd("EHLO client.test", "250 ")
        c.cmd("QUIT", "221 ")
    srv.wait_log(r"connect from \[127\.0\.0\.1\]:\d+ .*trusted proxy=127\.0\.0\.1")


@test
def header_in_pieces_and_what_follows_it_is_kept():
    srv = proxy_server()
    # One octet at a time, TLVs included.
    header = v2(TRUSTED, 44000, tlv=b"\x04\x00\x05hello")
    c = srv.connect()
    for i in range(len(header)):
        c.send(header[i:i + 1])
        time.sleep(0.01)
    c.reply("220 ")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("QUIT", "221 ")
    srv.wait_log(r"connect from \[198\.51\.100\.7\]:44000 ")
    # The client's first command right behind the header, in one write:
    # it stays for the session (a pipelining client after the 220).
    c = srv.connect()
    c.send(v1(TRUSTED, 44001) + b"NOOP\r\n")
    c.reply("220 ")
    c.reply("250 ")
    c.cmd("QUIT", "221 ")


@test
def smtps_behind_a_balancer():
    # TLS starts right after the header: its hello must not be eaten.
    srv = proxy_server(kind="smtps")
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw.sendall(v2(TRUSTED, 45000))
    tls = ctx.wrap_socket(raw, server_hostname="relay.test")
    f = tls.makefile("rb")
    assert f.readline().startswith(b"220 "), "no greeting over TLS"
    tls.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"221 ")
    tls.close()
    srv.wait_log(r"connect from \[198\.51\.100\.7\]:45000 listener=\S+/smtps/proxy")


@test
def per_client_limits_use_the_real_address():
    srv = proxy_server(max_connections_per_ip="1")
    a = through(srv, v1(OUTSIDER, 46000))
    # The same real client again: over its limit, though the balancer
    # connects as itself each time.
    b = srv.connect()
    b.send(v1(OUTSIDER, 46001))
    data = refused_without_220(b)
    assert b"too many connections from 192.0.2.9" in data, data
    # Another client through the same balancer is served.
    c = through(srv, v1("192.0.2.10", 46002))
    for x in (a, c):
        x.cmd("QUIT", "221 ")


@test
def proxy_line_on_an_ordinary_listener_is_an_unknown_command():
    srv = Server()
    c = srv.connect()
    c.reply("220 ")
    c.cmd(v1(TRUSTED).decode().rstrip("\r\n"), r"50[02] 5\.5\.[12] ")
    c.cmd("QUIT", "221 ")


@test
def dkim_signed_mail_through_a_proxy_listener():
    d = tempfile.mkdtemp(prefix="sluice-proxy-dkim-")
    key = os.path.join(d, "k.pem")
    r = subprocess.run([BIN, "dkim", "keygen", "example.com", "p1", "--key", key, "--ed25519"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    txt = "".join(re.findall(r'"([^"]*)"', r.stdout))
    srv = proxy_server(dkim_keys="example.com:p1:" + key)
    c = through(srv, v2(TRUSTED, 47000))
    c.cmd("EHLO client.test", "250 ")
    qid = c.mail(rcpts=("<x@example.net>",),
                 body=b"From: joe@example.com\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
    c.close()
    msg = srv.body(qid)
    assert dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt.encode()), msg[:600]
    assert b"([198.51.100.7])" in msg


if __name__ == "__main__":
    main()
