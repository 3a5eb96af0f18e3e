// Where a plugin's name, bus address and daemon token come from (docs/plugins.md): an explicit
// option wins, then OXG_AUTH_TOKEN_FD, OXG_AUTH_TOKEN_FILE, OXG_AUTH_TOKEN, in that order.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "oxg/sdk/plugin.h"

namespace oxg::sdk {
namespace {

class FakeEnv {
 public:
  FakeEnv& Set(const std::string& k, const std::string& v) {
    vars_[k] = v;
    return *this;
  }
  EnvLookup Lookup() const {
    return [this](const std::string& k) -> std::optional<std::string> {
      auto it = vars_.find(k);
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

// A pipe holding `data`, write end closed; returns the read end.
int PipeWith(const std::string& data) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  EXPECT_EQ(::write(fds[1], data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fds[1]);
  return fds[0];
}

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char tmpl[] = "/tmp/oxg_sdk_token_XXXXXX";
    const int fd = ::mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
    std::ofstream(path_) << content;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SdkOptions, DefaultsFromEnvironment) {
  FakeEnv env;
  env.Set("OXG_PLUGIN_NAME", "from-env").Set("OXG_AUTH_TOKEN", "  tok\n");
  PluginOptions o;
  ASSERT_TRUE(ResolveOptions(&o, env.Lookup()).ok());
  EXPECT_EQ(o.name, "from-env");
  EXPECT_EQ(o.addr, "127.0.0.1:50051");
  EXPECT_EQ(o.token, "tok");
}

TEST(SdkOptions, ExplicitOptionsWin) {
  FakeEnv env;
  TempFile file("file-token");
  env.Set("OXG_PLUGIN_NAME", "env-name")
      .Set("OXG_BUS_ADDR", "10.0.0.1:1")
      .Set("OXG_AUTH_TOKEN_FILE", file.path())
      .Set("OXG_AUTH_TOKEN", "var-token");
  PluginOptions o{.name = "code-name", .addr = "127.0.0.1:9", .token = "code-token"};
  ASSERT_TRUE(ResolveOptions(&o, env.Lookup()).ok());
  EXPECT_EQ(o.name, "code-name");
  EXPECT_EQ(o.addr, "127.0.0.1:9");
  EXPECT_EQ(o.token, "code-token");
}

TEST(SdkOptions, FdBeatsFileBeatsVariable) {
  TempFile file("file-token\n");
  FakeEnv env;
  env.Set("OXG_PLUGIN_NAME", "p")
      .Set("OXG_AUTH_TOKEN_FILE", file.path())
      .Set("OXG_AUTH_TOKEN", "var-token");
  {
    PluginOptions o;
    ASSERT_TRUE(ResolveOptions(&o, env.Lookup()).ok());
    EXPECT_EQ(o.token, "file-token");
  }
  const int fd = PipeWith("fd-token\r\n");
  env.Set("OXG_AUTH_TOKEN_FD", std::to_string(fd));
  {
    PluginOptions o;
    ASSERT_TRUE(ResolveOptions(&o, env.Lookup()).ok());
    EXPECT_EQ(o.token, "fd-token");
  }
  // The descriptor is single use: read and closed.
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);
  {
    PluginOptions o;
    const Status s = ResolveOptions(&o, env.Lookup());
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(s.message().find("OXG_AUTH_TOKEN_FD"), std::string::npos) << s.ToString();
  }
}

TEST(SdkOptions, Errors) {
  FakeEnv none;
  PluginOptions o;
  Status s = ResolveOptions(&o, none.Lookup());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("OXG_PLUGIN_NAME"), std::string::npos);

  o = PluginOptions{.name = "p"};
  s = ResolveOptions(&o, none.Lookup());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token"), std::string::npos);

  FakeEnv bad_fd;
  bad_fd.Set("OXG_AUTH_TOKEN_FD", "three");
  o = PluginOptions{.name = "p"};
  s = ResolveOptions(&o, bad_fd.Lookup());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("OXG_AUTH_TOKEN_FD"), std::string::npos);

  FakeEnv empty_fd;
  empty_fd.Set("OXG_AUTH_TOKEN_FD", std::to_string(PipeWith(" \n")));
  o = PluginOptions{.name = "p"};
  s = ResolveOptions(&o, empty_fd.Lookup());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);

  FakeEnv missing_file;
  missing_file.Set("OXG_AUTH_TOKEN_FILE", "/nonexistent/oxg/token");
  o = PluginOptions{.name = "p"};
  s = ResolveOptions(&o, missing_file.Lookup());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("/nonexistent/oxg/token"), std::string::npos);

  TempFile big(std::string(5000, 'a'));
  FakeEnv big_file;
  big_file.Set("OXG_AUTH_TOKEN_FILE", big.path());
  o = PluginOptions{.name = "p"};
  EXPECT_EQ(ResolveOptions(&o, big_file.Lookup()).code(), StatusCode::kInvalidArgument);
}

TEST(SdkOptions, EmptyVariablesCountAsUnset) {
  FakeEnv env;
  env.Set("OXG_PLUGIN_NAME", "p").Set("OXG_AUTH_TOKEN_FD", "").Set("OXG_AUTH_TOKEN", "t");
  PluginOptions o;
  ASSERT_TRUE(ResolveOptions(&o, env.Lookup()).ok());
  EXPECT_EQ(o.token, "t");
}

TEST(SdkStatus, TemporaryAndFatalCodes) {
  for (StatusCode c : {StatusCode::kUnavailable, StatusCode::kAlreadyExists,
                       StatusCode::kResourceExhausted, StatusCode::kDeadlineExceeded}) {
    EXPECT_TRUE(IsTemporary(c)) << StatusCodeName(c);
  }
  for (StatusCode c : {StatusCode::kUnauthenticated, StatusCode::kPermissionDenied,
                       StatusCode::kInvalidArgument, StatusCode::kFailedPrecondition}) {
    EXPECT_FALSE(IsTemporary(c)) << StatusCodeName(c);
  }
  EXPECT_EQ(Status(StatusCode::kPermissionDenied, "no").ToString(), "PERMISSION_DENIED: no");
  EXPECT_EQ(Status().ToString(), "OK");
}

}  // namespace
}  // namespace oxg::sdk
