"""The client against an in-process fake PluginBus: handshake order, welcome, callbacks, findings,
goodbye, reconnects and fatal refusals. Every wait is bounded; nothing sleeps and hopes."""

import io
import os
import queue
import socket
import threading
import time
import unittest
from concurrent import futures

import grpc

from oxg import common_pb2, plugin_bus_pb2, plugin_bus_pb2_grpc
from oxg_plugin import Finding, Plugin, PluginError

WAIT = 10.0  # upper bound for anything that should happen promptly
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FLOW_ID = "01HZY0M6Q8W3V5J2K7N4P9R1ST"
_END = object()


class FakeStream:
    """One EventStream call as the fake server saw it."""

    def __init__(self):
        self.cond = threading.Condition()
        self.events = []  # PluginEvents in arrival order
        self.half_closed = False
        self.outgoing = queue.Queue()

    def record(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=WAIT):
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def of_kind(self, kind):
        with self.cond:
            return [e for e in self.events if e.WhichOneof("event") == kind]


class FakeBus(plugin_bus_pb2_grpc.PluginBusServicer):
    def __init__(self):
        self.cond = threading.Condition()
        self.grants = []
        self.streams = []
        # Statuses to refuse the next calls with, in order (None: accept).
        self.grant_refusals = []
        self.stream_refusals = []
        # Streams (by index) that never get a welcome.
        self.silent_streams = set()
        # When set, GrantCapabilities waits for this event (bounded) before answering.
        self.grant_gate = None

    def GrantCapabilities(self, request, context):
        with self.cond:
            self.grants.append(request)
            number = len(self.grants)
            refusal = self.grant_refusals.pop(0) if self.grant_refusals else None
            self.cond.notify_all()
        if self.grant_gate is not None:
            self.grant_gate.wait(WAIT)
        if refusal is not None:
            context.abort(refusal, "refused by the test")
        return plugin_bus_pb2.PluginCapabilityGrant(capability_token=f"cap-{number}",
                                                    expires_at_unix=int(time.time()) + 60)

    def EventStream(self, request_iterator, context):
        stream = FakeStream()
        with self.cond:
            index = len(self.streams)
            self.streams.append(stream)
            refusal = self.stream_refusals.pop(0) if self.stream_refusals else None
            self.cond.notify_all()
        first = next(request_iterator, None)
        if first is not None:
            stream.record(first)
        if refusal is not None:
            context.abort(refusal, "refused by the test")

        def read_rest():
            try:
                for event in request_iterator:
                    stream.record(event)
            except Exception:
                pass
            with stream.cond:
                stream.half_closed = True
                stream.cond.notify_all()
            stream.outgoing.put(_END)  # the plugin closed its side: end the call with OK

        threading.Thread(target=read_rest, daemon=True).start()
        if index not in self.silent_streams:
            yield plugin_bus_pb2.HostEvent(core_version="9.9.9-test")
        while context.is_active():
            try:
                item = stream.outgoing.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, grpc.StatusCode):
                context.abort(item, "ended by the test")
            yield item

    def wait_streams(self, count, timeout=WAIT):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.streams) >= count, timeout)
            return self.streams[count - 1] if ok else None

    def wait_grants(self, count, timeout=WAIT):
        with self.cond:
            return self.cond.wait_for(lambda: len(self.grants) >= count, timeout)


def flow_event(kind, data, **fields):
    return plugin_bus_pb2.HostEvent(flow_event=common_pb2.FlowEvent(type=kind, data=data, **fields))


REQUEST = (b"GET /account HTTP/1.1\r\nHost: bank.example\r\nCookie: s=[REDACTED]\r\n\r\n")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class PluginBusTest(unittest.TestCase):
    def setUp(self):
        self.bus = FakeBus()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        plugin_bus_pb2_grpc.add_PluginBusServicer_to_server(self.bus, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.addCleanup(self.server.stop, None)
        self.log = io.StringIO()

    def make_plugin(self, port=None, **kwargs):
        kwargs.setdefault("reconnect_initial", 0.05)
        kwargs.setdefault("reconnect_max", 0.2)
        return Plugin(name="seer", capabilities=["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"],
                      subscriptions=["FLOW_REQUEST", "FLOW_RESPONSE"],
                      addr=f"127.0.0.1:{port or self.port}", token="daemon-token", env={},
                      log_stream=self.log, **kwargs)

    def start(self, plugin):
        """Runs the plugin on a thread; returns a dict that will hold run()'s outcome."""
        outcome = {}

        def target():
            try:
                plugin.run()
                outcome["returned"] = True
            except BaseException as e:  # noqa: B902 - reported to the test
                outcome["error"] = e

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        outcome["thread"] = thread

        def cleanup():
            plugin.stop()
            thread.join(WAIT)
        self.addCleanup(cleanup)
        return outcome

    def finish(self, outcome):
        outcome["thread"].join(WAIT)
        self.assertFalse(outcome["thread"].is_alive(), "run() did not return")

    def test_handshake_order_and_welcome(self):
        plugin = self.make_plugin()
        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        self.assertEqual(plugin.core_version, "9.9.9-test")
        self.assertIn("connected to 0xgend 9.9.9-test", self.log.getvalue())

        grant = self.bus.grants[0]
        self.assertEqual(grant.auth_token, "daemon-token")
        self.assertEqual(grant.plugin_name, "seer")
        self.assertEqual(list(grant.capabilities), ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"])

        stream = self.bus.wait_streams(1)
        self.assertIsNotNone(stream)
        first = stream.events[0]
        self.assertEqual(first.WhichOneof("event"), "hello")
        hello = first.hello
        self.assertEqual(hello.auth_token, "daemon-token")
        self.assertEqual(hello.plugin_name, "seer")
        self.assertEqual(hello.pid, os.getpid())
        self.assertEqual(list(hello.subscriptions), ["FLOW_REQUEST", "FLOW_RESPONSE"])
        self.assertEqual(list(hello.capabilities), ["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"])
        self.assertEqual(hello.capability_token, "cap-1")  # the grant of this very attempt

    def test_callbacks_get_parsed_messages_and_bad_ones_are_skipped(self):
        plugin = self.make_plugin()
        got = queue.Queue()
        plugin.on_request(lambda m: got.put(("req", m)))

        @plugin.on_response
        def on_response(m):
            got.put(("resp", m))

        @plugin.on_response
        def broken(_m):
            raise RuntimeError("plugin bug")

        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        stream = self.bus.wait_streams(1)
        stream.outgoing.put(flow_event(common_pb2.FlowEvent.FLOW_REQUEST, b"garbage\r\n\r\n",
                                       flow_id="bad"))
        stream.outgoing.put(flow_event(
            common_pb2.FlowEvent.FLOW_REQUEST, REQUEST, flow_id=FLOW_ID, sequence=41,
            variant=common_pb2.FLOW_VARIANT_SANITIZED, captured_at_unix_nano=123,
            traceparent=TRACEPARENT))
        stream.outgoing.put(flow_event(
            common_pb2.FlowEvent.FLOW_RESPONSE, RESPONSE, flow_id=FLOW_ID, sequence=42,
            variant=common_pb2.FLOW_VARIANT_RAW, raw_body_bytes=9000, raw_body_truncated=True))

        kind, req = got.get(timeout=WAIT)
        self.assertEqual(kind, "req")
        self.assertEqual((req.method, req.target), ("GET", "/account"))
        self.assertEqual(req.url, "https://bank.example/account")
        self.assertEqual((req.flow_id, req.sequence, req.variant), (FLOW_ID, 41, "sanitized"))
        self.assertEqual(req.captured_at_unix_nano, 123)
        self.assertEqual(req.traceparent, TRACEPARENT)
        self.assertEqual(req.header("cookie"), "s=[REDACTED]")
        self.assertEqual(plugin.stats["parse_errors"], 1)  # the garbage came first
        self.assertIn("skipping an unreadable request (flow bad", self.log.getvalue())

        kind, resp = got.get(timeout=WAIT)
        self.assertEqual(kind, "resp")
        self.assertEqual((resp.status, resp.reason, resp.body), (200, "OK", b"hello"))
        self.assertEqual((resp.variant, resp.sequence), ("raw", 42))
        self.assertEqual(resp.raw_body_bytes, 9000)
        self.assertTrue(resp.body_truncated)
        # The broken callback ran after on_response; one more event proves dispatch goes on.
        # It also carries the scheme (addition 10), which fixes the URL of origin-form targets.
        stream.outgoing.put(flow_event(common_pb2.FlowEvent.FLOW_REQUEST, REQUEST, flow_id="2",
                                       scheme="http"))
        plain = got.get(timeout=WAIT)[1]
        self.assertEqual(plain.flow_id, "2")
        self.assertEqual((plain.scheme, plain.url), ("http", "http://bank.example/account"))
        self.assertEqual(plugin.stats["callback_errors"], 1)
        self.assertIn("broken failed on flow " + FLOW_ID + ": RuntimeError: plugin bug",
                      self.log.getvalue())

    def test_emit_carries_the_flow_id_and_traceparent(self):
        plugin = self.make_plugin()
        self.assertFalse(plugin.emit(Finding("early", "not connected yet")))

        @plugin.on_request
        def report(msg):
            plugin.emit(Finding("hello", f"saw {msg.host}", severity="med", target=msg.url,
                                metadata={"k": "v"}), cause=msg)

        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        stream = self.bus.wait_streams(1)
        stream.outgoing.put(flow_event(common_pb2.FlowEvent.FLOW_REQUEST, REQUEST,
                                       flow_id=FLOW_ID, traceparent=TRACEPARENT))
        self.assertTrue(stream.wait_for(lambda s: s.of_kind("finding")))
        event = stream.of_kind("finding")[0]
        self.assertEqual(event.traceparent, TRACEPARENT)
        f = event.finding
        self.assertEqual((f.type, f.message, f.severity), ("hello", "saw bank.example",
                                                          common_pb2.MEDIUM))
        self.assertEqual(f.flow_id, FLOW_ID)
        self.assertEqual(f.target, "https://bank.example/account")
        self.assertEqual(dict(f.metadata), {"k": "v"})
        # A finding without a cause is allowed too (no trace, no flow).
        self.assertTrue(plugin.emit(Finding("standalone", "m")))
        self.assertTrue(stream.wait_for(lambda s: len(s.of_kind("finding")) == 2))
        self.assertEqual(stream.of_kind("finding")[1].traceparent, "")

    def test_stop_says_goodbye_closes_and_returns(self):
        plugin = self.make_plugin()
        outcome = self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        stream = self.bus.wait_streams(1)
        plugin.stop("test over")
        self.assertTrue(stream.wait_for(lambda s: s.half_closed))
        goodbyes = stream.of_kind("goodbye")
        self.assertEqual(len(goodbyes), 1)
        self.assertEqual(goodbyes[0].goodbye.reason, "test over")
        self.assertEqual(stream.events[-1].WhichOneof("event"), "goodbye")
        self.finish(outcome)
        self.assertTrue(outcome.get("returned"), outcome.get("error"))
        self.assertFalse(plugin.connected)
        self.assertFalse(plugin.emit(Finding("late", "after stop")))

    def test_stop_from_a_callback(self):
        plugin = self.make_plugin()
        plugin.on_request(lambda m: plugin.stop("done"))
        outcome = self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        stream = self.bus.wait_streams(1)
        stream.outgoing.put(flow_event(common_pb2.FlowEvent.FLOW_REQUEST, REQUEST))
        self.finish(outcome)
        self.assertTrue(outcome.get("returned"), outcome.get("error"))
        self.assertEqual(stream.of_kind("goodbye")[0].goodbye.reason, "done")

    def test_stop_while_asking_for_capabilities(self):
        self.bus.grant_gate = threading.Event()
        self.addCleanup(self.bus.grant_gate.set)
        plugin = self.make_plugin(rpc_timeout=60.0)
        outcome = self.start(plugin)
        self.assertTrue(self.bus.wait_grants(1))
        plugin.stop()
        # run() returns without waiting for the (held) grant; WAIT is far below rpc_timeout.
        self.finish(outcome)
        self.assertTrue(outcome.get("returned"), outcome.get("error"))
        self.assertEqual(self.bus.streams, [])

    def test_reconnects_after_unavailable_grant(self):
        self.bus.grant_refusals = [grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.RESOURCE_EXHAUSTED]
        plugin = self.make_plugin()
        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        self.assertEqual(len(self.bus.grants), 3)
        self.assertEqual(self.bus.wait_streams(1).events[0].hello.capability_token, "cap-3")
        self.assertIn("UNAVAILABLE", self.log.getvalue())
        self.assertIn("reconnecting in", self.log.getvalue())

    def test_reconnects_when_the_daemon_shuts_the_stream(self):
        plugin = self.make_plugin()
        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        first = self.bus.wait_streams(1)
        first.outgoing.put(grpc.StatusCode.UNAVAILABLE)  # what a shutting-down daemon does
        second = self.bus.wait_streams(2)
        self.assertIsNotNone(second)
        self.assertTrue(second.wait_for(lambda s: s.events))
        self.assertEqual(second.events[0].hello.capability_token, "cap-2")
        self.assertTrue(plugin.wait_connected(WAIT))

    def test_duplicate_and_missing_welcome_are_retried(self):
        self.bus.stream_refusals = [grpc.StatusCode.ALREADY_EXISTS]
        self.bus.silent_streams = {1}
        plugin = self.make_plugin(welcome_timeout=0.3)
        self.start(plugin)
        self.assertTrue(plugin.wait_connected(WAIT))
        self.assertEqual(len(self.bus.streams), 3)
        self.assertIn("no welcome within 0.3 s", self.log.getvalue())

    def test_connection_failures_retry_until_stopped(self):
        with socket.socket() as s:  # a port the OS just handed out, with no listener
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        plugin = self.make_plugin(port=dead_port)
        outcome = self.start(plugin)
        deadline = time.monotonic() + WAIT
        while "reconnecting in" not in self.log.getvalue() and time.monotonic() < deadline:
            outcome["thread"].join(0.05)
        self.assertIn("UNAVAILABLE", self.log.getvalue())
        plugin.stop()
        self.finish(outcome)
        self.assertTrue(outcome.get("returned"), outcome.get("error"))

    def test_fatal_refusals_raise(self):
        cases = [
            ("grant", grpc.StatusCode.PERMISSION_DENIED),
            ("grant", grpc.StatusCode.UNAUTHENTICATED),
            ("grant", grpc.StatusCode.INVALID_ARGUMENT),
            ("stream", grpc.StatusCode.FAILED_PRECONDITION),
            ("stream", grpc.StatusCode.PERMISSION_DENIED),
        ]
        for where, code in cases:
            with self.subTest(where=where, code=code.name):
                if where == "grant":
                    self.bus.grant_refusals = [code]
                else:
                    self.bus.stream_refusals = [code]
                plugin = self.make_plugin()
                outcome = self.start(plugin)
                self.finish(outcome)
                error = outcome.get("error")
                self.assertIsInstance(error, PluginError)
                self.assertIn(code.name, str(error))
                self.assertIn("refused by the test", str(error))
                self.bus.grant_refusals, self.bus.stream_refusals = [], []

    def test_main_exit_codes(self):
        self.bus.grant_refusals = [grpc.StatusCode.PERMISSION_DENIED]
        plugin = self.make_plugin()
        self.assertEqual(plugin.main(), 1)  # on the main thread: signal handlers installed, restored
        lines = [l for l in self.log.getvalue().splitlines() if "fatal" in l]
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r"^seer: fatal: .*PERMISSION_DENIED")

        plugin = self.make_plugin()
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("code", plugin.main()),
                                  daemon=True)
        thread.start()
        self.assertTrue(plugin.wait_connected(WAIT))
        plugin.stop()
        thread.join(WAIT)
        self.assertEqual(result.get("code"), 0)


if __name__ == "__main__":
    unittest.main()
