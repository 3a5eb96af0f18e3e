"""End to end: 0xgend with real proxied traffic, its tracing setup (real flags, real exporters)
against a real OTLP/HTTP receiver, the span archive, the metrics endpoint, the history and the
audit log; then collector faults under steady traffic.

Traffic: a small upstream HTTP server in this process and http.client connections through the
daemon's proxy. Every wait is a bounded poll; every process started is stopped and checked gone.
"""

import http.client
import http.server
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oxg_e2e as e2e  # noqa: E402

DAEMON = os.environ.get("OXG_DAEMON", "")
RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                        "otlp_receiver.py")
PYTHON = "/usr/bin/python3"
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"


class Upstream:
    """A loopback HTTP/1.1 server answering every GET with a small body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body are two writes

        def do_GET(self):  # noqa: N802 (stdlib name)
            body = b"hello from upstream\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Traffic:
    """Sends GETs through the proxy on one keep-alive connection at about `rate` per second
    until stopped."""

    def __init__(self, proxy_port, url, rate):
        self.proxy_port, self.url, self.rate = proxy_port, url, rate
        self.sent = 0
        self.errors = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conn = None
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=10)
                conn.request("GET", self.url)
                resp = conn.getresponse()
                resp.read()
                self.sent += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn = None
            next_at += interval
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=15)


class Proc:
    """A child process whose stdout lines are read with a bounded wait."""

    def __init__(self, argv, env=None, lines_from="stdout"):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, env=env, text=True)
        self.stream = self.p.stdout if lines_from == "stdout" else self.p.stderr
        self.other = self.p.stderr if lines_from == "stdout" else self.p.stdout
        self.lines = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.stream, selectors.EVENT_READ)

    def wait_line(self, pattern, timeout=30):
        rx = re.compile(pattern)
        for line in self.lines:
            m = rx.search(line)
            if m:
                return m
        deadline = e2e.Deadline(timeout)
        while not deadline.expired():
            if not self.sel.select(timeout=deadline.left()):
                break
            line = self.stream.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            m = rx.search(line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {self.lines}; "
                             f"stderr: {self.stderr()}")

    def stderr(self):
        if self.p.poll() is None:
            return "(running)"
        return "\n".join(self.lines) + self.stream.read() + self.other.read()

    def terminate_timed(self, timeout=10):
        """SIGTERM, then the exit code and how long the exit took."""
        start = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        return rc, time.monotonic() - start

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.sel.close()
        self.p.stdout.close()
        self.p.stderr.close()
        assert e2e.process_gone(self.p.pid)


class TracingPipelineTest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(DAEMON and os.access(DAEMON, os.X_OK), "OXG_DAEMON not set")
        self.tmp = tempfile.mkdtemp(prefix="oxg_tracing_e2e_")
        self.procs = []
        self.upstream = Upstream()
        self.url = f"http://127.0.0.1:{self.upstream.port}/page"

    def tearDown(self):
        for p in self.procs:
            p.kill()
        self.upstream.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_receiver(self, *args):
        out = os.path.join(self.tmp, "received")
        os.makedirs(out, exist_ok=True)
        r = Proc([PYTHON, RECEIVER, "--port", "0", "--out-dir", out, *args])
        self.procs.append(r)
        port = int(r.wait_line(r"^listening (\d+)").group(1))
        return r, port, out

    def start_daemon(self, flags):
        """0xgend on OS-chosen ports; returns the process, the proxy port and the metrics
        address. The loopback upstream is a private network, so no scope policy is given."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OTEL_") and not k.startswith("OXG_")}
        d = Proc([DAEMON, "--data-dir", os.path.join(self.tmp, "data"),
                  "--metrics-addr", "127.0.0.1:0", "--proxy-addr", "127.0.0.1:0",
                  "--addr", "127.0.0.1:0", "--workers", "1",
                  "--audit-log", os.path.join(self.tmp, "audit.jsonl"), *flags],
                 env=env, lines_from="stderr")
        self.procs.append(d)
        metrics = d.wait_line(r"metrics listening on (\S+)").group(1)
        proxy = int(d.wait_line(r"proxy listening on 127\.0\.0\.1:(\d+)").group(1))
        return d, proxy, metrics

    def get(self, proxy_port, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        try:
            conn.request("GET", self.url, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, body
        finally:
            conn.close()

    def scrape(self, addr, accept="application/openmetrics-text; version=1.0.0"):
        status, headers, body = e2e.fetch(f"http://{addr}/metrics", {"Accept": accept})
        self.assertEqual(status, 200)
        return body.decode()

    @staticmethod
    def metric(text, name, labels=""):
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)", text, re.M)
        return float(m.group(1)) if m else None

    def received_spans(self, out):
        spans = []
        for name in sorted(os.listdir(out)):
            if not name.endswith(".body"):
                continue
            with open(os.path.join(out, name), "rb") as f:
                req = json.loads(f.read())
            for rs in req["resourceSpans"]:
                resource = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        s["_resource"] = resource
                        spans.append(s)
        return spans

    def test_proxied_exchanges_traced_end_to_end(self):
        _, port, out = self.start_receiver("--mode", "ok")
        trace_file = os.path.join(self.tmp, "spans.json")
        daemon, proxy, addr = self.start_daemon(
            ["--trace-endpoint", f"http://127.0.0.1:{port}/v1/traces",
             "--trace-protocol", "http/json", "--trace-file", trace_file,
             "--trace-service-name", "0xgend-e2e"])
        # The first exchange continues the client's trace; the others start their own.
        incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
        self.assertEqual(self.get(proxy, {"traceparent": incoming}),
                         (200, b"hello from upstream\n"))
        for _ in range(19):
            self.assertEqual(self.get(proxy)[0], 200)

        # The exemplars on the proxy's families name traces of this run.
        deadline = e2e.Deadline(10)
        while True:
            om = self.scrape(addr)
            exemplar_ids = set(re.findall(
                r'^oxg_proxy_request_duration_seconds_bucket\{[^}]*\} \d+ '
                r'# \{trace_id="([0-9a-f]{32})"', om, re.M))
            counted = self.metric(om, "oxg_proxy_requests_total",
                                  '{method="GET",code="200"}')
            if (exemplar_ids and counted == 20) or deadline.expired():
                break
            deadline.wait()
        self.assertTrue(exemplar_ids, om)
        self.assertEqual(counted, 20, om)
        self.assertRegex(om, r'(?m)^oxg_proxy_requests_total\{method="GET",code="200"\} 20 '
                             r'# \{trace_id="[0-9a-f]{32}",span_id="[0-9a-f]{16}"\}')

        rc, took = daemon.terminate_timed()
        self.assertEqual(rc, 0, daemon.stderr())
        self.assertLess(took, 5.0)

        spans = self.received_spans(out)
        captures = [s for s in spans if s["name"] == "proxy.capture_flow"]
        publishes = [s for s in spans if s["name"] == "proxy.publish_flow_event"]
        self.assertEqual(len(captures), 20, [s["name"] for s in spans])
        self.assertEqual(len(publishes), 40, "a request and a response event per exchange")
        by_id = {s["spanId"]: s for s in spans}
        received_traces = {s["traceId"] for s in spans}
        self.assertTrue(exemplar_ids <= received_traces, (exemplar_ids, received_traces))
        continued = [s for s in captures if s["traceId"] == INCOMING_TRACE]
        self.assertEqual(len(continued), 1, "the incoming traceparent is continued")
        self.assertEqual(continued[0]["parentSpanId"], INCOMING_SPAN)
        for s in spans:
            res = s["_resource"]
            self.assertEqual(res["service.name"], {"stringValue": "0xgend-e2e"})
            self.assertIn("service.instance.id", res)
            self.assertIn("process.pid", res)
            for v in res.values():
                self.assertNotIn("token", json.dumps(v).lower())
        flow_ids = set()
        for s in captures:
            self.assertEqual(s["kind"], 2)  # SERVER
            self.assertEqual(s["status"].get("code"), 1)
            attrs = {a["key"]: a["value"] for a in s["attributes"]}
            self.assertEqual(attrs["http.request.method"], {"stringValue": "GET"})
            self.assertEqual(attrs["url.full"], {"stringValue": self.url})
            self.assertEqual(int(attrs["http.response.status_code"]["intValue"]), 200)
            self.assertEqual(attrs["oxg.flow.sampled"], {"boolValue": True})
            self.assertEqual(attrs["oxg.flow.in_scope"], {"boolValue": True})
            flow_ids.add(attrs["oxg.flow.id"]["stringValue"])
            if s["traceId"] != INCOMING_TRACE:
                self.assertNotIn("parentSpanId", s)
        phases = {}
        for s in publishes:
            parent = by_id[s["parentSpanId"]]
            self.assertEqual(parent["name"], "proxy.capture_flow")
            self.assertEqual(parent["traceId"], s["traceId"])
            attrs = {a["key"]: a["value"] for a in s["attributes"]}
            phases.setdefault(attrs["oxg.flow.id"]["stringValue"], []).append(
                attrs["oxg.flow.phase"]["stringValue"])
        self.assertEqual(set(phases), flow_ids)
        self.assertTrue(all(sorted(v) == ["request", "response"] for v in phases.values()))

        # History and flow log carry the same trace ids.
        with open(os.path.join(self.tmp, "data", "proxy_history.jsonl")) as f:
            history = [json.loads(line) for line in f]
        self.assertEqual({h["trace_id"] for h in history}, received_traces)
        self.assertEqual({h["flow_id"] for h in history}, flow_ids)
        with open(os.path.join(self.tmp, "data", "proxy_flows.jsonl")) as f:
            flows = [json.loads(line) for line in f]
        self.assertEqual({r["trace_id"] for r in flows}, received_traces)

        # The audit log has the proxy's lifecycle.
        with open(os.path.join(self.tmp, "audit.jsonl")) as f:
            audit = [json.loads(line) for line in f]
        lifecycle = [a["reason"] for a in audit
                     if a["event_type"] == "proxy_lifecycle" and a["component"] == "proxy"]
        self.assertEqual(lifecycle, ["started", "stopped"])

        # The span archive holds the same spans, as a Chrome trace event array.
        with open(trace_file) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "[")
        events = [json.loads(line.rstrip(",")) for line in lines[1:] if line.strip()]
        complete = [e for e in events if e["ph"] == "X"]
        self.assertEqual(len(complete), 60)
        self.assertEqual({e["args"]["trace_id"] for e in complete}, received_traces)
        self.assertTrue(any(e["ph"] == "M" and e["name"] == "process_name" and
                            e["args"]["name"] == "0xgend-e2e" for e in events))
        json.loads("\n".join(lines).rstrip().rstrip(",") + "]")  # valid once closed

    def test_unwritable_trace_file_exits_2_naming_it(self):
        # The daemon itself, not the fixture.
        path = os.path.join(self.tmp, "missing-dir", "spans.json")
        p = subprocess.run([DAEMON, "--data-dir", os.path.join(self.tmp, "data"),
                            "--metrics-addr", "127.0.0.1:0", "--trace-file", path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(path, p.stderr)

    def run_fault(self, receiver_args, endpoint=None, seconds=8):
        """Proxies ~400 exchanges/s (1 200 spans/s) with a failing collector for `seconds`;
        returns the last scrape."""
        if endpoint is None:
            _, port, _ = self.start_receiver(*receiver_args)
            endpoint = f"http://127.0.0.1:{port}/v1/traces"
        daemon, proxy, addr = self.start_daemon(["--trace-endpoint", endpoint])
        first = self.scrape(addr, "text/plain")
        rss_start = self.metric(first, "process_resident_memory_bytes")
        traffic = Traffic(proxy, self.url, rate=400)
        try:
            deadline = e2e.Deadline(seconds, step=0.5)
            peak = rss_start
            text = first
            while not deadline.expired():
                deadline.wait()
                text = self.scrape(addr, "text/plain")
                peak = max(peak, self.metric(text, "process_resident_memory_bytes"))
                status, _, body = e2e.fetch(f"http://{addr}/healthz")
                self.assertEqual((status, body), (200, b"ok\n"))
        finally:
            traffic.stop()
        # The proxy kept serving while the exporter failed.
        self.assertGreater(traffic.sent, 200)
        self.assertEqual(traffic.errors, 0)
        rc, took = daemon.terminate_timed()
        self.assertEqual(rc, 0, daemon.stderr())
        self.assertLess(took, 5.0, "SIGTERM must end the daemon within 5 s despite the collector")
        # Memory stays within the queue bound: far below what unbounded buffering would need.
        self.assertLess(peak - rss_start, 64 << 20, (rss_start, peak))
        return text

    def dropped(self, text):
        q = self.metric(text, "oxg_trace_spans_total", '{outcome="dropped_queue_full"}') or 0
        f = self.metric(text, "oxg_trace_spans_total", '{outcome="dropped_export_failed"}') or 0
        return q, f

    def test_collector_answering_500(self):
        text = self.run_fault(["--mode", "500"])
        _, failed = self.dropped(text)
        self.assertGreater(failed, 0, text)
        self.assertEqual(self.metric(text, "oxg_trace_spans_total", '{outcome="exported"}'), 0)

    def test_collector_answering_429(self):
        text = self.run_fault(["--mode", "429", "--retry-after", "1"])
        queue_full, failed = self.dropped(text)
        self.assertGreater(queue_full + failed, 0, text)

    def test_collector_hanging(self):
        text = self.run_fault(["--mode", "hang"])
        queue_full, _ = self.dropped(text)
        self.assertGreater(queue_full, 0, "a hung export lets the queue fill and drop: " + text)

    def test_collector_refusing(self):
        port = e2e.free_port()  # nothing listens there
        text = self.run_fault([], endpoint=f"http://127.0.0.1:{port}/v1/traces")
        queue_full, failed = self.dropped(text)
        self.assertGreater(queue_full + failed, 0, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
