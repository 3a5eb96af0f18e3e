#pragma once
// passive-headers' checks, as pure functions over one request/response pair, plus the bounded
// state the plugin keeps between events (request by flow, findings already reported). No I/O and
// no SDK connection here, so the checks are tested with tables.
#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "oxg/sdk/http_message.h"
#include "oxg/sdk/plugin.h"

namespace oxg::passive_headers {

// Check ids, as used in the manifest's config ("disabled_checks").
inline constexpr std::string_view kCheckIds[] = {
    "content-security-policy",   "x-content-type-options", "x-frame-options",
    "strict-transport-security", "referrer-policy",        "cookie-secure",
    "cookie-httponly",           "cookie-samesite",        "server-banner"};

struct Config {
  std::unordered_set<std::string> disabled_checks;
  bool Enabled(std::string_view id) const { return !disabled_checks.contains(std::string(id)); }
};

// Parses the manifest's config object (OXG_PLUGIN_CONFIG): {"disabled_checks": [ids...]}.
// Unknown keys or ids are errors, so a typo does not silently keep a check on.
sdk::Status ParseConfig(std::string_view json, Config* config);

// What the checks need from a request; kept instead of the whole message while a flow waits for
// its response.
struct RequestInfo {
  std::string url;   // full URL (sdk::HttpMessage::Url), "" when unknown
  std::string host;  // lower-case authority of `url`
  bool https = false;
};
RequestInfo DescribeRequest(const sdk::HttpMessage& request);

// A finding and the key under which it is reported only once: type, host and the header or
// cookie it is about.
struct Issue {
  sdk::Finding finding;
  std::string dedup_key;
};

// Every issue the response shows. Missing-header checks apply to HTML responses with a 2xx
// status; cookie and banner checks to every response.
std::vector<Issue> Analyze(const RequestInfo& request, const sdk::HttpMessage& response,
                           const Config& config);

// The plugin's state between events: the requests waiting for their responses (at most
// kMaxPending, the oldest evicted) and the keys already reported (at most kMaxReported, the
// oldest forgotten, after which an issue may be reported again).
// Thread-safety: none; the SDK calls back on one thread.
class PassiveHeaders {
 public:
  static constexpr size_t kMaxPending = 4096;
  static constexpr size_t kMaxReported = 65536;

  explicit PassiveHeaders(Config config) : config_(std::move(config)) {}

  void OnRequest(const sdk::HttpMessage& request);
  // The findings to emit for this response (new ones only). A response whose request was never
  // seen (dropped by the daemon under load, or evicted) is skipped and counted.
  std::vector<sdk::Finding> OnResponse(const sdk::HttpMessage& response);

  size_t pending() const { return pending_.size(); }
  size_t unpaired_responses() const { return unpaired_; }
  size_t suppressed() const { return suppressed_; }

 private:
  bool FirstReport(const std::string& key);

  Config config_;
  std::list<std::string> pending_order_;  // flow ids, oldest first
  struct Pending {
    RequestInfo info;
    std::list<std::string>::iterator order;
  };
  std::unordered_map<std::string, Pending> pending_;
  std::list<std::string> reported_order_;
  std::unordered_set<std::string> reported_;
  size_t unpaired_ = 0;
  size_t suppressed_ = 0;
};

}  // namespace oxg::passive_headers
