# Flow builder tests.
oxg_test(flow_test SRCS flow_test.cc DEPS oxg_proxy_flow)
