"""Seer's plugin logic (pairing, body handling, deduplication, findings), its manifest, and the
script as a process against an in-process fake PluginBus."""

import gzip
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import unittest
import zlib
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_DIR = os.path.dirname(HERE)
sys.path.insert(0, PLUGIN_DIR)

import grpc  # noqa: E402
from oxg import common_pb2, plugin_bus_pb2, plugin_bus_pb2_grpc  # noqa: E402
from oxg_plugin import parse_wire  # noqa: E402

import seer  # noqa: E402

WAIT = 15.0
AWS = "AKIA" + "Q3EGVP7XK2MZ4T9B"


def request(flow_id, target="/api/me", host="api.shop.example"):
    msg = parse_wire(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), True)
    msg.flow_id = flow_id
    return msg


def response(flow_id, body, headers=(), status=200):
    head = f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    msg = parse_wire(head.encode("latin-1") + body, False)
    msg.flow_id = flow_id
    return msg


class SeerLogicTest(unittest.TestCase):
    def setUp(self):
        self.seer = seer.Seer({})

    def test_pairs_response_with_request_url(self):
        self.seer.on_request(request("f1"))
        (f,) = self.seer.findings_for(response("f1", f'{{"k": "{AWS}"}}'.encode()))
        self.assertEqual(f.type, "secret-exposure")
        self.assertEqual(f.severity, "high")
        self.assertEqual(f.target, "https://api.shop.example/api/me")
        self.assertEqual(f.evidence, "AKIA\u2026[REDACTED]\u20269B")
        self.assertNotIn(AWS, f.message + f.evidence + json.dumps(f.metadata))
        self.assertEqual(f.metadata["kind"], "aws_access_key_id")
        self.assertEqual(f.metadata["location"], "body")
        self.assertEqual(f.metadata["status"], "200")
        self.assertIn("from https://api.shop.example/api/me", f.message)
        # The pairing entry is consumed: a second response of that flow has no target.
        (again,) = self.seer.findings_for(response("f1", b"mail: bob@corp.io"))
        self.assertEqual(again.target, "")

    def test_pii_findings(self):
        self.seer.on_request(request("f2"))
        found = self.seer.findings_for(response(
            "f2", b"card 4111 1111 1111 1111, mail jane@corp.io, bad 4111 1111 1111 1112"))
        self.assertEqual([(f.type, f.metadata["kind"]) for f in found],
                         [("pii-exposure", "credit_card_number"), ("pii-exposure", "email_address")])
        self.assertEqual(found[0].metadata["luhn"], "valid")

    def test_deduplicates_per_kind_target_and_evidence(self):
        body = f"{AWS} {AWS}".encode()
        self.seer.on_request(request("a"))
        self.assertEqual(len(self.seer.findings_for(response("a", body))), 1)
        self.seer.on_request(request("b"))
        self.assertEqual(self.seer.findings_for(response("b", body)), [])
        self.seer.on_request(request("c", target="/other"))
        self.assertEqual(len(self.seer.findings_for(response("c", body))), 1)

    def test_caps_findings_per_kind_and_counts_occurrences(self):
        body = " ".join(f"user@corp{i}.io" for i in range(30)).encode()
        found = self.seer.findings_for(response("x", body))
        self.assertEqual(len(found), seer.MAX_PER_KIND)
        self.assertEqual(found[0].metadata["occurrences"], "30")

    def test_sanitized_values_are_skipped(self):
        body = b'{"api_key": "[REDACTED]", "password": "[REDACTED]"}'
        self.assertEqual(self.seer.findings_for(response("s", body)), [])

    def test_headers_are_scanned(self):
        (f,) = self.seer.findings_for(response("h", b"", headers=[("X-Debug-Key", AWS)]))
        self.assertEqual(f.metadata["location"], "header")

    def test_compressed_bodies_are_decoded(self):
        text = f"leak {AWS}".encode()
        for encoding, data in [("gzip", gzip.compress(text)), ("deflate", zlib.compress(text)),
                               ("deflate", zlib.compress(text)[2:-4])]:
            with self.subTest(encoding):
                s = seer.Seer({})
                found = s.findings_for(response("z", data, headers=[("Content-Encoding",
                                                                     encoding)]))
                self.assertEqual([f.metadata["kind"] for f in found], ["aws_access_key_id"])
        s = seer.Seer({})
        self.assertEqual(s.findings_for(response("z", b"not gzip " + AWS.encode(),
                                                 headers=[("Content-Encoding", "gzip")])), [])
        self.assertEqual(s.undecodable_bodies, 1)

    def test_media_bodies_and_the_scan_bound(self):
        self.assertEqual(self.seer.findings_for(response(
            "i", AWS.encode(), headers=[("Content-Type", "image/png")])), [])
        small = seer.Seer({"max_scan_bytes": 100})
        self.assertEqual(small.findings_for(response("b", b" " * 100 + AWS.encode())), [])
        self.assertEqual(len(small.findings_for(response("b", b" " * 50 + AWS.encode()))), 1)

    def test_config(self):
        logged = []
        s = seer.Seer({"disable": ["email_address", "nope"], "max_scan_bytes": -1},
                      log=logged.append)
        self.assertEqual(s.disabled, {"email_address"})
        self.assertEqual(s.max_scan_bytes, seer.MAX_SCAN_BYTES)
        self.assertEqual(len(logged), 2)
        self.assertEqual(s.findings_for(response("c", b"a@corp.io")), [])

    def test_pending_flows_are_bounded(self):
        for i in range(seer.MAX_PENDING_FLOWS + 10):
            self.seer.on_request(request(f"f{i}"))
        self.assertEqual(len(self.seer._targets), seer.MAX_PENDING_FLOWS)
        (f,) = self.seer.findings_for(response("f0", AWS.encode()))
        self.assertEqual(f.target, "")  # evicted, oldest first


class ManifestTest(unittest.TestCase):
    def test_manifest_matches_the_script(self):
        with open(os.path.join(PLUGIN_DIR, "manifest.json")) as f:
            m = json.load(f)
        self.assertEqual(m["name"], "seer")
        self.assertEqual(m["command"], "/usr/bin/python3")
        self.assertEqual(m["args"], ["seer.py"])
        self.assertEqual(set(m["capabilities"]), {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"})
        self.assertEqual(m["subscriptions"], ["FLOW_REQUEST", "FLOW_RESPONSE"])
        self.assertTrue(os.path.exists(os.path.join(PLUGIN_DIR, m["args"][0])))

    @unittest.skipUnless(os.environ.get("OXG_CTL"), "OXG_CTL (path of 0xgenctl) not set")
    def test_0xgenctl_validates_it(self):
        out = subprocess.run([os.environ["OXG_CTL"], "plugin", "validate",
                              os.path.join(PLUGIN_DIR, "manifest.json")],
                             capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("ok:", out.stdout)


class _Bus(plugin_bus_pb2_grpc.PluginBusServicer):
    def __init__(self):
        self.grants = []
        self.received = queue.Queue()
        self.outgoing = queue.Queue()

    def GrantCapabilities(self, request, context):
        self.grants.append(request)
        return plugin_bus_pb2.PluginCapabilityGrant(capability_token="cap")

    def EventStream(self, request_iterator, context):
        def read():
            for event in request_iterator:
                self.received.put(event)
            self.outgoing.put(None)
        threading.Thread(target=read, daemon=True).start()
        yield plugin_bus_pb2.HostEvent(core_version="test")
        while context.is_active():
            try:
                item = self.outgoing.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item


class SeerProcessTest(unittest.TestCase):
    def test_runs_against_a_bus_and_stops_on_sigterm(self):
        bus = _Bus()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        plugin_bus_pb2_grpc.add_PluginBusServicer_to_server(bus, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        env = dict(os.environ, OXG_BUS_ADDR=f"127.0.0.1:{port}", OXG_AUTH_TOKEN="t0ken",
                   OXG_PLUGIN_NAME="seer", OXG_PLUGIN_CONFIG='{"disable": []}')
        proc = subprocess.Popen(["/usr/bin/python3", "-B", "seer.py"], cwd=PLUGIN_DIR, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def cleanup():
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT)
            proc.stderr.close()
        self.addCleanup(cleanup)

        hello = bus.received.get(timeout=WAIT)
        self.assertEqual(hello.hello.plugin_name, "seer")
        self.assertEqual(list(hello.hello.subscriptions), ["FLOW_REQUEST", "FLOW_RESPONSE"])
        tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        bus.outgoing.put(plugin_bus_pb2.HostEvent(flow_event=common_pb2.FlowEvent(
            type=common_pb2.FlowEvent.FLOW_REQUEST, flow_id="F1",
            data=b"GET /cfg HTTP/1.1\r\nHost: app.example\r\n\r\n")))
        bus.outgoing.put(plugin_bus_pb2.HostEvent(flow_event=common_pb2.FlowEvent(
            type=common_pb2.FlowEvent.FLOW_RESPONSE, flow_id="F1", traceparent=tp,
            data=b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + AWS.encode())))
        event = bus.received.get(timeout=WAIT)
        self.assertEqual(event.WhichOneof("event"), "finding")
        self.assertEqual(event.traceparent, tp)
        self.assertEqual(event.finding.flow_id, "F1")
        self.assertEqual(event.finding.target, "https://app.example/cfg")
        self.assertEqual(event.finding.metadata["kind"], "aws_access_key_id")

        proc.send_signal(signal.SIGTERM)
        bye = bus.received.get(timeout=WAIT)
        self.assertEqual(bye.goodbye.reason, "SIGTERM")
        self.assertEqual(proc.wait(WAIT), 0)
        self.assertIn("connected to 0xgend test", proc.stderr.read().decode())


if __name__ == "__main__":
    unittest.main()
