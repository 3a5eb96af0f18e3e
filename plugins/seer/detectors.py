"""Seer's detectors: secrets and personal data in text. Pure functions, no I/O, no SDK.

`scan(text)` returns `Detection`s. A detection keeps the matched value only so the caller can
check it; anything that leaves the process uses `evidence`, which is redacted (`redact()`).

Every pattern is bounded (no nested unbounded repetition), so scanning a hostile megabyte stays
linear in practice. Values the daemon's sanitizer already masked (`[REDACTED]`) never match.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

__all__ = ["Detection", "KINDS", "scan", "redact", "luhn_ok", "iban_ok"]

MASK = "[REDACTED]"


@dataclass(frozen=True)
class Detection:
    kind: str          # e.g. "aws_access_key_id"
    category: str      # "secret" or "pii"
    severity: str      # info | low | med | high | crit
    description: str   # human words for the finding message
    value: str         # the raw match: never log or emit it
    evidence: str      # redacted, safe to report
    start: int         # offset in the scanned text
    end: int
    extra: Dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def redact(value: str) -> str:
    """Shows at most the first 4 and last 2 characters, fewer for short values:
    `AKIAIOSFODNN7EXAMPLE` -> `AKIA…[REDACTED]…LE`."""
    if len(value) >= 12:
        return f"{value[:4]}\u2026{MASK}\u2026{value[-2:]}"
    if len(value) >= 8:
        return f"{value[:2]}\u2026{MASK}"
    return MASK


def redact_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}\u2026{MASK}@{domain}"


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Lengths of IBANs by country (ISO 13616 registry, the common ones); others: 15-34.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}


def iban_ok(iban: str) -> bool:
    iban = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        return False
    want = _IBAN_LENGTHS.get(iban[:2])
    if want is not None and len(iban) != want:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _card_brand(digits: str) -> Optional[str]:
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 222100 <= six <= 272099) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649) and n in (16, 19):
        return "discover"
    if 3528 <= four <= 3589 and n in (16, 19):
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38)) and n == 14:
        return "diners"
    return None


def _jwt_header(token: str) -> Optional[dict]:
    head = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) and ("alg" in value or "typ" in value) else None


# (kind, category, severity, description, pattern, group holding the value)
_SIMPLE = [
    ("aws_access_key_id", "secret", "high", "AWS access key ID",
     r"(?<![A-Z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Z0-9])", 1),
    ("private_key", "secret", "crit", "private key",
     r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----", 0),
    ("github_token", "secret", "high", "GitHub token",
     r"(?<![A-Za-z0-9_])((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})"
     r"(?![A-Za-z0-9_])", 1),
    ("slack_token", "secret", "high", "Slack token",
     r"(?<![A-Za-z0-9])(xox[abposr]-[A-Za-z0-9]{8,64}-[A-Za-z0-9-]{8,200})", 1),
    ("slack_webhook", "secret", "med", "Slack incoming webhook URL",
     r"(https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32})",
     1),
    ("stripe_secret_key", "secret", "high", "Stripe live secret key",
     r"(?<![A-Za-z0-9])((?:sk|rk)_live_[A-Za-z0-9]{20,99})(?![A-Za-z0-9])", 1),
    ("google_api_key", "secret", "med", "Google API key",
     r"(?<![A-Za-z0-9_-])(AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])", 1),
]
_SIMPLE_RE = [(k, c, s, d, re.compile(p), g) for k, c, s, d, p, g in _SIMPLE]

_JWT = re.compile(r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{2,8000}"
                  r"\.[A-Za-z0-9_-]{0,2000})(?![A-Za-z0-9_.-])")
_ASSIGNMENT = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:api|access|auth|secret|private|client)[_-]?(?:key|token|secret)"
    r"|apikey|secret|password|passwd)[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?"
    r"([^\s\"'&,;<>(){}\[\]`]{8,200})")
_PLACEHOLDER = re.compile(
    r"(?i)^(?:null|none|undefined|true|false|string|example\w*|changeme|password\w*|secret\w*"
    r"|your[_-]?\w*|x{4,}|\*{4,}|\.{4,}|[<$%{#].*|.*(?:redacted|example|placeholder).*)$")
_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+$")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)"
                    r"{1,8}[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_NOT_EMAIL_TLDS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "map",
                   "woff", "woff2", "ttf"}
_DOC_DOMAINS = ("example.com", "example.org", "example.net", "localhost", ".test", ".invalid",
                ".example")
_CARD = re.compile(r"(?<![0-9.,-])([0-9](?:[ -]?[0-9]){12,18})(?![0-9]|[.,-][0-9])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)"
                   r"(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![0-9-])((?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4})"
                  r"(?![0-9-])")
_SSN_SAMPLES = {"123-45-6789", "078-05-1120", "219-09-9999"}

KINDS = [k for k, *_ in _SIMPLE] + [
    "jwt", "generic_secret_assignment", "email_address", "credit_card_number", "iban",
    "us_ssn"]


def _detect_jwts(text: str, out: List[Detection]) -> None:
    for m in _JWT.finditer(text):
        header = _jwt_header(m.group(1))
        if header is None:
            continue
        extra = {"alg": str(header.get("alg", ""))[:32]}
        out.append(Detection("jwt", "secret", "med", "JSON Web Token", m.group(1),
                             redact(m.group(1)), m.start(1), m.end(1), extra))


def _detect_assignments(text: str, out: List[Detection]) -> None:
    for m in _ASSIGNMENT.finditer(text):
        key, value = m.group(1), m.group(2).rstrip(".")
        if (MASK in value or len(value) < 8 or len(set(value)) < 5
                or _PLACEHOLDER.match(value) or _IDENTIFIER_PATH.match(value)
                or re.fullmatch(r"[A-Za-z_]+", value)):
            continue
        out.append(Detection("generic_secret_assignment", "secret", "med",
                             f"hard-coded secret assigned to '{key}'", value,
                             f"{key}={redact(value)}", m.start(2), m.start(2) + len(value),
                             {"key": key.lower()}))


def _detect_emails(text: str, out: List[Detection]) -> None:
    for m in _EMAIL.finditer(text):
        value = m.group(1)
        domain = value.rsplit("@", 1)[1].lower()
        if domain.rsplit(".", 1)[-1] in _NOT_EMAIL_TLDS:
            continue
        if any(domain == d or domain.endswith(d if d.startswith(".") else "." + d)
               for d in _DOC_DOMAINS):
            continue
        out.append(Detection("email_address", "pii", "low", "email address", value,
                             redact_email(value), m.start(1), m.end(1), {"domain": domain}))


def _detect_cards(text: str, out: List[Detection]) -> None:
    for m in _CARD.finditer(text):
        raw = m.group(1)
        separators = {c for c in raw if not c.isdigit()}
        if len(separators) > 1:
            continue  # "4111 1111-1111 1111" is not how anyone writes a card
        digits = raw.replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or len(set(digits)) < 2 or not luhn_ok(digits):
            continue
        brand = _card_brand(digits)
        if brand is None:
            continue
        out.append(Detection("credit_card_number", "pii", "high", "payment card number",
                             digits, redact(digits), m.start(1), m.end(1),
                             {"brand": brand, "luhn": "valid"}))


def _detect_ibans(text: str, out: List[Detection]) -> None:
    for m in _IBAN.finditer(text):
        value = m.group(1).replace(" ", "")
        if iban_ok(value):
            out.append(Detection("iban", "pii", "med", "IBAN (bank account number)", value,
                                 redact(value), m.start(1), m.end(1),
                                 {"country": value[:2]}))


def _detect_ssns(text: str, out: List[Detection]) -> None:
    for m in _SSN.finditer(text):
        value = m.group(1)
        if value in _SSN_SAMPLES:
            continue
        out.append(Detection("us_ssn", "pii", "high", "US social security number", value,
                             redact(value), m.start(1), m.end(1)))


def scan(text: str, disabled: Iterable[str] = ()) -> List[Detection]:
    """Every detection in `text`, by position. Where a specific detector and the generic
    assignment detector found the same value, only the specific one is kept."""
    off = set(disabled)
    found: List[Detection] = []
    for kind, category, severity, description, pattern, group in _SIMPLE_RE:
        if kind in off:
            continue
        for m in pattern.finditer(text):
            value = m.group(group)
            evidence = value if kind == "private_key" else redact(value)
            found.append(Detection(kind, category, severity, description, value, evidence,
                                   m.start(group), m.end(group)))
    for kind, fn in (("jwt", _detect_jwts), ("generic_secret_assignment", _detect_assignments),
                     ("email_address", _detect_emails), ("credit_card_number", _detect_cards),
                     ("iban", _detect_ibans), ("us_ssn", _detect_ssns)):
        if kind not in off:
            fn(text, found)
    specific = [d for d in found if d.kind != "generic_secret_assignment"]
    kept = [d for d in found
            if d.kind != "generic_secret_assignment"
            or not any(s.start < d.end and d.start < s.end for s in specific)]
    kept.sort(key=lambda d: (d.start, d.kind))
    return kept
