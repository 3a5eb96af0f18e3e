"""OpenMetrics 1.0 exposition against the strict parser of prometheus_client (contract §3)."""

import concurrent.futures
import gzip
import math
import re
import time
import unittest

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import oxg_e2e as e2e

RPC_OK = {"component": "plugin_bus", "method": "EventStream", "code": "OK"}
# The contract's default buckets as OpenMetrics canonical numbers.
CANONICAL_LE = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]
RPC_DENIED = {"component": "netgate", "method": "Fetch", "code": "PERMISSION_DENIED"}


def parse_strict(text):
    """All families, in order; raises ValueError on any violation of OpenMetrics."""
    return list(text_string_to_metric_families(text))


def without_le(labels):
    return {k: v for k, v in labels.items() if k != "le"}


class OpenMetricsExpositionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.started = time.time()
        cls.fixture = e2e.Fixture()
        cls.addClassCleanup(cls.fixture.stop_and_check)
        cls.status, cls.headers, cls.body = e2e.fetch(cls.fixture.base_url + "/metrics",
                                                      {"Accept": e2e.PROMETHEUS_ACCEPT})
        cls.text = cls.body.decode("utf-8")
        cls.parse_error = None
        try:
            cls.families = parse_strict(cls.text)
        except ValueError as e:
            cls.families = []
            cls.parse_error = str(e)
        cls.by_name = {f.name: f for f in cls.families}

    def family(self, name):
        self.assertIsNone(self.parse_error)
        self.assertIn(name, self.by_name, f"family {name} missing")
        return self.by_name[name]

    def samples(self, name, labels=None):
        out = []
        for fam in self.families:
            for s in fam.samples:
                if s.name == name and (labels is None or s.labels == labels):
                    out.append(s)
        return out

    def buckets(self, family, labels):
        return [s for s in self.samples(family + "_bucket") if without_le(s.labels) == labels]

    # ---- negotiation and framing ----------------------------------------------------------

    def test_content_type(self):
        self.assertEqual(self.status, 200)
        self.assertEqual(self.headers["Content-Type"], e2e.OM_CONTENT_TYPE)

    def test_strict_parser_accepts_everything(self):
        self.assertIsNone(self.parse_error,
                          f"strict OpenMetrics parser: {self.parse_error}\n--- body ---\n"
                          f"{self.text}")
        self.assertGreater(len(self.families), 10)

    def test_ends_with_eof_once(self):
        self.assertTrue(self.text.endswith("\n# EOF\n"), repr(self.text[-40:]))
        self.assertEqual(self.text.count("# EOF"), 1)

    def test_families_are_typed_and_documented(self):
        self.assertIsNone(self.parse_error)
        for fam in self.families:
            self.assertIn(fam.type, ("counter", "gauge", "histogram"), fam.name)
            self.assertTrue(fam.documentation, f"{fam.name} has no HELP")

    def test_openmetrics_header_alone(self):
        status, headers, body = e2e.fetch(
            self.fixture.base_url + "/metrics",
            {"Accept": "application/openmetrics-text; version=1.0.0"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], e2e.OM_CONTENT_TYPE)
        parse_strict(body.decode("utf-8"))

    def test_gzip(self):
        status, headers, body = e2e.fetch(
            self.fixture.base_url + "/metrics",
            {"Accept": e2e.PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], e2e.OM_CONTENT_TYPE)
        self.assertEqual(headers["Content-Encoding"], "gzip")
        self.assertEqual(body[:2], b"\x1f\x8b")
        text = gzip.decompress(body).decode("utf-8")
        self.assertTrue(text.endswith("\n# EOF\n"))
        names = [f.name for f in parse_strict(text)]
        self.assertEqual(names, [f.name for f in self.families])

    def test_healthz(self):
        status, _, body = e2e.fetch(self.fixture.base_url + "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body.strip(), b"ok")

    # ---- families -------------------------------------------------------------------------

    def test_counter_family_named_without_total(self):
        fam = self.family("oxg_proxy_requests")
        self.assertEqual(fam.type, "counter")
        lines = self.text.split("\n")
        self.assertIn("# TYPE oxg_proxy_requests counter", lines)
        self.assertFalse(any(re.match(r"# (TYPE|HELP|UNIT) \S+_total ", l) for l in lines),
                         "a family name ends in _total")
        for name in ("oxg_rpc_errors", "oxg_proxy_certs_minted", "process_cpu_seconds"):
            self.assertEqual(self.family(name).type, "counter", name)
        self.assertEqual([s.value for s in self.samples("oxg_proxy_certs_minted_total")], [0])

    def test_unit_for_unit_suffixed_families(self):
        self.assertIsNone(self.parse_error)
        for fam in self.families:
            for unit in ("seconds", "bytes"):
                if fam.name.endswith("_" + unit):
                    self.assertEqual(fam.unit, unit, f"{fam.name} lacks # UNIT {unit}")
        for name in ("oxg_rpc_duration_seconds", "oxg_trace_export_duration_seconds",
                     "process_cpu_seconds", "process_start_time_seconds"):
            self.assertEqual(self.family(name).unit, "seconds", name)
        self.assertIn("# UNIT oxg_rpc_duration_seconds seconds", self.text.split("\n"))

    def test_empty_families_listed(self):
        for name, typ in (("oxg_rpc_errors", "counter"), ("oxg_plugin_queue_capacity", "gauge"),
                          ("oxg_trace_export_duration_seconds", "histogram")):
            fam = self.family(name)
            self.assertEqual(fam.type, typ)
            self.assertEqual(fam.samples, [], name)
            self.assertIn(f"# HELP {name} ", self.text)

    def test_label_values_round_trip(self):
        depth = {s.labels["plugin"]: s.value for s in self.samples("oxg_plugin_queue_length")}
        self.assertEqual(depth, {v: i + 1 for i, v in enumerate(e2e.TRICKY_VALUES)})
        codes = {s.labels["code"]: s.value for s in self.samples("oxg_proxy_requests_total")
                 if s.labels["method"] == "GET"}
        for v in e2e.TRICKY_VALUES:
            self.assertEqual(codes.get(v), 1, f"code={v!r}")

    def test_help_round_trip(self):
        self.assertEqual(self.family("oxg_plugin_queue_length").documentation,
                         "Depth of each plugin's outbound queue.")

    def test_le_values_are_canonical(self):
        # OpenMetrics 1.0, "Canonical Numbers": le values MUST NOT use arbitrary float rendering;
        # the target is Go's %g with ".0" appended when there is no "." or exponent (the
        # spec's examples: 0.001 0.01 0.1 1.0 10.0 0.0001 1e-05 100000.0 1e+06).
        les = [s.labels["le"] for s in self.buckets("oxg_rpc_duration_seconds", RPC_OK)]
        self.assertEqual(les, CANONICAL_LE)
        for fam in self.families:
            if fam.type == "histogram":
                for s in fam.samples:
                    if s.name.endswith("_bucket"):
                        self.assertIn(s.labels["le"], CANONICAL_LE, f"{s.name} {s.labels}")

    # ---- exemplars ------------------------------------------------------------------------

    def check_span_exemplar(self, ex, value):
        self.assertIsNotNone(ex)
        self.assertEqual(ex.labels, {"trace_id": self.fixture.trace_id,
                                     "span_id": self.fixture.span_id})
        self.assertEqual(ex.value, value)
        self.assertIsNotNone(ex.timestamp, "exemplar without timestamp")
        ts = float(ex.timestamp)
        # Seconds since the epoch, taken while the fixture ran.
        self.assertGreater(ts, self.started - 60)
        self.assertLess(ts, time.time() + 60)

    def test_histogram_exemplar_in_the_bucket_holding_the_value(self):
        buckets = self.buckets("oxg_rpc_duration_seconds", RPC_OK)
        les = [float(s.labels["le"]) for s in buckets]
        self.assertEqual(les, e2e.DEFAULT_BUCKETS + [math.inf])
        by_le = {float(s.labels["le"]): s for s in buckets}
        self.check_span_exemplar(by_le[0.005].exemplar, 0.003)
        self.check_span_exemplar(by_le[0.25].exemplar, 0.2)
        # 0.004 and 7 were observed with no span: no exemplar anywhere else.
        for le, s in by_le.items():
            if le not in (0.005, 0.25):
                self.assertIsNone(s.exemplar, f"unexpected exemplar on le={s.labels['le']}")
        self.assertEqual([by_le[le].value for le in (0.0025, 0.005, 0.25, 10, math.inf)],
                         [0, 2, 3, 4, 4])
        self.assertEqual([s.value for s in self.samples("oxg_rpc_duration_seconds_count",
                                                        RPC_OK)], [4])

    def test_no_exemplars_without_span(self):
        buckets = self.buckets("oxg_rpc_duration_seconds", RPC_DENIED)
        self.assertEqual(len(buckets), len(e2e.DEFAULT_BUCKETS) + 1)
        self.assertTrue(all(s.exemplar is None for s in buckets))
        for s in self.samples("oxg_proxy_requests_total"):
            if s.labels != {"method": "GET", "code": "200"}:
                self.assertIsNone(s.exemplar, s)

    def test_exemplars_only_on_buckets_and_totals(self):
        for fam in self.families:
            for s in fam.samples:
                if s.exemplar is not None:
                    self.assertTrue(s.name.endswith("_bucket") or s.name.endswith("_total"),
                                    s.name)

    def test_counter_exemplar(self):
        (s,) = self.samples("oxg_proxy_requests_total", {"method": "GET", "code": "200"})
        self.assertEqual(s.value, 3)
        self.check_span_exemplar(s.exemplar, 1)

    # ---- legacy aliases -------------------------------------------------------------------

    def test_legacy_aliases(self):
        self.assertIsNone(self.parse_error)
        oxg = [f for f in self.families if f.name.startswith("oxg_")]
        self.assertGreater(len(oxg), 5)
        for fam in oxg:
            alias_name = "glyph_" + fam.name[len("oxg_"):]
            self.assertIn(alias_name, self.by_name, f"no alias for {fam.name}")
            alias = self.by_name[alias_name]
            # The note names what users query: a counter's samples end in _total.
            target = fam.name + "_total" if fam.type == "counter" else fam.name
            self.assertEqual(alias.documentation,
                             f"(DEPRECATED: use {target}) {fam.documentation}")
            self.assertEqual(alias.type, fam.type)
            self.assertEqual(alias.unit, fam.unit)
            self.assertEqual([("glyph_" + s.name[len("oxg_"):], s.labels, s.value)
                              for s in fam.samples],
                             [(s.name, s.labels, s.value) for s in alias.samples])
        for fam in self.families:
            self.assertTrue(fam.name.startswith(("oxg_", "glyph_", "process_")), fam.name)


class ConcurrentScrapeTest(unittest.TestCase):
    """Scrapes in parallel while the fixture keeps recording; every body must stay valid."""

    def setUp(self):
        self.fixture = e2e.Fixture("--keep-recording")
        self.addCleanup(self.fixture.stop_and_check)

    def test_parallel_scrapes_parse(self):
        def scrape(i):
            headers = {"Accept": e2e.PROMETHEUS_ACCEPT}
            if i % 2:
                headers["Accept-Encoding"] = "gzip"
            status, h, body = e2e.fetch(self.fixture.base_url + "/metrics", headers)
            if h["Content-Encoding"] == "gzip":
                body = gzip.decompress(body)
            text = body.decode("utf-8")
            families = parse_strict(text)  # also checks _count == +Inf bucket per series
            return status, h["Content-Type"], len(families)

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(scrape, range(40)))
        self.assertEqual({(r[0], r[1]) for r in results}, {(200, e2e.OM_CONTENT_TYPE)})
        self.assertEqual(len({r[2] for r in results}), 1, results)


if __name__ == "__main__":
    unittest.main(verbosity=2)
