// 0xgenctl: the operator CLI. Each subcommand parses its flags here and calls into a library.

#include <CLI/CLI.hpp>
#include <iostream>

#include "common/build_info.h"

int main(int argc, char** argv) {
  CLI::App app(
      "0xgenctl: operator tools for 0xgen (replay, export, findings, traces, crash bundles).",
      "0xgenctl");
  app.set_help_flag("-h,--help", "Print this help and exit.");
  app.require_subcommand(1);
  app.footer(
      "Run '0xgenctl <command> --help' for the flags of a command.\n"
      "Exit codes: 0 success, 1 runtime failure, 2 bad usage.");

  CLI::App* version = app.add_subcommand("version", "Print the version and build revision.");
  version->callback(
      [] { std::cout << "0xgenctl " << oxg::kVersion << " (" << oxg::kRevision << ")\n"; });

  // CLI11 would only say that a subcommand is required; name the word it did not know.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->check_name(argv[1]);
    if (!known) {
      std::cerr << "0xgenctl: unknown command \"" << argv[1] << "\"\n"
                << "Run '0xgenctl --help' for the list of commands.\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e, std::cout, std::cerr);
    std::cerr << "0xgenctl: " << e.what() << "\n"
              << "Run '0xgenctl --help' for the list of commands.\n";
    return 2;
  }
  return 0;
}
