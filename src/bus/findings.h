#pragma once
// Findings from plugins: validation of what a plugin sent (untrusted) and the findings.jsonl
// record (contract §8). No gRPC here: the bus maps the protocol's Finding onto FindingInput.
//
// Validation (each failure names the field; the bus counts it in
// oxg_plugin_event_failures_total{plugin,event="finding"} and audits finding_rejected):
// - type: 1..64 bytes of [a-z0-9._-] (e.g. "missing-security-header");
// - message: 1..4096 bytes; target: up to 2048; evidence: up to 16384;
// - severity: info|low|med|high|crit (the protocol's SEVERITY_UNSPECIFIED is refused);
// - metadata: at most 64 entries, keys 1..128 bytes of [A-Za-z0-9._-], values up to 4096 bytes;
// - every string valid UTF-8 without NUL; the whole finding at most 64 KiB.
// Accepted findings have their message, target, evidence and metadata values passed through the
// redactor (a plugin reporting a leaked token must not copy it into the findings file); a
// metadata key that names a secret (Redactor::IsSecretKey) has its value replaced whole.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"

namespace oxg::bus {

enum class Severity { kInfo, kLow, kMedium, kHigh, kCritical };
std::string_view SeverityName(Severity s);  // "info", "low", "med", "high", "crit"

struct FindingLimits {
  size_t max_type = 64;
  size_t max_message = 4096;
  size_t max_target = 2048;
  size_t max_evidence = 16384;
  size_t max_metadata_entries = 64;
  size_t max_metadata_key = 128;
  size_t max_metadata_value = 4096;
  size_t max_total = 64 * 1024;
};

// What a plugin sent, before validation.
struct FindingInput {
  std::string type;
  std::string message;
  std::string target;
  std::string evidence;
  // The protocol's enum value: 0 unspecified, 1 INFO .. 5 CRITICAL; anything else is refused.
  int severity = 0;
  std::vector<std::pair<std::string, std::string>> metadata;
};

// A validated, redacted finding ready for findings.jsonl.
struct Finding {
  std::string id;  // 26-char ULID
  std::string plugin;
  std::string type;
  std::string message;
  std::string target;
  std::string evidence;
  Severity severity = Severity::kInfo;
  Clock::WallTime ts;
  std::vector<std::pair<std::string, std::string>> meta;  // sorted by key, keys unique
  std::string trace_id;  // 32 hex, or empty
};

// Validates and redacts. Errors are InvalidArgument("field: reason"), never echoing the
// plugin's bytes beyond a field name.
absl::StatusOr<Finding> ValidateFinding(const FindingInput& input, std::string_view plugin,
                                        std::string_view trace_id, const Clock& clock,
                                        const FindingLimits& limits = {});

// Appends one findings.jsonl line (keys in contract order, ending in '\n').
void AppendFindingLine(std::string& out, const Finding& finding);

}  // namespace oxg::bus
