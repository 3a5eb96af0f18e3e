#include "daemon/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <ostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/build_info.h"
#include "common/redact.h"
#include "common/strings.h"

namespace oxg::daemon {

namespace {

// Flags that take a value are captured as text, so that each conversion error can be reported
// in the project's own words (`--flag: problem`) rather than CLI11's.
struct RawFlags {
  std::string data_dir = "./oxg-data";
  std::string addr = "127.0.0.1:50051";
  std::string token;
  std::string metrics_addr = ":9090";
  bool metrics_legacy_aliases = true;
  std::string proxy_addr = "127.0.0.1:8080";
  std::string proxy_ca_cert;
  std::string proxy_ca_key;
  std::string proxy_history;
  std::string proxy_flow_log;
  bool flow_log_raw = false;
  std::string flow_sample_rate = "1.0";
  std::string max_body_kb = "128";
  std::string scope_policy;
  std::string plugins_dir;
  std::string workers;
  std::string proxy_upstream_timeout = "30";
  std::string plugin_restart_backoff = "1";
  std::string plugin_stop_grace = "5";
  std::string proxy_idle_timeout = "60";
  bool proxy_insecure_skip_verify = false;
  std::string proxy_upstream_ca;
  std::string trace_endpoint;
  std::string trace_protocol = "http/protobuf";
  std::string trace_headers;
  bool trace_insecure_skip_verify = false;
  std::string trace_service_name = "0xgend";
  std::string trace_sample_ratio = "1.0";
  std::string trace_file;
  std::string audit_log;
  std::string log_level = "info";
  std::string crash_dir;
};

// "--data-dir" -> "OXG_DATA_DIR".
std::string EnvName(std::string_view flag) {
  std::string env = "OXG_";
  for (char c : flag.substr(2)) env.push_back(c == '-' ? '_' : absl::ascii_toupper(c));
  return env;
}

int DefaultWorkers() { return std::max(1u, std::thread::hardware_concurrency()); }

std::string VersionLine() { return Cat("0xgend ", kVersion, " (", kRevision, ")"); }

std::string JoinPath(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return Cat(dir, name);
  return Cat(dir, "/", name);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Builds the CLI11 app over `raw`. The defaults and environment variable of each flag go into
// its description, because CLI11 would show neither for the text-typed and boolean flags.
class FlagTable {
 public:
  explicit FlagTable(RawFlags& raw)
      : app_(
            "0xgend: offensive-security capture proxy and plugin bus "
            "with first-class observability.",
            "0xgend") {
    app_.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app_.get_formatter()->column_width(40);
    app_.set_help_flag("-h,--help", "Print this help and exit.");
    app_.set_version_flag("--version", VersionLine(), "Print the version and exit.");
    app_.footer(
        "Every flag can also be set through the environment variable shown with it; the command "
        "line wins.\n"
        "Trace flags also fall back to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces),\n"
        "OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME and OTEL_TRACES_SAMPLER_ARG, after the "
        "OXG_* variables.\n"
        "Exit codes: 0 success or clean shutdown (SIGINT/SIGTERM), 1 runtime failure, 2 bad usage "
        "or configuration.");

    Text(raw.data_dir, "--data-dir", "DIR", "Root for every file the daemon writes (created 0700).",
         "./oxg-data");
    Text(raw.addr, "--addr", "HOST:PORT", "gRPC listen address for the plugin bus and netgate.",
         "127.0.0.1:50051");
    Text(raw.token, "--token", "TOKEN",
         "Plugin auth token; by default a random 256-bit token kept in <data-dir>/token (0600).",
         "generated");
    Text(raw.metrics_addr, "--metrics-addr", "HOST:PORT",
         "Prometheus endpoint address; an empty value disables the HTTP server.", ":9090");
    Bool(raw.metrics_legacy_aliases, "--metrics-legacy-aliases",
         "Also export every oxg_* family under its deprecated glyph_* name.", "true");
    Text(raw.proxy_addr, "--proxy-addr", "HOST:PORT",
         "Capture proxy listener; an empty value disables the proxy.", "127.0.0.1:8080");
    Text(raw.proxy_ca_cert, "--proxy-ca-cert", "FILE",
         "Interception CA certificate (generated with its key on first start).",
         "<data-dir>/ca.pem");
    Text(raw.proxy_ca_key, "--proxy-ca-key", "FILE", "Interception CA private key.",
         "<data-dir>/ca-key.pem");
    Text(raw.proxy_history, "--proxy-history", "FILE", "One JSON line per completed exchange.",
         "<data-dir>/proxy_history.jsonl");
    Text(raw.proxy_flow_log, "--proxy-flow-log", "FILE", "Flow transcripts for replay.",
         "<data-dir>/proxy_flows.jsonl");
    Bool(raw.flow_log_raw, "--flow-log-raw",
         "Also store raw payloads (with credentials) in the flow log.", "false");
    Text(raw.flow_sample_rate, "--flow-sample-rate", "RATIO",
         "Fraction of exchanges captured as flows, in [0,1].", "1.0");
    Text(raw.max_body_kb, "--max-body-kb", "KB",
         "Body bytes kept per captured message; 0 keeps headers only, -1 is unlimited.", "128");
    Text(raw.scope_policy, "--scope-policy", "FILE",
         "YAML scope policy; out-of-scope exchanges are proxied but not captured.", "none");
    Text(raw.plugins_dir, "--plugins-dir", "DIR",
         "Directory of plugin manifests the supervisor starts.", "./plugins if it exists");
    Text(raw.plugin_restart_backoff, "--plugin-restart-backoff", "SECONDS",
         "First delay before restarting a failed plugin; it doubles (with jitter) up to 60 s, "
         "and a plugin failing 5 times in a row is not restarted again.",
         "1");
    Text(raw.plugin_stop_grace, "--plugin-stop-grace", "SECONDS",
         "How long a plugin has to leave after its goodbye and SIGTERM before SIGKILL.", "5");
    Text(raw.workers, "--workers", "N", "Proxy I/O threads.",
         Cat("number of cores (", DefaultWorkers(), ")"));
    Text(raw.proxy_upstream_timeout, "--proxy-upstream-timeout", "SECONDS",
         "Deadline for connecting to an upstream and for each wait on it; a silent upstream "
         "gets the client a 504.",
         "30");
    Text(raw.proxy_idle_timeout, "--proxy-idle-timeout", "SECONDS",
         "How long a client connection may sit idle between requests.", "60");
    Bool(raw.proxy_insecure_skip_verify, "--proxy-insecure-skip-verify",
         "Do not verify upstream TLS certificates (for test targets with self-signed "
         "certificates).",
         "false");
    Text(raw.proxy_upstream_ca, "--proxy-upstream-ca", "FILE",
         "Extra PEM trust anchors for upstream TLS, added to the system store.", "none");
    Text(raw.trace_endpoint, "--trace-endpoint", "URL",
         "OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces.", "none");
    Text(raw.trace_protocol, "--trace-protocol", "PROTOCOL", "http/protobuf or http/json.",
         "http/protobuf");
    Text(raw.trace_headers, "--trace-headers", "K=V,...",
         "Extra export headers; values may be percent-encoded.", "none");
    Bool(raw.trace_insecure_skip_verify, "--trace-insecure-skip-verify",
         "Skip TLS verification of the trace endpoint.", "false");
    Text(raw.trace_service_name, "--trace-service-name", "NAME", "service.name resource attribute.",
         "0xgend");
    Text(raw.trace_sample_ratio, "--trace-sample-ratio", "RATIO",
         "Probability of sampling a new root trace, in [0,1]; 0 disables tracing.", "1.0");
    Text(raw.trace_file, "--trace-file", "FILE", "Span archive in the Chrome trace event format.",
         "none");
    Text(raw.audit_log, "--audit-log", "FILE", "Audit log file; - writes to standard output.",
         "<data-dir>/audit.jsonl");
    Text(raw.log_level, "--log-level", "LEVEL",
         "Operational log level on stderr: debug, info, warn or error.", "info");
    Text(raw.crash_dir, "--crash-dir", "DIR", "Where crash bundles are written.",
         "<data-dir>/crash");
  }

  CLI::App& app() { return app_; }
  const CLI::Option* option(std::string_view flag) const {
    for (const auto& [name, opt] : options_) {
      if (name == flag) return opt;
    }
    return nullptr;
  }
  // True for the flags that take a value (as opposed to the boolean ones).
  bool TakesValue(std::string_view flag) const {
    const CLI::Option* opt = option(flag);
    return opt != nullptr && opt->get_expected_max() > 0 && opt->get_type_size_max() > 0;
  }
  bool Given(std::string_view flag) const {
    const CLI::Option* opt = option(flag);
    return opt != nullptr && opt->count() > 0;
  }

 private:
  static std::string Describe(std::string_view help, std::string_view default_text,
                              std::string_view env) {
    return Cat(help, "\n[default: ", default_text, "] [env: ", env, "]");
  }
  void Text(std::string& target, std::string flag, std::string placeholder, std::string_view help,
            std::string_view default_text) {
    const std::string env = EnvName(flag);
    CLI::Option* opt = app_.add_option(flag, target, Describe(help, default_text, env));
    opt->envname(env)->option_text(placeholder);
    options_.emplace_back(std::move(flag), opt);
  }
  void Bool(bool& target, std::string flag, std::string_view help, std::string_view default_text) {
    const std::string env = EnvName(flag);
    CLI::Option* opt = app_.add_flag(flag, target, Describe(help, default_text, env));
    opt->envname(env)->option_text("[=true|false]");
    options_.emplace_back(std::move(flag), opt);
  }

  CLI::App app_;
  std::vector<std::pair<std::string, CLI::Option*>> options_;
};

// Converts and checks the raw flags. Each error names the flag and, when the value did not come
// from the command line, the variable it came from.
class Finisher {
 public:
  Finisher(const FlagTable& table, RawFlags& raw, std::span<const std::string> args)
      : table_(table), raw_(raw), args_(args) {}

  absl::StatusOr<Config> Run() {
    ApplyEmptyEnvDisables();
    ApplyOtelFallbacks();

    Config c;
    if (raw_.data_dir.empty()) return Error("--data-dir", "must not be empty");
    c.data_dir = raw_.data_dir;

    if (raw_.addr.empty()) return Error("--addr", "must not be empty");
    OXG_ASSIGN_OR_RETURN(c.addr, Address("--addr", raw_.addr));
    // Literals under 8 bytes are too common to redact everywhere, so such a token could leak.
    if (!raw_.token.empty() && raw_.token.size() < 8) {
      return Error("--token", "must be at least 8 characters (16 or more recommended)");
    }
    c.token = raw_.token;
    if (!raw_.metrics_addr.empty()) {
      OXG_ASSIGN_OR_RETURN(c.metrics_addr, Address("--metrics-addr", raw_.metrics_addr));
    }
    c.metrics_legacy_aliases = raw_.metrics_legacy_aliases;
    if (!raw_.proxy_addr.empty()) {
      OXG_ASSIGN_OR_RETURN(c.proxy_addr, Address("--proxy-addr", raw_.proxy_addr));
    }

    c.proxy_ca_cert = OrUnderDataDir(raw_.proxy_ca_cert, "ca.pem");
    c.proxy_ca_key = OrUnderDataDir(raw_.proxy_ca_key, "ca-key.pem");
    const bool cert_exists = PathExists(c.proxy_ca_cert);
    const bool key_exists = PathExists(c.proxy_ca_key);
    if (cert_exists && !key_exists) {
      return Error("--proxy-ca-key", Cat(c.proxy_ca_key, " does not exist but the certificate ",
                                         c.proxy_ca_cert, " does; give both files or neither"));
    }
    if (key_exists && !cert_exists) {
      return Error("--proxy-ca-cert", Cat(c.proxy_ca_cert, " does not exist but the key ",
                                          c.proxy_ca_key, " does; give both files or neither"));
    }
    c.proxy_history = OrUnderDataDir(raw_.proxy_history, "proxy_history.jsonl");
    c.proxy_flow_log = OrUnderDataDir(raw_.proxy_flow_log, "proxy_flows.jsonl");
    c.flow_log_raw = raw_.flow_log_raw;
    OXG_ASSIGN_OR_RETURN(c.flow_sample_rate, Ratio("--flow-sample-rate", raw_.flow_sample_rate));

    int64_t kb = 0;
    if (!ParseInt(raw_.max_body_kb, &kb) || kb < -1) {
      return Error("--max-body-kb",
                   Cat("\"", raw_.max_body_kb, "\" is not an integer >= -1 (-1 is unlimited)"));
    }
    c.max_body_kb = kb;

    if (!raw_.scope_policy.empty()) {
      OXG_RETURN_IF_ERROR(CheckPath("--scope-policy", raw_.scope_policy, S_IFREG));
      c.scope_policy = raw_.scope_policy;
    }
    if (table_.Given("--plugins-dir")) {
      if (!raw_.plugins_dir.empty()) {
        OXG_RETURN_IF_ERROR(CheckPath("--plugins-dir", raw_.plugins_dir, S_IFDIR));
      }
      c.plugins_dir = raw_.plugins_dir;
    } else {
      struct stat st;
      if (::stat("./plugins", &st) == 0 && S_ISDIR(st.st_mode)) c.plugins_dir = "./plugins";
    }

    if (raw_.workers.empty()) {
      c.workers = DefaultWorkers();
    } else {
      int workers = 0;
      if (!ParseInt(raw_.workers, &workers) || workers < 1 || workers > kMaxWorkers) {
        return Error("--workers",
                     Cat("\"", raw_.workers, "\" is not an integer in [1,", kMaxWorkers, "]"));
      }
      c.workers = workers;
    }

    OXG_ASSIGN_OR_RETURN(c.proxy_upstream_timeout,
                         Seconds("--proxy-upstream-timeout", raw_.proxy_upstream_timeout));
    OXG_ASSIGN_OR_RETURN(c.plugin_restart_backoff,
                         Seconds("--plugin-restart-backoff", raw_.plugin_restart_backoff));
    OXG_ASSIGN_OR_RETURN(c.plugin_stop_grace,
                         Seconds("--plugin-stop-grace", raw_.plugin_stop_grace));
    OXG_ASSIGN_OR_RETURN(c.proxy_idle_timeout,
                         Seconds("--proxy-idle-timeout", raw_.proxy_idle_timeout));
    c.proxy_insecure_skip_verify = raw_.proxy_insecure_skip_verify;
    if (!raw_.proxy_upstream_ca.empty()) {
      OXG_RETURN_IF_ERROR(CheckPath("--proxy-upstream-ca", raw_.proxy_upstream_ca, S_IFREG));
      c.proxy_upstream_ca = raw_.proxy_upstream_ca;
    }

    if (!raw_.trace_endpoint.empty()) {
      OXG_RETURN_IF_ERROR(CheckUrl("--trace-endpoint", raw_.trace_endpoint));
    }
    c.trace_endpoint = raw_.trace_endpoint;
    if (raw_.trace_protocol != "http/protobuf" && raw_.trace_protocol != "http/json") {
      return Error("--trace-protocol",
                   Cat("\"", raw_.trace_protocol, "\" is not http/protobuf or http/json"));
    }
    c.trace_protocol = raw_.trace_protocol;
    {
      auto headers = ParseTraceHeaders(raw_.trace_headers);
      if (!headers.ok()) return Error("--trace-headers", std::string(headers.status().message()));
      c.trace_headers = *std::move(headers);
    }
    c.trace_insecure_skip_verify = raw_.trace_insecure_skip_verify;
    if (raw_.trace_service_name.empty()) return Error("--trace-service-name", "must not be empty");
    c.trace_service_name = raw_.trace_service_name;
    OXG_ASSIGN_OR_RETURN(c.trace_sample_ratio,
                         Ratio("--trace-sample-ratio", raw_.trace_sample_ratio));
    c.trace_file = raw_.trace_file;

    if (table_.Given("--audit-log") && raw_.audit_log.empty()) {
      return Error("--audit-log", "must not be empty (use - for standard output)");
    }
    c.audit_log = OrUnderDataDir(raw_.audit_log, "audit.jsonl");
    if (!log::ParseLevel(raw_.log_level, &c.log_level)) {
      return Error("--log-level",
                   Cat("\"", raw_.log_level, "\" is not one of debug, info, warn, error"));
    }
    c.crash_dir = OrUnderDataDir(raw_.crash_dir, "crash");
    return c;
  }

 private:
  static constexpr int kMaxWorkers = 1024;

  // CLI11 ignores empty variables, but for the two listeners an empty value is meaningful
  // ("disabled"), so OXG_METRICS_ADDR= must behave like --metrics-addr=.
  void ApplyEmptyEnvDisables() {
    for (auto [flag, target] :
         {std::pair<const char*, std::string*>{"--metrics-addr", &raw_.metrics_addr},
          {"--proxy-addr", &raw_.proxy_addr}}) {
      if (table_.Given(flag)) continue;
      const std::string env = EnvName(flag);
      const char* value = std::getenv(env.c_str());
      if (value != nullptr && *value == '\0') target->clear();
    }
  }

  void ApplyOtelFallbacks() {
    auto fallback = [this](const char* flag, std::string* target, const char* env,
                           std::string_view suffix = {}) {
      if (table_.Given(flag) || otel_source_.contains(flag)) return;
      const char* value = std::getenv(env);
      if (value == nullptr || *value == '\0') return;
      std::string v = value;
      if (!suffix.empty()) {
        // OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the signal path goes after it.
        while (!v.empty() && v.back() == '/') v.pop_back();
        v += suffix;
      }
      *target = std::move(v);
      otel_source_[flag] = env;
    };
    fallback("--trace-endpoint", &raw_.trace_endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    fallback("--trace-endpoint", &raw_.trace_endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT", "/v1/traces");
    fallback("--trace-headers", &raw_.trace_headers, "OTEL_EXPORTER_OTLP_HEADERS");
    fallback("--trace-service-name", &raw_.trace_service_name, "OTEL_SERVICE_NAME");
    fallback("--trace-sample-ratio", &raw_.trace_sample_ratio, "OTEL_TRACES_SAMPLER_ARG");
  }

  // The environment variable a flag's value came from, if any.
  std::string SourceOf(std::string_view flag) const {
    if (auto it = otel_source_.find(std::string(flag)); it != otel_source_.end()) {
      return it->second;
    }
    if (!table_.Given(flag)) return "";
    for (size_t i = 1; i < args_.size(); ++i) {
      const std::string& a = args_[i];
      if (a == "--") break;
      if (a == flag || (a.starts_with(flag) && a.size() > flag.size() && a[flag.size()] == '=')) {
        return "";
      }
    }
    return EnvName(flag);
  }

  absl::Status Error(std::string_view flag, std::string_view problem) const {
    const std::string source = SourceOf(flag);
    if (source.empty()) return absl::InvalidArgumentError(Cat(flag, ": ", problem));
    return absl::InvalidArgumentError(Cat(flag, ": ", problem, " (from ", source, ")"));
  }

  std::string OrUnderDataDir(const std::string& value, std::string_view name) const {
    return value.empty() ? JoinPath(raw_.data_dir, name) : value;
  }

  absl::StatusOr<HostPort> Address(std::string_view flag, const std::string& text) const {
    auto hp = ParseHostPort(text);
    if (!hp.ok()) return Error(flag, std::string(hp.status().message()));
    return *hp;
  }

  absl::StatusOr<double> Ratio(std::string_view flag, const std::string& text) const {
    double v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(v) || v < 0 || v > 1) {
      return Error(flag, Cat("\"", text, "\" is not a number in [0,1]"));
    }
    return v;
  }

  // A duration in seconds (fractions allowed), more than 0 and at most a day.
  absl::StatusOr<double> Seconds(std::string_view flag, const std::string& text) const {
    double v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(v) || v <= 0 ||
        v > 86400) {
      return Error(flag, Cat("\"", text, "\" is not a number of seconds in (0,86400]"));
    }
    return v;
  }

  absl::Status CheckPath(std::string_view flag, const std::string& path, mode_t type) const {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return Error(flag, Cat(path, ": ", std::strerror(errno)));
    }
    if ((st.st_mode & S_IFMT) != type) {
      return Error(flag, Cat(path, " is not a ", type == S_IFDIR ? "directory" : "regular file"));
    }
    if (::access(path.c_str(), type == S_IFDIR ? (R_OK | X_OK) : R_OK) != 0) {
      return Error(flag, Cat(path, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  absl::Status CheckUrl(std::string_view flag, const std::string& url) const {
    std::string_view rest;
    if (absl::StartsWithIgnoreCase(url, "http://")) {
      rest = std::string_view(url).substr(7);
    } else if (absl::StartsWithIgnoreCase(url, "https://")) {
      rest = std::string_view(url).substr(8);
    } else {
      return Error(flag, Cat("\"", url, "\" is not an http:// or https:// URL"));
    }
    for (unsigned char ch : url) {
      if (ch <= 0x20 || ch == 0x7f) {
        return Error(flag, "the URL contains spaces or control characters");
      }
    }
    std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
    if (auto at = authority.rfind('@'); at != std::string_view::npos) {
      authority = authority.substr(at + 1);
    }
    std::string_view host = authority;
    std::string_view port;
    if (authority.starts_with("[")) {
      const size_t close = authority.find(']');
      if (close == std::string_view::npos) return Error(flag, "unterminated [IPv6] host in URL");
      host = authority.substr(0, close + 1);
      std::string_view after = authority.substr(close + 1);
      if (!after.empty()) {
        if (after[0] != ':') return Error(flag, "unexpected text after the [IPv6] host");
        port = after.substr(1);
      }
    } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    if (host.empty() || host == "[]") return Error(flag, Cat("\"", url, "\" has no host"));
    if (!port.empty()) {
      int p = 0;
      if (!ParseInt(port, &p) || p < 1 || p > 65535) {
        return Error(flag, Cat("\"", port, "\" is not a port in [1,65535]"));
      }
    }
    return absl::OkStatus();
  }

  const FlagTable& table_;
  RawFlags& raw_;
  std::span<const std::string> args_;
  std::map<std::string, std::string, std::less<>> otel_source_;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsTokenChar(char c) {
  // RFC 9110 tchar: what an HTTP header name may contain.
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseTraceHeaders(
    std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  // Entries are named by position, never quoted: a mistyped entry such as
  // "Authorization:Bearer x" would otherwise print the credential.
  size_t position = 0;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view entry = TrimAscii(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    ++position;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(Cat(
          "entry ", position, " is not of the form key=value (not shown: it may hold a secret)"));
    }
    std::string_view key = TrimAscii(entry.substr(0, eq));
    std::string_view value = TrimAscii(entry.substr(eq + 1));
    if (key.empty()) {
      return absl::InvalidArgumentError(Cat("entry ", position, " has an empty key"));
    }
    if (!std::all_of(key.begin(), key.end(), IsTokenChar)) {
      return absl::InvalidArgumentError(Cat("\"", key, "\" is not a valid HTTP header name"));
    }
    std::string decoded;
    decoded.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
      if (value[i] != '%') {
        decoded.push_back(value[i]);
        continue;
      }
      const int hi = i + 2 < value.size() ? HexValue(value[i + 1]) : -1;
      const int lo = hi >= 0 ? HexValue(value[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(
            Cat("the value of \"", key, "\" has a malformed %-escape"));
      }
      decoded.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    }
    // A decoded CR or LF would let the value smuggle in extra header lines.
    for (unsigned char ch : decoded) {
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
        return absl::InvalidArgumentError(
            Cat("the value of \"", key, "\" contains control characters"));
      }
    }
    out.emplace_back(std::string(key), std::move(decoded));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> Config::Describe() const {
  auto opt_addr = [](const std::optional<HostPort>& hp) {
    return hp.has_value() ? hp->ToString() : std::string("disabled");
  };
  auto bool_text = [](bool b) { return std::string(b ? "true" : "false"); };
  std::string header_names;
  for (const auto& [k, v] : trace_headers) {
    if (!header_names.empty()) header_names += ',';
    header_names += k;
  }
  return {
      {"data-dir", data_dir},
      {"addr", addr.ToString()},
      {"metrics-addr", opt_addr(metrics_addr)},
      {"metrics-legacy-aliases", bool_text(metrics_legacy_aliases)},
      {"proxy-addr", opt_addr(proxy_addr)},
      {"proxy-ca-cert", proxy_ca_cert},
      {"proxy-ca-key", proxy_ca_key},
      {"proxy-history", proxy_history},
      {"proxy-flow-log", proxy_flow_log},
      {"flow-log-raw", bool_text(flow_log_raw)},
      {"flow-sample-rate", Cat(flow_sample_rate)},
      {"max-body-kb", Cat(max_body_kb)},
      {"scope-policy", scope_policy},
      {"plugins-dir", plugins_dir},
      {"workers", Cat(workers)},
      {"proxy-upstream-timeout", Cat(proxy_upstream_timeout)},
      {"plugin-restart-backoff", Cat(plugin_restart_backoff)},
      {"plugin-stop-grace", Cat(plugin_stop_grace)},
      {"proxy-idle-timeout", Cat(proxy_idle_timeout)},
      {"proxy-insecure-skip-verify", bool_text(proxy_insecure_skip_verify)},
      {"proxy-upstream-ca", proxy_upstream_ca},
      {"trace-endpoint", trace_endpoint},
      {"trace-protocol", trace_protocol},
      {"trace-header-names", header_names},
      {"trace-insecure-skip-verify", bool_text(trace_insecure_skip_verify)},
      {"trace-service-name", trace_service_name},
      {"trace-sample-ratio", Cat(trace_sample_ratio)},
      {"trace-file", trace_file},
      {"audit-log", audit_log},
      {"crash-dir", crash_dir},
  };
}

ParseResult ParseCommandLine(std::span<const std::string> args, std::ostream& out,
                             std::ostream& err) {
  ParseResult result;
  RawFlags raw;
  FlagTable table(raw);
  // CLI11 reads "--name=" (empty value) as "--name" without a value and then takes the next
  // argument as the value. An explicit empty value is meaningful here (it disables a
  // listener), so such arguments are split into "--name" "" which CLI11 does take literally.
  std::vector<std::string> split;
  split.reserve(args.size() + 1);
  bool options_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") options_ended = true;
    if (i > 0 && !options_ended && a.size() > 3 && a.starts_with("--") &&
        a.find('=') == a.size() - 1 &&
        table.TakesValue(std::string_view(a).substr(0, a.size() - 1))) {
      split.push_back(a.substr(0, a.size() - 1));
      split.emplace_back();
      continue;
    }
    split.push_back(a);
  }
  std::vector<const char*> argv;
  argv.reserve(split.size() + 2);
  if (split.empty()) argv.push_back("0xgend");
  for (const std::string& a : split) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  try {
    table.app().parse(static_cast<int>(argv.size() - 1), argv.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      // --help and --version.
      table.app().exit(e, out, err);
      result.exit_code = 0;
      return result;
    }
    std::string message = e.what();
    // CLI11 phrases a missing value in terms of C++ types.
    if (const std::string typed = ": 1 required TEXT missing"; message.ends_with(typed)) {
      message.replace(message.size() - typed.size(), typed.size(), ": a value is required");
    }
    err << "0xgend: " << Redactor::Default().Redact(message) << "\n"
        << "Run '0xgend --help' for the list of flags.\n";
    result.exit_code = 2;
    return result;
  }
  auto config = Finisher(table, raw, args).Run();
  if (!config.ok()) {
    // Messages may quote what the operator typed (a URL with a password, say).
    err << "0xgend: " << Redactor::Default().Redact(std::string(config.status().message())) << "\n";
    result.exit_code = 2;
    return result;
  }
  result.config = *std::move(config);
  return result;
}

ParseResult ParseCommandLine(int argc, const char* const* argv, std::ostream& out,
                             std::ostream& err) {
  std::vector<std::string> args(argv, argv + argc);
  return ParseCommandLine(std::span<const std::string>(args), out, err);
}

}  // namespace oxg::daemon
