#include "telemetry/audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <exception>

#include "common/json_writer.h"
#include "common/log.h"
#include "common/write_all.h"
#include "common/redact.h"

namespace oxg::audit {
namespace {

constexpr std::array<std::string_view, kEventTypeCount> kEventTypeNames = {
    "plugin_load",       "plugin_disconnect", "plugin_restart",  "capability_grant",
    "capability_denied", "rpc_call",          "rpc_denied",      "scope_violation",
    "finding_received",  "finding_rejected",  "proxy_lifecycle", "network_denied",
    "network_request",   "config_loaded",
};
constexpr std::array<std::string_view, kDecisionCount> kDecisionNames = {"allow", "deny", "info"};

// A failing disk can fail every write; one stderr line a minute is enough to get noticed
// without drowning the operational log.
constexpr std::chrono::minutes kReportInterval(1);

std::atomic<metrics::ActiveSpanProvider> g_span_provider{nullptr};

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r: may return a static string instead of filling buf.
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

bool ValidEvent(const AuditEvent& event) {
  return static_cast<size_t>(event.event_type) < kEventTypeCount &&
         static_cast<size_t>(event.decision) < kDecisionCount;
}

// Everything after the timestamp, as a complete JSON object. The timestamp is spliced in later
// so it can be taken under the write lock, which keeps the file in timestamp order.
std::string FormatBody(const AuditEvent& event, const metrics::SpanContextRef* span) {
  const Redactor& redactor = Redactor::Default();
  std::string out;
  out.reserve(256);
  JsonWriter w(out);
  w.BeginObject();
  w.Key("component").String(event.component);
  // A plugin chooses its own name, so it is treated as untrusted text like the reason.
  if (!event.plugin_id.empty()) w.Key("plugin_id").String(redactor.Redact(event.plugin_id));
  w.Key("event_type").String(EventTypeName(event.event_type));
  w.Key("decision").String(DecisionName(event.decision));
  if (!event.reason.empty()) w.Key("reason").String(redactor.Redact(event.reason));
  if (!event.metadata.empty()) {
    w.Key("metadata").BeginObject();
    for (const auto& [key, value] : event.metadata) {
      w.Key(redactor.Redact(key));
      // A value under a key like "authorization" is a secret whatever it looks like, so the
      // pattern-based pass is not enough for it.
      if (Redactor::IsSecretKey(key)) {
        w.String(kRedacted);
      } else {
        w.String(redactor.Redact(value));
      }
    }
    w.EndObject();
  }
  if (span != nullptr && span->trace_id.IsValid() && span->span_id.IsValid()) {
    char trace_hex[32];
    char span_hex[16];
    span->trace_id.WriteHex(trace_hex);
    span->span_id.WriteHex(span_hex);
    w.Key("trace_id").String(std::string_view(trace_hex, sizeof(trace_hex)));
    w.Key("span_id").String(std::string_view(span_hex, sizeof(span_hex)));
  }
  w.EndObject();
  return out;
}

std::string Splice(std::string_view timestamp, std::string_view body) {
  std::string line;
  line.reserve(body.size() + timestamp.size() + 20);
  line.append("{\"timestamp\":\"");
  // RFC 3339 text has nothing to escape, but going through the escaper keeps the line valid
  // JSON whatever the clock helper returns.
  AppendJsonEscaped(line, timestamp);
  line.append("\",");
  line.append(body.substr(1));  // the body always holds at least component/event_type/decision
  line.push_back('\n');
  return line;
}

}  // namespace

std::string_view EventTypeName(EventType type) {
  const auto i = static_cast<size_t>(type);
  return i < kEventTypeCount ? kEventTypeNames[i] : std::string_view("invalid");
}

std::string_view DecisionName(Decision decision) {
  const auto i = static_cast<size_t>(decision);
  return i < kDecisionCount ? kDecisionNames[i] : std::string_view("invalid");
}

bool ParseEventType(std::string_view name, EventType* out) {
  for (size_t i = 0; i < kEventTypeCount; ++i) {
    if (kEventTypeNames[i] == name) {
      *out = static_cast<EventType>(i);
      return true;
    }
  }
  return false;
}

bool ParseDecision(std::string_view name, Decision* out) {
  for (size_t i = 0; i < kDecisionCount; ++i) {
    if (kDecisionNames[i] == name) {
      *out = static_cast<Decision>(i);
      return true;
    }
  }
  return false;
}

void SetAuditSpanProvider(metrics::ActiveSpanProvider provider) {
  g_span_provider.store(provider, std::memory_order_release);
}

std::string FormatAuditLine(const AuditEvent& event, Clock::WallTime timestamp,
                            const metrics::SpanContextRef* span) {
  return Splice(FormatRfc3339Nanos(timestamp), FormatBody(event, span));
}

// ---- AuditStats ----------------------------------------------------------------------------

AuditStats::AuditStats(metrics::Registry& registry)
    : events_family_(registry.AddCounter("oxg_audit_events_total", "Audit events written.",
                                         {"event_type", "decision"})),
      write_errors_(registry
                        .AddCounter("oxg_audit_write_errors_total",
                                    "Audit events lost because the audit log could not be "
                                    "written (disk full, closed file, ...).")
                        .WithLabels(std::span<const std::string_view>())) {}

metrics::Counter& AuditStats::Events(EventType type, Decision decision) {
  auto& slot = events_[static_cast<size_t>(type) * kDecisionCount + static_cast<size_t>(decision)];
  metrics::Counter* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Two threads may race here; WithLabels hands both the same series, so either store wins.
    counter = &events_family_.WithLabels({EventTypeName(type), DecisionName(decision)});
    slot.store(counter, std::memory_order_release);
  }
  return *counter;
}

// ---- AuditLog ------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path, AuditStats& stats,
                                                         const Clock& clock) {
  if (path.empty()) return absl::InvalidArgumentError("audit log path is empty");
  if (path == "-") {
    return std::unique_ptr<AuditLog>(new AuditLog(path, STDOUT_FILENO, false, stats, clock));
  }
  // O_APPEND makes every write land at the end even with several writers (another daemon,
  // logrotate's copytruncate), so whole lines never overwrite each other.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err), path + ": " + ErrnoText(err));
  }
  // An audit log left from older runs may be readable by others; it names plugins, targets and
  // decisions, so keep it owner-only like everything else in the data dir.
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
    ::fchmod(fd, st.st_mode & 0700);
  }
  return std::unique_ptr<AuditLog>(new AuditLog(path, fd, true, stats, clock));
}

AuditLog::AuditLog(std::string path, int fd, bool owns_fd, AuditStats& stats, const Clock& clock)
    : path_(std::move(path)), fd_(fd), owns_fd_(owns_fd), stats_(stats), clock_(clock) {}

AuditLog::~AuditLog() {
  if (owns_fd_) ::close(fd_);
}

bool AuditLog::Write(const AuditEvent& event) {
  // Auditing must never take the caller down, so even allocation failures end up as a counted
  // write error.
  try {
    if (!ValidEvent(event)) {
      stats_.write_errors().Inc();
      std::lock_guard lock(write_mu_);
      ReportFailure(EINVAL);
      return false;
    }
    metrics::SpanContextRef active;
    const metrics::SpanContextRef* span = nullptr;
    if (event.span.has_value()) {
      span = &*event.span;
    } else if (auto provider = g_span_provider.load(std::memory_order_acquire);
               provider != nullptr && provider(&active)) {
      span = &active;
    }
    // Redaction is the expensive part; keep it outside the lock.
    const std::string body = FormatBody(event, span);

    std::lock_guard lock(write_mu_);
    const std::string line = Splice(FormatRfc3339Nanos(clock_.Now()), body);
    size_t written = 0;
    const int err = WriteAll(fd_, line, &written);
    if (err != 0) {
      // Part of the line reached the file: end it, so the next event starts on a line of its
      // own and only this one is lost (a reader rejects the fragment as one bad line).
      if (written > 0) {
        while (::write(fd_, "\n", 1) < 0 && errno == EINTR) {
        }
      }
      stats_.write_errors().Inc();
      ReportFailure(err);
      return false;
    }
    stats_.Events(event.event_type, event.decision).Inc();
    return true;
  } catch (...) {
    stats_.write_errors().Inc();
    return false;
  }
}

void AuditLog::ReportFailure(int err) {
  const Clock::MonoTime now = clock_.MonoNow();
  if (last_report_.has_value() && now - *last_report_ < kReportInterval) {
    ++unreported_failures_;
    return;
  }
  std::string message = "cannot write audit event to " + path_ + ": " + ErrnoText(err);
  if (unreported_failures_ > 0) {
    message +=
        " (" + std::to_string(unreported_failures_) + " more failed writes since the last report)";
  }
  last_report_ = now;
  unreported_failures_ = 0;
  log::Error("audit", message);
}

}  // namespace oxg::audit
