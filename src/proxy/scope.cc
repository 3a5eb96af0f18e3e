#include "proxy/scope.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/strings.h"
#include "re2/re2.h"

namespace oxg::proxy {
namespace {

// RE2 program memory per pattern, and how many patterns a policy may hold: together they bound
// what a hostile file can make us allocate.
constexpr int64_t kMaxPatternMemory = 1 << 20;
constexpr size_t kMaxPatterns = 256;

struct Ip {
  bool v4 = false;
  std::array<uint8_t, 16> bytes{};  // v4 uses the first 4
  size_t bits() const { return v4 ? 32 : 128; }
};

// IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address for every comparison.
Ip Normalize(Ip ip) {
  if (ip.v4) return ip;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes.data(), kMapped, 12) == 0) {
    Ip out;
    out.v4 = true;
    std::memcpy(out.bytes.data(), ip.bytes.data() + 12, 4);
    return out;
  }
  return ip;
}

// Strict textual form, for rule values: dotted quad or RFC 4291 IPv6, no zone.
std::optional<Ip> ParseIpStrict(const std::string& text) {
  Ip ip;
  if (inet_pton(AF_INET, text.c_str(), ip.bytes.data()) == 1) {
    ip.v4 = true;
    return ip;
  }
  if (inet_pton(AF_INET6, text.c_str(), ip.bytes.data()) == 1) return Normalize(ip);
  return std::nullopt;
}

// Host literals as a resolver reads them: IPv4 shorthand ("127.1", "0x7f000001") counts, and an
// IPv6 zone ("fe80::1%eth0") is dropped.
std::optional<Ip> ParseIpLoose(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '\0') {
      return std::nullopt;
    }
  }
  std::string s(text);
  Ip ip;
  if (s.find(':') != std::string::npos) {
    if (const size_t pct = s.find('%'); pct != std::string::npos) s.resize(pct);
    if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) != 1) return std::nullopt;
    return Normalize(ip);
  }
  in_addr a{};
  if (inet_aton(s.c_str(), &a) == 0) return std::nullopt;
  ip.v4 = true;
  std::memcpy(ip.bytes.data(), &a.s_addr, 4);
  return ip;
}

bool InNetwork(const Ip& ip, const Ip& net, int prefix) {
  if (ip.v4 != net.v4) return false;
  const int full = prefix / 8;
  if (std::memcmp(ip.bytes.data(), net.bytes.data(), full) != 0) return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.bytes[full] & mask) == (net.bytes[full] & mask);
}

bool HostBitsZero(const Ip& net, int prefix) {
  for (size_t bit = prefix; bit < net.bits(); ++bit) {
    if (net.bytes[bit / 8] & (0x80 >> (bit % 8))) return false;
  }
  return true;
}

bool IsPrivate(const Ip& ip) {
  const auto& b = ip.bytes;
  if (ip.v4) {
    return b[0] == 0 || b[0] == 10 || b[0] == 127 || (b[0] == 100 && (b[1] & 0xc0) == 64) ||
           (b[0] == 169 && b[1] == 254) || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
           (b[0] == 192 && b[1] == 168);
  }
  bool zero_prefix = true;  // :: and ::1
  for (int i = 0; i < 15; ++i) zero_prefix = zero_prefix && b[i] == 0;
  if (zero_prefix && b[15] <= 1) return true;
  return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80);
}

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// `host` is `domain` or ends with "." + domain (with at least `min_extra` characters before the
// dot when a subdomain is required).
bool IsSubdomainOf(std::string_view host, std::string_view domain) {
  return host.size() > domain.size() + 1 && host[host.size() - domain.size() - 1] == '.' &&
         EqualsIgnoreCase(host.substr(host.size() - domain.size()), domain);
}

std::string_view StripTrailingDot(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return host;
}

enum class RuleType { kDomain, kWildcard, kUrl, kUrlPrefix, kPath, kCidr, kIp, kPattern };

struct RuleTypeName {
  std::string_view name;
  RuleType type;
};
constexpr RuleTypeName kRuleTypes[] = {
    {"domain", RuleType::kDomain}, {"wildcard", RuleType::kWildcard},
    {"url", RuleType::kUrl},       {"url_prefix", RuleType::kUrlPrefix},
    {"path", RuleType::kPath},     {"cidr", RuleType::kCidr},
    {"ip", RuleType::kIp},         {"pattern", RuleType::kPattern},
};

// Values in messages: escaped and shortened so a hostile file cannot flood the log.
std::string Quote(std::string_view v) {
  constexpr size_t kMax = 80;
  const bool cut = v.size() > kMax;
  if (cut) v = v.substr(0, kMax);
  return Cat("\"", absl::CEscape(absl::string_view(v.data(), v.size())), cut ? "...\"" : "\"");
}

}  // namespace

struct ScopePolicy::Rules {
  struct Rule {
    RuleType type;
    std::string value;  // normalized: domain lower-case without trailing dot, wildcard suffix
    Ip ip;
    int prefix = 0;
    std::unique_ptr<RE2> re;
    std::string description;
  };
  bool block_private = true;
  std::vector<Rule> allow;
  std::vector<Rule> deny;
};

namespace {

using Rule = ScopePolicy::Rules::Rule;

constexpr std::string_view kPrivateBlocked = "private_networks: block";
constexpr std::string_view kEmptyAllow = "allow: empty list";
constexpr std::string_view kNoAllowMatch = "allow: no rule matched";

struct Candidates {
  std::optional<Ip> host;
  std::optional<Ip> resolved;
};

bool IpRuleMatches(const Rule& r, const Ip& ip) {
  if (r.type == RuleType::kIp) {
    return ip.v4 == r.ip.v4 && std::memcmp(ip.bytes.data(), r.ip.bytes.data(), 16) == 0;
  }
  return InNetwork(ip, r.ip, r.prefix);
}

bool Matches(const Rule& r, const ScopeTarget& t, const Candidates& c) {
  switch (r.type) {
    case RuleType::kDomain: {
      const std::string_view host = StripTrailingDot(t.host);
      return EqualsIgnoreCase(host, r.value) || IsSubdomainOf(host, r.value);
    }
    case RuleType::kWildcard:
      return IsSubdomainOf(StripTrailingDot(t.host), r.value);
    case RuleType::kUrl:
      return t.url == r.value;
    case RuleType::kUrlPrefix: {
      const std::string_view url = t.url;
      if (url.substr(0, r.value.size()) != r.value) return false;
      if (std::string_view("/?#&=").find(r.value.back()) != std::string_view::npos) return true;
      return url.size() == r.value.size() ||
             std::string_view("/?#").find(url[r.value.size()]) != std::string_view::npos;
    }
    case RuleType::kPath: {
      std::string_view path = t.path;
      path = path.substr(0, path.find_first_of("?#"));
      if (path.substr(0, r.value.size()) != r.value) return false;
      return path.size() == r.value.size() || r.value.back() == '/' || path[r.value.size()] == '/';
    }
    case RuleType::kCidr:
    case RuleType::kIp:
      return (c.host && IpRuleMatches(r, *c.host)) || (c.resolved && IpRuleMatches(r, *c.resolved));
    case RuleType::kPattern:
      return RE2::PartialMatch(t.url, *r.re);
  }
  return false;
}

// ---- loading ----

class Loader {
 public:
  explicit Loader(std::string_view file) : file_(file) {}

  absl::Status Error(int line, std::string_view reason) const {
    return absl::InvalidArgumentError(Cat(file_, ":", line, ": ", reason));
  }
  static int LineOf(const YAML::Node& n, int fallback) {
    const YAML::Mark m = n.Mark();
    return m.line >= 0 ? m.line + 1 : fallback;
  }
  static std::string_view Kind(const YAML::Node& n) {
    switch (n.Type()) {
      case YAML::NodeType::Null:
        return "nothing";
      case YAML::NodeType::Scalar:
        return "a scalar";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Map:
        return "a mapping";
      default:
        return "nothing";
    }
  }

  absl::Status Load(std::string_view yaml, ScopePolicy::Rules& out) {
    if (yaml.size() > kMaxScopePolicyBytes) {
      return Error(
          1, Cat("policy too large: ", yaml.size(), " bytes, at most ", kMaxScopePolicyBytes));
    }
    std::vector<YAML::Node> docs;
    try {
      docs = YAML::LoadAll(std::string(yaml));
    } catch (const YAML::Exception& e) {
      return Error(e.mark.line >= 0 ? e.mark.line + 1 : 1, Cat("YAML syntax error: ", e.msg));
    }
    if (docs.empty() || docs[0].IsNull()) {
      return Error(docs.empty() ? 1 : LineOf(docs[0], 1),
                   "empty policy: expected a mapping with version: 1");
    }
    if (docs.size() > 1) {
      return Error(LineOf(docs[1], 1), "only one YAML document allowed");
    }
    try {
      return LoadTop(docs[0], out);
    } catch (const YAML::Exception& e) {  // not expected: we only read checked node kinds
      return Error(e.mark.line >= 0 ? e.mark.line + 1 : 1, Cat("invalid policy: ", e.msg));
    }
  }

 private:
  absl::Status LoadTop(const YAML::Node& top, ScopePolicy::Rules& out) {
    const int top_line = LineOf(top, 1);
    if (!top.IsMap()) {
      return Error(top_line, Cat("policy must be a mapping, got ", Kind(top)));
    }
    std::set<std::string> seen;
    bool have_version = false;
    for (const auto& kv : top) {
      const YAML::Node& key = kv.first;
      const YAML::Node& value = kv.second;
      const int key_line = LineOf(key, top_line);
      const int value_line = value.IsNull() ? key_line : LineOf(value, key_line);
      if (!key.IsScalar()) return Error(key_line, "keys must be strings");
      const std::string& name = key.Scalar();
      if (!seen.insert(name).second) return Error(key_line, Cat("duplicate key ", Quote(name)));
      if (name == "version") {
        int version = 0;
        if (!value.IsScalar() || !ParseInt(value.Scalar(), &version) || version != 1) {
          return Error(value_line,
                       Cat("unsupported version ",
                           value.IsScalar() ? Quote(value.Scalar()) : std::string(Kind(value)),
                           " (expected 1)"));
        }
        have_version = true;
      } else if (name == "private_networks") {
        if (value.IsScalar() && value.Scalar() == "block") {
          out.block_private = true;
        } else if (value.IsScalar() && value.Scalar() == "allow") {
          out.block_private = false;
        } else {
          return Error(value_line,
                       Cat("private_networks must be block or allow, got ",
                           value.IsScalar() ? Quote(value.Scalar()) : std::string(Kind(value))));
        }
      } else if (name == "allow" || name == "deny") {
        OXG_RETURN_IF_ERROR(
            LoadList(name, value, value_line, name == "allow" ? out.allow : out.deny));
      } else {
        return Error(key_line, Cat("unknown key ", Quote(name),
                                   " (expected version, private_networks, allow, deny)"));
      }
    }
    if (!have_version) return Error(top_line, "missing required key \"version\" (version: 1)");
    return absl::OkStatus();
  }

  absl::Status LoadList(const std::string& list, const YAML::Node& seq, int line,
                        std::vector<Rule>& out) {
    if (seq.IsNull()) return absl::OkStatus();  // "allow:" with nothing is an empty list
    if (!seq.IsSequence()) {
      return Error(line, Cat(list, " must be a list of rules, got ", Kind(seq)));
    }
    if (seq.size() > kMaxScopeRules - rule_count_) {
      return Error(line, Cat("too many rules: at most ", kMaxScopeRules));
    }
    rule_count_ += seq.size();
    for (size_t i = 0; i < seq.size(); ++i) {
      const YAML::Node node = seq[i];
      const std::string where = Cat(list, "[", i, "]");
      OXG_ASSIGN_OR_RETURN(Rule rule, LoadRule(where, node, LineOf(node, line)));
      out.push_back(std::move(rule));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Rule> LoadRule(const std::string& where, const YAML::Node& node, int line) {
    if (!node.IsMap()) {
      return Error(line,
                   Cat(where, ": rule must be a mapping with type and value, got ", Kind(node)));
    }
    std::optional<std::string> type_name, value;
    int type_line = line, value_line = line;
    for (const auto& kv : node) {
      const YAML::Node& k = kv.first;
      const YAML::Node& val = kv.second;
      const int key_line = LineOf(k, line);
      const int val_line = val.IsNull() ? key_line : LineOf(val, key_line);
      if (!k.IsScalar()) return Error(key_line, Cat(where, ": keys must be strings"));
      const std::string& key = k.Scalar();
      std::optional<std::string>* slot = nullptr;
      if (key == "type") {
        slot = &type_name;
        type_line = val_line;
      } else if (key == "value") {
        slot = &value;
        value_line = val_line;
      } else {
        return Error(key_line, Cat(where, ": unknown key ", Quote(key), " (expected type, value)"));
      }
      if (slot->has_value()) return Error(key_line, Cat(where, ": duplicate key ", Quote(key)));
      if (!val.IsScalar() || val.Scalar().empty()) {
        return Error(val_line, Cat(where, ": ", key, " must be a non-empty string, got ",
                                   val.IsScalar() ? "an empty string" : Kind(val)));
      }
      if (val.Scalar().size() > kMaxScopeValueBytes) {
        return Error(val_line, Cat(where, ": ", key, " too long: ", val.Scalar().size(),
                                   " bytes, at most ", kMaxScopeValueBytes));
      }
      *slot = val.Scalar();
    }
    if (!type_name) return Error(line, Cat(where, ": missing key \"type\""));
    if (!value) return Error(line, Cat(where, ": missing key \"value\""));

    const RuleTypeName* found = nullptr;
    for (const auto& t : kRuleTypes) {
      if (t.name == *type_name) found = &t;
    }
    if (found == nullptr) {
      return Error(type_line, Cat(where, ": unknown rule type ", Quote(*type_name),
                                  " (expected domain, wildcard, url, url_prefix, path, cidr, "
                                  "ip, pattern)"));
    }
    Rule rule;
    rule.type = found->type;
    rule.description =
        Cat(where, " ", found->name, " ", Quote(*value), " (", file_, ":", line, ")");
    const std::string& v = *value;
    auto bad = [&](std::string_view reason) {
      return Error(value_line, Cat(where, ": invalid ", found->name, " ", Quote(v), ": ", reason));
    };
    switch (rule.type) {
      case RuleType::kDomain:
      case RuleType::kWildcard: {
        std::string_view d = v;
        if (rule.type == RuleType::kWildcard) {
          if (d.substr(0, 2) != "*.") return bad("expected \"*.\" followed by a domain");
          d.remove_prefix(2);
        }
        d = StripTrailingDot(d);
        if (d.empty()) return bad("empty domain");
        if (d.size() > 253) return bad("longer than 253 characters");
        for (char c : d) {
          const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
          if (c == '*') return bad("\"*\" is only allowed as the first label of a wildcard");
          if (!ok) return bad(Cat("character ", Quote(std::string_view(&c, 1)), " not allowed"));
        }
        if (d.front() == '.' || d.find("..") != std::string_view::npos) {
          return bad("empty label");
        }
        rule.value.reserve(d.size());
        for (char c : d) rule.value.push_back(Lower(c));
        break;
      }
      case RuleType::kUrl:
      case RuleType::kUrlPrefix:
        if (v.find("://") == std::string::npos || v.find("://") == 0) {
          return bad("expected an absolute URL like https://host/path");
        }
        rule.value = v;
        break;
      case RuleType::kPath:
        if (v.front() != '/') return bad("must start with \"/\"");
        rule.value = v;
        break;
      case RuleType::kIp: {
        const auto ip = ParseIpStrict(v);
        if (!ip) return bad("not an IPv4 or IPv6 address");
        rule.ip = *ip;
        break;
      }
      case RuleType::kCidr: {
        const size_t slash = v.find('/');
        if (slash == std::string::npos) return bad("expected address/prefix-length");
        const auto ip = ParseIpStrict(v.substr(0, slash));
        if (!ip) return bad("not an IPv4 or IPv6 address");
        // A mapped IPv6 network (::ffff:10.0.0.0/104) is the IPv4 network of 8 bits fewer.
        const bool was_mapped = ip->v4 && v.substr(0, slash).find(':') != std::string::npos;
        int prefix = -1;
        const int max_bits = was_mapped ? 128 : static_cast<int>(ip->bits());
        if (!ParseInt(std::string_view(v).substr(slash + 1), &prefix) || prefix < 0 ||
            prefix > max_bits || v[slash + 1] == '-') {
          return bad(Cat("prefix length must be 0-", max_bits));
        }
        if (was_mapped) {
          if (prefix < 96) return bad("prefix length must be 96-128 for an IPv4-mapped network");
          prefix -= 96;
        }
        if (!HostBitsZero(*ip, prefix)) return bad("host bits set after the prefix");
        rule.ip = *ip;
        rule.prefix = prefix;
        break;
      }
      case RuleType::kPattern: {
        if (++pattern_count_ > kMaxPatterns) {
          return Error(value_line, Cat(where, ": too many pattern rules: at most ", kMaxPatterns));
        }
        RE2::Options opts;
        opts.set_log_errors(false);
        opts.set_max_mem(kMaxPatternMemory);
        rule.re = std::make_unique<RE2>(v, opts);
        if (!rule.re->ok()) return bad(rule.re->error());
        rule.value = v;
        break;
      }
    }
    return rule;
  }

  std::string file_;
  size_t rule_count_ = 0;
  size_t pattern_count_ = 0;
};

}  // namespace

ScopeDecision ScopePolicy::Decide(const ScopeTarget& target) const {
  const Rules& rules = *rules_;
  Candidates c;
  c.host = ParseIpLoose(target.host);
  if (target.resolved_ip) c.resolved = ParseIpLoose(*target.resolved_ip);

  for (const Rule& r : rules.deny) {
    if (Matches(r, target, c)) return {false, r.description};
  }
  if (rules.block_private) {
    for (const std::optional<Ip>* ip : {&c.host, &c.resolved}) {
      if (!*ip || !IsPrivate(**ip)) continue;
      bool exempt = false;
      for (const Rule& r : rules.allow) {
        if ((r.type == RuleType::kIp || r.type == RuleType::kCidr) && IpRuleMatches(r, **ip)) {
          exempt = true;
          break;
        }
      }
      if (!exempt) return {false, kPrivateBlocked};
    }
  }
  if (rules.allow.empty()) return {true, kEmptyAllow};
  for (const Rule& r : rules.allow) {
    if (Matches(r, target, c)) return {true, r.description};
  }
  return {false, kNoAllowMatch};
}

absl::StatusOr<ScopePolicy> ParseScopePolicy(std::string_view yaml,
                                             std::string_view file_name_for_errors) {
  auto rules = std::make_shared<ScopePolicy::Rules>();
  Loader loader(file_name_for_errors);
  OXG_RETURN_IF_ERROR(loader.Load(yaml, *rules));
  return ScopePolicy(std::move(rules));
}

absl::StatusOr<ScopePolicy> LoadScopePolicy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(Cat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxScopePolicyBytes) {
      return absl::InvalidArgumentError(
          Cat(path, ":1: policy too large: more than ", kMaxScopePolicyBytes, " bytes"));
    }
  }
  if (in.bad()) return absl::InvalidArgumentError(Cat(path, ": cannot read"));
  return ParseScopePolicy(text, path);
}

}  // namespace oxg::proxy
