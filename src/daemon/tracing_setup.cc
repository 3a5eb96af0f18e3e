#include "daemon/tracing_setup.h"

#include <unistd.h>

#include "common/build_info.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/strings.h"
#include "telemetry/tracing/batch_processor.h"
#include "telemetry/tracing/chrome_trace.h"
#include "telemetry/tracing/otlp_http_exporter.h"

namespace oxg::daemon {

tracing::Resource DaemonResource(const Config& config) {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  tracing::Resource r;
  r.attributes = {
      {"service.name", config.trace_service_name},
      {"service.version", std::string(kVersion)},
      {"service.instance.id", NewUlid()},
      {"host.name", std::string(host)},
      {"process.pid", static_cast<int64_t>(::getpid())},
      {"telemetry.sdk.name", std::string("0xgen")},
      {"telemetry.sdk.language", std::string("cpp")},
      {"telemetry.sdk.version", std::string(kVersion)},
  };
  return r;
}

absl::StatusOr<TracingSetup> SetUpTracing(const Config& config, metrics::Registry& registry) {
  TracingSetup setup;
  setup.stats = std::make_unique<tracing::TracingStats>(registry);
  setup.tracer = std::make_unique<tracing::Tracer>(
      tracing::TracerOptions{config.trace_sample_ratio}, Clock::Real());
  const bool wanted = !config.trace_endpoint.empty() || !config.trace_file.empty();
  if (!wanted) return setup;
  if (!(config.trace_sample_ratio > 0)) {
    log::Info("tracing", "tracing disabled by --trace-sample-ratio 0");
    return setup;
  }
  const tracing::Resource resource = DaemonResource(config);
  const tracing::InstrumentationScope scope{"0xgen", kVersion};

  if (!config.trace_file.empty()) {
    tracing::ChromeTraceOptions options;
    options.process_name = config.trace_service_name;
    auto exporter = tracing::ChromeTraceFileExporter::Open(config.trace_file, options);
    if (!exporter.ok()) {
      return absl::InvalidArgumentError(Cat("--trace-file: ", exporter.status().message()));
    }
    setup.tracer->AddProcessor(std::make_unique<tracing::BatchSpanProcessor>(
        *std::move(exporter), tracing::BatchOptions{}, setup.stats.get()));
    log::Info("tracing", Cat("writing spans to ", config.trace_file));
  }
  if (!config.trace_endpoint.empty()) {
    tracing::OtlpHttpExporterOptions options;
    options.endpoint = config.trace_endpoint;
    if (!tracing::ParseOtlpProtocol(config.trace_protocol, &options.protocol)) {
      return absl::InvalidArgumentError(
          Cat("--trace-protocol: unknown protocol ", config.trace_protocol));
    }
    options.headers = config.trace_headers;
    options.insecure_skip_verify = config.trace_insecure_skip_verify;
    options.resource = resource;
    options.scope = scope;
    options.stats = setup.stats.get();
    auto exporter = tracing::OtlpHttpExporter::Create(std::move(options));
    if (!exporter.ok()) {
      return absl::InvalidArgumentError(Cat("--trace-endpoint: ", exporter.status().message()));
    }
    setup.tracer->AddProcessor(std::make_unique<tracing::BatchSpanProcessor>(
        *std::move(exporter), tracing::BatchOptions{}, setup.stats.get()));
    // The URL may carry credentials; the log line is redacted like every other.
    log::Info("tracing", Cat("exporting spans over OTLP/HTTP (", config.trace_protocol, ") to ",
                             config.trace_endpoint));
  }
  tracing::InstallContextHooks();
  setup.enabled = true;
  return setup;
}

}  // namespace oxg::daemon
