# The proxy server (listeners, client sessions, upstream pool, CONNECT/TLS, WebSocket relay):
# defines oxg_proxy_server. Boost.Asio and OpenSSL stay inside these sources.
oxg_library(oxg_proxy_server
  SRCS server/proxy_server.cc
  DEPS oxg_proxy_http oxg_proxy_capture oxg_proxy_scope oxg_proxy_tls oxg_audit oxg_tracing
       Boost::headers OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
