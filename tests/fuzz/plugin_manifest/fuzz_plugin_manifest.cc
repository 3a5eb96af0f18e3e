// Fuzzes the plugin manifest parser: manifests are operator files but often come with plugins
// from elsewhere. Any bytes must give a manifest or one `file: field: reason` error, and an
// accepted manifest must hold only what the format allows.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "plugins/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto m = oxg::plugins::ParseManifest(input, "/p/x/manifest.json");
  if (!m.ok()) {
    if (m.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (m.status().message().substr(0, 20) != "/p/x/manifest.json: ") std::abort();
    return 0;
  }
  if (m->name.empty() || m->name.size() > 64 || m->version.empty()) std::abort();
  if (m->command.empty() || m->command[0] != '/') std::abort();
  for (oxg::bus::Subscription s : m->subscriptions) {
    if (!oxg::bus::RequiredCapabilities(s).IsSubsetOf(m->capabilities)) std::abort();
  }
  if (m->limits.memory_bytes == 0 || m->limits.open_files == 0 || m->limits.processes == 0) {
    std::abort();
  }
  if (m->config_json.empty() || m->config_json[0] != '{') std::abort();
  return 0;
}
