"""0xgen plugin SDK for Python: connect to 0xgend's plugin bus, receive captured HTTP messages,
report findings. See sdk/python/README.md and docs/plugins.md.

    from oxg_plugin import Finding, Plugin

    plugin = Plugin(capabilities=["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"],
                    subscriptions=["FLOW_RESPONSE"])

    @plugin.on_response
    def check(msg):
        if msg.header("server"):
            plugin.emit(Finding("server-banner", "Server header present",
                                evidence=msg.header("server")), cause=msg)

    raise SystemExit(plugin.main())
"""

from .env import DEFAULT_ADDR, EnvError
from .finding import SEVERITIES, Finding
from .http import HttpMessage, WireError, guess_url, parse_wire
from .plugin import TEMPORARY_CODES, Plugin, PluginError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADDR", "EnvError", "Finding", "HttpMessage", "Plugin", "PluginError", "SEVERITIES",
    "TEMPORARY_CODES", "WireError", "guess_url", "parse_wire",
]
