#include "telemetry/tracing/trace_tool.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>

#include "common/clock.h"
#include "common/ids.h"
#include "common/json_writer.h"
#include "common/strings.h"
#include "telemetry/tracing/otlp_encoding.h"

namespace oxg::tracing {
namespace {

using Json = nlohmann::ordered_json;  // keeps attributes in file order

// Deeper nesting than any event of ours has; refusing it keeps hostile input cheap.
constexpr int kMaxDepth = 32;

absl::Status Bad(std::string_view reason) {
  return absl::InvalidArgumentError(std::string(reason));
}

bool NestedTooDeeply(std::string_view s) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

// A JSON number of microseconds to nanoseconds, without overflow.
absl::Status MicrosToNanos(const Json& v, std::string_view field, int64_t* out) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max() / 1000;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(kMax)) return Bad(Cat("\"", field, "\" is out of range"));
    *out = static_cast<int64_t>(u) * 1000;
    return absl::OkStatus();
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i > kMax || i < -kMax) return Bad(Cat("\"", field, "\" is out of range"));
    *out = i * 1000;
    return absl::OkStatus();
  }
  if (v.is_number_float()) {
    const double d = v.get<double>() * 1000.0;
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) {
      return Bad(Cat("\"", field, "\" is out of range"));
    }
    *out = std::llround(d);
    return absl::OkStatus();
  }
  return Bad(Cat("\"", field, "\" is not a number"));
}

const Json* Member(const Json& object, std::string_view key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

absl::Status RequiredString(const Json& object, std::string_view key, std::string* out) {
  const Json* v = Member(object, key);
  if (v == nullptr) return Bad(Cat("missing \"", key, "\""));
  if (!v->is_string()) return Bad(Cat("\"", key, "\" is not a string"));
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status OptionalString(const Json& object, std::string_view key, std::string* out) {
  const Json* v = Member(object, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return Bad(Cat("\"", key, "\" is not a string"));
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseAttributes(const Json& v, std::string_view where, std::vector<Attribute>* out) {
  if (!v.is_object()) return Bad(Cat("\"", where, "\" is not an object"));
  out->reserve(v.size());
  for (const auto& [key, value] : v.items()) {
    Attribute a;
    a.key = key;
    if (value.is_string()) {
      a.value = value.get<std::string>();
    } else if (value.is_boolean()) {
      a.value = value.get<bool>();
    } else if (value.is_number_unsigned()) {
      const uint64_t u = value.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Bad(Cat("attribute \"", key, "\" is out of range"));
      }
      a.value = static_cast<int64_t>(u);
    } else if (value.is_number_integer()) {
      a.value = value.get<int64_t>();
    } else if (value.is_number_float()) {
      a.value = value.get<double>();
    } else if (value.is_null()) {
      continue;  // a NaN or infinity, which JSON cannot hold
    } else {
      return Bad(Cat("attribute \"", key, "\" is not a string, number or boolean"));
    }
    out->push_back(std::move(a));
  }
  return absl::OkStatus();
}

template <class Id>
absl::Status ParseId(const Json& args, std::string_view key, bool may_be_empty, Id* out) {
  std::string hex;
  OXG_RETURN_IF_ERROR(RequiredString(args, key, &hex));
  if (may_be_empty && hex.empty()) {
    *out = Id{};
    return absl::OkStatus();
  }
  if (hex.size() != 2 * out->bytes.size() || !HexDecode(hex, out->bytes)) {
    return Bad(Cat("\"", key, "\" is not ", 2 * out->bytes.size(), " hex digits"));
  }
  if (!may_be_empty && !out->IsValid()) return Bad(Cat("\"", key, "\" is all zeros"));
  return absl::OkStatus();
}

absl::Status ParseSpanEvent(const Json& object, ArchiveLine* line) {
  SpanData& span = line->span;
  OXG_RETURN_IF_ERROR(RequiredString(object, "name", &span.name));
  const Json* ts = Member(object, "ts");
  const Json* dur = Member(object, "dur");
  if (ts == nullptr) return Bad("missing \"ts\"");
  if (dur == nullptr) return Bad("missing \"dur\"");
  int64_t duration = 0;
  OXG_RETURN_IF_ERROR(MicrosToNanos(*ts, "ts", &span.start_unix_nano));
  OXG_RETURN_IF_ERROR(MicrosToNanos(*dur, "dur", &duration));
  if (duration < 0) return Bad("\"dur\" is negative");
  if (span.start_unix_nano > std::numeric_limits<int64_t>::max() - duration) {
    return Bad("\"ts\" + \"dur\" is out of range");
  }
  span.end_unix_nano = span.start_unix_nano + duration;
  if (const Json* pid = Member(object, "pid");
      pid != nullptr && pid->is_number_unsigned() && pid->get<uint64_t>() <= UINT32_MAX) {
    line->pid = static_cast<uint32_t>(pid->get<uint64_t>());
  }

  const Json* args = Member(object, "args");
  if (args == nullptr) return Bad("missing \"args\"");
  if (!args->is_object()) return Bad("\"args\" is not an object");
  OXG_RETURN_IF_ERROR(ParseId(*args, "trace_id", false, &span.trace_id));
  OXG_RETURN_IF_ERROR(ParseId(*args, "span_id", false, &span.span_id));
  OXG_RETURN_IF_ERROR(ParseId(*args, "parent_span_id", true, &span.parent_span_id));
  std::string name;
  OXG_RETURN_IF_ERROR(RequiredString(*args, "kind", &name));
  if (!ParseSpanKind(name, &span.kind)) return Bad(Cat("unknown kind \"", name, "\""));
  OXG_RETURN_IF_ERROR(RequiredString(*args, "status", &name));
  if (!ParseStatusCode(name, &span.status)) return Bad(Cat("unknown status \"", name, "\""));
  OXG_RETURN_IF_ERROR(OptionalString(*args, "status_message", &span.status_message));
  if (span.status != StatusCode::kError) span.status_message.clear();
  OXG_RETURN_IF_ERROR(OptionalString(*args, "trace_state", &span.trace_state));
  if (const Json* attributes = Member(*args, "attributes"); attributes != nullptr) {
    OXG_RETURN_IF_ERROR(ParseAttributes(*attributes, "attributes", &span.attributes));
  }
  if (const Json* events = Member(*args, "events"); events != nullptr) {
    if (!events->is_array()) return Bad("\"events\" is not an array");
    for (const Json& e : *events) {
      if (!e.is_object()) return Bad("an entry of \"events\" is not an object");
      SpanEvent event;
      OXG_RETURN_IF_ERROR(RequiredString(e, "name", &event.name));
      const Json* at = Member(e, "ts");
      if (at == nullptr) return Bad("an entry of \"events\" has no \"ts\"");
      OXG_RETURN_IF_ERROR(MicrosToNanos(*at, "events[].ts", &event.time_unix_nano));
      if (const Json* attributes = Member(e, "attributes"); attributes != nullptr) {
        OXG_RETURN_IF_ERROR(ParseAttributes(*attributes, "events[].attributes", &event.attributes));
      }
      span.events.push_back(std::move(event));
    }
  }
  return absl::OkStatus();
}

std::string_view StripPunctuation(std::string_view s) {
  s = TrimAscii(s);
  if (!s.empty() && s.front() == '[') s = TrimAscii(s.substr(1));
  if (!s.empty() && s.back() == ',') s = TrimAscii(s.substr(0, s.size() - 1));
  if (!s.empty() && s.back() == ']') s = TrimAscii(s.substr(0, s.size() - 1));
  if (!s.empty() && s.back() == ',') s = TrimAscii(s.substr(0, s.size() - 1));
  return s;
}

// JSON-quotes text that would otherwise break the one-line layout or be ambiguous.
void AppendWord(std::string& out, std::string_view text) {
  const bool plain = !text.empty() && std::none_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f || c == '"' || c == '\\' || c == '=';
  });
  if (plain) {
    out.append(text);
    return;
  }
  out.push_back('"');
  AppendJsonEscaped(out, text);
  out.push_back('"');
}

void AppendValue(std::string& out, const AttributeValue& value) {
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          out.push_back('"');
          AppendJsonEscaped(out, v);
          out.push_back('"');
        } else if constexpr (std::is_same_v<T, bool>) {
          out.append(v ? "true" : "false");
        } else if constexpr (std::is_same_v<T, int64_t>) {
          out.append(std::to_string(v));
        } else {
          JsonWriter(out).Double(v);
        }
      },
      value);
}

// a - b, saturated instead of overflowing (hand-made files can hold any microsecond count).
int64_t Minus(int64_t a, int64_t b) {
  int64_t d;
  if (__builtin_sub_overflow(a, b, &d)) {
    return a > b ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return d;
}

std::string FormatTime(int64_t unix_nano) {
  const Clock::WallTime t(
      std::chrono::duration_cast<Clock::WallTime::duration>(std::chrono::nanoseconds(unix_nano)));
  std::string s = FormatRfc3339Nanos(t);
  // The archive keeps microseconds; show nanoseconds only when they are there.
  if (unix_nano % 1000 == 0 && s.size() > 4) s.erase(s.size() - 4, 3);
  return s;
}

std::string StatusText(const SpanData& span) {
  std::string s = StatusCodeName(span.status);
  if (span.status == StatusCode::kError && !span.status_message.empty()) {
    s.append("(\"");
    AppendJsonEscaped(s, span.status_message);
    s.append("\")");
  }
  return s;
}

// Reads every file of the archive into `spans`; returns an exit code, 0 when all went well.
int ReadAll(const std::string& path, const TraceToolOptions& options, std::string_view command,
            std::ostream& err, ArchiveReader& reader, const ArchiveReader::SpanFn& on_span) {
  for (const std::string& file : ArchiveFiles(path, options.rotated)) {
    const absl::Status status = reader.ReadFile(file, on_span);
    if (!status.ok()) {
      err << "0xgenctl trace " << command << ": " << status.message() << "\n";
      return status.code() == absl::StatusCode::kInvalidArgument ? 1 : 2;
    }
  }
  if (reader.skipped_lines() > 0) {
    err << "0xgenctl trace " << command << ": skipped " << reader.skipped_lines()
        << " bad line(s)\n";
  }
  return 0;
}

ArchiveReader MakeReader(const TraceToolOptions& options, std::string_view command,
                         std::ostream& err) {
  return ArchiveReader({.skip_bad_lines = options.skip_bad_lines},
                       [&err, command = std::string(command)](const std::string& message) {
                         err << "0xgenctl trace " << command << ": " << message << "\n";
                       });
}

}  // namespace

absl::StatusOr<ArchiveLine> ParseArchiveLine(std::string_view raw) {
  const std::string_view s = StripPunctuation(raw);
  ArchiveLine line;
  if (s.empty()) return line;
  if (s.front() != '{') return Bad("not a trace event (a JSON object)");
  if (NestedTooDeeply(s)) return Bad("nested too deeply");
  Json object;
  try {
    object = Json::parse(s.begin(), s.end());
  } catch (const Json::exception& e) {
    std::string_view what = e.what();
    // "[json.exception.parse_error.101] parse error at ..." → "parse error at ..."
    if (const size_t close = what.find("] "); close != std::string_view::npos) {
      what.remove_prefix(close + 2);
    }
    return Bad(Cat("invalid JSON: ", what));
  }
  if (!object.is_object()) return Bad("not a trace event (a JSON object)");
  std::string phase;
  OXG_RETURN_IF_ERROR(RequiredString(object, "ph", &phase));
  if (phase == "M") {
    std::string name;
    OXG_RETURN_IF_ERROR(RequiredString(object, "name", &name));
    if (name != "process_name") return line;
    const Json* args = Member(object, "args");
    if (args == nullptr || !args->is_object()) return Bad("process_name without \"args\"");
    OXG_RETURN_IF_ERROR(RequiredString(*args, "name", &line.process_name));
    if (const Json* pid = Member(object, "pid");
        pid != nullptr && pid->is_number_unsigned() && pid->get<uint64_t>() <= UINT32_MAX) {
      line.pid = static_cast<uint32_t>(pid->get<uint64_t>());
    }
    line.kind = ArchiveLine::Kind::kProcessName;
    return line;
  }
  if (phase != "X") return Bad(Cat("unsupported event phase \"", phase, "\""));
  OXG_RETURN_IF_ERROR(ParseSpanEvent(object, &line));
  line.kind = ArchiveLine::Kind::kSpan;
  return line;
}

ArchiveReader::ArchiveReader(ArchiveReadOptions options, WarningFn on_warning)
    : options_(options), on_warning_(std::move(on_warning)) {}

absl::Status ArchiveReader::Read(std::istream& in, std::string_view name, const SpanFn& on_span) {
  std::string text;
  uint64_t number = 0;
  while (std::getline(in, text)) {
    ++number;
    // getline stops at end of input too: then the line had no newline yet.
    const bool unterminated = in.eof();
    absl::StatusOr<ArchiveLine> line = ParseArchiveLine(text);
    if (!line.ok()) {
      const std::string where = Cat(name, ":", number, ": ", line.status().message());
      if (unterminated) {
        if (on_warning_) on_warning_(Cat(where, " (unfinished last line ignored)"));
        break;
      }
      if (!options_.skip_bad_lines) return absl::InvalidArgumentError(where);
      ++skipped_lines_;
      if (on_warning_) on_warning_(Cat(where, " (skipped)"));
      continue;
    }
    switch (line->kind) {
      case ArchiveLine::Kind::kSpan:
        if (on_span) on_span(std::move(line->span));
        break;
      case ArchiveLine::Kind::kProcessName:
        if (process_name_.empty()) process_name_ = std::move(line->process_name);
        break;
      case ArchiveLine::Kind::kNone:
        break;
    }
  }
  if (in.bad()) return absl::DataLossError(Cat(name, ":", number + 1, ": read error"));
  return absl::OkStatus();
}

absl::Status ArchiveReader::ReadFile(const std::string& path, const SpanFn& on_span) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(path, ": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int e = errno;
    return absl::Status(absl::ErrnoToStatusCode(e != 0 ? e : ENOENT),
                        Cat(path, ": ", std::strerror(e != 0 ? e : ENOENT)));
  }
  return Read(in, path, on_span);
}

std::vector<std::string> ArchiveFiles(const std::string& path, bool rotated) {
  std::vector<std::string> files;
  if (rotated) {
    struct stat st;
    for (int n = 1; n <= 1000; ++n) {
      std::string name = Cat(path, ".", n);
      if (::stat(name.c_str(), &st) != 0) break;
      files.push_back(std::move(name));
    }
    std::reverse(files.begin(), files.end());
  }
  files.push_back(path);
  return files;
}

std::string FormatDuration(int64_t nanos) {
  // The magnitude as unsigned, so even INT64_MIN has one.
  const uint64_t n = nanos < 0 ? 0 - static_cast<uint64_t>(nanos) : static_cast<uint64_t>(nanos);
  const std::string sign = nanos < 0 ? "-" : "";
  const auto three = [](uint64_t v) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%03u", static_cast<unsigned>(v % 1000));
    return std::string(buf);
  };
  if (n % 1000 != 0 && n < 1000000) return Cat(sign, n / 1000, ".", three(n), "us");
  const uint64_t us = n / 1000;
  if (us < 1000) return Cat(sign, us, "us");
  if (us < 1000000) return Cat(sign, us / 1000, ".", three(us), "ms");
  return Cat(sign, us / 1000000, ".", three(us / 1000), "s");
}

std::string FormatSpanLine(const SpanData& span) {
  std::string s = FormatTime(span.start_unix_nano);
  s.push_back(' ');
  s.append(FormatDuration(Minus(span.end_unix_nano, span.start_unix_nano)));
  s.push_back(' ');
  s.append(span.trace_id.ToHex());
  s.push_back(' ');
  s.append(span.span_id.ToHex());
  s.append(" parent=");
  s.append(span.parent_span_id.IsValid() ? span.parent_span_id.ToHex() : "-");
  s.push_back(' ');
  s.append(SpanKindName(span.kind));
  s.push_back(' ');
  s.append(StatusText(span));
  s.push_back(' ');
  AppendWord(s, span.name);
  for (const Attribute& a : span.attributes) {
    s.push_back(' ');
    AppendWord(s, a.key);
    s.push_back('=');
    AppendValue(s, a.value);
  }
  if (!span.events.empty()) s.append(Cat(" (", span.events.size(), " events)"));
  return s;
}

int TraceCat(const std::string& path, const TraceToolOptions& options, std::ostream& out,
             std::ostream& err) {
  ArchiveReader reader = MakeReader(options, "cat", err);
  return ReadAll(path, options, "cat", err, reader,
                 [&out](SpanData&& span) { out << FormatSpanLine(span) << "\n"; });
}

int TraceTree(std::string_view trace_id, const std::string& path, const TraceToolOptions& options,
              std::ostream& out, std::ostream& err) {
  TraceId wanted;
  if (trace_id.size() != 32 || !HexDecode(trace_id, wanted.bytes) || !wanted.IsValid()) {
    err << "0xgenctl trace tree: \"" << trace_id
        << "\" is not a trace id (32 hex digits, not all zero)\n";
    return 2;
  }
  std::vector<SpanData> spans;
  ArchiveReader reader = MakeReader(options, "tree", err);
  const int rc = ReadAll(path, options, "tree", err, reader, [&](SpanData&& span) {
    if (span.trace_id == wanted) spans.push_back(std::move(span));
  });
  if (rc != 0) return rc;
  if (spans.empty()) {
    err << "0xgenctl trace tree: trace " << wanted.ToHex() << " is not in " << path
        << (options.rotated ? " or its rotated files" : "") << "\n";
    return 1;
  }

  std::sort(spans.begin(), spans.end(), [](const SpanData& a, const SpanData& b) {
    if (a.start_unix_nano != b.start_unix_nano) return a.start_unix_nano < b.start_unix_nano;
    if (a.end_unix_nano != b.end_unix_nano) return a.end_unix_nano > b.end_unix_nano;
    return a.span_id.ToHex() < b.span_id.ToHex();
  });
  std::unordered_map<std::string, size_t> by_id;
  for (size_t i = 0; i < spans.size(); ++i) by_id.emplace(spans[i].span_id.ToHex(), i);
  std::vector<std::vector<size_t>> children(spans.size());
  std::vector<size_t> roots;
  for (size_t i = 0; i < spans.size(); ++i) {
    const auto parent = spans[i].parent_span_id.IsValid()
                            ? by_id.find(spans[i].parent_span_id.ToHex())
                            : by_id.end();
    if (parent != by_id.end() && parent->second != i) {
      children[parent->second].push_back(i);
    } else {
      roots.push_back(i);
    }
  }
  int64_t first = spans.front().start_unix_nano;
  int64_t last = first;
  for (const SpanData& s : spans) last = std::max(last, s.end_unix_nano);

  out << "trace " << wanted.ToHex() << ": " << spans.size() << " span"
      << (spans.size() == 1 ? "" : "s") << ", " << FormatTime(first) << ", "
      << FormatDuration(Minus(last, first)) << "\n";
  std::vector<bool> printed(spans.size(), false);
  // Iterative depth-first walk; the printed flags also end cycles in a hand-edited file.
  const auto walk = [&](size_t root) {
    std::vector<std::pair<size_t, size_t>> stack{{root, 0}};
    while (!stack.empty()) {
      const auto [i, depth] = stack.back();
      stack.pop_back();
      if (printed[i]) continue;
      printed[i] = true;
      const SpanData& s = spans[i];
      std::string line(2 * depth, ' ');
      AppendWord(line, s.name);
      line.append(Cat("  ", FormatDuration(Minus(s.end_unix_nano, s.start_unix_nano)), "  +",
                      FormatDuration(Minus(s.start_unix_nano, first)), "  ", SpanKindName(s.kind),
                      " ", StatusText(s), "  span=", s.span_id.ToHex()));
      if (depth == 0 && s.parent_span_id.IsValid()) {
        line.append(Cat("  (parent ", s.parent_span_id.ToHex(), " not in the archive)"));
      }
      out << line << "\n";
      for (auto c = children[i].rbegin(); c != children[i].rend(); ++c) {
        stack.emplace_back(*c, depth + 1);
      }
    }
  };
  for (size_t root : roots) walk(root);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (!printed[i]) walk(i);
  }
  return 0;
}

int TraceToOtlpJson(const std::string& path, const TraceToolOptions& options, std::ostream& out,
                    std::ostream& err) {
  std::vector<SpanData> spans;
  ArchiveReader reader = MakeReader(options, "to-otlp-json", err);
  const int rc = ReadAll(path, options, "to-otlp-json", err, reader,
                         [&spans](SpanData&& span) { spans.push_back(std::move(span)); });
  if (rc != 0) return rc;
  Resource resource;
  resource.attributes.push_back({"service.name", reader.process_name().empty()
                                                     ? std::string("unknown_service")
                                                     : reader.process_name()});
  out << EncodeOtlpJson(spans, resource, InstrumentationScope{}) << "\n";
  return 0;
}

}  // namespace oxg::tracing
