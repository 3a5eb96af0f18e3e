"""Shared helpers for the end-to-end tests of the metrics endpoint.

Processes started here are always stopped by the caller's cleanup (stop_process), which waits
with a bound, escalates to SIGKILL and reports whether the process is gone. Every wait is a
bounded poll for a condition; nothing sleeps and hopes.
"""

import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

FIXTURE = os.environ.get("OXG_METRICS_FIXTURE", "")
PROMTOOL = os.environ.get("OXG_PROMTOOL", "/usr/bin/promtool")
PROMETHEUS = os.environ.get("OXG_PROMETHEUS", "/usr/bin/prometheus")

# The label values metrics_fixture.cc sets on oxg_plugin_queue_length{plugin} (gauge value =
# position + 1) and on oxg_proxy_requests_total{method="GET",code} (value 1). Keep in sync.
TRICKY_VALUES = [
    "a,b",
    'say "hi"',
    "C:\\plugins\\x",
    "line1\nline2",
    "\u00fcn\u00efc\u00f8d\u00e9 \u2713",  # "ünïcødé ✓"
    "\\n is not a newline",
    "",
]

# The contract's default latency buckets (seconds), without +Inf.
DEFAULT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OM_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus 2.x sends when scraping.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                     "application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class Deadline:
    """A bounded wait: `while not d.expired(): ...; d.wait()`."""

    def __init__(self, seconds, step=0.25):
        self.end = time.monotonic() + seconds
        self.step = step

    def expired(self):
        return time.monotonic() >= self.end

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def wait(self):
        time.sleep(min(self.step, self.left()))


def free_port():
    """A loopback port that was free a moment ago (bind 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, grace=15.0, use_stdin_eof=False):
    """Stops `proc`: stdin EOF (if asked) or SIGTERM, a bounded wait, then SIGKILL.

    Returns (returncode, how) where how is "exited", "terminated" or "killed". Afterwards the
    process is reaped and its pid no longer exists.
    """
    how = "exited"
    if proc.poll() is None:
        if use_stdin_eof and proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        else:
            how = "terminated"
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            if use_stdin_eof:
                how = "terminated"
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                how = "killed"
                proc.kill()
                proc.wait(timeout=10)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None and not f.closed:
            f.close()
    return proc.returncode, how


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Fixture:
    """metrics_fixture as a child process. Call stop() (from a cleanup) when done."""

    def __init__(self, *args):
        if not FIXTURE or not os.access(FIXTURE, os.X_OK):
            raise RuntimeError(f"OXG_METRICS_FIXTURE is not an executable: {FIXTURE!r}")
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([FIXTURE, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr_file)
        try:
            lines = self._read_lines(3, timeout=30)
            self.address = self._field(lines[0], "listening")
            self.trace_id = self._field(lines[1], "trace_id")
            self.span_id = self._field(lines[2], "span_id")
        except BaseException:
            self.stop()
            raise
        if len(self.trace_id) != 32 or len(self.span_id) != 16:
            raise RuntimeError(f"bad ids from the fixture: {lines!r}")
        self.base_url = f"http://{self.address}"

    @staticmethod
    def _field(line, key):
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] != key:
            raise RuntimeError(f"expected `{key} <value>` from the fixture, got {line!r}")
        return parts[1]

    def _read_lines(self, n, timeout):
        buf = b""
        deadline = Deadline(timeout)
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while buf.count(b"\n") < n:
                if deadline.expired():
                    raise RuntimeError(f"fixture printed only {buf!r} in {timeout}s; "
                                       f"stderr: {self.stderr_text()}")
                if not sel.select(deadline.left()):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise RuntimeError(f"fixture exited ({self.proc.returncode}) after "
                                       f"printing {buf!r}; stderr: {self.stderr_text()}")
                buf += chunk
        return buf.decode("utf-8").split("\n")[:n]

    def stderr_text(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def stop(self):
        """Closes stdin (the fixture exits 0 on EOF); returns (returncode, how)."""
        result = stop_process(self.proc, use_stdin_eof=True)
        return result

    def close(self):
        self.stderr_file.close()

    def stop_and_check(self):
        """Stops the fixture and raises AssertionError unless it exited 0 and is gone."""
        pid = self.proc.pid
        code, how = self.stop()
        stderr = self.stderr_text()
        self.close()
        if not process_gone(pid):
            raise AssertionError(f"metrics_fixture (pid {pid}) still exists")
        if how != "exited" or code != 0:
            raise AssertionError(f"metrics_fixture did not exit 0 on stdin EOF ({how}, {code}); "
                                 f"stderr:\n{stderr}")


def fetch(url, headers=None, timeout=10):
    """GET url; returns (status, headers, body bytes). Never decompresses."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
