#!/usr/bin/python3
"""seer: reports secrets and personal data that responses expose (see README.md).

The detection itself lives in detectors.py (pure, unit-tested); this file pairs responses with
their requests, decodes and bounds bodies, deduplicates and turns detections into findings.
"""

import os
import sys
import zlib
from collections import OrderedDict

_HERE = os.path.dirname(os.path.abspath(__file__))

try:
    import oxg_plugin  # noqa: F401
except ImportError:
    # Run from a source checkout without PYTHONPATH: use the SDK the default build assembled in
    # <repo>/build/python (plugins/seer/../../build/python).
    sys.path.insert(0, os.path.normpath(os.path.join(_HERE, "..", "..", "build", "python")))
    import oxg_plugin  # noqa: F401

if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import detectors  # noqa: E402
from oxg_plugin import Finding, HttpMessage, Plugin  # noqa: E402

MAX_SCAN_BYTES = 1 << 20       # body bytes scanned per response (after decompression)
MAX_HEADER_SCAN_BYTES = 64 << 10
MAX_PENDING_FLOWS = 4096       # requests waiting for their response
MAX_REPORTED = 50000           # (kind, target, evidence) triples remembered for deduplication
MAX_PER_KIND = 10              # findings of one kind from one response
_SKIPPED_TYPES = ("image/", "video/", "audio/", "font/")


def _bounded_decompress(body: bytes, encoding: str, limit: int):
    """The decoded body (at most `limit` bytes), or None when it cannot be decoded."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body[:limit]
    if encoding in ("gzip", "x-gzip", "deflate"):
        # gzip header (16+), zlib header (+0 auto-detect with 32+); raw deflate tried after.
        for wbits in ((16 + zlib.MAX_WBITS,) if "gzip" in encoding
                      else (32 + zlib.MAX_WBITS, -zlib.MAX_WBITS)):
            try:
                return zlib.decompressobj(wbits).decompress(body, limit)
            except zlib.error:
                continue
    return None


class Seer:
    """The plugin's state. Callbacks run on one thread (the SDK's), so no locking."""

    def __init__(self, config=None, log=None):
        config = config if isinstance(config, dict) else {}
        self.log = log or (lambda text: None)
        self.max_scan_bytes = MAX_SCAN_BYTES
        value = config.get("max_scan_bytes")
        if value is not None:
            if isinstance(value, int) and 0 < value <= 16 * MAX_SCAN_BYTES:
                self.max_scan_bytes = value
            else:
                self.log(f"config: max_scan_bytes must be 1..{16 * MAX_SCAN_BYTES}; "
                         f"using {MAX_SCAN_BYTES}")
        disabled = config.get("disable", [])
        self.disabled = {k for k in disabled if k in detectors.KINDS} if isinstance(
            disabled, list) else set()
        for kind in (disabled if isinstance(disabled, list) else []):
            if kind not in detectors.KINDS:
                self.log(f"config: unknown detector {kind!r} in disable (known: "
                         f"{', '.join(detectors.KINDS)})")
        self._targets = OrderedDict()   # flow_id -> URL of the request
        self._reported = OrderedDict()  # (kind, target, evidence) -> None, oldest first
        self.undecodable_bodies = 0

    def on_request(self, msg: HttpMessage) -> None:
        if not msg.flow_id:
            return
        self._targets[msg.flow_id] = msg.url or msg.host
        self._targets.move_to_end(msg.flow_id)
        while len(self._targets) > MAX_PENDING_FLOWS:
            self._targets.popitem(last=False)

    def _target_of(self, msg: HttpMessage) -> str:
        return self._targets.pop(msg.flow_id, "") if msg.flow_id else ""

    def _body_text(self, msg: HttpMessage):
        content_type = (msg.header("content-type") or "").lower()
        if content_type.startswith(_SKIPPED_TYPES):
            return ""
        body = _bounded_decompress(msg.body, msg.header("content-encoding") or "",
                                   self.max_scan_bytes)
        if body is None:
            self.undecodable_bodies += 1
            return ""
        # Latin-1 maps every byte to one character: the patterns are ASCII, offsets stay exact.
        return body.decode("latin-1")

    def _first_report(self, key) -> bool:
        if key in self._reported:
            self._reported.move_to_end(key)
            return False
        self._reported[key] = None
        while len(self._reported) > MAX_REPORTED:
            self._reported.popitem(last=False)
        return True

    def findings_for(self, msg: HttpMessage):
        """The findings a response yields (each (kind, target, evidence) reported once)."""
        target = self._target_of(msg)
        head = "\n".join(f"{name}: {value}" for name, value in msg.headers)
        scans = [("header", detectors.scan(head[:MAX_HEADER_SCAN_BYTES], self.disabled)),
                 ("body", detectors.scan(self._body_text(msg), self.disabled))]
        counts = {}
        for _, found in scans:
            for d in found:
                counts[d.kind] = counts.get(d.kind, 0) + 1
        findings, per_kind = [], {}
        for location, found in scans:
            for d in found:
                if per_kind.get(d.kind, 0) >= MAX_PER_KIND:
                    continue
                if not self._first_report((d.kind, target, d.evidence)):
                    continue
                per_kind[d.kind] = per_kind.get(d.kind, 0) + 1
                where = f" from {target}" if target else ""
                metadata = {
                    "kind": d.kind,
                    "location": location,
                    "occurrences": str(counts[d.kind]),
                    "status": str(msg.status),
                    "variant": msg.variant,
                }
                content_type = msg.header("content-type")
                if content_type:
                    metadata["content_type"] = content_type[:200]
                metadata.update(d.extra)
                findings.append(Finding(
                    type=f"{d.category}-exposure",
                    message=f"{d.description} exposed in a response {location}{where}",
                    severity=d.severity, target=target, evidence=d.evidence,
                    metadata=metadata))
        return findings


def main() -> int:
    plugin = Plugin(name=os.environ.get("OXG_PLUGIN_NAME") or "seer",
                    capabilities=["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"],
                    subscriptions=["FLOW_REQUEST", "FLOW_RESPONSE"])
    seer = Seer(plugin.config, log=plugin.log)
    plugin.on_request(seer.on_request)

    @plugin.on_response
    def inspect(msg: HttpMessage) -> None:
        for finding in seer.findings_for(msg):
            plugin.emit(finding, cause=msg)

    return plugin.main()


if __name__ == "__main__":
    sys.exit(main())
