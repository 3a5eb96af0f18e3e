"""Command-line behaviour of 0xgend, glyphd and 0xgenctl: help, version, bad usage."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

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


def slurp(path):
    with open(path) as f:
        return f.read()


class PluginValidateTest(it.IntegrationCase):
    """0xgenctl plugin validate: the manifest checks of the daemon, from the command line."""

    def write(self, sub, text):
        d = os.path.join(self.tmp, "plugins", sub)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "manifest.json")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_valid_directory(self):
        good = self.write("hello", '{"name":"example-hello","version":"0.1.0","command":"run",'
                                   '"capabilities":["CAP_EMIT_FINDINGS","CAP_FLOW_INSPECT"],'
                                   '"subscriptions":["FLOW_RESPONSE"]}')
        rc, out, err = self.run_to_exit("0xgenctl", ["plugin", "validate",
                                                     os.path.join(self.tmp, "plugins")])
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "ok: %s (example-hello 0.1.0)\n" % good)
        self.assertEqual(err, "")

    def test_invalid_manifest_names_file_field_and_reason(self):
        self.write("a", '{"name":"a","version":"1","command":"run"}')
        bad = self.write("b", '{"name":"b","version":"1","command":"run",'
                              '"subscriptions":["FLOW_REQUEST_RAW"],'
                              '"capabilities":["CAP_FLOW_INSPECT"]}')
        rc, out, err = self.run_to_exit("0xgenctl", ["plugin", "validate",
                                                     os.path.join(self.tmp, "plugins")])
        self.assertEqual(rc, 2)
        self.assertIn("ok: ", out)
        self.assertEqual(err, "0xgenctl plugin validate: %s: subscriptions[0]: FLOW_REQUEST_RAW "
                              "needs CAP_FLOW_INSPECT_RAW in capabilities\n" % bad)
        rc, _, err = self.run_to_exit("0xgenctl", ["plugin", "validate", bad])
        self.assertEqual(rc, 2)
        self.assertIn(bad + ": subscriptions[0]", err)

    def test_missing_path_and_empty_directory(self):
        missing = os.path.join(self.tmp, "nope")
        rc, _, err = self.run_to_exit("0xgenctl", ["plugin", "validate", missing])
        self.assertEqual(rc, 2)
        self.assertEqual(err, "0xgenctl plugin validate: %s: no such file or directory\n" % missing)
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty)
        rc, _, err = self.run_to_exit("0xgenctl", ["plugin", "validate", empty])
        self.assertEqual(rc, 2)
        self.assertIn("no manifest found", err)


class ProxyCaTest(it.IntegrationCase):
    """0xgenctl proxy ca: prints, checks and installs the interception CA certificate."""

    def setUp(self):
        super().setUp()
        self.pki = it.make_test_pki(os.path.join(self.tmp, "pki"))
        self.data = os.path.join(self.tmp, "data")
        os.makedirs(self.data)
        shutil.copy(self.pki["ca_cert"], os.path.join(self.data, "ca.pem"))

    def ctl(self, *args, env=None):
        return self.run_to_exit("0xgenctl", ["proxy", "ca"] + list(args), env=env)

    def ctl_bytes(self, *args):
        res = subprocess.run([it.binary("0xgenctl"), "proxy", "ca"] + list(args), cwd=self.tmp,
                             capture_output=True, timeout=15, env=it.clean_env())
        return res.returncode, res.stdout, res.stderr.decode()

    def assert_no_key(self, text):
        self.assertNotIn("PRIVATE KEY", text)
        body = "".join(l for l in slurp(self.pki["ca_key"]).splitlines()
                       if not l.startswith("-----"))
        self.assertNotIn(body[:40], text.replace("\n", ""))

    def test_pem_output_equals_the_file(self):
        rc, out, err = self.ctl("--data-dir", self.data)
        self.assertEqual(rc, 0, err)
        with open(self.pki["ca_cert"]) as f:
            self.assertEqual(out, f.read())
        rc, out2, err = self.ctl("--cert", self.pki["ca_cert"])
        self.assertEqual((rc, out2), (0, out), err)

    def test_default_data_dir_is_oxg_data(self):
        shutil.copytree(self.data, os.path.join(self.tmp, "oxg-data"))
        rc, out, err = self.ctl()
        self.assertEqual(rc, 0, err)
        self.assertIn("BEGIN CERTIFICATE", out)

    def test_daemon_generated_ca(self):
        data = os.path.join(self.tmp, "daemon-data")
        p, _ = self.start_daemon(data_dir=data, extra=["--proxy-addr", "127.0.0.1:0",
                                                       "--addr", "127.0.0.1:0"])
        it.send_signal(p, it.SIGTERM)
        self.assertEqual(p.wait(15), 0, p.stderr)
        rc, out, err = self.ctl("--data-dir", data)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(data, "ca.pem")) as f:
            self.assertEqual(out, f.read())
        self.assert_no_key(out)

    def test_der_output_parses_with_openssl(self):
        rc, der, err = self.ctl_bytes("--data-dir", self.data, "--format", "der")
        self.assertEqual(rc, 0, err)
        self.assertEqual(der[0], 0x30)  # an ASN.1 SEQUENCE
        out = os.path.join(self.tmp, "ca.der")
        with open(out, "wb") as f:
            f.write(der)
        text = it.run_openssl(["x509", "-inform", "der", "-in", out, "-noout", "-subject"])
        self.assertIn(b"0xgen test upstream CA", text)
        expected = it.run_openssl(["x509", "-in", self.pki["ca_cert"], "-outform", "der"])
        self.assertEqual(der, expected)

    def test_out_file(self):
        target = os.path.join(self.tmp, "exported.der")
        rc, out, err = self.ctl("--data-dir", self.data, "--format", "der", "--out", target)
        self.assertEqual((rc, out), (0, ""), err)
        expected = it.run_openssl(["x509", "-in", self.pki["ca_cert"], "-outform", "der"])
        with open(target, "rb") as f:
            self.assertEqual(f.read(), expected)
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o644)

    def test_fingerprint_matches_openssl(self):
        rc, out, err = self.ctl("--data-dir", self.data, "--fingerprint")
        self.assertEqual(rc, 0, err)
        ref = it.run_openssl(["x509", "-in", self.pki["ca_cert"], "-noout", "-fingerprint",
                              "-sha256"]).decode()
        self.assertEqual(out.strip(), ref.strip().split("=", 1)[1])
        self.assertRegex(out, r"^([0-9A-F]{2}:){31}[0-9A-F]{2}\n$")

    def test_missing_file(self):
        missing = os.path.join(self.tmp, "nowhere", "ca.pem")
        rc, out, err = self.ctl("--cert", missing)
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertEqual(err, "0xgenctl proxy ca: %s: No such file or directory\n" % missing)
        rc, _, err = self.ctl("--data-dir", os.path.join(self.tmp, "empty"))
        self.assertEqual(rc, 2)
        self.assertIn(os.path.join(self.tmp, "empty", "ca.pem") + ": No such file", err)

    def test_key_file_instead_of_certificate(self):
        rc, out, err = self.ctl("--cert", self.pki["ca_key"])
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("0xgenctl proxy ca: " + self.pki["ca_key"]), err)
        self.assertIn("private key", err)
        self.assert_no_key(err)

    def test_file_with_certificate_and_key_prints_only_the_certificate(self):
        both = os.path.join(self.tmp, "both.pem")
        with open(both, "w") as f:
            f.write(slurp(self.pki["ca_key"]) + slurp(self.pki["ca_cert"]))
        rc, out, err = self.ctl("--cert", both)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, slurp(self.pki["ca_cert"]))
        self.assert_no_key(out + err)

    def test_not_a_ca_certificate(self):
        rc, out, err = self.ctl("--cert", self.pki["cert"])
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertIn(self.pki["cert"], err)
        self.assertIn("not a CA certificate", err)

    def test_garbage_and_bad_format(self):
        junk = os.path.join(self.tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("hello\n")
        rc, _, err = self.ctl("--cert", junk)
        self.assertEqual(rc, 2)
        self.assertIn("no PEM or DER certificate", err)
        rc, _, err = self.ctl("--data-dir", self.data, "--format", "pkcs12")
        self.assertEqual(rc, 2)
        self.assertIn("--format", err)

    def test_help_explains_trust(self):
        rc, out, err = self.ctl("--help")
        self.assertEqual(rc, 0, err)
        for word in ("Firefox", "Chrome", "curl", "--cacert", "--install", "--install-nss",
                     "--fingerprint", "libnss3-tools", "update-ca-certificates"):
            self.assertIn(word, out)
        rc, out, _ = self.run_to_exit("0xgenctl", ["proxy", "--help"])
        self.assertEqual(rc, 0)
        self.assertIn("ca", out)

    def test_unknown_proxy_command(self):
        rc, _, err = self.run_to_exit("0xgenctl", ["proxy", "cert"])
        self.assertEqual(rc, 2)
        self.assertIn('unknown proxy command "cert"', err)

    def test_install_nss_without_certutil(self):
        env = it.clean_env(PATH=os.path.join(self.tmp, "empty-bin"))
        nssdb = os.path.join(self.tmp, "nssdb")
        os.makedirs(nssdb)
        rc, out, err = self.ctl("--data-dir", self.data, "--install-nss", nssdb, env=env)
        self.assertEqual(rc, 1, err)
        self.assertIn("certutil", err)
        self.assertIn("libnss3-tools", err)

    def test_install_nss_runs_certutil(self):
        # A stand-in certutil that records its arguments and the file it was given.
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        record = os.path.join(self.tmp, "certutil.args")
        script = os.path.join(bindir, "certutil")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nprintf '%%s\\n' \"$@\" > %s\n"
                    "while [ $# -gt 0 ]; do if [ \"$1\" = -i ]; then cat \"$2\" > %s.in; fi; "
                    "shift; done\n" % (record, record))
        os.chmod(script, 0o755)
        nssdb = os.path.join(self.tmp, "nssdb")
        os.makedirs(nssdb)
        env = it.clean_env(PATH=bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        rc, out, err = self.ctl("--data-dir", self.data, "--install-nss", nssdb, env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn(nssdb, out)
        with open(record) as f:
            args = f.read().splitlines()
        self.assertEqual(args[:7], ["-d", "sql:" + nssdb, "-A", "-t", "C,,", "-n",
                                    "0xgen interception CA"])
        self.assertIn("-i", args)
        with open(record + ".in") as f:
            self.assertEqual(f.read(), slurp(self.pki["ca_cert"]))
        self.assertFalse(os.path.exists(args[args.index("-i") + 1]), "temp file left behind")

    def test_install_needs_root(self):
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root and setpriv to run the command as an unprivileged user")
        if not os.path.isdir("/usr/local/share/ca-certificates"):
            self.skipTest("no /usr/local/share/ca-certificates")
        # The unprivileged user must be able to read the certificate and the binary.
        shared = tempfile.mkdtemp(prefix="oxg_ca_")
        self.addCleanup(shutil.rmtree, shared, True)
        os.chmod(shared, 0o755)
        cert = os.path.join(shared, "ca.pem")
        shutil.copy(self.pki["ca_cert"], cert)
        os.chmod(cert, 0o644)
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              it.binary("0xgenctl"), "proxy", "ca", "--cert", cert, "--install"],
                             capture_output=True, text=True, timeout=15, cwd=shared,
                             env=it.clean_env())
        if res.returncode != 0 and "needs root" not in res.stderr and "0xgenctl" not in res.stderr:
            self.skipTest("cannot run the binary as nobody: " + res.stderr)
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn("needs root", res.stderr)
        self.assertIn("/usr/local/share/ca-certificates/0xgen-", res.stderr)
        fp = it.run_openssl(["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"]).decode()
        prefix = fp.strip().split("=", 1)[1].replace(":", "").lower()[:16]
        self.assertIn("0xgen-%s.crt" % prefix, res.stderr)
        self.assertFalse(os.path.exists("/usr/local/share/ca-certificates/0xgen-%s.crt" % prefix))


if __name__ == "__main__":
    it.main()
