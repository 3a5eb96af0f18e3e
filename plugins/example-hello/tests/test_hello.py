"""example-hello: its manifest is valid and matches the script, the script imports without
connecting, and its callback greets each host once."""

import importlib
import json
import os
import subprocess
import sys
import unittest

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PLUGIN_DIR)

from oxg_plugin import Plugin, parse_wire  # noqa: E402


class ManifestTest(unittest.TestCase):
    def test_manifest_matches_the_script(self):
        with open(os.path.join(PLUGIN_DIR, "manifest.json")) as f:
            m = json.load(f)
        self.assertEqual(m["name"], "example-hello")
        self.assertEqual((m["command"], m["args"]), ("/usr/bin/python3", ["hello.py"]))
        self.assertTrue(os.path.exists(os.path.join(PLUGIN_DIR, "hello.py")))
        hello = importlib.import_module("hello")
        self.assertEqual(hello.plugin.capabilities, m["capabilities"])
        self.assertEqual(hello.plugin.subscriptions, m["subscriptions"])

    @unittest.skipUnless(os.environ.get("OXG_CTL"), "OXG_CTL (path of 0xgenctl) not set")
    def test_0xgenctl_validates_it(self):
        out = subprocess.run([os.environ["OXG_CTL"], "plugin", "validate",
                              os.path.join(PLUGIN_DIR, "manifest.json")],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)


class CallbackTest(unittest.TestCase):
    def test_greets_each_host_once(self):
        hello = importlib.import_module("hello")
        self.assertIsInstance(hello.plugin, Plugin)
        emitted = []
        hello.plugin.emit = lambda finding, cause=None: emitted.append((finding, cause)) or True
        hello.plugin.log = lambda text: None
        hello.greeted.clear()
        for target, host in [("/a", "One.example"), ("/b", "one.example"), ("/", "two.example")]:
            msg = parse_wire(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), True)
            hello.hello(msg)
        self.assertEqual([f.message for f, _ in emitted],
                         ["hello from one.example", "hello from two.example"])
        finding, cause = emitted[0]
        self.assertEqual((finding.type, finding.severity), ("hello", "info"))
        self.assertEqual(finding.target, "https://One.example/a")
        self.assertEqual(cause.target, "/a")

    def test_runs_as_a_script_and_fails_cleanly_without_a_token(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXG_")}
        out = subprocess.run(["/usr/bin/python3", "-B", "hello.py"], cwd=PLUGIN_DIR, env=env,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stderr.count("\n"), 1, out.stderr)
        self.assertIn("example-hello: fatal: no auth token", out.stderr)


if __name__ == "__main__":
    unittest.main()
