#include "proxy/flow/flow_builder.h"

#include <algorithm>
#include <cstring>
#include <charconv>
#include <limits>

#include "common/json_writer.h"
#include "common/redact.h"
#include "common/strings.h"
#include "proxy/flow/base64.h"

namespace oxg::proxy {
namespace {

constexpr std::string_view kTruncatedHeader = "X-0xgen-Raw-Body-Truncated";

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool IStartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && IEquals(s.substr(0, prefix.size()), prefix);
}

bool IEndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && IEquals(s.substr(s.size() - suffix.size()), suffix);
}

// Appends `s` with CR, LF and NUL turned into spaces, so no value can start a new line.
// True when no byte of `s` is below 0x0E (which covers NUL, LF and CR), eight bytes at a time:
// (x - 0x0E..) & ~x & 0x80.. sets a byte's top bit exactly when that byte is below 0x0E.
bool NoLowBytes(std::string_view s) {
  constexpr uint64_t kLow = 0x0E0E0E0E0E0E0E0EULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t x;
    std::memcpy(&x, s.data() + i, 8);
    if (((x - kLow) & ~x & kHigh) != 0) return false;
  }
  for (; i < s.size(); ++i) {
    if (static_cast<unsigned char>(s[i]) < 0x0E) return false;
  }
  return true;
}

void AppendClean(std::string& out, std::string_view s) {
  // Header text almost never holds a control byte: one word-wise check, then a plain copy.
  if (NoLowBytes(s)) {
    out.append(s);
    return;
  }
  for (char c : s) out.push_back(c == '\r' || c == '\n' || c == '\0' ? ' ' : c);
}

void AppendUint(std::string& out, uint64_t v) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, res.ptr);
}

void AppendHeader(std::string& out, std::string_view name, std::string_view value) {
  AppendClean(out, name);
  out.append(": ");
  AppendClean(out, value);
  out.append("\r\n");
}

void AppendLengthHeader(std::string& out, std::string_view name, uint64_t n) {
  AppendClean(out, name);
  out.append(": ");
  AppendUint(out, n);
  out.append("\r\n");
}

size_t CountRedacted(std::string_view s) {
  size_t n = 0;
  for (size_t pos = s.find(kRedacted); pos != std::string_view::npos;
       pos = s.find(kRedacted, pos + kRedacted.size())) {
    ++n;
  }
  return n;
}

// Transfer-Encoding without its `chunked` coding (the payload body is de-chunked). Returns
// false when nothing remains.
bool WithoutChunked(std::string_view value, std::string* out) {
  bool any_chunked = false;
  out->clear();
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t end = value.find(',', pos);
    if (end == std::string_view::npos) end = value.size();
    const std::string_view coding = TrimAscii(value.substr(pos, end - pos));
    if (IEquals(coding, "chunked")) {
      any_chunked = true;
    } else if (!coding.empty()) {
      if (!out->empty()) out->append(", ");
      out->append(coding);
    }
    pos = end + 1;
  }
  if (!any_chunked) out->assign(value);
  return !out->empty();
}

bool IsTextMediaType(std::string_view content_type) {
  const std::string_view type = TrimAscii(content_type.substr(0, content_type.find(';')));
  if (IStartsWith(type, "text/")) return true;
  static constexpr std::string_view kTextTypes[] = {
      "application/json",         "application/x-www-form-urlencoded",
      "application/xml",          "application/javascript",
      "application/x-javascript", "application/ecmascript",
      "application/graphql",      "application/x-ndjson"};
  for (std::string_view t : kTextTypes) {
    if (IEquals(type, t)) return true;
  }
  return IEndsWith(type, "+json") || IEndsWith(type, "+xml");
}

// Authorization value with the credential masked; the scheme word is kept.
void AppendRedactedAuthorization(std::string& out, std::string_view value) {
  const size_t space = value.find_first_of(" \t");
  if (space != std::string_view::npos && space > 0 && !TrimAscii(value.substr(space)).empty()) {
    out.append(value.substr(0, space));
    out.push_back(' ');
  }
  out.append(kRedacted);
}

void Count(metrics::Counter* c, uint64_t n) {
  if (c != nullptr && n != 0) c->Inc(n);
}

// The credential headers, whose values are masked by name before the patterns run.
bool IsCredentialHeader(std::string_view name, std::string_view value) {
  return !TrimAscii(value).empty() &&
         (IEquals(name, "authorization") || IEquals(name, "proxy-authorization") ||
          IEquals(name, "cookie") || IEquals(name, "set-cookie") || Redactor::IsSecretKey(name));
}

// Appends a credential header's masked value (IsCredentialHeader is true): the scheme word of
// Authorization, cookie names and Set-Cookie attributes survive, anything else becomes
// [REDACTED]. Adds the redactions made to *header_redactions / *cookie_redactions.
void AppendMaskedCredential(std::string& out, std::string_view name, std::string_view value,
                            uint64_t* header_redactions, uint64_t* cookie_redactions) {
  const bool is_set_cookie = IEquals(name, "set-cookie");
  if (IEquals(name, "authorization") || IEquals(name, "proxy-authorization")) {
    AppendRedactedAuthorization(out, value);
    ++*header_redactions;
  } else if (is_set_cookie || IEquals(name, "cookie")) {
    std::string cleaned;  // CR, LF and NUL made harmless first, as for every header
    AppendClean(cleaned, value);
    *cookie_redactions += AppendRedactedCookies(out, cleaned, is_set_cookie);
  } else {
    out.append(kRedacted);
    ++*header_redactions;
  }
}

}  // namespace

void SanitizeHeaderValues(std::span<const HeaderField> headers, const Redactor& redactor,
                          FlowStats* stats, std::vector<std::string>* out) {
  out->resize(headers.size());
  uint64_t header_redactions = 0;
  uint64_t cookie_redactions = 0;
  // The other fields as "name: value\r\n" lines, masked in one pass of the patterns.
  std::string text;
  size_t lines = 0;
  // Which fields are credentials (IsSecretKey is not free); kept per thread for its capacity.
  thread_local std::vector<bool> credential;
  credential.assign(headers.size(), false);
  for (size_t i = 0; i < headers.size(); ++i) {
    const HeaderField& h = headers[i];
    std::string& value = (*out)[i];
    value.clear();
    credential[i] = IsCredentialHeader(h.name, h.value);
    if (credential[i]) {
      AppendMaskedCredential(value, h.name, h.value, &header_redactions, &cookie_redactions);
      continue;
    }
    AppendClean(text, h.name);
    text.append(": ");
    AppendClean(text, h.value);
    text.append("\r\n");
    ++lines;
  }
  if (lines > 0) {
    const std::optional<std::string> redacted = redactor.RedactIfNeeded(text);
    const std::string& masked = redacted ? *redacted : text;
    if (!redacted) {
      // The usual case: nothing to mask; copy the cleaned values back.
      size_t pos = 0;
      for (size_t i = 0; i < headers.size(); ++i) {
        if (credential[i]) continue;
        const size_t end = text.find("\r\n", pos);
        const size_t colon = pos + headers[i].name.size() + 2;
        (*out)[i].assign(text, colon, end - colon);
        pos = end + 2;
      }
    } else {
      // Split the masked text back into its lines; a pattern that ran across lines (a private
      // key block) makes the split fail, and each field is then masked on its own.
      bool split_ok = true;
      size_t pos = 0;
      for (size_t i = 0; i < headers.size() && split_ok; ++i) {
        if (credential[i]) continue;
        std::string prefix;
        AppendClean(prefix, headers[i].name);
        prefix.append(": ");
        const size_t end = masked.find("\r\n", pos);
        if (end == std::string::npos || masked.compare(pos, prefix.size(), prefix) != 0 ||
            end < pos + prefix.size()) {
          split_ok = false;
          break;
        }
        (*out)[i].assign(masked, pos + prefix.size(), end - pos - prefix.size());
        pos = end + 2;
      }
      split_ok = split_ok && pos == masked.size();
      if (split_ok) {
        const size_t before = CountRedacted(text);
        const size_t after = CountRedacted(masked);
        if (after > before) header_redactions += after - before;
      } else {
        for (size_t i = 0; i < headers.size(); ++i) {
          if (credential[i]) continue;
          (*out)[i] = SanitizeHeaderValue(headers[i].name, headers[i].value, redactor, stats);
        }
      }
    }
  }
  if (stats != nullptr) {
    Count(&stats->header, header_redactions);
    Count(&stats->cookie, cookie_redactions);
  }
}

std::string SanitizeHeaderValue(std::string_view name, std::string_view value,
                                const Redactor& redactor, FlowStats* stats) {
  uint64_t header_redactions = 0;
  uint64_t cookie_redactions = 0;
  std::string out;
  if (IsCredentialHeader(name, value)) {
    AppendMaskedCredential(out, name, value, &header_redactions, &cookie_redactions);
  } else {
    // The patterns see the field as the payload shows it ("name: value"), since some of them
    // key on the name (an `X-Session-Auth: ...` line); the name part is kept by every pattern.
    std::string line;
    line.reserve(name.size() + 2 + value.size());
    AppendClean(line, name);
    line.append(": ");
    const size_t prefix = line.size();
    AppendClean(line, value);
    std::string masked = redactor.Redact(line);
    const size_t before = CountRedacted(line);
    const size_t after = CountRedacted(masked);
    if (after > before) header_redactions += after - before;
    if (masked.compare(0, prefix, line, 0, prefix) == 0) {
      out.assign(masked, prefix);
    } else {
      out = redactor.Redact(std::string_view(line).substr(prefix));
    }
  }
  if (stats != nullptr) {
    Count(&stats->header, header_redactions);
    Count(&stats->cookie, cookie_redactions);
  }
  return out;
}

FlowStats::FlowStats(metrics::Registry& registry)
    : FlowStats(registry.AddCounter("oxg_flow_redactions_total",
                                    "Redactions applied while sanitizing flows.", {"kind"})) {}

FlowStats::FlowStats(metrics::Family<metrics::Counter>& family)
    : header(family.WithLabels({"header"})),
      cookie(family.WithLabels({"cookie"})),
      body_secret(family.WithLabels({"body_secret"})),
      raw_truncated(family.WithLabels({"raw_truncated"})) {}

FlowPayloads BuildFlowPayloads(const HttpMessage& message, const FlowOptions& options,
                               FlowStats* stats) {
  const Redactor& redactor = Redactor::Default();
  FlowPayloads p;

  // Body limit and truncation.
  uint64_t limit = std::numeric_limits<uint64_t>::max();
  if (options.max_body_kb >= 0) {
    limit = static_cast<uint64_t>(options.max_body_kb) * 1024;
  }
  const std::string_view body =
      message.body.substr(0, static_cast<size_t>(std::min<uint64_t>(message.body.size(), limit)));
  p.raw_body_bytes = std::max<uint64_t>(message.original_body_length, message.body.size());
  p.raw_body_truncated = p.raw_body_bytes > body.size();

  // What the headers say about the body.
  std::string_view content_type;
  bool has_content_type = false;
  bool encoded = false;  // a Content-Encoding other than identity
  bool framed = p.raw_body_bytes > 0;
  for (const HeaderField& h : message.headers) {
    if (IEquals(h.name, "content-type")) {
      if (!has_content_type) content_type = h.value;
      has_content_type = true;
    } else if (IEquals(h.name, "content-encoding")) {
      const std::string_view v = TrimAscii(h.value);
      if (!v.empty() && !IEquals(v, "identity")) encoded = true;
    } else if (IEquals(h.name, "content-length") || IEquals(h.name, "transfer-encoding")) {
      framed = true;
    }
  }

  // Sanitized body: masked in place when it is text the patterns can read.
  std::string sanitized_body_storage;
  std::string_view sanitized_body = body;
  if (!body.empty() && !encoded &&
      (has_content_type ? IsTextMediaType(content_type)
                        : body.find('\0') == std::string_view::npos)) {
    if (std::optional<std::string> masked = redactor.RedactIfNeeded(body)) {
      sanitized_body_storage = *std::move(masked);
      const size_t before = CountRedacted(body);
      const size_t after = CountRedacted(sanitized_body_storage);
      if (after > before && stats != nullptr) Count(&stats->body_secret, after - before);
      sanitized_body = sanitized_body_storage;
    }
  }

  // Heads.
  std::string raw;
  std::string san;
  const size_t head_estimate = 64 + message.target.size() + message.headers.size() * 48;
  raw.reserve(head_estimate + body.size());
  san.reserve(head_estimate);
  if (message.kind == HttpMessage::Kind::kRequest) {
    AppendClean(raw, message.method);
    raw.push_back(' ');
    AppendClean(raw, message.target);
    raw.append(" HTTP/1.1\r\n");
  } else {
    raw.append("HTTP/1.1 ");
    AppendUint(raw, static_cast<uint64_t>(std::clamp(message.status, 0, 999)));
    raw.push_back(' ');
    AppendClean(raw, message.reason);
    raw.append("\r\n");
  }
  san.append(raw);

  uint64_t header_redactions = 0;
  uint64_t cookie_redactions = 0;
  bool length_written = false;
  std::string scratch;
  for (const HeaderField& h : message.headers) {
    if (IEquals(h.name, "content-length")) {
      if (length_written) continue;
      length_written = true;
      AppendLengthHeader(raw, h.name, body.size());
      AppendLengthHeader(san, h.name, sanitized_body.size());
      continue;
    }
    if (IEquals(h.name, "transfer-encoding")) {
      if (!WithoutChunked(h.value, &scratch)) continue;
      AppendHeader(raw, h.name, scratch);
      AppendHeader(san, h.name, scratch);
      continue;
    }
    // A peer cannot forge the truncation marker: only the builder writes it.
    if (IEquals(h.name, kTruncatedHeader)) continue;

    AppendHeader(raw, h.name, h.value);
    if (!IsCredentialHeader(h.name, h.value)) {
      AppendHeader(san, h.name, h.value);
      continue;
    }
    AppendClean(san, h.name);
    san.append(": ");
    AppendMaskedCredential(san, h.name, h.value, &header_redactions, &cookie_redactions);
    san.append("\r\n");
  }
  if (!length_written && (framed || !body.empty())) {
    AppendLengthHeader(raw, "Content-Length", body.size());
    AppendLengthHeader(san, "Content-Length", sanitized_body.size());
  }
  if (p.raw_body_truncated) {
    AppendLengthHeader(raw, kTruncatedHeader, p.raw_body_bytes);
    AppendLengthHeader(san, kTruncatedHeader, p.raw_body_bytes);
  }

  // Secrets elsewhere in the head (a token in the target's query, a password in a Referer
  // URL). Redaction is idempotent, so the credentials masked above stay as they are.
  {
    if (std::optional<std::string> masked = redactor.RedactIfNeeded(san)) {
      const size_t before = CountRedacted(san);
      const size_t after = CountRedacted(*masked);
      if (after > before) header_redactions += after - before;
      san = *std::move(masked);
    }
  }

  raw.append("\r\n");
  raw.append(body);
  san.append("\r\n");
  san.append(sanitized_body);

  if (stats != nullptr) {
    Count(&stats->header, header_redactions);
    Count(&stats->cookie, cookie_redactions);
    if (p.raw_body_truncated) stats->raw_truncated.Inc();
  }
  p.raw = std::move(raw);
  p.sanitized = std::move(san);
  return p;
}

void AppendFlowLogLine(std::string& out, const FlowRecord& record) {
  JsonWriter w(out);
  // Base64 text needs no escaping: it goes straight into the line, between the quotes the
  // writer opens (no temporary copy of a payload-sized string).
  auto quoted_base64 = [&](std::string_view payload) {
    w.Raw("\"");
    AppendBase64(out, payload);
    out.push_back('"');
  };
  w.BeginObject();
  w.Key("id").String(record.id);
  w.Key("sequence").Uint(record.sequence);
  w.Key("type").String(record.type == FlowType::kRequest ? "FLOW_REQUEST" : "FLOW_RESPONSE");
  w.Key("timestamp_unix_nano").Int(record.timestamp_unix_nano);
  w.Key("sanitized_base64");
  quoted_base64(record.sanitized);
  if (record.raw.has_value()) {
    w.Key("raw_base64");
    quoted_base64(*record.raw);
  }
  w.Key("raw_body_bytes").Uint(record.raw_body_bytes);
  w.Key("raw_body_truncated").Bool(record.raw_body_truncated);
  w.Key("trace_id").String(record.trace_id);
  w.EndObject();
  out.push_back('\n');
}

}  // namespace oxg::proxy
