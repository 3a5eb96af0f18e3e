"""Where a plugin finds its bus address, token, name and config (docs/plugins.md, "What a plugin
is given"). Every function takes the environment as a mapping so tests can pass their own."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional

__all__ = ["DEFAULT_ADDR", "EnvError", "resolve_addr", "resolve_token", "resolve_name",
           "resolve_config"]

DEFAULT_ADDR = "127.0.0.1:50051"
# A token is 64 hex characters; anything near this size is not a token but a wrong file.
MAX_TOKEN_BYTES = 4096


class EnvError(Exception):
    """The environment does not give what the plugin needs, or gives it malformed."""


def resolve_addr(explicit: Optional[str], env: Mapping[str, str] = os.environ) -> str:
    if explicit:
        return explicit
    return env.get("OXG_BUS_ADDR", "").strip() or DEFAULT_ADDR


def resolve_name(explicit: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[str]:
    if explicit:
        return explicit
    return env.get("OXG_PLUGIN_NAME", "").strip() or None


def resolve_config(env: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """OXG_PLUGIN_CONFIG parsed as a JSON object; {} when unset."""
    text = env.get("OXG_PLUGIN_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise EnvError(f"OXG_PLUGIN_CONFIG is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise EnvError("OXG_PLUGIN_CONFIG is not a JSON object")
    return value


def _read_fd(fd_text: str) -> str:
    try:
        fd = int(fd_text)
    except ValueError:
        raise EnvError(f"OXG_AUTH_TOKEN_FD is not a file descriptor number: {fd_text!r}") from None
    if fd < 0:
        raise EnvError(f"OXG_AUTH_TOKEN_FD is negative: {fd}")
    chunks = []
    total = 0
    try:
        while total <= MAX_TOKEN_BYTES:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise EnvError(f"cannot read the token from OXG_AUTH_TOKEN_FD={fd}: {e.strerror}") from None
    finally:
        # Read once, then closed: the descriptor must not leak into anything the plugin starts.
        try:
            os.close(fd)
        except OSError:
            pass
    return _decode_token(b"".join(chunks), f"OXG_AUTH_TOKEN_FD={fd}")


def _read_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise EnvError(f"cannot read the token file {path}: {e.strerror}") from None
    return _decode_token(data, path)


def _decode_token(data: bytes, where: str) -> str:
    if len(data) > MAX_TOKEN_BYTES:
        raise EnvError(f"the token in {where} is longer than {MAX_TOKEN_BYTES} bytes")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise EnvError(f"the token in {where} is not text") from None
    if not token:
        raise EnvError(f"the token in {where} is empty")
    return token


def resolve_token(explicit: Optional[str], env: Mapping[str, str] = os.environ) -> str:
    """The daemon token: explicit, else OXG_AUTH_TOKEN_FD, OXG_AUTH_TOKEN_FILE, OXG_AUTH_TOKEN.

    The first source that is set decides; a set but unreadable source is an error rather than a
    reason to try the next one (a broken descriptor should not silently pick up a stale file).
    Surrounding whitespace is dropped. Never include the token in a message.
    """
    if explicit is not None and explicit.strip():
        return explicit.strip()
    fd_text = env.get("OXG_AUTH_TOKEN_FD", "").strip()
    if fd_text:
        return _read_fd(fd_text)
    path = env.get("OXG_AUTH_TOKEN_FILE", "").strip()
    if path:
        return _read_file(path)
    token = env.get("OXG_AUTH_TOKEN", "").strip()
    if token:
        return token
    raise EnvError("no auth token: set OXG_AUTH_TOKEN_FD, OXG_AUTH_TOKEN_FILE or OXG_AUTH_TOKEN "
                   "(the daemon's supervisor sets one for the plugins it starts)")
