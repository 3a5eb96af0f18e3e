# Tests of the OTLP encodings and exporter.
if(NOT TARGET protobuf::libprotobuf)
  find_package(Protobuf REQUIRED)
endif()

oxg_test(otlp_encoding_test
  SRCS otlp_encoding_test.cc
  DEPS oxg_otlp nlohmann_json::nlohmann_json)
