#!/usr/bin/python3
"""A scriptable OTLP/HTTP trace receiver for fault and end-to-end tests.

Listens on --host:--port (port 0: the OS picks one), prints `listening <port>` on stdout once it
accepts connections, and answers every POST according to a mode:

  ok      200 with an empty ExportTraceServiceResponse (protobuf or JSON, matching the request)
  500     500, a non-retryable failure for an OTLP exporter
  429     429 with `Retry-After: <--retry-after>` (omitted when negative)
  503     503 with `Retry-After` likewise
  400     400 (a batch the collector refuses)
  hang    reads the request and never answers until the receiver stops
  close   reads the request and closes the connection without an answer

`--sequence 503,503,ok` answers the first requests in that order, then falls back to --mode.
The mode can be changed while running: `POST /_control/mode?mode=ok&retry_after=2`.
`GET /_control/stats` returns {"requests": n, "bytes": n, "by_answer": {...}} as JSON.

With --out-dir every request is recorded as <n>.body (the body after gunzip, as the exporter
encoded it) and <n>.json (path, headers, content type, encoding, compressed size, answer), with
n counted from 1 and zero-padded to 6 digits. Files are written before the answer is sent, so a
test that saw the answer can read them at once.

SIGTERM or SIGINT stops it cleanly (exit 0), releasing any hanging request.
Uses only the Python standard library; meant for /usr/bin/python3.
"""

import argparse
import gzip
import http.server
import json
import os
import signal
import sys
import threading
import urllib.parse
import zlib

MODES = ("ok", "500", "429", "503", "400", "hang", "close")
MAX_BODY = 64 << 20


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.mode = args.mode
        self.retry_after = args.retry_after
        self.sequence = [m for m in args.sequence.split(",") if m] if args.sequence else []
        self.out_dir = args.out_dir
        self.requests = 0
        self.bytes = 0
        self.by_answer = {}
        self.stop = threading.Event()

    def next_answer(self):
        """Returns (request number, mode, retry_after) and counts the request."""
        with self.lock:
            self.requests += 1
            mode = self.sequence.pop(0) if self.sequence else self.mode
            self.by_answer[mode] = self.by_answer.get(mode, 0) + 1
            return self.requests, mode, self.retry_after


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as collectors do
    server_version = "otlp-test-receiver"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: stdout carries the port line only
        pass

    def version_string(self):
        return self.server_version

    def _send(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY:
            return None
        return self.rfile.read(length)

    def do_GET(self):
        state = self.server.state
        if urllib.parse.urlsplit(self.path).path == "/_control/stats":
            with state.lock:
                stats = {
                    "requests": state.requests,
                    "bytes": state.bytes,
                    "by_answer": dict(state.by_answer),
                    "mode": state.mode,
                }
            self._send(200, json.dumps(stats).encode())
        else:
            self._send(404, b'{"error":"not found"}')

    def do_POST(self):
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_control/mode":
            self._read_body()
            query = urllib.parse.parse_qs(url.query)
            mode = query.get("mode", [""])[0]
            if mode not in MODES:
                self._send(400, json.dumps({"error": f"unknown mode {mode!r}"}).encode())
                return
            with state.lock:
                state.mode = mode
                state.sequence = []
                if "retry_after" in query:
                    state.retry_after = int(query["retry_after"][0])
            self._send(200, b"{}")
            return

        raw = self._read_body()
        if raw is None:
            self._send(413, b'{"error":"body too large"}')
            self.close_connection = True
            return
        encoding = self.headers.get("Content-Encoding", "").lower()
        try:
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            decode_error = None
        except (OSError, EOFError, zlib.error) as e:
            body, decode_error = raw, str(e)
        n, mode, retry_after = state.next_answer()
        with state.lock:
            state.bytes += len(raw)
        content_type = self.headers.get("Content-Type", "")

        if state.out_dir:
            stem = os.path.join(state.out_dir, f"{n:06d}")
            with open(stem + ".body.tmp", "wb") as f:
                f.write(body)
            os.replace(stem + ".body.tmp", stem + ".body")
            meta = {
                "n": n,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "content_type": content_type,
                "content_encoding": encoding,
                "compressed_bytes": len(raw),
                "bytes": len(body),
                "gunzip_error": decode_error,
                "answer": mode,
            }
            with open(stem + ".json.tmp", "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
            os.replace(stem + ".json.tmp", stem + ".json")

        if mode == "hang":
            state.stop.wait()
            self.close_connection = True
            return
        if mode == "close":
            self.close_connection = True
            return
        if decode_error is not None:
            self._send(400, json.dumps({"error": "bad gzip: " + decode_error}).encode())
            return
        json_request = content_type.startswith("application/json")
        if mode == "ok":
            # An empty ExportTraceServiceResponse: no bytes in protobuf, {} in JSON.
            if json_request:
                self._send(200, b"{}", "application/json")
            else:
                self._send(200, b"", "application/x-protobuf")
            return
        headers = []
        if mode in ("429", "503") and retry_after >= 0:
            headers.append(("Retry-After", str(retry_after)))
        message = json.dumps({"code": 14, "message": f"test receiver answers {mode}"}).encode()
        self._send(int(mode), message, "application/json", headers)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--sequence", default="", help="comma-separated modes answered first")
    parser.add_argument("--retry-after", type=int, default=1,
                        help="Retry-After seconds for 429/503; negative omits the header")
    parser.add_argument("--out-dir", default="", help="record requests here")
    args = parser.parse_args()
    for mode in (m for m in args.sequence.split(",") if m):
        if mode not in MODES:
            parser.error(f"unknown mode in --sequence: {mode}")
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)

    server = Server((args.host, args.port), Handler)
    server.state = State(args)

    def stop(signum, frame):
        server.state.stop.set()
        # shutdown() waits for serve_forever, so it must not run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
