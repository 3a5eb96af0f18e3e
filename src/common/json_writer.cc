#include "common/json_writer.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>

namespace oxg {
namespace {

// Printable ASCII that needs no escaping. Everything else is a control character, a quote, a
// backslash or the start of a multi-byte UTF-8 sequence.
constexpr std::array<bool, 256> MakePlainTable() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[c] = true;
  t['"'] = false;
  t['\\'] = false;
  return t;
}
constexpr std::array<bool, 256> kPlain = MakePlainTable();

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Checks the UTF-8 sequence starting at s[i] (s[i] >= 0x80) against the well-formed byte
// sequences of Unicode Table 3-7, which excludes overlongs, surrogates and values above
// U+10FFFF. Returns the sequence length when valid. When invalid, returns 0 and sets `skip` to
// the length of the maximal ill-formed prefix, so each broken sequence becomes exactly one U+FFFD
// (the W3C/WHATWG substitution practice) and a valid byte after it is not swallowed.
size_t CheckUtf8(std::string_view s, size_t i, size_t& skip) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    skip = 1;  // continuation byte, C0/C1 overlong lead, or F5..FF
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      skip = k;  // truncated at end of input
      return 0;
    }
    const uint8_t b = byte(i + k);
    const bool ok = (k == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      skip = k;
      return 0;
    }
  }
  return len;
}

void AppendControlEscape(std::string& out, uint8_t c) {
  switch (c) {
    case '"':
      out.append("\\\"");
      return;
    case '\\':
      out.append("\\\\");
      return;
    case '\b':
      out.append("\\b");
      return;
    case '\f':
      out.append("\\f");
      return;
    case '\n':
      out.append("\\n");
      return;
    case '\r':
      out.append("\\r");
      return;
    case '\t':
      out.append("\\t");
      return;
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
      out.append(esc, sizeof(esc));
      return;
    }
  }
}

}  // namespace

namespace {

// True when none of the 8 bytes of `x` needs a look: no control byte, no '"', no '\\', no byte
// >= 0x80 (the classic "has a byte less than n / equal to zero" word tricks).
inline bool AllPlain(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  const uint64_t quote = x ^ (kOnes * '"');
  const uint64_t backslash = x ^ (kOnes * '\\');
  const uint64_t special = ((x - kOnes * 0x20) & ~x) | ((quote - kOnes) & ~quote) |
                           ((backslash - kOnes) & ~backslash) | x;
  return (special & kHigh) == 0;
}

}  // namespace

void AppendJsonEscaped(std::string& out, std::string_view s) {
  size_t run_start = 0;  // start of the pending run of bytes copied verbatim
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // Most text is plain ASCII: step over it a word at a time.
    while (i + 8 <= n) {
      uint64_t x;
      std::memcpy(&x, s.data() + i, 8);
      if (!AllPlain(x)) break;
      i += 8;
    }
    if (i >= n) break;
    const uint8_t c = static_cast<uint8_t>(s[i]);
    if (kPlain[c]) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      size_t skip = 0;
      const size_t len = CheckUtf8(s, i, skip);
      if (len != 0) {
        i += len;  // valid multi-byte character: stays in the verbatim run
        continue;
      }
      out.append(s.data() + run_start, i - run_start);
      out.append(kReplacement);
      i += skip;
      run_start = i;
      continue;
    }
    out.append(s.data() + run_start, i - run_start);
    AppendControlEscape(out, c);
    ++i;
    run_start = i;
  }
  out.append(s.data() + run_start, n - run_start);
}

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ == 0) return;
  const uint64_t bit = uint64_t{1} << (depth_ - 1);
  if (has_element_ & bit) out_.push_back(',');
  has_element_ |= bit;
}

bool JsonWriter::Skipping() const { return skipped_depth_ > 0; }

JsonWriter& JsonWriter::BeginObject() { return Begin('{'); }
JsonWriter& JsonWriter::BeginArray() { return Begin('['); }
JsonWriter& JsonWriter::EndObject() { return End('}'); }
JsonWriter& JsonWriter::EndArray() { return End(']'); }

JsonWriter& JsonWriter::Begin(char open) {
  if (Skipping() || depth_ == kMaxDepth) {
    // Too deep for the bitmask: the container becomes null and everything in it is dropped, so
    // the output stays valid JSON instead of getting wrong commas.
    if (!Skipping()) Null();
    ++skipped_depth_;
    return *this;
  }
  Separate();
  out_.push_back(open);
  ++depth_;
  has_element_ &= ~(uint64_t{1} << (depth_ - 1));
  return *this;
}

JsonWriter& JsonWriter::End(char close) {
  if (Skipping()) {
    --skipped_depth_;
    return *this;
  }
  if (depth_ == 0) return *this;  // unpaired End: ignore rather than corrupt the output
  has_element_ &= ~(uint64_t{1} << (depth_ - 1));
  --depth_;
  after_key_ = false;
  out_.push_back(close);
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  if (Skipping()) return *this;
  Separate();
  out_.push_back('"');
  AppendJsonEscaped(out_, key);
  out_.append("\":");
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view v) {
  if (Skipping()) return *this;
  Separate();
  out_.push_back('"');
  AppendJsonEscaped(out_, v);
  out_.push_back('"');
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t v) {
  if (Skipping()) return *this;
  Separate();
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::Uint(uint64_t v) {
  if (Skipping()) return *this;
  Separate();
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::Double(double v) {
  if (Skipping()) return *this;
  if (!std::isfinite(v)) return Null();
  Separate();
  // Shortest text that parses back to the same double; always a valid JSON number.
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::Bool(bool v) {
  if (Skipping()) return *this;
  Separate();
  out_.append(v ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::Null() {
  if (Skipping()) return *this;
  Separate();
  out_.append("null");
  return *this;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  if (Skipping()) return *this;
  Separate();
  out_.append(json);
  return *this;
}

}  // namespace oxg
