"""
policyserver - an HTTPS server for MTA-STS policies in the test's own
process (http.server + ssl on loopback), answering by the Host header:

    ps = PolicyServer("127.0.0.60", port, chain, key)
    ps.policies["mta-sts.a.test"] = (200, "text/plain", "version: STSv1\\n...")
    ps.policies["mta-sts.b.test"] = (301, "text/plain", "", {"Location": "..."})
    ps.requests   # [(host, path), ...]
    ps.posts      # [(host, path, content type, body), ...], answered 201
    ps.stop()

A host without an entry gets 404.  The connection is closed after each
response (HTTP/1.0).
"""
import http.server
import ssl
import threading


class PolicyServer:
    def __init__(self, host, port, chain, key):
        self.policies = {}
        self.requests = []
        self.posts = []
        ps = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                name = (self.headers.get("Host") or "").split(":")[0].lower()
                ps.requests.append((name, self.path))
                entry = ps.policies.get(name)
                if entry is None or self.path != "/.well-known/mta-sts.txt":
                    entry = (404, "text/plain", "not here\n")
                status, ctype, body = entry[:3]
                extra = entry[3] if len(entry) > 3 else {}
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                name = (self.headers.get("Host") or "").split(":")[0].lower()
                n = int(self.headers.get("Content-Length") or 0)
                ps.posts.append((name, self.path, self.headers.get("Content-Type"),
                                 self.rfile.read(n)))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
