#!/usr/bin/python3
"""Running it for real: SLUICE_<KEY> environment overrides, JSON logs,
and dropping root to `user` after binding."""
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sluicetest import BIN, Server, free_port, main, poll_until, test  # noqa: E402


def run(args, env_extra=None, cwd=None):
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.run([BIN] + args, env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=30)


@test
def environment_overrides_the_file():
    srv = Server(start=False)
    srv.write_config()
    p2 = free_port()
    os.environ["SLUICE_HOSTNAME"] = "from-env.test"
    os.environ["SLUICE_LISTEN"] = "127.0.0.1:%d" % p2
    os.environ["SLUICE_MAX_RECIPIENTS"] = "1"
    try:
        srv.port = p2
        srv.start()
    finally:
        for k in ("SLUICE_HOSTNAME", "SLUICE_LISTEN", "SLUICE_MAX_RECIPIENTS"):
            del os.environ[k]
    c = srv.connect()
    code, text = c.reply("220 ")
    assert "from-env.test" in text, text
    c.cmd("EHLO client.test", "250 ")
    c.cmd("MAIL FROM:<a@client.test>", "250 ")
    c.cmd("RCPT TO:<r1@example.net>", "250 ")
    c.cmd("RCPT TO:<r2@example.net>", "452 ")
    c.cmd("QUIT", "221 ")


@test
def bad_environment_value_is_reported():
    d = tempfile.mkdtemp(prefix="sluice-env-")
    r = run(["check-config"], {"SLUICE_WORKERS": "lots", "SLUICE_QUEUE_PATH": d + "/q.db"})
    assert r.returncode != 0
    assert "environment SLUICE_WORKERS" in r.stderr and "lots" in r.stderr, r.stderr
    r = run(["check-config"], {"SLUICE_RELAY_NETWORKS": "10.0.0.0/8, 192.168.0.0/16",
                               "SLUICE_QUEUE_PATH": d + "/q.db"}, cwd=d)
    assert r.returncode == 0, r.stderr
    # serve refuses to start with it, naming the variable.
    r = run(["serve"], {"SLUICE_LOG_FORMAT": "xml", "SLUICE_QUEUE_PATH": d + "/q.db"})
    assert r.returncode == 1 and "SLUICE_LOG_FORMAT" in r.stderr, r.stderr


@test
def json_log_lines_parse():
    srv = Server(config={"log_format": "json"}, start=False)
    srv.write_config()
    srv.start(wait=False)
    srv.wait_log(r'"msg":"ready: ')
    c = srv.connect()
    c.ehlo()
    qid = c.mail(sender="<a@client.test>", rcpts=("<b@example.net>",))
    c.cmd("QUIT", "221 ")
    srv.wait_log(r'"msg":"disconnect from')
    assert srv.stop() == 0
    records = []
    for line in srv.log().splitlines():
        rec = json.loads(line)  # every line is one JSON object
        for key in ("time", "level", "component", "pid", "msg"):
            assert key in rec, (key, line)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", rec["time"]), rec
        records.append(rec)
    accepted = [r for r in records if r.get("id") == qid and "from" in r]
    assert accepted, records
    assert accepted[0]["component"] == "smtpd"
    assert accepted[0]["from"] == "<a@client.test>"
    assert accepted[0]["level"] == "info"


def nobody():
    return pwd.getpwnam("nobody")


def proc_ids(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


@test
def drops_root_after_binding():
    if os.geteuid() != 0:
        print("# not root: privilege drop not testable here")
        # Still check the option parses and is ignored without root.
        srv = Server(config={"user": "nobody"})
        return
    pw = nobody()
    base = tempfile.mkdtemp(prefix="sluice-privs-")
    os.chmod(base, 0o755)
    qdir = os.path.join(base, "data")  # does not exist: created for the user
    srv = Server(config={"user": "nobody", "queue_path": os.path.join(qdir, "queue.db")},
                 start=False)
    # The user reads the configuration again on SIGHUP.
    os.chmod(srv.dir, 0o755)
    srv.start()
    ids = proc_ids(srv.proc.pid)
    assert ids["Uid"] == [str(pw.pw_uid)] * 4, ids["Uid"]
    assert ids["Gid"] == [str(pw.pw_gid)] * 4, ids["Gid"]
    # Only CAP_NET_BIND_SERVICE (bit 10) is left.
    assert int(ids["CapEff"][0], 16) == 1 << 10, ids["CapEff"]
    assert int(ids["CapPrm"][0], 16) == 1 << 10, ids["CapPrm"]
    assert "running as user nobody" in srv.log()
    c = srv.connect()
    c.ehlo()
    c.mail()
    c.cmd("QUIT", "221 ")
    st = os.stat(os.path.join(qdir, "queue.db"))
    assert st.st_uid == pw.pw_uid, st
    assert os.stat(qdir).st_uid == pw.pw_uid
    # A reload can still open a new listener on a port below 1024.
    low = None
    for p in range(1000, 1020):
        try:
            import socket
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.close()
            low = p
            break
        except OSError:
            continue
    srv.config["listen"] = "127.0.0.1:%d, 127.0.0.1:%d" % (srv.port, low)
    srv.write_config()
    mark = len(srv.log())
    import signal
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"configuration reloaded", start=mark)
    assert "listening on 127.0.0.1:%d" % low in srv.log()[mark:], srv.log()[mark:]
    from sluicetest import Client
    cl = Client("127.0.0.1", low)
    cl.reply("220 ")
    cl.close()
    assert srv.stop() == 0
    # A certificate whose key only root may read (as certbot leaves it):
    # read at start as root; a reload as the user keeps it and applies
    # the rest.
    import certs
    cert, key = certs.install(certs.pki().a, srv.dir)
    os.chmod(key, 0o600)
    srv.config["tls_cert"] = cert
    srv.config["tls_key"] = key
    srv.start()
    srv.config["hostname"] = "after-reload.test"
    srv.write_config()
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    text = srv.wait_log(r"configuration reloaded .*certificate kept", start=mark)
    assert "keeping the certificate loaded at start" in text, text
    c = srv.connect()
    code, greeting = c.reply("220 ")
    assert "after-reload.test" in greeting, greeting
    c.cmd("EHLO client.test", "250 ")
    c.cmd("STARTTLS", "220 ")
    c.close()
    assert srv.stop() == 0
    # A queue made by an earlier run as root, under another name, in a
    # folder the user owns: its files are given to the user.
    own = os.path.join(base, "own")
    os.mkdir(own, 0o750)
    os.chown(own, pw.pw_uid, pw.pw_gid)
    srv3 = Server(config={"user": "root", "queue_path": os.path.join(own, "mail.db")})
    assert srv3.stop() == 0
    assert os.stat(os.path.join(own, "mail.db")).st_uid == 0
    srv3.config["user"] = "nobody"
    os.chmod(srv3.dir, 0o755)
    srv3.start()
    for name in ("mail.db", "selfsigned-cert.pem", "selfsigned-key.pem"):
        assert os.stat(os.path.join(own, name)).st_uid == pw.pw_uid, name
    c = srv3.connect()
    c.ehlo()
    c.mail()
    c.cmd("QUIT", "221 ")
    assert srv3.stop() == 0
    # A queue folder that exists and that the user cannot write: a clear
    # fatal error, not a half-started server.
    locked = os.path.join(base, "locked")
    os.mkdir(locked, 0o755)
    srv2 = Server(config={"user": "nobody", "queue_path": os.path.join(locked, "queue.db")},
                  start=False)
    srv2.write_config()
    r = subprocess.run([BIN, "serve", "-c", srv2.cfgpath], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    assert "not writable by user nobody" in r.stderr and "chown nobody" in r.stderr, r.stderr
    # A user that does not exist, named in the file: refused.
    srv2.config["user"] = "no-such-user-here"
    srv2.write_config()
    r = subprocess.run([BIN, "serve", "-c", srv2.cfgpath], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    import shutil
    shutil.rmtree(base, ignore_errors=True)


@test
def finished_messages_are_pruned_after_retention():
    import sink
    tmp = tempfile.mkdtemp(prefix="sluice-prune-")
    port = free_port()
    mx = sink.Sink("127.0.0.1", port, os.path.join(tmp, "mx"))
    try:
        srv = Server(config={"delivery_threads": "1", "outbound_tls": "none",
                             "routes": "example.net:127.0.0.1:%d" % port,
                             "finished_retention": "2s"})
        c = srv.connect()
        c.ehlo()
        done = c.mail(rcpts=("<a@example.net>",))
        c.cmd("QUIT", "221 ")
        poll_until(lambda: srv.query("select state from recipients where msg_id=?",
                                     (done,)) == [("delivered",)], 15, "delivery")
        assert srv.query("select count(*) from attempts where msg_id=?", (done,)) == [(1,)]
        # Gone, with its attempts, a few seconds later; pending mail stays.
        poll_until(lambda: srv.query("select count(*) from messages where id=?",
                                     (done,)) == [(0,)], 15, "pruning")
        assert srv.query("select count(*) from attempts where msg_id=?", (done,)) == [(0,)]
        assert srv.query("select count(*) from recipients where msg_id=?", (done,)) == [(0,)]
        srv.wait_log(r"pruned 1 finished message")  # logged just after the commit
    finally:
        mx.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


@test
def config_example_documents_every_key():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    example = open(os.path.join(root, "config.example")).read()
    shown = re.findall(r"^#([a-z_]+) =(.*)$", example, re.M)
    table = re.findall(r'^\s*\{"([a-z_]+)", parse_', open(os.path.join(root, "common/config.c")).read(),
                       re.M)
    assert len(table) > 40, table
    missing = sorted(set(table) - set(k for k, _ in shown))
    assert not missing, "keys not in config.example: %s" % missing
    # Uncommented, the example is a valid configuration.
    d = tempfile.mkdtemp(prefix="sluice-example-")
    path = os.path.join(d, "all.conf")
    with open(path, "w") as f:
        for k, v in shown:
            f.write("%s =%s\n" % (k, v))
    r = run(["check-config", "-c", path], cwd=d)
    assert r.returncode == 0, r.stderr


if __name__ == "__main__":
    main()
