# The plugin runner (fork/exec with limits, seccomp deny-list, output capture, watchdog):
# defines oxg_plugin_runner.
oxg_library(oxg_plugin_runner
  SRCS runner.cc internal/output_limiter.cc internal/proc_scan.cc internal/seccomp_filter.cc
  DEPS oxg_common oxg_plugin_manifest Threads::Threads)
