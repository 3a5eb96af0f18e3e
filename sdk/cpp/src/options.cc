// Status helpers and the environment lookup of docs/plugins.md ("What a plugin is given").
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "oxg/sdk/plugin.h"

namespace oxg::sdk {
namespace {

constexpr std::string_view kDefaultAddr = "127.0.0.1:50051";
// A daemon token is 64 hex characters; anything near this size is a wrong file.
constexpr size_t kMaxTokenBytes = 4096;

std::string Trim(std::string s) {
  const char* ws = " \t\r\n\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

Status Invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

// Reads the token from an inherited descriptor and closes it: the supervisor hands it over once.
Status ReadTokenFd(const std::string& spec, std::string* token) {
  int fd = -1;
  auto [ptr, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), fd);
  if (spec.empty() || ec != std::errc() || ptr != spec.data() + spec.size() || fd < 0) {
    return Invalid("OXG_AUTH_TOKEN_FD: not a file descriptor number: \"" + spec + "\"");
  }
  std::string data;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Status(StatusCode::kFailedPrecondition,
                    "OXG_AUTH_TOKEN_FD: cannot read fd " + spec + ": " + std::strerror(err));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxTokenBytes) {
      ::close(fd);
      return Invalid("OXG_AUTH_TOKEN_FD: more than 4096 bytes, not a token");
    }
  }
  ::close(fd);
  *token = Trim(std::move(data));
  if (token->empty()) return Invalid("OXG_AUTH_TOKEN_FD: fd " + spec + " held no token");
  return {};
}

Status ReadTokenFile(const std::string& path, std::string* token) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status(StatusCode::kFailedPrecondition,
                  "OXG_AUTH_TOKEN_FILE: cannot open " + path + ": " + std::strerror(errno));
  }
  std::string data(kMaxTokenBytes + 1, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<size_t>(in.gcount()));
  if (data.size() > kMaxTokenBytes) {
    return Invalid("OXG_AUTH_TOKEN_FILE: " + path + " is larger than 4096 bytes, not a token");
  }
  *token = Trim(std::move(data));
  if (token->empty()) return Invalid("OXG_AUTH_TOKEN_FILE: " + path + " holds no token");
  return {};
}

}  // namespace

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kCancelled:
      return "CANCELLED";
    case StatusCode::kUnknown:
      return "UNKNOWN";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kAborted:
      return "ABORTED";
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
    case StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(code_));
  if (!message_.empty()) {
    s.append(": ");
    s.append(message_);
  }
  return s;
}

bool IsTemporary(StatusCode code) {
  switch (code) {
    case StatusCode::kUnauthenticated:
    case StatusCode::kPermissionDenied:
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kNotFound:
    case StatusCode::kOutOfRange:
    case StatusCode::kUnimplemented:
      return false;
    default:
      return true;
  }
}

std::optional<std::string> ProcessEnv(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

Status ResolveOptions(PluginOptions* options, const EnvLookup& env) {
  auto get = [&](const char* name) -> std::optional<std::string> {
    std::optional<std::string> v = env(name);
    if (v && v->empty()) return std::nullopt;  // set but empty counts as unset
    return v;
  };
  if (options->name.empty()) {
    if (auto v = get("OXG_PLUGIN_NAME")) options->name = Trim(*v);
  }
  if (options->name.empty()) {
    return Invalid("no plugin name: set PluginOptions.name or OXG_PLUGIN_NAME");
  }
  if (options->addr.empty()) {
    auto v = get("OXG_BUS_ADDR");
    options->addr = v ? Trim(*v) : std::string(kDefaultAddr);
  }
  if (!options->token.empty()) {
    options->token = Trim(options->token);
  } else if (auto fd = get("OXG_AUTH_TOKEN_FD")) {
    if (Status s = ReadTokenFd(Trim(*fd), &options->token); !s.ok()) return s;
  } else if (auto file = get("OXG_AUTH_TOKEN_FILE")) {
    if (Status s = ReadTokenFile(*file, &options->token); !s.ok()) return s;
  } else if (auto token = get("OXG_AUTH_TOKEN")) {
    options->token = Trim(*token);
  }
  if (options->token.empty()) {
    return Invalid(
        "no daemon token: set PluginOptions.token, OXG_AUTH_TOKEN_FD, OXG_AUTH_TOKEN_FILE or "
        "OXG_AUTH_TOKEN");
  }
  return {};
}

}  // namespace oxg::sdk
