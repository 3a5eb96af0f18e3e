// 0xgenctl: the operator CLI. Each subcommand parses its flags here and calls into a library.

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <string_view>

#include "common/build_info.h"
#include "telemetry/tracing/trace_tool.h"

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

  // trace: read the span archive that 0xgend --trace-file writes.
  CLI::App* trace = app.add_subcommand(
      "trace", "Read the span archive written by 0xgend --trace-file (cat, tree, to-otlp-json).");
  trace->require_subcommand(1);
  trace->footer(
      "The archive is Chrome trace event JSON; open it in ui.perfetto.dev or chrome://tracing to "
      "see it on a timeline.");
  oxg::tracing::TraceToolOptions trace_options;
  std::string trace_file;
  std::string trace_id;
  int rc = 0;
  const auto add_file = [&](CLI::App* sub) {
    sub->add_option("file", trace_file, "The span archive (the --trace-file path).")->required();
    sub->add_flag("--rotated", trace_options.rotated,
                  "Also read the rotated files <file>.N ... <file>.1, oldest first.");
    sub->add_flag("--skip-bad-lines", trace_options.skip_bad_lines,
                  "Report malformed lines on stderr and go on instead of stopping at the first.");
  };
  CLI::App* trace_cat =
      trace->add_subcommand("cat",
                            "Print one line per span: start, duration, trace id, span id, "
                            "parent, kind, status, name, attributes.");
  add_file(trace_cat);
  trace_cat->callback(
      [&] { rc = oxg::tracing::TraceCat(trace_file, trace_options, std::cout, std::cerr); });
  CLI::App* trace_tree = trace->add_subcommand(
      "tree", "Print one trace as an indented tree of its spans, by start time, with durations.");
  trace_tree->add_option("trace_id", trace_id, "The trace id (32 hex digits).")->required();
  add_file(trace_tree);
  trace_tree->callback([&] {
    rc = oxg::tracing::TraceTree(trace_id, trace_file, trace_options, std::cout, std::cerr);
  });
  CLI::App* trace_otlp =
      trace->add_subcommand("to-otlp-json",
                            "Print the spans as one OTLP/JSON ExportTraceServiceRequest "
                            "(service.name from the archive).");
  add_file(trace_otlp);
  trace_otlp->callback(
      [&] { rc = oxg::tracing::TraceToOtlpJson(trace_file, trace_options, std::cout, std::cerr); });

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
  if (argc > 2 && std::string_view(argv[1]) == "trace" && argv[2][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : trace->get_subcommands({}))
      known = known || sub->check_name(argv[2]);
    if (!known) {
      std::cerr << "0xgenctl: unknown trace command \"" << argv[2] << "\"\n"
                << "Run '0xgenctl trace --help' for the list of trace commands.\n";
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
  return rc;
}
