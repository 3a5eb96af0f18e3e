"""Test peers for the capture proxy tests: an HTTP/1.1 origin (plain or TLS) with routes for
every case, a server that accepts and never answers, and a hand-written WebSocket client.

Only the standard library is used. Servers listen on 127.0.0.1 port 0, run one thread per
connection, count the TCP connections they accept and record what they were sent, and close every
connection they still hold when stopped.
"""

import base64
import hashlib
import json
import os
import socket
import socketserver
import ssl
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BLOCK = 1 << 20  # generated bodies are produced and hashed in blocks of this size
# The value of the session cookie /cookie sets (tests look for it in captured data).
SET_COOKIE_SECRET = "SetCookieSecretValue6666"


# ---- deterministic bodies -------------------------------------------------------------------

def _base_block(seed):
    return hashlib.shake_256(("oxg-body-%s" % seed).encode()).digest(BLOCK)


def generated_blocks(total, seed="x"):
    """Yields `total` bytes in BLOCK-sized pieces without holding more than one piece. Each block
    starts with its index, so a reordered or repeated block changes the hash."""
    base = _base_block(seed)
    index = 0
    sent = 0
    while sent < total:
        n = min(BLOCK, total - sent)
        block = bytearray(base[:n])
        head = struct.pack(">Q", index)[:n]
        block[:len(head)] = head
        yield bytes(block)
        sent += n
        index += 1


def generated_sha256(total, seed="x"):
    h = hashlib.sha256()
    for block in generated_blocks(total, seed):
        h.update(block)
    return h.hexdigest()


def generated_bytes(total, seed="x"):
    return b"".join(generated_blocks(total, seed))


# ---- the origin server ----------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "oxg-test-upstream"

    def setup(self):
        self.conn_id = self.server.connection_id(self.request)
        if self.server.tls_context is not None:
            self.request.settimeout(30)
            try:
                self.request = self.server.tls_context.wrap_socket(self.request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.server.note_tls_failure(e)
                raise
        self.server.register(self.request)
        self.request.settimeout(self.server.io_timeout)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.unregister(self.request)
            if self.server.tls_context is not None:
                # The server closes the plain socket it accepted, which the TLS wrapper took
                # over (detached); the wrapper is ours to close.
                self.request.close()

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, socket.timeout, ssl.SSLError, OSError):
            self.close_connection = True

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    # -- helpers --

    def _read_body(self, sink=None):
        """Reads the request body (Content-Length or chunked). Returns (body, chunked); with a
        `sink` (a hashlib object) the bytes go there instead and body is their length, so large
        uploads are never held."""
        collected = bytearray()
        total = 0

        def take(data):
            nonlocal total
            total += len(data)
            if sink is not None:
                sink.update(data)
            else:
                collected.extend(data)

        def read_exact(n):
            while n > 0:
                data = self.rfile.read(min(n, 1 << 20))
                if not data:
                    raise ConnectionError("eof in body")
                take(data)
                n -= len(data)

        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ConnectionError("eof in chunk size")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                read_exact(size)
                self.rfile.readline(1024)
        else:
            read_exact(int(self.headers.get("Content-Length") or 0))
        return (total if sink is not None else bytes(collected)), chunked

    def _send(self, status, body=b"", ctype="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _record(self, body, length=None, sha256=None):
        self.server.record({
            "method": self.command,
            "path": self.path,
            "headers": [(k, v) for k, v in self.headers.items()],
            "body_length": len(body) if length is None else length,
            "body_sha256": hashlib.sha256(body).hexdigest() if sha256 is None else sha256,
            "connection": self.conn_id,
        })

    # -- dispatch --

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def _dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if path == "/upload":
            h = hashlib.sha256()
            length, chunked = self._read_body(sink=h)
            self._record(b"", length, h.hexdigest())
            info = {"length": length, "sha256": h.hexdigest(),
                    "chunked": chunked, "expect": self.headers.get("Expect", "")}
            self._send(200, json.dumps(info).encode(), "application/json")
            return
        body, chunked = self._read_body()
        self._record(body)
        if path == "/hello":
            self._send(200, b"hello from upstream\n",
                       extra=[("X-Upstream-Connection", str(self.conn_id))])
        elif path == "/echo":
            info = {"method": self.command, "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                    "chunked": chunked}
            self._send(200, json.dumps(info).encode(), "application/json")
        elif path == "/chunked":
            total = int(query.get("bytes", "100000"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for block in generated_blocks(total, query.get("seed", "x")):
                    # Uneven chunk sizes, so chunk boundaries fall anywhere.
                    for i in range(0, len(block), 7777):
                        piece = block[i:i + 7777]
                        self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
        elif path == "/stream":
            total = int(query.get("bytes", "1048576"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            if self.command != "HEAD":
                for block in generated_blocks(total, query.get("seed", "x")):
                    self.wfile.write(block)
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            extra = [("ETag", '"v1"')] if code == 304 else []
            self._send(code, b"" if code in (204, 304) else b"status body\n", extra=extra)
        elif path == "/etag":
            if self.headers.get("If-None-Match") == '"v1"':
                self._send(304, extra=[("ETag", '"v1"')])
            else:
                self._send(200, b"versioned content\n", extra=[("ETag", '"v1"')])
        elif path == "/cookie":
            self._send(200, b"cookie set\n",
                       extra=[("Set-Cookie", "session=%s; Path=/; HttpOnly" % SET_COOKIE_SECRET),
                              ("Set-Cookie", "theme=dark")])
        elif path == "/early-hints":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self._send(200, b"after hints\n")
        elif path == "/close-after":
            # A keep-alive looking response, then the origin closes the connection anyway (as
            # origins do when their idle timer fires): a pooled connection goes stale.
            self._send(200, b"closing now\n")
            self.close_connection = True
        elif path == "/until-close":
            # HTTP/1.1 without Content-Length or chunked: the body ends when the origin closes.
            total = int(query.get("bytes", "100000"))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Connection: close\r\n\r\n")
            for block in generated_blocks(total, query.get("seed", "x")):
                self.wfile.write(block)
            self.close_connection = True
        elif path == "/raw":
            # Hand-written broken responses, by kind.
            kind = query.get("kind")
            if kind == "cl-te":  # both framings: a smuggling vector if relayed as is
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            elif kind == "bad-status":
                self.wfile.write(b"HTTP/1.1 2000 Fine\r\nContent-Length: 2\r\n\r\nok")
            elif kind == "huge-head":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (80 * 1024) +
                                 b"\r\nContent-Length: 2\r\n\r\nok")
            elif kind == "not-http":
                self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
            self.close_connection = True
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"only the start")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/ws":
            self._websocket()
        else:
            self._send(404, b"no such route\n")

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self._send(400, b"not a websocket handshake\n")
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        # Echo every frame back (server frames are unmasked) until a close frame.
        while True:
            frame = read_ws_frame(self.rfile.read, expect_masked=True)
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 0x9:  # ping -> pong
                self.wfile.write(encode_ws_frame(0xA, payload, mask=False))
                continue
            self.wfile.write(encode_ws_frame(opcode, payload, mask=False))
            self.wfile.flush()
            if opcode == 0x8:
                return


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # failed handshakes and resets are part of the tests; they are counted, not printed


class Upstream:
    """An HTTP/1.1 origin on 127.0.0.1. With `tls` (a dict with cert and key paths) it speaks
    HTTPS. Counts accepted TCP connections and records every request."""

    def __init__(self, tls=None, io_timeout=30.0):
        self.tls_context = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.tls_context = ctx
        self._lock = threading.Lock()
        self.accepted = 0
        self.closed = 0  # connections whose handler has finished (the origin closed them)
        self.requests = []
        self.tls_failures = []
        self._conn_ids = {}
        self._open = set()
        outer = self

        class Server(_Server):
            def get_request(self):
                sock, addr = super().get_request()
                with outer._lock:
                    outer.accepted += 1
                    outer._conn_ids[id(sock)] = outer.accepted
                return sock, addr

        self._server = Server(("127.0.0.1", 0), _Handler)
        self._server.tls_context = self.tls_context
        self._server.io_timeout = io_timeout
        self._server.record = self._record
        self._server.connection_id = self._connection_id
        self._server.register = self._register
        self._server.unregister = self._unregister
        self._server.note_tls_failure = self._note_tls_failure
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _record(self, entry):
        with self._lock:
            self.requests.append(entry)

    def _connection_id(self, sock):
        with self._lock:
            return self._conn_ids.get(id(sock), 0)

    def _register(self, sock):
        with self._lock:
            self._open.add(sock)

    def _unregister(self, sock):
        with self._lock:
            self._open.discard(sock)
            self.closed += 1

    def _note_tls_failure(self, err):
        with self._lock:
            self.tls_failures.append(str(err))

    def url(self, path, host="127.0.0.1"):
        return "%s://%s:%d%s" % ("https" if self.tls_context else "http", host, self.port, path)

    def recorded(self):
        with self._lock:
            return list(self.requests)

    def stop(self):
        self._server.shutdown()
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=5)


class SilentUpstream:
    """Accepts TCP connections and never reads or answers; holds them until stopped."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._held = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._held:
            c.close()
        self._sock.close()


def closed_port():
    """A loopback port nobody listens on (bound then released; nothing else binds it at once)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- WebSocket framing (RFC 6455), for the echo server and the test client -----------------

def encode_ws_frame(opcode, payload, mask=True):
    head = bytearray([0x80 | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


def read_ws_frame(read, expect_masked):
    """Reads one frame with `read(n)`; returns (opcode, payload) or None at EOF. Raises if the
    mask bit is not what the side expects (clients mask, servers do not)."""
    head = _read_exact(read, 2)
    if head is None:
        return None
    opcode = head[0] & 0x0F
    masked = bool(head[1] & 0x80)
    if masked != expect_masked:
        raise ValueError("websocket frame mask bit %s, expected %s" % (masked, expect_masked))
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", _read_exact(read, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", _read_exact(read, 8))[0]
    key = _read_exact(read, 4) if masked else None
    payload = _read_exact(read, n) if n else b""
    if payload is None:
        return None
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def _read_exact(read, n):
    out = b""
    while len(out) < n:
        chunk = read(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


class WebSocketClient:
    """A minimal client over an already connected socket (plain or TLS). `request_target` is what
    goes on the request line: an absolute URL through a plain proxy, a path inside a tunnel."""

    def __init__(self, sock, request_target, host, timeout=10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (request_target, host, key))
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: nothing after the head is consumed
            if not chunk:
                raise ConnectionError("connection closed during the handshake: %r" % head)
            head += chunk
            if len(head) > 65536:
                raise ValueError("handshake response too long")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.accept_ok = self.headers.get("sec-websocket-accept") == expected

    def _read(self, n):
        return self.sock.recv(n)

    def send(self, payload, opcode=None):
        if opcode is None:
            opcode = 0x1 if isinstance(payload, str) else 0x2
        if isinstance(payload, str):
            payload = payload.encode()
        self.sock.sendall(encode_ws_frame(opcode, payload, mask=True))

    def recv(self):
        return read_ws_frame(self._read, expect_masked=False)

    def close(self):
        try:
            self.sock.sendall(encode_ws_frame(0x8, struct.pack(">H", 1000), mask=True))
            frame = self.recv()
        finally:
            self.sock.close()
        return frame


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` passes (raises
    AssertionError naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %.1fs (last: %r)" % (what, timeout, last))
        time.sleep(interval)
