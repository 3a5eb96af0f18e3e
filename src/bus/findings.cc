#include "bus/findings.h"

#include <algorithm>

#include "common/ids.h"
#include "common/json_writer.h"
#include "common/redact.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/utf8.h"

namespace oxg::bus {
namespace {

absl::Status Bad(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(oxg::Cat(field, ": ", reason));
}

// Valid UTF-8, no NUL.
bool CleanText(std::string_view s) {
  if (s.find('\0') != std::string_view::npos) return false;
  size_t count = 0;
  return utf8::CountCodePoints(s, &count);
}

absl::Status CheckText(std::string_view field, std::string_view s, size_t max, bool required) {
  if (required && s.empty()) return Bad(field, "must not be empty");
  if (s.size() > max) return Bad(field, oxg::Cat("longer than ", std::to_string(max), " bytes"));
  if (!CleanText(s)) return Bad(field, "not valid UTF-8 text (or holds NUL)");
  return absl::OkStatus();
}

bool TokenChars(std::string_view s, bool upper_ok) {
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || (upper_ok && c >= 'A' && c <= 'Z');
  });
}

std::string Redacted(std::string_view s) {
  std::optional<std::string> masked = Redactor::Default().RedactIfNeeded(s);
  return masked ? *std::move(masked) : std::string(s);
}

}  // namespace

std::string_view SeverityName(Severity s) {
  switch (s) {
    case Severity::kInfo: return "info";
    case Severity::kLow: return "low";
    case Severity::kMedium: return "med";
    case Severity::kHigh: return "high";
    case Severity::kCritical: return "crit";
  }
  return "info";
}

absl::StatusOr<Finding> ValidateFinding(const FindingInput& in, std::string_view plugin,
                                        std::string_view trace_id, const Clock& clock,
                                        const FindingLimits& limits) {
  size_t total = in.type.size() + in.message.size() + in.target.size() + in.evidence.size();
  for (const auto& [k, v] : in.metadata) total += k.size() + v.size();
  if (total > limits.max_total) {
    return Bad("finding", oxg::Cat("larger than ", std::to_string(limits.max_total), " bytes"));
  }
  if (in.type.empty() || in.type.size() > limits.max_type || !TokenChars(in.type, false)) {
    return Bad("type", oxg::Cat("must be 1 to ", std::to_string(limits.max_type),
                                " characters of [a-z0-9._-]"));
  }
  OXG_RETURN_IF_ERROR(CheckText("message", in.message, limits.max_message, true));
  OXG_RETURN_IF_ERROR(CheckText("target", in.target, limits.max_target, false));
  OXG_RETURN_IF_ERROR(CheckText("evidence", in.evidence, limits.max_evidence, false));
  if (in.severity < 1 || in.severity > 5) {
    return Bad("severity", "must be one of INFO, LOW, MEDIUM, HIGH, CRITICAL");
  }
  if (in.metadata.size() > limits.max_metadata_entries) {
    return Bad("metadata", oxg::Cat("more than ", std::to_string(limits.max_metadata_entries),
                                    " entries"));
  }
  Finding f;
  for (size_t i = 0; i < in.metadata.size(); ++i) {
    const auto& [key, value] = in.metadata[i];
    const std::string field = oxg::Cat("metadata[", std::to_string(i), "]");
    if (key.empty() || key.size() > limits.max_metadata_key || !TokenChars(key, true)) {
      return Bad(field, oxg::Cat("key must be 1 to ", std::to_string(limits.max_metadata_key),
                                 " characters of [A-Za-z0-9._-]"));
    }
    OXG_RETURN_IF_ERROR(CheckText(field, value, limits.max_metadata_value, false));
    f.meta.emplace_back(key, Redactor::IsSecretKey(key) ? "[REDACTED]" : Redacted(value));
  }
  std::sort(f.meta.begin(), f.meta.end());
  for (size_t i = 1; i < f.meta.size(); ++i) {
    if (f.meta[i].first == f.meta[i - 1].first) {
      return Bad("metadata", "a key appears twice");
    }
  }

  f.id = NewUlid(clock);
  f.plugin = std::string(plugin);
  f.type = in.type;
  f.message = Redacted(in.message);
  f.target = Redacted(in.target);
  f.evidence = Redacted(in.evidence);
  f.severity = static_cast<Severity>(in.severity - 1);
  f.ts = clock.Now();
  f.trace_id = std::string(trace_id);
  return f;
}

void AppendFindingLine(std::string& out, const Finding& f) {
  JsonWriter w(out);
  w.BeginObject();
  w.Key("version").String("0.2");
  w.Key("id").String(f.id);
  w.Key("plugin").String(f.plugin);
  w.Key("type").String(f.type);
  w.Key("message").String(f.message);
  w.Key("target").String(f.target);
  w.Key("evidence").String(f.evidence);
  w.Key("severity").String(SeverityName(f.severity));
  w.Key("ts").String(FormatRfc3339Nanos(f.ts));
  w.Key("meta").BeginObject();
  for (const auto& [k, v] : f.meta) w.Key(k).String(v);
  w.EndObject();
  w.Key("trace_id").String(f.trace_id);
  w.EndObject();
  out.push_back('\n');
}

}  // namespace oxg::bus
