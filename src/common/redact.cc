#include "common/redact.h"

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "absl/strings/ascii.h"

namespace oxg {
namespace {

// How the capture groups of a pattern are turned into output. In every pattern, text outside
// the capture groups is kept; that is how "Authorization: Bearer " or "password=" survive.
enum class Kind {
  kSecretGroup,  // whichever capture group participated is the secret
  kCookie,       // group 1 is a Cookie header value: every cookie value is a secret
  kSetCookie,    // group 1 is a Set-Cookie value: only the first name=value pair is secret
};

struct PatternSpec {
  Kind kind;
  const char* regex;
};

// Key names that announce a secret in key=value, key: value and "key": "value" forms. Any
// identifier characters may precede the core word (access_token, X-Auth-Token, dbPassword),
// but nothing may follow it, so "author=", "tokens: 5" and "max_tokens=" stay readable.
#define OXG_SECRET_KEY                                                                   \
  "[A-Za-z0-9_.-]*(?i:password|passwd|pwd|passphrase|secret|token|api[_-]?key|"          \
  "access[_-]?key|secret[_-]?key|private[_-]?key|client[_-]?secret|auth|session[_-]?id|" \
  "sessid)"

// A quoted JSON/string value, allowing escaped quotes inside.
#define OXG_QUOTED_BODY "((?:[^\"\\\\\\r\\n]|\\\\.)+)"

// The order matters where patterns overlap: earlier ones redact first, and their output
// ("[REDACTED]") matches nothing later.
constexpr std::array<PatternSpec, 12> kPatterns = {{
    // PEM private keys: keep the armour lines, drop the body (to the end when truncated).
    {Kind::kSecretGroup,
     "-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----((?s:.*?))(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\\z)"},
    // Authorization / Proxy-Authorization: a leading word followed by a space is the scheme
    // (Bearer, Basic, Digest, AWS4-HMAC-SHA256, ...) and is kept. Unquoted values run to the
    // end of the line because Digest and AWS credentials contain spaces, commas and quotes.
    {Kind::kSecretGroup,
     "(?i:(?:proxy-)?authorization)[\"']?[ \\t]*[:=][ \\t]*"
     "(?:\"(?:[A-Za-z][A-Za-z0-9._~+/-]*[ \\t]+)?" OXG_QUOTED_BODY
     "\"|(?:[A-Za-z][A-Za-z0-9._~+/-]*[ \\t]+)?(\\S(?:[^\\r\\n]*\\S)?))"},
    // Set-Cookie before Cookie; the Cookie pattern refuses a preceding '-' so it does not
    // match inside "Set-Cookie".
    {Kind::kSetCookie, "(?i:\\bset-cookie)[ \\t]*:[ \\t]*([^\\r\\n]+)"},
    {Kind::kCookie, "(?:^|[^A-Za-z0-9_-])(?i:cookie)[ \\t]*:[ \\t]*([^\\r\\n]+)"},
    // key=value, key: value, "key": "value", key='value'. An already redacted value matches
    // without a capture group, which leaves it alone (so redacting twice changes nothing).
    // An unquoted value runs to whitespace or '&' (the form-field separator): passwords may
    // hold ',', ';' or quotes, and hiding a little too much beats leaking a secret's tail.
    {Kind::kSecretGroup, OXG_SECRET_KEY "[\"']?[ \\t]*[:=][ \\t]*(?:\"" OXG_QUOTED_BODY
                                        "\"|'([^'\\r\\n]+)'|(?:(?i:bearer|basic|token)[ \\t]+)?"
                                        "(?:\\[REDACTED\\]|([^\\s&\"'][^\\s&]*)))"},
    // Passwords in URLs: scheme://user:PASS@host.
    {Kind::kSecretGroup, "\\b[A-Za-z][A-Za-z0-9+.-]*://[^/\\s:@]*:([^/\\s@]+)@"},
    // JWTs: base64url header and payload both start with '{"' (eyJ); the signature may be
    // empty (alg none).
    {Kind::kSecretGroup, "\\b(eyJ[A-Za-z0-9_-]{4,}\\.eyJ[A-Za-z0-9_-]{4,}\\.[A-Za-z0-9_-]*)"},
    // AWS access key ids (long-term and temporary).
    {Kind::kSecretGroup, "\\b((?:AKIA|ASIA)[A-Z0-9]{16})\\b"},
    // GitHub tokens.
    {Kind::kSecretGroup,
     "\\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})"},
    // Slack tokens.
    {Kind::kSecretGroup, "\\b((?:xox[abprs]|xapp)-[A-Za-z0-9-]{10,})"},
    // Stripe-style secret and restricted keys.
    {Kind::kSecretGroup, "\\b((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,})"},
    // Google API keys, common in captured browser traffic.
    {Kind::kSecretGroup, "\\b(AIza[0-9A-Za-z_-]{35})\\b"},
}};

#undef OXG_SECRET_KEY
#undef OXG_QUOTED_BODY

constexpr size_t kMaxGroups = 4;

re2::RE2::Options PatternOptions() {
  re2::RE2::Options o;
  // Byte semantics: captured bodies are often not valid UTF-8, and in UTF-8 mode a stray byte
  // would end a secret's match early and leak the rest of it. All patterns are ASCII.
  o.set_encoding(re2::RE2::Options::EncodingLatin1);
  o.set_log_errors(false);
  // Large texts (flow bodies) can exhaust the DFA cache at the default budget and fall back
  // to the slower NFA; a little more memory keeps redaction linear and fast.
  o.set_max_mem(8 << 20);
  return o;
}

// Applies one pattern to `text`; returns false (and leaves `out` alone) when nothing matched.
bool ApplyPattern(const re2::RE2& re, Kind kind, std::string_view text, std::string& out) {
  const int groups = re.NumberOfCapturingGroups();
  re2::StringPiece m[kMaxGroups + 1];
  size_t pos = 0;   // where the next search starts
  size_t kept = 0;  // text[0..kept) is already in `out`
  bool any = false;
  while (pos <= text.size() &&
         re.Match(text, pos, text.size(), re2::RE2::UNANCHORED, m, groups + 1)) {
    const size_t match_begin = static_cast<size_t>(m[0].data() - text.data());
    const size_t match_end = match_begin + m[0].size();
    for (int g = 1; g <= groups; ++g) {
      if (m[g].data() == nullptr || m[g].empty()) continue;
      if (!any) {
        out.clear();
        out.reserve(text.size() + 16);
        any = true;
      }
      const size_t gb = static_cast<size_t>(m[g].data() - text.data());
      out.append(text.substr(kept, gb - kept));
      if (kind == Kind::kSecretGroup) {
        out.append(kRedacted);
      } else {
        AppendRedactedCookies(out, std::string_view(m[g].data(), m[g].size()),
                              kind == Kind::kSetCookie);
      }
      kept = gb + m[g].size();
      break;  // alternatives are exclusive: only one group takes part
    }
    pos = match_end > match_begin ? match_end : match_end + 1;
  }
  if (!any) return false;
  out.append(text.substr(kept));
  return true;
}

bool ReplaceLiteral(std::string_view text, std::string_view literal, std::string& out) {
  size_t hit = text.find(literal);
  if (hit == std::string_view::npos) return false;
  out.clear();
  size_t kept = 0;
  while (hit != std::string_view::npos) {
    out.append(text.substr(kept, hit - kept));
    out.append(kRedacted);
    kept = hit + literal.size();
    hit = text.find(literal, kept);
  }
  out.append(text.substr(kept));
  return true;
}

struct CompiledSet {
  re2::RE2::Set set{PatternOptions(), re2::RE2::UNANCHORED};
  bool ok = false;
};

// One RE2::Set over all patterns, so text with no secret (the usual case) costs one DFA pass
// instead of one pass per pattern. Shared by all Redactors: the patterns are fixed.
const CompiledSet& PatternSet() {
  static const CompiledSet* const compiled = [] {
    auto* c = new CompiledSet();
    bool ok = true;
    for (const PatternSpec& p : kPatterns) ok = ok && c->set.Add(p.regex, nullptr) >= 0;
    c->ok = ok && c->set.Compile();
    return c;
  }();
  return *compiled;
}

bool EqualsLower(std::string_view word, std::string_view lower) {
  if (word.size() != lower.size()) return false;
  for (size_t i = 0; i < word.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(word[i])) != lower[i]) return false;
  }
  return true;
}

bool EndsWithLower(std::string_view word, std::string_view lower) {
  return word.size() > lower.size() && EqualsLower(word.substr(word.size() - lower.size()), lower);
}

// Calls fn(word) for each word of a key like "X-Api-Key", "client_secret" or "accessToken",
// splitting at punctuation and camelCase boundaries, without allocating (header names are
// checked per exchange). Stops early when fn returns true.
template <typename Fn>
bool AnyWord(std::string_view key, Fn fn) {
  size_t start = 0;
  for (size_t i = 0; i <= key.size(); ++i) {
    const bool end = i == key.size();
    const unsigned char c = end ? 0 : static_cast<unsigned char>(key[i]);
    const bool punct = !end && !absl::ascii_isalnum(c);
    const bool camel = !end && i > start && absl::ascii_isupper(c) &&
                       absl::ascii_islower(static_cast<unsigned char>(key[i - 1]));
    if (end || punct || camel) {
      if (i > start && fn(key.substr(start, i - start))) return true;
      start = punct ? i + 1 : i;
    }
  }
  return false;
}

}  // namespace

size_t AppendRedactedCookies(std::string& out, std::string_view value, bool first_only) {
  size_t masked = 0;
  size_t pos = 0;
  bool first = true;
  while (pos <= value.size()) {
    size_t end = value.find(';', pos);
    if (end == std::string_view::npos) end = value.size();
    const std::string_view part = value.substr(pos, end - pos);
    if (first || !first_only) {
      const size_t eq = part.find('=');
      // Keep the whitespace after ';' and the name with its '='; a nameless value is a secret too.
      const size_t lead = std::min(part.find_first_not_of(" \t"), part.size());
      const size_t val_at = eq == std::string_view::npos ? lead : eq + 1;
      const std::string_view val = part.substr(val_at);
      if (val.find_first_not_of(" \t") == std::string_view::npos) {
        out.append(part);
      } else {
        out.append(part.substr(0, val_at));
        out.append(kRedacted);
        ++masked;
      }
    } else {
      out.append(part);
    }
    first = false;
    if (end == value.size()) break;
    out.push_back(';');
    pos = end + 1;
  }
  return masked;
}

Redactor::Redactor() {
  for (const PatternSpec& p : kPatterns) {
    auto re = std::make_unique<re2::RE2>(p.regex, PatternOptions());
    if (!re->ok() || re->NumberOfCapturingGroups() > static_cast<int>(kMaxGroups)) {
      // The patterns are constants of this file; a bad one is a build defect.
      std::fprintf(stderr, "0xgen: fatal: bad redaction pattern %s: %s\n", p.regex,
                   re->error().c_str());
      std::abort();
    }
    patterns_.push_back(std::move(re));
  }
}

Redactor::~Redactor() = default;

Redactor& Redactor::Default() {
  // Leaked on purpose: objects destroyed at exit may still log.
  static Redactor* const instance = new Redactor();
  return *instance;
}

void Redactor::AddLiteral(std::string_view secret) {
  if (secret.size() < 8) return;
  std::unique_lock lock(literals_mu_);
  for (const std::string& l : literals_) {
    if (l == secret) return;
  }
  literals_.emplace_back(secret);
  // Longest first, so a secret that contains a shorter registered one is removed whole.
  std::stable_sort(literals_.begin(), literals_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::optional<std::string> Redactor::RedactIfNeeded(std::string_view text) const {
  bool literal_hit = false;
  {
    std::shared_lock lock(literals_mu_);
    for (const std::string& literal : literals_) {
      if (!literal.empty() && text.find(literal) != std::string_view::npos) {
        literal_hit = true;
        break;
      }
    }
  }
  if (!literal_hit) {
    const CompiledSet& set = PatternSet();
    if (set.ok) {
      // The cheap question first: may stop at the first match, makes no copy.
      re2::RE2::Set::ErrorInfo info{re2::RE2::Set::kNoError};
      if (!set.set.Match(text, nullptr, &info) && info.kind == re2::RE2::Set::kNoError) {
        return std::nullopt;
      }
    }
  }
  std::string masked = Redact(text);
  if (masked == text) return std::nullopt;
  return masked;
}

std::string Redactor::Redact(std::string_view text) const {
  std::string cur(text);
  std::string next;
  {
    std::shared_lock lock(literals_mu_);
    for (const std::string& literal : literals_) {
      if (ReplaceLiteral(cur, literal, next)) cur.swap(next);
    }
  }

  const CompiledSet& set = PatternSet();
  std::vector<int> hits;
  bool run_all = !set.ok;
  if (set.ok) {
    re2::RE2::Set::ErrorInfo info{re2::RE2::Set::kNoError};
    if (!set.set.Match(cur, &hits, &info)) {
      // No match, unless the DFA gave up; then every pattern gets its own (slower) look.
      run_all = info.kind != re2::RE2::Set::kNoError;
      if (!run_all) return cur;
    }
  }

  std::array<bool, kPatterns.size()> selected{};
  for (int h : hits) selected[static_cast<size_t>(h)] = true;
  for (size_t i = 0; i < kPatterns.size(); ++i) {
    if (!run_all && !selected[i]) continue;
    if (ApplyPattern(*patterns_[i], kPatterns[i].kind, cur, next)) cur.swap(next);
  }
  return cur;
}

namespace {

bool IsSecretKeyUncached(std::string_view key);

// Header names and metadata keys repeat all the time ("Host", "User-Agent", ...): a small
// direct-mapped memo per thread turns the word scan into a hash and a compare.
struct SecretKeyMemo {
  static constexpr size_t kSlots = 256;
  static constexpr size_t kMaxKey = 48;
  struct Slot {
    uint8_t size = 0;
    bool secret = false;
    bool used = false;
    char key[kMaxKey];
  };
  std::array<Slot, kSlots> slots;
};

}  // namespace

bool Redactor::IsSecretKey(std::string_view key) {
  if (key.size() > SecretKeyMemo::kMaxKey) return IsSecretKeyUncached(key);
  thread_local SecretKeyMemo memo;
  uint32_t h = 2166136261u;  // FNV-1a
  for (char c : key) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  SecretKeyMemo::Slot& slot = memo.slots[h % SecretKeyMemo::kSlots];
  if (slot.used && slot.size == key.size() && std::memcmp(slot.key, key.data(), key.size()) == 0) {
    return slot.secret;
  }
  const bool secret = IsSecretKeyUncached(key);
  slot.used = true;
  slot.size = static_cast<uint8_t>(key.size());
  std::memcpy(slot.key, key.data(), key.size());
  slot.secret = secret;
  return secret;
}

namespace {

bool IsSecretKeyUncached(std::string_view key) {
  static constexpr std::string_view kSecretWords[] = {
      "authorization", "auth",      "cookie",    "password",   "passwd",     "pwd",
      "passphrase",    "secret",    "token",     "apikey",     "credential", "credentials",
      "jwt",           "sessionid", "signature", "privatekey", "accesskey",  "secretkey"};
  // Pairs that are secrets together but harmless apart ("api", "key", "session", "id").
  static constexpr std::pair<std::string_view, std::string_view> kSecretPairs[] = {
      {"api", "key"},    {"access", "key"}, {"private", "key"},
      {"secret", "key"}, {"session", "id"}, {"client", "secret"}};
  // Run-together compounds such as "dbpassword" or "authtoken".
  static constexpr std::string_view kSecretTails[] = {"password", "passwd", "secret", "token",
                                                      "apikey"};
  std::string_view prev;
  return AnyWord(key, [&](std::string_view w) {
    for (std::string_view s : kSecretWords) {
      if (EqualsLower(w, s)) return true;
    }
    for (const auto& [a, b] : kSecretPairs) {
      if (EqualsLower(prev, a) && EqualsLower(w, b)) return true;
    }
    for (std::string_view t : kSecretTails) {
      if (EndsWithLower(w, t)) return true;
    }
    prev = w;
    return false;
  });
}

}  // namespace

}  // namespace oxg
