"""The metrics endpoint (metrics_listen, docs/metrics.md): the real server
serves /metrics in the Prometheus text format, parsed here line by line;
the counters follow real SMTP sessions and real deliveries to a sink, the
queue gauges follow the queue database, and a metrics port already in use
stops the server from starting with a clear message.

Address plan: sluice and its metrics endpoint on 127.0.0.1, an untrusted
client on 127.0.0.66, the delivery sink on 127.0.0.2."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sink import Sink  # noqa: E402
from fixtures import metrics_server  # noqa: E402
from sluicetest import BIN, Server, free_port, main, poll_until, test  # noqa: E402

UNTRUSTED = "127.0.0.66"
SINK_HOST = "127.0.0.2"

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
META_RE = re.compile(r'^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

FAMILIES = {
    "sluice_connections_total": "counter",
    "sluice_sessions_rejected_total": "counter",
    "sluice_recipients_rejected_total": "counter",
    "sluice_auth_failures_total": "counter",
    "sluice_auth_rate_limited_total": "counter",
    "sluice_stress_episodes_total": "counter",
    "sluice_messages_accepted_total": "counter",
    "sluice_accepted_bytes_total": "counter",
    "sluice_deliveries_total": "counter",
    "sluice_notices_total": "counter",
    "sluice_delivery_latency_seconds": "histogram",
    "sluice_commit_batch_size": "histogram",
    "sluice_sessions_active": "gauge",
    "sluice_sessions_parked": "gauge",
    "sluice_stress_mode": "gauge",
    "sluice_queue_up": "gauge",
    "sluice_queue_recipients": "gauge",
    "sluice_queue_oldest_message_age_seconds": "gauge",
    "sluice_start_time_seconds": "gauge",
    "sluice_build_info": "gauge",
}


class Metrics:
    """A parsed exposition: samples[(name, ((label, value), ...))] = float,
    and the TYPE of each family."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        helps = set()
        assert text.endswith("\n"), "no final newline"
        for n, line in enumerate(text.split("\n")[:-1], 1):
            if line.startswith("#"):
                m = META_RE.match(line)
                assert m, "line %d: bad comment %r" % (n, line)
                kind, fam, rest = m.groups()
                if kind == "TYPE":
                    assert fam not in self.types, "line %d: second TYPE for %s" % (n, fam)
                    assert rest in TYPES, "line %d: bad type %r" % (n, line)
                    self.types[fam] = rest
                else:
                    assert fam not in helps, "line %d: second HELP for %s" % (n, fam)
                    assert rest, "line %d: empty HELP" % n
                    helps.add(fam)
                continue
            m = SAMPLE_RE.match(line)
            assert m, "line %d: bad sample %r" % (n, line)
            name, labels, value = m.groups()
            pairs = ()
            if labels is not None:
                found = LABEL_RE.findall(labels)
                assert found and "".join('%s="%s"%s' % f for f in found) == labels, \
                    "line %d: bad labels %r" % (n, line)
                pairs = tuple((k, v) for k, v, _ in found)
            key = (name, pairs)
            assert key not in self.samples, "line %d: duplicate sample %r" % (n, line)
            self.samples[key] = float(value)  # raises on a bad value
            fam = self.family(name)
            assert fam is not None, "line %d: no TYPE before %r" % (n, line)
        assert self.samples, "no samples"

    def family(self, name):
        if name in self.types:
            return name
        for sfx in ("_bucket", "_sum", "_count"):
            base = name[:-len(sfx)]
            if name.endswith(sfx) and self.types.get(base) == "histogram":
                return base
        return None

    def get(self, name, **labels):
        """The value of one sample, None when absent."""
        want = tuple(sorted(labels.items()))
        for (n, pairs), v in self.samples.items():
            if n == name and tuple(sorted(pairs)) == want:
                return v
        return None


def http(port, path, method="GET", data=None):
    """(status, headers, body text) of one request to the endpoint."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def scrape(srv):
    status, headers, body = http(srv.metrics_port, "/metrics")
    assert status == 200, (status, body)
    return Metrics(body)


def scrape_until(srv, pred, what, timeout=15):
    """Scrape until pred(metrics) holds; returns those metrics."""
    return poll_until(lambda: (lambda m: m if pred(m) else None)(scrape(srv)),
                      timeout, what)


def send_one(srv, rcpt="rcpt@example.net"):
    """One message on its own connection; returns the queue ID."""
    c = srv.connect()
    c.ehlo()
    qid = c.mail(rcpts=("<%s>" % rcpt,))
    c.cmd("QUIT", "221 ")
    c.close()
    return qid


@test
def endpoint_pages_and_format():
    srv = metrics_server()
    status, headers, body = http(srv.metrics_port, "/metrics")
    assert status == 200, status
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", \
        headers["Content-Type"]
    m = Metrics(body)
    for fam, kind in FAMILIES.items():
        assert m.types.get(fam) == kind, (fam, m.types.get(fam))
    assert m.get("sluice_queue_up") == 1, m.get("sluice_queue_up")
    for state in ("queued", "deferred", "held", "delivered", "bounced"):
        assert m.get("sluice_queue_recipients", state=state) == 0, state
    assert m.get("sluice_queue_oldest_message_age_seconds") == 0
    start = m.get("sluice_start_time_seconds")
    assert time.time() - 120 < start <= time.time(), start
    version = subprocess.run([BIN, "version"], capture_output=True, text=True).stdout.split()[-1]
    assert m.get("sluice_build_info", version=version) == 1, (version, body[-200:])
    for reason in ("per_ip_limit", "overload", "shutdown", "too_many_errors",
                   "timeout", "tls_failed", "max_connections", "connection_rate"):
        assert m.get("sluice_sessions_rejected_total", reason=reason) is not None, reason
    for result in ("sent", "deferred", "bounced"):
        assert m.get("sluice_deliveries_total", result=result) is not None, result
    buckets = [v for (n, _), v in m.samples.items()
               if n == "sluice_delivery_latency_seconds_bucket"]
    assert len(buckets) == 13, buckets
    assert m.get("sluice_delivery_latency_seconds_bucket", le="+Inf") == \
        m.get("sluice_delivery_latency_seconds_count")

    status, headers, body = http(srv.metrics_port, "/")
    assert status == 200 and "/metrics" in body, (status, body)
    status, _, _ = http(srv.metrics_port, "/nope")
    assert status == 404, status
    status, headers, _ = http(srv.metrics_port, "/metrics", method="POST", data=b"x=1")
    assert status == 405, status
    assert "GET" in (headers.get("Allow") or ""), dict(headers)
    # Still serving after all that.
    assert scrape(srv).get("sluice_queue_up") == 1


@test
def intake_counters_and_queue_gauges():
    srv = metrics_server()
    before = scrape(srv)
    assert before.get("sluice_messages_accepted_total") == 0
    ids = [send_one(srv) for _ in range(3)]
    assert len(set(ids)) == 3, ids
    m = scrape(srv)
    queued = srv.query("select count(*) from recipients where state='queued'")[0][0]
    assert queued == 3, queued
    assert m.get("sluice_queue_recipients", state="queued") == queued, \
        m.get("sluice_queue_recipients", state="queued")
    assert m.get("sluice_queue_recipients", state="delivered") == 0
    assert m.get("sluice_messages_accepted_total") == 3, m.get("sluice_messages_accepted_total")
    assert m.get("sluice_connections_total") >= 3, m.get("sluice_connections_total")
    assert m.get("sluice_commit_batch_size_count") >= 1, m.get("sluice_commit_batch_size_count")
    assert m.get("sluice_accepted_bytes_total") > 0, m.get("sluice_accepted_bytes_total")
    age = m.get("sluice_queue_oldest_message_age_seconds")
    assert 0 <= age < 120, age
    # sessions_active follows a session in progress (the three above end
    # just after their 221).
    scrape_until(srv, lambda x: x.get("sluice_sessions_active") == 0,
                 "the finished sessions to be gone")
    c = srv.connect()
    c.ehlo()
    assert scrape(srv).get("sluice_sessions_active") == 1
    # An idle session is parked (after the workers' short linger).
    scrape_until(srv, lambda x: x.get("sluice_sessions_parked") == 1,
                 "the idle session to be parked")
    assert scrape(srv).get("sluice_stress_mode") == 0
    c.cmd("QUIT", "221 ")
    c.close()
    scrape_until(srv, lambda x: x.get("sluice_sessions_active") == 0,
                 "sessions_active back to 0")


@test
def queue_gauges_by_state_and_oldest_pending():
    srv = metrics_server()
    ids = [send_one(srv) for _ in range(5)]
    now = int(time.time())
    # Finished mail, however old, is not pending; held mail is.
    rows = [("delivered", now - 86400), ("bounced", now - 7200), ("held", now - 3600),
            ("deferred", now - 60), ("queued", now - 30)]
    statements = []
    for qid, (state, received) in zip(ids, rows):
        statements += [("update recipients set state=? where msg_id=?", (state, qid)),
                       ("update messages set received_at=? where id=?", (received, qid))]
    srv.execute_many(statements)
    m = scrape(srv)
    for state in ("queued", "deferred", "held", "delivered", "bounced"):
        assert m.get("sluice_queue_recipients", state=state) == 1, (state, m.text)
    age = m.get("sluice_queue_oldest_message_age_seconds")
    assert 3600 <= age < 3660, age
    # Nothing pending any more: the age is 0, the counts follow.
    srv.execute("update recipients set state='delivered' "
                "where state in ('queued', 'deferred', 'held')")
    m = scrape(srv)
    assert m.get("sluice_queue_oldest_message_age_seconds") == 0, m.text
    assert m.get("sluice_queue_recipients", state="delivered") == 4, m.text
    assert m.get("sluice_queue_recipients", state="held") == 0, m.text


@test
def per_ip_limit_rejections_counted():
    srv = metrics_server({"max_connections_per_ip": "2", "workers": "8"})
    base = scrape(srv).get("sluice_sessions_rejected_total", reason="per_ip_limit")
    assert base == 0, base
    held = []
    for _ in range(2):
        c = srv.connect(source=UNTRUSTED)
        c.reply("220 ")
        held.append(c)
    third = srv.connect(source=UNTRUSTED)
    third.reply(r"421 4\.7\.0 ")
    third.close()
    m = scrape_until(srv, lambda x: x.get("sluice_sessions_rejected_total",
                                          reason="per_ip_limit") >= 1,
                     "the per-IP rejection in the metrics")
    assert m.get("sluice_sessions_rejected_total", reason="per_ip_limit") == 1
    assert m.get("sluice_sessions_rejected_total", reason="overload") == 0
    for c in held:
        c.cmd("QUIT", "221 ")
        c.close()


@test
def deliveries_counted():
    # The first attempts find nobody listening (deferred); the sink starts
    # two seconds after the message was accepted, so the latency of the
    # delivery is at least 2 s and lands above the le="1" bucket.
    port = free_port(SINK_HOST)
    srv = metrics_server({
        "delivery_threads": "1",
        "routes": "dest.test:%s:%d" % (SINK_HOST, port),
        "retry_schedule": "1s",
        "connect_timeout": "2s",
        "delivery_command_timeout": "3s",
    })
    base = scrape(srv)
    assert base.get("sluice_deliveries_total", result="sent") == 0
    assert base.get("sluice_delivery_latency_seconds_count") == 0
    qid = send_one(srv, "ok@dest.test")
    received = srv.query("select received_at from messages where id=?", (qid,))[0][0]
    poll_until(lambda: srv.query("select count(*) from attempts where msg_id=? and "
                                 "status='deferred'", (qid,))[0][0] >= 1, 15,
               "a deferred attempt")
    m = scrape_until(srv, lambda x: x.get("sluice_deliveries_total", result="deferred") >= 1,
                     "the deferred attempt in the metrics")
    assert m.get("sluice_deliveries_total", result="sent") == 0
    while time.time() < received + 2.2:
        time.sleep(0.1)
    tmp = tempfile.mkdtemp(prefix="sluice-metrics-sink-")
    sink = Sink(SINK_HOST, port, os.path.join(tmp, "mail"))
    try:
        poll_until(lambda: len(sink.messages()) == 1, 15, "delivery to the sink")
        poll_until(lambda: srv.query("select state from recipients where msg_id=?",
                                     (qid,)) == [("delivered",)], 15, "state delivered")
        m = scrape_until(srv, lambda x: (
            x.get("sluice_deliveries_total", result="sent") >= 1 and
            x.get("sluice_delivery_latency_seconds_count") >= 1),
            "the delivery in the metrics")
    finally:
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert m.get("sluice_deliveries_total", result="sent") == 1, m.text
    assert m.get("sluice_deliveries_total", result="bounced") == 0
    assert m.get("sluice_delivery_latency_seconds_count") == 1
    assert m.get("sluice_delivery_latency_seconds_bucket", le="+Inf") == 1
    assert m.get("sluice_delivery_latency_seconds_bucket", le="1") == 0, \
        "latency under 1 s for a delivery made %.1f s after acceptance: %r" % (
            time.time() - received, m.get("sluice_delivery_latency_seconds_sum"))
    sent_at = srv.query("select at from attempts where msg_id=? and status='sent'", (qid,))[0][0]
    latency = m.get("sluice_delivery_latency_seconds_sum")
    assert abs(latency - (sent_at - received)) <= 1, (latency, sent_at, received)
    states = dict(srv.query("select state, count(*) from recipients group by state"))
    assert m.get("sluice_queue_recipients", state="delivered") == states.get("delivered") == 1, \
        states
    assert m.get("sluice_queue_recipients", state="queued") == 0


@test
def endpoint_follows_reload():
    # SIGHUP frees the old configuration: the endpoint must not depend on
    # it; a new metrics_listen moves the endpoint.
    srv = metrics_server()
    send_one(srv)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"SIGHUP: configuration reloaded", start=srv._logstart)
    m = scrape(srv)
    assert m.get("sluice_queue_recipients", state="queued") == 1, m.text
    old, srv.metrics_port = srv.metrics_port, free_port()
    srv.config["metrics_listen"] = "127.0.0.1:%d" % srv.metrics_port
    srv.write_config()
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"SIGHUP: configuration reloaded", start=mark)
    m = scrape(srv)
    assert m.get("sluice_messages_accepted_total") == 1, m.text
    try:
        http(old, "/metrics")
        raise AssertionError("the old metrics port still answers")
    except urllib.error.URLError:
        pass


@test
def metrics_port_in_use_refuses_to_start():
    first = metrics_server()
    assert scrape(first).get("sluice_queue_up") == 1
    second = Server(config={"metrics_listen": "127.0.0.1:%d" % first.metrics_port}, start=False)
    second.start(wait=False)
    rc = second.proc.wait(20)
    assert rc != 0, rc
    log = second.log()
    want = "metrics_listen 127.0.0.1:%d: Address already in use" % first.metrics_port
    assert want in log, log[-2000:]
    assert "info main: ready" not in log, log[-2000:]
    # The first one still serves.
    assert scrape(first).get("sluice_queue_up") == 1


@test
def metrics_listen_takes_an_address_not_a_name():
    srv = Server(config={"metrics_listen": "localhost:%d" % free_port()}, start=False)
    srv.start(wait=False)
    rc = srv.proc.wait(20)
    assert rc != 0, rc
    lines = [l for l in srv.log().splitlines() if "metrics_listen" in l]
    assert lines and "localhost" in lines[0], srv.log()[-2000:]


if __name__ == "__main__":
    main()
