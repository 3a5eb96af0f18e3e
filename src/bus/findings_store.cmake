# The findings store: findings.jsonl on a writer thread with size-based rotation (contract §8):
# defines oxg_bus_findings_store.
oxg_library(oxg_bus_findings_store SRCS findings_store.cc DEPS oxg_bus_findings oxg_metrics)
