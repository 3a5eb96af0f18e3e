#include "cli/plugin_tool.h"

#include <sys/stat.h>

#include <ostream>

#include "plugins/manifest.h"

namespace oxg::cli {

int PluginValidate(const std::vector<std::string>& paths, std::ostream& out, std::ostream& err) {
  constexpr const char* kPrefix = "0xgenctl plugin validate: ";
  int rc = 0;
  size_t found = 0;
  auto ok = [&](const plugins::Manifest& m) {
    ++found;
    out << "ok: " << m.path << " (" << m.name << " " << m.version << ")\n";
  };
  for (const std::string& path : paths) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      err << kPrefix << path << ": no such file or directory\n";
      ++found;  // reported: no need to add "no manifest found"
      rc = 2;
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      std::vector<std::string> errors;
      for (const plugins::Manifest& m : plugins::LoadManifestsFromDir(path, &errors)) ok(m);
      for (const std::string& e : errors) err << kPrefix << e << "\n";
      found += errors.size();
      if (!errors.empty()) rc = 2;
      continue;
    }
    absl::StatusOr<plugins::Manifest> m = plugins::LoadManifest(path);
    if (m.ok()) {
      ok(*m);
    } else {
      ++found;
      err << kPrefix << m.status().message() << "\n";
      rc = 2;
    }
  }
  if (found == 0) {
    err << kPrefix << "no manifest found (a plugins directory holds <name>/manifest.json)\n";
    rc = 2;
  }
  return rc;
}

}  // namespace oxg::cli
