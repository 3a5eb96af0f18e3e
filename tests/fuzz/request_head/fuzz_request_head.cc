// Fuzzes the HTTP/1.x head parsers and the chunked decoder: the bytes every client and upstream
// controls. Any input must give kComplete, kIncomplete or a 400/431/505 error, never a view
// outside the buffer; a complete head must end in an empty line and be recognised the same way
// from any buffer that holds it; the chunked decoder must hand out exactly payload_bytes() bytes
// and decode the same whatever the read boundaries are.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/http/http_head.h"

namespace {

using namespace oxg::proxy::http;  // NOLINT: a fuzz entry point, names are unambiguous

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckInside(std::string_view buf, std::string_view v) {
  if (v.empty()) return;
  Check(v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

void CheckError(const ParseError& e) {
  Check(e.status == 400 || e.status == 431 || e.status == 505);
  Check(!e.reason.empty());
}

bool EndsWithEmptyLine(std::string_view head) {
  return head.ends_with("\n\n") || head.ends_with("\n\r\n");
}

// Returns the head size on kComplete, 0 otherwise.
size_t FuzzRequest(std::string_view in, const Limits& limits) {
  RequestHead h;
  ParseError e;
  const ParseStatus s = ParseRequestHead(in, limits, &h, &e);
  if (s == ParseStatus::kError) {
    CheckError(e);
    return 0;
  }
  if (s == ParseStatus::kIncomplete) {
    Check(in.size() < limits.max_head_bytes);
    return 0;
  }
  Check(h.head_size > 0 && h.head_size <= in.size() && h.head_size <= limits.max_head_bytes);
  const std::string_view head = in.substr(0, h.head_size);
  Check(EndsWithEmptyLine(head));
  Check(h.headers.size() <= limits.max_headers);
  for (std::string_view v :
       {h.method, h.target, h.version, h.scheme, h.host, h.origin, h.host_header}) {
    CheckInside(head, v);
  }
  for (const Header& x : h.headers) {
    Check(!x.name.empty());
    CheckInside(head, x.name);
    CheckInside(head, x.value);
  }
  Check(!h.method.empty() && !h.target.empty() && h.version.size() == 8);
  Check(h.version_minor == 0 || h.version_minor == 1);
  switch (h.form) {
    case RequestHead::TargetForm::kOrigin:
      Check(h.origin == h.target && h.target[0] == '/' && h.host.empty());
      break;
    case RequestHead::TargetForm::kAbsolute:
      Check(!h.scheme.empty() && !h.host.empty() && !h.origin.empty() && h.origin[0] == '/');
      break;
    case RequestHead::TargetForm::kAuthority:
      Check(h.method == "CONNECT" && !h.host.empty() && h.port != 0);
      break;
    case RequestHead::TargetForm::kAsterisk:
      Check(h.method == "OPTIONS" && h.target == "*");
      break;
  }
  Check(h.body != BodyKind::kUntilClose);
  if (h.body != BodyKind::kLength) Check(h.content_length == 0);
  Check(h.content_length < 1000000000000000000ULL);
  if (h.body == BodyKind::kChunked) Check(h.version_minor == 1);

  // The same head alone, and every way of cutting it short, must read the same / incomplete.
  RequestHead again;
  Check(ParseRequestHead(head, limits, &again, &e) == ParseStatus::kComplete);
  Check(again.head_size == h.head_size && again.headers.size() == h.headers.size() &&
        again.body == h.body && again.content_length == h.content_length &&
        again.keep_alive == h.keep_alive);
  for (size_t cut : {h.head_size - 1, h.head_size / 2, h.head_size / 3}) {
    Check(ParseRequestHead(head.substr(0, cut), limits, &again, &e) == ParseStatus::kIncomplete);
  }
  return h.head_size;
}

size_t FuzzResponse(std::string_view in, std::string_view method, const Limits& limits) {
  ResponseHead h;
  ParseError e;
  const ParseStatus s = ParseResponseHead(in, method, limits, &h, &e);
  if (s == ParseStatus::kError) {
    CheckError(e);
    return 0;
  }
  if (s == ParseStatus::kIncomplete) {
    Check(in.size() < limits.max_head_bytes);
    return 0;
  }
  Check(h.head_size > 0 && h.head_size <= in.size() && h.head_size <= limits.max_head_bytes);
  const std::string_view head = in.substr(0, h.head_size);
  Check(EndsWithEmptyLine(head));
  Check(h.status >= 100 && h.status <= 999);
  CheckInside(head, h.version);
  CheckInside(head, h.reason);
  Check(h.headers.size() <= limits.max_headers);
  for (const Header& x : h.headers) {
    CheckInside(head, x.name);
    CheckInside(head, x.value);
  }
  if (h.body == BodyKind::kUntilClose) Check(!h.keep_alive);
  if (method == "HEAD" || h.status < 200 || h.status == 204 || h.status == 304) {
    Check(h.body == BodyKind::kNone);
  }
  ResponseHead again;
  for (size_t cut : {h.head_size - 1, h.head_size / 2}) {
    Check(ParseResponseHead(head.substr(0, cut), method, limits, &again, &e) ==
          ParseStatus::kIncomplete);
  }
  return h.head_size;
}

struct ChunkRun {
  ChunkedDecoder::Result result = ChunkedDecoder::Result::kNeedMore;
  size_t consumed = 0;
  uint64_t payload = 0;
  uint64_t payload_hash = 0;
  std::string error;
};

// Feeds `in` in pieces of `step` bytes (0: all at once).
ChunkRun Decode(std::string_view in, size_t step, ChunkedDecoder::Limits limits) {
  ChunkedDecoder d(limits);
  ChunkRun run;
  size_t pos = 0;
  do {
    const std::string_view piece = step == 0 ? in.substr(pos) : in.substr(pos, step);
    size_t consumed = 0;
    run.result = d.Feed(piece, &consumed, [&](std::string_view data) {
      CheckInside(piece, data);
      Check(!data.empty());
      run.payload += data.size();
      for (const char c : data) run.payload_hash = run.payload_hash * 131 + uint8_t(c);
    });
    Check(consumed <= piece.size());
    if (run.result == ChunkedDecoder::Result::kNeedMore) Check(consumed == piece.size());
    run.consumed += consumed;
    pos += piece.size();
  } while (run.result == ChunkedDecoder::Result::kNeedMore && pos < in.size());
  Check(run.payload == d.payload_bytes());
  Check(d.done() == (run.result == ChunkedDecoder::Result::kDone));
  if (run.result == ChunkedDecoder::Result::kError) Check(!d.error().empty());
  if (run.result == ChunkedDecoder::Result::kDone) {
    Check(in.substr(0, run.consumed).ends_with("\r\n\r\n"));
  }
  run.error = std::string(d.error());
  return run;
}

void FuzzChunked(std::string_view in) {
  ChunkedDecoder::Limits limits;
  limits.max_line_bytes = 64;
  limits.max_trailer_bytes = 128;
  const ChunkRun one = Decode(in, 0, limits);
  for (size_t step : {size_t{1}, size_t{7}}) {
    const ChunkRun split = Decode(in, step, limits);
    Check(split.result == one.result && split.payload == one.payload &&
          split.payload_hash == one.payload_hash && split.error == one.error);
    if (one.result != ChunkedDecoder::Result::kNeedMore) Check(split.consumed == one.consumed);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  Limits small;
  small.max_head_bytes = 512;
  small.max_headers = 8;
  const size_t head = FuzzRequest(in, small);
  FuzzRequest(in, Limits());
  FuzzResponse(in, size > 0 && (data[0] & 1) ? "HEAD" : "GET", small);
  FuzzResponse(in, "CONNECT", Limits());
  FuzzChunked(in.substr(head));
  return 0;
}
