# Capabilities, subscriptions and single-use capability tokens: defines oxg_bus_capabilities.
oxg_library(oxg_bus_capabilities SRCS capabilities.cc DEPS oxg_common OpenSSL::Crypto)
