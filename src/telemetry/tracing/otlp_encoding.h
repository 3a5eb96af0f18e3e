#pragma once

// OTLP ExportTraceServiceRequest encodings of a batch of spans: binary protobuf (for
// application/x-protobuf) and OTLP/JSON (hex ids, integer enums, lowerCamelCase keys, 64-bit
// integers as decimal strings), both written from the OTLP specification.

#include <span>
#include <string>

#include "telemetry/tracing/span_data.h"

namespace oxg::tracing {

struct InstrumentationScope {
  std::string name = "0xgen";
  std::string version;
};

std::string EncodeOtlpProtobuf(std::span<const SpanData> spans, const Resource& resource,
                               const InstrumentationScope& scope);
std::string EncodeOtlpJson(std::span<const SpanData> spans, const Resource& resource,
                           const InstrumentationScope& scope);

}  // namespace oxg::tracing
