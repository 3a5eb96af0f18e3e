# Owned by the span-archive work: defines oxg_trace_archive, the Chrome trace event span archive
# (--trace-file) and its reader behind `0xgenctl trace`.
oxg_library(oxg_trace_archive
  SRCS chrome_trace.cc trace_tool.cc
  DEPS oxg_tracing oxg_otlp nlohmann_json::nlohmann_json)
