# Flow builder tests.
oxg_test(flow_test SRCS flow_test.cc DEPS oxg_proxy_flow)
oxg_test(flow_pipeline_test SRCS flow_pipeline_test.cc DEPS oxg_proxy_capture)
