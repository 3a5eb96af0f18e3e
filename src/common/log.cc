#include "common/log.h"

#include <errno.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "common/clock.h"
#include "common/redact.h"

namespace oxg::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_fd{STDERR_FILENO};

// Padded to five so messages line up.
std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "DEBUG";
    case Level::kInfo:
      return "INFO ";
    case Level::kWarn:
      return "WARN ";
    case Level::kError:
      return "ERROR";
  }
  return "?????";
}

void AppendTimestamp(std::string& out, Clock::WallTime now) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(now.time_since_epoch());
  const auto day = floor<days>(ms);
  const year_month_day ymd{sys_days(day)};
  const hh_mm_ss<milliseconds> tod(ms - day);
  char buf[32];
  const int n = std::snprintf(
      buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(ymd.year()),
      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
      static_cast<int>(tod.hours().count()), static_cast<int>(tod.minutes().count()),
      static_cast<int>(tod.seconds().count()), static_cast<int>(tod.subseconds().count()));
  if (n > 0) out.append(buf, static_cast<size_t>(n));
}

// One message must stay one line, and text from the network must not be able to forge extra
// lines or send escape sequences to a terminal.
void AppendOneLine(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t run = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != 0x7f) continue;
    if (c == '\t') continue;
    out.append(text.substr(run, i - run));
    if (c == '\n') {
      out.append("\\n");
    } else if (c == '\r') {
      out.append("\\r");
    } else {
      const char esc[4] = {'\\', 'x', kHex[c >> 4], kHex[c & 0xf]};
      out.append(esc, sizeof(esc));
    }
    run = i + 1;
  }
  out.append(text.substr(run));
}

void WriteAll(int fd, std::string_view line) {
  while (!line.empty()) {
    const ssize_t n = ::write(fd, line.data(), line.size());
    if (n > 0) {
      line.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return;  // nowhere left to report a logging failure; dropping the line is the only option
    }
  }
}

}  // namespace

bool ParseLevel(std::string_view text, Level* out) {
  std::string lower(text);
  absl::AsciiStrToLower(&lower);
  Level level;
  if (lower == "debug") {
    level = Level::kDebug;
  } else if (lower == "info") {
    level = Level::kInfo;
  } else if (lower == "warn" || lower == "warning") {
    level = Level::kWarn;
  } else if (lower == "error") {
    level = Level::kError;
  } else {
    return false;
  }
  if (out != nullptr) *out = level;
  return true;
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool Enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void SetFdForTesting(int fd) { g_fd.store(fd < 0 ? STDERR_FILENO : fd, std::memory_order_relaxed); }

void Write(Level level, std::string_view component, std::string_view message) {
  if (!Enabled(level)) return;
  const std::string redacted = Redactor::Default().Redact(message);
  std::string line;
  line.reserve(48 + component.size() + redacted.size());
  AppendTimestamp(line, Clock::Real().Now());
  line.push_back(' ');
  line.append(LevelName(level));
  line.append(" [");
  AppendOneLine(line, component);
  line.append("] ");
  AppendOneLine(line, redacted);
  line.push_back('\n');
  // A single write keeps lines from concurrent threads whole (atomic for pipes up to PIPE_BUF).
  WriteAll(g_fd.load(std::memory_order_relaxed), line);
}

}  // namespace oxg::log
