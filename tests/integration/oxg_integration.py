"""Shared helpers for the 0xgen integration tests.

The tests run the real binaries as child processes. Every wait is bounded, and every process
started through Proc is killed by the test's tearDown (see IntegrationCase).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

BIN_DIR = None

# Contract §7 field order.
AUDIT_FIELDS = ["timestamp", "component", "plugin_id", "event_type", "decision", "reason",
                "metadata", "trace_id", "span_id"]


def parse_bin_dir(argv):
    """Takes `--bin-dir DIR` out of argv (the rest goes to unittest)."""
    global BIN_DIR
    rest = [argv[0]]
    i = 1
    while i < len(argv):
        if argv[i] == "--bin-dir" and i + 1 < len(argv):
            BIN_DIR = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--bin-dir="):
            BIN_DIR = argv[i].split("=", 1)[1]
            i += 1
            continue
        rest.append(argv[i])
        i += 1
    if BIN_DIR is None:
        BIN_DIR = os.environ.get("OXGEN_TEST_BIN_DIR")
    if not BIN_DIR:
        sys.exit("usage: %s --bin-dir <build>/bin [unittest args]" % argv[0])
    # Children run in a scratch directory, so a relative --bin-dir must be resolved here.
    BIN_DIR = os.path.abspath(BIN_DIR)
    return rest


def binary(name):
    return os.path.join(BIN_DIR, name)


def clean_env(**extra):
    """The test runner's environment without any OXG_/OTEL_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OXG_") and not k.startswith("OTEL_")}
    env.update(extra)
    return env


class Proc:
    """A child process whose stdout and stderr are collected by reader threads, so the test can
    wait for a line with a deadline instead of sleeping."""

    def __init__(self, argv, env=None, cwd=None):
        self.argv = argv
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env or clean_env(), cwd=cwd)
        self._cond = threading.Condition()
        self._out = []
        self._err = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        stream.close()

    @property
    def stdout(self):
        with self._cond:
            return "".join(self._out)

    @property
    def stderr(self):
        with self._cond:
            return "".join(self._err)

    def wait_for_stderr(self, pattern, timeout=15.0):
        """Returns the first match of `pattern` in a stderr line, waiting at most `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._err:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._alive_readers()):
                    raise AssertionError("no stderr line matching %r within %.0fs; stderr:\n%s"
                                         % (pattern, timeout, "".join(self._err)))
                self._cond.wait(min(left, 0.2))

    def _alive_readers(self):
        return any(t.is_alive() for t in self._threads)

    def wait(self, timeout=15.0):
        """Waits for exit (bounded) and for the output to be drained; returns the exit code."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.0fs; stderr:\n%s"
                                 % (self.argv[0], timeout, self.stderr))
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for t in self._threads:
            t.join(timeout=2)


class IntegrationCase(unittest.TestCase):
    """Gives each test a scratch directory (also the children's working directory, so a
    default ./oxg-data never lands in the source tree) and kills every process it started."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oxg_it_")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name, args, env=None):
        p = Proc([binary(name)] + list(args), env=env, cwd=self.tmp)
        self.procs.append(p)
        return p

    def run_to_exit(self, name, args, env=None, timeout=15.0):
        p = self.start(name, args, env=env)
        return p.wait(timeout), p.stdout, p.stderr

    def start_daemon(self, extra=(), data_dir=None, env=None):
        """Starts 0xgend on loopback port 0 and returns (proc, metrics port)."""
        data_dir = data_dir or os.path.join(self.tmp, "data")
        # Every listener on a port the OS picks (flags given later in `extra` win).
        args = ["--data-dir", data_dir, "--metrics-addr", "127.0.0.1:0",
                "--proxy-addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"] + list(extra)
        p = self.start("0xgend", args, env=env)
        m = p.wait_for_stderr(r"metrics listening on 127\.0\.0\.1:(\d+)")
        # Startup is complete (audit events written) once this line is out.
        p.wait_for_stderr(r"running; stop with")
        return p, int(m.group(1))


def http_get(url, timeout=10.0, headers=None):
    """Returns (status, body text, headers) without raising on HTTP error statuses."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace"), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), e.headers


_METRIC_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text exposition -> list of (name, {label: value}, float). Comments and
    exemplars are left out."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        # An exemplar follows " # " after the value.
        line = line.split(" # ", 1)[0]
        m = _METRIC_SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _METRIC_LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def wait_metric(read, name, expected, timeout, **labels):
    """Polls read(name, **labels) until it equals `expected`; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read(name, **labels)
        if value == expected:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s%r is %r, expected %r within %.0fs"
                                 % (name, labels, value, expected, timeout))
        time.sleep(0.05)


def read_audit(path):
    """Parses an audit log, keeping each line's key order."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            events.append(json.loads(line, object_pairs_hook=lambda pairs: pairs))
    return events


def run_openssl(args, cwd=None, timeout=30.0):
    """Runs the openssl CLI and returns its stdout (bytes); raises with its stderr on failure."""
    res = subprocess.run(["openssl"] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(args),
                                                         res.stderr.decode("utf-8", "replace")))
    return res.stdout


def make_test_pki(directory, hosts=("localhost", "127.0.0.1")):
    """Writes a throwaway CA and a server certificate signed by it (SAN: `hosts`) with the
    openssl CLI. Returns a dict of paths: ca_cert, ca_key, cert, key (the server's)."""
    os.makedirs(directory, exist_ok=True)
    p = {name: os.path.join(directory, name + ".pem")
         for name in ("ca_cert", "ca_key", "cert", "key")}
    run_openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", p["ca_key"], "-out", p["ca_cert"], "-days", "2",
                 "-subj", "/CN=0xgen test upstream CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    san = ",".join(("IP:" if h.replace(".", "").isdigit() or ":" in h else "DNS:") + h
                   for h in hosts)
    csr = os.path.join(directory, "server.csr")
    ext = os.path.join(directory, "server.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nsubjectAltName=%s\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n" % san)
    run_openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", p["key"], "-out", csr, "-subj", "/CN=%s" % hosts[0]])
    run_openssl(["x509", "-req", "-in", csr, "-CA", p["ca_cert"], "-CAkey", p["ca_key"],
                 "-CAcreateserial", "-out", p["cert"], "-days", "2", "-extfile", ext])
    return p


def main():
    argv = parse_bin_dir(sys.argv)
    unittest.main(argv=argv, verbosity=2)


def send_signal(proc, sig):
    proc.popen.send_signal(sig)


SIGINT = signal.SIGINT
SIGTERM = signal.SIGTERM
