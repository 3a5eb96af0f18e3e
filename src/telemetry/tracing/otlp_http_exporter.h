#pragma once

// The OTLP/HTTP span exporter (contract §6.4): POSTs each batch to a collector as
// application/x-protobuf or application/json, optionally gzip-compressed, retrying only what
// the contract calls transient (429, 502, 503, 504, connection failures and timeouts) within
// one export budget, honouring Retry-After.
//
// libcurl stays behind this header. The retry policy is a pure function (DecideRetry) so it is
// tested as a table without any network; time and randomness are injected.
//
// Secrets: header values are never logged (they carry API keys); the endpoint is logged only
// after Redactor::Default() has removed credentials from it.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "telemetry/tracing/otlp_encoding.h"
#include "telemetry/tracing/span_data.h"
#include "telemetry/tracing/stats.h"

namespace oxg::tracing {

enum class OtlpProtocol : uint8_t { kHttpProtobuf, kHttpJson };

// "http/protobuf" or "http/json" (the --trace-protocol values and the metric label), and back.
const char* OtlpProtocolName(OtlpProtocol protocol);
bool ParseOtlpProtocol(std::string_view name, OtlpProtocol* out);

// ---- retry policy -------------------------------------------------------------------------

// How one HTTP attempt ended below HTTP.
enum class TransportError : uint8_t {
  kNone,            // a response arrived; see http_status
  kConnectFailed,   // refused, unreachable, name not resolved
  kTimedOut,        // connect or transfer timeout
  kConnectionLost,  // send/receive error, or closed without a response
  kAborted,         // Shutdown() interrupted the transfer
  kOther,           // TLS verification, bad URL, out of memory...: not retryable
};

// Classifies a CURLcode (passed as int so this header needs no curl).
TransportError ClassifyCurlError(int curl_code);

struct AttemptResult {
  TransportError error = TransportError::kNone;
  long http_status = 0;     // valid when error == kNone
  std::string retry_after;  // the Retry-After header value, empty when absent
  std::string detail;       // for the log: curl's message or an excerpt of the response body
};

// Exponential backoff with equal jitter: before retry n (n >= 1) the base is
// min(max, initial * multiplier^(n-1)) and the wait is uniform in [base/2, base).
struct BackoffPolicy {
  std::chrono::nanoseconds initial = std::chrono::seconds(1);
  double multiplier = 2.0;
  std::chrono::nanoseconds max = std::chrono::seconds(30);
};

// A Retry-After below this is raised to it so a collector answering "Retry-After: 0" at once
// cannot make the exporter spin for the whole export budget.
inline constexpr std::chrono::nanoseconds kMinRetryDelay = std::chrono::milliseconds(100);

struct RetryDecision {
  enum class Action : uint8_t {
    kSuccess,  // 2xx: done
    kRetry,    // wait `delay`, then try again
    kGiveUp,   // not retryable, or the wait would pass the export deadline
  };
  Action action = Action::kGiveUp;
  std::chrono::nanoseconds delay{0};  // kRetry only
  bool retryable = false;             // kGiveUp: true when only the deadline stopped a retry
};

// The contract §6.4 decision after attempt number `attempts` (1 for the first) ended with
// `result`, `remaining` of the export budget left. `now` is the wall clock (for a Retry-After
// HTTP-date), `random01` a uniform draw in [0, 1) for the jitter. Pure; thread-safe.
RetryDecision DecideRetry(const AttemptResult& result, int attempts,
                          std::chrono::nanoseconds remaining, Clock::WallTime now,
                          const BackoffPolicy& policy, double random01);

// Parses a Retry-After value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date in
// IMF-fixdate, obsolete RFC 850 or asctime form, always GMT. A date in the past is a zero
// delay. nullopt when malformed.
std::optional<std::chrono::nanoseconds> ParseRetryAfter(std::string_view value,
                                                        Clock::WallTime now);

// ---- the exporter -------------------------------------------------------------------------

struct OtlpHttpExporterOptions {
  // http:// or https:// URL of the traces endpoint, e.g. http://collector:4318/v1/traces.
  std::string endpoint;
  OtlpProtocol protocol = OtlpProtocol::kHttpProtobuf;
  // Extra request headers (--trace-headers, already parsed and percent-decoded). Their values
  // are never logged. Content-Type, Content-Encoding and Content-Length are the exporter's own.
  std::vector<std::pair<std::string, std::string>> headers;
  // Skip TLS peer and host name verification (--trace-insecure-skip-verify).
  bool insecure_skip_verify = false;
  // gzip the request body (Content-Encoding: gzip).
  bool gzip = true;
  // Total budget of one Export call, retries and waits included.
  std::chrono::nanoseconds timeout = std::chrono::seconds(30);
  // Longest wait for a TCP/TLS connection within one attempt (never past the budget), so a
  // black-holed address still leaves time for a retry.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(10);
  BackoffPolicy backoff;
  Resource resource;
  InstrumentationScope scope;
  // oxg_trace_export_duration_seconds; may be null. Must outlive the exporter.
  TracingStats* stats = nullptr;
  // Waits between attempts. Returns false when the wait was cut short and the export should
  // stop. Empty: a real wait that Shutdown() interrupts. Tests inject one that advances a
  // SimulatedClock. Called on the exporting thread only.
  std::function<bool(std::chrono::nanoseconds)> wait;
  // Uniform draws in [0, 1) for the jitter. Empty: a seeded std::mt19937_64.
  std::function<double()> random;
};

// Thread-safety: Export() is called by one thread at a time (the batch processor's);
// Shutdown() may be called from any thread, also while an Export() runs, which it aborts
// promptly (the in-flight transfer and any retry wait). Exports after Shutdown() fail at once.
class OtlpHttpExporter final : public SpanExporter {
 public:
  // Validates the options (URL scheme and host, header names and values); an error names the
  // problem without echoing a header value and with the URL redacted.
  static absl::StatusOr<std::unique_ptr<OtlpHttpExporter>> Create(
      OtlpHttpExporterOptions options, const Clock& clock = Clock::Real());

  ~OtlpHttpExporter() override;
  OtlpHttpExporter(const OtlpHttpExporter&) = delete;
  OtlpHttpExporter& operator=(const OtlpHttpExporter&) = delete;

  ExportResult Export(std::span<const SpanData> batch) override;
  void Shutdown() override;

  // Attempts made by the last Export (tests and logs).
  int last_attempts() const { return last_attempts_; }

 private:
  struct Curl;  // the easy and multi handles, the header list, and per-attempt buffers
  OtlpHttpExporter(OtlpHttpExporterOptions options, const Clock& clock);
  AttemptResult Attempt(const std::string& body, std::chrono::nanoseconds remaining);
  bool Wait(std::chrono::nanoseconds d);
  void Record(bool success, Clock::MonoTime start);
  void ReportFailure(size_t spans, const AttemptResult& last, bool deadline);
  void ReportSuccess();

  const OtlpHttpExporterOptions options_;
  const Clock& clock_;
  const std::string redacted_endpoint_;
  std::function<double()> random_;
  metrics::Histogram* success_duration_ = nullptr;
  metrics::Histogram* failure_duration_ = nullptr;

  std::mutex export_mu_;  // held by Export and by Shutdown's cleanup
  std::unique_ptr<Curl> curl_;
  int last_attempts_ = 0;

  std::atomic<bool> shutdown_{false};
  std::mutex wake_mu_;  // guards the multi handle against cleanup while waking it
  std::condition_variable wake_cv_;

  // Failure log rate limiting: the first failure, then at most one line per kLogInterval.
  Clock::MonoTime last_log_{};
  bool logged_any_ = false;
  uint64_t suppressed_ = 0;
  uint64_t consecutive_failures_ = 0;
};

}  // namespace oxg::tracing
