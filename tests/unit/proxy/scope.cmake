# Scope policy tests.
oxg_test(scope_test SRCS scope_test.cc DEPS oxg_proxy_scope)
