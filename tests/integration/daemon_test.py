"""0xgend as a running process: data dir, token, metrics endpoint, audit log, signals."""

import json
import os
import re
import socket
import stat

import oxg_integration as it

SHUTDOWN_TIMEOUT = 15.0


class StartupFailureTest(it.IntegrationCase):
    def test_data_dir_under_a_regular_file(self):
        # Tests run as root, which ignores directory permissions; a path below a regular file
        # cannot be created by anyone.
        blocker = os.path.join(self.tmp, "blocker")
        with open(blocker, "w") as f:
            f.write("not a directory")
        data = os.path.join(blocker, "sub")
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", data,
                                                 "--metrics-addr", "127.0.0.1:0"])
        self.assertEqual(rc, 2, err)
        self.assertIn(data, err)
        self.assertIn("--data-dir", err)

    def test_data_dir_is_a_file(self):
        blocker = os.path.join(self.tmp, "blocker")
        with open(blocker, "w") as f:
            f.write("x")
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", blocker,
                                                 "--metrics-addr", "127.0.0.1:0"])
        self.assertEqual(rc, 2, err)
        self.assertIn(blocker, err)

    def test_broken_ca_key_names_the_file(self):
        data = os.path.join(self.tmp, "data")
        os.makedirs(data)
        with open(os.path.join(data, "ca.pem"), "w") as f:
            f.write("not a certificate")
        with open(os.path.join(data, "ca-key.pem"), "w") as f:
            f.write("not a key")
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", data,
                                                 "--metrics-addr", "127.0.0.1:0"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--proxy-ca-", err)
        self.assertIn(data, err)

    def test_metrics_port_in_use(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        addr = "127.0.0.1:%d" % sock.getsockname()[1]
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", os.path.join(self.tmp, "d"),
                                                 "--metrics-addr", addr])
        self.assertEqual(rc, 2, err)
        self.assertIn(addr, err)
        self.assertIn("--metrics-addr", err)

    def test_audit_log_cannot_be_opened(self):
        path = os.path.join(self.tmp, "missing-dir", "audit.jsonl")
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", os.path.join(self.tmp, "d"),
                                                 "--metrics-addr", "127.0.0.1:0",
                                                 "--audit-log", path])
        self.assertEqual(rc, 2, err)
        self.assertIn(path, err)

    def test_empty_token_file(self):
        data = os.path.join(self.tmp, "d")
        os.makedirs(data, mode=0o700)
        open(os.path.join(data, "token"), "w").close()
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", data,
                                                 "--metrics-addr", "127.0.0.1:0"])
        self.assertEqual(rc, 2, err)
        self.assertIn(os.path.join(data, "token"), err)


class RunningDaemonTest(it.IntegrationCase):
    def stop(self, proc, sig=it.SIGTERM):
        it.send_signal(proc, sig)
        return proc.wait(SHUTDOWN_TIMEOUT)

    def test_metrics_and_health_endpoints(self):
        proc, port = self.start_daemon()
        status, body, headers = it.http_get("http://127.0.0.1:%d/metrics" % port)
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/plain"), headers)
        helps = set(re.findall(r"^# HELP (\S+) ", body, re.M))
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
        for family in ["oxg_build_info", "oxg_audit_events_total", "oxg_audit_write_errors_total",
                       "process_cpu_seconds_total", "process_resident_memory_bytes",
                       "process_open_fds", "process_start_time_seconds"]:
            self.assertIn(family, types, body)
            self.assertIn(family, helps, body)
        self.assertEqual(set(types), helps)
        self.assertEqual(types["oxg_audit_events_total"], "counter")
        self.assertRegex(body, r'oxg_build_info\{version="[^"]+",revision="[^"]+"\} 1')
        # The two startup audit events were counted.
        self.assertRegex(
            body, r'oxg_audit_events_total\{event_type="config_loaded",decision="info"\} 1')
        # Legacy aliases are on by default.
        self.assertIn("# TYPE glyph_build_info gauge", body)

        status, body, _ = it.http_get("http://127.0.0.1:%d/healthz" % port)
        self.assertEqual(status, 200)
        self.assertEqual(body.strip(), "ok")
        self.assertEqual(self.stop(proc), 0)

    def test_legacy_aliases_can_be_disabled(self):
        proc, port = self.start_daemon(["--metrics-legacy-aliases=false"])
        _, body, _ = it.http_get("http://127.0.0.1:%d/metrics" % port)
        self.assertIn("oxg_build_info", body)
        self.assertNotIn("glyph_", body)
        self.assertEqual(self.stop(proc), 0)

    def test_sigint_exits_0(self):
        proc, _ = self.start_daemon()
        self.assertEqual(self.stop(proc, it.SIGINT), 0)
        self.assertIn("received SIGINT", proc.stderr)

    def test_sigterm_exits_0(self):
        proc, _ = self.start_daemon()
        self.assertEqual(self.stop(proc, it.SIGTERM), 0)
        self.assertIn("received SIGTERM", proc.stderr)

    def test_metrics_disabled(self):
        data = os.path.join(self.tmp, "data")
        proc = self.start("0xgend", ["--data-dir", data, "--metrics-addr=",
                                      "--proxy-addr", "127.0.0.1:0"])
        proc.wait_for_stderr(r"metrics endpoint disabled")
        proc.wait_for_stderr(r"running; stop with")
        self.assertEqual(self.stop(proc), 0)

    def test_env_fallback_and_flag_wins(self):
        data = os.path.join(self.tmp, "data")
        proc = self.start("0xgend", ["--data-dir", data, "--proxy-addr", "127.0.0.1:0"],
                          env=it.clean_env(OXG_METRICS_ADDR="127.0.0.1:0"))
        m = proc.wait_for_stderr(r"metrics listening on 127\.0\.0\.1:(\d+)")
        status, _, _ = it.http_get("http://127.0.0.1:%s/healthz" % m.group(1))
        self.assertEqual(status, 200)
        self.assertEqual(self.stop(proc), 0)

        # A broken variable does not matter when the flag is given.
        proc = self.start("0xgend", ["--data-dir", data, "--metrics-addr", "127.0.0.1:0",
                                     "--proxy-addr", "127.0.0.1:0"],
                          env=it.clean_env(OXG_METRICS_ADDR="not-an-address"))
        proc.wait_for_stderr(r"metrics listening on 127\.0\.0\.1:\d+")
        self.assertEqual(self.stop(proc), 0)

    def test_interception_ca_generated_then_reused(self):
        data = os.path.join(self.tmp, "data")
        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(self.stop(proc), 0)
        cert, key = os.path.join(data, "ca.pem"), os.path.join(data, "ca-key.pem")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        with open(cert) as f:
            first = f.read()
        self.assertTrue(first.startswith("-----BEGIN CERTIFICATE-----"), first)
        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(self.stop(proc), 0)
        with open(cert) as f:
            self.assertEqual(f.read(), first)

    def test_data_dir_created_0700(self):
        data = os.path.join(self.tmp, "nested", "data")
        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(stat.S_IMODE(os.stat(data).st_mode), 0o700)
        self.assertEqual(self.stop(proc), 0)

    def test_token_generated_reused_and_never_leaked(self):
        data = os.path.join(self.tmp, "data")
        proc, _ = self.start_daemon(data_dir=data)
        token_path = os.path.join(data, "token")
        self.assertEqual(stat.S_IMODE(os.stat(token_path).st_mode), 0o600)
        with open(token_path) as f:
            token = f.read()
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        self.assertEqual(self.stop(proc), 0)
        first_stderr = proc.stderr

        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(self.stop(proc), 0)
        with open(token_path) as f:
            self.assertEqual(f.read(), token)

        with open(os.path.join(data, "audit.jsonl")) as f:
            audit = f.read()
        for text in (first_stderr, proc.stderr, proc.stdout, audit):
            self.assertNotIn(token, text)
        sources = [dict(e)["metadata"] for e in it.read_audit(os.path.join(data, "audit.jsonl"))
                   if dict(e)["event_type"] == "config_loaded"]
        self.assertEqual([dict(m)["plugin-key-source"] for m in sources], ["generated", "file"])

    def test_token_file_mode_tightened(self):
        data = os.path.join(self.tmp, "data")
        os.makedirs(data, mode=0o700)
        token_path = os.path.join(data, "token")
        with open(token_path, "w") as f:
            f.write("operator-chosen-token-0123456789\n")
        os.chmod(token_path, 0o644)
        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(stat.S_IMODE(os.stat(token_path).st_mode), 0o600)
        self.assertEqual(self.stop(proc), 0)
        self.assertNotIn("operator-chosen-token-0123456789", proc.stderr)

    def test_token_flag_never_leaked(self):
        data = os.path.join(self.tmp, "data")
        secret = "flag-supplied-token-abcdef0123456789"
        proc, _ = self.start_daemon(["--token", secret, "--log-level", "debug"], data_dir=data)
        self.assertEqual(self.stop(proc), 0)
        self.assertFalse(os.path.exists(os.path.join(data, "token")))
        with open(os.path.join(data, "audit.jsonl")) as f:
            self.assertNotIn(secret, f.read())
        self.assertNotIn(secret, proc.stderr)

    def test_audit_log_lines(self):
        data = os.path.join(self.tmp, "data")
        proc, _ = self.start_daemon(data_dir=data)
        self.assertEqual(self.stop(proc), 0)
        path = os.path.join(data, "audit.jsonl")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        events = it.read_audit(path)
        self.assertGreaterEqual(len(events), 3)
        for pairs in events:
            keys = [k for k, _ in pairs]
            # Keys appear in contract order, with the mandatory ones present.
            self.assertEqual(keys, [k for k in it.AUDIT_FIELDS if k in keys])
            self.assertEqual(keys[0], "timestamp")
            for k in ("component", "event_type", "decision"):
                self.assertIn(k, keys)
            e = dict(pairs)
            self.assertRegex(e["timestamp"],
                             r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
            self.assertIn(e["decision"], ("allow", "deny", "info"))
        summary = [(dict(p)["event_type"], dict(p).get("reason")) for p in events]
        self.assertEqual(summary, [("config_loaded", "configuration loaded"),
                                   ("proxy_lifecycle", "started"),
                                   ("proxy_lifecycle", "daemon started"),
                                   ("proxy_lifecycle", "stopped"),
                                   ("proxy_lifecycle", "daemon stopped")])
        components = [dict(p)["component"] for p in events]
        self.assertEqual(components, ["daemon", "proxy", "daemon", "proxy", "daemon"])

    def test_audit_log_to_stdout(self):
        proc, _ = self.start_daemon(["--audit-log", "-"])
        self.assertEqual(self.stop(proc), 0)
        lines = [l for l in proc.stdout.splitlines() if l.strip()]
        self.assertEqual(len(lines), 5, proc.stdout)
        for line in lines:
            json.loads(line)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "data", "audit.jsonl")))


if __name__ == "__main__":
    it.main()
