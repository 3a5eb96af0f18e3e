# Plugin manifests (JSON, `file: field: reason` errors): defines oxg_plugin_manifest.
oxg_library(oxg_plugin_manifest SRCS manifest.cc
  DEPS oxg_common oxg_bus_capabilities nlohmann_json::nlohmann_json)
