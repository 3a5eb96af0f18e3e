#pragma once
// HTTP/1.x message heads and body framing for the capture proxy: the code that reads untrusted
// bytes from clients and upstreams. Pure functions over caller-owned buffers, no I/O, no
// allocation beyond the header vector; the request-head path has a fuzz target.
//
// Strictness (decided, in the spirit of RFC 9112 §11 "request smuggling"): a message the proxy
// could frame differently from the next hop is refused rather than guessed at.
// - Lines end in CRLF; a bare LF is accepted as a line end, a bare CR anywhere is an error.
// - Method and header names are tokens; whitespace before the colon, obs-fold (a line starting
//   with SP/HT), NUL or other control bytes (except HT) in values are errors.
// - Versions: HTTP/1.0 and HTTP/1.1 (other HTTP/1.x read as 1.1); HTTP/2+ or garbage: 505 for
//   requests, error for responses.
// - Content-Length: digits only, at most 18 of them; repeated values must all be equal (also
//   comma lists "5, 5"); otherwise error.
// - Transfer-Encoding in a request: `chunked` must be the last coding, otherwise 400; with
//   Content-Length as well: 400. In a response: chunked last -> chunked, otherwise read until
//   close; Transfer-Encoding wins over Content-Length.
// - Request targets: origin-form ("/p?q"), absolute-form ("http://h:p/p"), authority-form
//   (only with CONNECT, "host:port"), asterisk-form (only with OPTIONS). Anything else: 400.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace oxg::proxy::http {

struct Limits {
  size_t max_head_bytes = 64 * 1024;  // request line/status line + headers + final blank line
  size_t max_headers = 256;
};

struct Header {
  std::string_view name;   // as received (case kept)
  std::string_view value;  // leading/trailing SP/HT trimmed
};

// How the body that follows a head is delimited.
enum class BodyKind {
  kNone,       // no body (GET without framing headers, HEAD/1xx/204/304 responses, ...)
  kLength,     // exactly content_length bytes
  kChunked,    // chunked transfer coding (decode with ChunkedDecoder)
  kUntilClose  // responses only: everything until the upstream closes
};

enum class ParseStatus { kComplete, kIncomplete, kError };

// What went wrong, for the answer sent to a client (or the error logged for an upstream).
struct ParseError {
  int status = 400;         // 400, 431 (head too large / too many headers) or 505
  std::string_view reason;  // short static text, e.g. "bad header name"; never client bytes
};

struct RequestHead {
  std::string_view method;
  std::string_view target;   // as received
  std::string_view version;  // "HTTP/1.1"
  int version_minor = 1;     // 0 or 1
  std::vector<Header> headers;
  size_t head_size = 0;  // bytes of the head including the final empty line

  // Decomposed target. For absolute-form: scheme ("http"/"https"/"ws"/"wss", lower-cased copy
  // not possible without allocation, so compare case-insensitively), host (no brackets for IPv6),
  // port (0 if absent), and origin ("/path?query", "/" when the URL has no path).
  // For CONNECT: host and port from the authority; scheme and origin empty.
  // For origin-form: origin = target, host/port empty (take them from the Host header).
  enum class TargetForm { kOrigin, kAbsolute, kAuthority, kAsterisk };
  TargetForm form = TargetForm::kOrigin;
  std::string_view scheme;
  std::string_view host;
  uint16_t port = 0;
  std::string_view origin;

  // Framing and connection semantics derived from the headers.
  BodyKind body = BodyKind::kNone;
  uint64_t content_length = 0;  // with kLength
  bool keep_alive = true;       // HTTP/1.1 unless "Connection: close"; 1.0 only with keep-alive
  bool expect_continue = false; // "Expect: 100-continue"
  bool upgrade = false;         // Connection contains "upgrade" and an Upgrade header is present
  std::string_view host_header; // value of the (single) Host header, empty if none
};

struct ResponseHead {
  std::string_view version;
  int version_minor = 1;
  int status = 0;  // 100..999
  std::string_view reason;
  std::vector<Header> headers;
  size_t head_size = 0;

  BodyKind body = BodyKind::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;  // false when the upstream said close, spoke 1.0 without keep-alive,
                           // or the body runs until close
};

// Parses a request head at the start of `buffer`. kIncomplete: the head is not complete yet and
// fits in the limits so far (read more). kError: *error says why; a head longer than
// limits.max_head_bytes without its end is an error (431) as soon as that is known.
// On kComplete, every view in *out points into `buffer`.
ParseStatus ParseRequestHead(std::string_view buffer, const Limits& limits, RequestHead* out,
                             ParseError* error);

// Parses a response head. `request_method` decides framing (HEAD: no body) and so do 1xx, 204
// and 304 statuses (no body).
ParseStatus ParseResponseHead(std::string_view buffer, std::string_view request_method,
                              const Limits& limits, ResponseHead* out, ParseError* error);

// Header lookup, case-insensitive name; the first match or empty.
std::string_view FindHeader(const std::vector<Header>& headers, std::string_view name);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// True when a comma-separated header value holds `token` (case-insensitive), e.g.
// HasToken("keep-alive, Upgrade", "upgrade").
bool HasToken(std::string_view list, std::string_view token);

// Headers a proxy must not forward (RFC 9110 §7.6.1): Connection, Keep-Alive,
// Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE, Trailer, Transfer-Encoding
// (the proxy re-frames bodies itself), Upgrade, and any header named in `connection_value`.
bool IsHopByHop(std::string_view name, std::string_view connection_value);

// Streaming decoder of the chunked transfer coding. The proxy forwards the chunked bytes
// verbatim; the decoder finds where the body ends and hands out the payload bytes for capture.
class ChunkedDecoder {
 public:
  struct Limits {
    size_t max_line_bytes = 4096;     // chunk-size line incl. extensions
    size_t max_trailer_bytes = 16384; // all trailer fields together
  };
  ChunkedDecoder() = default;
  explicit ChunkedDecoder(Limits limits) : limits_(limits) {}

  enum class Result { kNeedMore, kDone, kError };
  // Consumes bytes from `in`. *consumed is how many bytes of `in` belong to the chunked body
  // (all of them unless kDone was reached earlier, in which case the rest is the next message).
  // For every piece of payload, on_data(piece) is called (pieces point into `in`).
  template <typename OnData>
  Result Feed(std::string_view in, size_t* consumed, OnData&& on_data) {
    size_t pos = 0;
    Result r = Result::kNeedMore;
    while (pos < in.size()) {
      std::string_view data;
      r = Step(in, &pos, &data);
      if (!data.empty()) on_data(data);
      if (r != Result::kNeedMore) break;
    }
    *consumed = pos;
    return r;
  }
  bool done() const { return state_ == State::kDone; }
  uint64_t payload_bytes() const { return payload_bytes_; }
  std::string_view error() const { return error_; }

 private:
  // kSize: hex digits; kSizeBws: blanks after them; kSizeExt: after ';' up to CR; kSizeLf: after
  // that CR. kData/kDataCr/kDataLf: payload and its CRLF. After the last chunk: kTrailerStart (at
  // a line start), kTrailer (in a field line), kTrailerLf (after its CR), kEndLf (after the CR of
  // the final empty line).
  enum class State {
    kSize,
    kSizeBws,
    kSizeExt,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerStart,
    kTrailer,
    kTrailerLf,
    kEndLf,
    kDone,
    kError
  };
  // Advances over in[*pos..]; sets *data to payload bytes found (possibly empty).
  Result Step(std::string_view in, size_t* pos, std::string_view* data);

  Limits limits_;
  State state_ = State::kSize;
  uint64_t chunk_left_ = 0;
  uint64_t payload_bytes_ = 0;
  size_t line_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  int digits_ = 0;  // hex digits of the current chunk size (at most 16)
  std::string_view error_;
};

}  // namespace oxg::proxy::http
