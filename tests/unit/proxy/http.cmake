# HTTP head parser and chunked decoder tests.
oxg_test(http_head_test SRCS http_head_test.cc DEPS oxg_proxy_http)
