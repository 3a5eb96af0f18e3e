#pragma once

// 0xgend's configuration: every flag of contract §2, their OXG_* and OTEL_* environment
// fallbacks, validation and the defaults that hang off --data-dir.

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/net.h"
#include "common/status.h"

namespace oxg::daemon {

// The validated configuration. Paths that default to a place under the data dir are already
// resolved; addresses are parsed. Plain value type, copyable.
struct Config {
  std::string data_dir = "./oxg-data";

  HostPort addr;                         // --addr
  std::string token;                     // empty: read or generate <data-dir>/token
  std::optional<HostPort> metrics_addr;  // unset: metrics endpoint disabled
  bool metrics_legacy_aliases = true;
  std::optional<HostPort> proxy_addr;  // unset: proxy disabled
  std::string proxy_ca_cert;
  std::string proxy_ca_key;
  std::string proxy_history;
  std::string proxy_flow_log;
  bool flow_log_raw = false;
  double flow_sample_rate = 1.0;
  int64_t max_body_kb = 128;  // -1: unlimited, 0: headers only
  std::string scope_policy;   // empty: none
  std::string plugins_dir;    // empty: none
  int workers = 1;
  // Additions to contract §2 (documented in docs/operations.md).
  double proxy_upstream_timeout = 30;  // seconds
  double plugin_restart_backoff = 1;   // seconds, the first restart delay
  double plugin_stop_grace = 5;        // seconds from goodbye/SIGTERM to SIGKILL
  double proxy_idle_timeout = 60;      // seconds
  bool proxy_insecure_skip_verify = false;
  std::string proxy_upstream_ca;       // empty: system store only

  std::string trace_endpoint;  // empty: no OTLP export
  std::string trace_protocol = "http/protobuf";
  std::vector<std::pair<std::string, std::string>> trace_headers;  // percent-decoded
  bool trace_insecure_skip_verify = false;
  std::string trace_service_name = "0xgend";
  double trace_sample_ratio = 1.0;
  std::string trace_file;  // empty: no span archive

  std::string audit_log;  // "-": standard output
  log::Level log_level = log::Level::kInfo;
  std::string crash_dir;

  // The configuration as key/value text for the config_loaded audit event and crash
  // manifests. Secrets (the token, trace header values) are left out.
  std::vector<std::pair<std::string, std::string>> Describe() const;
};

// Parses `k=v,k2=v2` as in OTEL_EXPORTER_OTLP_HEADERS: entries are trimmed, keys must not be
// empty, values are percent-decoded.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseTraceHeaders(
    std::string_view text);

// What ParseCommandLine decided.
struct ParseResult {
  // Set when the process should end now (help or version shown: 0; bad usage or
  // configuration: 2). Unset when `config` is ready to run.
  std::optional<int> exit_code;
  Config config;
};

// Parses the command line (args[0] is the program name) with the environment fallbacks, then
// validates. Help and version go to `out`; errors go to `err` as `0xgend: --flag: problem`.
ParseResult ParseCommandLine(std::span<const std::string> args, std::ostream& out,
                             std::ostream& err);
ParseResult ParseCommandLine(int argc, const char* const* argv, std::ostream& out,
                             std::ostream& err);

}  // namespace oxg::daemon
