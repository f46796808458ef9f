# ctest driver (example_libtorch): configures examples/libtorch against the fgbg source tree SRC
# in WORK with Torch_DIR, builds it and runs it; fails if any step fails.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
file(REMOVE_RECURSE ${WORK})
run(${CMAKE_COMMAND} -S ${SRC}/examples/libtorch -B ${WORK} -DCMAKE_BUILD_TYPE=Release
    -DFGBG_SOURCE_DIR=${SRC} -DTorch_DIR=${TORCH_DIR} -DCMAKE_CXX_COMPILER=${CXX})
run(${CMAKE_COMMAND} --build ${WORK})
run(${WORK}/fgbg_libtorch)
