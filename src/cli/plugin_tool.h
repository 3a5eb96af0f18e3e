#pragma once
// `0xgenctl plugin validate PATH...`: checks plugin manifests the way the daemon reads them.
// A PATH is a manifest file or a plugins directory (every <dir>/*/manifest.json in it).

#include <iosfwd>
#include <string>
#include <vector>

namespace oxg::cli {

// Prints one `ok: <file> (<name> <version>)` line per valid manifest on `out` and one
// `0xgenctl plugin validate: <file>: <field>: <reason>` line per problem on `err`.
// Returns 0 when every manifest is valid, 2 otherwise (or when no manifest was found).
int PluginValidate(const std::vector<std::string>& paths, std::ostream& out, std::ostream& err);

}  // namespace oxg::cli
