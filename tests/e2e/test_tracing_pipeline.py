"""End to end: the daemon's tracing setup (real flags, real exporters) against a real OTLP/HTTP
receiver, the span archive, the metrics endpoint and the audit log; then collector faults.

tracing_fixture runs 0xgend's tracing wiring with a synthetic operation standing in for a
proxied exchange (see tracing_fixture.cc). Every wait is a bounded poll; every process started
is stopped and checked gone.
"""

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oxg_e2e as e2e  # noqa: E402

FIXTURE = os.environ.get("OXG_TRACING_FIXTURE", "")
DAEMON = os.environ.get("OXG_DAEMON", "")
RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                        "otlp_receiver.py")
PYTHON = "/usr/bin/python3"


class Proc:
    """A child process whose stdout lines are read with a bounded wait."""

    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, env=env, text=True)
        self.lines = []
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)

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
            line = self.p.stdout.readline()
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
        return self.p.stderr.read()

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
        self.assertTrue(FIXTURE and os.access(FIXTURE, os.X_OK), "OXG_TRACING_FIXTURE not set")
        self.tmp = tempfile.mkdtemp(prefix="oxg_tracing_e2e_")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_receiver(self, *args):
        out = os.path.join(self.tmp, "received")
        os.makedirs(out, exist_ok=True)
        r = Proc([PYTHON, RECEIVER, "--port", "0", "--out-dir", out, *args])
        self.procs.append(r)
        port = int(r.wait_line(r"^listening (\d+)").group(1))
        return r, port, out

    def start_fixture(self, flags, ops, rate):
        env = dict(os.environ, OXG_FIXTURE_OPS=str(ops), OXG_FIXTURE_RATE=str(rate))
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        f = Proc([FIXTURE, "--data-dir", os.path.join(self.tmp, "data"),
                  "--metrics-addr", "127.0.0.1:0",
                  "--audit-log", os.path.join(self.tmp, "audit.jsonl"), *flags], env=env)
        self.procs.append(f)
        addr = f.wait_line(r"^listening (\S+)").group(1)
        return f, addr

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

    def test_spans_exemplars_audit_and_archive_share_trace_ids(self):
        _, port, out = self.start_receiver("--mode", "ok")
        trace_file = os.path.join(self.tmp, "spans.json")
        fixture, addr = self.start_fixture(
            ["--trace-endpoint", f"http://127.0.0.1:{port}/v1/traces",
             "--trace-protocol", "http/json", "--trace-file", trace_file,
             "--trace-service-name", "0xgend-e2e"], ops=20, rate=200)
        first_trace = fixture.wait_line(r"^op 1 trace_id ([0-9a-f]{32})").group(1)
        fixture.wait_line(r"^done 20")

        # The exemplar on the latency histogram names a trace of this run.
        om = self.scrape(addr)
        exemplar_ids = set(re.findall(
            r'^oxg_proxy_request_duration_seconds_bucket\{[^}]*\} \d+ # \{trace_id="([0-9a-f]{32})"',
            om, re.M))
        self.assertTrue(exemplar_ids, om)

        rc, took = fixture.terminate_timed()
        self.assertEqual(rc, 0, fixture.stderr())
        self.assertLess(took, 5.0)

        spans = self.received_spans(out)
        self.assertEqual(len(spans), 40, "20 capture_flow + 20 publish_flow_event spans")
        by_id = {s["spanId"]: s for s in spans}
        received_traces = {s["traceId"] for s in spans}
        self.assertTrue(exemplar_ids <= received_traces, (exemplar_ids, received_traces))
        self.assertIn(first_trace, received_traces)
        for s in spans:
            res = s["_resource"]
            self.assertEqual(res["service.name"], {"stringValue": "0xgend-e2e"})
            self.assertIn("service.instance.id", res)
            self.assertIn("process.pid", res)
            for v in res.values():
                self.assertNotIn("token", json.dumps(v).lower())
            if s["name"] == "proxy.capture_flow":
                self.assertEqual(s["kind"], 2)  # SERVER
                self.assertEqual(s["status"].get("code"), 1)
                self.assertNotIn("parentSpanId", s)
            else:
                self.assertEqual(s["name"], "proxy.publish_flow_event")
                parent = by_id[s["parentSpanId"]]
                self.assertEqual(parent["name"], "proxy.capture_flow")
                self.assertEqual(parent["traceId"], s["traceId"])

        # The audit line written inside the first operation's span carries its ids.
        with open(os.path.join(self.tmp, "audit.jsonl")) as f:
            audit = [json.loads(line) for line in f]
        inside = [a for a in audit if a.get("reason") == "first exchange"]
        self.assertEqual(len(inside), 1)
        self.assertEqual(inside[0]["trace_id"], first_trace)
        self.assertIn(inside[0]["span_id"], by_id)
        self.assertEqual(list(inside[0].keys())[-2:], ["trace_id", "span_id"])

        # The span archive holds the same spans, as a Chrome trace event array.
        with open(trace_file) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "[")
        events = [json.loads(line.rstrip(",")) for line in lines[1:] if line.strip()]
        complete = [e for e in events if e["ph"] == "X"]
        self.assertEqual(len(complete), 40)
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
        """Drives 1 000 spans/s at a failing collector for `seconds`; returns the last scrape."""
        if endpoint is None:
            _, port, _ = self.start_receiver(*receiver_args)
            endpoint = f"http://127.0.0.1:{port}/v1/traces"
        fixture, addr = self.start_fixture(["--trace-endpoint", endpoint], ops=0, rate=500)
        first = self.scrape(addr, "text/plain")
        rss_start = self.metric(first, "process_resident_memory_bytes")
        deadline = e2e.Deadline(seconds, step=0.5)
        peak = rss_start
        text = first
        while not deadline.expired():
            deadline.wait()
            text = self.scrape(addr, "text/plain")
            peak = max(peak, self.metric(text, "process_resident_memory_bytes"))
            status, _, body = e2e.fetch(f"http://{addr}/healthz")
            self.assertEqual((status, body), (200, b"ok\n"))
        rc, took = fixture.terminate_timed()
        self.assertEqual(rc, 0, fixture.stderr())
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
