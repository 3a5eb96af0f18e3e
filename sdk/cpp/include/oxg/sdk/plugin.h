#pragma once
// The 0xgen C++ plugin SDK: connect to 0xgend's plugin bus, receive captured HTTP traffic,
// report findings. The protocol it speaks is docs/plugins.md; sdk/cpp/README.md is the guide.
//
//   int main() {
//     oxg::sdk::Plugin plugin({.name = "my-plugin",
//                              .capabilities = {"CAP_FLOW_INSPECT", "CAP_EMIT_FINDINGS"},
//                              .subscriptions = {"FLOW_RESPONSE"}});
//     plugin.OnResponse([&](const oxg::sdk::HttpMessage& m) { ... plugin.Emit(f, &m); });
//     return oxg::sdk::RunMain(plugin);
//   }
//
// This header includes no gRPC or protobuf header: the connection lives behind a pimpl.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "oxg/sdk/http_message.h"

namespace oxg::sdk {

// gRPC's status codes, by number.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "PERMISSION_DENIED", ...
std::string_view StatusCodeName(StatusCode code);

// A result: OK, or a code and a message meant for a human. Value type.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;  // "OK" or "PERMISSION_DENIED: message"

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Whether the SDK reconnects after a call ended with `code` (docs/plugins.md: UNAVAILABLE,
// ALREADY_EXISTS, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and connection breakdowns, which gRPC
// reports as CANCELLED, ABORTED, INTERNAL, UNKNOWN or DATA_LOSS) or gives up (every refusal:
// UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,
// OUT_OF_RANGE, UNIMPLEMENTED).
bool IsTemporary(StatusCode code);

struct PluginOptions {
  // Empty fields are taken from the environment (docs/plugins.md): name from OXG_PLUGIN_NAME,
  // addr from OXG_BUS_ADDR (default 127.0.0.1:50051), token from OXG_AUTH_TOKEN_FD, then
  // OXG_AUTH_TOKEN_FILE, then OXG_AUTH_TOKEN. A value set here wins over the environment.
  std::string name;
  std::vector<std::string> capabilities;   // CAP_FLOW_INSPECT, CAP_EMIT_FINDINGS, ...
  std::vector<std::string> subscriptions;  // FLOW_REQUEST, FLOW_RESPONSE, *_RAW
  std::string addr;
  std::string token;
  // Sent as `traceparent` call metadata on the stream when set (nothing is sent otherwise).
  std::string traceparent;
  // Reconnect backoff: doubles from min to max per failed attempt, +-20% jitter; reset once a
  // welcome arrives.
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30000};
  // Give up on a connection when no welcome arrives this long after the hello (the stream is
  // cancelled and the attempt counts as DEADLINE_EXCEEDED, a temporary failure).
  std::chrono::milliseconds welcome_timeout{30000};
  // After Stop, how long the daemon has to end the call before it is cancelled.
  std::chrono::milliseconds stop_grace{5000};
  // Log lines ("connected to 0xgend ...", reconnects) go to stderr unless false.
  bool log = true;
};

// Reads one environment variable; the default is ::getenv. Tests inject their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> ProcessEnv(const std::string& name);

// Fills `options`' empty name, addr and token from the environment as described above. The
// token fd is read to its end and closed (it is single use); surrounding whitespace of the
// token is dropped. Errors (kInvalidArgument / kFailedPrecondition) name the variable at fault.
Status ResolveOptions(PluginOptions* options, const EnvLookup& env = ProcessEnv);

enum class Severity { kInfo = 1, kLow = 2, kMedium = 3, kHigh = 4, kCritical = 5 };

// A finding as sent to the daemon. Limits (checked by the daemon; a refused finding is counted
// there and the stream stays open): type 1-64 bytes of [a-z0-9._-], message 1-4096 bytes,
// target <= 2048, evidence <= 16384, at most 64 metadata entries with keys of [A-Za-z0-9._-].
struct Finding {
  std::string type;
  std::string message;
  Severity severity = Severity::kInfo;
  std::string target;                                         // URL or host the finding is about
  std::string evidence;                                       // a short excerpt
  std::vector<std::pair<std::string, std::string>> metadata;  // a later duplicate key wins
};

struct PluginCounters {
  uint64_t events_received = 0;  // flow events read from the bus
  uint64_t parse_errors = 0;     // events skipped because their wire text was malformed
  uint64_t findings_sent = 0;    // findings written to the stream
  uint64_t findings_failed = 0;  // Emit calls that returned false
  uint64_t connections = 0;      // welcomes received
};

// One plugin's connection to the bus.
// Thread-safety: OnRequest/OnResponse must be called before Run. Run is called from one
// thread and blocks; callbacks run on that thread, one at a time, in stream order. Emit, Stop,
// counters, connected and WaitForStop may be called from any thread at any time, including from
// inside a callback. The Plugin must outlive Run's return.
class Plugin {
 public:
  using Handler = std::function<void(const HttpMessage&)>;

  explicit Plugin(PluginOptions options);
  ~Plugin();
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  void OnRequest(Handler handler);
  void OnResponse(Handler handler);

  // Connects (GrantCapabilities, EventStream, hello, welcome) and dispatches flow events until
  // Stop is called (returns OK) or the bus refuses the plugin (returns that status). Temporary
  // failures reconnect with backoff. Creates no threads before it is called, so a program may
  // block signals first (RunMain does).
  Status Run();

  // Asks Run to return: sends goodbye, closes the sending side and lets the daemon end the call
  // (cancelling it after stop_grace). Idempotent; does not wait for Run. Safe on a
  // signal-handling thread (not inside a signal handler: it takes locks).
  void Stop();
  bool stop_requested() const;
  // Blocks until Stop has been called or `timeout` passed; true when stopping. A callback that
  // must hold the stream (a deliberately slow plugin) can wait here.
  bool WaitForStop(std::chrono::milliseconds timeout) const;

  // Sends a finding. With a cause, its traceparent goes with the event and its flow_id into the
  // finding. False when not connected (before the welcome, during a reconnect, after Stop) or
  // when the write fails; the finding is not queued for later.
  bool Emit(const Finding& finding, const HttpMessage* cause = nullptr);

  bool connected() const;
  PluginCounters counters() const;
  const PluginOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Blocks SIGINT and SIGTERM in the calling thread so that threads created afterwards inherit
// the mask and RunMain's signal thread is the only one to receive them. RunMain calls it; call
// it yourself first thing in main() if you create threads before RunMain.
void BlockStopSignals();

// Runs `plugin` as a program: a thread waits for SIGINT/SIGTERM (sigwait) and calls Stop (a
// second signal exits at once with status 1). Returns the exit code for main: 0 after a clean
// stop, 1 after a fatal error (printed on stderr as "<name>: <status>").
int RunMain(Plugin& plugin);

}  // namespace oxg::sdk
