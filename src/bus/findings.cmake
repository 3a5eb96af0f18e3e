# Finding validation and findings.jsonl records (contract §8): defines oxg_bus_findings.
oxg_library(oxg_bus_findings SRCS findings.cc DEPS oxg_common)
