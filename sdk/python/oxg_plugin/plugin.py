"""The plugin client: handshake, flow event dispatch, findings, reconnects (docs/plugins.md).

Threads: `run()` receives and calls the callbacks on the thread that called it, one event at a
time, in stream order. gRPC sends from a thread of its own, fed by a per-connection queue.
`emit()`, `stop()` and `wait_connected()` may be called from any thread, callbacks included.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sys
import threading
import traceback
from typing import Callable, Dict, Iterable, Iterator, List, Optional

try:
    import grpc
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError("oxg_plugin needs gRPC for Python (Debian: apt install python3-grpcio)") from e

try:
    from oxg import common_pb2, plugin_bus_pb2, plugin_bus_pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the build
    raise ImportError(
        "oxg_plugin needs the generated protocol stubs (package 'oxg'): build the "
        "oxg_plugin_python target and put <build>/python on PYTHONPATH") from e

from .env import EnvError, resolve_addr, resolve_config, resolve_name, resolve_token
from .finding import Finding
from .http import HttpMessage, WireError, guess_url, parse_wire

__all__ = ["Plugin", "PluginError", "TEMPORARY_CODES"]

# Refusals worth retrying (docs/plugins.md, "Handshake"); every other status is fatal.
TEMPORARY_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
})

MAX_RECEIVE_BYTES = 64 << 20
# Findings waiting for gRPC's sending thread; beyond this emit() refuses instead of growing.
MAX_OUTBOX = 4096
_LOGGED_PARSE_ERRORS = 10

_END = object()  # closes the sending side of a stream

Callback = Callable[[HttpMessage], None]


class PluginError(Exception):
    """A fatal problem: bad setup, or the bus refused the plugin for good."""


class _Retry(Exception):
    """The connection ended in a way worth another attempt."""


class Plugin:
    """A 0xgen plugin connected to the daemon's plugin bus.

    Arguments left as None come from the environment: `addr` from OXG_BUS_ADDR (default
    127.0.0.1:50051), `token` from OXG_AUTH_TOKEN_FD, OXG_AUTH_TOKEN_FILE or OXG_AUTH_TOKEN (in
    that order), `name` from OXG_PLUGIN_NAME. `config` holds OXG_PLUGIN_CONFIG as a dict.
    `capabilities` and `subscriptions` are names as in the manifest (CAP_FLOW_INSPECT,
    FLOW_RESPONSE, ...). A Plugin runs once: after stop() a new one is needed.
    """

    def __init__(self, name: Optional[str] = None, capabilities: Iterable[str] = (),
                 subscriptions: Iterable[str] = (), addr: Optional[str] = None,
                 token: Optional[str] = None, *, env=None, reconnect_initial: float = 0.5,
                 reconnect_max: float = 30.0, welcome_timeout: float = 30.0,
                 rpc_timeout: float = 10.0, stop_grace: float = 5.0, log_stream=None):
        self._env = os.environ if env is None else env
        self.name = resolve_name(name, self._env)
        self.addr = resolve_addr(addr, self._env)
        self.capabilities: List[str] = [str(c) for c in capabilities]
        self.subscriptions: List[str] = [str(s) for s in subscriptions]
        self._explicit_token = token
        self._token: Optional[str] = None
        try:
            self.config: Dict = resolve_config(self._env)
            self._setup_error: Optional[str] = None
        except EnvError as e:
            self.config = {}
            self._setup_error = str(e)
        self.core_version = ""
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.welcome_timeout = welcome_timeout
        self.rpc_timeout = rpc_timeout
        self.stop_grace = stop_grace
        self._log_stream = log_stream
        self._log_lock = threading.Lock()

        self._request_callbacks: List[Callback] = []
        self._response_callbacks: List[Callback] = []
        self._lock = threading.Lock()  # guards the fields below and stats
        self._stopping = False
        self._outbox: Optional[queue.Queue] = None
        self._call = None
        self._connected = False
        self._welcome_expired = False
        self._stop_event = threading.Event()
        self._connected_event = threading.Event()
        self.stats: Dict[str, int] = {
            "connections": 0, "events": 0, "parse_errors": 0, "callback_errors": 0,
            "findings_sent": 0, "findings_dropped": 0,
        }

    # -- registration --------------------------------------------------------------------------

    def on_request(self, fn: Callback) -> Callback:
        """Registers `fn(msg)` for FLOW_REQUEST(_RAW) events. Usable as a decorator."""
        self._request_callbacks.append(fn)
        return fn

    def on_response(self, fn: Callback) -> Callback:
        """Registers `fn(msg)` for FLOW_RESPONSE(_RAW) events. Usable as a decorator."""
        self._response_callbacks.append(fn)
        return fn

    # -- use from any thread -------------------------------------------------------------------

    def log(self, text: str) -> None:
        """One line on stderr, prefixed with the plugin name."""
        stream = self._log_stream or sys.stderr
        with self._log_lock:
            try:
                stream.write(f"{self.name or 'plugin'}: {text}\n")
                stream.flush()
            except (OSError, ValueError):
                pass

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits until the daemon's welcome arrived; False on timeout."""
        return self._connected_event.wait(timeout)

    def emit(self, finding: Finding, cause: Optional[HttpMessage] = None) -> bool:
        """Queues `finding` for the bus. With `cause` (the message that led to it), the finding
        carries that flow's id and joins its trace. Returns False when the plugin is not
        connected (or is stopping, or too many findings are waiting): the finding is lost."""
        if not isinstance(finding, Finding):
            raise TypeError("emit() takes an oxg_plugin.Finding")
        event = plugin_bus_pb2.PluginEvent(
            finding=finding.to_proto(common_pb2, flow_id=cause.flow_id if cause else ""),
            traceparent=cause.traceparent if cause else "")
        with self._lock:
            if (not self._connected or self._stopping or self._outbox is None
                    or self._outbox.qsize() >= MAX_OUTBOX):
                self.stats["findings_dropped"] += 1
                return False
            self._outbox.put(event)
            self.stats["findings_sent"] += 1
        return True

    def stop(self, reason: str = "stopped") -> None:
        """Says goodbye, closes the sending side and makes run() return once the daemon ends
        the call (or after `stop_grace` seconds at most). Never blocks."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._connected = False
            outbox = self._outbox
            if outbox is not None:
                outbox.put(plugin_bus_pb2.PluginEvent(
                    goodbye=plugin_bus_pb2.PluginGoodbye(reason=reason)))
                outbox.put(_END)
            elif self._call is not None:
                self._call.cancel()  # still asking for capabilities: nothing to say goodbye on
        self._stop_event.set()
        if outbox is not None:
            timer = threading.Timer(self.stop_grace, self._cancel_call)
            timer.daemon = True
            timer.start()

    # -- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Connects and dispatches events until stop(). Reconnects with backoff when the bus is
        temporarily unavailable; raises PluginError when it refuses the plugin for good."""
        self._check_setup()
        delay = self.reconnect_initial
        while True:
            if self._stopping:
                return
            welcomed_before = self.stats["connections"]
            try:
                self._session()
                return  # a session returns normally only when stopping
            except grpc.RpcError as e:
                if self._stopping:
                    return
                code, details = e.code(), e.details() or ""
                if code == grpc.StatusCode.CANCELLED and self._welcome_expired:
                    why = f"no welcome within {self.welcome_timeout:g} s"
                elif code in TEMPORARY_CODES:
                    why = f"{code.name}: {details}" if details else code.name
                else:
                    name = code.name if code is not None else "UNKNOWN"
                    raise PluginError(f"the plugin bus at {self.addr} refused plugin "
                                      f"{self.name!r}: {name}: {details}") from None
            except _Retry as e:
                if self._stopping:
                    return
                why = str(e)
            if self.stats["connections"] > welcomed_before:
                delay = self.reconnect_initial  # it worked for a while: start over
            wait = min(self.reconnect_max, delay * random.uniform(1.0, 1.25))
            self.log(f"bus {self.addr}: {why}; reconnecting in {wait:.1f} s")
            if self._stop_event.wait(wait):
                return
            delay = min(self.reconnect_max, delay * 2)

    def run_forever(self) -> None:
        """run() with SIGINT and SIGTERM mapped to stop() (main thread only)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            def handler(signum, _frame):
                # stop() takes a lock the interrupted code may hold: leave the handler at once.
                threading.Thread(target=self.stop, args=(signal.Signals(signum).name,),
                                 daemon=True).start()
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        try:
            self.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def main(self) -> int:
        """run_forever() as a process exit code: 0 after a clean stop, 1 after a fatal error
        (reported in one line on stderr). Typical use: `sys.exit(plugin.main())`."""
        try:
            self.run_forever()
        except PluginError as e:
            self.log(f"fatal: {e}")
            return 1
        return 0

    # -- internals -----------------------------------------------------------------------------

    def _check_setup(self) -> None:
        if self._setup_error:
            raise PluginError(self._setup_error)
        if not self.name:
            raise PluginError("no plugin name: pass name= or set OXG_PLUGIN_NAME")
        if self._token is None:
            try:
                self._token = resolve_token(self._explicit_token, self._env)
            except EnvError as e:
                raise PluginError(str(e)) from None
        wants_requests = any(s.startswith("FLOW_REQUEST") for s in self.subscriptions)
        wants_responses = any(s.startswith("FLOW_RESPONSE") for s in self.subscriptions)
        if self._request_callbacks and not wants_requests:
            self.log("warning: on_request callbacks registered without a FLOW_REQUEST subscription")
        if self._response_callbacks and not wants_responses:
            self.log("warning: on_response callbacks registered without a FLOW_RESPONSE "
                     "subscription")

    @staticmethod
    def _drain(outbox: queue.Queue) -> Iterator:
        while True:
            item = outbox.get()
            if item is _END:
                return
            yield item

    def _cancel_call(self) -> None:
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _expire_welcome(self, call) -> None:
        self._welcome_expired = True
        call.cancel()

    def _session(self) -> None:
        channel = grpc.insecure_channel(
            self.addr, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
        outbox: queue.Queue = queue.Queue()
        try:
            stub = plugin_bus_pb2_grpc.PluginBusStub(channel)
            pending = stub.GrantCapabilities.future(
                plugin_bus_pb2.PluginCapabilityRequest(
                    auth_token=self._token, plugin_name=self.name,
                    capabilities=self.capabilities),
                timeout=self.rpc_timeout)
            with self._lock:
                self._call = pending  # so that stop() can cancel it
                stopping = self._stopping
            if stopping:
                pending.cancel()
            try:
                grant = pending.result()
            except grpc.FutureCancelledError:
                if self._stopping:
                    return
                raise _Retry("the capability request was cancelled") from None
            outbox.put(plugin_bus_pb2.PluginEvent(hello=plugin_bus_pb2.PluginHello(
                auth_token=self._token, plugin_name=self.name, pid=os.getpid(),
                subscriptions=self.subscriptions, capabilities=self.capabilities,
                capability_token=grant.capability_token)))
            with self._lock:
                if self._stopping:
                    return
                self._outbox = outbox
            call = stub.EventStream(self._drain(outbox))
            with self._lock:
                self._call = call
            self._welcome_expired = False
            timer = threading.Timer(self.welcome_timeout, self._expire_welcome, args=(call,))
            timer.daemon = True
            timer.start()
            try:
                welcome = next(call, None)
            finally:
                timer.cancel()
            if welcome is None:
                if self._stopping:
                    return
                raise _Retry("the daemon closed the stream before its welcome")
            with self._lock:
                if not self._stopping:
                    self._connected = True
                self.stats["connections"] += 1
            self.core_version = welcome.core_version
            self._connected_event.set()
            self.log(f"connected to 0xgend {welcome.core_version or '(unknown version)'}")
            if welcome.HasField("flow_event"):
                self._dispatch(welcome)
            for event in call:
                self._dispatch(event)
            if self._stopping:
                return
            raise _Retry("the daemon ended the stream")
        finally:
            with self._lock:
                self._connected = False
                self._outbox = None
                self._call = None
            self._connected_event.clear()
            outbox.put(_END)  # frees gRPC's sending thread if the call died first
            channel.close()

    def _dispatch(self, event) -> None:
        if event.HasField("goodbye"):
            # The daemon is stopping this plugin: leave as if stop() had been called, and do
            # not reconnect.
            self.log(f"the daemon asked this plugin to stop: {event.goodbye.reason}")
            self.stop("goodbye from the daemon")
            return
        if not event.HasField("flow_event"):
            return
        flow = event.flow_event
        if flow.type == common_pb2.FlowEvent.FLOW_REQUEST:
            callbacks, is_request = self._request_callbacks, True
        elif flow.type == common_pb2.FlowEvent.FLOW_RESPONSE:
            callbacks, is_request = self._response_callbacks, False
        else:
            return
        with self._lock:
            self.stats["events"] += 1
        if not callbacks:
            return
        try:
            msg = parse_wire(flow.data, is_request)
        except WireError as e:
            with self._lock:
                self.stats["parse_errors"] += 1
                count = self.stats["parse_errors"]
            if count <= _LOGGED_PARSE_ERRORS or count % 1000 == 0:
                self.log(f"skipping an unreadable {'request' if is_request else 'response'} "
                         f"(flow {flow.flow_id or '?'}, {count} so far): {e}")
            return
        msg.flow_id = flow.flow_id
        msg.sequence = flow.sequence
        msg.variant = "raw" if flow.variant == common_pb2.FLOW_VARIANT_RAW else "sanitized"
        msg.captured_at_unix_nano = flow.captured_at_unix_nano
        msg.traceparent = flow.traceparent
        scheme = getattr(flow, "scheme", "").lower()  # addition 10; absent in older stubs
        if scheme in ("http", "https"):
            msg.scheme = scheme
            if is_request:
                msg.url = guess_url(msg.target, msg.header("host"), scheme)
        if flow.raw_body_bytes:
            msg.raw_body_bytes = flow.raw_body_bytes
        msg.body_truncated = msg.body_truncated or flow.raw_body_truncated
        for callback in callbacks:
            try:
                callback(msg)
            except Exception as e:  # a plugin bug must not end the stream
                with self._lock:
                    self.stats["callback_errors"] += 1
                    count = self.stats["callback_errors"]
                name = getattr(callback, "__name__", "callback")
                self.log(f"{name} failed on flow {msg.flow_id or '?'}: {type(e).__name__}: {e}")
                if count <= 3:
                    for line in traceback.format_exc().rstrip().splitlines():
                        self.log("  " + line)
