#pragma once
// Plugin manifests: what the supervisor starts and what the bus may grant (issues 5 and 6).
//
// One JSON object per plugin, in <plugins-dir>/<dir>/manifest.json:
//   {
//     "name": "passive-headers",            // [a-z0-9][a-z0-9._-]{0,63}, unique
//     "version": "0.1.0",                   // 1..64 printable ASCII characters
//     "command": "./passive-headers",       // relative paths are relative to the manifest
//     "args": ["--verbose"],                // optional
//     "capabilities": ["CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT"],
//     "subscriptions": ["FLOW_RESPONSE"],   // each needs its capabilities declared
//     "limits": {                           // optional; every key optional, integers > 0
//       "cpu_seconds": 60, "memory_bytes": 268435456, "open_files": 256,
//       "processes": 16, "wall_seconds": 30
//     },
//     "restart": "on-failure",              // always | on-failure (default) | never
//     "config": { ... }                     // optional object handed to the plugin as is
//   }
// Unknown keys and wrong types are errors: a typo in a limit must not silently lift it.
// Errors read `file: field: reason`, e.g. `p/manifest.json: capabilities[1]: unknown
// capability "CAP_ROOT"`.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bus/capabilities.h"

namespace oxg::plugins {

inline constexpr size_t kMaxManifestBytes = 1 << 20;

enum class RestartPolicy { kAlways, kOnFailure, kNever };
std::string_view RestartPolicyName(RestartPolicy p);

struct Limits {
  // Defaults applied when a manifest leaves a limit out.
  std::optional<uint64_t> cpu_seconds;   // none: no CPU-time limit (long-running plugins)
  uint64_t memory_bytes = 512ull << 20;  // resident size of the plugin's process group
  uint64_t open_files = 256;
  uint64_t processes = 32;
  std::optional<uint64_t> wall_seconds;  // none: runs until stopped
};

struct Manifest {
  std::string path;  // the manifest file
  std::string name;
  std::string version;
  std::string command;  // absolute, or resolved against the manifest's directory
  std::vector<std::string> args;
  bus::CapabilitySet capabilities;
  std::vector<bus::Subscription> subscriptions;
  Limits limits;
  RestartPolicy restart = RestartPolicy::kOnFailure;
  std::string config_json = "{}";  // the "config" object, serialized
};

// Parses one manifest. `path` names it in errors and anchors a relative command.
absl::StatusOr<Manifest> ParseManifest(std::string_view json, const std::string& path);
absl::StatusOr<Manifest> LoadManifest(const std::string& path);

// Every <dir>/*/manifest.json, sorted by directory name. Bad manifests are reported in *errors
// (one message each) and left out; two manifests with one name: the second is an error.
std::vector<Manifest> LoadManifestsFromDir(const std::string& dir, std::vector<std::string>* errors);

}  // namespace oxg::plugins
