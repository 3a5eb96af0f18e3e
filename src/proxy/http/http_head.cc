// HTTP/1.x head parsing and chunked decoding. See http_head.h for the rules; the notes here are
// about how the scanning stays cheap and why some edge cases are decided the way they are.
//
// Scanning model: the head is walked once, line by line, never reading past
// min(buffer.size(), limits.max_head_bytes). Each field is scanned with a 256-entry class table;
// header values and request targets (the long parts) are scanned eight bytes at a time with a
// SWAR test for "any byte that ends the run", so the per-byte cost is a load, a few ALU ops and
// one well-predicted branch. The run of a value ends at its first control byte, which for a
// well-formed line is the CR of its CRLF: finding the line end and validating the value are the
// same pass. A line is judged only once it is complete (or already provably wrong), so every
// prefix of a valid head is kIncomplete.
#include "proxy/http/http_head.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

namespace oxg::proxy::http {
namespace {

// ---- character classes ------------------------------------------------------------------------

enum : uint8_t {
  kToken = 1,       // tchar (RFC 9110 §5.6.2)
  kValue = 2,       // field-vchar / SP / HT / obs-text (no CTL except HT, no DEL)
  kTarget = 4,      // request-target bytes: visible ASCII and obs-text (no SP, CTL, DEL)
  kHostChar = 8,    // reg-name / IPv4 characters we accept: ALPHA DIGIT - . _ ~
  kHex = 16,        // HEXDIG
  kSchemeChar = 32  // ALPHA DIGIT + - .
};

constexpr std::array<uint8_t, 256> MakeClassTable() {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    uint8_t v = 0;
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    bool token = alpha || digit;
    for (const char s : std::string_view("!#$%&'*+-.^_`|~")) token = token || c == s;
    if (token) v |= kToken;
    if (c == '\t' || (c >= 0x20 && c != 0x7f)) v |= kValue;
    if (c > 0x20 && c != 0x7f) v |= kTarget;
    if (alpha || digit || c == '-' || c == '.' || c == '_' || c == '~') v |= kHostChar;
    if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) v |= kHex;
    if (alpha || digit || c == '+' || c == '-' || c == '.') v |= kSchemeChar;
    t[static_cast<size_t>(c)] = v;
  }
  return t;
}
constexpr std::array<uint8_t, 256> kClass = MakeClassTable();

constexpr std::array<uint8_t, 256> MakeLowerTable() {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[static_cast<size_t>(c)] = static_cast<uint8_t>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return t;
}
constexpr std::array<uint8_t, 256> kLower = MakeLowerTable();

inline uint8_t Class(char c) { return kClass[static_cast<unsigned char>(c)]; }
inline bool Is(char c, uint8_t cls) { return (Class(c) & cls) != 0; }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

// ---- SWAR scanning ------------------------------------------------------------------------------

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

inline uint64_t Load8(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
// Nonzero iff some byte of x is < n (n <= 128). Exact as a whole-word test, which is all we use.
inline uint64_t AnyLess(uint64_t x, uint8_t n) { return (x - kOnes * n) & ~x & kHighs; }
// Nonzero iff some byte of x equals b.
inline uint64_t AnyEqual(uint64_t x, uint8_t b) {
  const uint64_t y = x ^ (kOnes * b);
  return (y - kOnes) & ~y & kHighs;
}

// In the masks below only the lowest flagged byte is exact (a borrow can flag bytes above a
// real hit, never below it), which is all we need: countr_zero of the mask is the first stop.
inline size_t FirstFlagged(uint64_t mask) {
  return static_cast<size_t>(std::countr_zero(mask)) >> 3;
}

// Returns the first byte in [p, end) that is not a field-value byte (a CTL other than HT, or
// DEL), or end. Eight bytes per step; the stop (normally the CR ending the line) is located
// without a byte loop. HT stops the word scan and is stepped over: it is rare in real values.
inline const char* ScanValue(const char* p, const char* end) {
  while (end - p >= 8) {
    const uint64_t x = Load8(p);
    const uint64_t m = AnyLess(x, 0x20) | AnyEqual(x, 0x7f);
    if (m == 0) {
      p += 8;
      continue;
    }
    p += FirstFlagged(m);
    if (*p != '\t') return p;
    ++p;
  }
  while (p < end && Is(*p, kValue)) ++p;
  return p;
}

// Returns the first byte in [p, end) that is not a request-target byte (SP, CTL, DEL), or end.
inline const char* ScanTarget(const char* p, const char* end) {
  for (;;) {
    while (end - p >= 8) {
      const uint64_t x = Load8(p);
      if (AnyLess(x, 0x21) | AnyEqual(x, 0x7f)) break;
      p += 8;
    }
    const char* stop = end - p >= 8 ? p + 8 : end;
    while (p < stop && Is(*p, kTarget)) ++p;
    if (p < stop || p == end) return p;
  }
}

inline const char* ScanToken(const char* p, const char* end) {
  while (p < end && Is(*p, kToken)) ++p;
  return p;
}

// ---- small helpers ------------------------------------------------------------------------------

// `lower` must already be lower-case.
inline bool EqualsLower(std::string_view s, std::string_view lower) {
  if (s.size() != lower.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (kLower[static_cast<unsigned char>(s[i])] != static_cast<unsigned char>(lower[i])) {
      return false;
    }
  }
  return true;
}

inline std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

// Calls fn(element) for every non-empty, OWS-trimmed element of a comma-separated list (empty
// elements are allowed by RFC 9110 §5.6.1 and skipped). Stops early when fn returns false.
template <typename Fn>
inline void ForEachListElement(std::string_view list, Fn&& fn) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view e = TrimOws(list.substr(start, comma - start));
    if (!e.empty() && !fn(e)) return;
    start = comma + 1;
  }
}

// Line terminator at *p (p < end): LF, or CR LF. Returns 1 on a complete terminator (advancing
// *p past it), 0 when more bytes are needed, -1 when the byte is not a line end or a CR is bare.
inline int EatLineEnd(const char** p, const char* end) {
  const char c = **p;
  if (c == '\n') {
    *p += 1;
    return 1;
  }
  if (c != '\r') return -1;
  if (*p + 1 == end) return 0;
  if ((*p)[1] != '\n') return -1;
  *p += 2;
  return 1;
}

// Header names the framing logic looks at, classified by length then a case-insensitive compare.
enum class Known {
  kOther,
  kHost,
  kConnection,
  kContentLength,
  kTransferEncoding,
  kUpgrade,
  kExpect
};

inline Known Classify(std::string_view name) {
  switch (name.size()) {
    case 4:
      return EqualsLower(name, "host") ? Known::kHost : Known::kOther;
    case 6:
      return EqualsLower(name, "expect") ? Known::kExpect : Known::kOther;
    case 7:
      return EqualsLower(name, "upgrade") ? Known::kUpgrade : Known::kOther;
    case 10:
      return EqualsLower(name, "connection") ? Known::kConnection : Known::kOther;
    case 14:
      return EqualsLower(name, "content-length") ? Known::kContentLength : Known::kOther;
    case 17:
      return EqualsLower(name, "transfer-encoding") ? Known::kTransferEncoding : Known::kOther;
    default:
      return Known::kOther;
  }
}

// Accumulates what the framing rules need while headers are read.
struct Framing {
  bool have_cl = false;
  bool bad_cl = false;
  uint64_t cl = 0;
  bool have_te = false;
  bool te_last_chunked = false;  // the last non-empty coding seen is "chunked"
  int te_chunked_count = 0;
  int te_codings = 0;
  bool conn_close = false;
  bool conn_keep_alive = false;
  bool conn_upgrade = false;
  bool have_upgrade = false;
  bool expect_continue = false;
  int host_count = 0;
  std::string_view host;

  void AddContentLength(std::string_view v) {
    bool any = false;
    // Element by element, empty ones included: "5,,5" or "" is not digits.
    size_t start = 0;
    while (start <= v.size()) {
      size_t comma = v.find(',', start);
      if (comma == std::string_view::npos) comma = v.size();
      const std::string_view e = TrimOws(v.substr(start, comma - start));
      start = comma + 1;
      if (e.empty() || e.size() > 18) {
        bad_cl = true;
        return;
      }
      uint64_t n = 0;
      for (const char c : e) {
        const unsigned d = static_cast<unsigned char>(c) - static_cast<unsigned>('0');
        if (d > 9) {
          bad_cl = true;
          return;
        }
        n = n * 10 + d;  // at most 18 digits: < 10^18, no overflow
      }
      if ((have_cl || any) && n != cl) {
        bad_cl = true;
        return;
      }
      cl = n;
      any = true;
    }
    have_cl = true;
  }

  void AddTransferEncoding(std::string_view v) {
    have_te = true;
    ForEachListElement(v, [&](std::string_view e) {
      ++te_codings;
      te_last_chunked = EqualsLower(e, "chunked");
      if (te_last_chunked) ++te_chunked_count;
      return true;
    });
  }

  void AddConnection(std::string_view v) {
    ForEachListElement(v, [&](std::string_view e) {
      if (e.size() == 5 && EqualsLower(e, "close")) conn_close = true;
      if (e.size() == 10 && EqualsLower(e, "keep-alive")) conn_keep_alive = true;
      if (e.size() == 7 && EqualsLower(e, "upgrade")) conn_upgrade = true;
      return true;
    });
  }

  void Add(std::string_view name, std::string_view value) {
    switch (Classify(name)) {
      case Known::kOther:
        break;
      case Known::kHost:
        ++host_count;
        host = value;
        break;
      case Known::kConnection:
        AddConnection(value);
        break;
      case Known::kContentLength:
        AddContentLength(value);
        break;
      case Known::kTransferEncoding:
        AddTransferEncoding(value);
        break;
      case Known::kUpgrade:
        have_upgrade = true;
        break;
      case Known::kExpect:
        ForEachListElement(value, [&](std::string_view e) {
          if (EqualsLower(e, "100-continue")) expect_continue = true;
          return !expect_continue;
        });
        break;
    }
  }
};

enum class Step { kOk, kIncomplete, kError };

struct Failure {
  int status;
  const char* reason;
};

// Reads header lines from *p up to and including the empty line that ends the head.
template <typename HeadT>
Step ParseHeaders(const char** pp, const char* end, const Limits& limits, HeadT* out,
                  Framing* framing, Failure* fail) {
  const char* p = *pp;
  for (;;) {
    if (p == end) return Step::kIncomplete;
    const char c = *p;
    if (c == '\r' || c == '\n') {
      const int r = EatLineEnd(&p, end);
      if (r == 0) return Step::kIncomplete;
      if (r < 0) {
        *fail = {400, "bare CR"};
        return Step::kError;
      }
      *pp = p;
      return Step::kOk;
    }
    if (IsOws(c)) {
      *fail = {400, "obs-fold or whitespace at line start"};
      return Step::kError;
    }
    const char* name_begin = p;
    p = ScanToken(p, end);
    if (p == end) return Step::kIncomplete;
    if (*p != ':') {
      if (IsOws(*p)) {
        *fail = {400, "whitespace before colon"};
      } else if (*p == '\r' && !(p + 1 < end && p[1] == '\n')) {
        if (p + 1 == end) return Step::kIncomplete;
        *fail = {400, "bare CR"};
      } else if (*p == '\r' || *p == '\n') {
        *fail = {400, "header line without colon"};
      } else {
        *fail = {400, "bad header name"};
      }
      return Step::kError;
    }
    if (p == name_begin) {
      *fail = {400, "empty header name"};
      return Step::kError;
    }
    const std::string_view name(name_begin, static_cast<size_t>(p - name_begin));
    ++p;
    while (p < end && IsOws(*p)) ++p;
    const char* value_begin = p;
    p = ScanValue(p, end);
    if (p == end) return Step::kIncomplete;
    const char* value_end = p;
    const int r = EatLineEnd(&p, end);
    if (r == 0) return Step::kIncomplete;
    if (r < 0) {
      const char bad = *value_end;
      *fail = {400, bad == '\r'   ? "bare CR"
                    : bad == '\0' ? "NUL in header value"
                                  : "control character in header value"};
      return Step::kError;
    }
    while (value_end > value_begin && IsOws(value_end[-1])) --value_end;
    if (out->headers.size() >= limits.max_headers) {
      *fail = {431, "too many headers"};
      return Step::kError;
    }
    const std::string_view value(value_begin, static_cast<size_t>(value_end - value_begin));
    // Filled in place: copying a Header temporary built a moment ago stalls on store forwarding.
    Header& header = out->headers.emplace_back();
    header.name = name;
    header.value = value;
    framing->Add(name, value);
  }
}

// "HTTP/1.1" -> minor; kError with 505 for anything else.
bool ParseVersion(std::string_view v, int* minor, Failure* fail) {
  if (v.size() != 8 || std::memcmp(v.data(), "HTTP/", 5) != 0 || v[6] != '.' ||
      static_cast<unsigned>(v[5] - '0') > 9 || static_cast<unsigned>(v[7] - '0') > 9) {
    *fail = {505, "bad HTTP version"};
    return false;
  }
  if (v[5] != '1') {
    *fail = {505, "HTTP version not supported"};
    return false;
  }
  *minor = v[7] == '0' ? 0 : 1;
  return true;
}

// host[:port] with host a reg-name, IPv4 or [IPv6] literal. `port_required`: CONNECT.
// An empty port after ':' counts as absent (RFC 3986 allows it) unless the port is required.
bool ParseAuthority(std::string_view a, bool port_required, std::string_view* host,
                    uint16_t* port) {
  size_t i = 0;
  if (a.empty()) return false;
  if (a[0] == '[') {
    const size_t close = a.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    const std::string_view lit = a.substr(1, close - 1);
    bool colon = false;
    bool zone = false;
    for (const char c : lit) {
      if (zone) {
        if (!Is(c, kHostChar)) return false;
      } else if (c == '%') {
        zone = true;
      } else if (c == ':') {
        colon = true;
      } else if (!Is(c, kHex) && c != '.') {
        return false;
      }
    }
    if (!colon || lit.back() == '%') return false;
    *host = lit;
    i = close + 1;
  } else {
    while (i < a.size() && Is(a[i], kHostChar)) ++i;
    if (i == 0) return false;
    *host = a.substr(0, i);
  }
  *port = 0;
  if (i == a.size()) return !port_required;
  if (a[i] != ':') return false;
  const std::string_view digits = a.substr(i + 1);
  if (digits.empty()) return !port_required;
  if (digits.size() > 5) return false;
  uint32_t n = 0;
  for (const char c : digits) {
    const unsigned d = static_cast<unsigned char>(c) - static_cast<unsigned>('0');
    if (d > 9) return false;
    n = n * 10 + d;
  }
  if (n == 0 || n > 65535) return false;
  *port = static_cast<uint16_t>(n);
  return true;
}

bool ParseTarget(RequestHead* out, Failure* fail) {
  const std::string_view t = out->target;
  const bool connect = out->method == "CONNECT";
  if (connect) {
    out->form = RequestHead::TargetForm::kAuthority;
    if (!ParseAuthority(t, /*port_required=*/true, &out->host, &out->port)) {
      *fail = {400, "CONNECT needs host:port"};
      return false;
    }
    return true;
  }
  if (t[0] == '/') {
    out->form = RequestHead::TargetForm::kOrigin;
    out->origin = t;
    return true;
  }
  if (t == "*") {
    if (out->method != "OPTIONS") {
      *fail = {400, "asterisk target only with OPTIONS"};
      return false;
    }
    out->form = RequestHead::TargetForm::kAsterisk;
    return true;
  }
  // absolute-form: scheme "://" authority [ "/" path ] [ "?" query ]
  size_t i = 0;
  while (i < t.size() && Is(t[i], kSchemeChar)) ++i;
  const bool alpha_start = (t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z';
  if (!alpha_start || i + 3 > t.size() || t.substr(i, 3) != "://") {
    *fail = {400, "bad request target"};
    return false;
  }
  const std::string_view scheme = t.substr(0, i);
  if (!EqualsLower(scheme, "http") && !EqualsLower(scheme, "https") && !EqualsLower(scheme, "ws") &&
      !EqualsLower(scheme, "wss")) {
    *fail = {400, "unsupported URL scheme"};
    return false;
  }
  const size_t auth_begin = i + 3;
  size_t slash = t.find('/', auth_begin);
  if (slash == std::string_view::npos) slash = t.size();
  // A '?', '#' or '@' (userinfo) in the authority fails the host character check.
  if (!ParseAuthority(t.substr(auth_begin, slash - auth_begin), false, &out->host, &out->port)) {
    *fail = {400, "bad host in request target"};
    return false;
  }
  out->form = RequestHead::TargetForm::kAbsolute;
  out->scheme = scheme;
  // No path: origin is "/", viewed from the second slash of "://" so it stays inside the buffer.
  out->origin = slash < t.size() ? t.substr(slash) : t.substr(i + 2, 1);
  return true;
}

inline void ResetHeaders(std::vector<Header>* headers) {
  headers->clear();
  if (headers->capacity() < 32) headers->reserve(32);
}

inline ParseStatus Fail(ParseError* error, const Failure& f) {
  error->status = f.status;
  error->reason = f.reason;
  return ParseStatus::kError;
}

// Shared "ran out of bytes" decision: more may come unless the limit is already reached.
inline ParseStatus OutOfBytes(std::string_view buffer, const Limits& limits, ParseError* error) {
  if (buffer.size() >= limits.max_head_bytes) return Fail(error, {431, "head too large"});
  return ParseStatus::kIncomplete;
}

}  // namespace

ParseStatus ParseRequestHead(std::string_view buffer, const Limits& limits, RequestHead* out,
                             ParseError* error) {
  ResetHeaders(&out->headers);
  out->form = RequestHead::TargetForm::kOrigin;
  out->scheme = out->host = out->origin = out->host_header = {};
  out->port = 0;
  out->body = BodyKind::kNone;
  out->content_length = 0;
  out->expect_continue = out->upgrade = false;

  const char* const begin = buffer.data();
  const char* const end = begin + std::min(buffer.size(), limits.max_head_bytes);
  const char* p = begin;
  Failure fail{400, ""};

  // RFC 9112 §2.2: ignore empty lines before the request line (clients sometimes send a CRLF
  // after a body). They count in head_size.
  while (p < end && (*p == '\r' || *p == '\n')) {
    const int r = EatLineEnd(&p, end);
    if (r == 0) return OutOfBytes(buffer, limits, error);
    if (r < 0) return Fail(error, {400, "bare CR"});
  }

  // request-line = method SP request-target SP HTTP-version
  const char* m = p;
  p = ScanToken(p, end);
  if (p == end) return OutOfBytes(buffer, limits, error);
  if (p == m || *p != ' ') return Fail(error, {400, "bad method"});
  out->method = std::string_view(m, static_cast<size_t>(p - m));
  ++p;
  const char* t = p;
  p = ScanTarget(p, end);
  if (p == end) return OutOfBytes(buffer, limits, error);
  if (p == t) return Fail(error, {400, "bad request target"});
  if (*p != ' ') {
    if (*p == '\r' && p + 1 == end) return OutOfBytes(buffer, limits, error);
    if (*p == '\r' || *p == '\n') return Fail(error, {400, "request line without version"});
    return Fail(error, {400, "bad request target"});
  }
  out->target = std::string_view(t, static_cast<size_t>(p - t));
  ++p;
  const char* v = p;
  p = ScanTarget(p, end);
  if (p == end) return OutOfBytes(buffer, limits, error);
  out->version = std::string_view(v, static_cast<size_t>(p - v));
  {
    const char* at = p;
    const int r = EatLineEnd(&p, end);
    if (r == 0) return OutOfBytes(buffer, limits, error);
    if (r < 0) {
      return Fail(error, {400, *at == '\r' ? "bare CR" : "bad request line"});
    }
  }
  if (!ParseVersion(out->version, &out->version_minor, &fail)) return Fail(error, fail);

  Framing f;
  switch (ParseHeaders(&p, end, limits, out, &f, &fail)) {
    case Step::kOk:
      break;
    case Step::kIncomplete:
      return OutOfBytes(buffer, limits, error);
    case Step::kError:
      return Fail(error, fail);
  }
  out->head_size = static_cast<size_t>(p - begin);

  if (!ParseTarget(out, &fail)) return Fail(error, fail);
  if (f.host_count > 1) return Fail(error, {400, "more than one Host header"});
  out->host_header = f.host;

  if (f.have_te) {
    if (f.have_cl) return Fail(error, {400, "Content-Length with Transfer-Encoding"});
    if (f.bad_cl) return Fail(error, {400, "bad Content-Length"});
    if (out->version_minor == 0) return Fail(error, {400, "Transfer-Encoding in HTTP/1.0"});
    if (!f.te_last_chunked || f.te_chunked_count != 1) {
      return Fail(error, {400, "Transfer-Encoding must end in chunked"});
    }
    out->body = BodyKind::kChunked;
  } else if (f.bad_cl) {
    return Fail(error, {400, "bad Content-Length"});
  } else if (f.have_cl) {
    out->body = BodyKind::kLength;
    out->content_length = f.cl;
  }

  const bool http11 = out->version_minor == 1;
  out->keep_alive = !f.conn_close && (http11 || f.conn_keep_alive);
  out->expect_continue = http11 && f.expect_continue;
  out->upgrade = http11 && f.conn_upgrade && f.have_upgrade;
  return ParseStatus::kComplete;
}

ParseStatus ParseResponseHead(std::string_view buffer, std::string_view request_method,
                              const Limits& limits, ResponseHead* out, ParseError* error) {
  ResetHeaders(&out->headers);
  out->reason = {};
  out->body = BodyKind::kNone;
  out->content_length = 0;

  const char* const begin = buffer.data();
  const char* const end = begin + std::min(buffer.size(), limits.max_head_bytes);
  const char* p = begin;
  Failure fail{400, ""};

  // status-line = HTTP-version SP status-code SP [ reason-phrase ]
  const char* v = p;
  p = ScanTarget(p, end);
  if (p == end) return OutOfBytes(buffer, limits, error);
  out->version = std::string_view(v, static_cast<size_t>(p - v));
  if (*p != ' ') return Fail(error, {400, "bad status line"});
  if (!ParseVersion(out->version, &out->version_minor, &fail)) return Fail(error, fail);
  ++p;
  if (end - p < 3) return OutOfBytes(buffer, limits, error);
  int status = 0;
  for (int i = 0; i < 3; ++i) {
    const unsigned d = static_cast<unsigned char>(p[i]) - static_cast<unsigned>('0');
    if (d > 9) return Fail(error, {400, "bad status code"});
    status = status * 10 + static_cast<int>(d);
  }
  if (status < 100) return Fail(error, {400, "bad status code"});
  out->status = status;
  p += 3;
  if (p == end) return OutOfBytes(buffer, limits, error);
  // The SP before an empty reason is often missing in the wild ("HTTP/1.1 200\r\n"): accepted.
  if (*p == ' ') {
    ++p;
    const char* r = p;
    p = ScanValue(p, end);
    if (p == end) return OutOfBytes(buffer, limits, error);
    out->reason = std::string_view(r, static_cast<size_t>(p - r));
  }
  {
    const char* at = p;
    const int r = EatLineEnd(&p, end);
    if (r == 0) return OutOfBytes(buffer, limits, error);
    if (r < 0) return Fail(error, {400, *at == '\r' ? "bare CR" : "bad status line"});
  }

  Framing f;
  switch (ParseHeaders(&p, end, limits, out, &f, &fail)) {
    case Step::kOk:
      break;
    case Step::kIncomplete:
      return OutOfBytes(buffer, limits, error);
    case Step::kError:
      return Fail(error, fail);
  }
  out->head_size = static_cast<size_t>(p - begin);
  if (f.bad_cl) return Fail(error, {400, "bad Content-Length"});

  const bool http11 = out->version_minor == 1;
  out->keep_alive = !f.conn_close && (http11 || f.conn_keep_alive);
  const bool no_body = request_method == "HEAD" || status < 200 || status == 204 || status == 304 ||
                       (request_method == "CONNECT" && status < 300);
  if (no_body) {
    out->body = BodyKind::kNone;
  } else if (f.have_te) {
    // RFC 9112 §6.3: Transfer-Encoding wins; with Content-Length as well the message is suspect,
    // so this connection is not reused. HTTP/1.0 with Transfer-Encoding: same (§6.1).
    if (f.have_cl || !http11) out->keep_alive = false;
    if (f.te_last_chunked) {
      out->body = BodyKind::kChunked;
    } else {
      out->body = BodyKind::kUntilClose;
      out->keep_alive = false;
    }
  } else if (f.have_cl) {
    out->body = BodyKind::kLength;
    out->content_length = f.cl;
  } else {
    out->body = BodyKind::kUntilClose;
    out->keep_alive = false;
  }
  return ParseStatus::kComplete;
}

std::string_view FindHeader(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) return h.value;
  }
  return {};
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (kLower[static_cast<unsigned char>(a[i])] != kLower[static_cast<unsigned char>(b[i])]) {
      return false;
    }
  }
  return true;
}

bool HasToken(std::string_view list, std::string_view token) {
  token = TrimOws(token);
  if (token.empty()) return false;
  bool found = false;
  ForEachListElement(list, [&](std::string_view e) {
    found = EqualsIgnoreCase(e, token);
    return !found;
  });
  return found;
}

bool IsHopByHop(std::string_view name, std::string_view connection_value) {
  static constexpr std::string_view kFixed[] = {"connection",
                                                "keep-alive",
                                                "proxy-connection",
                                                "proxy-authorization",
                                                "proxy-authenticate",
                                                "te",
                                                "trailer",
                                                "transfer-encoding",
                                                "upgrade"};
  for (const std::string_view h : kFixed) {
    if (EqualsLower(name, h)) return true;
  }
  return HasToken(connection_value, name);
}

// ---- ChunkedDecoder ---------------------------------------------------------------------------
//
// chunked-body = *chunk last-chunk trailer-section CRLF
// The decoder is stricter than the head parser about line ends: chunked bytes are forwarded
// verbatim, so a byte sequence the next hop could split differently (bare LF, bare CR, controls
// in extensions, junk between the size and ';') is refused rather than interpreted.

ChunkedDecoder::Result ChunkedDecoder::Step(std::string_view in, size_t* pos,
                                            std::string_view* data) {
  size_t i = *pos;
  const size_t n = in.size();
  auto fail = [&](const char* why) {
    state_ = State::kError;
    error_ = why;
    *pos = i;
    return Result::kError;
  };
  while (i < n) {
    const char c = in[i];
    switch (state_) {
      case State::kSize:
        if (Is(c, kHex)) {
          if (digits_ == 16) return fail("chunk size too large");
          const unsigned d = c <= '9' ? static_cast<unsigned>(c - '0')
                                      : static_cast<unsigned>((c | 0x20) - 'a' + 10);
          chunk_left_ = (chunk_left_ << 4) | d;
          ++digits_;
        } else if (digits_ == 0) {
          return fail("bad chunk size");
        } else if (c == ';') {
          state_ = State::kSizeExt;
        } else if (IsOws(c)) {
          state_ = State::kSizeBws;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return fail("bad chunk size");
        }
        break;
      case State::kSizeBws:  // whitespace after the size: only before ';' or the line end
        if (c == ';') {
          state_ = State::kSizeExt;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (!IsOws(c)) {
          return fail("bad chunk size line");
        }
        break;
      case State::kSizeExt:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (!Is(c, kValue)) {
          return fail("control character in chunk extension");
        }
        break;
      case State::kSizeLf:
        if (c != '\n') return fail("bare CR in chunk size line");
        line_bytes_ = 0;
        digits_ = 0;
        if (chunk_left_ == 0) {
          state_ = State::kTrailerStart;
          ++i;
          continue;
        }
        state_ = State::kData;
        ++i;
        continue;
      case State::kData: {
        const size_t take =
            static_cast<size_t>(std::min<uint64_t>(chunk_left_, static_cast<uint64_t>(n - i)));
        *data = in.substr(i, take);
        chunk_left_ -= take;
        payload_bytes_ += take;
        i += take;
        if (chunk_left_ == 0) state_ = State::kDataCr;
        *pos = i;
        return Result::kNeedMore;
      }
      case State::kDataCr:
        if (c != '\r') return fail("missing CRLF after chunk data");
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return fail("missing CRLF after chunk data");
        state_ = State::kSize;
        ++i;
        continue;  // a new line starts: do not count this byte in line_bytes_
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kEndLf;
          break;
        }
        if (!Is(c, kToken)) return fail("bad trailer field");
        state_ = State::kTrailer;
        break;
      case State::kTrailer:
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (!Is(c, kValue)) {
          return fail("control character in trailer");
        }
        break;
      case State::kTrailerLf:
        if (c != '\n') return fail("bare CR in trailer");
        state_ = State::kTrailerStart;
        break;
      case State::kEndLf:
        if (c != '\n') return fail("bare CR after trailers");
        state_ = State::kDone;
        *pos = i + 1;
        return Result::kDone;
      case State::kDone:
        *pos = i;
        return Result::kDone;
      case State::kError:
        *pos = i;
        return Result::kError;
    }
    // Control bytes (size lines and trailers) are counted against their limits.
    if (state_ == State::kTrailer || state_ == State::kTrailerLf ||
        state_ == State::kTrailerStart) {
      if (++trailer_bytes_ > limits_.max_trailer_bytes) return fail("trailer section too large");
    } else if (state_ == State::kSize || state_ == State::kSizeBws || state_ == State::kSizeExt ||
               state_ == State::kSizeLf) {
      if (++line_bytes_ > limits_.max_line_bytes) return fail("chunk size line too long");
    }
    ++i;
  }
  *pos = i;
  return Result::kNeedMore;
}

}  // namespace oxg::proxy::http
