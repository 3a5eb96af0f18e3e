#!/usr/bin/python3
"""The plugin supervisor inside a real 0xgend (issue 6).

- The bundled plugins, as a new user runs them: 0xgend with ./plugins supervised, curl through
  the proxy to a local page without security headers, and a passive-headers finding appears.
- Misbehaving plugins (build/bin/misbehave): crashing at start, allocating without bound,
  spinning, ignoring SIGTERM, forking without bound, flooding stdout, exiting 0. Each is
  classified, restarted or not by its policy, and the daemon stays healthy with its own limits
  unchanged.
- After SIGTERM no process of any plugin's process group is alive.
- No plugin's environment or command line holds the token.
"""

import http.server
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oxg_integration as it  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "supervisor-test-token-0123456789abcdef"
WAIT = 30.0


def wait_until(predicate, timeout=WAIT, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.0fs" % (what, timeout))
        time.sleep(interval)


def proc_stat(pid):
    """(ppid, pgid) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[2])


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_of(pid):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] == pid:
            out.append(p)
    return out


def members_of_groups(pgids):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[1] in pgids:
            out.append(p)
    return out


def read_limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        return f.read()


def write_manifest(plugins_dir, name, command, args=(), limits=None, restart="on-failure",
                   capabilities=("CAP_FLOW_INSPECT",), subscriptions=("FLOW_REQUEST",)):
    d = os.path.join(plugins_dir, name)
    os.makedirs(d, exist_ok=True)
    m = {"name": name, "version": "1", "command": command, "args": list(args),
         "capabilities": list(capabilities), "subscriptions": list(subscriptions),
         "restart": restart}
    if limits:
        m["limits"] = limits
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)


class Page(http.server.BaseHTTPRequestHandler):
    """An HTML page with none of the security headers, and a verbose Server banner."""
    server_version = "Apache/2.4.41 (Ubuntu)"
    sys_version = ""

    def do_GET(self):
        body = b"<html><head><title>t</title></head><body>hello</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class SupervisorCase(it.IntegrationCase):
    def metrics(self, port):
        _, text, _ = it.http_get("http://127.0.0.1:%d/metrics" % port)
        return it.parse_metrics(text)

    def metric(self, port, name, **labels):
        return sum(v for n, l, v in self.metrics(port)
                   if n == name and all(l.get(k) == x for k, x in labels.items()))

    def audit(self, data):
        path = os.path.join(data, "audit.jsonl")
        if not os.path.exists(path):
            return []
        return [dict(e) for e in it.read_audit(path)]

    def start_supervised(self, plugins_dir, extra=()):
        data = os.path.join(self.tmp, "data")
        proc, mport = self.start_daemon(["--token", TOKEN, "--plugins-dir", plugins_dir,
                                         "--plugin-restart-backoff", "0.05",
                                         "--plugin-stop-grace", "1"] + list(extra),
                                        data_dir=data)
        return proc, mport, data

    def stop_and_check_no_plugin_left(self, proc, pgids):
        it.send_signal(proc, signal.SIGTERM)
        self.assertEqual(proc.wait(30), 0, proc.stderr)
        left = members_of_groups(pgids)
        self.assertEqual(left, [], "plugin processes left after SIGTERM: %s" % left)


class BundledPluginsTest(SupervisorCase):
    def test_make_run_flow_curl_a_page_and_a_finding_appears(self):
        """As the README says: 0xgend supervises ./plugins; a page without security headers,
        fetched through the proxy, gives a passive-headers finding."""
        if not os.access(os.path.join(REPO, "build", "bin", "oxg-passive-headers"), os.X_OK):
            self.skipTest("passive-headers is not built in <repo>/build")
        page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=page.serve_forever, daemon=True).start()
        self.addCleanup(page.shutdown)
        proc, mport, data = self.start_supervised(os.path.join(REPO, "plugins"))
        for name in ("passive-headers", "seer", "example-hello"):
            proc.wait_for_stderr(r"plugin %s connected" % re.escape(name), WAIT)
        daemon_pid = proc.popen.pid
        pgids = set(children_of(daemon_pid))
        self.assertGreaterEqual(len(pgids), 3)
        for pid in pgids:  # each plugin leads its own process group
            self.assertEqual(proc_stat(pid)[1], pid)

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({
            "http": "http://" + proc.wait_for_stderr(r"proxy listening on (\S+)").group(1)}))
        url = "http://127.0.0.1:%d/" % page.server_address[1]
        with opener.open(url, timeout=10) as r:
            self.assertEqual(r.status, 200)

        findings_path = os.path.join(data, "findings.jsonl")

        def findings():
            if not os.path.exists(findings_path):
                return []
            with open(findings_path) as f:
                return [json.loads(l) for l in f if l.strip()]
        wait_until(lambda: any(f["plugin"] == "passive-headers" and
                               f["type"] == "missing-security-header" for f in findings()),
                   what="a passive-headers finding")
        types = {(f["plugin"], f["type"]) for f in findings()}
        self.assertIn(("passive-headers", "verbose-server-banner"), types)
        self.assertIn(("example-hello", "hello"), types)
        for f in findings():
            self.assertEqual(f["target"].split("/")[2], "127.0.0.1:%d" % page.server_address[1])
            self.assertRegex(f["trace_id"], r"^([0-9a-f]{32})?$")

        # The token is in no plugin's environment or command line.
        for pid in members_of_groups(pgids):
            for what in ("environ", "cmdline"):
                with open("/proc/%d/%s" % (pid, what), "rb") as f:
                    self.assertNotIn(TOKEN.encode(), f.read(), "%s of %d" % (what, pid))

        self.stop_and_check_no_plugin_left(proc, pgids)
        # Each plugin was asked to leave on its stream and did.
        leaving = {e["plugin_id"]: e["reason"] for e in self.audit(data)
                   if e["event_type"] == "plugin_disconnect"}
        for name in ("passive-headers", "seer", "example-hello"):
            self.assertTrue(leaving.get(name, "").startswith("goodbye"), leaving)
            # ... on the daemon's goodbye, before any signal.
            self.assertNotIn("SIGTERM", leaving[name])


class MisbehavingPluginsTest(SupervisorCase):
    def setUp(self):
        super().setUp()
        self.misbehave = it.binary("misbehave")
        if not os.access(self.misbehave, os.X_OK):
            self.skipTest("misbehave is not built")

    def test_each_misbehaviour_is_classified_and_the_daemon_stays_healthy(self):
        plugins = os.path.join(self.tmp, "plugins")
        mb = self.misbehave
        write_manifest(plugins, "crasher", mb, ["crash"], restart="on-failure")
        write_manifest(plugins, "hog", mb, ["alloc"], limits={"memory_bytes": 64 << 20},
                       restart="never")
        write_manifest(plugins, "spinner", mb, ["spin"], limits={"cpu_seconds": 1},
                       restart="never")
        write_manifest(plugins, "stubborn", mb, ["ignore-term"], restart="never")
        write_manifest(plugins, "forker", mb, ["fork-bomb"], limits={"processes": 8},
                       restart="never")
        write_manifest(plugins, "flooder", mb, ["flood"], restart="never")
        write_manifest(plugins, "once", mb, ["exit0"], restart="on-failure")
        write_manifest(plugins, "again", mb, ["exit0"], restart="always")
        proc, mport, data = self.start_supervised(plugins)
        daemon_pid = proc.popen.pid
        limits_before = read_limits(daemon_pid)

        seen_groups = set()

        def restarts(name, reason=None):
            labels = {"plugin": name}
            if reason:
                labels["reason"] = reason
            return self.metric(mport, "oxg_plugin_restarts_total", **labels)

        def terminations(name):
            return [dict(e.get("metadata", {})).get("termination") for e in self.audit(data)
                    if e["event_type"] == "plugin_restart" and e.get("plugin_id") == name]

        def ended(name, how):
            return re.search(r"plugin %s ended: %s" % (name, how), proc.stderr)

        def settled():
            seen_groups.update(children_of(daemon_pid))
            return (re.search(r"plugin crasher is crash-looping", proc.stderr) and
                    ended("hog", "memory_limit") and
                    ended("spinner", "cpu_limit") and
                    ended("forker", r"crash \(signal 9\)") and
                    ended("once", r"exit \(code 0\)") and
                    restarts("again", "exit") >= 2)
        wait_until(settled, 60, "every misbehaving plugin to be classified")

        # Crash at start: restarted with backoff until the crash loop cut-off, then left alone.
        self.assertGreaterEqual(restarts("crasher", "crash"), 4)
        crash_loop = [e for e in self.audit(data) if e["event_type"] == "plugin_restart" and
                      e.get("plugin_id") == "crasher" and e["decision"] == "deny"]
        self.assertEqual(len(crash_loop), 1, crash_loop)
        # exit 0: on-failure does not restart, always does.
        self.assertEqual(restarts("once"), 0)
        self.assertEqual(terminations("once"), [])
        self.assertEqual(set(terminations("crasher")), {"crash"})
        self.assertEqual(set(terminations("again")), {"exit"})
        # The flood is bounded in the operational log.
        flood_lines = len(re.findall(r"flooder", proc.stderr))
        self.assertLess(flood_lines, 2000, "stdout flood reached the log unbounded")
        self.assertRegex(proc.stderr, r"lines dropped")
        # Healthy, limits unchanged, still serving.
        status, body, _ = it.http_get("http://127.0.0.1:%d/healthz" % mport)
        self.assertEqual(status, 200, body)
        self.assertEqual(read_limits(daemon_pid), limits_before)

        # The stubborn one ignores SIGTERM: killed after the grace period; nothing is left.
        seen_groups.update(children_of(daemon_pid))
        started = time.monotonic()
        self.stop_and_check_no_plugin_left(proc, seen_groups)
        self.assertLess(time.monotonic() - started, 15)


if __name__ == "__main__":
    it.main()
