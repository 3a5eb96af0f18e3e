# The PluginBus gRPC service, its sessions and the RPC metrics interceptor: oxg_bus.
oxg_library(oxg_bus
  SRCS plugin_bus.cc rpc_metrics.cc finding_wire.cc
  DEPS oxg_bus_capabilities oxg_bus_findings oxg_bus_findings_store oxg_plugin_proto oxg_metrics
       oxg_tracing oxg_audit)
