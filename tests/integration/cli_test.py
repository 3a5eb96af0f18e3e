"""Command-line behaviour of 0xgend, glyphd and 0xgenctl: help, version, bad usage."""

import os
import re

import oxg_integration as it

# Every flag of contract §2 with the default text --help must show for it.
CONTRACT_FLAGS = [
    ("--data-dir", "./oxg-data"),
    ("--addr", "127.0.0.1:50051"),
    ("--token", "generated"),
    ("--metrics-addr", ":9090"),
    ("--metrics-legacy-aliases", "true"),
    ("--proxy-addr", "127.0.0.1:8080"),
    ("--proxy-ca-cert", "<data-dir>/ca.pem"),
    ("--proxy-ca-key", "<data-dir>/ca-key.pem"),
    ("--proxy-history", "<data-dir>/proxy_history.jsonl"),
    ("--proxy-flow-log", "<data-dir>/proxy_flows.jsonl"),
    ("--flow-log-raw", "false"),
    ("--flow-sample-rate", "1.0"),
    ("--max-body-kb", "128"),
    ("--scope-policy", "none"),
    ("--plugins-dir", "./plugins if it exists"),
    ("--workers", "number of cores"),
    ("--trace-endpoint", "none"),
    ("--trace-protocol", "http/protobuf"),
    ("--trace-headers", "none"),
    ("--trace-insecure-skip-verify", "false"),
    ("--trace-service-name", "0xgend"),
    ("--trace-sample-ratio", "1.0"),
    ("--trace-file", "none"),
    ("--audit-log", "<data-dir>/audit.jsonl"),
    ("--log-level", "info"),
    ("--crash-dir", "<data-dir>/crash"),
]


def env_name(flag):
    return "OXG_" + flag[2:].replace("-", "_").upper()


class HelpAndVersionTest(it.IntegrationCase):
    def test_help_lists_every_flag_with_default_and_env(self):
        rc, out, err = self.run_to_exit("0xgend", ["--help"])
        self.assertEqual(rc, 0, err)
        entries = {}
        # Split the option list into one chunk per flag.
        for chunk in re.split(r"\n(?=\s{2}-)", out):
            m = re.match(r"\s*(?:-h,)?(--[a-z-]+)", chunk)
            if m:
                entries[m.group(1)] = chunk
        for flag, default in CONTRACT_FLAGS:
            self.assertIn(flag, entries, out)
            self.assertIn("[default: " + default, entries[flag])
            self.assertIn("[env: " + env_name(flag) + "]", entries[flag])

    def test_version(self):
        rc, out, _ = self.run_to_exit("0xgend", ["--version"])
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^0xgend \d+\.\d+\.\d+ \(\S+\)\n$")

    def test_glyphd_alias_runs(self):
        path = it.binary("glyphd")
        self.assertTrue(os.path.islink(path), path)
        self.assertEqual(os.readlink(path), "0xgend")
        rc, out, _ = self.run_to_exit("glyphd", ["--version"])
        self.assertEqual(rc, 0)
        self.assertIn("0xgend", out)
        rc, _, err = self.run_to_exit("glyphd", ["--workers", "0"])
        self.assertEqual(rc, 2)
        self.assertIn("--workers", err)


class BadUsageTest(it.IntegrationCase):
    CASES = [
        (["--metrics-addr", "9090"], "--metrics-addr"),
        (["--metrics-addr", ":99999"], "--metrics-addr"),
        (["--metrics-addr=localhost:http"], "--metrics-addr"),
        (["--addr", "nonsense"], "--addr"),
        (["--proxy-addr", "1.2.3.4"], "--proxy-addr"),
        (["--trace-sample-ratio", "2"], "--trace-sample-ratio"),
        (["--flow-sample-rate=-1"], "--flow-sample-rate"),
        (["--workers", "0"], "--workers"),
        (["--max-body-kb", "-5"], "--max-body-kb"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--trace-protocol", "grpc"], "--trace-protocol"),
        (["--trace-endpoint", "otel-collector:4318"], "--trace-endpoint"),
        (["--trace-headers", "broken"], "--trace-headers"),
        (["--log-level", "loud"], "--log-level"),
        (["--scope-policy", "/nonexistent/scope.yaml"], "--scope-policy"),
        (["--plugins-dir", "/nonexistent/plugins"], "--plugins-dir"),
        (["--flow-log-raw=perhaps"], "--flow-log-raw"),
        (["--metrics-addr"], "--metrics-addr"),
        (["--token", "short"], "--token"),
    ]

    def test_bad_flags_exit_2_naming_the_flag(self):
        for args, flag in self.CASES:
            with self.subTest(args=args):
                # A data dir and metrics address are given so that a missed validation shows
                # up as a running daemon (timeout) rather than as a daemon on :9090.
                full = ["--data-dir", os.path.join(self.tmp, "d")] + args
                if flag != "--metrics-addr":
                    full = ["--metrics-addr", "127.0.0.1:0"] + full
                rc, _, err = self.run_to_exit("0xgend", full, timeout=10)
                self.assertEqual(rc, 2, err)
                self.assertIn(flag, err)
                self.assertTrue(err.startswith("0xgend: "), err)

    def test_bad_environment_value_names_flag_and_variable(self):
        rc, _, err = self.run_to_exit(
            "0xgend", ["--data-dir", os.path.join(self.tmp, "d")],
            env=it.clean_env(OXG_METRICS_ADDR="9090"))
        self.assertEqual(rc, 2)
        self.assertIn("--metrics-addr", err)
        self.assertIn("OXG_METRICS_ADDR", err)

    def test_errors_never_echo_secrets(self):
        secret = "Bearer_s3cr3t_value_123"
        cases = [
            (["--trace-headers", "Authorization:" + secret], {}),
            ([], {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization:" + secret,
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}),
            (["--trace-endpoint", "grpc://user:" + secret + "@collector:4317"], {}),
        ]
        for args, env in cases:
            with self.subTest(args=args, env=env):
                rc, out, err = self.run_to_exit(
                    "0xgend", ["--data-dir", os.path.join(self.tmp, "d"),
                               "--metrics-addr", "127.0.0.1:0"] + args,
                    env=it.clean_env(**env))
                self.assertEqual(rc, 2, err)
                self.assertTrue(err.startswith("0xgend: --trace-"), err)
                self.assertNotIn(secret, err + out)

    def test_ca_key_without_cert(self):
        data = os.path.join(self.tmp, "d")
        os.makedirs(data)
        with open(os.path.join(data, "ca-key.pem"), "w") as f:
            f.write("key")
        rc, _, err = self.run_to_exit("0xgend", ["--data-dir", data,
                                                 "--metrics-addr", "127.0.0.1:0"])
        self.assertEqual(rc, 2)
        self.assertIn("--proxy-ca-cert", err)
        self.assertIn(os.path.join(data, "ca.pem"), err)


class CtlTest(it.IntegrationCase):
    def test_version(self):
        rc, out, err = self.run_to_exit("0xgenctl", ["version"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^0xgenctl \d+\.\d+\.\d+ \(\S+\)\n$")

    def test_help(self):
        rc, out, _ = self.run_to_exit("0xgenctl", ["--help"])
        self.assertEqual(rc, 0)
        self.assertIn("version", out)

    def test_unknown_subcommand_and_missing_subcommand(self):
        rc, _, err = self.run_to_exit("0xgenctl", ["frobnicate"])
        self.assertEqual(rc, 2)
        self.assertIn("frobnicate", err)
        rc, _, err = self.run_to_exit("0xgenctl", [])
        self.assertEqual(rc, 2)
        self.assertTrue(err.startswith("0xgenctl: "), err)


if __name__ == "__main__":
    it.main()
