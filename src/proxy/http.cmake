# HTTP/1.x head parser and chunked decoder (untrusted bytes): defines oxg_proxy_http.
oxg_library(oxg_proxy_http SRCS http/http_head.cc DEPS oxg_common)
