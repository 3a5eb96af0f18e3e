#pragma once

// The audit log of contract §7: one JSON object per line recording security-relevant decisions
// (plugin loads, capability grants and denials, scope violations, daemon lifecycle, ...).
//
// Lines are redacted before they are written, appended with O_APPEND through a single write(2)
// each, and tied to the active trace when there is one. Writing never throws and never takes the
// daemon down: a failed write is counted in oxg_audit_write_errors_total and reported on the
// operational log (rate-limited).

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::audit {

// The closed list of event types; the names are part of the contract.
enum class EventType : uint8_t {
  kPluginLoad,
  kPluginDisconnect,
  kPluginRestart,
  kCapabilityGrant,
  kCapabilityDenied,
  kRpcCall,
  kRpcDenied,
  kScopeViolation,
  kFindingReceived,
  kFindingRejected,
  kProxyLifecycle,
  kNetworkDenied,
  kNetworkRequest,
  kConfigLoaded,
};
inline constexpr size_t kEventTypeCount = 14;

enum class Decision : uint8_t { kAllow, kDeny, kInfo };
inline constexpr size_t kDecisionCount = 3;

// Contract names, e.g. "plugin_load", "deny".
std::string_view EventTypeName(EventType type);
std::string_view DecisionName(Decision decision);
// Inverse of the above; false for names outside the contract list.
bool ParseEventType(std::string_view name, EventType* out);
bool ParseDecision(std::string_view name, Decision* out);

struct AuditEvent {
  std::string component;  // e.g. "daemon", "plugin_bus", "netgate"
  std::string plugin_id;  // empty: field omitted
  EventType event_type = EventType::kConfigLoaded;
  Decision decision = Decision::kInfo;
  std::string reason;  // empty: field omitted
  // Written as a JSON object in this order; empty: field omitted.
  std::vector<std::pair<std::string, std::string>> metadata;
  // The span the event belongs to. When unset, the span active on the writing thread (see
  // SetAuditSpanProvider) is used; when neither exists the ids are omitted.
  std::optional<metrics::SpanContextRef> span;
};

// Installs the hook that reports the span active on the calling thread (the tracing subsystem
// wires it). nullptr, the default, reports none. Thread-safe.
void SetAuditSpanProvider(metrics::ActiveSpanProvider provider);

// Renders one audit line (with its trailing newline) exactly as AuditLog writes it: fields in
// contract order, reason and metadata redacted. `span` may be null.
std::string FormatAuditLine(const AuditEvent& event, Clock::WallTime timestamp,
                            const metrics::SpanContextRef* span);

// The audit families of one Registry. Build it once per registry (the family names can be
// declared only once) and share it between every AuditLog writing for that registry.
// Thread-safe; must outlive the logs using it.
class AuditStats {
 public:
  explicit AuditStats(metrics::Registry& registry);
  AuditStats(const AuditStats&) = delete;
  AuditStats& operator=(const AuditStats&) = delete;

  // oxg_audit_events_total{event_type,decision}; the series is created on first use so the
  // exposition does not fill with 42 zeros.
  metrics::Counter& Events(EventType type, Decision decision);
  // oxg_audit_write_errors_total.
  metrics::Counter& write_errors() { return write_errors_; }

 private:
  metrics::Family<metrics::Counter>& events_family_;
  metrics::Counter& write_errors_;
  std::array<std::atomic<metrics::Counter*>, kEventTypeCount * kDecisionCount> events_{};
};

// An open audit sink. Write() is thread-safe; lines from concurrent writers (even from other
// processes appending to the same file) never interleave within a line.
class AuditLog {
 public:
  // Opens `path` for appending (created 0600), or standard output when `path` is "-".
  // `stats` and `clock` must outlive the log.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path, AuditStats& stats,
                                                        const Clock& clock = Clock::Real());
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one line. Returns false when the write failed (already counted and reported);
  // callers have nothing more to do about it.
  bool Write(const AuditEvent& event);

  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, int fd, bool owns_fd, AuditStats& stats, const Clock& clock);
  void ReportFailure(int err);

  const std::string path_;
  const int fd_;
  const bool owns_fd_;
  AuditStats& stats_;
  const Clock& clock_;

  std::mutex write_mu_;
  // Guarded by write_mu_: when the last failure was reported, and how many went unreported.
  std::optional<Clock::MonoTime> last_report_;
  uint64_t unreported_failures_ = 0;
};

}  // namespace oxg::audit
