"""The plugin bus of 0xgend as a running process (docs/plugins.md, contract §4, §5, §7, §8, §10).

Clients are real: raw gRPC streams built from the generated stubs (so a test can send exactly
the bytes it wants, hostile ones included), the Python SDK (oxg_plugin) in a child process, and
the C++ SDK's example plugin when the build has it. Traffic is real: HTTP requests sent through
the daemon's proxy to a local origin (proxy_upstreams.py).

Every daemon gets a fresh --plugins-dir of generated manifests (command /bin/true: nothing
supervises them yet) and listeners on ports the OS picks. Waits are bounded polls of a
condition; the assertions on counters are exact.

Usage: plugin_bus_test.py --bin-dir <build>/bin [--python-dir <build>/python] [unittest args]
(--python-dir defaults to $OXGEN_TEST_PYTHON_DIR, else <bin-dir>/../python).
"""

import concurrent.futures
import http.client
import json
import os
import queue
import re
import socket
import socketserver
import sys
import threading
import time


def _take_python_dir(argv):
    """Takes `--python-dir DIR` out of argv; returns DIR or None."""
    for i, arg in enumerate(argv):
        if arg == "--python-dir" and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        if arg.startswith("--python-dir="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def _bin_dir_hint(argv):
    for i, arg in enumerate(argv):
        if arg == "--bin-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--bin-dir="):
            return arg.split("=", 1)[1]
    return os.environ.get("OXGEN_TEST_BIN_DIR")


PYTHON_DIR = _take_python_dir(sys.argv) or os.environ.get("OXGEN_TEST_PYTHON_DIR")
if not PYTHON_DIR and _bin_dir_hint(sys.argv):
    PYTHON_DIR = os.path.join(_bin_dir_hint(sys.argv), os.pardir, "python")
if not PYTHON_DIR or not os.path.isdir(os.path.join(PYTHON_DIR, "oxg")):
    sys.exit("plugin_bus_test: no protocol stubs: pass --python-dir <build>/python (built by the "
             "oxg_plugin_python target); tried %r" % PYTHON_DIR)
PYTHON_DIR = os.path.abspath(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)

import grpc  # noqa: E402  (Debian's python3-grpcio)
from oxg import common_pb2, plugin_bus_pb2  # noqa: E402

import oxg_integration as it  # noqa: E402
import proxy_upstreams as pu  # noqa: E402

TOKEN = "itest-plugin-bus-token-0123456789abcdef"
STREAM_METHOD = "/oxg.plugin_bus.PluginBus/EventStream"
GRANT_METHOD = "/oxg.plugin_bus.PluginBus/GrantCapabilities"
WAIT = 15.0
QUEUE_CAPACITY = 1024      # PluginBusOptions::queue_capacity, the daemon's default
MAX_RECEIVE = 1 << 20      # docs/plugins.md: any message from a plugin at most 1 MiB
MAX_OUTSTANDING_TOKENS = 4096  # CapabilityTokens::Options::max_outstanding
ERROR_FAMILIES = ("oxg_rpc_errors_total", "oxg_plugin_errors_total")
ALL_CAPS = ["CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT", "CAP_FLOW_INSPECT_RAW"]
FLOW_SUBS = ["FLOW_REQUEST", "FLOW_RESPONSE"]
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 128 << 20)]
_END = object()


# ---- protobuf bytes by hand ------------------------------------------------------------------
# Python's protobuf refuses invalid UTF-8 in a `string` field, so hostile events are encoded here.

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, data):
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def pb_int(field, n):
    return _varint(field << 3) + _varint(n)


def finding_bytes(type_=b"itest.hostile", message=b"hostile finding", severity=1,
                  metadata=(), evidence=b"", traceparent=b"", flow_id=b""):
    """A PluginEvent{finding} from raw field values (bytes, not necessarily UTF-8)."""
    body = pb_bytes(1, type_) + pb_bytes(2, message) + pb_int(3, severity)
    for key, value in metadata:
        body += pb_bytes(4, pb_bytes(1, key) + pb_bytes(2, value))
    if evidence:
        body += pb_bytes(6, evidence)
    if flow_id:
        body += pb_bytes(7, flow_id)
    event = pb_bytes(2, body)
    if traceparent:
        event += pb_bytes(4, traceparent)
    return event


def _serialize(message):
    return message if isinstance(message, bytes) else message.SerializeToString()


def hello(name, capability_token, subscriptions=(), capabilities=(), auth_token=TOKEN):
    return plugin_bus_pb2.PluginEvent(hello=plugin_bus_pb2.PluginHello(
        auth_token=auth_token, plugin_name=name, pid=os.getpid(),
        subscriptions=list(subscriptions), capabilities=list(capabilities),
        capability_token=capability_token))


def goodbye(reason="test done"):
    return plugin_bus_pb2.PluginEvent(goodbye=plugin_bus_pb2.PluginGoodbye(reason=reason))


def valid_finding(message="a valid finding", traceparent="", flow_id=""):
    return plugin_bus_pb2.PluginEvent(
        finding=common_pb2.Finding(type="itest.valid", message=message,
                                   severity=common_pb2.LOW, metadata={"k": "v"},
                                   flow_id=flow_id),
        traceparent=traceparent)


# ---- a raw plugin stream -----------------------------------------------------------------------

class RawStream:
    """One EventStream call. Messages are sent from a queue (bytes or protobuf messages); a
    reader thread collects HostEvents while `reading` is set (clear it before the first read
    to model a plugin that stops reading: gRPC then asks the transport for nothing)."""

    def __init__(self, channel, metadata=None, read=True):
        self._out = queue.Queue()
        self._cond = threading.Condition()
        self.events = []
        self.flow_count = 0
        self.status = None
        self.details = None
        self.reading = threading.Event()
        if read:
            self.reading.set()
        call = channel.stream_stream(STREAM_METHOD, request_serializer=_serialize,
                                     response_deserializer=plugin_bus_pb2.HostEvent.FromString)
        self.call = call(self._requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self):
        while True:
            item = self._out.get()
            if item is _END:
                return
            yield item

    def _read(self):
        code, details = None, None
        try:
            while True:
                self.reading.wait()
                event = next(self.call)
                with self._cond:
                    self.events.append(event)
                    if event.HasField("flow_event"):
                        self.flow_count += 1
                    self._cond.notify_all()
        except StopIteration:
            code, details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        with self._cond:
            self.status, self.details = code, details
            self._cond.notify_all()

    def send(self, message):
        self._out.put(message)

    def close_send(self):
        self._out.put(_END)

    def cancel(self):
        self.call.cancel()

    def cleanup(self):
        self._out.put(_END)
        self.call.cancel()
        self.reading.set()

    def wait(self, predicate, timeout=WAIT, what="condition"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s not reached within %.0fs (status %s %r, %d events)"
                                         % (what, timeout, self.status, self.details,
                                            len(self.events)))
                self._cond.wait(min(left, 0.2))

    def wait_status(self, timeout=WAIT):
        self.wait(lambda: self.status is not None, timeout, "end of the stream")
        return self.status

    def wait_flows(self, n, timeout=WAIT):
        self.wait(lambda: self.flow_count >= n or self.status is not None, timeout,
                  "%d flow events" % n)
        with self._cond:
            return self.flow_count

    def flows(self):
        with self._cond:
            return [e.flow_event for e in self.events if e.HasField("flow_event")]


# ---- files and metrics -----------------------------------------------------------------------

def write_manifest(plugins_dir, name, capabilities, subscriptions=()):
    d = os.path.join(plugins_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"name": name, "version": "1.0.0", "command": "/bin/true",
                   "capabilities": list(capabilities), "subscriptions": list(subscriptions)}, f)


def jsonl(path):
    """Complete lines of a JSONL file (the writer may be in the middle of the last one)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


def series_key(name, labels):
    return (name, tuple(sorted(labels.items())))


def diff(before, after):
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)
            if after.get(k, 0.0) != before.get(k, 0.0)}


class BusDaemon:
    """0xgend with a plugins directory, the plugin bus, the proxy and the metrics endpoint."""

    def __init__(self, case, manifests, extra=(), token=TOKEN):
        self.case = case
        self.plugins_dir = os.path.join(case.tmp, "plugins")
        os.makedirs(self.plugins_dir, exist_ok=True)
        for m in manifests:
            write_manifest(self.plugins_dir, *m)
        self.data = os.path.join(case.tmp, "data")
        args = ["--plugins-dir", self.plugins_dir, "--workers", "2"] + list(extra)
        if token:
            args += ["--token", token]
        self.proc, self.metrics_port = case.start_daemon(args, data_dir=self.data)
        m = self.proc.wait_for_stderr(r"plugin bus listening on 127\.0\.0\.1:(\d+)")
        self.bus_addr = "127.0.0.1:%s" % m.group(1)
        m = self.proc.wait_for_stderr(r"proxy listening on 127\.0\.0\.1:(\d+)")
        self.proxy_port = int(m.group(1))
        if token:
            self.token = token
        else:
            with open(os.path.join(self.data, "token")) as f:
                self.token = f.read().strip()
        self.audit_path = os.path.join(self.data, "audit.jsonl")
        self.findings_path = os.path.join(self.data, "findings.jsonl")
        self.history_path = os.path.join(self.data, "proxy_history.jsonl")
        self._channels = []
        self._streams = []
        case.addCleanup(self._cleanup)

    def _cleanup(self):
        for s in self._streams:
            s.cleanup()
        for c in self._channels:
            c.close()

    # -- gRPC --

    def channel(self, options=()):
        c = grpc.insecure_channel(self.bus_addr, options=CHANNEL_OPTIONS + list(options))
        self._channels.append(c)
        return c

    def grant(self, channel, name, capabilities=(), auth_token=None):
        """GrantCapabilities; returns the grant or raises grpc.RpcError."""
        call = channel.unary_unary(
            GRANT_METHOD, request_serializer=_serialize,
            response_deserializer=plugin_bus_pb2.PluginCapabilityGrant.FromString)
        return call(plugin_bus_pb2.PluginCapabilityRequest(
            auth_token=self.token if auth_token is None else auth_token, plugin_name=name,
            capabilities=list(capabilities)), timeout=10)

    def grant_error(self, channel, name, capabilities=(), auth_token=None):
        """GrantCapabilities that must fail: returns (code, details)."""
        try:
            grant = self.grant(channel, name, capabilities, auth_token)
        except grpc.RpcError as e:
            return e.code(), e.details()
        raise AssertionError("GrantCapabilities(%r, %r) succeeded: %r" % (name, capabilities, grant))

    def stream(self, channel, metadata=None, read=True):
        s = RawStream(channel, metadata=metadata, read=read)
        self._streams.append(s)
        return s

    def connect(self, channel, name, subscriptions=(), capabilities=(), read=True, metadata=None):
        """Grant + hello; waits for the welcome (a HostEvent with only core_version)."""
        grant = self.grant(channel, name, capabilities)
        s = self.stream(channel, metadata=metadata)
        s.send(hello(name, grant.capability_token, subscriptions, capabilities,
                     auth_token=self.token))
        s.wait(lambda: s.events or s.status is not None, WAIT, "welcome for %s" % name)
        assert s.status is None, "%s refused: %s %s" % (name, s.status, s.details)
        welcome = s.events[0]
        assert welcome.core_version and not welcome.HasField("flow_event"), welcome
        if not read:
            s.reading.clear()
        return s

    # -- metrics, audit, files --

    def samples(self):
        status, body, _ = it.http_get("http://127.0.0.1:%d/metrics" % self.metrics_port)
        assert status == 200, status
        return it.parse_metrics(body)

    def metric(self, name, samples=None, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(v for n, lab, v in (samples or self.samples())
                   if n == name and all(lab.get(k) == val for k, val in labels.items()))

    def series(self, name, samples=None):
        return [lab for n, lab, _ in (samples or self.samples()) if n == name]

    def wait_metric(self, name, expected, timeout=WAIT, **labels):
        return it.wait_metric(self.metric, name, expected, timeout, **labels)

    def errors(self):
        return {series_key(n, lab): v for n, lab, v in self.samples() if n in ERROR_FAMILIES}

    def audit(self):
        return jsonl(self.audit_path)

    def findings(self):
        return jsonl(self.findings_path)

    def history(self):
        return jsonl(self.history_path)

    def healthz(self):
        return it.http_get("http://127.0.0.1:%d/healthz" % self.metrics_port)[0]

    # -- traffic --

    def proxy_get(self, url, headers=None, conn=None):
        """One GET through the proxy (absolute-form); returns (status, body)."""
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=20)
        try:
            conn.request("GET", url, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def send_requests(self, url, n, threads=4, headers=None, gate=None):
        """`n` GETs through the proxy on `threads` keep-alive connections; all must be 200.
        `gate(sent)`, when given, is called before each request with the number sent so far
        (all threads) and may block."""
        counts = [0] * threads
        lock = threading.Lock()
        sent = [0]

        def worker(i):
            conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=30)
            try:
                for _ in range(i, n, threads):
                    if gate:
                        with lock:
                            so_far = sent[0]
                        gate(so_far)
                    with lock:
                        sent[0] += 1
                    status, _ = self.proxy_get(url, headers=headers, conn=conn)
                    assert status == 200, status
                    counts[i] += 1
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(worker, i) for i in range(threads)]:
                f.result(timeout=120)
        assert sum(counts) == n, counts

    def stop(self, timeout=10.0):
        it.send_signal(self.proc, it.SIGTERM)
        return self.proc.wait(timeout)


class FastOrigin:
    """A keep-alive HTTP/1.1 origin that answers every request with one write (the origins of
    proxy_upstreams.py write head and body separately, which costs a delayed ACK, ~40 ms, per
    request on loopback: too slow for thousands of requests). Bodies of requests are not read:
    send GETs."""

    BODY = b"hello from the fast origin\n"

    def __init__(self):
        body = self.BODY

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    line = self.rfile.readline(65536)
                    if not line:
                        return
                    while True:  # the rest of the head
                        h = self.rfile.readline(65536)
                        if h in (b"\r\n", b"\n", b""):
                            break
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class BusCase(it.IntegrationCase):
    def upstream(self, fast=False):
        u = FastOrigin() if fast else pu.Upstream()
        self.addCleanup(u.stop)
        return u

    def assert_refusal(self, daemon, before_errors, audit_before, method, code, reason,
                       plugin=None, event_type="rpc_denied", ignore=()):
        """Exactly one oxg_rpc_errors_total{plugin_bus,method,code} and one
        oxg_plugin_errors_total{plugin or unknown, reason} more than `before_errors`, and exactly
        one new audit line for the refusal (plugin_id only when a manifest knows the name)."""
        expected = {
            series_key("oxg_rpc_errors_total",
                       {"component": "plugin_bus", "method": method, "code": code}): 1.0,
            series_key("oxg_plugin_errors_total",
                       {"plugin": plugin or "unknown", "reason": reason}): 1.0,
        }
        deadline = time.monotonic() + WAIT
        while True:
            got = {k: v for k, v in diff(before_errors, daemon.errors()).items()
                   if k not in ignore}
            if got == expected or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self.assertEqual(got, expected, "%s %s %s" % (method, code, reason))
        pu.wait_until(lambda: len(daemon.audit()) > audit_before, WAIT, what="audit line")
        new = [e for e in daemon.audit()[audit_before:]
               if e.get("metadata", {}).get("code") != "DEADLINE_EXCEEDED" or
               code == "DEADLINE_EXCEEDED"]
        self.assertEqual(len(new), 1, new)
        line = new[0]
        self.assertEqual(line["component"], "plugin_bus")
        self.assertEqual(line["event_type"], event_type, line)
        self.assertEqual(line["decision"], "deny")
        if plugin:
            self.assertEqual(line.get("plugin_id"), plugin, line)
        else:
            self.assertNotIn("plugin_id", line)
        self.assertEqual(line["metadata"], {"method": method, "code": code}, line)
        self.assertTrue(line.get("reason"), line)
        self.assertNotIn(TOKEN, json.dumps(line))
        return line


# ---- 1. the handshake table --------------------------------------------------------------------

class HandshakeTest(BusCase):
    def test_every_refusal_is_a_status_an_audit_line_and_two_counters(self):
        d = BusDaemon(self, [
            ("alpha", ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"], FLOW_SUBS),
            ("beta", ["CAP_FLOW_INSPECT"], ["FLOW_REQUEST"]),
            ("rawplug", ALL_CAPS, ["FLOW_REQUEST_RAW"]),
            ("emitter", ["CAP_EMIT_FINDINGS"]),
        ])
        ch = d.channel()
        SC = grpc.StatusCode
        state = {}

        def snapshot():
            state["errors"] = d.errors()
            state["audit"] = len(d.audit())

        def check(method, code, reason, plugin=None, event_type="rpc_denied", ignore=()):
            return self.assert_refusal(d, state["errors"], state["audit"], method, code, reason,
                                       plugin, event_type, ignore)

        def grant_row(name, caps, code, reason, plugin=None, event_type="rpc_denied",
                      auth_token=None, detail=None):
            snapshot()
            got, details = d.grant_error(ch, name, caps, auth_token=auth_token)
            self.assertEqual(got, code, "GrantCapabilities(%r, %r): %s" % (name, caps, details))
            if detail:
                self.assertIn(detail, details)
            check("GrantCapabilities", code.name, reason, plugin, event_type)

        def stream_row(messages, code, reason, plugin=None, event_type="rpc_denied",
                       detail=None, ignore=(), close=False):
            snapshot()
            s = d.stream(ch)
            for m in messages:
                s.send(m)
            if close:
                s.close_send()
            self.assertEqual(s.wait_status(), code, s.details)
            self.assertEqual(s.events, [], "a refused stream got no welcome")
            if detail:
                self.assertIn(detail, s.details)
            return check("EventStream", code.name, reason, plugin, event_type, ignore)

        # -- rows that end with no_hello come first, before the silent stream below times out.
        stream_row([valid_finding()], SC.FAILED_PRECONDITION, "no_hello",
                   detail="first message must be hello")
        stream_row([goodbye()], SC.FAILED_PRECONDITION, "no_hello")
        stream_row([], SC.FAILED_PRECONDITION, "no_hello", close=True)
        # Not a PluginEvent at all (not in docs/plugins.md's table; the daemon answers
        # INVALID_ARGUMENT with reason no_hello).
        stream_row([b"\xff\xff\xff\xff"], SC.INVALID_ARGUMENT, "no_hello")

        # -- hello timeout (10 s): a stream that says nothing. Its refusal lands while the rows
        # below run, so they ignore its two series and its audit line.
        timeout_errors, timeout_audit = d.errors(), len(d.audit())
        silent_opened = time.monotonic()
        silent = d.stream(ch)
        timeout_keys = (
            series_key("oxg_rpc_errors_total", {"component": "plugin_bus",
                                                "method": "EventStream",
                                                "code": "DEADLINE_EXCEEDED"}),
            series_key("oxg_plugin_errors_total", {"plugin": "unknown", "reason": "no_hello"}))

        def grant_for(name, caps=()):
            return d.grant(ch, name, caps).capability_token

        # -- GrantCapabilities
        grant_row("alpha", [], SC.UNAUTHENTICATED, "auth_token", plugin="alpha",
                  auth_token="wrong-token-0123456789")
        grant_row("ghost", [], SC.UNAUTHENTICATED, "auth_token", auth_token="")
        grant_row("", [], SC.INVALID_ARGUMENT, "plugin_name", detail="empty")
        grant_row("x" * 65, [], SC.INVALID_ARGUMENT, "plugin_name")
        grant_row("bad name!", [], SC.INVALID_ARGUMENT, "plugin_name")
        grant_row("ghost", [], SC.PERMISSION_DENIED, "no_manifest", detail="ghost")
        grant_row("alpha", ["CAP_ROOT"], SC.INVALID_ARGUMENT, "capability_validation",
                  plugin="alpha", detail="CAP_ROOT")
        grant_row("alpha", ["CAP_FLOW_INSPECT", "CAP_FLOW_INSPECT_RAW"], SC.PERMISSION_DENIED,
                  "capability_validation", plugin="alpha", event_type="capability_denied",
                  detail="CAP_FLOW_INSPECT_RAW")

        ig = timeout_keys
        # -- hello refusals
        stream_row([hello("alpha", "whatever", auth_token="wrong-token-0123456789")],
                   SC.UNAUTHENTICATED, "auth_token", plugin="alpha", ignore=ig)
        stream_row([hello("", "whatever")], SC.INVALID_ARGUMENT, "plugin_name", ignore=ig)
        stream_row([hello("a" * 65, "whatever")], SC.INVALID_ARGUMENT, "plugin_name", ignore=ig)
        stream_row([hello("ghost", "whatever")], SC.PERMISSION_DENIED, "no_manifest", ignore=ig)
        stream_row([hello("alpha", "not-a-token")], SC.PERMISSION_DENIED, "capability_token",
                   plugin="alpha", ignore=ig, detail="unknown")
        stream_row([hello("alpha", "")], SC.PERMISSION_DENIED, "capability_token",
                   plugin="alpha", ignore=ig)
        # Issued to another name: refused, and the token is spent all the same.
        beta_token = grant_for("beta")
        stream_row([hello("alpha", beta_token, ["FLOW_REQUEST"])], SC.PERMISSION_DENIED,
                   "capability_token", plugin="alpha", ignore=ig, detail="another plugin")
        stream_row([hello("beta", beta_token, ["FLOW_REQUEST"])], SC.PERMISSION_DENIED,
                   "capability_token", plugin="beta", ignore=ig, detail="already used")
        # Reused after a successful connection (which then left with goodbye: status OK).
        token = grant_for("beta")
        ok = d.stream(ch)
        ok.send(hello("beta", token, ["FLOW_REQUEST"]))
        ok.wait(lambda: ok.events or ok.status is not None, WAIT, "welcome")
        self.assertIsNone(ok.status, ok.details)
        ok.send(goodbye())
        ok.close_send()
        self.assertEqual(ok.wait_status(), SC.OK, ok.details)
        stream_row([hello("beta", token, ["FLOW_REQUEST"])], SC.PERMISSION_DENIED,
                   "capability_token", plugin="beta", ignore=ig, detail="already used")
        # Capabilities: escalation beyond the grant, unknown names.
        stream_row([hello("alpha", grant_for("alpha", ["CAP_FLOW_INSPECT"]), ["FLOW_REQUEST"],
                          ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"])],
                   SC.PERMISSION_DENIED, "capability_escalation", plugin="alpha",
                   event_type="capability_denied", ignore=ig, detail="CAP_EMIT_FINDINGS")
        stream_row([hello("alpha", grant_for("alpha"), [], ["CAP_FLOW_INSPECT_RAW"])],
                   SC.PERMISSION_DENIED, "capability_escalation", plugin="alpha",
                   event_type="capability_denied", ignore=ig)
        stream_row([hello("alpha", grant_for("alpha"), [], ["CAP_NOPE"])],
                   SC.INVALID_ARGUMENT, "capability_validation", plugin="alpha", ignore=ig)
        # Subscriptions: unknown, raw without the raw capability (not in the manifest, or in the
        # manifest but not granted), sanitized without CAP_FLOW_INSPECT.
        stream_row([hello("alpha", grant_for("alpha"), ["FLOW_EVERYTHING"])],
                   SC.INVALID_ARGUMENT, "subscription", plugin="alpha", ignore=ig,
                   detail="FLOW_EVERYTHING")
        stream_row([hello("alpha", grant_for("alpha"), ["FLOW_REQUEST", "FLOW_RESPONSE_RAW"])],
                   SC.PERMISSION_DENIED, "subscription", plugin="alpha",
                   event_type="capability_denied", ignore=ig, detail="CAP_FLOW_INSPECT_RAW")
        stream_row([hello("rawplug", grant_for("rawplug", ["CAP_FLOW_INSPECT"]),
                          ["FLOW_REQUEST_RAW"])],
                   SC.PERMISSION_DENIED, "subscription", plugin="rawplug",
                   event_type="capability_denied", ignore=ig, detail="CAP_FLOW_INSPECT_RAW")
        stream_row([hello("emitter", grant_for("emitter"), ["FLOW_REQUEST"])],
                   SC.PERMISSION_DENIED, "subscription", plugin="emitter",
                   event_type="capability_denied", ignore=ig, detail="CAP_FLOW_INSPECT")
        # The raw plugin with its full grant is welcome.
        raw = d.connect(ch, "rawplug", ["FLOW_REQUEST_RAW"])
        # Duplicate name while connected.
        alpha = d.connect(ch, "alpha", FLOW_SUBS)
        stream_row([hello("alpha", grant_for("alpha"), FLOW_SUBS)], SC.ALREADY_EXISTS,
                   "duplicate", plugin="alpha", ignore=ig, detail="already connected")
        self.assertIsNone(alpha.status, "the first alpha stays connected")
        self.assertIsNone(raw.status)
        self.assertEqual(d.metric("oxg_active_plugins"), 2)

        # -- the silent stream: DEADLINE_EXCEEDED about 10 s after it opened.
        self.assertEqual(silent.wait_status(timeout=20), SC.DEADLINE_EXCEEDED, silent.details)
        waited = time.monotonic() - silent_opened
        self.assertGreaterEqual(waited, 9.5)
        self.assertLess(waited, 14)
        after = diff(timeout_errors, d.errors())
        for key in timeout_keys:
            self.assertEqual(after.get(key), 1.0, (key, after))
        late = [e for e in d.audit()[timeout_audit:]
                if e.get("metadata", {}).get("code") == "DEADLINE_EXCEEDED"]
        self.assertEqual(len(late), 1, late)
        self.assertEqual(late[0]["event_type"], "rpc_denied")
        self.assertEqual(late[0]["decision"], "deny")
        self.assertNotIn("plugin_id", late[0])

        # -- too many capability tokens outstanding: every token issued above was redeemed or
        # spent, so exactly MAX_OUTSTANDING_TOKENS grants succeed, then RESOURCE_EXHAUSTED.
        snapshot()
        issued = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while issued < MAX_OUTSTANDING_TOKENS:
                n = min(256, MAX_OUTSTANDING_TOKENS - issued)
                for f in [pool.submit(d.grant, ch, "beta") for _ in range(n)]:
                    f.result(timeout=30)
                issued += n
        self.assertEqual(issued, MAX_OUTSTANDING_TOKENS)
        # The grants were audited (capability_grant), not counted as errors.
        self.assertEqual(diff(state["errors"], d.errors()), {})
        grant_row("beta", [], SC.RESOURCE_EXHAUSTED, "limit", plugin="beta",
                  detail="too many capability tokens")
        grant_row("alpha", [], SC.RESOURCE_EXHAUSTED, "limit", plugin="alpha")
        # Refusals that happen before a token would be issued are still the specific ones.
        grant_row("ghost", [], SC.PERMISSION_DENIED, "no_manifest")

        # The connected plugins were never disturbed; leaving is audited.
        for s in (alpha, raw):
            self.assertIsNone(s.status)
            s.send(goodbye("done"))
            s.close_send()
            self.assertEqual(s.wait_status(), SC.OK)
        d.wait_metric("oxg_active_plugins", 0)
        self.assertEqual(d.healthz(), 200)

    def test_a_flood_of_refusals_is_counted_whole_and_audited_within_a_budget(self):
        """Anyone who can reach the port can be refused: every refusal is counted, but the audit
        log takes a burst of 200 and then 50 a second, and says how many it left out."""
        d = BusDaemon(self, [("alpha", ["CAP_FLOW_INSPECT"])])
        ch = d.channel()
        n = 600
        audit_before = len(d.audit())
        for _ in range(n):
            code, _ = d.grant_error(ch, "alpha", auth_token="wrong-token")
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        d.wait_metric("oxg_plugin_errors_total", n, plugin="alpha", reason="auth_token")

        def denied():
            return [e for e in d.audit()[audit_before:] if e["event_type"] == "rpc_denied"]
        written = len(denied())
        self.assertGreaterEqual(written, 200)
        self.assertLess(written, n, "the flood reached the audit log whole")
        # Later refusals are written again, and the first one written says how many were left
        # out: once a refusal has been written after the flood, every refusal is exactly a line
        # or part of a reported count.
        def accounted():
            lines = denied()
            reported = sum(int(e.get("metadata", {}).get("suppressed", 0)) for e in lines)
            return len(lines) + reported, reported
        deadline = time.monotonic() + WAIT
        while True:
            total = d.metric("oxg_plugin_errors_total", plugin="alpha", reason="auth_token")
            seen, reported = accounted()
            if seen == total:
                break
            self.assertLess(seen, total)
            self.assertLess(time.monotonic(), deadline, "suppressed refusals never reported")
            d.grant_error(ch, "alpha", auth_token="wrong-token")
            d.wait_metric("oxg_plugin_errors_total", total + 1, plugin="alpha",
                          reason="auth_token")
        self.assertGreater(reported, 0)
        self.assertEqual(d.healthz(), 200)

    def test_a_grant_announces_its_60_s_expiry_and_is_audited_without_the_token(self):
        """The TTL is 60 s on the daemon's real clock: too slow here. Expiry itself is tested on
        a simulated clock in tests/unit/bus/capabilities_test.cc (ExpiredAfterTheTtlOnTheClock);
        the bus maps every redeem error (unknown, expired, used, other name) to one
        PERMISSION_DENIED/capability_token branch, exercised above. What is checkable here is
        the expiry the daemon announces."""
        d = BusDaemon(self, [("alpha", ["CAP_FLOW_INSPECT"])])
        ch = d.channel()
        before = time.time()
        grant = d.grant(ch, "alpha")
        after = time.time()
        self.assertGreaterEqual(grant.expires_at_unix, int(before) + 60 - 1)
        self.assertLessEqual(grant.expires_at_unix, int(after) + 60 + 1)
        self.assertRegex(grant.capability_token, r"^\S{16,}$")
        audit = [e for e in d.audit() if e["event_type"] == "capability_grant"]
        self.assertEqual(len(audit), 1)
        self.assertEqual(audit[0]["plugin_id"], "alpha")
        self.assertEqual(audit[0]["decision"], "allow")
        self.assertNotIn(grant.capability_token, json.dumps(audit))



# ---- 2. hostile plugin input -----------------------------------------------------------------

class HostileInputTest(BusCase):
    def setUp(self):
        super().setUp()
        self.origin = self.upstream()
        self.d = BusDaemon(self, [
            ("hostile", ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"], FLOW_SUBS),
            ("bystander", ["CAP_FLOW_INSPECT"], ["FLOW_REQUEST"]),
        ])
        self.ch = self.d.channel()

    def failures(self, event, samples=None):
        return self.d.metric("oxg_plugin_event_failures_total", samples, plugin="hostile",
                             event=event)

    def rejected(self):
        return [e for e in self.d.audit()
                if e["event_type"] == "finding_rejected" and e.get("plugin_id") == "hostile"]

    def stored(self):
        return [f for f in self.d.findings() if f["plugin"] == "hostile"]

    def assert_still_serving(self, s):
        """The stream is open: a valid finding sent after the bad input is stored."""
        n = len(self.stored())
        marker = "still open %d" % n
        s.send(valid_finding(marker))
        pu.wait_until(lambda: any(f["message"] == marker for f in self.d.findings()), WAIT,
                      what="finding %r in findings.jsonl" % marker)
        self.assertIsNone(s.status, s.details)

    def test_bad_findings_are_refused_one_by_one_and_the_stream_stays_open(self):
        d = self.d
        s = d.connect(self.ch, "hostile", FLOW_SUBS)
        self.assert_still_serving(s)
        cases = [
            # 10 000 metadata keys (about 150 KiB: under the 1 MiB message limit).
            ("metadata", finding_bytes(metadata=[(b"k%05d" % i, b"v") for i in range(10000)])),
            # Invalid UTF-8 in the message, in a metadata value, in the type.
            ("utf-8", finding_bytes(message=b"bad \xff\xfe bytes")),
            ("utf-8", finding_bytes(metadata=[(b"key", b"\xc3\x28")])),
            ("utf-8", finding_bytes(type_=b"itest.\xe2\x82")),
            # NUL, a duplicate metadata key, no severity.
            ("nul", finding_bytes(message=b"nul \x00 inside")),
            ("duplicate", finding_bytes(metadata=[(b"k", b"1"), (b"k", b"2")])),
            ("severity", finding_bytes(severity=0)),
            # 900 KiB of evidence: a legal message size, far over the 64 KiB finding limit.
            ("size", finding_bytes(evidence=b"e" * (900 << 10))),
        ]
        audit_before = len(self.rejected())
        for i, (what, data) in enumerate(cases, 1):
            self.assertLess(len(data), MAX_RECEIVE, what)
            s.send(data)
            d.wait_metric("oxg_plugin_event_failures_total", i, plugin="hostile", event="finding")
            self.assertIsNone(s.status, "%s ended the stream: %s" % (what, s.details))
        pu.wait_until(lambda: len(self.rejected()) - audit_before == len(cases), WAIT,
                      what="%d finding_rejected audit lines" % len(cases))
        for line in self.rejected()[audit_before:]:
            self.assertEqual(line["component"], "plugin_bus")
            self.assertEqual(line["decision"], "deny")
            self.assertTrue(line.get("reason"), line)
        self.assert_still_serving(s)
        self.assertEqual(self.failures("finding"), len(cases))
        # Nothing hostile was stored.
        for f in self.stored():
            self.assertTrue(f["message"].startswith("still open"), f)
        # Handled-event latency is observed per plugin (contract §4).
        self.assertGreaterEqual(d.metric("oxg_plugin_event_duration_seconds_count",
                                         plugin="hostile", event="finding"), len(cases) + 2)
        self.assertEqual(d.healthz(), 200)

    def test_a_full_set_of_metadata_keeps_room_for_the_flow_id(self):
        """64 metadata entries are allowed; the flow id the SDKs add is not one of them."""
        d = self.d
        s = d.connect(self.ch, "hostile", FLOW_SUBS)
        flow_id = "01M7YSPK18KQZMNWGHG8E020EP"
        s.send(finding_bytes(message=b"sixty-four keys",
                             metadata=[(b"k%02d" % i, b"v") for i in range(64)],
                             flow_id=flow_id.encode()))
        pu.wait_until(lambda: any(f["message"] == "sixty-four keys" for f in self.stored()),
                      WAIT, what="the finding with 64 metadata entries")
        stored = [f for f in self.stored() if f["message"] == "sixty-four keys"][0]
        self.assertEqual(len(stored["meta"]), 65)
        self.assertEqual(stored["meta"]["flow_id"], flow_id)
        self.assertEqual(self.failures("finding"), 0)

    def test_a_flood_of_unknown_events_is_counted_exactly_and_audited_once(self):
        d = self.d
        s = d.connect(self.ch, "hostile", FLOW_SUBS)
        audit_before = len(d.audit())
        n = 10000
        kinds = [
            b"",                                  # PluginEvent with no oneof set
            pb_bytes(99, b"from the future"),     # an unknown field number
            pb_bytes(4, b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),  # traceparent only
            pb_int(1000, 7),
        ]
        for i in range(n):
            s.send(kinds[i % len(kinds)])
        d.wait_metric("oxg_plugin_event_failures_total", n, timeout=60, plugin="hostile",
                      event="unknown")
        self.assertIsNone(s.status, s.details)
        # A second hello and bytes that are no PluginEvent: counted under their own names.
        s.send(hello("hostile", "again"))
        s.send(b"\xff\xff\xff")
        d.wait_metric("oxg_plugin_event_failures_total", 1, plugin="hostile", event="hello")
        d.wait_metric("oxg_plugin_event_failures_total", 1, plugin="hostile", event="malformed")
        self.assert_still_serving(s)
        self.assertEqual(self.failures("unknown"), n, "counted exactly once each")
        new = [e for e in d.audit()[audit_before:] if e.get("plugin_id") == "hostile"
               and e["event_type"] == "rpc_denied"]
        by_event = {}
        for e in new:
            by_event.setdefault(e.get("metadata", {}).get("event"), []).append(e)
        self.assertEqual({k: len(v) for k, v in by_event.items()},
                         {"unknown": 1, "hello": 1, "malformed": 1}, new)
        # No refusal counted: the stream was never refused.
        self.assertEqual(d.metric("oxg_plugin_errors_total", plugin="hostile"), 0)
        self.assertEqual(d.healthz(), 200)

    def assert_oversize_counted(self, errors_before, audit_before):
        """An over-size message ends the stream: gRPC refuses it by cancelling the call (the
        plugin reads RESOURCE_EXHAUSTED), so the daemon sees a cancelled stream and counts it as
        such, once, in oxg_rpc_errors_total and in the plugin's stream_recv errors (issue:
        "refused with a count")."""
        d = self.d
        changed = diff(errors_before, d.errors())
        with self.subTest("oxg_rpc_errors_total counts the cancelled stream"):
            self.assertEqual(changed.get(series_key(
                "oxg_rpc_errors_total", {"component": "plugin_bus", "method": "EventStream",
                                         "code": "CANCELLED"})), 1.0, changed)
        with self.subTest("oxg_plugin_errors_total{plugin=hostile} counts it once"):
            charged = {k: v for k, v in changed.items()
                       if k[0] == "oxg_plugin_errors_total" and ("plugin", "hostile") in k[1]}
            self.assertEqual(charged, {series_key("oxg_plugin_errors_total", {
                "plugin": "hostile", "reason": "stream_recv"}): 1.0}, changed)
        disconnects = [e for e in d.audit()[audit_before:]
                       if e["event_type"] == "plugin_disconnect" and e.get("plugin_id") == "hostile"]
        self.assertEqual(len(disconnects), 1, disconnects)

    def test_messages_over_1_mib_end_the_stream_with_resource_exhausted(self):
        d = self.d
        s = d.connect(self.ch, "hostile", FLOW_SUBS)
        bystander = d.connect(self.ch, "bystander", ["FLOW_REQUEST"])
        errors_before, audit_before = d.errors(), len(d.audit())
        # 64 MiB of message text in one finding.
        s.send(finding_bytes(message=b"m" * (64 << 20)))
        self.assertEqual(s.wait_status(timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         s.details)
        d.wait_metric("oxg_active_plugins", 1)
        self.assertNotIn({"plugin": "hostile"}, d.series("oxg_plugin_queue_length"))
        self.assertNotIn({"plugin": "hostile"}, d.series("oxg_plugin_queue_capacity"))
        # Nothing of it was parsed as a finding.
        self.assertEqual(self.failures("finding"), 0)
        self.assertEqual(self.stored(), [])
        self.assert_oversize_counted(errors_before, audit_before)

        # The daemon is healthy: /healthz, the bystander's stream, a new connection of the same
        # plugin, and traffic still reaching both.
        self.assertEqual(d.healthz(), 200)
        self.assertIsNone(bystander.status)
        again = d.connect(self.ch, "hostile", FLOW_SUBS)
        status, _ = d.proxy_get(self.origin.url("/hello"))
        self.assertEqual(status, 200)
        self.assertEqual(again.wait_flows(2), 2)
        self.assertEqual(bystander.wait_flows(1), 1)
        self.assert_still_serving(again)

        # The limit is exact: a message of exactly 1 MiB is read (and refused by finding
        # validation, the stream staying open); one byte more ends the stream.
        probe = finding_bytes(evidence=b"x" * (MAX_RECEIVE - 64))
        at_limit = finding_bytes(evidence=b"x" * (2 * MAX_RECEIVE - 64 - len(probe)))
        self.assertEqual(len(at_limit), MAX_RECEIVE)
        again.send(at_limit)
        d.wait_metric("oxg_plugin_event_failures_total", 1, plugin="hostile", event="finding")
        self.assertIsNone(again.status)
        over = finding_bytes(evidence=b"x" * (2 * MAX_RECEIVE - 64 - len(probe) + 1))
        self.assertEqual(len(over), MAX_RECEIVE + 1)
        errors_before, audit_before = d.errors(), len(d.audit())
        again.send(over)
        self.assertEqual(again.wait_status(), grpc.StatusCode.RESOURCE_EXHAUSTED, again.details)
        d.wait_metric("oxg_active_plugins", 1)
        self.assertEqual(d.healthz(), 200)
        self.assertIsNone(bystander.status)
        self.assert_oversize_counted(errors_before, audit_before)


# ---- 3. a slow plugin never slows the proxy ----------------------------------------------------

class SlowPluginTest(BusCase):
    REQUESTS = 3000

    def test_a_stalled_plugin_drops_only_its_own_events_and_every_event_is_accounted_for(self):
        n = self.REQUESTS
        origin = self.upstream(fast=True)
        d = BusDaemon(self, [("fast", ["CAP_FLOW_INSPECT"], FLOW_SUBS),
                             ("stalled", ["CAP_FLOW_INSPECT"], FLOW_SUBS)])
        fast = d.connect(d.channel(), "fast", FLOW_SUBS)
        # Its own connection (the HTTP/2 connection window is shared by a channel's streams),
        # with a small fixed receive window so what the transport buffers is small next to the
        # 1024-event queue.
        stalled = d.connect(d.channel([("grpc.http2.bdp_probe", 0),
                                       ("grpc.http2.lookahead_bytes", 16384)]),
                            "stalled", FLOW_SUBS, read=False)
        samples = d.samples()
        for name in ("fast", "stalled"):
            self.assertEqual(d.metric("oxg_plugin_queue_capacity", samples, plugin=name),
                             QUEUE_CAPACITY)
            self.assertEqual(d.metric("oxg_plugin_queue_length", samples, plugin=name), 0)
        self.assertEqual(d.metric("oxg_active_plugins", samples), 2)

        # Requests carry 2 KiB of header so the stalled plugin's transport fills quickly.
        # The test's own reader must not be the bottleneck of the fast plugin: the senders wait
        # while more than 600 of its events are in flight (well under the 1024 queue), so its
        # queue cannot overflow however slow this machine is. The stalled plugin is not waited
        # for.
        def keep_fast_plugin_ahead(sent):
            fast.wait(lambda: 2 * sent - fast.flow_count <= 600 or fast.status is not None,
                      60, "the fast plugin to keep up")

        started = time.monotonic()
        d.send_requests(origin.url("/hello"), n, threads=4, headers={"X-Pad": "p" * 2048},
                        gate=keep_fast_plugin_ahead)
        elapsed = time.monotonic() - started
        # Every flow was published to both plugins: delivered to a queue or dropped.
        for sub in FLOW_SUBS:
            pu.wait_until(
                lambda: d.metric("oxg_flow_events_total", subscription=sub) +
                d.metric("oxg_flow_events_dropped_total", subscription=sub) == 2 * n,
                WAIT * 2, what="%d %s events published" % (2 * n, sub))
        samples = d.samples()
        self.assertEqual(d.metric("oxg_proxy_capture_dropped_total", samples), 0)
        self.assertEqual(len(d.history()), n)
        dropped = {name: {ev: d.metric("oxg_plugin_queue_dropped_total", samples, plugin=name,
                                       event=ev)
                          for ev in ("flow_request", "flow_response")}
                   for name in ("fast", "stalled")}
        stalled_dropped = int(sum(dropped["stalled"].values()))
        self.assertEqual(dropped["fast"], {"flow_request": 0, "flow_response": 0})
        self.assertGreater(stalled_dropped, 0, "the stalled plugin's queue never filled")
        self.assertEqual(d.metric("oxg_flow_events_dropped_total", samples, reason="queue_full"),
                         stalled_dropped)
        self.assertEqual(d.metric("oxg_flow_events_dropped_total", samples), stalled_dropped)
        self.assertEqual(d.metric("oxg_flow_events_total", samples), 4 * n - stalled_dropped)
        # The stalled plugin's queue is full and stays so; the fast one keeps up.
        d.wait_metric("oxg_plugin_queue_length", QUEUE_CAPACITY, plugin="stalled")
        d.wait_metric("oxg_plugin_queue_length", 0, plugin="fast")
        self.assertEqual(fast.wait_flows(2 * n), 2 * n)
        self.assertLess(stalled.flow_count, 2 * n - stalled_dropped)
        self.assertIsNone(stalled.status, stalled.details)

        # It resumes and drains: what it receives plus what was dropped for it is exactly what
        # was published.
        stalled.reading.set()
        stalled.wait(lambda: stalled.flow_count >= 2 * n - stalled_dropped, 60,
                     "the stalled plugin to drain")
        d.wait_metric("oxg_plugin_queue_length", 0, plugin="stalled")
        for s in (fast, stalled):
            s.send(goodbye("done"))
            s.close_send()
            self.assertEqual(s.wait_status(), grpc.StatusCode.OK, s.details)
        self.assertEqual(fast.flow_count, 2 * n)
        self.assertEqual(stalled.flow_count + stalled_dropped, 2 * n)
        samples = d.samples()
        for name in ("fast", "stalled"):
            self.assertEqual(sum(dropped[name].values()),
                             d.metric("oxg_plugin_queue_dropped_total", samples, plugin=name),
                             "nothing dropped after the traffic stopped")
        self.assertEqual(d.metric("oxg_flow_events_dropped_total", samples), stalled_dropped,
                         "nothing dropped as disconnected")
        # The disconnect audit lines carry the same accounting. They are written when the
        # daemon has finished the call, which may be just after the plugin saw its status.
        def disconnects():
            return {e["plugin_id"]: e["metadata"] for e in d.audit()
                    if e["event_type"] == "plugin_disconnect"}
        pu.wait_until(lambda: len(disconnects()) == 2, WAIT, what="2 plugin_disconnect lines")
        leaving = disconnects()
        self.assertEqual(leaving["fast"], {"delivered": str(2 * n), "dropped": "0"})
        self.assertEqual(leaving["stalled"], {"delivered": str(2 * n - stalled_dropped),
                                              "dropped": str(stalled_dropped)})
        # A request precedes its response on a stream, each flow is complete on the fast one,
        # and the stalled one got each event at most once.
        seen = {}
        for f in fast.flows():
            self.assertEqual(f.variant, common_pb2.FLOW_VARIANT_SANITIZED)
            seen.setdefault(f.flow_id, []).append(f.type)
        self.assertEqual(len(seen), n)
        for types in seen.values():
            self.assertEqual(types, [common_pb2.FlowEvent.FLOW_REQUEST,
                                     common_pb2.FlowEvent.FLOW_RESPONSE])
        keys = [(f.flow_id, f.type) for f in stalled.flows()]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertTrue(set(keys) <= {(k, t) for k, ts in seen.items() for t in ts})
        sys.stderr.write("[%d requests through the proxy in %.2fs with a stalled plugin; "
                         "%d of its %d events dropped] " % (n, elapsed, stalled_dropped, 2 * n))


    def test_a_stalled_plugin_that_leaves_frees_its_name(self):
        """A plugin that stopped reading cannot finish its call (a write is stuck in flight):
        after its goodbye the daemon cancels the call within a bounded time, so the plugin can
        connect again under its name instead of meeting ALREADY_EXISTS for ever."""
        origin = self.upstream(fast=True)
        d = BusDaemon(self, [("stalled", ["CAP_FLOW_INSPECT"], FLOW_SUBS)])
        stalled = d.connect(d.channel([("grpc.http2.bdp_probe", 0),
                                       ("grpc.http2.lookahead_bytes", 16384)]),
                            "stalled", FLOW_SUBS, read=False)
        d.send_requests(origin.url("/hello"), 600, threads=4, headers={"X-Pad": "p" * 2048})
        d.wait_metric("oxg_plugin_queue_length", QUEUE_CAPACITY, plugin="stalled")
        stalled.send(goodbye("leaving while stalled"))
        stalled.close_send()
        d.wait_metric("oxg_active_plugins", 0, timeout=20)
        stalled.cleanup()
        again = d.connect(d.channel(), "stalled", FLOW_SUBS)
        self.assertIsNone(again.status, again.details)
        d.wait_metric("oxg_active_plugins", 1)
        leaving = [e for e in d.audit() if e["event_type"] == "plugin_disconnect"]
        self.assertEqual(leaving[0]["reason"], "goodbye: leaving while stalled")
        # Every event offered was delivered or counted dropped, the cancelled ones included.
        md = leaving[0]["metadata"]
        self.assertEqual(int(md["delivered"]) + int(md["dropped"]), 1200)


# ---- 4. real clients end to end ----------------------------------------------------------------

SDK_PLUGIN = r"""
import sys
from oxg_plugin import Finding, Plugin

plugin = Plugin(capabilities=["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"],
                subscriptions=["FLOW_REQUEST", "FLOW_RESPONSE"], reconnect_initial=0.1)


@plugin.on_request
def request(msg):
    plugin.log("request %s %s %s" % (msg.flow_id, msg.traceparent, msg.target))


@plugin.on_response
def response(msg):
    plugin.emit(Finding("itest.flow-seen", "response %d for flow %s" % (msg.status, msg.flow_id),
                        severity="low", target=msg.host,
                        metadata={"status": str(msg.status)}),
                cause=msg)
    plugin.log("response %s %s %d" % (msg.flow_id, msg.traceparent, msg.status))


sys.exit(plugin.main())
"""


def read_trace_file(path):
    """Contract §6.5: line 1 is "[", then one event per line followed by ","; metadata events
    ("ph": "M") are left out."""
    spans = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0] == "[", lines[0]
    for line in lines[1:]:
        line = line.strip()
        if not line or line == "]":
            continue
        event = json.loads(line.rstrip(","))
        if event.get("ph") == "X":
            spans.append(event)
    return spans


class EndToEndTest(BusCase):
    def start_plugin(self, argv, name, d, token_env):
        env = it.clean_env(OXG_BUS_ADDR=d.bus_addr, OXG_PLUGIN_NAME=name, **token_env)
        p = it.Proc(argv, env=env, cwd=self.tmp)
        self.procs.append(p)
        return p

    def test_sdk_plugins_get_real_flows_and_their_findings_join_the_flow_trace(self):
        origin = self.upstream()
        trace_file = os.path.join(self.tmp, "spans.json")
        cpp_bin = it.binary("oxg_example_cpp_plugin")
        headers_bin = it.binary("oxg-passive-headers")
        have_cpp = os.access(cpp_bin, os.X_OK)
        have_headers = os.access(headers_bin, os.X_OK)
        caps = ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"]
        # No --token: the daemon generates <data-dir>/token, which the plugins read.
        d = BusDaemon(self, [("py-e2e", caps, FLOW_SUBS),
                             ("example-cpp", caps, ["FLOW_REQUEST"]),
                             ("passive-headers", caps, FLOW_SUBS)],
                      extra=["--trace-file", trace_file, "--trace-sample-ratio", "1"], token=None)
        token_file = os.path.join(d.data, "token")

        script = os.path.join(self.tmp, "sdk_plugin.py")
        with open(script, "w") as f:
            f.write(SDK_PLUGIN)
        plugins = {"py-e2e": self.start_plugin(
            [sys.executable, "-B", script], "py-e2e", d,
            {"PYTHONPATH": PYTHON_DIR, "OXG_AUTH_TOKEN_FILE": token_file})}
        if have_cpp:
            plugins["example-cpp"] = self.start_plugin([cpp_bin], "example-cpp", d,
                                                       {"OXG_AUTH_TOKEN": d.token})
        else:
            sys.stderr.write("[no %s: the C++ example plugin is not checked] " % cpp_bin)
        if have_headers:
            plugins["passive-headers"] = self.start_plugin(
                [headers_bin], "passive-headers", d,
                {"OXG_AUTH_TOKEN_FILE": token_file, "OXG_PLUGIN_CONFIG": "{}"})
        else:
            sys.stderr.write("[no %s: passive-headers is not checked] " % headers_bin)
        plugins["py-e2e"].wait_for_stderr(r"connected to 0xgend", timeout=WAIT)
        d.wait_metric("oxg_active_plugins", len(plugins))
        loads = {e["plugin_id"] for e in d.audit() if e["event_type"] == "plugin_load"}
        self.assertEqual(loads, set(plugins))

        # Real traffic through the proxy.
        # The last one sets cookies without SameSite/Secure: passive-headers reports those.
        paths = ["/hello?i=0", "/hello?i=1", "/cookie"]
        k = len(paths)
        for path in paths:
            status, _ = d.proxy_get(origin.url(path))
            self.assertEqual(status, 200)
        expected = {"py-e2e": k, "example-cpp": 1 if have_cpp else 0}

        def by_plugin():
            out = {}
            for f in d.findings():
                out.setdefault(f["plugin"], []).append(f)
            return out

        pu.wait_until(lambda: all(len(by_plugin().get(n, [])) >= c for n, c in expected.items())
                      and (not have_headers or by_plugin().get("passive-headers")),
                      WAIT, what="findings from %s" % sorted(plugins))
        history = {h["flow_id"]: h for h in pu.wait_until(
            lambda: len(d.history()) >= k and d.history(), WAIT, what="history")}
        self.assertEqual(len(history), k)
        findings = by_plugin()
        self.assertEqual(len(findings["py-e2e"]), k, findings["py-e2e"])
        flows_with_findings = set()
        for name, fs in findings.items():
            for f in fs:
                self.assertEqual(f["version"], "0.2")
                self.assertRegex(f["id"], r"^[0-9A-Z]{26}$")
                self.assertRegex(f["trace_id"], r"^[0-9a-f]{32}$", f)
                flow_id = f["meta"].get("flow_id")
                self.assertIn(flow_id, history, f)
                # The finding carries the trace id of the flow that caused it.
                self.assertEqual(f["trace_id"], history[flow_id]["trace_id"], f)
                if name == "py-e2e":
                    self.assertEqual(f["type"], "itest.flow-seen")
                    self.assertEqual(f["severity"], "low")
                    self.assertEqual(f["message"], "response 200 for flow %s" % flow_id)
                    self.assertEqual(f["meta"]["status"], "200")
                    flows_with_findings.add(flow_id)
                elif name == "example-cpp":
                    self.assertEqual(f["type"], "example.host-seen")
                    self.assertEqual(f["meta"]["host"], "127.0.0.1:%d" % origin.port)
        self.assertEqual(flows_with_findings, set(history))
        # The SDK plugin saw each flow's traceparent; that of the response is the finding's.
        log = plugins["py-e2e"].stderr
        for flow_id, h in history.items():
            m = re.search(r"response %s 00-([0-9a-f]{32})-([0-9a-f]{16})-01 200" % flow_id, log)
            self.assertTrue(m, log)
            self.assertEqual(m.group(1), h["trace_id"])

        # Findings are audited inside their receive_event span: same trace id.
        received = [e for e in d.audit() if e["event_type"] == "finding_received"
                    and e.get("plugin_id") == "py-e2e"]
        self.assertEqual(len(received), k)
        self.assertEqual({e.get("trace_id") for e in received},
                         {h["trace_id"] for h in history.values()})

        # The plugins leave on SIGTERM with a goodbye; then the daemon, which flushes its spans.
        for name, p in plugins.items():
            it.send_signal(p, it.SIGTERM)
            self.assertEqual(p.wait(WAIT), 0, "%s: %s" % (name, p.stderr))
        d.wait_metric("oxg_active_plugins", 0)
        leaving = {e["plugin_id"]: e["reason"] for e in d.audit()
                   if e["event_type"] == "plugin_disconnect"}
        self.assertEqual(set(leaving), set(plugins))
        for name, reason in leaving.items():
            self.assertTrue(reason.startswith("goodbye"), (name, reason))
        self.assertEqual(d.stop(), 0, d.proc.stderr)

        spans = read_trace_file(trace_file)
        for flow_id, h in history.items():
            self.check_flow_trace(spans, flow_id, h["trace_id"], plugins)
        sys.stderr.write("[findings: %s; %d spans] " % (
            ", ".join("%s %d" % (n, len(fs)) for n, fs in sorted(findings.items())), len(spans)))

    def check_flow_trace(self, spans, flow_id, trace_id, plugins):
        """Contract §5: capture_flow -> publish_flow_event -> dispatch_flow -> dispatch_event
        (one per plugin) -> receive_event (the finding, sent with the event's traceparent)."""
        mine = [s for s in spans if s["args"]["trace_id"] == trace_id]
        by_id = {s["args"]["span_id"]: s for s in mine}

        def named(name):
            return [s for s in mine if s["name"] == name]

        def attr(span, key):
            return span["args"].get("attributes", {}).get(key)

        def parent(span):
            return by_id.get(span["args"].get("parent_span_id"))

        what = "trace %s of flow %s: %s" % (trace_id, flow_id,
                                             sorted(s["name"] for s in mine))
        capture = named("proxy.capture_flow")
        self.assertEqual(len(capture), 1, what)
        self.assertEqual(attr(capture[0], "oxg.flow.id"), flow_id, what)
        publish = named("proxy.publish_flow_event")
        self.assertEqual(sorted(attr(s, "oxg.flow.phase") for s in publish),
                         ["request", "response"], what)
        for s in publish:
            self.assertIs(parent(s), capture[0], what)
        dispatch = named("plugin_bus.dispatch_flow")
        self.assertEqual(len(dispatch), 2, what)  # one per message: only sanitized subscribers
        phase_of = {}
        for s in dispatch:
            self.assertIn(parent(s), publish, what)
            self.assertEqual(attr(s, "oxg.flow.variant"), "sanitized", what)
            phase_of[s["args"]["span_id"]] = attr(parent(s), "oxg.flow.phase")
        events = named("plugin_bus.dispatch_event")
        got = sorted((attr(s, "oxg.plugin.id"), phase_of[parent(s)["args"]["span_id"]])
                     for s in events if parent(s) in dispatch)
        self.assertEqual(len(got), len(events), what)
        want = []
        for name in plugins:
            want += [(name, "request")]
            if name != "example-cpp":
                want += [(name, "response")]
        self.assertEqual(got, sorted(want), what)
        receive = [s for s in named("plugin_bus.receive_event")
                   if attr(s, "oxg.plugin.id") == "py-e2e"]
        self.assertEqual(len(receive), 1, what)
        cause = parent(receive[0])
        self.assertIsNotNone(cause, what)
        self.assertEqual(cause["name"], "plugin_bus.dispatch_event", what)
        self.assertEqual(attr(cause, "oxg.plugin.id"), "py-e2e", what)
        self.assertEqual(phase_of[parent(cause)["args"]["span_id"]], "response", what)
        self.assertEqual(attr(receive[0], "oxg.event.type"), "finding", what)
        kinds = {"proxy.capture_flow": "server", "proxy.publish_flow_event": "internal",
                 "plugin_bus.dispatch_flow": "internal", "plugin_bus.dispatch_event": "producer",
                 "plugin_bus.receive_event": "consumer"}
        for span in capture + publish + dispatch + events + receive:
            self.assertEqual(span["args"]["kind"], kinds[span["name"]], span)


# ---- 5. many plugins, disconnects and reconnects -------------------------------------------------

class ManyPluginsTest(BusCase):
    PLUGINS = 100
    STREAMS_PER_CHANNEL = 10

    def connect_all(self, d, names):
        channels = [d.channel() for _ in range(len(names) // self.STREAMS_PER_CHANNEL + 1)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(
                lambda i: d.connect(channels[i // self.STREAMS_PER_CHANNEL], names[i], FLOW_SUBS),
                range(len(names))))

    def assert_series(self, d, names):
        samples = d.samples()
        for family in ("oxg_plugin_queue_length", "oxg_plugin_queue_capacity"):
            self.assertEqual(sorted(lab["plugin"] for lab in d.series(family, samples)),
                             sorted(names), family)
        for name in names:
            self.assertEqual(d.metric("oxg_plugin_queue_capacity", samples, plugin=name),
                             QUEUE_CAPACITY)
        self.assertEqual(d.metric("oxg_active_plugins", samples), len(names))

    def test_100_plugins_at_once_and_no_stale_series_or_queues_after_they_leave(self):
        n = self.PLUGINS
        origin = self.upstream(fast=True)
        names = ["swarm-%03d" % i for i in range(n)]
        d = BusDaemon(self, [(name, ["CAP_FLOW_INSPECT"], FLOW_SUBS) for name in names])

        def traffic_reaches_all(streams, requests=3):
            before = [s.flow_count for s in streams]
            d.send_requests(origin.url("/hello"), requests, threads=1)
            for s, b in zip(streams, before):
                self.assertEqual(s.wait_flows(b + 2 * requests), b + 2 * requests)

        for round_ in (1, 2):
            audit_before = len(d.audit())
            streams = self.connect_all(d, names)
            d.wait_metric("oxg_active_plugins", n)
            self.assert_series(d, names)
            loads = [e["plugin_id"] for e in d.audit()[audit_before:]
                     if e["event_type"] == "plugin_load"]
            self.assertEqual(sorted(loads), names)
            traffic_reaches_all(streams)
            samples = d.samples()
            self.assertEqual(d.metric("oxg_plugin_queue_dropped_total", samples), 0)
            self.assertEqual(d.metric("oxg_flow_events_dropped_total", samples), 0)

            # Half leave with goodbye, half vanish (cancelled calls).
            for i, s in enumerate(streams):
                if i % 2 == 0:
                    s.send(goodbye("round %d" % round_))
                    s.close_send()
                else:
                    s.cancel()
            for i, s in enumerate(streams):
                self.assertEqual(s.wait_status(),
                                 grpc.StatusCode.OK if i % 2 == 0 else grpc.StatusCode.CANCELLED,
                                 (names[i], s.details))
            d.wait_metric("oxg_active_plugins", 0)
            self.assert_series(d, [])
            pu.wait_until(lambda: len([e for e in d.audit()[audit_before:]
                                       if e["event_type"] == "plugin_disconnect"]) == n,
                          WAIT, what="%d plugin_disconnect audit lines" % n)
            leaving = {e["plugin_id"]: e["reason"] for e in d.audit()[audit_before:]
                       if e["event_type"] == "plugin_disconnect"}
            self.assertEqual(sorted(leaving), names)
            for i, name in enumerate(names):
                if i % 2 == 0:
                    self.assertEqual(leaving[name], "goodbye: round %d" % round_)
                else:
                    self.assertFalse(leaving[name].startswith("goodbye"), leaving[name])

            # Nobody is routed any more: a flow is delivered to no queue and dropped for none.
            samples = d.samples()
            delivered = d.metric("oxg_flow_events_total", samples)
            dropped = d.metric("oxg_flow_events_dropped_total", samples)
            flows = len(d.history())
            d.send_requests(origin.url("/hello"), 1, threads=1)
            pu.wait_until(lambda: len(d.history()) == flows + 1, WAIT, what="history line")
            samples = d.samples()
            self.assertEqual(d.metric("oxg_flow_events_total", samples), delivered)
            self.assertEqual(d.metric("oxg_flow_events_dropped_total", samples), dropped)
        self.assertEqual(d.healthz(), 200)

    def test_a_vanished_plugin_is_counted_as_a_stream_error_and_a_half_close_is_not(self):
        """A plugin whose call is cancelled (it crashed, its connection dropped) is a plugin error
        (contract §4 reason `stream_recv`, and a disconnect audit line saying the connection was
        lost); one that closes its side without a goodbye is audited as such."""
        d = BusDaemon(self, [("vanish", ["CAP_FLOW_INSPECT"], FLOW_SUBS),
                             ("halfclose", ["CAP_FLOW_INSPECT"], FLOW_SUBS)])
        ch = d.channel()
        vanish = d.connect(ch, "vanish", FLOW_SUBS)
        half = d.connect(ch, "halfclose", FLOW_SUBS)
        half.close_send()
        self.assertEqual(half.wait_status(), grpc.StatusCode.OK, half.details)
        vanish.cancel()
        self.assertEqual(vanish.wait_status(), grpc.StatusCode.CANCELLED)
        d.wait_metric("oxg_active_plugins", 0)
        pu.wait_until(lambda: len([e for e in d.audit()
                                   if e["event_type"] == "plugin_disconnect"]) == 2,
                      WAIT, what="2 plugin_disconnect audit lines")
        leaving = {e["plugin_id"]: e["reason"] for e in d.audit()
                   if e["event_type"] == "plugin_disconnect"}
        self.assertEqual(leaving["halfclose"], "closed without goodbye")
        self.assertEqual(d.metric("oxg_plugin_errors_total", plugin="halfclose"), 0)
        with self.subTest("the vanished plugin is counted once as stream_recv"):
            self.assertEqual(d.metric("oxg_plugin_errors_total", plugin="vanish",
                                      reason="stream_recv"), 1, d.errors())
        with self.subTest("its disconnect audit line says the connection was lost"):
            self.assertTrue(leaving["vanish"].startswith("connection lost"), leaving)


# ---- 6. shutdown with plugins connected ----------------------------------------------------------

class ShutdownTest(BusCase):
    def test_sigterm_ends_every_stream_with_unavailable_and_the_daemon_exits_0(self):
        origin = self.upstream(fast=True)
        d = BusDaemon(self, [("one", ["CAP_FLOW_INSPECT"], FLOW_SUBS),
                             ("two", ["CAP_FLOW_INSPECT"], FLOW_SUBS),
                             ("sleepy", ["CAP_FLOW_INSPECT"], FLOW_SUBS)])
        ch = d.channel()
        one = d.connect(ch, "one", FLOW_SUBS)
        two = d.connect(ch, "two", ["FLOW_RESPONSE"])
        # A plugin that stopped reading with events waiting for it, and a stream still without
        # its hello.
        sleepy = d.connect(d.channel([("grpc.http2.bdp_probe", 0),
                                      ("grpc.http2.lookahead_bytes", 16384)]),
                           "sleepy", FLOW_SUBS, read=False)
        pending = d.stream(ch)
        d.send_requests(origin.url("/hello"), 300, threads=2, headers={"X-Pad": "p" * 2048})
        self.assertEqual(one.wait_flows(600), 600)
        self.assertEqual(two.wait_flows(300), 300)
        pu.wait_until(lambda: d.metric("oxg_plugin_queue_length", plugin="sleepy") > 0, WAIT,
                      what="events waiting for the sleepy plugin")

        started = time.monotonic()
        it.send_signal(d.proc, it.SIGTERM)
        for name, s in (("one", one), ("two", two), ("sleepy", sleepy), ("pending", pending)):
            if name == "sleepy":
                s.reading.set()  # it reads again: what was written, then the status
            self.assertEqual(s.wait_status(timeout=10), grpc.StatusCode.UNAVAILABLE,
                             (name, s.details))
        self.assertEqual(d.proc.wait(10), 0, d.proc.stderr)
        self.assertLess(time.monotonic() - started, 5.0, "shutdown took too long")
        self.assertEqual(one.flow_count, 600, "nothing after the shutdown")
        leaving = {e["plugin_id"] for e in d.audit() if e["event_type"] == "plugin_disconnect"}
        self.assertEqual(leaving, {"one", "two", "sleepy"})
        self.assertEqual(d.audit()[-1]["reason"], "daemon stopped")

if __name__ == "__main__":
    it.main()
