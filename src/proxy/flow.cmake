# Flow builder (contract §8): defines oxg_proxy_flow.
oxg_library(oxg_proxy_flow
  SRCS flow/flow_builder.cc flow/base64.cc
  DEPS oxg_metrics)
# Capture pipeline (history, flow log, FlowSink): defines oxg_proxy_capture.
oxg_library(oxg_proxy_capture
  SRCS flow/flow_pipeline.cc
  DEPS oxg_proxy_flow oxg_proxy_http oxg_tracing)
