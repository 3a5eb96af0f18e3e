#!/usr/bin/python3
"""example-hello: the smallest useful 0xgen plugin; copy this directory to start your own.
It logs every request line and says hello (one info finding) once per host."""
import os
import sys

try:
    from oxg_plugin import Finding, Plugin
except ImportError:  # a source checkout without PYTHONPATH: the SDK the build put in build/python
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.normpath(os.path.join(here, "..", "..", "build", "python")))
    from oxg_plugin import Finding, Plugin

plugin = Plugin(name=os.environ.get("OXG_PLUGIN_NAME") or "example-hello",
                capabilities=["CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"],
                subscriptions=["FLOW_REQUEST"])
greeted = set()  # hosts already greeted; bounded so a crawl of many hosts cannot grow it forever
MAX_HOSTS = 10000


@plugin.on_request
def hello(msg):
    plugin.log(f"{msg.method} {msg.url or msg.target}")
    host = msg.host.lower()
    if host and host not in greeted and len(greeted) < MAX_HOSTS:
        if plugin.emit(Finding("hello", f"hello from {host}", target=msg.url or host), cause=msg):
            greeted.add(host)


if __name__ == "__main__":
    sys.exit(plugin.main())
