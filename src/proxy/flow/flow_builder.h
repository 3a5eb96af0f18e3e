#pragma once

// The flow builder's pure core (contract §8): one captured HTTP message in, its raw and
// sanitized payloads out, plus the flow log line that records them. No I/O, no threads; every
// function here is safe to call from any thread (FlowStats counters are atomic).
//
// Payload rules (decisions the contract leaves open are marked "decided"):
// - HTTP/1.1 wire text with CRLF line ends whatever version the client spoke; requests keep
//   their target as received (absolute-form for proxied requests, origin-form otherwise).
// - Headers keep their order, name case and values as received. Decided: hop-by-hop headers
//   (Connection, Keep-Alive, Proxy-Connection, TE, Upgrade, ...) are kept, because a flow is a
//   transcript of what the peer sent and passive checks (smuggling, upgrade handling) need them.
//   Only the framing headers are rewritten to describe the included body: every Content-Length
//   is dropped and one is written where the first stood (or after the last header when the
//   message had a body but no Content-Length); the `chunked` coding is removed from
//   Transfer-Encoding (the header disappears when nothing else remains) since the body is
//   de-chunked. A message without a body and without Content-Length gets none (a plain GET).
//   Decided: HEAD and 304 responses get `Content-Length: 0` too, as their payload carries no body.
// - Body limit `max_body_kb` (0 = headers only, -1 = unlimited). When the included body is shorter
//   than the original, `X-0xgen-Raw-Body-Truncated: <original length>` follows the last header.
//   A peer's own header of that name is dropped, so readers can trust the marker.
// - CR, LF and NUL inside a name or value (which a conforming parser never lets through) become
//   spaces so a hostile value cannot forge extra header lines in a payload.
// - Sanitized variant: Authorization / Proxy-Authorization keep their scheme word
//   (`Bearer [REDACTED]`); Cookie keeps cookie names (`a=[REDACTED]; b=[REDACTED]`); Set-Cookie
//   keeps its name and attributes; other headers named as secrets by Redactor::IsSecretKey
//   (X-Api-Key, X-Auth-Token, ...) become `[REDACTED]`. The start line and the remaining header
//   values then go through Redactor::Default() (a `?token=` in the target, a password in a
//   Referer URL). Bodies are masked in place with Redactor::Default() only when they are text
//   (JSON, form, text/*, XML, JavaScript, GraphQL, or no Content-Type and no NUL byte) and carry
//   no Content-Encoding other than identity; binary and compressed bodies are kept untouched
//   (the patterns cannot see into them and rewriting them would corrupt the data).
//   Content-Length is that of the sanitized body.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "telemetry/metrics/metrics.h"

namespace oxg {
class Redactor;
}  // namespace oxg

namespace oxg::proxy {

// One header field as received. Views: they must outlive the BuildFlowPayloads call only.
struct HeaderField {
  std::string_view name;
  std::string_view value;
};

// A captured HTTP message (request or response). All views are borrowed for the call.
struct HttpMessage {
  enum class Kind { kRequest, kResponse };
  Kind kind = Kind::kRequest;
  // Requests.
  std::string_view method;
  std::string_view target;  // absolute-form URL or origin-form path as received
  // The version the peer spoke ("HTTP/1.0", "HTTP/1.1", "HTTP/2"); payloads are HTTP/1.1 anyway.
  std::string_view version = "HTTP/1.1";
  // Responses.
  int status = 0;
  std::string_view reason;
  // Both, in order of arrival.
  std::vector<HeaderField> headers;
  // Body bytes captured so far (de-chunked); may be shorter than the original body.
  std::string_view body;
  // The full (de-chunked) body length as transmitted; never taken as less than body.size().
  uint64_t original_body_length = 0;
};

struct FlowOptions {
  // --max-body-kb: 0 keeps headers only, -1 (any negative value) keeps everything.
  int64_t max_body_kb = 128;
};

// Counters of contract §4 `oxg_flow_redactions_total{kind}`, resolved once at startup.
// Kinds: header (a credential header or a secret in the start line / another header value),
// cookie (one per cookie value masked in Cookie or Set-Cookie), body_secret (one per secret
// masked in a body), raw_truncated (one per message whose body was cut).
struct FlowStats {
  explicit FlowStats(metrics::Registry& registry);
  explicit FlowStats(metrics::Family<metrics::Counter>& family);
  metrics::Counter& header;
  metrics::Counter& cookie;
  metrics::Counter& body_secret;
  metrics::Counter& raw_truncated;
};

struct FlowPayloads {
  std::string raw;              // exact bytes up to the body limit, framing headers rewritten
  std::string sanitized;        // credentials and body secrets masked
  uint64_t raw_body_bytes = 0;  // original body length
  bool raw_body_truncated = false;
};

// Builds both payloads of one message. `stats` may be null (nothing is counted).
FlowPayloads BuildFlowPayloads(const HttpMessage& message, const FlowOptions& options,
                               FlowStats* stats);

// One header value as the sanitized payload shows it, for records that list headers apart
// (proxy_history.jsonl): the credential headers masked by name as above, then the secret
// patterns of `redactor` applied to the "name: value" line (the name is never changed); CR, LF
// and NUL become spaces. `stats` may be null (nothing is counted).
std::string SanitizeHeaderValue(std::string_view name, std::string_view value,
                                const Redactor& redactor, FlowStats* stats);

// The same for every field of one head at once, in one pass of the patterns over the head as
// the payload builder does it: (*out)[i] is the sanitized value of headers[i]. The strings of
// *out keep their capacity between calls.
void SanitizeHeaderValues(std::span<const HeaderField> headers, const Redactor& redactor,
                          FlowStats* stats, std::vector<std::string>* out);

enum class FlowType { kRequest, kResponse };

// One record of proxy_flows.jsonl. Views are borrowed for the call.
struct FlowRecord {
  std::string_view id;
  uint64_t sequence = 0;
  FlowType type = FlowType::kRequest;
  int64_t timestamp_unix_nano = 0;
  std::string_view sanitized;
  // Present only with --flow-log-raw.
  std::optional<std::string_view> raw;
  uint64_t raw_body_bytes = 0;
  bool raw_body_truncated = false;
  std::string_view trace_id;  // 32 hex digits, or empty when the flow has no trace
};

// Appends one proxy_flows.jsonl line (keys in contract order, ending in '\n') to `out`.
// Strings are escaped as valid UTF-8 JSON whatever bytes they hold; payloads are base64.
void AppendFlowLogLine(std::string& out, const FlowRecord& record);

inline std::string FlowLogLine(const FlowRecord& record) {
  std::string out;
  AppendFlowLogLine(out, record);
  return out;
}

}  // namespace oxg::proxy
