// W3C Trace Context (traceparent / tracestate) parsing and formatting. Headers come from
// untrusted peers (proxied clients, plugins), so parsing is strict and bounded.

#include <string>
#include <string_view>
#include <vector>

#include "telemetry/tracing/tracer.h"

namespace oxg::tracing {
namespace {

constexpr size_t kTraceparentLength = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2
constexpr size_t kMaxTracestateMembers = 32;
constexpr size_t kMaxTracestateLength = 512;

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool AllLowerHex(std::string_view s) {
  for (char c : s) {
    if (!IsLowerHex(c)) return false;
  }
  return true;
}

int HexNibble(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
         c == '/';
}

// key = simple-key / multi-tenant-key (tenant-id "@" system-id).
bool ValidTracestateKey(std::string_view key) {
  const size_t at = key.find('@');
  if (at == std::string_view::npos) {
    if (key.empty() || key.size() > 256) return false;
    if (!(key[0] >= 'a' && key[0] <= 'z')) return false;
    for (char c : key) {
      if (!IsKeyChar(c)) return false;
    }
    return true;
  }
  const std::string_view tenant = key.substr(0, at);
  const std::string_view system = key.substr(at + 1);
  if (tenant.empty() || tenant.size() > 241 || system.empty() || system.size() > 14) return false;
  if (!((tenant[0] >= 'a' && tenant[0] <= 'z') || (tenant[0] >= '0' && tenant[0] <= '9'))) {
    return false;
  }
  if (!(system[0] >= 'a' && system[0] <= 'z')) return false;
  for (char c : tenant) {
    if (!IsKeyChar(c)) return false;
  }
  for (char c : system) {
    if (!IsKeyChar(c)) return false;
  }
  return true;
}

// value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
bool ValidTracestateValue(std::string_view value) {
  if (value.empty() || value.size() > 256 || value.back() == ' ') return false;
  for (char c : value) {
    if (c < 0x20 || c > 0x7E || c == ',' || c == '=') return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool ParseTraceparent(std::string_view h, SpanContext* out) {
  if (h.size() < kTraceparentLength) return false;
  const std::string_view version = h.substr(0, 2);
  if (!AllLowerHex(version) || version == "ff") return false;
  if (version == "00") {
    if (h.size() != kTraceparentLength) return false;
  } else if (h.size() > kTraceparentLength && h[kTraceparentLength] != '-') {
    // A future version may append fields, but only after another separator.
    return false;
  }
  if (h[2] != '-' || h[35] != '-' || h[52] != '-') return false;
  const std::string_view trace = h.substr(3, 32);
  const std::string_view span = h.substr(36, 16);
  const std::string_view flags = h.substr(53, 2);
  if (!AllLowerHex(trace) || !AllLowerHex(span) || !AllLowerHex(flags)) return false;
  SpanContext ctx;
  if (!HexDecode(trace, ctx.trace_id.bytes) || !HexDecode(span, ctx.span_id.bytes)) return false;
  if (!ctx.IsValid()) return false;  // all-zero ids
  // Only the sampled bit is defined; the others are not propagated.
  ctx.flags = static_cast<uint8_t>((HexNibble(flags[0]) << 4 | HexNibble(flags[1])) & 0x01);
  // tracestate travels in its own header; whatever the caller parsed there is kept.
  out->trace_id = ctx.trace_id;
  out->span_id = ctx.span_id;
  out->flags = ctx.flags;
  out->remote = true;
  return true;
}

bool ParseTracestate(std::string_view header, std::string* out) {
  if (header.size() > kMaxTracestateLength) return false;
  std::vector<std::string_view> keys;
  std::string result;
  size_t start = 0;
  while (start <= header.size()) {
    size_t comma = header.find(',', start);
    if (comma == std::string_view::npos) comma = header.size();
    const std::string_view member = TrimOws(header.substr(start, comma - start));
    start = comma + 1;
    if (member.empty()) continue;  // empty list members are allowed and dropped
    const size_t eq = member.find('=');
    if (eq == std::string_view::npos) return false;
    const std::string_view key = member.substr(0, eq);
    const std::string_view value = member.substr(eq + 1);
    if (!ValidTracestateKey(key) || !ValidTracestateValue(value)) return false;
    for (std::string_view k : keys) {
      if (k == key) return false;  // duplicate keys make the whole header invalid
    }
    if (keys.size() == kMaxTracestateMembers) return false;
    keys.push_back(key);
    if (!result.empty()) result.push_back(',');
    result.append(member);
  }
  *out = std::move(result);
  return true;
}

std::string FormatTraceparent(const SpanContext& ctx) {
  std::string out(kTraceparentLength, '-');
  out[0] = '0';
  out[1] = '0';
  ctx.trace_id.WriteHex(out.data() + 3);
  ctx.span_id.WriteHex(out.data() + 36);
  static constexpr char kHex[] = "0123456789abcdef";
  out[53] = kHex[(ctx.flags >> 4) & 0xF];
  out[54] = kHex[ctx.flags & 0xF];
  return out;
}

}  // namespace oxg::tracing
