#include "plugins/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace oxg::plugins {
namespace {

constexpr char kGood[] = R"({
  "name": "passive-headers",
  "version": "0.1.0",
  "command": "./passive-headers",
  "args": ["--verbose"],
  "capabilities": ["CAP_EMIT_FINDINGS", "CAP_FLOW_INSPECT"],
  "subscriptions": ["FLOW_RESPONSE", "FLOW_RESPONSE"],
  "limits": {"cpu_seconds": 60, "memory_bytes": 268435456, "open_files": 64,
             "processes": 4, "wall_seconds": 30},
  "restart": "always",
  "config": {"min_severity": "low", "nested": {"x": [1, 2]}}
})";

TEST(ManifestTest, FullManifest) {
  auto m = ParseManifest(kGood, "/opt/p/passive-headers/manifest.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->name, "passive-headers");
  EXPECT_EQ(m->version, "0.1.0");
  EXPECT_EQ(m->command, "/opt/p/passive-headers/passive-headers");
  EXPECT_EQ(m->args, std::vector<std::string>{"--verbose"});
  EXPECT_TRUE(m->capabilities.Has(bus::Capability::kEmitFindings));
  EXPECT_TRUE(m->capabilities.Has(bus::Capability::kFlowInspect));
  EXPECT_FALSE(m->capabilities.Has(bus::Capability::kFlowInspectRaw));
  ASSERT_EQ(m->subscriptions.size(), 1u);  // duplicates collapse
  EXPECT_EQ(m->subscriptions[0], bus::Subscription::kFlowResponse);
  EXPECT_EQ(m->limits.cpu_seconds, 60u);
  EXPECT_EQ(m->limits.memory_bytes, 268435456u);
  EXPECT_EQ(m->limits.open_files, 64u);
  EXPECT_EQ(m->limits.processes, 4u);
  EXPECT_EQ(m->limits.wall_seconds, 30u);
  EXPECT_EQ(m->restart, RestartPolicy::kAlways);
  EXPECT_EQ(m->config_json, R"({"min_severity":"low","nested":{"x":[1,2]}})");
}

TEST(ManifestTest, MinimalManifestGetsDefaults) {
  auto m = ParseManifest(R"({"name":"a","version":"1","command":"/usr/bin/true"})", "m.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->command, "/usr/bin/true");  // absolute stays as is
  // A manifest found through a relative path still gets an absolute command: the plugin runs
  // in its own directory, not in the daemon's.
  auto rel = ParseManifest(R"({"name":"a","version":"1","command":"../../bin/p"})",
                           "./plugins/a/manifest.json");
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ(rel->command,
            (std::filesystem::current_path() / "bin/p").lexically_normal().string());
  EXPECT_TRUE(m->capabilities.empty());
  EXPECT_TRUE(m->subscriptions.empty());
  EXPECT_FALSE(m->limits.cpu_seconds.has_value());
  EXPECT_EQ(m->limits.memory_bytes, 512ull << 20);
  EXPECT_FALSE(m->limits.wall_seconds.has_value());
  EXPECT_EQ(m->restart, RestartPolicy::kOnFailure);
  EXPECT_EQ(m->config_json, "{}");
}

struct BadCase {
  const char* json;
  const char* error;  // the whole message after "m.json: "
};

TEST(ManifestTest, ErrorsNameFileFieldAndReason) {
  const BadCase cases[] = {
      {"", "(file): not valid JSON"},
      {"[1]", "(file): must be a JSON object"},
      {R"({"version":"1","command":"x"})", "name: missing"},
      {R"({"name":5,"version":"1","command":"x"})", "name: must be a string"},
      {R"({"name":"Bad Name","version":"1","command":"x"})",
       "name: \"Bad Name\" must match [a-z0-9][a-z0-9._-]{0,63}"},
      {R"({"name":"a","version":"","command":"x"})",
       "version: must be 1 to 64 printable ASCII characters"},
      {R"({"name":"a","version":"1","command":""})", "command: must not be empty"},
      {R"({"name":"a","version":"1","command":"x","limits":{"wall_seconds":99999999999}})",
       "limits.wall_seconds: must be at most 31622400"},
      {R"({"name":"a","version":"1","command":"x","limits":{"processes":70000}})",
       "limits.processes: must be at most 65536"},
      {R"({"name":"a","version":"1","command":"x","cmd":"y"})", "\"cmd\": unknown key"},
      {R"({"name":"a","version":"1","command":"x","args":"-v"})",
       "args: must be an array of strings"},
      {R"({"name":"a","version":"1","command":"x","args":["-v",3]})",
       "args[1]: must be a string"},
      {R"({"name":"a","version":"1","command":"x","capabilities":["CAP_EMIT_FINDINGS","CAP_ROOT"]})",
       "capabilities[1]: unknown capability \"CAP_ROOT\""},
      {R"({"name":"a","version":"1","command":"x","subscriptions":["FLOW_ALL"]})",
       "subscriptions[0]: unknown subscription \"FLOW_ALL\""},
      {R"({"name":"a","version":"1","command":"x","subscriptions":["FLOW_REQUEST"]})",
       "subscriptions[0]: FLOW_REQUEST needs CAP_FLOW_INSPECT in capabilities"},
      {R"({"name":"a","version":"1","command":"x","capabilities":["CAP_FLOW_INSPECT"],"subscriptions":["FLOW_REQUEST_RAW"]})",
       "subscriptions[0]: FLOW_REQUEST_RAW needs CAP_FLOW_INSPECT_RAW in capabilities"},
      {R"({"name":"a","version":"1","command":"x","limits":[]})", "limits: must be an object"},
      {R"({"name":"a","version":"1","command":"x","limits":{"memory_bytes":0}})",
       "limits.memory_bytes: must be an integer greater than 0"},
      {R"({"name":"a","version":"1","command":"x","limits":{"cpu_seconds":-5}})",
       "limits.cpu_seconds: must be an integer greater than 0"},
      {R"({"name":"a","version":"1","command":"x","limits":{"processes":"4"}})",
       "limits.processes: must be an integer greater than 0"},
      {R"({"name":"a","version":"1","command":"x","limits":{"open_files":1.5}})",
       "limits.open_files: must be an integer greater than 0"},
      {R"({"name":"a","version":"1","command":"x","limits":{"memory":1}})",
       "\"limits.memory\": unknown limit"},
      {R"({"name":"a","version":"1","command":"x","restart":"sometimes"})",
       "restart: \"sometimes\" is not one of always, on-failure, never"},
      {R"({"name":"a","version":"1","command":"x","config":[1]})", "config: must be an object"},
  };
  for (const BadCase& c : cases) {
    auto m = ParseManifest(c.json, "m.json");
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_EQ(m.status().message(), std::string("m.json: ") + c.error) << c.json;
  }
}

TEST(ManifestTest, OversizedFileIsRefused) {
  std::string big(kMaxManifestBytes + 1, ' ');
  auto m = ParseManifest(big, "m.json");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("larger than"), std::string_view::npos);
}

struct DirFixture : ::testing::Test {
  std::string root;
  void SetUp() override {
    char tmpl[] = "/tmp/oxg_manifest_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + root).c_str()); }
  void Write(const std::string& sub, const std::string& text) {
    ::mkdir((root + "/" + sub).c_str(), 0700);
    std::ofstream(root + "/" + sub + "/manifest.json") << text;
  }
};

TEST_F(DirFixture, LoadsGoodOnesReportsBadOnesAndDuplicateNames) {
  Write("b-second", R"({"name":"beta","version":"1","command":"run"})");
  Write("a-first", R"({"name":"alpha","version":"1","command":"run"})");
  Write("c-broken", R"({"name":"gamma","version":"1"})");
  Write("d-duplicate", R"({"name":"alpha","version":"2","command":"run"})");
  ::mkdir((root + "/e-empty").c_str(), 0700);  // no manifest: skipped silently
  std::ofstream(root + "/stray.json") << "{}";  // not a directory: skipped
  std::vector<std::string> errors;
  auto manifests = LoadManifestsFromDir(root, &errors);
  ASSERT_EQ(manifests.size(), 2u);
  EXPECT_EQ(manifests[0].name, "alpha");
  EXPECT_EQ(manifests[0].command, root + "/a-first/run");
  EXPECT_EQ(manifests[1].name, "beta");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0], root + "/c-broken/manifest.json: command: missing");
  EXPECT_EQ(errors[1], root + "/d-duplicate/manifest.json: name: \"alpha\" is already used by " +
                           root + "/a-first/manifest.json");
}

TEST_F(DirFixture, MissingDirectoryIsAnError) {
  std::vector<std::string> errors;
  EXPECT_TRUE(LoadManifestsFromDir(root + "/nope", &errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], root + "/nope: cannot be read");
}

}  // namespace
}  // namespace oxg::plugins
