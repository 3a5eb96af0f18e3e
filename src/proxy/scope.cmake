# Scope policy loader (contract §9): defines oxg_proxy_scope.
find_package(yaml-cpp REQUIRED CONFIG)
oxg_library(oxg_proxy_scope SRCS scope.cc DEPS oxg_common yaml-cpp PkgConfig::RE2)
