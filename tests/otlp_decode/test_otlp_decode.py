"""0xgen's OTLP trace bodies, decoded by the OpenTelemetry project's own decoder.

otlp_encode_fixture records a batch of spans and writes the protobuf and JSON bodies plus
expected.json (the recording, described straight from the span data). decode_otlp.js decodes each
body with @opentelemetry/otlp-transformer's generated OTLP code (installed by install-deps, the
ctest fixture in front of this test) and prints the same description. Names, ids, parent links,
kinds, attributes, events, status, scope and resource must all match.

Environment (set by CMakeLists.txt): OXG_OTLP_ENCODE_FIXTURE, OXG_NODE, OXG_OTLP_DECODER.
"""

import json
import os
import subprocess
import tempfile
import unittest

FIXTURE = os.environ.get("OXG_OTLP_ENCODE_FIXTURE", "")
NODE = os.environ.get("OXG_NODE", "node")
DECODER = os.environ.get("OXG_OTLP_DECODER", "")
TIMEOUT_S = 30


def run(args):
    return subprocess.run(args, capture_output=True, timeout=TIMEOUT_S, check=False)


class OtlpDecodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not FIXTURE or not DECODER:
            raise RuntimeError("run through ctest: OXG_OTLP_ENCODE_FIXTURE and OXG_OTLP_DECODER "
                               "are not set")
        cls.tmp = tempfile.TemporaryDirectory(prefix="otlp_decode.")
        cls.dir = cls.tmp.name
        out = run([FIXTURE, cls.dir])
        if out.returncode != 0:
            raise RuntimeError("otlp_encode_fixture failed: %s" % out.stderr.decode())
        with open(os.path.join(cls.dir, "expected.json"), encoding="utf-8") as f:
            cls.expected = json.load(f)
        with open(os.path.join(cls.dir, "body.pb"), "rb") as f:
            cls.pb = f.read()
        with open(os.path.join(cls.dir, "body.json"), "rb") as f:
            cls.json_body = f.read()
        cls.decoded = {fmt: cls.decode_file(fmt, name)
                       for fmt, name in (("protobuf", "body.pb"), ("json", "body.json"))}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def decode_file(cls, fmt, name):
        out = run([NODE, DECODER, fmt, os.path.join(cls.dir, name)])
        if out.returncode != 0:
            raise AssertionError("decoder rejected the %s body: %s" % (fmt, out.stderr.decode()))
        return json.loads(out.stdout)

    def decode_bytes(self, fmt, data):
        path = os.path.join(self.dir, "mutated." + fmt)
        with open(path, "wb") as f:
            f.write(data)
        return run([NODE, DECODER, fmt, path])

    def spans(self, doc):
        return doc["resourceSpans"][0]["scopeSpans"][0]["spans"]

    # -- what was recorded comes back, through either encoding --------------------------------

    def test_decoder_is_the_opentelemetry_package(self):
        for fmt, doc in self.decoded.items():
            self.assertTrue(doc["decoder"].startswith("@opentelemetry/otlp-transformer@"), fmt)

    def test_everything_recorded_matches(self):
        for fmt, doc in self.decoded.items():
            with self.subTest(encoding=fmt):
                got = dict(doc)
                del got["decoder"]
                self.assertEqual(got, self.expected)

    def test_structure(self):
        for fmt, doc in self.decoded.items():
            with self.subTest(encoding=fmt):
                self.assertEqual(len(doc["resourceSpans"]), 1)
                self.assertEqual(len(doc["resourceSpans"][0]["scopeSpans"]), 1)
                self.assertEqual(doc["resourceSpans"][0]["scopeSpans"][0]["scope"],
                                 {"name": "0xgen", "version": "0.1.0"})
                self.assertEqual(len(self.spans(doc)), 8)

    def test_parent_links_form_the_recorded_tree(self):
        want = {
            "proxy.capture_flow": None,
            "proxy.publish_flow_event": "proxy.capture_flow",
            "plugin_bus.dispatch_flow": "proxy.publish_flow_event",
            "plugin_bus.dispatch_event": "plugin_bus.dispatch_flow",
            "plugin_bus.receive_event": "plugin_bus.dispatch_event",
            "netgate.http_request": "plugin_bus.receive_event",
            "netgate.rate_limit_wait": "netgate.http_request",
            "replay.load_flows": None,
        }
        for fmt, doc in self.decoded.items():
            with self.subTest(encoding=fmt):
                spans = self.spans(doc)
                by_id = {s["spanId"]: s for s in spans}
                got = {}
                for s in spans:
                    parent = by_id.get(s["parentSpanId"]) if s["parentSpanId"] else None
                    if parent is not None:
                        self.assertEqual(parent["traceId"], s["traceId"], s["name"])
                    got[s["name"]] = parent["name"] if parent else None
                self.assertEqual(got, want)
                self.assertEqual(len({s["traceId"] for s in spans}), 2)

    def test_kinds_by_the_official_enum_names(self):
        want = {
            "proxy.capture_flow": "SPAN_KIND_SERVER",
            "plugin_bus.dispatch_event": "SPAN_KIND_PRODUCER",
            "plugin_bus.receive_event": "SPAN_KIND_CONSUMER",
            "netgate.http_request": "SPAN_KIND_CLIENT",
            "netgate.rate_limit_wait": "SPAN_KIND_INTERNAL",
        }
        for fmt, doc in self.decoded.items():
            with self.subTest(encoding=fmt):
                got = {s["name"]: s["kindName"] for s in self.spans(doc) if s["name"] in want}
                self.assertEqual(got, want)

    def test_status_and_attribute_types(self):
        for fmt, doc in self.decoded.items():
            with self.subTest(encoding=fmt):
                spans = {s["name"]: s for s in self.spans(doc)}
                self.assertEqual(spans["netgate.http_request"]["status"],
                                 {"code": 2, "codeName": "STATUS_CODE_ERROR",
                                  "message": "upstream refused: connection refused"})
                self.assertEqual(spans["proxy.capture_flow"]["status"]["codeName"],
                                 "STATUS_CODE_OK")
                attrs = {a["key"]: (a["type"], a["value"])
                         for a in spans["replay.load_flows"]["attributes"]}
                self.assertEqual(attrs["oxg.record.count"], ("int", "9007199254740993"))
                self.assertEqual(attrs["oxg.min"], ("int", "-9223372036854775808"))
                self.assertEqual(attrs["oxg.ratio"], ("double", -0.125))
                self.assertEqual(attrs["oxg.partial"], ("bool", False))
                self.assertEqual(attrs["oxg.path"][1],
                                 "/data/caf\u00e9 \u2615/flows \"1\".jsonl\t\\")
                resource = {a["key"]: a["value"]
                            for a in doc["resourceSpans"][0]["resource"]["attributes"]}
                self.assertEqual(resource["service.name"], "0xgend")
                self.assertEqual(resource["process.pid"], "4242")

    # -- the OTLP/JSON specifics, on the raw body ----------------------------------------------

    def test_json_body_form(self):
        body = json.loads(self.json_body)
        spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for s in spans:
            self.assertRegex(s["traceId"], r"^[0-9a-f]{32}$")
            self.assertRegex(s["spanId"], r"^[0-9a-f]{16}$")
            self.assertIsInstance(s["kind"], int)
            self.assertIsInstance(s["startTimeUnixNano"], str)
            self.assertIsInstance(s["status"]["code"], int)
        roots = [s for s in spans if s["name"] in ("proxy.capture_flow", "replay.load_flows")]
        self.assertEqual(len(roots), 2)
        for root in roots:
            self.assertNotIn("parentSpanId", root)

    # -- the decoder does judge: broken bodies are refused --------------------------------------

    def test_decoder_refuses_a_truncated_protobuf_body(self):
        out = self.decode_bytes("protobuf", self.pb[:-7])
        self.assertNotEqual(out.returncode, 0, out.stdout)

    def test_decoder_refuses_an_unknown_protobuf_field(self):
        # Field 99, varint 1, appended at the top level: well-formed protobuf, not OTLP.
        out = self.decode_bytes("protobuf", self.pb + bytes([0x98, 0x06, 0x01]))
        self.assertNotEqual(out.returncode, 0, out.stdout)
        self.assertIn(b"unknown field", out.stderr)

    def test_decoder_refuses_json_that_is_not_otlp_json(self):
        text = self.json_body.decode()
        first_span = json.loads(text)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        mutations = {
            "unknown key": text.replace('"parentSpanId"', '"parent_span_id"', 1),
            "snake_case key": text.replace('"startTimeUnixNano"', '"start_time_unix_nano"', 1),
            "kind by name": text.replace('"kind":2', '"kind":"SPAN_KIND_SERVER"', 1),
            "int64 as a number": text.replace('"intValue":"4242"', '"intValue":4242', 1),
            "upper-case hex id": text.replace(first_span["traceId"],
                                              first_span["traceId"].upper(), 1),
            "base64 id": text.replace(first_span["spanId"], "ERERERERERE=", 1),
        }
        for what, mutated in mutations.items():
            with self.subTest(mutation=what):
                self.assertNotEqual(mutated, text, "mutation did not apply")
                out = self.decode_bytes("json", mutated.encode())
                self.assertNotEqual(out.returncode, 0, out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
