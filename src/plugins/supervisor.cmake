# The plugin supervisor (restart policy, backoff, crash loops, shutdown): defines
# oxg_plugin_supervisor. It codes against runner.h only; the daemon links a runner next to it.
oxg_library(oxg_plugin_supervisor SRCS supervisor.cc
  DEPS oxg_common oxg_plugin_manifest oxg_metrics oxg_tracing oxg_audit)
