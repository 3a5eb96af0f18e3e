# The plugin protocol (proto/oxg, contract §10) compiled at build time:
# - C++ messages and the gRPC service into <build>/gen/oxg/ (library oxg_plugin_proto; only the
#   bus's own sources and tests include them, so protobuf and gRPC headers stay out of the
#   widely included ones);
# - Python messages and stubs into <build>/gen/python/oxg/ (target oxg_plugin_proto_python) for
#   the Python SDK and the integration tests, on Debian's python3-grpcio and python3-protobuf.
if(NOT TARGET protobuf::libprotobuf)
  find_package(Protobuf REQUIRED)
endif()
find_package(gRPC CONFIG REQUIRED)
find_program(OXG_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_program(OXG_GRPC_PYTHON_PLUGIN grpc_python_plugin REQUIRED)

set(OXG_PLUGIN_PROTO_ROOT ${PROJECT_SOURCE_DIR}/proto)
set(OXG_PLUGIN_PROTOS ${OXG_PLUGIN_PROTO_ROOT}/oxg/common.proto
                      ${OXG_PLUGIN_PROTO_ROOT}/oxg/plugin_bus.proto)
set(gen ${PROJECT_BINARY_DIR}/gen)
set(oxg_plugin_proto_cpp
    ${gen}/oxg/common.pb.cc ${gen}/oxg/common.pb.h
    ${gen}/oxg/plugin_bus.pb.cc ${gen}/oxg/plugin_bus.pb.h
    ${gen}/oxg/plugin_bus.grpc.pb.cc ${gen}/oxg/plugin_bus.grpc.pb.h
    # common.proto declares no service: its gRPC files are empty but written all the same.
    ${gen}/oxg/common.grpc.pb.cc ${gen}/oxg/common.grpc.pb.h)
add_custom_command(
  OUTPUT ${oxg_plugin_proto_cpp}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${gen}
  COMMAND protobuf::protoc --proto_path=${OXG_PLUGIN_PROTO_ROOT} --cpp_out=${gen}
          --grpc_out=${gen} --plugin=protoc-gen-grpc=${OXG_GRPC_CPP_PLUGIN}
          ${OXG_PLUGIN_PROTOS}
  DEPENDS ${OXG_PLUGIN_PROTOS} protobuf::protoc
  COMMENT "Generating C++ from the plugin protocol"
  VERBATIM)
# The bus's lenient reading of plugin events (bus/internal/plugin_event_wire.proto).
set(wire_proto ${CMAKE_CURRENT_SOURCE_DIR}/internal/plugin_event_wire.proto)
add_custom_command(
  OUTPUT ${gen}/bus/internal/plugin_event_wire.pb.cc ${gen}/bus/internal/plugin_event_wire.pb.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${gen}
  COMMAND protobuf::protoc --proto_path=${PROJECT_SOURCE_DIR}/src --cpp_out=${gen} ${wire_proto}
  DEPENDS ${wire_proto} protobuf::protoc
  COMMENT "Generating C++ from the bus's plugin event mirror"
  VERBATIM)
oxg_library(oxg_plugin_proto
  SRCS ${gen}/oxg/common.pb.cc ${gen}/oxg/plugin_bus.pb.cc ${gen}/oxg/plugin_bus.grpc.pb.cc
       ${gen}/bus/internal/plugin_event_wire.pb.cc
  DEPS protobuf::libprotobuf gRPC::grpc++)

set(pygen ${gen}/python)
set(oxg_plugin_proto_py
    ${pygen}/oxg/common_pb2.py ${pygen}/oxg/plugin_bus_pb2.py ${pygen}/oxg/plugin_bus_pb2_grpc.py
    ${pygen}/oxg/common_pb2_grpc.py)
add_custom_command(
  OUTPUT ${oxg_plugin_proto_py}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${pygen}
  COMMAND protobuf::protoc --proto_path=${OXG_PLUGIN_PROTO_ROOT} --python_out=${pygen}
          --grpc_out=${pygen} --plugin=protoc-gen-grpc=${OXG_GRPC_PYTHON_PLUGIN}
          ${OXG_PLUGIN_PROTOS}
  DEPENDS ${OXG_PLUGIN_PROTOS} protobuf::protoc
  COMMENT "Generating Python from the plugin protocol"
  VERBATIM)
add_custom_target(oxg_plugin_proto_python ALL DEPENDS ${oxg_plugin_proto_py})
