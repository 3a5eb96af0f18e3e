#include "plugins/internal/output_limiter.h"

#include <algorithm>

#include "common/strings.h"

namespace oxg::plugins::internal {
namespace {

// The longest prefix of `s` that does not end inside a UTF-8 sequence.
size_t Utf8SafePrefix(std::string_view s) {
  size_t lead = s.size();
  // Walk back over at most three continuation bytes to the byte that starts the last sequence.
  for (int i = 0; i < 4 && lead > 0; ++i) {
    --lead;
    const unsigned char c = static_cast<unsigned char>(s[lead]);
    if ((c & 0xC0) != 0x80) {
      size_t need = 1;
      if (c >= 0xF0) {
        need = 4;
      } else if (c >= 0xE0) {
        need = 3;
      } else if (c >= 0xC0) {
        need = 2;
      }
      return s.size() - lead >= need ? s.size() : lead;
    }
  }
  return s.size();  // not UTF-8 at all: cut anywhere
}

std::string_view WithoutCr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace

void LineSplitter::EmitCut(const Emit& emit) {
  std::string line = pending_.substr(0, Utf8SafePrefix(pending_));
  line.append(kCutMark);
  emit(line);
  pending_.clear();
  discarding_ = true;
}

void LineSplitter::Feed(std::string_view data, const Emit& emit) {
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    const std::string_view chunk = data.substr(0, nl);
    if (discarding_) {
      if (nl == std::string_view::npos) return;
      discarding_ = false;
      data.remove_prefix(nl + 1);
      continue;
    }
    if (nl != std::string_view::npos && pending_.size() + chunk.size() <= max_line_) {
      if (pending_.empty()) {
        emit(WithoutCr(chunk));
      } else {
        pending_.append(chunk);
        emit(WithoutCr(pending_));
        pending_.clear();
      }
      data.remove_prefix(nl + 1);
      continue;
    }
    // Either no newline in `data` or the line is too long: keep what fits.
    const size_t room = max_line_ - pending_.size();
    if (nl == std::string_view::npos && chunk.size() <= room) {
      pending_.append(chunk);  // no newline yet; wait for more
      return;
    }
    pending_.append(chunk.substr(0, room));
    EmitCut(emit);
    data.remove_prefix(room);
  }
}

void LineSplitter::Finish(const Emit& emit) {
  if (!pending_.empty()) emit(WithoutCr(pending_));
  pending_.clear();
  discarding_ = false;
}

bool LineRateLimiter::Admit(TimePoint now) {
  if (now > last_) {
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed * per_second_);
    last_ = now;
  }
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  ++dropped_;
  ++total_dropped_;
  return false;
}

std::string DroppedSummary(uint64_t n) {
  return Cat("(", n, n == 1 ? " line" : " lines", " dropped: the plugin writes too fast)");
}

}  // namespace oxg::plugins::internal
