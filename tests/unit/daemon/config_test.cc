#include "daemon/config.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/daemon.h"

extern char** environ;

namespace oxg::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;

// Runs ParseCommandLine on `args` (without the program name) and keeps what it printed.
struct Parsed {
  ParseResult result;
  std::string out;
  std::string err;
  bool ok() const { return !result.exit_code.has_value(); }
  const Config& config() const { return result.config; }
};

Parsed Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "0xgend");
  std::ostringstream out;
  std::ostringstream err;
  Parsed p{ParseCommandLine(std::span<const std::string>(args), out, err), "", ""};
  p.out = out.str();
  p.err = err.str();
  return p;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The developer's own OXG_/OTEL_ variables must not leak into expectations.
    std::vector<std::string> names;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view kv(*e);
      if (kv.starts_with("OXG_") || kv.starts_with("OTEL_")) {
        names.emplace_back(kv.substr(0, kv.find('=')));
      }
    }
    for (const auto& n : names) unsetenv(n.c_str());
    char tmpl[] = "/tmp/oxg_config_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& n : set_env_) unsetenv(n.c_str());
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  void SetEnv(const std::string& name, const std::string& value) {
    setenv(name.c_str(), value.c_str(), 1);
    set_env_.push_back(name);
  }
  void Touch(const std::string& path, const std::string& content = "x") {
    std::ofstream(path) << content;
  }

  std::string dir_;
  std::vector<std::string> set_env_;
};

TEST_F(ConfigTest, Defaults) {
  Parsed p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  const Config& c = p.config();
  EXPECT_EQ(c.data_dir, "./oxg-data");
  EXPECT_EQ(c.addr.ToString(), "127.0.0.1:50051");
  EXPECT_EQ(c.token, "");
  ASSERT_TRUE(c.metrics_addr.has_value());
  EXPECT_EQ(c.metrics_addr->host, "");
  EXPECT_EQ(c.metrics_addr->port, 9090);
  EXPECT_TRUE(c.metrics_legacy_aliases);
  ASSERT_TRUE(c.proxy_addr.has_value());
  EXPECT_EQ(c.proxy_addr->ToString(), "127.0.0.1:8080");
  EXPECT_EQ(c.proxy_ca_cert, "./oxg-data/ca.pem");
  EXPECT_EQ(c.proxy_ca_key, "./oxg-data/ca-key.pem");
  EXPECT_EQ(c.proxy_history, "./oxg-data/proxy_history.jsonl");
  EXPECT_EQ(c.proxy_flow_log, "./oxg-data/proxy_flows.jsonl");
  EXPECT_FALSE(c.flow_log_raw);
  EXPECT_EQ(c.flow_sample_rate, 1.0);
  EXPECT_EQ(c.max_body_kb, 128);
  EXPECT_EQ(c.scope_policy, "");
  EXPECT_EQ(c.workers, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(c.trace_endpoint, "");
  EXPECT_EQ(c.trace_protocol, "http/protobuf");
  EXPECT_TRUE(c.trace_headers.empty());
  EXPECT_FALSE(c.trace_insecure_skip_verify);
  EXPECT_EQ(c.trace_service_name, "0xgend");
  EXPECT_EQ(c.trace_sample_ratio, 1.0);
  EXPECT_EQ(c.trace_file, "");
  EXPECT_EQ(c.audit_log, "./oxg-data/audit.jsonl");
  EXPECT_EQ(c.log_level, log::Level::kInfo);
  EXPECT_EQ(c.crash_dir, "./oxg-data/crash");
}

TEST_F(ConfigTest, DataDirDefaultsFollowDataDir) {
  Parsed p = Parse({"--data-dir", dir_ + "/d/", "--audit-log=-"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().proxy_ca_cert, dir_ + "/d/ca.pem");
  EXPECT_EQ(p.config().crash_dir, dir_ + "/d/crash");
  EXPECT_EQ(p.config().audit_log, "-");
}

TEST_F(ConfigTest, BothGnuForms) {
  Parsed p = Parse({"--metrics-addr", "127.0.0.1:0", "--workers=3", "--max-body-kb", "-1",
                    "--trace-sample-ratio=0.25", "--log-level", "DEBUG"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().metrics_addr->ToString(), "127.0.0.1:0");
  EXPECT_EQ(p.config().workers, 3);
  EXPECT_EQ(p.config().max_body_kb, -1);
  EXPECT_EQ(p.config().trace_sample_ratio, 0.25);
  EXPECT_EQ(p.config().log_level, log::Level::kDebug);
}

TEST_F(ConfigTest, PluginAdditions) {
  Parsed p = Parse({"--plugin-restart-backoff", "0.05", "--plugin-stop-grace=2"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().plugin_restart_backoff, 0.05);
  EXPECT_EQ(p.config().plugin_stop_grace, 2);
  Parsed d = Parse({});
  ASSERT_TRUE(d.ok()) << d.err;
  EXPECT_EQ(d.config().plugin_restart_backoff, 1);
  EXPECT_EQ(d.config().plugin_stop_grace, 5);
}

TEST_F(ConfigTest, ProxyAdditions) {
  Parsed p = Parse({"--proxy-upstream-timeout", "1.5", "--proxy-idle-timeout=7",
                    "--proxy-insecure-skip-verify"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().proxy_upstream_timeout, 1.5);
  EXPECT_EQ(p.config().proxy_idle_timeout, 7);
  EXPECT_TRUE(p.config().proxy_insecure_skip_verify);
  Parsed d = Parse({});
  ASSERT_TRUE(d.ok()) << d.err;
  EXPECT_EQ(d.config().proxy_upstream_timeout, 30);
  EXPECT_EQ(d.config().proxy_idle_timeout, 60);
  EXPECT_FALSE(d.config().proxy_insecure_skip_verify);
  EXPECT_EQ(d.config().proxy_upstream_ca, "");
}

TEST_F(ConfigTest, EmptyListenerAddressDisables) {
  Parsed p = Parse({"--metrics-addr=", "--proxy-addr", ""});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_FALSE(p.config().metrics_addr.has_value());
  EXPECT_FALSE(p.config().proxy_addr.has_value());
}

TEST_F(ConfigTest, EmptyEnvironmentListenerAddressDisables) {
  SetEnv("OXG_METRICS_ADDR", "");
  Parsed p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_FALSE(p.config().metrics_addr.has_value());
  EXPECT_TRUE(p.config().proxy_addr.has_value());
}

TEST_F(ConfigTest, BooleanFlagForms) {
  Parsed p = Parse(
      {"--flow-log-raw", "--metrics-legacy-aliases=false", "--trace-insecure-skip-verify=true"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_TRUE(p.config().flow_log_raw);
  EXPECT_FALSE(p.config().metrics_legacy_aliases);
  EXPECT_TRUE(p.config().trace_insecure_skip_verify);

  p = Parse({"--flow-log-raw=false", "--metrics-legacy-aliases", "--trace-insecure-skip-verify"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_FALSE(p.config().flow_log_raw);
  EXPECT_TRUE(p.config().metrics_legacy_aliases);
  EXPECT_TRUE(p.config().trace_insecure_skip_verify);
}

TEST_F(ConfigTest, BooleanFromEnvironment) {
  SetEnv("OXG_FLOW_LOG_RAW", "true");
  SetEnv("OXG_METRICS_LEGACY_ALIASES", "false");
  Parsed p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_TRUE(p.config().flow_log_raw);
  EXPECT_FALSE(p.config().metrics_legacy_aliases);
  // The command line wins.
  p = Parse({"--flow-log-raw=false"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_FALSE(p.config().flow_log_raw);
}

TEST_F(ConfigTest, EnvironmentFallbackAndFlagWins) {
  SetEnv("OXG_METRICS_ADDR", "127.0.0.1:9191");
  SetEnv("OXG_DATA_DIR", dir_);
  SetEnv("OXG_TOKEN", "env-token-0123456789");
  Parsed p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().metrics_addr->port, 9191);
  EXPECT_EQ(p.config().data_dir, dir_);
  EXPECT_EQ(p.config().token, "env-token-0123456789");
  EXPECT_EQ(p.config().audit_log, dir_ + "/audit.jsonl");

  p = Parse({"--metrics-addr", "127.0.0.1:9292"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().metrics_addr->port, 9292);
}

TEST_F(ConfigTest, BadEnvironmentValueNamesFlagAndVariable) {
  SetEnv("OXG_WORKERS", "0");
  Parsed p = Parse({});
  EXPECT_EQ(p.result.exit_code, 2);
  EXPECT_THAT(p.err, HasSubstr("--workers"));
  EXPECT_THAT(p.err, HasSubstr("OXG_WORKERS"));
  // Overridden by a good flag: fine.
  EXPECT_TRUE(Parse({"--workers", "2"}).ok());
}

TEST_F(ConfigTest, OtelFallbacks) {
  SetEnv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
  SetEnv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=a%20b");
  SetEnv("OTEL_SERVICE_NAME", "scanner-lab");
  SetEnv("OTEL_TRACES_SAMPLER_ARG", "0.5");
  Parsed p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().trace_endpoint, "http://collector:4318/v1/traces");
  EXPECT_THAT(p.config().trace_headers, ::testing::ElementsAre(Pair("x-tenant", "a b")));
  EXPECT_EQ(p.config().trace_service_name, "scanner-lab");
  EXPECT_EQ(p.config().trace_sample_ratio, 0.5);

  // The signal-specific variable beats the base one, OXG_ beats both, the flag beats all.
  SetEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:4318/custom");
  p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().trace_endpoint, "https://traces:4318/custom");
  SetEnv("OXG_TRACE_ENDPOINT", "http://oxg:4318/v1/traces");
  SetEnv("OXG_TRACE_SERVICE_NAME", "from-oxg");
  p = Parse({});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().trace_endpoint, "http://oxg:4318/v1/traces");
  EXPECT_EQ(p.config().trace_service_name, "from-oxg");
  p = Parse({"--trace-endpoint", "http://flag:4318/v1/traces"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().trace_endpoint, "http://flag:4318/v1/traces");
}

TEST_F(ConfigTest, BadOtelValueNamesVariable) {
  SetEnv("OTEL_TRACES_SAMPLER_ARG", "1.5");
  Parsed p = Parse({});
  EXPECT_EQ(p.result.exit_code, 2);
  EXPECT_THAT(p.err, HasSubstr("--trace-sample-ratio"));
  EXPECT_THAT(p.err, HasSubstr("OTEL_TRACES_SAMPLER_ARG"));
}

struct BadCase {
  std::vector<std::string> args;
  std::string flag;
};

TEST_F(ConfigTest, BadValuesExit2NamingTheFlag) {
  const std::vector<BadCase> cases = {
      {{"--metrics-addr", "9090"}, "--metrics-addr"},
      {{"--metrics-addr", ":99999"}, "--metrics-addr"},
      {{"--proxy-addr=localhost"}, "--proxy-addr"},
      {{"--addr", ""}, "--addr"},
      {{"--trace-sample-ratio", "2"}, "--trace-sample-ratio"},
      {{"--trace-sample-ratio", "-0.1"}, "--trace-sample-ratio"},
      {{"--trace-sample-ratio", "nan"}, "--trace-sample-ratio"},
      {{"--flow-sample-rate", "abc"}, "--flow-sample-rate"},
      {{"--flow-sample-rate", "0.5x"}, "--flow-sample-rate"},
      {{"--workers", "0"}, "--workers"},
      {{"--workers", "two"}, "--workers"},
      {{"--max-body-kb", "-2"}, "--max-body-kb"},
      {{"--max-body-kb", "1k"}, "--max-body-kb"},
      {{"--proxy-upstream-timeout", "0"}, "--proxy-upstream-timeout"},
      {{"--proxy-upstream-timeout", "-1"}, "--proxy-upstream-timeout"},
      {{"--proxy-upstream-timeout", "30s"}, "--proxy-upstream-timeout"},
      {{"--proxy-upstream-timeout", "86401"}, "--proxy-upstream-timeout"},
      {{"--proxy-idle-timeout", "inf"}, "--proxy-idle-timeout"},
      {{"--plugin-restart-backoff", "0"}, "--plugin-restart-backoff"},
      {{"--plugin-stop-grace", "soon"}, "--plugin-stop-grace"},
      {{"--proxy-idle-timeout="}, "--proxy-idle-timeout"},
      {{"--proxy-upstream-ca", "/nonexistent/ca.pem"}, "--proxy-upstream-ca"},
      {{"--proxy-insecure-skip-verify=perhaps"}, "--proxy-insecure-skip-verify"},
      {{"--trace-protocol", "grpc"}, "--trace-protocol"},
      {{"--trace-endpoint", "collector:4318"}, "--trace-endpoint"},
      {{"--trace-endpoint", "ftp://collector/v1/traces"}, "--trace-endpoint"},
      {{"--trace-endpoint", "http:///v1/traces"}, "--trace-endpoint"},
      {{"--trace-endpoint", "http://collector:0/v1/traces"}, "--trace-endpoint"},
      {{"--trace-headers", "novalue"}, "--trace-headers"},
      {{"--trace-headers", "a=%zz"}, "--trace-headers"},
      {{"--trace-headers", "a=b%0d%0aInjected: 1"}, "--trace-headers"},
      {{"--log-level", "verbose"}, "--log-level"},
      {{"--scope-policy", "/nonexistent/scope.yaml"}, "--scope-policy"},
      {{"--plugins-dir", "/nonexistent/plugins"}, "--plugins-dir"},
      {{"--audit-log="}, "--audit-log"},
      {{"--data-dir="}, "--data-dir"},
      {{"--trace-service-name="}, "--trace-service-name"},
      {{"--flow-log-raw=maybe"}, "--flow-log-raw"},
      {{"--no-such-flag"}, "--no-such-flag"},
      {{"--metrics-addr"}, "--metrics-addr"},
      {{"stray"}, "stray"},
  };
  for (const BadCase& c : cases) {
    Parsed p = Parse(c.args);
    EXPECT_EQ(p.result.exit_code, 2) << ::testing::PrintToString(c.args);
    EXPECT_THAT(p.err, HasSubstr(c.flag)) << ::testing::PrintToString(c.args);
    EXPECT_TRUE(p.err.starts_with("0xgend: ")) << p.err;
  }
}

TEST_F(ConfigTest, ExistingPathsAccepted) {
  const std::string scope = dir_ + "/scope.yaml";
  Touch(scope, "version: 1\n");
  Parsed p = Parse({"--scope-policy", scope, "--plugins-dir", dir_});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().scope_policy, scope);
  EXPECT_EQ(p.config().plugins_dir, dir_);
  // The scope policy must be a file and the plugins dir a directory.
  EXPECT_EQ(Parse({"--scope-policy", dir_}).result.exit_code, 2);
  EXPECT_EQ(Parse({"--plugins-dir", scope}).result.exit_code, 2);
}

TEST_F(ConfigTest, CaCertAndKeyMustComeTogether) {
  Touch(dir_ + "/ca.pem");
  Parsed p = Parse({"--data-dir", dir_});
  EXPECT_EQ(p.result.exit_code, 2);
  EXPECT_THAT(p.err, HasSubstr("--proxy-ca-key"));
  EXPECT_THAT(p.err, HasSubstr(dir_ + "/ca-key.pem"));

  Touch(dir_ + "/ca-key.pem");
  EXPECT_TRUE(Parse({"--data-dir", dir_}).ok());

  p = Parse({"--data-dir", dir_, "--proxy-ca-cert", dir_ + "/other.pem"});
  EXPECT_EQ(p.result.exit_code, 2);
  EXPECT_THAT(p.err, HasSubstr("--proxy-ca-cert"));
}

TEST_F(ConfigTest, HelpListsEveryFlagWithDefaultAndEnv) {
  Parsed p = Parse({"--help"});
  EXPECT_EQ(p.result.exit_code, 0);
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"--data-dir", "./oxg-data"},
      {"--addr", "127.0.0.1:50051"},
      {"--token", "generated"},
      {"--metrics-addr", ":9090"},
      {"--metrics-legacy-aliases", "true"},
      {"--proxy-addr", "127.0.0.1:8080"},
      {"--proxy-ca-cert", "<data-dir>/ca.pem"},
      {"--proxy-ca-key", "<data-dir>/ca-key.pem"},
      {"--proxy-history", "<data-dir>/proxy_history.jsonl"},
      {"--proxy-flow-log", "<data-dir>/proxy_flows.jsonl"},
      {"--flow-log-raw", "false"},
      {"--flow-sample-rate", "1.0"},
      {"--max-body-kb", "128"},
      {"--scope-policy", "none"},
      {"--plugins-dir", "./plugins if it exists"},
      {"--workers", "number of cores"},
      {"--trace-endpoint", "none"},
      {"--trace-protocol", "http/protobuf"},
      {"--trace-headers", "none"},
      {"--trace-insecure-skip-verify", "false"},
      {"--trace-service-name", "0xgend"},
      {"--trace-sample-ratio", "1.0"},
      {"--trace-file", "none"},
      {"--audit-log", "<data-dir>/audit.jsonl"},
      {"--log-level", "info"},
      {"--crash-dir", "<data-dir>/crash"},
  };
  for (const auto& [flag, def] : flags) {
    const size_t at = p.out.find("  " + flag + " ");
    ASSERT_NE(at, std::string::npos) << flag << "\n" << p.out;
    // The default and variable follow the flag, before the next flag.
    const size_t next = p.out.find("\n  --", at + 1);
    const std::string entry = p.out.substr(at, next - at);
    EXPECT_THAT(entry, HasSubstr("[default: " + def)) << entry;
    std::string env = "OXG_";
    for (char ch : flag.substr(2)) env.push_back(ch == '-' ? '_' : static_cast<char>(toupper(ch)));
    EXPECT_THAT(entry, HasSubstr("[env: " + env + "]")) << entry;
  }
}

TEST_F(ConfigTest, Version) {
  Parsed p = Parse({"--version"});
  EXPECT_EQ(p.result.exit_code, 0);
  EXPECT_THAT(p.out, HasSubstr("0xgend "));
}

TEST_F(ConfigTest, RepeatedFlagLastWins) {
  Parsed p = Parse({"--workers", "2", "--workers", "5"});
  ASSERT_TRUE(p.ok()) << p.err;
  EXPECT_EQ(p.config().workers, 5);
}

TEST_F(ConfigTest, DescribeLeavesSecretsOut) {
  Parsed p = Parse(
      {"--token", "super-secret-token-value", "--trace-headers", "authorization=Bearer%20abc"});
  ASSERT_TRUE(p.ok()) << p.err;
  for (const auto& [k, v] : p.config().Describe()) {
    EXPECT_THAT(v, ::testing::Not(HasSubstr("super-secret-token-value"))) << k;
    EXPECT_THAT(v, ::testing::Not(HasSubstr("abc"))) << k;
  }
}

TEST(TraceHeadersTest, Parses) {
  auto h = ParseTraceHeaders(" api-key = a%3Db%2Cc ,x-b3=1,, ");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(*h, ::testing::ElementsAre(Pair("api-key", "a=b,c"), Pair("x-b3", "1")));
  EXPECT_TRUE(ParseTraceHeaders("")->empty());
  EXPECT_FALSE(ParseTraceHeaders("=v").ok());
  EXPECT_FALSE(ParseTraceHeaders("a b=c").ok());
  EXPECT_FALSE(ParseTraceHeaders("a=%4").ok());
  EXPECT_FALSE(ParseTraceHeaders("a=%").ok());
}

// ---- data dir and token -------------------------------------------------------------------

class DataDirTest : public ConfigTest {};

TEST_F(DataDirTest, CreatesNestedDirsOwnerOnly) {
  const std::string path = dir_ + "/a/b/c";
  ASSERT_TRUE(EnsureDataDir(path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat((dir_ + "/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // Existing is fine.
  EXPECT_TRUE(EnsureDataDir(path).ok());
  EXPECT_TRUE(EnsureDataDir(path + "/").ok());
}

TEST_F(DataDirTest, PathUnderAFileFailsNamingIt) {
  const std::string file = dir_ + "/file";
  Touch(file);
  auto st = EnsureDataDir(file + "/sub");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr(file + "/sub"));
  st = EnsureDataDir(file);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr(file));
}

TEST_F(DataDirTest, TokenGeneratedThenReused) {
  TokenSource source;
  auto first = LoadOrCreateToken(dir_, &source);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(source, TokenSource::kGenerated);
  EXPECT_EQ(first->size(), 64u);
  EXPECT_EQ(first->find_first_not_of("0123456789abcdef"), std::string::npos);
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto second = LoadOrCreateToken(dir_, &source);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(source, TokenSource::kFile);
  EXPECT_EQ(*second, *first);
}

TEST_F(DataDirTest, TokenFileModeIsTightenedAndWhitespaceTrimmed) {
  const std::string path = dir_ + "/token";
  Touch(path, "  handwritten-token-123456\n");
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  auto token = LoadOrCreateToken(dir_);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "handwritten-token-123456");
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(DataDirTest, EmptyTokenFileIsAnError) {
  Touch(dir_ + "/token", "\n");
  auto token = LoadOrCreateToken(dir_);
  ASSERT_FALSE(token.ok());
  EXPECT_THAT(std::string(token.status().message()), HasSubstr("empty"));
}

}  // namespace
}  // namespace oxg::daemon
