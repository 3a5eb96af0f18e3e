// passive-headers: reports missing security headers, insecure cookies and verbose server
// banners seen in captured traffic (README.md). Run by 0xgend's supervisor (manifest.json).
#include <cstdio>

#include "analysis.h"
#include "oxg/sdk/plugin.h"

int main() {
  oxg::passive_headers::Config config;
  if (auto s = oxg::passive_headers::ParseConfig(
          oxg::sdk::ProcessEnv("OXG_PLUGIN_CONFIG").value_or(""), &config);
      !s.ok()) {
    std::fprintf(stderr, "passive-headers: %s\n", s.ToString().c_str());
    return 2;
  }
  oxg::sdk::Plugin plugin(
      {.name = oxg::sdk::ProcessEnv("OXG_PLUGIN_NAME").value_or("passive-headers"),
       .capabilities = {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"},
       .subscriptions = {"FLOW_REQUEST", "FLOW_RESPONSE"}});
  oxg::passive_headers::PassiveHeaders checks(std::move(config));  // reader thread only
  plugin.OnRequest([&](const oxg::sdk::HttpMessage& m) { checks.OnRequest(m); });
  plugin.OnResponse([&](const oxg::sdk::HttpMessage& m) {
    for (const oxg::sdk::Finding& f : checks.OnResponse(m)) plugin.Emit(f, &m);
  });
  return oxg::sdk::RunMain(plugin);
}
