# Tests of the span archive: the exporter's file format, tracks and rotation, and the reader
# behind `0xgenctl trace`.
oxg_test(trace_archive_test
  SRCS chrome_trace_test.cc trace_tool_test.cc
  DEPS oxg_trace_archive nlohmann_json::nlohmann_json)

# The archive opened by a real viewer's parser: the Chrome DevTools performance panel's trace
# engine from npm (@paulirish/trace_engine, pinned below), run by node. The npm install is a
# fixture of its own; ViewerTest.* (compiled only into this binary) runs after it, labelled
# integration. Neither skips: without node, npm or the registry they fail and say why.
# Pinned by tests/trace_viewer/package-lock.json and installed there by scripts/npm-ci.
set(OXG_TRACE_VIEWER_DIR ${PROJECT_SOURCE_DIR}/tests/trace_viewer)
find_program(OXG_NODE_FOR_VIEWER node)
if(NOT OXG_NODE_FOR_VIEWER)
  set(OXG_NODE_FOR_VIEWER node)
endif()
add_test(NAME trace_viewer.npm_install
         COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/npm-ci ${OXG_TRACE_VIEWER_DIR})
set_tests_properties(trace_viewer.npm_install PROPERTIES
  LABELS integration
  TIMEOUT 300
  FIXTURES_SETUP trace_viewer)

add_executable(trace_viewer_test chrome_trace_test.cc)
target_link_libraries(trace_viewer_test PRIVATE
  oxg_trace_archive nlohmann_json::nlohmann_json GTest::gmock GTest::gtest_main)
target_compile_definitions(trace_viewer_test PRIVATE
  OXG_TRACE_VIEWER_DIR="${OXG_TRACE_VIEWER_DIR}" OXG_NODE="${OXG_NODE_FOR_VIEWER}")
gtest_discover_tests(trace_viewer_test
  TEST_FILTER "ViewerTest.*"
  PROPERTIES LABELS integration FIXTURES_REQUIRED trace_viewer TIMEOUT 120
  DISCOVERY_TIMEOUT 30)
