"""DKIM signing (RFC 6376, RFC 8463): `sluice dkim keygen` and `show`, and
mail signed at accept time, every signature checked by an independent
verifier (Debian's python3-dkim, with the key's record from `sluice dkim
show` standing in for DNS): RSA and Ed25519 side by side, the RFC 8463
example key and message, folded and repeated fields, runs of white space,
8-bit and UTF-8 fields, empty bodies, BDAT cut after a CR, what is not
signed (no key for the From domain, two From fields, untrusted clients),
dkim_sign_by = sender, key rotation on SIGHUP (and a bad key that keeps the
old ones), and a signed message delivered through a sink."""
import base64
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import dkim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sink import Sink  # noqa: E402
from sluicetest import BIN, Server, free_port, main, poll_until, test  # noqa: E402

# RFC 8463 appendix A: the Ed25519 key (RFC 8032 section 7.1, test 1),
# its record and the example message.
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_P = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_MSG = (b"From: Joe SixPack <joe@football.example.com>\r\n"
               b"To: Suzie Q <suzie@shopping.example.net>\r\n"
               b"Subject: Is dinner ready?\r\n"
               b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
               b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
               b"\r\n"
               b"Hi.\r\n"
               b"\r\n"
               b"We lost the game.  Are you hungry yet?\r\n"
               b"\r\n"
               b"Joe.\r\n")
# relaxed body hash of the message above (RFC 8463 appendix A.3)
RFC8463_BH = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
EMPTY_BH = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # sha256("")


def sluice_dkim(*args):
    return subprocess.run([BIN, "dkim"] + list(args), capture_output=True, text=True,
                          timeout=120)


def record_txt(line):
    """The TXT data of a record line: its strings joined."""
    m = re.fullmatch(r'(\S+)\._domainkey\.(\S+)\. IN TXT \(((?: "[^"]*")+) \)\n', line)
    assert m, repr(line)
    parts = re.findall(r'"([^"]*)"', m.group(3))
    assert all(len(p) <= 255 for p in parts), parts
    return "%s._domainkey.%s." % (m.group(1), m.group(2)), "".join(parts)


class Keys:
    """Keys made with `sluice dkim keygen` in a folder; `dns` maps the
    record names to their TXT data, as a resolver would."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-dkim-")
        self.dns = {}

    def make(self, domain, selector, *alg):
        path = os.path.join(self.dir, "%s.%s.key" % (domain, selector))
        r = sluice_dkim("keygen", domain, selector, "--key", path, *alg)
        assert r.returncode == 0, r.stderr
        name, txt = record_txt(r.stdout)
        self.dns[name] = txt
        return path

    def add_pem(self, domain, selector, pem, txt):
        path = os.path.join(self.dir, "%s.%s.key" % (domain, selector))
        with open(path, "w") as f:
            f.write(pem)
        self.dns["%s._domainkey.%s." % (selector, domain)] = txt
        return path

    def resolve(self, name, timeout=5):
        return self.dns.get(name.decode()).encode() if name.decode() in self.dns else None

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def signatures(msg):
    """The DKIM-Signature fields at the top of a stored message."""
    head = msg.split(b"\r\n\r\n", 1)[0]
    fields = re.split(rb"\r\n(?![ \t])", head)
    return [f for f in fields if f.lower().startswith(b"dkim-signature:")]


def tags(field):
    value = re.sub(rb"\s+", b"", field.split(b":", 1)[1]).decode()
    return dict(t.split("=", 1) for t in value.split(";") if t)


def verify_all(keys, msg, n):
    """Every one of the n signatures verifies."""
    sigs = signatures(msg)
    assert len(sigs) == n, (n, sigs)
    d = dkim.DKIM(msg)
    for i in range(n):
        assert d.verify(idx=i, dnsfunc=keys.resolve), \
            "signature %d does not verify: %r\n%r" % (i, sigs[i], msg[:2000])
    return [tags(s) for s in sigs]


def send(srv, body, sender="<joe@example.com>", source=None, rcpt="<ann@example.net>"):
    c = srv.connect(source=source)
    try:
        c.ehlo()
        stuffed = re.sub(rb"(?m)^\.", b"..", body)
        return c.mail(sender=sender, rcpts=[rcpt], body=stuffed + b".\r\n")
    finally:
        c.close()


def signing_server(keys, paths, **extra):
    cfg = {"dkim_keys": ", ".join(paths)}
    cfg.update(extra)
    return Server(config=cfg)


MSG = (b"From: Joe <joe@example.com>\r\n"
       b"To: Ann <ann@example.net>\r\n"
       b"Subject: lunch\r\n"
       b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
       b"Message-ID: <1@example.com>\r\n"
       b"\r\n"
       b"Shall we?\r\n")


@test
def keygen_writes_a_private_key_and_prints_its_record():
    with Keys() as k:
        rsa = k.make("example.com", "s2026")
        ed = k.make("example.com", "e2026", "--ed25519")
        for path in (rsa, ed):
            st = os.stat(path)
            assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
            with open(path) as f:
                assert f.read().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
        txt = k.dns["s2026._domainkey.example.com."]
        assert txt.startswith("v=DKIM1; k=rsa; p=MII"), txt
        # p= is the SubjectPublicKeyInfo of a 2048-bit key.
        spki = base64.b64decode(txt.split("p=", 1)[1])
        assert 290 <= len(spki) <= 300, len(spki)
        txt = k.dns["e2026._domainkey.example.com."]
        assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", txt), txt
        assert len(base64.b64decode(txt.split("p=", 1)[1])) == 32  # the raw key
        # show prints the same record; keygen never replaces a key.
        r = sluice_dkim("show", "example.com", "e2026", "--key", ed)
        assert r.returncode == 0 and record_txt(r.stdout)[1] == txt, r
        with open(ed, "rb") as f:
            before = f.read()
        r = sluice_dkim("keygen", "example.com", "e2026", "--key", ed, "--ed25519")
        assert r.returncode == 1 and "never replaced" in r.stderr and r.stdout == "", r
        with open(ed, "rb") as f:
            assert f.read() == before
        for bad in (["keygen", "example.com", "s1"],                  # no --key
                    ["keygen", "example.com", "s.1", "--key", "x"],   # selector
                    ["keygen", "example.com", "s1", "--key", "x", "--rsa", "512"],
                    ["frob", "example.com", "s1", "--key", "x"]):
            r = sluice_dkim(*bad)
            assert r.returncode == 2 and "usage" in r.stderr + r.stdout or \
                "sluice: dkim:" in r.stderr, (bad, r)
        r = sluice_dkim("keygen", "example.com", "big", "--key",
                        os.path.join(k.dir, "big.key"), "--rsa", "3072")
        assert r.returncode == 0, r.stderr
        _, txt = record_txt(r.stdout)
        assert len(txt) > 255 and r.stdout.count('" "') >= 1, r.stdout


@test
def rsa_and_ed25519_signatures_verify():
    with Keys() as k:
        paths = ["example.com:s1:" + k.make("example.com", "s1"),
                 "example.com:e1:" + k.make("example.com", "e1", "--ed25519")]
        srv = signing_server(k, paths)
        qid = send(srv, MSG)
        msg = srv.body(qid)
        t = verify_all(k, msg, 2)
        assert [x["a"] for x in t] == ["rsa-sha256", "ed25519-sha256"], t
        for x in t:
            assert x["c"] == "relaxed/relaxed" and x["d"] == "example.com", x
            assert "l" not in x and "x" not in x, x
            h = x["h"].split(":")
            # From and the usual fields, each listed once more than it occurs.
            assert h.count("from") == 2 and h.count("subject") == 2, h
            assert h.count("cc") == 1 and h.count("references") == 1, h
            assert "received" not in h and "dkim-signature" not in h, h
        # The signatures are in front, our Received header after them.
        assert re.match(rb"(DKIM-Signature: [^\r]*\r\n(\t[^\r]*\r\n)*){2}Received: ", msg), msg[:900]
        srv.wait_log(r"id=%s .* dkim=example\.com" % qid)
        # sluice queue show shows them with the header.
        r = subprocess.run([BIN, "queue", "show", qid, "-c", srv.cfgpath], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.count("DKIM-Signature: v=1;") == 2, r.stdout
        # Stored size counts them.
        size = srv.query("select stored_size from messages where id=?", (qid,))[0][0]
        assert size == len(msg), (size, len(msg))


@test
def rfc8463_example_key_and_message():
    with Keys() as k:
        seed = base64.b64decode(RFC8463_SEED)
        pkcs8 = bytes.fromhex("302e020100300506032b657004220420") + seed
        pem = ("-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n"
               % base64.b64encode(pkcs8).decode())
        path = k.add_pem("football.example.com", "brisbane", pem,
                         "v=DKIM1; k=ed25519; p=" + RFC8463_P)
        # Its public half, as show derives it, is the RFC's.
        r = sluice_dkim("show", "football.example.com", "brisbane", "--key", path)
        assert r.returncode == 0, r.stderr
        assert record_txt(r.stdout)[1] == "v=DKIM1; k=ed25519; p=" + RFC8463_P, r.stdout
        srv = signing_server(k, ["football.example.com:brisbane:" + path])
        qid = send(srv, RFC8463_MSG, sender="<joe@football.example.com>")
        t = verify_all(k, srv.body(qid), 1)
        assert t[0]["bh"] == RFC8463_BH, t[0]
        assert t[0]["a"] == "ed25519-sha256" and t[0]["s"] == "brisbane", t[0]


@test
def hard_headers_and_bodies_verify():
    with Keys() as k:
        paths = ["example.com:s1:" + k.make("example.com", "s1"),
                 "example.com:e1:" + k.make("example.com", "e1", "--ed25519")]
        srv = signing_server(k, paths)
        cases = [
            # folded fields, runs of WSP
            (b"From: Joe\r\n  <joe@example.com>\r\nSubject:   a \t  b\r\n\t c  \r\n"
             b"To:ann@example.net\r\n\r\nline  with \t runs  \r\n  lead\r\n", None),
            # a field name repeated, in another case
            (b"From: joe@example.com\r\nReceived: x\r\nSUBJECT: one\r\nsubject: two\r\n"
             b"Cc: a@example.net\r\ncc: b@example.net\r\n\r\nbody\r\n", None),
            # empty body, body of blank lines: the empty string is hashed
            (b"From: joe@example.com\r\nSubject: empty\r\n\r\n", EMPTY_BH),
            (b"From: joe@example.com\r\nSubject: blank\r\n\r\n\r\n  \r\n\t\r\n", EMPTY_BH),
            # blank lines inside the body stay, trailing ones go
            (b"From: joe@example.com\r\n\r\na\r\n\r\n\r\nb\r\n\r\n\r\n", None),
            # 8-bit fields and body (UTF-8)
            ("From: J\u00f6rg <joe@example.com>\r\nSubject: gr\u00fc\u00dfe \u2603\r\n\r\n"
             "sch\u00f6n\r\n".encode(), None),
            # a From display name with a comma in quotes and a comment
            (b'From: "Six, Joe" (the boss) <joe@example.com>\r\n\r\nhi\r\n', None),
            # over one chunk: the signatures are stored apart (chunk -1)
            (b"From: joe@example.com\r\n\r\n" + b"0123456789abcdef  \r\n" * 12000, None),
            # a long body line and a lone dot line (dot-stuffed on the wire)
            (b"From: joe@example.com\r\n\r\n" + b"x" * 900 + b"\r\n.\r\n.end\r\n", None),
        ]
        for body, bh in cases:
            qid = send(srv, body)
            msg = srv.body(qid)
            t = verify_all(k, msg, 2)
            size = srv.query("select stored_size from messages where id=?", (qid,))[0][0]
            assert size == len(msg), (size, len(msg))
            apart = srv.query("select count(*) from body_chunks where msg_id=? and seq=-1",
                              (qid,))[0][0]
            assert apart == (1 if len(body) > 64 * 1024 else 0), (apart, len(body))
            if bh is not None:
                assert t[0]["bh"] == bh and t[1]["bh"] == bh, (body, t)


@test
def smtputf8_message_verifies():
    with Keys() as k:
        srv = signing_server(k, ["example.com:e1:" + k.make("example.com", "e1", "--ed25519")])
        c = srv.connect()
        c.ehlo()
        c.cmd("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8", "250 ")
        c.cmd("RCPT TO:<\u00e5sa@example.net>", "250 ")
        c.cmd("DATA", "354 ")
        c.send("From: J\u00f6rg <j\u00f6rg@example.com>\r\nTo: \u00e5sa@example.net\r\n"
               "Subject: \u00e9t\u00e9\r\n\r\nbonjour\r\n.\r\n".encode())
        qid = re.search(r"queued as (\w+)", c.reply("250 ")[1]).group(1)
        c.close()
        verify_all(k, srv.body(qid), 1)


@test
def bdat_chunks_cut_anywhere_verify():
    with Keys() as k:
        srv = signing_server(k, ["example.com:e1:" + k.make("example.com", "e1", "--ed25519")])
        msg = (b"From: joe@example.com\r\nSubject: chunks\r\n\r\n"
               b"one  \r\ntwo\t\t\r\n\r\nthree\r\n\r\n")
        # Cuts right after a CR (its LF in the next chunk), inside the
        # header, and at the header's end.
        for cuts in ([msg.index(b"\r\n") + 1], [5, 30], [msg.index(b"\r\n\r\n") + 2,
                     msg.index(b"two") + 5], list(range(1, len(msg)))):
            c = srv.connect()
            c.ehlo()
            c.cmd("MAIL FROM:<joe@example.com>", "250 ")
            c.cmd("RCPT TO:<ann@example.net>", "250 ")
            prev = 0
            for cut in cuts:
                c.send(b"BDAT %d\r\n" % (cut - prev) + msg[prev:cut])
                c.reply("250 ")
                prev = cut
            c.send(b"BDAT %d LAST\r\n" % (len(msg) - prev) + msg[prev:])
            qid = re.search(r"queued as (\w+)", c.reply("250 ")[1]).group(1)
            c.close()
            verify_all(k, srv.body(qid), 1)


@test
def what_is_not_signed():
    with Keys() as k:
        srv = signing_server(k, ["example.com:s1:" + k.make("example.com", "s1", "--ed25519")],
                             relay_networks="127.0.0.1/32", relay_domains="inbound.test")
        cases = [
            b"From: joe@other.example\r\n\r\nno key for this domain\r\n",
            b"From: joe@example.com\r\nFrom: eve@example.com\r\n\r\ntwo From fields\r\n",
            b"Subject: no From at all\r\n\r\nx\r\n",
            b"From: joe@example.com, ann@example.com\r\n\r\ntwo addresses\r\n",
        ]
        for body in cases:
            qid = send(srv, body)
            assert signatures(srv.body(qid)) == [], body
        # An untrusted client sending to a relay domain: not signed.
        qid = send(srv, MSG, source="127.0.0.77", rcpt="<in@inbound.test>")
        assert signatures(srv.body(qid)) == []
        # A trusted one: signed.
        qid = send(srv, MSG)
        verify_all(k, srv.body(qid), 1)


@test
def header_too_large_to_hold_is_refused_not_sent_unsigned():
    # The signer holds at most 128 KB of header per message (a bound on
    # what a client can make sluice keep); beyond, the From field cannot
    # be trusted to be read, so the message is refused for good.
    with Keys() as k:
        srv = signing_server(k, ["example.com:e1:" + k.make("example.com", "e1", "--ed25519")])
        lines = [b"X-Filler-%d: %s\r\n" % (i, b"y" * 900) for i in range(150)]
        big = b"".join(lines)  # about 137 KB
        c = srv.connect()
        c.ehlo()
        c.cmd("MAIL FROM:<joe@example.com>", "250 ")
        c.cmd("RCPT TO:<ann@example.net>", "250 ")
        c.cmd("DATA", "354 ")
        c.send(b"From: joe@example.com\r\n" + big + b"\r\nbody\r\n.\r\n")
        c.reply(r"552 5\.3\.4 .*header too large to sign")
        c.cmd("QUIT", "221 ")
        assert srv.query("select count(*) from messages") == [(0,)]
        # Just under the bound it is signed.
        qid = send(srv, b"From: joe@example.com\r\n" + b"".join(lines[:120]) +
                   b"\r\nbody\r\n")
        verify_all(k, srv.body(qid), 1)


@test
def sign_by_envelope_sender():
    with Keys() as k:
        srv = signing_server(k, ["bulk.example:s1:" + k.make("bulk.example", "s1", "--ed25519")],
                             dkim_sign_by="sender")
        qid = send(srv, MSG, sender="<bounces@Bulk.Example>")
        t = verify_all(k, srv.body(qid), 1)
        assert t[0]["d"] == "bulk.example", t
        qid = send(srv, MSG, sender="<>")
        assert signatures(srv.body(qid)) == []


@test
def key_rotation_on_sighup_and_a_bad_key_keeps_the_old():
    with Keys() as k:
        old = "example.com:old:" + k.make("example.com", "old", "--ed25519")
        srv = signing_server(k, [old])
        assert verify_all(k, srv.body(send(srv, MSG)), 1)[0]["s"] == "old"
        new = "example.com:new:" + k.make("example.com", "new")
        srv.config["dkim_keys"] = new
        srv.write_config()
        mark = len(srv.log())
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_log(r"configuration reloaded .*1 DKIM keys", start=mark)
        assert verify_all(k, srv.body(send(srv, MSG)), 1)[0]["s"] == "new"
        # A key that cannot be loaded: the old configuration stays.
        bad = os.path.join(k.dir, "bad.key")
        with open(bad, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        srv.config["dkim_keys"] = "example.com:bad:" + bad
        srv.write_config()
        mark = len(srv.log())
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_log(r"SIGHUP: DKIM key .*bad\.key.*keeping the old DKIM keys", start=mark)
        assert verify_all(k, srv.body(send(srv, MSG)), 1)[0]["s"] == "new"
        # check-config reports it; a server does not start with it.
        r = subprocess.run([BIN, "check-config", "-c", srv.cfgpath], capture_output=True,
                           text=True)
        assert r.returncode == 1 and "bad.key" in r.stderr, r


@test
def weak_rsa_key_warns_and_tiny_one_is_refused():
    with Keys() as k:
        weak = k.make("example.com", "w", "--rsa", "1024")
        srv = signing_server(k, ["example.com:w:" + weak])
        srv.wait_log(r"warning dkim: DKIM key .* RSA of 1024 bits; 2048 or more")
        verify_all(k, srv.body(send(srv, MSG)), 1)
        assert srv.stop() == 0
        tiny = os.path.join(k.dir, "tiny.key")
        subprocess.run(["certtool", "--generate-privkey", "--key-type", "rsa", "--bits",
                        "768", "--pkcs8", "--null-password", "--outfile", tiny],
                       check=True, capture_output=True)
        r = subprocess.run([BIN, "check-config"], capture_output=True, text=True,
                           env=dict(os.environ, SLUICE_DKIM_KEYS="example.com:t:" + tiny,
                                    SLUICE_QUEUE_PATH=os.path.join(k.dir, "q.db")))
        assert r.returncode == 1 and "RSA of 768 bits; at least 1024" in r.stderr, r


@test
def notices_are_signed_with_the_hostnames_domain():
    # hostname = relay.test: a key for its parent signs sluice's notices.
    with Keys() as k:
        dead = free_port()
        srv = signing_server(k, ["relay.test:n1:" + k.make("relay.test", "n1", "--ed25519")],
                             delivery_threads="1", retry_schedule="1h",
                             routes="example.net:127.0.0.1:%d" % dead)
        # The notice goes to example.net too: deferred there, kept.
        qid = send(srv, MSG, sender="<joe@example.net>")
        assert signatures(srv.body(qid)) == []  # example.com has no key
        r = subprocess.run([BIN, "queue", "bounce", qid, "-c", srv.cfgpath],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        dsn = poll_until(lambda: srv.query("select id from messages where sender = ''"),
                         15, "the failure notice")[0][0]
        msg = srv.body(dsn)
        assert b"From: Mail Delivery System <MAILER-DAEMON@relay.test>" in msg, msg[:800]
        t = verify_all(k, msg, 1)
        assert t[0]["d"] == "relay.test", t
        size = srv.query("select stored_size from messages where id=?", (dsn,))[0][0]
        assert size == len(msg), (size, len(msg))


@test
def signed_message_delivered_through_a_sink_still_verifies():
    k = Keys()
    port = free_port("127.0.0.2")
    d = tempfile.mkdtemp(prefix="sluice-sink-")
    sink = Sink("127.0.0.2", port, d)
    try:
        srv = signing_server(k, ["example.com:s1:" + k.make("example.com", "s1"),
                                 "example.com:e1:" + k.make("example.com", "e1", "--ed25519")],
                             delivery_threads="1", routes="dest.test:127.0.0.2:%d" % port,
                             retry_schedule="1s")
        send(srv, MSG, rcpt="<ann@dest.test>")
        msgs = poll_until(lambda: sink.messages(), 15, "delivery to the sink")
        verify_all(k, msgs[0][1], 2)
    finally:
        sink.stop()
        shutil.rmtree(d, ignore_errors=True)
        k.remove()


if __name__ == "__main__":
    main()
