#pragma once

// Startup, steady state and shutdown of 0xgend: data dir, token, telemetry, listeners, then a
// wait for SIGINT/SIGTERM.

#include <string>

#include "common/status.h"
#include "daemon/config.h"

namespace oxg::daemon {

// Runs the daemon until SIGINT or SIGTERM and returns the process exit code: 0 after a clean
// shutdown, 1 on a runtime failure, 2 when the configuration cannot be honoured (data dir not
// writable, listener address in use, audit log cannot be opened).
//
// Call it from the main thread before any other thread exists: it blocks SIGINT and SIGTERM
// for the whole process so that only its sigwait() sees them, and it ignores SIGPIPE.
int Run(const Config& config);

// Creates `path` and missing parents (new directories get mode 0700) and checks that the
// daemon can write into it. Errors name the path.
absl::Status EnsureDataDir(const std::string& path);

enum class TokenSource { kFile, kGenerated };

// Reads <data_dir>/token (tightening its mode to 0600), or creates it with a new random token
// when it does not exist. An existing but empty file is an error rather than silently replaced,
// since plugins may already hold the old token.
absl::StatusOr<std::string> LoadOrCreateToken(const std::string& data_dir,
                                              TokenSource* source = nullptr);

}  // namespace oxg::daemon
