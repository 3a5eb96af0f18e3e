# Tests of the OTLP encodings and exporter.
if(NOT TARGET protobuf::libprotobuf)
  find_package(Protobuf REQUIRED)
endif()

oxg_test(otlp_encoding_test
  SRCS otlp_encoding_test.cc
  DEPS oxg_otlp nlohmann_json::nlohmann_json)

# The independent check: the same encodings decoded by the OpenTelemetry project's own decoder
# (an npm package), not by our protos. Its own directory keeps the node project apart.
add_subdirectory(${PROJECT_SOURCE_DIR}/tests/otlp_decode ${PROJECT_BINARY_DIR}/tests/otlp_decode)
