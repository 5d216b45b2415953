"""Admission limits a botnet cannot walk around: max_connections, per-client
counts by prefix (an IPv6 client is its /64), the per-client connection
rate, the AUTH-failure rate across sessions, and stress mode.  Each limit
answers with a clear 421/454 and enhanced code, logs one line and counts in
the metrics; clients in relay_networks are exempt."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from fixtures import metric, metrics_server, plain, tls_context, tls_server  # noqa: E402
from sluicetest import Server, main, poll_until, test  # noqa: E402



def greet(srv, source, expect="220 "):
    c = srv.connect(source=source, timeout=10)
    code, text = c.reply(expect)
    return c, text


@test
def max_connections_refuses_untrusted_only():
    srv = metrics_server({"max_connections": "5", "stress_threshold": "100"})
    held = [greet(srv, "127.0.0.%d" % (100 + i))[0] for i in range(5)]
    c, text = greet(srv, "127.0.0.110", r"421 4\.3\.2 ")
    assert "too many connections" in text, text
    assert c.closed()
    srv.wait_log(r"reject: client=\[127\.0\.0\.110\]: 5 connections open \(max_connections\)")
    # Trusted clients are exempt (relay_networks).
    t, _ = greet(srv, "127.0.0.1")
    t.cmd("QUIT", "221 ")
    assert metric(srv, "sluice_sessions_rejected_total", 'reason="max_connections"') == 1
    # A slot freed is a slot to use.
    held[0].cmd("QUIT", "221 ")
    poll_until(lambda: srv.log().count("disconnect from [127.0.0.100]") == 1)
    greet(srv, "127.0.0.111")


@test
def per_client_count_uses_the_prefix():
    # With client_ipv4_prefix = 24, 127.0.0.66 and 127.0.0.67 are one
    # client: three connections from the /24 in all.
    srv = metrics_server({"max_connections_per_ip": "3", "client_ipv4_prefix": "24"})
    held = [greet(srv, "127.0.0.%d" % a)[0] for a in (66, 67, 68)]
    c, text = greet(srv, "127.0.0.69", r"421 4\.7\.0 ")
    assert "too many connections from 127.0.0.0/24" in text, text
    srv.wait_log(r"reject: client=\[127\.0\.0\.69\]: too many connections from 127\.0\.0\.0/24 "
                 r"\(3 open, max_connections_per_ip\)")
    assert metric(srv, "sluice_sessions_rejected_total", 'reason="per_ip_limit"') == 1
    held[1].cmd("QUIT", "221 ")
    poll_until(lambda: "disconnect from [127.0.0.67]" in srv.log())
    greet(srv, "127.0.0.70")


def ipv6_inside_a_namespace():
    """Run inside `unshare -n`: a fresh network namespace whose loopback has
    two /64s, so that clients in one /64 are one client."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for a in ("fd00:5::1", "fd00:5::2", "fd00:5::3", "fd00:6::1"):
        subprocess.run(["ip", "-6", "addr", "add", a + "/64", "dev", "lo", "nodad"], check=True)
    srv = Server(host="::1", config={"max_connections_per_ip": "2",
                                     "relay_networks": "127.0.0.1/32"})
    try:
        a = greet(srv, "fd00:5::1")[0]
        b = greet(srv, "fd00:5::2")[0]
        c, text = greet(srv, "fd00:5::3", r"421 4\.7\.0 ")
        assert "too many connections from fd00:5::/64" in text, text
        d = greet(srv, "fd00:6::1")[0]   # another /64 is another client
        for x in (a, b, d):
            x.cmd("QUIT", "221 ")
        assert srv.stop() == 0
    finally:
        srv.cleanup(keep=False)
    print("ipv6 ok")


@test
def ipv6_client_is_its_slash_64():
    # A fresh network namespace (unshare -n) with two /64s on its loopback:
    # the test never touches the host's addresses.
    r = subprocess.run(["unshare", "-n", sys.executable, __file__, "--ipv6-inner"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ipv6 ok" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@test
def connection_rate_per_client():
    srv = metrics_server({"max_connection_rate": "5", "client_rate_time_unit": "60s"})
    for _ in range(5):
        c, _ = greet(srv, "127.0.0.66")
        c.cmd("QUIT", "221 ")
    c, text = greet(srv, "127.0.0.66", r"421 4\.7\.0 ")
    assert "try again in a minute" in text, text
    srv.wait_log(r"reject: client=\[127\.0\.0\.66\]: 5 connections from 127\.0\.0\.66 in 60s "
                 r"\(max_connection_rate\)")
    assert metric(srv, "sluice_sessions_rejected_total", 'reason="connection_rate"') == 1
    # Another client, and trusted clients, are not affected.
    greet(srv, "127.0.0.67")
    for _ in range(8):
        c, _ = greet(srv, "127.0.0.1")
        c.cmd("QUIT", "221 ")


def auth_session(srv, source):
    c = srv.connect(source=source, timeout=10)
    c.reply("220 ")
    c.cmd("EHLO client.test", "250 ")
    c.cmd("STARTTLS", "220 ")
    c.sock = tls_context().wrap_socket(c.sock, server_hostname="relay.test")
    c.cmd("EHLO client.test", "250 ")
    return c


@test
def auth_failure_rate_across_sessions():
    srv = tls_server({"max_auth_failure_rate": "3", "client_rate_time_unit": "60s"},
                     users={"alice": "s3cret"}, metrics=True)
    a = auth_session(srv, "127.0.0.66")
    a.cmd("AUTH PLAIN " + plain(b"alice", b"guess1"), "535 ")
    a.cmd("AUTH PLAIN " + plain(b"alice", b"guess2"), "535 ")
    a.close()
    b = auth_session(srv, "127.0.0.66")
    b.cmd("AUTH PLAIN " + plain(b"alice", b"guess3"), "535 ")
    # Three failures from this client in the window: no more tries, not
    # even the right password, in this session or a new one.
    b.cmd("AUTH PLAIN " + plain(b"alice", b"s3cret"), r"454 4\.7\.0 .*too many failed")
    b.close()
    c = auth_session(srv, "127.0.0.66")
    c.cmd("AUTH LOGIN", r"454 4\.7\.0 ")
    assert metric(srv, "sluice_auth_rate_limited_total") == 2
    # Another client may still log in.
    d = auth_session(srv, "127.0.0.67")
    d.cmd("AUTH PLAIN " + plain(b"alice", b"s3cret"), "235 ")


@test
def stress_mode_shortens_untrusted_timeouts():
    srv = metrics_server({"max_connections": "20", "stress_threshold": "50",
                          "stress_command_timeout": "1s", "command_timeout": "60s"})
    idle = [greet(srv, "127.0.0.%d" % (100 + i))[0] for i in range(9)]
    assert "stress:" not in srv.log()
    t, _ = greet(srv, "127.0.0.1")       # the tenth: half of 20
    srv.wait_log(r"warning smtpd: stress: 10 connections open \(threshold 10\)")
    # The untrusted idle clients are ended, the trusted one is not.
    for c in idle:
        c.reply(r"421 4\.4\.2 ")
        assert c.closed()
    time.sleep(1.5)
    t.cmd("NOOP", "250 ")
    srv.wait_log(r"info smtpd: stress over", timeout=10)
    assert metric(srv, "sluice_stress_episodes_total") == 1
    assert metric(srv, "sluice_stress_mode") == 0
    t.cmd("QUIT", "221 ")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ipv6-inner"]:
        ipv6_inside_a_namespace()
        sys.exit(0)
    main()
