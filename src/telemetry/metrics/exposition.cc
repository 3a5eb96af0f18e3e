// Rendering of the registry in Prometheus text 0.0.4 and OpenMetrics 1.0.
//
// The two formats differ in a few places that clients check strictly:
//  - OpenMetrics names a counter family without `_total` in TYPE/HELP/UNIT; its samples keep it.
//  - OpenMetrics has `# UNIT`, exemplars (counters' `_total` and histograms' `_bucket` only),
//    escapes `"` in HELP, and ends with `# EOF`.
//  - Text 0.0.4 never carries exemplars.

#include <charconv>
#include <cmath>
#include <cstring>

#include "common/utf8.h"
#include "telemetry/metrics/internal/exemplar_slot.h"
#include "telemetry/metrics/internal/render.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::metrics {
namespace internal {
namespace {

constexpr std::string_view kLegacyFrom = "oxg_";
constexpr std::string_view kLegacyTo = "glyph_";

// Escapes with \\ and \n, plus \" when `quote` is set; invalid UTF-8 becomes U+FFFD.
void AppendEscaped(std::string& out, std::string_view s, bool quote) {
  size_t run = 0;  // start of the pending run of bytes copied verbatim
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    const char* rep = nullptr;
    if (c == '\\')
      rep = "\\\\";
    else if (c == '\n')
      rep = "\\n";
    else if (c == '"' && quote)
      rep = "\\\"";
    if (rep != nullptr) {
      out.append(s.data() + run, i - run);
      out.append(rep);
      run = ++i;
      continue;
    }
    if (static_cast<uint8_t>(c) < 0x80) {
      ++i;
      continue;
    }
    const size_t len = utf8::SequenceLength(s, i);
    if (len == 0) {
      out.append(s.data() + run, i - run);
      out.append("\xEF\xBF\xBD");
      run = ++i;
    } else {
      i += len;
    }
  }
  out.append(s.data() + run, s.size() - run);
}

std::string_view TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// The unit OpenMetrics announces for a family whose name ends in one.
std::string_view UnitOf(std::string_view om_name) {
  for (std::string_view unit : {"seconds", "bytes", "ratio"}) {
    if (om_name.size() > unit.size() + 1 && om_name.ends_with(unit) &&
        om_name[om_name.size() - unit.size() - 1] == '_') {
      return unit;
    }
  }
  return {};
}

void AppendSampleName(std::string& out, std::string_view name, std::string_view suffix,
                      std::string_view labels) {
  out.append(name);
  out.append(suffix);
  if (!labels.empty()) {
    out.push_back('{');
    out.append(labels);
    out.push_back('}');
  }
}

void AppendTimestamp(std::string& out, int64_t ts_nanos) {
  const int64_t secs = ts_nanos / 1000000000;
  int64_t frac = ts_nanos % 1000000000;
  AppendUint(out, static_cast<uint64_t>(secs));
  if (frac == 0) return;
  char digits[9];
  for (int i = 8; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  int len = 9;
  while (len > 1 && digits[len - 1] == '0') --len;
  out.push_back('.');
  out.append(digits, static_cast<size_t>(len));
}

}  // namespace

void AppendEscapedLabelValue(std::string& out, std::string_view value) {
  AppendEscaped(out, value, /*quote=*/true);
}

void AppendUint(std::string& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void AppendDouble(std::string& out, double v) {
  if (std::isnan(v)) {
    out.append("NaN");
    return;
  }
  if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  // The shortest round-trip digits, laid out the way Go's %g does it (plain notation for
  // decimal exponents in [-4, 21), scientific with a two-digit exponent otherwise), which is
  // what Prometheus tooling prints and what OpenMetrics' canonical numbers are built from.
  char sci[32];
  const auto r = std::to_chars(sci, sci + sizeof sci, v, std::chars_format::scientific);
  std::string_view text(sci, static_cast<size_t>(r.ptr - sci));
  if (text.front() == '-') {
    out.push_back('-');
    text.remove_prefix(1);
  }
  const size_t e = text.find('e');
  std::string digits;
  digits.push_back(text[0]);
  if (e > 1) digits.append(text.substr(2, e - 2));  // skip the '.'
  int exp = 0;
  std::from_chars(text.data() + e + (text[e + 1] == '+' ? 2 : 1), text.data() + text.size(), exp);
  if (exp < -4 || exp >= 21) {
    out.push_back(digits[0]);
    if (digits.size() > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    out.push_back('e');
    out.push_back(exp < 0 ? '-' : '+');
    const int mag = exp < 0 ? -exp : exp;
    if (mag < 10) out.push_back('0');
    AppendUint(out, static_cast<uint64_t>(mag));
  } else if (exp < 0) {
    out.append("0.");
    out.append(static_cast<size_t>(-exp - 1), '0');
    out.append(digits);
  } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
    out.append(digits);
    out.append(static_cast<size_t>(exp) + 1 - digits.size(), '0');
  } else {
    out.append(digits, 0, static_cast<size_t>(exp) + 1);
    out.push_back('.');
    out.append(digits, static_cast<size_t>(exp) + 1);
  }
}

void AppendCanonicalDouble(std::string& out, double v) {
  const size_t start = out.size();
  AppendDouble(out, v);
  if (std::isfinite(v) && out.find_first_of(".e", start) == std::string::npos) {
    out.append(".0");
  }
}

void AppendExemplar(std::string& out, const ExemplarData& ex) {
  out.append(" # {");
  if (ex.kind == ExemplarData::Kind::kSpan) {
    char hex[32];
    out.append("trace_id=\"");
    ex.span.trace_id.WriteHex(hex);
    out.append(hex, 32);
    out.append("\",span_id=\"");
    ex.span.span_id.WriteHex(hex);
    out.append(hex, 16);
    out.push_back('"');
  } else {
    std::string_view text(ex.text, ex.len);
    bool first = true;
    while (!text.empty()) {
      const size_t name_end = text.find('\0');
      const size_t value_end = text.find('\0', name_end + 1);
      if (!first) out.push_back(',');
      first = false;
      out.append(text.substr(0, name_end));
      out.append("=\"");
      AppendEscapedLabelValue(out, text.substr(name_end + 1, value_end - name_end - 1));
      out.push_back('"');
      text.remove_prefix(value_end + 1);
    }
  }
  out.append("} ");
  AppendDouble(out, ex.value);
  out.push_back(' ');
  AppendTimestamp(out, ex.ts_nanos);
}

void RenderCallbackSample(std::string& out, std::string_view name, MetricType, double v) {
  out.append(name);
  out.push_back(' ');
  AppendDouble(out, v);
  out.push_back('\n');
}

std::string FamilyBase::RenderLabels(std::span<const std::string_view> values) const {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append(shape_.label_names[i]);
    out.append("=\"");
    AppendEscapedLabelValue(out, values[i]);
    out.push_back('"');
  }
  return out;
}

void FamilyBase::Render(std::string& out, bool om, std::string_view alias) const {
  const std::string_view name = alias.empty() ? std::string_view(shape_.name) : alias;
  std::string_view family_name = name;
  if (om && shape_.type == MetricType::kCounter) family_name.remove_suffix(6);  // "_total"

  std::string help;
  if (!alias.empty()) help = "(DEPRECATED: use " + shape_.name + ") ";
  help.append(shape_.help);

  if (om) {
    out.append("# TYPE ").append(family_name).push_back(' ');
    out.append(TypeName(shape_.type)).push_back('\n');
    if (std::string_view unit = UnitOf(family_name); !unit.empty()) {
      out.append("# UNIT ").append(family_name).push_back(' ');
      out.append(unit).push_back('\n');
    }
    out.append("# HELP ").append(family_name).push_back(' ');
    AppendEscaped(out, help, /*quote=*/true);
    out.push_back('\n');
  } else {
    out.append("# HELP ").append(name).push_back(' ');
    AppendEscaped(out, help, /*quote=*/false);
    out.push_back('\n');
    out.append("# TYPE ").append(name).push_back(' ');
    out.append(TypeName(shape_.type)).push_back('\n');
  }
  for (const auto& entry : SnapshotEntries()) RenderSeries(out, name, *entry, om);
}

}  // namespace internal

void Counter::Render(std::string& out, std::string_view name, std::string_view labels,
                     bool om) const {
  internal::AppendSampleName(out, name, "", labels);
  out.push_back(' ');
  internal::AppendUint(out, Value());
  internal::ExemplarData ex;
  if (om && exemplar_.Read(&ex)) internal::AppendExemplar(out, ex);
  out.push_back('\n');
}

void Gauge::Render(std::string& out, std::string_view name, std::string_view labels, bool) const {
  internal::AppendSampleName(out, name, "", labels);
  out.push_back(' ');
  internal::AppendDouble(out, Value());
  out.push_back('\n');
}

void Histogram::Render(std::string& out, std::string_view name, std::string_view labels,
                       bool om) const {
  const Snapshot snap = Collect();
  const std::vector<double>& bounds = shape_->bounds;
  std::string bucket_labels(labels);
  if (!bucket_labels.empty()) bucket_labels.push_back(',');
  bucket_labels.append("le=\"");
  const size_t prefix = bucket_labels.size();
  internal::ExemplarData ex;
  for (size_t b = 0; b <= bounds.size(); ++b) {
    bucket_labels.resize(prefix);
    if (b < bounds.size()) {
      internal::AppendCanonicalDouble(bucket_labels, bounds[b]);
    } else {
      bucket_labels.append("+Inf");
    }
    bucket_labels.push_back('"');
    internal::AppendSampleName(out, name, "_bucket", bucket_labels);
    out.push_back(' ');
    internal::AppendUint(out, snap.cumulative[b]);
    if (om && exemplars_ && exemplars_[b].Read(&ex)) internal::AppendExemplar(out, ex);
    out.push_back('\n');
  }
  internal::AppendSampleName(out, name, "_count", labels);
  out.push_back(' ');
  internal::AppendUint(out, snap.count);
  out.push_back('\n');
  internal::AppendSampleName(out, name, "_sum", labels);
  out.push_back(' ');
  internal::AppendDouble(out, snap.sum);
  out.push_back('\n');
}

void Registry::Write(const ExpositionOptions& options, std::string& out) const {
  std::vector<const internal::FamilyBase*> families;
  {
    std::lock_guard lock(mu_);
    families.reserve(families_.size());
    for (const auto& f : families_) families.push_back(f.get());
  }
  const bool om = options.format == Format::kOpenMetrics100;
  std::string alias;
  for (const internal::FamilyBase* f : families) {
    f->Render(out, om, {});
    const std::string& name = f->shape().name;
    if (options.legacy_aliases && name.starts_with(internal::kLegacyFrom)) {
      alias.assign(internal::kLegacyTo);
      alias.append(name, internal::kLegacyFrom.size());
      f->Render(out, om, alias);
    }
  }
  if (om) out.append("# EOF\n");
}

}  // namespace oxg::metrics
