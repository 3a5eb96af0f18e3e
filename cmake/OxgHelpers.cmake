# Small helpers so every subsystem declares its targets the same way.

# oxg_library(NAME SRCS ... DEPS ...): a static library rooted at src/.
function(oxg_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src ${PROJECT_BINARY_DIR}/gen)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  add_dependencies(${name} oxg_build_info)
endfunction()

# oxg_test(NAME SRCS ... DEPS ... LABEL unit|integration|e2e): a GoogleTest binary registered
# with ctest; each TEST becomes its own ctest entry.
function(oxg_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SRCS;DEPS" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL unit)
  endif()
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  gtest_discover_tests(${name} PROPERTIES LABELS ${ARG_LABEL} DISCOVERY_TIMEOUT 30)
endfunction()

# oxg_fuzzer(NAME SRCS ... DEPS ...): a libFuzzer-style target. It always builds as a
# regression runner that replays tests/fuzz/NAME/corpus (registered as a unit test); with
# OXG_FUZZ=ON and clang it also builds NAME_fuzz, a real coverage-guided fuzzer.
function(oxg_fuzzer name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name}_regress ${ARG_SRCS} ${PROJECT_SOURCE_DIR}/tests/fuzz/regress_main.cc)
  target_link_libraries(${name}_regress PRIVATE ${ARG_DEPS})
  add_test(NAME fuzz_regress.${name}
           COMMAND ${name}_regress ${PROJECT_SOURCE_DIR}/tests/fuzz/${name}/corpus)
  set_tests_properties(fuzz_regress.${name} PROPERTIES LABELS unit)
  if(OXG_FUZZ)
    add_executable(${name}_fuzz ${ARG_SRCS})
    target_compile_options(${name}_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name}_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name}_fuzz PRIVATE ${ARG_DEPS})
  endif()
endfunction()

# oxg_benchmark(NAME SRCS ... DEPS ...): a Google Benchmark binary, run by `make bench`.
function(oxg_benchmark name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
endfunction()

# oxg_python_unittest(NAME DIR TIMEOUT): runs the Python unittest files of DIR with the system
# interpreter, on the assembled SDK root (<build>/python), with OXG_CTL naming 0xgenctl for tests
# that check manifests. Label unit.
function(oxg_python_unittest name dir timeout)
  set(env "PYTHONPATH=${PROJECT_BINARY_DIR}/python")
  if(TARGET oxgenctl)
    list(APPEND env "OXG_CTL=$<TARGET_FILE:oxgenctl>")
  endif()
  add_test(NAME ${name}
           COMMAND /usr/bin/python3 -B -m unittest discover -s ${dir} -t ${dir} -v)
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${env}" LABELS unit TIMEOUT ${timeout})
endfunction()
