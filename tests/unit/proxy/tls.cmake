# TLS tests.
oxg_test(tls_test SRCS tls_test.cc DEPS oxg_proxy_tls)
