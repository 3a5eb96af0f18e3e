# Owned by the OTLP work: defines oxg_otlp, the OTLP trace encodings (protobuf and JSON). The
# OTLP/HTTP exporter on top of it lives in otlp_http.cmake.

# The OTLP trace protos (proto/otlp, written from the OTLP specification) are compiled by protoc
# at build time into <build>/gen/opentelemetry/proto/.... Only otlp_encoding.cc (and tests)
# include the generated headers, so protobuf stays out of the widely included tracing headers.
if(NOT TARGET protobuf::libprotobuf)
  find_package(Protobuf REQUIRED)
endif()

set(OXG_OTLP_PROTO_ROOT ${PROJECT_SOURCE_DIR}/proto/otlp)
set(OXG_OTLP_PROTO_NAMES
    common/v1/common resource/v1/resource trace/v1/trace collector/trace/v1/trace_service)
set(oxg_otlp_protos)
set(oxg_otlp_generated)
set(oxg_otlp_generated_srcs)
foreach(name IN LISTS OXG_OTLP_PROTO_NAMES)
  list(APPEND oxg_otlp_protos ${OXG_OTLP_PROTO_ROOT}/opentelemetry/proto/${name}.proto)
  set(stem ${PROJECT_BINARY_DIR}/gen/opentelemetry/proto/${name})
  list(APPEND oxg_otlp_generated ${stem}.pb.cc ${stem}.pb.h)
  list(APPEND oxg_otlp_generated_srcs ${stem}.pb.cc)
endforeach()

# One protoc run for all files: they import each other, so a change to any of them regenerates
# everything that could depend on it.
add_custom_command(
  OUTPUT ${oxg_otlp_generated}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/gen
  COMMAND protobuf::protoc --proto_path=${OXG_OTLP_PROTO_ROOT}
          --cpp_out=${PROJECT_BINARY_DIR}/gen ${oxg_otlp_protos}
  DEPENDS ${oxg_otlp_protos} protobuf::protoc
  COMMENT "Generating C++ from the OTLP trace protos"
  VERBATIM)

oxg_library(oxg_otlp
  SRCS otlp_encoding.cc ${oxg_otlp_generated_srcs}
  DEPS oxg_common protobuf::libprotobuf)
