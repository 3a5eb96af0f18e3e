# Interception CA and leaf certificates: defines oxg_proxy_tls.
oxg_library(oxg_proxy_tls
  SRCS tls/ca.cc tls/leaf_cache.cc
  DEPS oxg_metrics OpenSSL::SSL OpenSSL::Crypto)
