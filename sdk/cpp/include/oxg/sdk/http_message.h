#pragma once
// The HTTP message a plugin receives: a FlowEvent's wire text (start line, headers, empty line,
// body) parsed into fields, plus the event's metadata. Plain data, no gRPC or protobuf types, so
// plugin code and its tests build without the protocol headers.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace oxg::sdk {

// Which payload of a captured message an event carries (see docs/plugins.md).
enum class Variant { kUnspecified, kSanitized, kRaw };

struct HeaderField {
  std::string name;   // as received (case kept)
  std::string value;  // leading and trailing spaces and tabs removed
};

// One request or response. A value type: copy it to keep it past a callback.
// Thread-safety: const methods may be called concurrently; no internal synchronisation.
struct HttpMessage {
  // From the FlowEvent.
  std::string flow_id;  // 26-char ULID shared by a flow's request and response
  uint64_t sequence = 0;
  Variant variant = Variant::kUnspecified;
  int64_t captured_at_unix_nano = 0;
  std::string traceparent;      // the daemon's dispatch trace; Plugin::Emit sends it back
  std::string scheme;           // "http" or "https" as the proxy saw it; empty from older daemons
  uint64_t raw_body_bytes = 0;  // the body's full length on the wire
  bool body_truncated = false;  // `body` holds only a prefix of it

  // From the wire text.
  bool is_request = true;
  std::string method;                // requests: "GET", ...
  std::string target;                // requests: absolute-form ("http://h/p") or origin-form ("/p")
  int status = 0;                    // responses: 100..999
  std::string reason;                // responses: may be empty
  std::string version;               // "HTTP/1.1"
  std::vector<HeaderField> headers;  // in order, repeated fields kept
  std::string body;

  // The first field named `name` (ASCII case-insensitive), or none. The view points into this
  // message and lives as long as it does.
  std::optional<std::string_view> Header(std::string_view name) const;
  // Every field named `name`, in order (Set-Cookie, or a list header sent several times).
  std::vector<std::string_view> Headers(std::string_view name) const;

  // Requests: the full URL. Absolute-form targets are returned as they are; origin-form ones are
  // joined with the Host header and `scheme`. A daemon too old to send the scheme leaves it to a
  // guess: an origin-form request came through a CONNECT tunnel, which the capture proxy
  // intercepts as TLS, so "https" unless Host names port 80. Empty when neither gives a host.
  std::string Url() const;
};

// ASCII case-insensitive comparison (HTTP field names).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// The header the flow builder adds when the body was cut at the capture limit; its value is the
// original body length.
inline constexpr std::string_view kTruncatedHeader = "X-0xgen-Raw-Body-Truncated";

// Parses HTTP/1.1 wire text into `out`'s wire fields (start line, version, headers, body;
// `body_truncated` and `raw_body_bytes` are set from the truncation header when it is present).
// The input is untrusted bytes: on any malformation returns false with a short reason in
// *error and leaves `out` in an unspecified but valid state. Never throws on bad input.
// Limits: at most kMaxHeaderFields fields; bare LF line ends are accepted, obsolete line
// folding is not; Content-Length must match the body that follows.
inline constexpr size_t kMaxHeaderFields = 10000;
bool ParseHttpMessage(std::string_view data, bool is_request, HttpMessage* out, std::string* error);

}  // namespace oxg::sdk
