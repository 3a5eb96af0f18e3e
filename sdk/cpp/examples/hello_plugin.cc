// The smallest useful C++ plugin: logs every request line and reports each host once.
// Run it under 0xgend's supervisor, or by hand:
//   OXG_PLUGIN_NAME=example-cpp OXG_AUTH_TOKEN_FILE=<data-dir>/token ./oxg_example_cpp_plugin
#include <cstdio>
#include <set>
#include <string>

#include "oxg/sdk/plugin.h"

int main() {
  oxg::sdk::Plugin plugin({.name = "",  // from OXG_PLUGIN_NAME
                           .capabilities = {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"},
                           .subscriptions = {"FLOW_REQUEST"}});
  std::set<std::string> hosts;  // callbacks run on one thread: no lock needed
  plugin.OnRequest([&](const oxg::sdk::HttpMessage& m) {
    std::fprintf(stderr, "%s %s %s\n", m.method.c_str(), m.target.c_str(), m.version.c_str());
    const std::string host(m.Header("Host").value_or(""));
    if (host.empty() || !hosts.insert(host).second) return;
    plugin.Emit({.type = "example.host-seen",
                 .message = "first request to " + host,
                 .severity = oxg::sdk::Severity::kInfo,
                 .target = m.Url(),
                 .metadata = {{"host", host}}},
                &m);
  });
  return oxg::sdk::RunMain(plugin);
}
