// 0xgenctl: the operator CLI. Each subcommand parses its flags here and calls into a library.

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/plugin_tool.h"
#include "cli/proxy_ca_tool.h"
#include "common/build_info.h"
#include "telemetry/tracing/trace_tool.h"

int main(int argc, char** argv) {
  CLI::App app(
      "0xgenctl: operator tools for 0xgen (replay, export, findings, traces, proxy CA, crash "
      "bundles).",
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

  // proxy: tools around the capture proxy.
  CLI::App* proxy =
      app.add_subcommand("proxy", "Capture proxy tools (ca: show or trust the interception CA).");
  proxy->require_subcommand(1);
  oxg::cli::ProxyCaOptions ca_options;
  CLI::App* proxy_ca = proxy->add_subcommand(
      "ca",
      "Print the interception CA certificate (checked to be a CA; never the key), its "
      "fingerprint, or install it into the system or an NSS trust store.");
  proxy_ca->footer(oxg::cli::kProxyCaHelpFooter);
  proxy_ca
      ->add_option("--data-dir", ca_options.data_dir,
                   "The daemon's data dir; the certificate is <data-dir>/ca.pem.")
      ->capture_default_str();
  proxy_ca->add_option("--cert", ca_options.cert,
                       "The CA certificate file (what 0xgend --proxy-ca-cert names); overrides "
                       "--data-dir.");
  proxy_ca->add_option("--format", ca_options.format, "Output encoding: pem or der.")
      ->check(CLI::IsMember({"pem", "der"}))
      ->capture_default_str();
  proxy_ca->add_option("--out", ca_options.out,
                       "Write the certificate to this file (0644) instead of stdout.");
  proxy_ca->add_flag("--fingerprint", ca_options.fingerprint,
                     "Print the SHA-256 fingerprint (colon-separated hex) instead of the "
                     "certificate.");
  proxy_ca->add_flag("--install", ca_options.install,
                     "Copy it to /usr/local/share/ca-certificates/0xgen-<fingerprint>.crt and run "
                     "update-ca-certificates (needs root).");
  proxy_ca->add_option("--install-nss", ca_options.install_nss,
                       "Add it to the NSS database in this directory with certutil (a Firefox "
                       "profile, or ~/.pki/nssdb for Chrome); needs libnss3-tools.");
  proxy_ca->callback([&] { rc = oxg::cli::ProxyCa(ca_options, std::cout, std::cerr); });

  // plugin: tools around plugins.
  CLI::App* plugin = app.add_subcommand("plugin", "Plugin tools (validate: check manifests).");
  plugin->require_subcommand(1);
  std::vector<std::string> manifest_paths;
  CLI::App* plugin_validate = plugin->add_subcommand(
      "validate",
      "Check plugin manifests the way 0xgend reads them: each PATH is a manifest.json or a "
      "plugins directory (every <dir>/*/manifest.json). Exit 0 when all are valid, 2 otherwise.");
  plugin_validate->add_option("path", manifest_paths, "Manifest files or plugins directories.")
      ->required();
  plugin_validate->callback(
      [&] { rc = oxg::cli::PluginValidate(manifest_paths, std::cout, std::cerr); });

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
  for (CLI::App* group : {trace, proxy}) {
    if (argc > 2 && group->check_name(argv[1]) && argv[2][0] != '-') {
      bool known = false;
      for (const CLI::App* sub : group->get_subcommands({}))
        known = known || sub->check_name(argv[2]);
      if (!known) {
        std::cerr << "0xgenctl: unknown " << group->get_name() << " command \"" << argv[2] << "\"\n"
                  << "Run '0xgenctl " << group->get_name() << " --help' for the list of "
                  << group->get_name() << " commands.\n";
        return 2;
      }
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
