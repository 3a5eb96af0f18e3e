#pragma once

// A small, allocation-light JSON writer for hot and warm paths (audit lines, flow records,
// span archives). It appends to a caller-owned std::string; cold paths may use nlohmann::json.
//
// Strings are escaped per RFC 8259; invalid UTF-8 is replaced by U+FFFD so the output is always
// valid UTF-8 JSON. The writer tracks commas; callers pair Begin/End calls. Not thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

namespace oxg {

// Appends `s` escaped (without surrounding quotes) to `out`.
void AppendJsonEscaped(std::string& out, std::string_view s);

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // Object key; the next call writes its value.
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  // Non-finite doubles are written as null (JSON has no NaN/Inf).
  JsonWriter& Double(double v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // Inserts already-serialized JSON as one value.
  JsonWriter& Raw(std::string_view json);

  // Nesting deeper than this is written as null (with its contents dropped) so the output
  // stays valid JSON.
  static constexpr int kMaxDepth = 64;

 private:
  void Separate();
  JsonWriter& Begin(char open);
  JsonWriter& End(char close);
  bool Skipping() const;
  std::string& out_;
  // One bit per nesting level: whether the current container already holds an element.
  uint64_t has_element_ = 0;
  int depth_ = 0;
  // Levels opened beyond kMaxDepth, whose contents are dropped.
  int skipped_depth_ = 0;
  bool after_key_ = false;
};

}  // namespace oxg
