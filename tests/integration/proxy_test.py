"""The capture proxy of 0xgend as a running process, driven by real clients (curl, Python's
http.client and raw sockets) against the test origins of proxy_upstreams.py.

Every test starts its own daemon and origins on ports the OS picks. Nothing sleeps and hopes:
files written by the capture thread and metrics are polled with a deadline, and where a test
asserts that something was NOT captured it stops the daemon first (shutdown writes everything
queued), so the files are final when they are read.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import oxg_integration as it
import proxy_upstreams as pu

WAIT = 15.0            # bound for files and metrics to catch up
SHUTDOWN_TIMEOUT = 10.0
GIB = 1 << 30
HISTORY_KEYS = ["timestamp", "flow_id", "client_address", "scheme", "method", "url", "status",
                "duration_ms", "request_bytes", "response_bytes", "request_headers",
                "response_headers", "trace_id"]
FLOW_KEYS = ["id", "sequence", "type", "timestamp_unix_nano", "sanitized_base64",
             "raw_body_bytes", "raw_body_truncated", "trace_id"]


# ---- small parsers ---------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Text exposition -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def parse_http_message(data):
    """HTTP/1.1 wire text -> (start line, [(name, value)], body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no end of head in %r" % data[:200]
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon, "bad header line %r" % line
        headers.append((name, value.strip()))
    return lines[0], headers, body


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[0] if values else None


def read_http_response(sock, timeout=10.0):
    """Reads from a raw socket until the peer closes (bounded). Returns (status or None, bytes,
    closed): closed is False when the deadline passed with the connection still open."""
    sock.settimeout(0.5)
    data = b""
    deadline = time.monotonic() + timeout
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else None), data, closed


def read_head(sock, timeout=10.0):
    """Reads one response head byte by byte (nothing after it is consumed)."""
    sock.settimeout(timeout)
    head = b""
    while b"\r\n\r\n" not in head:
        c = sock.recv(1)
        if not c:
            raise ConnectionError("closed after %r" % head)
        head += c
    return head


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- the fixture -----------------------------------------------------------------------------

class Daemon:
    def __init__(self, case, proc, metrics_port, proxy_port, data_dir):
        self.case = case
        self.proc = proc
        self.metrics_port = metrics_port
        self.port = proxy_port
        self.data = data_dir
        self.proxy_url = "http://127.0.0.1:%d" % proxy_port
        self.ca = os.path.join(data_dir, "ca.pem")
        self.history_path = os.path.join(data_dir, "proxy_history.jsonl")
        self.flows_path = os.path.join(data_dir, "proxy_flows.jsonl")
        self.audit_path = os.path.join(data_dir, "audit.jsonl")

    # -- metrics --

    def metrics_text(self):
        status, body, _ = it.http_get("http://127.0.0.1:%d/metrics" % self.metrics_port)
        assert status == 200, status
        return body

    def metric(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for n, lab, v in parse_metrics(self.metrics_text()):
            if n == name and all(lab.get(k) == val for k, val in labels.items()):
                total += v
        return total

    def wait_metric(self, name, expected, timeout=WAIT, **labels):
        return it.wait_metric(self.metric, name, expected, timeout, **labels)

    # -- capture files --

    @staticmethod
    def _lines(path):
        """The complete lines of a JSONL file, parsed (dicts keep the file's key order)."""
        if not os.path.exists(path):
            return []
        with open(path, "rb") as f:
            data = f.read()
        # Only complete lines: the writer may be in the middle of one.
        return [json.loads(l) for l in data.split(b"\n")[:-1] if l]

    def history(self):
        return self._lines(self.history_path)

    def flows(self):
        return self._lines(self.flows_path)

    def wait_history(self, n, timeout=WAIT):
        pu.wait_until(lambda: len(self.history()) >= n, timeout,
                      what="%d history lines in %s" % (n, self.history_path))
        return self.history()

    def wait_flows(self, n, timeout=WAIT):
        pu.wait_until(lambda: len(self.flows()) >= n, timeout,
                      what="%d flow lines in %s" % (n, self.flows_path))
        return self.flows()

    # -- clients --

    def conn(self, timeout=20.0):
        """A plain connection to the proxy: requests use absolute-form URLs."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self.case.addCleanup(c.close)
        return c

    def tunnel(self, host, port, timeout=20.0):
        """An HTTPS connection through CONNECT, trusting the daemon's CA only."""
        ctx = ssl.create_default_context(cafile=self.ca)
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        c.set_tunnel(host, port)
        self.case.addCleanup(c.close)
        return c

    def raw(self, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.case.addCleanup(s.close)
        return s

    def curl(self, url, *args, timeout=30.0, data=None):
        """Runs curl through the proxy; returns (http code, body bytes, stderr text)."""
        out = os.path.join(self.case.tmp, "curl.out")
        argv = ["curl", "-sS", "--proxy", self.proxy_url, "--max-time", str(int(timeout)),
                "-o", out, "-w", "%{http_code}"] + list(args) + [url]
        res = subprocess.run(argv, input=data, capture_output=True, timeout=timeout + 10,
                             env=curl_env(), cwd=self.case.tmp)
        body = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                body = f.read()
            os.unlink(out)
        code = res.stdout.decode().strip()
        return (int(code) if code.isdigit() else 0), body, res.stderr.decode("utf-8", "replace")

    # -- lifecycle --

    def stop(self, timeout=SHUTDOWN_TIMEOUT):
        it.send_signal(self.proc, it.SIGTERM)
        return self.proc.wait(timeout)


def curl_env():
    # Proxy variables of the runner's environment would change curl's routing.
    return {k: v for k, v in it.clean_env().items() if "proxy" not in k.lower()}


class ProxyCase(it.IntegrationCase):
    def start_proxy(self, extra=(), data_dir=None, workers=2):
        args = ["--proxy-addr", "127.0.0.1:0", "--addr", "127.0.0.1:0",
                "--workers", str(workers)] + list(extra)
        data_dir = data_dir or os.path.join(self.tmp, "data")
        proc, metrics_port = self.start_daemon(args, data_dir=data_dir)
        m = proc.wait_for_stderr(r"proxy listening on 127\.0\.0\.1:(\d+)")
        return Daemon(self, proc, metrics_port, int(m.group(1)), data_dir)

    def upstream(self, tls=False):
        if tls:
            u = pu.Upstream(tls=self.pki())
        else:
            u = pu.Upstream()
        self.addCleanup(u.stop)
        return u

    def pki(self):
        if not hasattr(self, "_pki"):
            self._pki = it.make_test_pki(os.path.join(self.tmp, "upstream-pki"))
        return self._pki

    def upstream_ca_flag(self):
        return ["--proxy-upstream-ca", self.pki()["ca_cert"]]

    def get(self, conn, url, headers=None):
        conn.request("GET", url, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), r

    def assert_active_connections_drop_to_zero(self, d):
        d.wait_metric("oxg_proxy_active_connections", 0)


# ---- forwarding ------------------------------------------------------------------------------

class ForwardingTest(ProxyCase):
    def test_plain_get_through_curl(self):
        up = self.upstream()
        d = self.start_proxy()
        code, body, err = d.curl(up.url("/hello"))
        self.assertEqual(code, 200, err)
        self.assertEqual(body, b"hello from upstream\n")
        self.assertEqual([r["path"] for r in up.recorded()], ["/hello"])
        h = d.wait_history(1)[0]
        self.assertEqual((h["method"], h["url"], h["status"], h["scheme"]),
                         ("GET", up.url("/hello"), 200, "http"))
        d.wait_metric("oxg_proxy_requests_total", 1, method="GET", code="200")

    def test_intercepted_https_get_through_curl(self):
        up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        url = up.url("/hello", host="localhost")
        code, body, err = d.curl(url, "--cacert", d.ca)
        self.assertEqual(code, 200, err)
        self.assertEqual(body, b"hello from upstream\n")
        # Without the daemon's CA, curl refuses the minted certificate.
        code, _, err = d.curl(url)
        self.assertEqual(code, 0)
        self.assertIn("certificate", err)

        # The leaf is for the host asked for and signed by the daemon's CA.
        c = d.tunnel("localhost", up.port)
        status, _, _ = self.get(c, "/hello")
        self.assertEqual(status, 200)
        cert = c.sock.getpeercert()
        self.assertIn(("DNS", "localhost"), cert["subjectAltName"])
        issuer = dict(x[0] for x in cert["issuer"])
        ca_subject = it.run_openssl(["x509", "-in", d.ca, "-noout", "-subject",
                                     "-nameopt", "multiline"]).decode()
        self.assertIn(issuer["commonName"], ca_subject)
        self.assertTrue(issuer["commonName"].startswith("0xgen interception CA"), issuer)
        subject = dict(x[0] for x in cert["subject"])
        self.assertEqual(subject.get("commonName"), "localhost")
        self.assertGreaterEqual(d.metric("oxg_proxy_certs_minted_total"), 1)

        hist = d.wait_history(2)
        self.assertEqual([(h["scheme"], h["url"], h["status"]) for h in hist],
                         [("https", url, 200)] * 2)

    def test_keep_alive_reuse_on_both_sides(self):
        up = self.upstream()
        d = self.start_proxy()
        c = d.conn()
        ports = set()
        for i in range(5):
            status, body, r = self.get(c, up.url("/hello?i=%d" % i))
            self.assertEqual((status, body), (200, b"hello from upstream\n"))
            ports.add(c.sock.getsockname()[1])
        self.assertEqual(len(ports), 1, "the client connection was not kept")
        self.assertEqual(up.accepted, 1, "the upstream connection was not reused")
        self.assertEqual(len({r["connection"] for r in up.recorded()}), 1)
        hist = d.wait_history(5)
        self.assertEqual({h["client_address"] for h in hist}, {"127.0.0.1:%d" % ports.pop()})

    def test_keep_alive_reuse_inside_tls_tunnel(self):
        up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        c = d.tunnel("localhost", up.port)
        for i in range(4):
            status, body, _ = self.get(c, "/hello?i=%d" % i)
            self.assertEqual((status, body), (200, b"hello from upstream\n"))
        self.assertEqual(up.accepted, 1)
        self.assertEqual(d.metric("oxg_proxy_certs_minted_total"), 1)

    def test_chunked_upload_and_download(self):
        up = self.upstream()
        d = self.start_proxy()
        c = d.conn()
        pieces = [os.urandom(n) for n in (1, 100, 70000, 3, 1 << 20, 12345)]
        expected = hashlib.sha256(b"".join(pieces)).hexdigest()
        c.request("POST", up.url("/upload"), body=iter(pieces), encode_chunked=True,
                  headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        info = json.loads(r.read())
        self.assertEqual(r.status, 200)
        self.assertEqual((info["length"], info["sha256"]),
                         (sum(map(len, pieces)), expected))
        self.assertTrue(info["chunked"], "the chunked framing was not passed through")

        total = 5 * 1000 * 1000 + 17
        status, body, r = self.get(c, up.url("/chunked?bytes=%d&seed=dl" % total))
        self.assertEqual(status, 200)
        self.assertEqual(r.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(len(body), total)
        self.assertEqual(hashlib.sha256(body).hexdigest(), pu.generated_sha256(total, "dl"))
        # The same connection still works after both.
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        self.assertEqual(up.accepted, 1)

        hist = d.wait_history(3)
        flows = d.wait_flows(6)
        self.assertGreater(hist[0]["request_bytes"], sum(map(len, pieces)))
        self.assertGreater(hist[1]["response_bytes"], total)
        # The captured request body is de-chunked and cut at the default 128 KiB.
        _, headers, body = parse_http_message(base64.b64decode(flows[0]["sanitized_base64"]))
        self.assertEqual(int(header(headers, "Content-Length")), len(body))
        self.assertEqual(len(body), 128 * 1024)
        self.assertIsNone(header(headers, "Transfer-Encoding"))
        self.assertEqual(flows[0]["raw_body_bytes"], sum(map(len, pieces)))
        self.assertTrue(flows[0]["raw_body_truncated"])

    def test_one_gib_download_streams_in_bounded_memory(self):
        up = self.upstream()
        d = self.start_proxy()  # default --max-body-kb: capture keeps 128 KiB
        pid = d.proc.popen.pid
        c = d.conn(timeout=60)
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)  # warm the worker up
        baseline = vm_rss_kib(pid)

        expected = {}
        hasher = threading.Thread(
            target=lambda: expected.setdefault("sha", pu.generated_sha256(GIB, "big")))
        hasher.start()
        peak = [baseline]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], vm_rss_kib(pid))
                except OSError:
                    return
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            c.request("GET", up.url("/stream?bytes=%d&seed=big" % GIB))
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(int(r.getheader("Content-Length")), GIB)
            h = hashlib.sha256()
            got = 0
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                h.update(chunk)
        finally:
            done.set()
            sampler.join(5)
            hasher.join(120)
        self.assertEqual(got, GIB)
        self.assertEqual(h.hexdigest(), expected["sha"])
        growth_mib = (peak[0] - baseline) / 1024.0
        self.assertLess(growth_mib, 64, "RSS grew from %d KiB to %d KiB" % (baseline, peak[0]))

        hist = d.wait_history(2)
        self.assertGreaterEqual(hist[1]["response_bytes"], GIB)
        flows = d.wait_flows(4)
        resp = flows[3]
        self.assertEqual(resp["type"], "FLOW_RESPONSE")
        self.assertEqual(resp["raw_body_bytes"], GIB)
        self.assertTrue(resp["raw_body_truncated"])
        _, headers, body = parse_http_message(base64.b64decode(resp["sanitized_base64"]))
        self.assertEqual(len(body), 128 * 1024)
        self.assertEqual(int(header(headers, "Content-Length")), len(body))
        self.assertEqual(header(headers, "X-0xgen-Raw-Body-Truncated"), str(GIB))

    def test_head_304_204_have_no_body_and_keep_alive_survives(self):
        up = self.upstream()
        d = self.start_proxy()
        c = d.conn()
        c.request("HEAD", up.url("/stream?bytes=1000"))
        r = c.getresponse()
        self.assertEqual((r.status, r.getheader("Content-Length"), r.read()), (200, "1000", b""))
        status, body, _ = self.get(c, up.url("/status/204"))
        self.assertEqual((status, body), (204, b""))
        status, body, _ = self.get(c, up.url("/etag"), headers={"If-None-Match": '"v1"'})
        self.assertEqual((status, body), (304, b""))
        c.request("HEAD", up.url("/chunked?bytes=5000"))
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b""))
        # Had the proxy sent a body after any of these, this answer would be garbled.
        status, body, _ = self.get(c, up.url("/hello"))
        self.assertEqual((status, body), (200, b"hello from upstream\n"))
        self.assertEqual(up.accepted, 1)
        hist = d.wait_history(5)
        self.assertEqual([h["status"] for h in hist], [200, 204, 304, 200, 200])
        self.assertEqual([h["method"] for h in hist], ["HEAD", "GET", "GET", "HEAD", "GET"])

    def test_expect_100_continue_upload_through_curl(self):
        up = self.upstream()
        d = self.start_proxy()
        data = os.urandom(3 << 20)
        code, body, err = d.curl(up.url("/upload"), "-v", "-H", "Expect: 100-continue",
                                 "--expect100-timeout", "8", "--data-binary", "@-", data=data)
        self.assertEqual(code, 200, err)
        info = json.loads(body)
        self.assertEqual((info["length"], info["sha256"]),
                         (len(data), hashlib.sha256(data).hexdigest()))
        self.assertRegex(err, r"< HTTP/1\.1 100 Continue")

    def test_1xx_informational_response_is_relayed(self):
        up = self.upstream()
        d = self.start_proxy()
        code, body, err = d.curl(up.url("/early-hints"), "-v")
        self.assertEqual(code, 200, err)
        self.assertEqual(body, b"after hints\n")
        self.assertRegex(err, r"< HTTP/1\.1 103")
        h = d.wait_history(1)[0]
        self.assertEqual(h["status"], 200)

    def test_connect_without_tls_is_relayed_blindly(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                  % (up.port, up.port))
        self.assertRegex(read_head(s), rb"^HTTP/1\.[01] 200")
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertEqual(status, 200, data)
        self.assertTrue(data.endswith(b"hello from upstream\n"), data)
        self.assertTrue(closed)


class ConnectionHandlingTest(ProxyCase):
    def test_stale_pooled_upstream_connection_is_not_a_502(self):
        up = self.upstream()
        d = self.start_proxy(workers=1)
        c = d.conn()
        status, body, _ = self.get(c, up.url("/close-after"))
        self.assertEqual((status, body), (200, b"closing now\n"))
        # The origin has closed the connection the proxy may have pooled.
        pu.wait_until(lambda: up.closed >= 1, 10, what="the origin closing its connection")
        for i in range(3):
            status, body, _ = self.get(c, up.url("/hello?after-close=%d" % i))
            self.assertEqual((status, body), (200, b"hello from upstream\n"))
        self.assertEqual(up.accepted, 2)

    def test_early_answer_to_expect_never_lends_the_connection_out(self):
        # An origin answers a POST with Expect: 100-continue at once, without reading the body.
        # That connection still owes the origin a body, so it must not carry the next request.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        seen = []  # (connection number, first bytes received)
        first_closed = threading.Event()

        def origin():
            for n in range(2):
                conn, _ = listener.accept()
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                seen.append((n, data))
                if n == 0:
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                    try:
                        while conn.recv(4096):
                            pass  # the proxy must close this one
                        first_closed.set()
                    except OSError:
                        first_closed.set()
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                conn.close()

        t = threading.Thread(target=origin, daemon=True)
        t.start()
        try:
            d = self.start_proxy(workers=1)
            s = d.raw()
            s.sendall(b"POST http://127.0.0.1:%d/upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 40\r\nExpect: 100-continue\r\n\r\n" % port)
            status, _, _ = read_http_response(s)
            self.assertEqual(status, 401)
            s.close()
            self.assertTrue(first_closed.wait(10), "the proxy kept the owing connection open")
            c = d.conn()
            status, body, _ = self.get(c, "http://127.0.0.1:%d/next" % port)
            self.assertEqual((status, body), (200, b"ok"))
            self.assertEqual([n for n, _ in seen], [0, 1])
            self.assertTrue(seen[1][1].startswith(b"GET /next HTTP/1.1\r\n"), seen[1][1][:80])
        finally:
            listener.close()
            t.join(timeout=10)

    def test_upstream_closing_mid_body_ends_the_client_connection(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/truncated").encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertEqual(status, 200)
        self.assertTrue(closed, "the client was left waiting for the rest of the body")
        self.assertTrue(data.endswith(b"only the start"), data[-40:])
        self.assert_active_connections_drop_to_zero(d)
        errors = d.metric("oxg_proxy_upstream_errors_total", reason="reset") + \
            d.metric("oxg_proxy_upstream_errors_total", reason="protocol")
        self.assertGreaterEqual(errors, 1)
        h = d.wait_history(1)[0]
        self.assertEqual(h["status"], 200)

    def test_pipelined_requests_are_answered_in_order(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        reqs = b"".join(b"GET " + up.url(p).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                        for p in ("/hello", "/missing", "/status/204"))
        s.sendall(reqs + b"GET " + up.url("/hello").encode() +
                  b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, data, closed = read_http_response(s)
        self.assertTrue(closed)
        statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
        self.assertEqual(statuses, [200, 404, 204, 200])
        self.assertEqual(data.count(b"hello from upstream\n"), 2)

    def test_http10_client(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/hello").encode() + b" HTTP/1.0\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertEqual(status, 200, data)
        self.assertTrue(closed, "an HTTP/1.0 request without keep-alive must end the connection")
        self.assertTrue(data.endswith(b"\r\n\r\nhello from upstream\n"), data)

    def test_http10_client_gets_chunked_bodies_dechunked(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/chunked?bytes=50000").encode() +
                  b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertEqual(status, 200, data[:200])
        self.assertTrue(closed, "a de-chunked body is delimited by the end of the connection")
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertNotIn(b"transfer-encoding", head.lower())
        self.assertIn(b"connection: close", head.lower())
        expected = b"".join(pu.generated_blocks(50000, "x"))
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(expected).hexdigest())

    def test_absolute_url_without_path_asks_the_origin_for_slash(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET http://127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Connection: close\r\n\r\n" % (up.port, up.port))
        status, data, _ = read_http_response(s)
        self.assertEqual(status, 404, data)  # the origin's answer for "/"
        self.assertEqual([r["path"] for r in up.recorded()], ["/"])

    def test_many_concurrent_clients(self):
        up = self.upstream()
        d = self.start_proxy()
        clients, per_client = 16, 10
        errors = []

        def run(n):
            try:
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=20)
                for i in range(per_client):
                    c.request("GET", up.url("/hello?c=%d&i=%d" % (n, i)))
                    r = c.getresponse()
                    if (r.status, r.read()) != (200, b"hello from upstream\n"):
                        errors.append((n, i, r.status))
                c.close()
            except Exception as e:  # reported below, with the others
                errors.append((n, repr(e)))

        threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        hist = d.wait_history(clients * per_client)
        self.assertEqual(len({h["flow_id"] for h in hist}), clients * per_client)
        self.assertEqual(sorted(h["url"] for h in hist),
                         sorted(up.url("/hello?c=%d&i=%d" % (n, i))
                                for n in range(clients) for i in range(per_client)))
        d.wait_metric("oxg_proxy_requests_total", clients * per_client, method="GET", code="200")
        self.assert_active_connections_drop_to_zero(d)

    def test_idle_client_is_closed_after_the_idle_timeout(self):
        d = self.start_proxy(["--proxy-idle-timeout", "1"])
        c = d.conn()
        up = self.upstream()
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        fresh = d.raw()  # never sends anything
        start = time.monotonic()
        for s in (fresh, c.sock):  # a new connection, and one idle after a request
            _, data, closed = read_http_response(s, timeout=8)
            self.assertTrue(closed, "connection still open after %.1fs"
                            % (time.monotonic() - start))
            self.assertEqual(data, b"")
        self.assertLess(time.monotonic() - start, 5)
        self.assert_active_connections_drop_to_zero(d)

    def test_partial_head_is_closed_after_the_idle_timeout(self):
        # proxy_server.h: the idle timeout bounds reading a request head, so a client that
        # starts a head and stalls (or dribbles it, slowloris) does not hold the connection.
        d = self.start_proxy(["--proxy-idle-timeout", "1"])
        slow = d.raw()
        slow.sendall(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHo")
        start = time.monotonic()
        _, _, closed = read_http_response(slow, timeout=8)
        self.assertTrue(closed, "a stalled head held the connection for %.1fs"
                        % (time.monotonic() - start))
        self.assertLess(time.monotonic() - start, 5)

    def test_dribbled_head_is_closed_after_the_idle_timeout(self):
        d = self.start_proxy(["--proxy-idle-timeout", "1"])
        s = d.raw()
        s.sendall(b"GET http://127.0.0.1:1/ HTTP/1.1\r\n")
        start = time.monotonic()
        closed = False
        try:
            while time.monotonic() - start < 6:  # a header line every 0.2 s, never the end
                s.sendall(b"X-Dribble: 1\r\n")
                time.sleep(0.2)
        except OSError:
            closed = True
        if not closed:
            _, _, closed = read_http_response(s, timeout=0.5)
        self.assertTrue(closed, "a head dribbled for %.1fs still held the connection"
                        % (time.monotonic() - start))

    def test_body_delimited_by_close_is_relayed_whole(self):
        up = self.upstream()
        d = self.start_proxy()
        total = 3 * 1000 * 1000 + 1
        c = d.conn()
        status, body, _ = self.get(c, up.url("/until-close?bytes=%d&seed=uc" % total))
        self.assertEqual(status, 200)
        self.assertEqual(len(body), total)
        self.assertEqual(hashlib.sha256(body).hexdigest(), pu.generated_sha256(total, "uc"))
        self.assertGreater(d.wait_history(1)[0]["response_bytes"], total)

    def test_connection_listed_and_hop_by_hop_headers_are_not_forwarded(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/hello").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close, X-Hop\r\nX-Hop: for the proxy only\r\n"
                  b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
                  b"X-End-To-End: kept\r\n\r\n")
        status, _, _ = read_http_response(s)
        self.assertEqual(status, 200)
        names = [k.lower() for k, _ in up.recorded()[0]["headers"]]
        self.assertIn("x-end-to-end", names)
        for hop in ("x-hop", "keep-alive", "proxy-connection"):
            self.assertNotIn(hop, names)

    def test_large_upload_streams_in_bounded_memory(self):
        up = self.upstream()
        d = self.start_proxy()
        pid = d.proc.popen.pid
        c = d.conn(timeout=60)
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        baseline = vm_rss_kib(pid)
        total = 512 << 20
        peak = [baseline]
        h = hashlib.sha256()

        def body():
            for block in pu.generated_blocks(total, "up"):
                h.update(block)
                peak[0] = max(peak[0], vm_rss_kib(pid))
                yield block

        c.request("POST", up.url("/upload"), body=body(),
                  headers={"Content-Length": str(total),
                           "Content-Type": "application/octet-stream"})
        r = c.getresponse()
        info = json.loads(r.read())
        self.assertEqual((info["length"], info["sha256"]), (total, h.hexdigest()))
        self.assertLess((peak[0] - baseline) / 1024.0, 64,
                        "RSS grew from %d KiB to %d KiB" % (baseline, peak[0]))

    def test_upstream_certificate_for_another_name_is_502(self):
        pki = it.make_test_pki(os.path.join(self.tmp, "wrong-name"), hosts=("wrong.example",))
        up = pu.Upstream(tls=pki)
        self.addCleanup(up.stop)
        d = self.start_proxy(["--proxy-upstream-ca", pki["ca_cert"]])
        code, _, err = d.curl(up.url("/hello", host="localhost"), "--cacert", d.ca)
        self.assertEqual(code, 502, err)
        d.wait_metric("oxg_proxy_upstream_errors_total", 1, reason="tls")
        self.assertEqual(up.recorded(), [])

    def test_non_ascii_header_bytes_keep_the_history_valid_utf8(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/hello").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"X-Latin1: caf\xe9\r\nX-Utf8: caf\xc3\xa9\r\nConnection: close\r\n\r\n")
        status, _, _ = read_http_response(s)
        self.assertEqual(status, 200)
        d.wait_history(1)
        with open(d.history_path, "rb") as f:
            line = f.read()
        line.decode("utf-8")  # strict: raises on invalid UTF-8
        h = json.loads(line)
        self.assertIn("caf", h["request_headers"]["X-Latin1"])
        self.assertEqual(h["request_headers"]["X-Utf8"], "caf\u00e9")

    def test_incoming_traceparent_sets_the_trace_id(self):
        up = self.upstream()
        trace_file = os.path.join(self.tmp, "spans.json")
        d = self.start_proxy(["--trace-file", trace_file])
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        c = d.conn()
        status, _, _ = self.get(c, up.url("/hello"), headers={
            "traceparent": "00-%s-00f067aa0ba902b7-01" % trace_id})
        self.assertEqual(status, 200)
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)  # no traceparent: a new trace
        hist = d.wait_history(2)
        flows = d.wait_flows(4)
        self.assertEqual(hist[0]["trace_id"], trace_id)
        self.assertEqual([f["trace_id"] for f in flows[:2]], [trace_id] * 2)
        self.assertRegex(hist[1]["trace_id"], r"^[0-9a-f]{32}$")
        self.assertNotEqual(hist[1]["trace_id"], trace_id)
        # The origin sees the trace continue (the proxy's span as parent, same trace id).
        sent = dict(up.recorded()[0]["headers"])
        self.assertIn(trace_id, sent.get("traceparent", ""))

    def test_broken_upstream_responses(self):
        up = self.upstream()
        d = self.start_proxy()
        for kind in ("bad-status", "huge-head", "not-http"):
            with self.subTest(kind=kind):
                code, _, err = d.curl(up.url("/raw?kind=" + kind))
                self.assertEqual(code, 502, err)
        # A bad status line and an oversized head are protocol errors; bytes that never form
        # a head before the origin closes may count as either.
        self.assertEqual(d.metric("oxg_proxy_upstream_errors_total", reason="protocol") +
                         d.metric("oxg_proxy_upstream_errors_total", reason="reset"), 3)
        self.assertGreaterEqual(d.metric("oxg_proxy_upstream_errors_total", reason="protocol"), 2)

    def test_upstream_response_with_both_framings_is_not_relayed_ambiguously(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/raw?kind=cl-te").encode() +
                  b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertTrue(closed)
        if status == 502:
            return  # refusing it is fine
        self.assertEqual(status, 200, data)
        _, headers, _ = parse_http_message(data)
        framings = [k.lower() for k, _ in headers
                    if k.lower() in ("content-length", "transfer-encoding")]
        self.assertEqual(len(framings), 1, data)

    def test_content_length_list_is_forwarded_as_one_value_or_refused(self):
        # RFC 9110 §8.6: "Content-Length: 5, 5" may be rejected, or replaced by one valid
        # field; forwarded verbatim, the next hop may frame the body differently.
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"POST " + up.url("/upload").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 5, 5\r\nConnection: close\r\n\r\nhello")
        status, data, closed = read_http_response(s)
        self.assertTrue(closed)
        if status == 400:
            return
        self.assertEqual(status, 200, "the origin could not frame the body it was sent (was the "
                         "list forwarded verbatim?): %r" % data)
        sent = [v for k, v in up.recorded()[0]["headers"] if k.lower() == "content-length"]
        self.assertEqual(sent, ["5"])

    def test_invalid_chunk_in_request_body(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"POST " + up.url("/upload").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertTrue(closed, data)
        self.assertIn(status, (400, None), data)
        self.assertEqual([r for r in up.recorded() if r["path"] == "/upload"], [])
        self.assert_active_connections_drop_to_zero(d)

    def test_https_to_an_ip_address(self):
        up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        code, body, err = d.curl(up.url("/hello"), "--cacert", d.ca)  # https://127.0.0.1:P
        self.assertEqual((code, body), (200, b"hello from upstream\n"), err)
        c = d.tunnel("127.0.0.1", up.port)
        self.assertEqual(self.get(c, "/hello")[0], 200)
        self.assertIn(("IP Address", "127.0.0.1"), c.sock.getpeercert()["subjectAltName"])


# ---- WebSocket -------------------------------------------------------------------------------

class WebSocketTest(ProxyCase):
    def exchange(self, ws):
        self.assertEqual(ws.status, 101, ws.status_line)
        self.assertTrue(ws.accept_ok, ws.headers)
        ws.send("hello websocket")
        self.assertEqual(ws.recv(), (0x1, b"hello websocket"))
        big = os.urandom(200000)
        ws.send(big)
        self.assertEqual(ws.recv(), (0x2, big))
        self.assertEqual(ws.close(), (0x8, b"\x03\xe8"))

    def test_websocket_echo_through_plain_proxy(self):
        up = self.upstream()
        d = self.start_proxy()
        ws = pu.WebSocketClient(d.raw(), up.url("/ws"), "127.0.0.1:%d" % up.port)
        self.exchange(ws)
        h = d.wait_history(1)[0]
        self.assertEqual((h["method"], h["url"], h["status"], h["scheme"]),
                         ("GET", up.url("/ws"), 101, "http"))
        self.assert_active_connections_drop_to_zero(d)

    def test_websocket_echo_through_intercepted_tls(self):
        up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        s = d.raw()
        s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n"
                  % (up.port, up.port))
        self.assertRegex(read_head(s), rb"^HTTP/1\.[01] 200")
        ctx = ssl.create_default_context(cafile=d.ca)
        tls = ctx.wrap_socket(s, server_hostname="localhost")
        ws = pu.WebSocketClient(tls, "/ws", "localhost:%d" % up.port)
        self.exchange(ws)
        h = d.wait_history(1)[0]
        self.assertEqual((h["url"], h["status"], h["scheme"]),
                         (up.url("/ws", host="localhost"), 101, "https"))
        self.assert_active_connections_drop_to_zero(d)


# ---- upstream failures -----------------------------------------------------------------------

class UpstreamFailureTest(ProxyCase):
    def test_refused_upstream_is_502(self):
        d = self.start_proxy()
        url = "http://127.0.0.1:%d/nothing" % pu.closed_port()
        code, body, err = d.curl(url)
        self.assertEqual(code, 502, err)
        self.assertTrue(body, "a 502 should say why")
        d.wait_metric("oxg_proxy_upstream_errors_total", 1, reason="connect")
        d.wait_metric("oxg_proxy_requests_total", 1, method="GET", code="502")
        h = d.wait_history(1)[0]
        self.assertEqual((h["url"], h["status"]), (url, 502))

    def test_silent_upstream_is_504_after_the_timeout(self):
        silent = pu.SilentUpstream()
        self.addCleanup(silent.stop)
        d = self.start_proxy(["--proxy-upstream-timeout", "1"])
        c = d.conn(timeout=30)
        start = time.monotonic()
        status, _, _ = self.get(c, silent.url("/wait"))
        elapsed = time.monotonic() - start
        self.assertEqual(status, 504)
        self.assertLess(elapsed, 10)
        self.assertGreater(elapsed, 0.5, "answered before the upstream timeout could pass")
        self.assertEqual(silent.accepted, 1)
        d.wait_metric("oxg_proxy_upstream_errors_total", 1, reason="timeout")
        self.assertEqual(d.wait_history(1)[0]["status"], 504)

    def test_unresolvable_host_is_502(self):
        # .invalid never resolves (RFC 6761); the upstream timeout bounds a slow resolver.
        d = self.start_proxy(["--proxy-upstream-timeout", "3"])
        code, body, err = d.curl("http://no-such-host.invalid/x")
        self.assertEqual(code, 502, err)
        self.assertIn(b"no-such-host.invalid", body)
        code, _, err = d.curl("https://no-such-host.invalid/x", "--cacert", d.ca)
        self.assertEqual(code, 502, err)
        d.wait_metric("oxg_proxy_upstream_errors_total", 2, reason="connect")

    def test_silent_tls_upstream_is_504(self):
        silent = pu.SilentUpstream()
        self.addCleanup(silent.stop)
        d = self.start_proxy(["--proxy-upstream-timeout", "1"])
        start = time.monotonic()
        code, _, err = d.curl("https://localhost:%d/x" % silent.port, "--cacert", d.ca)
        self.assertEqual(code, 504, err)
        self.assertLess(time.monotonic() - start, 10)
        d.wait_metric("oxg_proxy_upstream_errors_total", 1, reason="timeout")

    def test_untrusted_upstream_certificate_is_502_unless_verification_is_skipped(self):
        up = self.upstream(tls=True)
        url = up.url("/hello", host="localhost")
        d = self.start_proxy()  # no --proxy-upstream-ca: the origin's CA is unknown
        code, _, err = d.curl(url, "--cacert", d.ca)
        self.assertEqual(code, 502, err)
        d.wait_metric("oxg_proxy_upstream_errors_total", 1, reason="tls")
        self.assertEqual(up.recorded(), [])
        self.assertEqual(d.stop(), 0)

        d2 = self.start_proxy(["--proxy-insecure-skip-verify"],
                              data_dir=os.path.join(self.tmp, "data2"))
        code, body, err = d2.curl(url, "--cacert", d2.ca)
        self.assertEqual((code, body), (200, b"hello from upstream\n"), err)
        self.assertEqual(d2.metric("oxg_proxy_upstream_errors_total", reason="tls"), 0)

    def test_trusted_upstream_ca_flag(self):
        up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        code, body, err = d.curl(up.url("/hello", host="localhost"), "--cacert", d.ca)
        self.assertEqual((code, body), (200, b"hello from upstream\n"), err)


# ---- hostile and broken clients --------------------------------------------------------------

class BadClientTest(ProxyCase):
    def test_malformed_requests_are_refused_and_closed(self):
        up = self.upstream()
        d = self.start_proxy()
        target = up.url("/hello").encode()
        host = b"Host: 127.0.0.1:%d\r\n" % up.port
        cases = [
            ("bad method characters", b"GE(T " + target + b" HTTP/1.1\r\n" + host + b"\r\n", 400),
            ("missing version", b"GET " + target + b"\r\n" + host + b"\r\n", 400),
            ("unknown version", b"GET " + target + b" HTTP/9.9\r\n" + host + b"\r\n", 505),
            ("space before colon", b"GET " + target + b" HTTP/1.1\r\n" + host +
             b"X-Test : 1\r\n\r\n", 400),
            ("obs-fold", b"GET " + target + b" HTTP/1.1\r\n" + host +
             b"X-Test: a\r\n  folded\r\n\r\n", 400),
            ("Content-Length with Transfer-Encoding", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            ("two different Content-Length", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
            ("bare CR", b"GET " + target + b" HTTP/1.1\r\n" + host +
             b"X-Test: a\rX-Other: b\r\n\r\n", 400),
            ("negative Content-Length", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Content-Length: -1\r\n\r\n", 400),
            ("Content-Length with a sign", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Content-Length: +5\r\n\r\nhello", 400),
            ("unknown transfer coding", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Transfer-Encoding: gzip\r\n\r\n", 400),
            ("chunked not last", b"POST " + target + b" HTTP/1.1\r\n" + host +
             b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
            ("NUL in a value", b"GET " + target + b" HTTP/1.1\r\n" + host +
             b"X-Test: a\x00b\r\n\r\n", 400),
            ("two Host fields", b"GET " + target + b" HTTP/1.1\r\n" + host +
             b"Host: other.example\r\n\r\n", 400),
        ]
        for name, raw, expected in cases:
            with self.subTest(case=name):
                s = d.raw()
                s.sendall(raw)
                status, data, closed = read_http_response(s)
                self.assertEqual(status, expected, data)
                self.assertTrue(closed, "connection left open after %r" % data[:60])
                _, _, body = parse_http_message(data)
                self.assertTrue(body.strip(), "the error body should say why")
                s.close()
        self.assertEqual(up.recorded(), [], "a malformed request reached the upstream")
        self.assert_active_connections_drop_to_zero(d)

    def test_oversized_head_is_431(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/hello").encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: " +
                  b"a" * (70 * 1024) + b"\r\n\r\n")
        status, data, closed = read_http_response(s)
        self.assertEqual(status, 431, data[:200])
        self.assertTrue(closed)
        self.assertEqual(up.recorded(), [])

    def test_client_hangs_up_mid_body_and_mid_download(self):
        up = self.upstream()
        d = self.start_proxy()
        # Mid upload: 10 of the 1,000,000 announced bytes, then gone.
        s = d.raw()
        s.sendall(b"POST " + up.url("/upload").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000000\r\n\r\n0123456789")
        d.wait_metric("oxg_proxy_active_connections", 1)
        s.close()
        self.assert_active_connections_drop_to_zero(d)

        # Mid download: read a little of a large body, then gone.
        s = d.raw()
        s.sendall(b"GET " + up.url("/stream?bytes=%d" % (512 << 20)).encode() +
                  b" HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < (1 << 20):
            chunk = s.recv(65536)
            self.assertTrue(chunk)
            got += len(chunk)
        self.assertEqual(d.metric("oxg_proxy_active_connections"), 1)
        s.close()
        self.assert_active_connections_drop_to_zero(d)
        # The proxy still serves.
        code, body, err = d.curl(up.url("/hello"))
        self.assertEqual(code, 200, err)


# ---- capture: history, flow log, redaction, scope, sampling ----------------------------------

SECRETS = {
    "authorization": "AuthSecretValue1111",
    "cookie": "CookieSecretValue2222",
    "api_key": "ApiKeySecretValue3333",
    "password": "PasswordSecretValue4444",
    "url_token": "UrlTokenSecretValue5555",
    "set_cookie": pu.SET_COOKIE_SECRET,
}


class CaptureTest(ProxyCase):
    def check_flow_payload(self, b64, method=None, status=None):
        text = base64.b64decode(b64)
        start, headers, body = parse_http_message(text)
        if method:
            self.assertTrue(start.startswith(method + " ") and start.endswith(" HTTP/1.1"), start)
        if status:
            self.assertTrue(start.startswith("HTTP/1.1 %d" % status), start)
        cl = header(headers, "Content-Length")
        if cl is not None:
            self.assertEqual(int(cl), len(body), start)
        else:
            self.assertEqual(body, b"", start)
        return start, headers, body

    def test_history_and_flow_log_lines_match_the_traffic(self):
        up = self.upstream()
        tls_up = self.upstream(tls=True)
        d = self.start_proxy(self.upstream_ca_flag())
        c = d.conn()
        self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        client = "127.0.0.1:%d" % c.sock.getsockname()[1]
        post_body = b"x" * 1234
        c.request("POST", up.url("/upload"), body=post_body,
                  headers={"Content-Type": "text/plain"})
        r = c.getresponse()
        upload_response = r.read()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.get(c, up.url("/missing"))[0], 404)
        t = d.tunnel("localhost", tls_up.port)
        self.assertEqual(self.get(t, "/hello")[0], 200)
        tls_client = "127.0.0.1:%d" % t.sock.getsockname()[1]
        sent = [("GET", up.url("/hello"), 200, "http", client, 0, 20),
                ("POST", up.url("/upload"), 200, "http", client, 1234, len(upload_response)),
                ("GET", up.url("/missing"), 404, "http", client, 0, len(b"no such route\n")),
                ("GET", tls_up.url("/hello", host="localhost"), 200, "https", tls_client, 0, 20)]

        d.wait_history(4)
        hist = d.history()
        self.assertEqual(len(hist), 4)
        now = time.time()
        for h, (method, url, status, scheme, addr, req_body, resp_body) in zip(hist, sent):
            with self.subTest(url=url, method=method):
                self.assertEqual(list(h), HISTORY_KEYS)
                self.assertEqual((h["method"], h["url"], h["status"], h["scheme"],
                                  h["client_address"]), (method, url, status, scheme, addr))
                self.assertRegex(h["timestamp"],
                                 r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
                self.assertRegex(h["flow_id"], r"^[0-9A-HJKMNP-TV-Z]{26}$")
                self.assertIsInstance(h["duration_ms"], (int, float))
                self.assertTrue(0 <= h["duration_ms"] < 10000, h["duration_ms"])
                # Wire bytes: the body plus a head of plausible size.
                self.assertTrue(req_body + 30 < h["request_bytes"] < req_body + 2048,
                                h["request_bytes"])
                self.assertTrue(resp_body + 30 < h["response_bytes"] < resp_body + 2048,
                                h["response_bytes"])
                self.assertIsInstance(h["request_headers"], dict)
                self.assertIsInstance(h["response_headers"], dict)
                host_values = [v for k, v in h["request_headers"].items() if k.lower() == "host"]
                self.assertTrue(host_values, h["request_headers"])
                self.assertIn("Content-Type", h["response_headers"])
                self.assertEqual(h["trace_id"], "")
        self.assertEqual(hist[1]["request_headers"].get("Content-Length"), "1234")
        self.assertEqual(len({h["flow_id"] for h in hist}), 4)

        flows = d.wait_flows(8)
        self.assertEqual(len(flows), 8)
        for f in flows:
            self.assertEqual(list(f), FLOW_KEYS)
        seq = [f["sequence"] for f in flows]
        self.assertEqual(seq, list(range(seq[0], seq[0] + 8)))
        self.assertEqual([f["type"] for f in flows], ["FLOW_REQUEST", "FLOW_RESPONSE"] * 4)
        ids = [h["flow_id"] for h in hist]
        self.assertEqual([f["id"] for f in flows], [i for i in ids for _ in (0, 1)])
        for i, (method, url, status, _, _, req_body, resp_body) in enumerate(sent):
            with self.subTest(flow=url):
                req, resp = flows[2 * i], flows[2 * i + 1]
                start, _, body = self.check_flow_payload(req["sanitized_base64"], method=method)
                self.assertTrue(start.split()[1].endswith(url.split("/", 3)[3]), start)
                self.assertEqual(len(body), req_body)
                _, _, body = self.check_flow_payload(resp["sanitized_base64"], status=status)
                self.assertEqual(len(body), resp_body)
                self.assertEqual((req["raw_body_bytes"], resp["raw_body_bytes"]),
                                 (req_body, resp_body))
                for f in (req, resp):
                    self.assertNotIn("raw_base64", f)
                    self.assertFalse(f["raw_body_truncated"])
                    self.assertEqual(f["trace_id"], "")
                    self.assertLess(abs(f["timestamp_unix_nano"] / 1e9 - now), 300)
        _, _, body = self.check_flow_payload(flows[3]["sanitized_base64"])
        self.assertEqual(body, upload_response)

    def test_flow_log_raw_holds_exact_payloads(self):
        up = self.upstream()
        d = self.start_proxy(["--flow-log-raw"])
        c = d.conn()
        c.request("POST", up.url("/upload"), body=b"exact body bytes",
                  headers={"Content-Type": "text/plain"})
        r = c.getresponse()
        response = r.read()
        flows = d.wait_flows(2)
        for f in flows:
            self.assertIn("raw_base64", f)
        _, headers, body = parse_http_message(base64.b64decode(flows[0]["raw_base64"]))
        self.assertEqual(body, b"exact body bytes")
        self.assertEqual(header(headers, "Content-Type"), "text/plain")
        _, headers, body = parse_http_message(base64.b64decode(flows[1]["raw_base64"]))
        self.assertEqual(body, response)

    def test_credentials_never_reach_history_or_sanitized_payloads(self):
        up = self.upstream()
        d = self.start_proxy(["--flow-log-raw"])
        c = d.conn()
        body = json.dumps({"user": "bob", "password": SECRETS["password"]}).encode()
        c.request("POST", up.url("/upload?token=%s&page=2" % SECRETS["url_token"]), body=body,
                  headers={"Authorization": "Bearer " + SECRETS["authorization"],
                           "Cookie": "sid=%s; theme=light" % SECRETS["cookie"],
                           "X-Api-Key": SECRETS["api_key"],
                           "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        status, _, r = self.get(c, up.url("/cookie"))
        self.assertEqual(status, 200)
        self.assertIn(SECRETS["set_cookie"], r.getheader("Set-Cookie"))

        # The upstream got the real values: the proxy forwards, only the records are masked.
        got = dict(up.recorded()[0]["headers"])
        self.assertEqual(got["Authorization"], "Bearer " + SECRETS["authorization"])
        self.assertEqual(got["X-Api-Key"], SECRETS["api_key"])

        d.wait_history(2)
        flows = d.wait_flows(4)
        with open(d.history_path) as f:
            history_text = f.read()
        sanitized = b"".join(base64.b64decode(f["sanitized_base64"]) for f in flows)
        raw = b"".join(base64.b64decode(f["raw_base64"]) for f in flows)
        for name, secret in SECRETS.items():
            with self.subTest(secret=name):
                self.assertNotIn(secret, history_text)
                self.assertNotIn(secret.encode(), sanitized)
                self.assertIn(secret.encode(), raw)   # --flow-log-raw keeps the real bytes
        hist = d.history()
        self.assertEqual(hist[0]["request_headers"]["Authorization"], "Bearer [REDACTED]")
        self.assertIn("sid=", hist[0]["request_headers"]["Cookie"])
        self.assertIn("[REDACTED]", hist[0]["request_headers"]["X-Api-Key"])
        self.assertIn("page=2", hist[0]["url"])
        self.assertIn(b'"user": "bob"', sanitized)  # the rest of the body is kept
        set_cookie = hist[1]["response_headers"]["Set-Cookie"]
        self.assertIsInstance(set_cookie, list)  # two Set-Cookie fields
        self.assertEqual(len(set_cookie), 2)
        self.assertTrue(set_cookie[0].startswith("session="), set_cookie)

    def write_policy(self, text):
        path = os.path.join(self.tmp, "scope.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_scope_policy_table(self):
        up = self.upstream()
        policy = self.write_policy(
            "version: 1\n"
            "private_networks: allow\n"
            "allow:\n"
            "  - {type: url_prefix, value: \"http://127.0.0.1:%d/in/\"}\n"
            "  - {type: pattern, value: \"^http://127\\\\.0\\\\.0\\\\.1:%d/re/[0-9]+$\"}\n"
            "deny:\n"
            "  - {type: path, value: /in/logout}\n" % (up.port, up.port))
        d = self.start_proxy(["--scope-policy", policy])
        table = [("/in/a", True), ("/out/b", False), ("/in/logout", False),
                 ("/in/logout/x", False), ("/re/42", True), ("/re/x", False), ("/in", False),
                 ("/in/z", True)]
        c = d.conn()
        for path, _ in table:
            status, _, _ = self.get(c, up.url(path))
            self.assertEqual(status, 404, path)  # every request was proxied (no such route)
        self.assertEqual([r["path"] for r in up.recorded()], [p for p, _ in table])
        self.assertEqual(d.stop(), 0)  # shutdown writes everything queued
        captured = [up.url(p) for p, inside in table if inside]
        self.assertEqual([h["url"] for h in d.history()], captured)
        self.assertEqual(len(d.flows()), 2 * len(captured))

    def test_scope_private_networks_block_captures_nothing_on_loopback(self):
        up = self.upstream()
        policy = self.write_policy("version: 1\nprivate_networks: block\n")
        d = self.start_proxy(["--scope-policy", policy])
        code, body, err = d.curl(up.url("/hello"))
        self.assertEqual((code, body), (200, b"hello from upstream\n"), err)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.history(), [])
        self.assertEqual(d.flows(), [])

    def test_sample_rate_zero_writes_history_but_no_flows(self):
        up = self.upstream()
        d = self.start_proxy(["--flow-sample-rate", "0"])
        c = d.conn()
        for _ in range(3):
            self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        d.wait_history(3)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len(d.history()), 3)
        self.assertEqual(d.flows(), [])


# ---- metrics, audit, shutdown ----------------------------------------------------------------

class OperationsTest(ProxyCase):
    def test_metrics_after_traffic(self):
        up = self.upstream()
        d = self.start_proxy()
        text = d.metrics_text()
        for family in ("oxg_proxy_requests_total", "oxg_proxy_request_duration_seconds",
                       "oxg_proxy_active_connections", "oxg_proxy_upstream_errors_total",
                       "oxg_proxy_certs_minted_total"):
            self.assertRegex(text, r"# TYPE %s " % family.replace("_total", "(_total)?"))
        c = d.conn()
        for _ in range(3):
            self.assertEqual(self.get(c, up.url("/hello"))[0], 200)
        c.request("POST", up.url("/upload"), body=b"abc")
        c.getresponse().read()
        self.assertEqual(self.get(c, up.url("/missing"))[0], 404)
        c.close()
        d.wait_metric("oxg_proxy_requests_total", 3, method="GET", code="200")
        d.wait_metric("oxg_proxy_requests_total", 1, method="POST", code="200")
        d.wait_metric("oxg_proxy_requests_total", 1, method="GET", code="404")
        self.assertEqual(d.metric("oxg_proxy_request_duration_seconds_count", method="GET"), 4)
        self.assertEqual(d.metric("oxg_proxy_request_duration_seconds_count", method="POST"), 1)
        self.assertEqual(d.metric("oxg_proxy_upstream_errors_total"), 0)
        self.assert_active_connections_drop_to_zero(d)

    def test_audit_has_proxy_lifecycle_start_and_stop(self):
        d = self.start_proxy()
        start_events = [dict(e) for e in it.read_audit(d.audit_path)
                        if dict(e)["event_type"] == "proxy_lifecycle"]
        proxy_starts = [e for e in start_events
                        if str(d.port) in json.dumps(e) and "start" in json.dumps(e).lower()]
        self.assertTrue(proxy_starts, start_events)
        self.assertEqual(d.stop(), 0)
        events = [dict(e) for e in it.read_audit(d.audit_path)
                  if dict(e)["event_type"] == "proxy_lifecycle"]
        later = events[len(start_events):]
        self.assertTrue(any("stop" in json.dumps(e).lower() for e in later), events)

    def test_sigterm_during_an_active_download_exits_0(self):
        up = self.upstream()
        d = self.start_proxy()
        s = d.raw()
        s.sendall(b"GET " + up.url("/stream?bytes=%d" % GIB).encode() +
                  b" HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < (4 << 20):
            chunk = s.recv(65536)
            self.assertTrue(chunk)
            got += len(chunk)
        start = time.monotonic()
        it.send_signal(d.proc, it.SIGTERM)
        self.assertEqual(d.proc.wait(SHUTDOWN_TIMEOUT), 0, d.proc.stderr)
        self.assertLess(time.monotonic() - start, 10)
        # The client sees its connection end (not the whole gigabyte).
        s.settimeout(10)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            pass
        self.assertLess(got, GIB)


if __name__ == "__main__":
    it.main()
