"""Text 0.0.4 exposition against promtool and prometheus_client's text parser (contract §3)."""

import gzip
import math
import os
import signal
import subprocess
import unittest

from prometheus_client.parser import text_string_to_metric_families

import oxg_e2e as e2e


def samples_by_name(families):
    out = {}
    for fam in families:
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


class TextExpositionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.fixture = e2e.Fixture()
        cls.addClassCleanup(cls.fixture.stop_and_check)
        cls.status, cls.headers, cls.body = e2e.fetch(cls.fixture.base_url + "/metrics",
                                                      {"Accept": "text/plain"})
        cls.text = cls.body.decode("utf-8")

    def test_content_type(self):
        self.assertEqual(self.status, 200)
        self.assertEqual(self.headers["Content-Type"], e2e.TEXT_CONTENT_TYPE)
        self.assertIsNone(self.headers["Content-Encoding"])

    def test_no_accept_header_gets_text(self):
        status, headers, body = e2e.fetch(self.fixture.base_url + "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], e2e.TEXT_CONTENT_TYPE)
        self.assertNotIn(b"# EOF", body)

    def test_text_preferred_by_q_value_gets_text(self):
        status, headers, _ = e2e.fetch(
            self.fixture.base_url + "/metrics",
            {"Accept": "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.9"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], e2e.TEXT_CONTENT_TYPE)

    def test_promtool_check_metrics_is_clean(self):
        self.assertTrue(os.access(e2e.PROMTOOL, os.X_OK), f"promtool not found at {e2e.PROMTOOL}")
        res = subprocess.run([e2e.PROMTOOL, "check", "metrics"], input=self.body,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = res.stdout.decode("utf-8", "replace")
        self.assertEqual(res.returncode, 0, f"promtool failed:\n{out}\n--- input ---\n{self.text}")
        self.assertEqual(out, "", f"promtool reported lint:\n{out}")

    def test_promtool_check_metrics_gzip_body(self):
        status, headers, body = e2e.fetch(self.fixture.base_url + "/metrics",
                                          {"Accept": "text/plain", "Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], e2e.TEXT_CONTENT_TYPE)
        self.assertEqual(headers["Content-Encoding"], "gzip")
        plain = gzip.decompress(body)
        res = subprocess.run([e2e.PROMTOOL, "check", "metrics"], input=plain,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual((res.returncode, res.stdout), (0, b""))

    def test_no_exemplars_unit_or_eof(self):
        for line in self.text.split("\n"):
            if line.startswith("#"):
                self.assertRegex(line, r"^# (HELP|TYPE) ", f"unexpected comment line: {line!r}")
            else:
                self.assertNotIn("#", line, f"exemplar marker in 0.0.4 output: {line!r}")
        self.assertTrue(self.text.endswith("\n"))
        self.assertNotIn("\n\n", self.text)

    def test_every_family_has_help_and_type(self):
        expect = {
            "oxg_proxy_requests_total": "counter",
            "oxg_rpc_duration_seconds": "histogram",
            "oxg_plugin_queue_length": "gauge",
            # Declared and never used.
            "oxg_rpc_errors_total": "counter",
            "oxg_plugin_queue_capacity": "gauge",
            "oxg_trace_export_duration_seconds": "histogram",
            "oxg_active_plugins": "gauge",
            "oxg_proxy_certs_minted_total": "counter",
            "oxg_build_info": "gauge",
            "process_cpu_seconds_total": "counter",
            "process_resident_memory_bytes": "gauge",
            "process_open_fds": "gauge",
            "process_max_fds": "gauge",
            "process_start_time_seconds": "gauge",
        }
        lines = self.text.split("\n")
        for name, typ in expect.items():
            self.assertIn(f"# TYPE {name} {typ}", lines)
            self.assertTrue(any(l.startswith(f"# HELP {name} ") for l in lines), name)
        # Each sample line belongs to a family announced by HELP and TYPE just before.
        typed = {}
        for line in lines:
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ")
                self.assertNotIn(name, typed, f"family listed twice: {name}")
                typed[name] = typ
        self.assertEqual(len([l for l in lines if l.startswith("# HELP ")]), len(typed))

    def test_unlabelled_families_exported_as_zero(self):
        lines = self.text.split("\n")
        self.assertIn("oxg_active_plugins 0", lines)
        self.assertIn("oxg_proxy_certs_minted_total 0", lines)

    def test_label_values_round_trip(self):
        samples = samples_by_name(text_string_to_metric_families(self.text))
        depth = {s.labels["plugin"]: s.value for s in samples["oxg_plugin_queue_length"]}
        self.assertEqual(depth, {v: float(i + 1) for i, v in enumerate(e2e.TRICKY_VALUES)})
        codes = {s.labels["code"]: s.value for s in samples["oxg_proxy_requests_total"]
                 if s.labels["method"] == "GET"}
        for v in e2e.TRICKY_VALUES:
            self.assertEqual(codes.get(v), 1.0, f"code={v!r}")
        self.assertEqual(codes.get("200"), 3.0)

    def test_histogram_series(self):
        samples = samples_by_name(text_string_to_metric_families(self.text))
        want = {"component": "plugin_bus", "method": "EventStream", "code": "OK"}
        buckets = [s for s in samples["oxg_rpc_duration_seconds_bucket"]
                   if {k: v for k, v in s.labels.items() if k != "le"} == want]
        les = [float(s.labels["le"]) for s in buckets]
        self.assertEqual(les, e2e.DEFAULT_BUCKETS + [math.inf])
        # Observed 0.003, 0.2 (span active), 0.004, 7.
        cumulative = {float(s.labels["le"]): s.value for s in buckets}
        self.assertEqual(cumulative[0.0025], 0)
        self.assertEqual(cumulative[0.005], 2)
        self.assertEqual(cumulative[0.1], 2)
        self.assertEqual(cumulative[0.25], 3)
        self.assertEqual(cumulative[5], 3)
        self.assertEqual(cumulative[10], 4)
        self.assertEqual(cumulative[math.inf], 4)
        count = [s.value for s in samples["oxg_rpc_duration_seconds_count"] if s.labels == want]
        total = [s.value for s in samples["oxg_rpc_duration_seconds_sum"] if s.labels == want]
        self.assertEqual(count, [4])
        self.assertEqual(len(total), 1)
        self.assertAlmostEqual(total[0], 7.207, places=9)

    def test_legacy_aliases(self):
        lines = self.text.split("\n")
        helps = {}
        for line in lines:
            if line.startswith("# HELP "):
                _, _, name, text = line.split(" ", 3)
                helps[name] = text
        oxg = [n for n in helps if n.startswith("oxg_")]
        self.assertGreater(len(oxg), 5)
        for name in oxg:
            alias = "glyph_" + name[len("oxg_"):]
            self.assertEqual(helps.get(alias), f"(DEPRECATED: use {name}) {helps[name]}")
            want = [alias + l[len(name):] for l in lines
                    if l.startswith(name + "{") or l.startswith(name + " ")
                    or l.startswith(name + "_")]
            got = [l for l in lines if l.startswith(alias + "{") or l.startswith(alias + " ")
                   or l.startswith(alias + "_")]
            self.assertEqual(got, want, alias)

    def test_build_info(self):
        samples = samples_by_name(text_string_to_metric_families(self.text))
        info = samples["oxg_build_info"]
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0].value, 1)
        self.assertEqual(set(info[0].labels), {"version", "revision"})
        self.assertTrue(info[0].labels["version"])


class FixtureLifecycleTest(unittest.TestCase):

    def test_exits_zero_on_sigterm(self):
        fixture = e2e.Fixture("--keep-recording")
        try:
            fixture.proc.send_signal(signal.SIGTERM)
            code = fixture.proc.wait(timeout=15)
            self.assertEqual(code, 0, fixture.stderr_text())
        finally:
            pid = fixture.proc.pid
            e2e.stop_process(fixture.proc)
            fixture.close()
            self.assertTrue(e2e.process_gone(pid))


if __name__ == "__main__":
    unittest.main(verbosity=2)
