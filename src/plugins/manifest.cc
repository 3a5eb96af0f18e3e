#include "plugins/manifest.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/status.h"
#include "common/strings.h"

namespace oxg::plugins {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& path, std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(oxg::Cat(path, ": ", field, ": ", reason));
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool PrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

// A string shown back in an error: quoted, cut short, control bytes escaped by nlohmann.
std::string Shown(const json& v) {
  std::string text = v.dump(-1, ' ', true, json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

absl::StatusOr<std::vector<std::string>> StringArray(const json& v, const std::string& path,
                                                     std::string_view field) {
  if (!v.is_array()) return Bad(path, field, "must be an array of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      return Bad(path, oxg::Cat(field, "[", std::to_string(i), "]"), "must be a string");
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string_view RestartPolicyName(RestartPolicy p) {
  switch (p) {
    case RestartPolicy::kAlways: return "always";
    case RestartPolicy::kOnFailure: return "on-failure";
    case RestartPolicy::kNever: return "never";
  }
  return "on-failure";
}

absl::StatusOr<Manifest> ParseManifest(std::string_view text, const std::string& path) {
  if (text.size() > kMaxManifestBytes) {
    return Bad(path, "(file)", oxg::Cat("larger than ", std::to_string(kMaxManifestBytes),
                                        " bytes"));
  }
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad(path, "(file)", "not valid JSON");
  if (!doc.is_object()) return Bad(path, "(file)", "must be a JSON object");

  static constexpr std::string_view kKeys[] = {"name",          "version", "command",
                                               "args",          "capabilities",
                                               "subscriptions", "limits",  "restart",
                                               "config"};
  for (const auto& [key, value] : doc.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return Bad(path, Shown(json(key)), "unknown key");
    }
  }

  Manifest m;
  m.path = path;

  // name, version, command: required strings.
  for (std::string_view key : {"name", "version", "command"}) {
    auto it = doc.find(std::string(key));
    if (it == doc.end()) return Bad(path, key, "missing");
    if (!it->is_string()) return Bad(path, key, "must be a string");
  }
  m.name = doc["name"].get<std::string>();
  if (!ValidName(m.name)) {
    return Bad(path, "name",
               oxg::Cat(Shown(doc["name"]), " must match [a-z0-9][a-z0-9._-]{0,63}"));
  }
  m.version = doc["version"].get<std::string>();
  if (m.version.empty() || m.version.size() > 64 || !PrintableAscii(m.version)) {
    return Bad(path, "version", "must be 1 to 64 printable ASCII characters");
  }
  std::string command = doc["command"].get<std::string>();
  if (command.empty()) return Bad(path, "command", "must not be empty");
  if (command.find('\0') != std::string::npos) return Bad(path, "command", "contains NUL");
  // Absolute and normalized whatever the daemon's working directory: the plugin is started in
  // its manifest's directory, where a path relative to ours would no longer hold.
  m.command = command[0] == '/'
                  ? command
                  : std::filesystem::absolute(oxg::Cat(DirName(path), "/", command))
                        .lexically_normal()
                        .string();

  if (auto it = doc.find("args"); it != doc.end()) {
    OXG_ASSIGN_OR_RETURN(m.args, StringArray(*it, path, "args"));
    for (size_t i = 0; i < m.args.size(); ++i) {
      if (m.args[i].find('\0') != std::string::npos) {
        return Bad(path, oxg::Cat("args[", std::to_string(i), "]"), "contains NUL");
      }
    }
  }

  if (auto it = doc.find("capabilities"); it != doc.end()) {
    OXG_ASSIGN_OR_RETURN(std::vector<std::string> names,
                         StringArray(*it, path, "capabilities"));
    for (size_t i = 0; i < names.size(); ++i) {
      std::optional<bus::Capability> c = bus::ParseCapability(names[i]);
      if (!c) {
        return Bad(path, oxg::Cat("capabilities[", std::to_string(i), "]"),
                   oxg::Cat("unknown capability ", Shown(json(names[i]))));
      }
      m.capabilities.Add(*c);
    }
  }

  if (auto it = doc.find("subscriptions"); it != doc.end()) {
    OXG_ASSIGN_OR_RETURN(std::vector<std::string> names,
                         StringArray(*it, path, "subscriptions"));
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string field = oxg::Cat("subscriptions[", std::to_string(i), "]");
      std::optional<bus::Subscription> s = bus::ParseSubscription(names[i]);
      if (!s) return Bad(path, field, oxg::Cat("unknown subscription ", Shown(json(names[i]))));
      bus::CapabilitySet need = bus::RequiredCapabilities(*s);
      if (!need.IsSubsetOf(m.capabilities)) {
        std::string missing;
        for (std::string_view n : need.Names()) {
          if (!m.capabilities.Has(*bus::ParseCapability(n))) {
            missing += missing.empty() ? std::string(n) : oxg::Cat(", ", n);
          }
        }
        return Bad(path, field,
                   oxg::Cat(bus::SubscriptionName(*s), " needs ", missing, " in capabilities"));
      }
      if (std::find(m.subscriptions.begin(), m.subscriptions.end(), *s) ==
          m.subscriptions.end()) {
        m.subscriptions.push_back(*s);
      }
    }
  }

  if (auto it = doc.find("limits"); it != doc.end()) {
    if (!it->is_object()) return Bad(path, "limits", "must be an object");
    for (const auto& [key, value] : it->items()) {
      const std::string field = oxg::Cat("limits.", key);
      if (!value.is_number_unsigned() || value.get<uint64_t>() == 0) {
        if (key == "cpu_seconds" || key == "memory_bytes" || key == "open_files" ||
            key == "processes" || key == "wall_seconds") {
          return Bad(path, field, "must be an integer greater than 0");
        }
      }
      // Upper bounds keep every later computation (deadlines in nanoseconds, rlimits plus one,
      // multiples of the process count) far from overflow.
      static constexpr std::pair<std::string_view, uint64_t> kMax[] = {
          {"cpu_seconds", 366ull * 86400},   {"wall_seconds", 366ull * 86400},
          {"memory_bytes", 1ull << 48},      {"open_files", 1ull << 20},
          {"processes", 1ull << 16}};
      for (const auto& [name, max] : kMax) {
        if (key == name && value.get<uint64_t>() > max) {
          return Bad(path, field, oxg::Cat("must be at most ", max));
        }
      }
      if (key == "cpu_seconds") {
        m.limits.cpu_seconds = value.get<uint64_t>();
      } else if (key == "memory_bytes") {
        m.limits.memory_bytes = value.get<uint64_t>();
      } else if (key == "open_files") {
        m.limits.open_files = value.get<uint64_t>();
      } else if (key == "processes") {
        m.limits.processes = value.get<uint64_t>();
      } else if (key == "wall_seconds") {
        m.limits.wall_seconds = value.get<uint64_t>();
      } else {
        return Bad(path, Shown(json(field)), "unknown limit");
      }
    }
  }

  if (auto it = doc.find("restart"); it != doc.end()) {
    if (!it->is_string()) return Bad(path, "restart", "must be a string");
    const std::string v = it->get<std::string>();
    if (v == "always") {
      m.restart = RestartPolicy::kAlways;
    } else if (v == "on-failure") {
      m.restart = RestartPolicy::kOnFailure;
    } else if (v == "never") {
      m.restart = RestartPolicy::kNever;
    } else {
      return Bad(path, "restart",
                 oxg::Cat(Shown(*it), " is not one of always, on-failure, never"));
    }
  }

  if (auto it = doc.find("config"); it != doc.end()) {
    if (!it->is_object()) return Bad(path, "config", "must be an object");
    m.config_json = it->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return m;
}

absl::StatusOr<Manifest> LoadManifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Bad(path, "(file)", "cannot be read");
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxManifestBytes) break;
  }
  return ParseManifest(text, path);
}

std::vector<Manifest> LoadManifestsFromDir(const std::string& dir,
                                           std::vector<std::string>* errors) {
  std::vector<Manifest> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errors != nullptr) errors->push_back(oxg::Cat(dir, ": cannot be read"));
    return out;
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string sub = oxg::Cat(dir, "/", name);
    struct stat st;
    if (::stat(sub.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    const std::string path = oxg::Cat(sub, "/manifest.json");
    if (::stat(path.c_str(), &st) != 0) continue;  // a directory without a manifest
    absl::StatusOr<Manifest> m = LoadManifest(path);
    if (!m.ok()) {
      if (errors != nullptr) errors->push_back(std::string(m.status().message()));
      continue;
    }
    auto same = std::find_if(out.begin(), out.end(),
                             [&](const Manifest& other) { return other.name == m->name; });
    if (same != out.end()) {
      if (errors != nullptr) {
        errors->push_back(oxg::Cat(path, ": name: \"", m->name, "\" is already used by ",
                                   same->path));
      }
      continue;
    }
    out.push_back(*std::move(m));
  }
  return out;
}

}  // namespace oxg::plugins
