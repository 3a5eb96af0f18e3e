#include "telemetry/metrics/negotiate.h"

#include <cstdint>
#include <optional>

namespace oxg::metrics {
namespace {

// Upper bound on elements considered, so a hostile header costs bounded work per element.
constexpr int kMaxElements = 128;

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view Unquote(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return v.substr(1, v.size() - 2);
  return v;
}

// A q-value per RFC 9110: "0" or "1" optionally followed by up to three decimals, at most 1.
// Returns thousandths, or nullopt when malformed.
std::optional<int> ParseQ(std::string_view v) {
  v = Unquote(v);
  if (v.empty() || (v[0] != '0' && v[0] != '1')) return std::nullopt;
  int q = (v[0] - '0') * 1000;
  if (v.size() == 1) return q;
  if (v[1] != '.' || v.size() > 5) return std::nullopt;
  int scale = 100;
  for (size_t i = 2; i < v.size(); ++i, scale /= 10) {
    if (v[i] < '0' || v[i] > '9') return std::nullopt;
    q += (v[i] - '0') * scale;
  }
  if (q > 1000) return std::nullopt;
  return q;
}

// Splits `s` on `sep` outside double-quoted strings, calling fn(piece) for each; stops early
// when fn returns false.
template <class Fn>
void SplitOutsideQuotes(std::string_view s, char sep, Fn fn) {
  bool quoted = false;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i < s.size()) {
      const char c = s[i];
      if (c == '\\' && quoted && i + 1 < s.size()) {
        ++i;
        continue;
      }
      if (c == '"') quoted = !quoted;
      if (c != sep || quoted) continue;
    }
    if (!fn(s.substr(start, i - start))) return;
    start = i + 1;
  }
}

// One media range of an Accept header.
struct MediaRange {
  std::string_view type, subtype, version;
  bool has_version = false;
  int q = 1000;
};

std::optional<MediaRange> ParseMediaRange(std::string_view element) {
  MediaRange r;
  bool first = true;
  bool ok = true;
  int params = 0;
  SplitOutsideQuotes(element, ';', [&](std::string_view part) {
    part = Trim(part);
    if (first) {
      first = false;
      const size_t slash = part.find('/');
      if (slash == std::string_view::npos) return ok = false;
      r.type = Trim(part.substr(0, slash));
      r.subtype = Trim(part.substr(slash + 1));
      if (r.type.empty() || r.subtype.empty()) return ok = false;
      return true;
    }
    if (++params > 16) return true;  // ignore absurd parameter lists beyond the first few
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos) return true;
    const std::string_view key = Trim(part.substr(0, eq));
    const std::string_view value = Trim(part.substr(eq + 1));
    if (EqualsIgnoreCase(key, "q")) {
      const std::optional<int> q = ParseQ(value);
      if (!q) return ok = false;
      r.q = *q;
    } else if (EqualsIgnoreCase(key, "version")) {
      r.version = Unquote(value);
      r.has_version = true;
    }
    return true;
  });
  if (!ok || first) return std::nullopt;
  return r;
}

// How well a range names a format: 0 no match, 1 `*/*`, 2 `type/*`, 3 the exact type.
struct Match {
  int specificity = 0;
  int q = 0;
};

void Consider(Match& best, int specificity, int q) {
  if (specificity > best.specificity) best = {specificity, q};
}

}  // namespace

Format NegotiateFormat(std::string_view accept) {
  Match om, text;
  int seen = 0;
  SplitOutsideQuotes(accept, ',', [&](std::string_view element) {
    if (++seen > kMaxElements) return false;
    const std::optional<MediaRange> r = ParseMediaRange(Trim(element));
    if (!r) return true;
    const bool any_type = r->type == "*";
    if (any_type && r->subtype == "*") {
      Consider(om, 1, r->q);
      Consider(text, 1, r->q);
    } else if (EqualsIgnoreCase(r->type, "application")) {
      if (r->subtype == "*") {
        Consider(om, 2, r->q);
      } else if (EqualsIgnoreCase(r->subtype, "openmetrics-text") &&
                 (!r->has_version || r->version == "1.0.0")) {
        Consider(om, 3, r->q);
      }
    } else if (EqualsIgnoreCase(r->type, "text")) {
      if (r->subtype == "*") {
        Consider(text, 2, r->q);
      } else if (EqualsIgnoreCase(r->subtype, "plain") &&
                 (!r->has_version || r->version == "0.0.4")) {
        Consider(text, 3, r->q);
      }
    }
    return true;
  });
  if (om.q > 0 && (om.q > text.q || (om.q == text.q && om.specificity > text.specificity))) {
    return Format::kOpenMetrics100;
  }
  return Format::kText004;
}

bool AcceptsGzip(std::string_view accept_encoding) {
  int gzip_q = -1, any_q = -1;
  int seen = 0;
  SplitOutsideQuotes(accept_encoding, ',', [&](std::string_view element) {
    if (++seen > kMaxElements) return false;
    int q = 1000;
    std::string_view coding;
    bool first = true, ok = true;
    SplitOutsideQuotes(element, ';', [&](std::string_view part) {
      part = Trim(part);
      if (first) {
        first = false;
        coding = part;
        return true;
      }
      const size_t eq = part.find('=');
      if (eq != std::string_view::npos && EqualsIgnoreCase(Trim(part.substr(0, eq)), "q")) {
        const std::optional<int> parsed = ParseQ(Trim(part.substr(eq + 1)));
        if (!parsed) return ok = false;
        q = *parsed;
      }
      return true;
    });
    if (!ok) return true;
    if (EqualsIgnoreCase(coding, "gzip") || EqualsIgnoreCase(coding, "x-gzip")) {
      gzip_q = std::max(gzip_q, q);
    } else if (coding == "*") {
      any_q = std::max(any_q, q);
    }
    return true;
  });
  return gzip_q >= 0 ? gzip_q > 0 : any_q > 0;
}

std::string_view ContentType(Format format) {
  return format == Format::kOpenMetrics100
             ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
             : "text/plain; version=0.0.4; charset=utf-8";
}

}  // namespace oxg::metrics
