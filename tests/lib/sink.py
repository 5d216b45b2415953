"""
sink - a real SMTP server (Debian's python3-aiosmtpd) standing in for a
remote MX or a smarthost in delivery tests.

    /usr/bin/python3 tests/lib/sink.py --listen 127.0.0.2:PORT --maildir DIR
        [--cert C --key K [--smtps]] [--require-tls] [--auth USER:PASS]
        [--greeting-421]

Prints "READY" when listening.  Each message is stored as DIR/N.eml (the
data exactly as received) and DIR/N.json (envelope, options, TLS, auth).
Behaviour by recipient local part:
  tempfail*      451 at RCPT           reject*, nouser*  550 at RCPT
  datatempfail*  451 after the data    datareject*       554 after the data
  drop*          connection closed at RCPT
From Python, Sink(...) starts it as a subprocess and stops it by PID.
"""
import argparse
import json
import os
import signal
import ssl
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


class Sink:
    """Run sink.py as a subprocess (for tests)."""

    def __init__(self, host, port, maildir, *extra):
        self.host, self.port, self.maildir = host, port, maildir
        os.makedirs(maildir, exist_ok=True)
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "sink.py"), "--listen",
             "%s:%d" % (host, port), "--maildir", maildir] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "READY" not in line:
            self.stop()
            raise AssertionError("sink did not start")

    def messages(self):
        """[(envelope dict, data bytes)] in arrival order."""
        out = []
        names = sorted((f for f in os.listdir(self.maildir) if f.endswith(".json")),
                       key=lambda f: int(f.split(".")[0]))
        for name in names:
            with open(os.path.join(self.maildir, name)) as f:
                env = json.load(f)
            with open(os.path.join(self.maildir, name[:-5] + ".eml"), "rb") as f:
                out.append((env, f.read()))
        return out

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def serve(a):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    counter = [0]

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            local = address.split("@")[0].lower()
            if local.startswith("drop"):
                session.transport.close()
                return "421 4.4.2 dropped"
            if local.startswith("tempfail"):
                return "451 4.3.0 try again later"
            if local.startswith("reject") or local.startswith("nouser"):
                return "550 5.1.1 <%s>: user unknown" % address
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.append(rcpt_options)
            return "250 2.1.5 OK"

        async def handle_DATA(self, server, session, envelope):
            locals_ = [r.split("@")[0].lower() for r in envelope.rcpt_tos]
            if any(l.startswith("datatempfail") for l in locals_):
                return "451 4.3.0 data temporarily refused"
            if any(l.startswith("datareject") for l in locals_):
                return "554 5.6.0 data refused"
            counter[0] += 1
            n = counter[0]
            data = envelope.original_content
            tmp = os.path.join(a.maildir, ".%d.tmp" % n)
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(a.maildir, "%d.eml" % n))
            meta = {
                "mail_from": envelope.mail_from,
                "mail_options": envelope.mail_options,
                "rcpt_tos": envelope.rcpt_tos,
                "rcpt_options": envelope.rcpt_options,
                "peer": list(session.peer)[:2],
                "helo": session.host_name,
                "tls": session.ssl is not None or a.smtps,
                "auth": (session.auth_data.login.decode()
                         if session.authenticated and session.auth_data else None),
                "smtputf8": envelope.smtp_utf8,
                "size": len(data),
            }
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.rename(tmp, os.path.join(a.maildir, "%d.json" % n))
            return "250 2.0.0 OK queued as sink-%d" % n

    ctx = None
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
    users = {}
    if a.auth:
        u, p = a.auth.split(":", 1)
        users[u] = p

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and users.get(auth_data.login.decode()) == auth_data.password.decode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    host, port = a.listen.rsplit(":", 1)
    host = host.strip("[]")
    kwargs = dict(hostname=host, port=int(port), enable_SMTPUTF8=True,
                  decode_data=False, data_size_limit=None)
    if a.smtps:
        kwargs["ssl_context"] = ctx
    elif ctx is not None:
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = a.require_tls
    if users:
        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = not a.auth_without_tls

    class Greeting421(SMTP):
        async def _handle_client(self):
            await self.push("421 4.3.2 not now")
            self.transport.close()

    if a.greeting_421:
        kwargs["server_kwargs"] = {}
        ctrl = Controller(Handler(), **kwargs)
        ctrl.factory = lambda: Greeting421(ctrl.handler, **ctrl.SMTP_kwargs)
    else:
        ctrl = Controller(Handler(), **kwargs)
    ctrl.start()
    print("READY", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    ctrl.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--smtps", action="store_true")
    p.add_argument("--require-tls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--auth-without-tls", action="store_true")
    p.add_argument("--greeting-421", action="store_true")
    args = p.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    serve(args)
