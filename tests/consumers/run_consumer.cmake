# ctest driver: builds and runs one consumer project (MODE = find_package | add_subdirectory |
# fetch_content) against the fgbg source tree SRC, in WORK.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
set(extra "")
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/lib -DFGBG_BUILD_TESTS=OFF -DFGBG_BUILD_EXAMPLES=OFF
      -DFGBG_BUILD_BENCHMARKS=OFF)
  run(${CMAKE_COMMAND} --install ${WORK}/lib --prefix ${WORK}/prefix)
  set(extra -DCMAKE_PREFIX_PATH=${WORK}/prefix)
endif()
run(${CMAKE_COMMAND} -S ${SRC}/tests/consumers/${MODE} -B ${WORK}/build -DFGBG_SOURCE_DIR=${SRC}
    -DCMAKE_BUILD_TYPE=Release ${extra})
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/consumer)
