# The OTLP/HTTP span exporter on libcurl. libcurl and zlib stay behind its one header.
find_package(CURL REQUIRED)
oxg_library(oxg_otlp_http
  SRCS otlp_http_exporter.cc
  DEPS oxg_otlp oxg_tracing CURL::libcurl ZLIB::ZLIB)
