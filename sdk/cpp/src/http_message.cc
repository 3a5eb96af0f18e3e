#include "oxg/sdk/http_message.h"

#include <charconv>
#include <cstdint>

namespace oxg::sdk {
namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool ParseUint(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// "HTTP/d.d"
bool IsVersion(std::string_view v) {
  return v.size() == 8 && v.substr(0, 5) == "HTTP/" && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
         v[7] >= '0' && v[7] <= '9';
}

// Takes the next line (without its CRLF or bare LF) off *rest; false when no line end is left.
bool NextLine(std::string_view* rest, std::string_view* line) {
  const size_t lf = rest->find('\n');
  if (lf == std::string_view::npos) return false;
  std::string_view l = rest->substr(0, lf);
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  *line = l;
  rest->remove_prefix(lf + 1);
  return true;
}

bool Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

bool HasControl(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return true;
  }
  return false;
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::optional<std::string_view> HttpMessage::Header(std::string_view name) const {
  for (const HeaderField& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

std::vector<std::string_view> HttpMessage::Headers(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const HeaderField& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) out.emplace_back(h.value);
  }
  return out;
}

std::string HttpMessage::Url() const {
  if (!is_request) return {};
  const std::string_view t = target;
  const size_t colon = t.find("://");
  if (colon != std::string_view::npos && colon > 0 && t.find('/') > colon) return target;
  const std::optional<std::string_view> host = Header("Host");
  if (!host || host->empty()) return {};
  // Port 80 in Host means a plain-HTTP tunnel; anything else in origin-form went through CONNECT,
  // which the proxy intercepts as TLS.
  const size_t port_colon = host->rfind(':');
  const bool http = port_colon != std::string_view::npos && host->back() != ']' &&
                    host->substr(port_colon + 1) == "80";
  std::string url = !scheme.empty() ? scheme + "://" : http ? "http://" : "https://";
  url.append(*host);
  if (t.empty() || t.front() != '/') {
    if (t == "*" || method == "CONNECT") return url;  // asterisk-form, authority-form
    url.push_back('/');
  }
  url.append(t);
  return url;
}

bool ParseHttpMessage(std::string_view data, bool is_request, HttpMessage* out,
                      std::string* error) {
  out->is_request = is_request;
  out->method.clear();
  out->target.clear();
  out->status = 0;
  out->reason.clear();
  out->version.clear();
  out->headers.clear();
  out->body.clear();

  std::string_view rest = data;
  std::string_view line;
  if (!NextLine(&rest, &line)) return Fail(error, "no line end after the start line");
  if (HasControl(line)) return Fail(error, "control character in the start line");
  if (is_request) {
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
      return Fail(error, "request line is not `method target version`");
    }
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!IsToken(method)) return Fail(error, "bad request method");
    if (target.empty()) return Fail(error, "empty request target");
    if (!IsVersion(version)) return Fail(error, "bad HTTP version in the request line");
    out->method.assign(method);
    out->target.assign(target);
    out->version.assign(version);
  } else {
    // HTTP/1.1 SP 3DIGIT SP reason (the reason may be empty, its space too)
    if (line.size() < 12 || !IsVersion(line.substr(0, 8)) || line[8] != ' ') {
      return Fail(error, "status line is not `version status reason`");
    }
    const std::string_view code = line.substr(9, 3);
    uint64_t status = 0;
    if (!ParseUint(code, &status) || status < 100) return Fail(error, "bad status code");
    if (line.size() > 12 && line[12] != ' ') return Fail(error, "bad status code");
    out->version.assign(line.substr(0, 8));
    out->status = static_cast<int>(status);
    if (line.size() > 13) out->reason.assign(line.substr(13));
  }

  bool ended = false;
  while (NextLine(&rest, &line)) {
    if (line.empty()) {
      ended = true;
      break;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      return Fail(error, "obsolete line folding in the header section");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Fail(error, "header line without a colon");
    const std::string_view name = line.substr(0, colon);
    if (!IsToken(name)) return Fail(error, "bad header field name");
    const std::string_view value = TrimOws(line.substr(colon + 1));
    if (HasControl(value)) return Fail(error, "control character in a header value");
    if (out->headers.size() >= kMaxHeaderFields) return Fail(error, "too many header fields");
    out->headers.push_back({std::string(name), std::string(value)});
  }
  if (!ended) return Fail(error, "header section does not end with an empty line");

  // The flow builder writes exactly one Content-Length matching the included body (or none for
  // a bodiless message); anything else means the bytes are not what the daemon sent.
  const std::vector<std::string_view> lengths = out->Headers("Content-Length");
  if (lengths.size() > 1) return Fail(error, "more than one Content-Length");
  if (lengths.size() == 1) {
    uint64_t length = 0;
    if (!ParseUint(lengths[0], &length)) return Fail(error, "bad Content-Length");
    if (length != rest.size()) return Fail(error, "Content-Length does not match the body");
  }
  out->body.assign(rest);

  if (const std::optional<std::string_view> t = out->Header(kTruncatedHeader)) {
    uint64_t original = 0;
    if (!ParseUint(*t, &original)) return Fail(error, "bad X-0xgen-Raw-Body-Truncated");
    out->body_truncated = true;
    out->raw_body_bytes = original;
  }
  return true;
}

}  // namespace oxg::sdk
