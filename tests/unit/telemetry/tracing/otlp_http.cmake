# The OTLP/HTTP exporter against an in-test HTTP(S) receiver on 127.0.0.1:0.
oxg_test(otlp_http_exporter_test
  SRCS otlp_http_exporter_test.cc
  DEPS oxg_otlp_http ZLIB::ZLIB OpenSSL::SSL OpenSSL::Crypto nlohmann_json::nlohmann_json)

# The exporter against tests/integration/otlp_receiver.py (the receiver the daemon's end-to-end
# tests use) as a separate process. Declared here, next to the exporter's unit tests, because
# it is a GoogleTest binary; labelled integration.
if(NOT DEFINED OXG_TEST_PYTHON)
  set(OXG_TEST_PYTHON /usr/bin/python3)
endif()
oxg_test(otlp_http_receiver_test
  SRCS ${PROJECT_SOURCE_DIR}/tests/integration/otlp_http_receiver_test.cc
  DEPS oxg_otlp_http nlohmann_json::nlohmann_json
  LABEL integration)
target_compile_definitions(otlp_http_receiver_test PRIVATE
  OXG_TEST_PYTHON="${OXG_TEST_PYTHON}"
  OXG_OTLP_RECEIVER="${PROJECT_SOURCE_DIR}/tests/integration/otlp_receiver.py")
