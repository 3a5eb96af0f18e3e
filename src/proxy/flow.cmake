# Flow builder (contract §8): defines oxg_proxy_flow.
oxg_library(oxg_proxy_flow
  SRCS flow/flow_builder.cc flow/base64.cc
  DEPS oxg_metrics)
