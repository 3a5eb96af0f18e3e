#pragma once

// Secret redaction shared by logs, audit, flows' sanitized variant, traces and crash bundles.
// Patterns are RE2 (linear time on untrusted input). A Redactor is immutable after
// construction except for AddLiteral, and is safe to use from many threads.

#include <memory>
#include <shared_mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace oxg {

inline constexpr std::string_view kRedacted = "[REDACTED]";

// Appends a Cookie or Set-Cookie header value with the cookie values replaced by [REDACTED]
// (for Set-Cookie only the first pair's: the rest are attributes), names and attributes kept.
// Returns how many values were replaced.
size_t AppendRedactedCookies(std::string& out, std::string_view value, bool first_only);

class Redactor {
 public:
  // Built with the project's default secret patterns (bearer and basic credentials, API-key
  // and token assignments, JWTs, cloud and VCS access keys, private key blocks, passwords in
  // URLs).
  Redactor();
  ~Redactor();

  // The process-wide instance used by the log, audit and telemetry paths.
  static Redactor& Default();

  // Registers an exact secret (e.g. the daemon's token) that is replaced wherever it appears.
  // Literals shorter than 8 bytes are ignored to avoid redacting common words.
  void AddLiteral(std::string_view secret);

  // Returns `text` with every secret replaced by [REDACTED]; the part of a match that names
  // the secret (e.g. "Authorization: Bearer ", "password=") is kept.
  std::string Redact(std::string_view text) const;
  // The same, for hot paths where most texts hold no secret: returns nullopt, having copied
  // nothing, when Redact(text) would return `text` unchanged.
  std::optional<std::string> RedactIfNeeded(std::string_view text) const;

  // True when a key (header name, metadata key, JSON field) names a secret by itself, e.g.
  // "authorization", "cookie", "x-api-key", "password", "client_secret"; case-insensitive.
  static bool IsSecretKey(std::string_view key);

 private:
  std::vector<std::unique_ptr<re2::RE2>> patterns_;
  mutable std::shared_mutex literals_mu_;
  std::vector<std::string> literals_;
};

}  // namespace oxg
