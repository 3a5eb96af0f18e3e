#pragma once

// The operational (human) log: one line per message on stderr,
//   2026-11-21T05:07:16.123Z INFO  [component] message
// Every message passes through Redactor::Default() before it is written. Lines are written
// with one write(2) each so concurrent threads never interleave. Thread-safe.

#include <string_view>

namespace oxg::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Accepts debug, info, warn (or warning), error; case-insensitive.
bool ParseLevel(std::string_view text, Level* out);
void SetLevel(Level level);
bool Enabled(Level level);

// Redirects output (tests); -1 restores stderr.
void SetFdForTesting(int fd);

void Write(Level level, std::string_view component, std::string_view message);
inline void Debug(std::string_view c, std::string_view m) { Write(Level::kDebug, c, m); }
inline void Info(std::string_view c, std::string_view m) { Write(Level::kInfo, c, m); }
inline void Warn(std::string_view c, std::string_view m) { Write(Level::kWarn, c, m); }
inline void Error(std::string_view c, std::string_view m) { Write(Level::kError, c, m); }

}  // namespace oxg::log
