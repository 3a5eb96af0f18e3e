"""Findings as a plugin builds them, checked against the bus's limits (docs/plugins.md,
"Sending findings") before they leave the process."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict

__all__ = ["Finding", "SEVERITIES"]

# Short names plugins write, and the spelled-out ones, to the proto's Severity numbers.
SEVERITIES: Dict[str, int] = {
    "info": 1, "low": 2, "med": 3, "medium": 3, "high": 4, "crit": 5, "critical": 5,
}

_TYPE = re.compile(r"^[a-z0-9._-]{1,64}$")
_META_KEY = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

MAX_MESSAGE = 4096
MAX_TARGET = 2048
MAX_EVIDENCE = 16384
MAX_META_ENTRIES = 64
MAX_META_VALUE = 4096


def _clean(text: object, limit: int) -> str:
    """Valid UTF-8 without NUL, at most `limit` bytes (cut on a character boundary, with an
    ellipsis so a reader sees it was cut)."""
    s = str(text).replace("\0", " ")
    data = s.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    cut = data[: max(0, limit - 3)].decode("utf-8", errors="ignore")
    return cut + "\u2026"


@dataclass
class Finding:
    """What a plugin reports.

    `type` (1-64 of [a-z0-9._-]), `severity` (info, low, med, high, crit) and metadata keys
    (1-128 of [A-Za-z0-9._-], at most 64) are checked here and raise ValueError: those are
    mistakes in the plugin. Over-long message, target, evidence and metadata values are cut to
    the bus's limits instead, since they usually come from traffic.
    """

    type: str
    message: str
    severity: str = "info"
    target: str = ""
    evidence: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not _TYPE.match(self.type):
            raise ValueError(f"finding type {self.type!r} must be 1-64 characters of [a-z0-9._-]")
        if str(self.severity).lower() not in SEVERITIES:
            raise ValueError(f"finding severity {self.severity!r} must be one of "
                             "info, low, med, high, crit")
        if not str(self.message):
            raise ValueError("finding message must not be empty")
        if len(self.metadata) > MAX_META_ENTRIES:
            raise ValueError(f"finding metadata has more than {MAX_META_ENTRIES} entries")
        for key in self.metadata:
            if not isinstance(key, str) or not _META_KEY.match(key):
                raise ValueError(f"finding metadata key {key!r} must be 1-128 characters of "
                                 "[A-Za-z0-9._-]")

    def to_proto(self, common_pb2, flow_id: str = ""):
        """The oxg.common.Finding message (common_pb2 is the generated module)."""
        return common_pb2.Finding(
            type=self.type,
            message=_clean(self.message, MAX_MESSAGE),
            severity=SEVERITIES[str(self.severity).lower()],
            target=_clean(self.target, MAX_TARGET),
            evidence=_clean(self.evidence, MAX_EVIDENCE),
            metadata={k: _clean(v, MAX_META_VALUE) for k, v in self.metadata.items()},
            flow_id=_clean(flow_id, 64),
        )
