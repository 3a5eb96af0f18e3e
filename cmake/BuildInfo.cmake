# Writes gen/common/build_info.h with the current git revision. Run at every build (script
# mode) so the revision in oxg_build_info and --version never goes stale; configure_file only
# touches the header when its content changes, so nothing recompiles needlessly.
execute_process(COMMAND git rev-parse --short=12 HEAD
                WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE OXG_REVISION OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR OXG_REVISION STREQUAL "")
  set(OXG_REVISION "unknown")
endif()
configure_file(${SOURCE_DIR}/src/common/build_info.h.in ${BINARY_DIR}/gen/common/build_info.h
               @ONLY)
