"""A real Prometheus (Debian's 2.x, exemplar storage on) scrapes the metrics endpoint.

Prometheus runs on a loopback port chosen here, with its own config and TSDB in a temporary
directory; it never touches port 9090 or the system service. Every wait is a bounded poll.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import oxg_e2e as e2e

STARTUP_ATTEMPTS = 3  # a port picked by free_port() can be taken before Prometheus binds it


class PrometheusScrapeTest(unittest.TestCase):

    def setUp(self):
        self.assertTrue(os.access(e2e.PROMETHEUS, os.X_OK),
                        f"prometheus not found at {e2e.PROMETHEUS}")
        self.tmp = tempfile.mkdtemp(prefix="oxg-e2e-prom-")
        self.addCleanup(self._remove_tmp)
        self.fixture = e2e.Fixture("--keep-recording")
        self.addCleanup(self.fixture.stop_and_check)
        self.prom = None
        self.log_path = None
        self._start_prometheus()

    # ---- process management ---------------------------------------------------------------

    def _remove_tmp(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertFalse(os.path.exists(self.tmp))

    def _stop_prometheus(self, proc):
        pid = proc.pid
        code, how = e2e.stop_process(proc, grace=30)
        self.assertTrue(e2e.process_gone(pid), f"prometheus (pid {pid}) still exists")
        self.assertNotEqual(how, "killed", "prometheus ignored SIGTERM for 30 s")

    def _start_prometheus(self):
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: oxg_fixture\n"
                    "    static_configs:\n"
                    f"      - targets: ['{self.fixture.address}']\n")
        for attempt in range(STARTUP_ATTEMPTS):
            self.port = e2e.free_port()
            self.assertNotEqual(self.port, 9090)
            self.api = f"http://127.0.0.1:{self.port}/api/v1"
            self.log_path = os.path.join(self.tmp, f"prometheus-{attempt}.log")
            log = open(self.log_path, "wb")
            try:
                proc = subprocess.Popen(
                    [e2e.PROMETHEUS,
                     f"--config.file={config}",
                     f"--storage.tsdb.path={os.path.join(self.tmp, f'data-{attempt}')}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--enable-feature=exemplar-storage",
                     "--log.level=info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            finally:
                log.close()
            self.addCleanup(self._stop_prometheus, proc)
            self.prom = proc
            if self._wait_ready():
                return
            if proc.poll() is not None and "address already in use" in self.prom_log():
                continue  # lost the race for the port; try another one
            self.fail(f"prometheus did not become ready\n{self.prom_log()}")
        self.fail(f"prometheus could not bind a port in {STARTUP_ATTEMPTS} attempts")

    def _wait_ready(self):
        deadline = e2e.Deadline(60)
        while not deadline.expired():
            if self.prom.poll() is not None:
                return False
            try:
                status, _, _ = e2e.fetch(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                if status == 200:
                    return True
            except OSError:
                pass
            deadline.wait()
        return False

    def prom_log(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no prometheus log)"
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "--- prometheus log ---\n" + f.read()

    # ---- HTTP API -------------------------------------------------------------------------

    def api_get(self, path, **params):
        url = f"{self.api}/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, _, body = e2e.fetch(url)
        self.assertEqual(status, 200, f"{url}: {body[:500]!r}")
        doc = json.loads(body)
        self.assertEqual(doc.get("status"), "success", doc)
        return doc["data"]

    def poll(self, what, seconds, check):
        """Calls check() every 0.25 s until it returns a truthy value or `seconds` pass."""
        deadline = e2e.Deadline(seconds)
        last = None
        while True:
            self.assertIsNone(self.prom.poll(), f"prometheus exited while waiting for {what}")
            last = check()
            if last:
                return last
            if deadline.expired():
                self.fail(f"timed out after {seconds}s waiting for {what}")
            deadline.wait()

    def our_target(self):
        targets = self.api_get("targets", state="active")["activeTargets"]
        for t in targets:
            if t["labels"].get("job") == "oxg_fixture":
                return t
        return None

    # ---- the test -------------------------------------------------------------------------

    def test_scrape_with_exemplars(self):
        try:
            self._scrape_with_exemplars()
        except BaseException:
            print(self.prom_log(), file=sys.stderr)
            print("--- metrics_fixture stderr ---\n" + self.fixture.stderr_text(),
                  file=sys.stderr)
            raise

    def _scrape_with_exemplars(self):
        target = self.poll("the target to be up", 60,
                           lambda: (lambda t: t if t and t["health"] == "up" else None)(
                               self.our_target()))
        self.assertEqual(target["lastError"], "")
        self.assertEqual(target["scrapeUrl"], f"http://{self.fixture.address}/metrics")

        now = time.time()

        def exemplar_of(query):
            data = self.api_get("query_exemplars", query=query, start=f"{now - 300:.3f}",
                                end=f"{now + 300:.3f}")
            for series in data:
                for ex in series.get("exemplars", []):
                    if ex["labels"].get("trace_id") == self.fixture.trace_id:
                        return series, ex
            return None

        # Exemplars exist only in OpenMetrics, so finding one also shows that Prometheus
        # negotiated OpenMetrics and ingested it.
        series, ex = self.poll("a histogram exemplar with the fixture's trace id", 60,
                               lambda: exemplar_of("oxg_rpc_duration_seconds_bucket"))
        self.assertEqual(ex["labels"], {"trace_id": self.fixture.trace_id,
                                        "span_id": self.fixture.span_id})
        labels = series["seriesLabels"]
        self.assertEqual(labels["__name__"], "oxg_rpc_duration_seconds_bucket")
        self.assertEqual((labels["component"], labels["method"], labels["code"]),
                         ("plugin_bus", "EventStream", "OK"))
        # 0.003 s lands in le="0.005", 0.2 s in le="0.25"; nothing else carries this span.
        expected = {"0.005": 0.003, "0.25": 0.2}
        self.assertIn(labels["le"], expected)
        self.assertAlmostEqual(float(ex["value"]), expected[labels["le"]], places=12)
        self.assertLess(abs(float(ex["timestamp"]) - now), 300)

        series, ex = self.poll("a counter exemplar with the fixture's trace id", 60,
                               lambda: exemplar_of("oxg_proxy_requests_total"))
        self.assertEqual(series["seriesLabels"]["__name__"], "oxg_proxy_requests_total")
        self.assertEqual((series["seriesLabels"]["method"], series["seriesLabels"]["code"]),
                         ("GET", "200"))
        self.assertEqual(ex["labels"]["span_id"], self.fixture.span_id)
        self.assertEqual(float(ex["value"]), 1)

        def instant(query):
            result = self.api_get("query", query=query)["result"]
            return result or None

        result = self.poll("oxg_build_info", 30, lambda: instant("oxg_build_info"))
        self.assertEqual(len(result), 1)
        self.assertEqual(result[0]["value"][1], "1")
        self.assertEqual(set(result[0]["metric"]) - {"job", "instance"},
                         {"__name__", "version", "revision"})
        alias = self.poll("glyph_build_info", 30, lambda: instant("glyph_build_info"))
        self.assertEqual(alias[0]["value"][1], "1")

        # Prometheus's own parser reads the escaped label values back exactly. An empty value
        # is the same as no label in Prometheus.
        result = self.poll("oxg_plugin_queue_length", 30,
                           lambda: instant("oxg_plugin_queue_length"))
        got = {r["metric"].get("plugin", ""): float(r["value"][1]) for r in result}
        self.assertEqual(got, {v: float(i + 1) for i, v in enumerate(e2e.TRICKY_VALUES)})

        # Counter samples keep their _total name in storage.
        result = self.poll("oxg_proxy_requests_total", 30,
                           lambda: instant('oxg_proxy_requests_total{method="GET",code="200"}'))
        self.assertGreaterEqual(float(result[0]["value"][1]), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
