"""HTTP/1.1 wire text as the daemon hands it to plugins, turned into an `HttpMessage`.

The daemon writes every captured message as start line, headers, empty line and body with CRLF
line ends (docs/plugins.md, "Flow events"). The bytes still come from the network, so the parser
trusts nothing: anything it cannot read raises `WireError`, and the SDK counts and skips that
event instead of handing a half-parsed message to a plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = ["HttpMessage", "WireError", "parse_wire", "guess_url"]

# Bounds for what a plugin will ever see in one head; the daemon's own limits are lower.
MAX_HEAD_BYTES = 1 << 20
MAX_HEADERS = 1000

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/[0-9]\.[0-9]$")
_STATUS = re.compile(r"^[0-9]{3}$")

TRUNCATION_HEADER = "x-0xgen-raw-body-truncated"


class WireError(ValueError):
    """The bytes are not an HTTP/1.1 message the parser accepts."""


@dataclass
class HttpMessage:
    """One captured request or response.

    `headers` keeps order and name case as captured; look values up case-insensitively with
    `header()` and `headers_all()`. `url` is a best-effort absolute URL (see `guess_url`) and
    is empty for responses and when it cannot be worked out. `body` may be only a prefix of the
    real body: then `body_truncated` is true and `raw_body_bytes` is the full length.
    """

    is_request: bool
    method: str = ""
    target: str = ""
    url: str = ""
    scheme: str = ""  # "http" or "https" when known (see guess_url)
    status: int = 0
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    flow_id: str = ""
    sequence: int = 0
    variant: str = "sanitized"  # or "raw"
    raw_body_bytes: int = 0
    body_truncated: bool = False
    captured_at_unix_nano: int = 0
    traceparent: str = ""

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header `name` (any case), or `default`."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def headers_all(self, name: str) -> List[str]:
        """Every value of header `name` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def host(self) -> str:
        """The Host header, else the authority of an absolute-form target, else ''."""
        host = self.header("host")
        if host:
            return host.strip()
        match = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]+)", self.target)
        return match.group(1) if match else ""

    def body_text(self, limit: Optional[int] = None) -> str:
        """The body (or its first `limit` bytes) as text; undecodable bytes become U+FFFD."""
        data = self.body if limit is None else self.body[:limit]
        return data.decode("utf-8", errors="replace")


def _decode_line(raw: bytes) -> str:
    # Header values are usually ASCII, sometimes UTF-8, occasionally Latin-1 (obs-text).
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def guess_url(target: str, host: Optional[str], scheme: str = "") -> str:
    """An absolute URL for a request target, as far as the message tells it.

    - absolute-form (`http://h/p`, what a client sends to a proxy): the target itself;
    - origin-form (`/p`) with a Host header: `<scheme>://<host>/p`. The daemon sends the scheme
      with each flow event (`http`, or `https` for an intercepted TLS tunnel). Without it (an
      older daemon, or parse_wire used alone) https is the guess: origin-form requests reach the
      proxy through a CONNECT tunnel far more often than as plain HTTP;
    - `*` (OPTIONS) with a Host: `<scheme>://<host>`;
    - anything else (no Host, authority-form): ''.
    """
    scheme = scheme.lower() if scheme.lower() in ("http", "https") else "https"
    lowered = target[:8].lower()
    if lowered.startswith("http://") or lowered.startswith("https://"):
        return target
    if not host:
        return ""
    host = host.strip()
    if not host or any(c in host for c in " /\\?#@"):
        return ""
    if target.startswith("/"):
        return f"{scheme}://{host}{target}"
    if target == "*":
        return f"{scheme}://{host}"
    return ""


def parse_wire(data: bytes, is_request: bool) -> HttpMessage:
    """Parses one message. Raises WireError on anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("payload is not bytes")
    data = bytes(data)
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        # Tolerate bare LF line ends, as long as the whole head uses them.
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            raise WireError("no empty line after the header section")
    if end > MAX_HEAD_BYTES:
        raise WireError(f"header section larger than {MAX_HEAD_BYTES} bytes")
    head = data[:end]
    body = data[end + sep:]
    lines = head.split(b"\r\n") if sep == 4 else head.split(b"\n")
    if not lines or not lines[0]:
        raise WireError("empty start line")
    if b"\0" in head:
        raise WireError("NUL byte in the header section")

    msg = HttpMessage(is_request=is_request, body=body)
    start = _decode_line(lines[0])
    if is_request:
        parts = start.split(" ")
        if len(parts) != 3:
            raise WireError(f"malformed request line {start[:80]!r}")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise WireError(f"bad method {method[:40]!r}")
        if not target or any(ord(c) < 0x21 for c in target):
            raise WireError("bad request target")
        if not _VERSION.match(version):
            raise WireError(f"bad HTTP version {version[:20]!r}")
        msg.method, msg.target, msg.http_version = method, target, version
    else:
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise WireError(f"malformed status line {start[:80]!r}")
        version, status = parts[0], parts[1]
        if not _VERSION.match(version):
            raise WireError(f"bad HTTP version {version[:20]!r}")
        if not _STATUS.match(status):
            raise WireError(f"bad status code {status[:20]!r}")
        msg.http_version, msg.status = version, int(status)
        msg.reason = parts[2] if len(parts) == 3 else ""

    headers: List[Tuple[str, str]] = []
    for raw in lines[1:]:
        if raw[:1] in (b" ", b"\t"):
            # obs-fold: a continuation of the previous value.
            if not headers:
                raise WireError("continuation line before the first header")
            name, value = headers[-1]
            headers[-1] = (name, (value + " " + _decode_line(raw).strip()).strip())
            continue
        colon = raw.find(b":")
        if colon <= 0:
            raise WireError("header line without a name and colon")
        name = raw[:colon].decode("latin-1")
        if not _TOKEN.match(name):
            raise WireError(f"bad header name {name[:40]!r}")
        headers.append((name, _decode_line(raw[colon + 1:]).strip(" \t")))
        if len(headers) > MAX_HEADERS:
            raise WireError(f"more than {MAX_HEADERS} headers")
    msg.headers = headers

    msg.raw_body_bytes = len(body)
    marker = msg.header(TRUNCATION_HEADER)
    if marker is not None:
        msg.body_truncated = True
        if marker.strip().isdigit():
            msg.raw_body_bytes = int(marker.strip())
    if is_request:
        msg.url = guess_url(msg.target, msg.header("host"))
        match = re.match(r"^(https?)://", msg.target, re.IGNORECASE)
        if match:
            msg.scheme = match.group(1).lower()
    return msg
