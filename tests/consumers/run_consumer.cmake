# ctest driver: builds and runs one consumer project against the fgbg source tree SRC, in WORK.
#   find_package      install fgbg (README's Install command), then find_package(fgbg) from a
#                     CMake project
#   add_subdirectory  fgbg as a subdirectory of a CMake project
#   find_package_mpi  install fgbg, then find_package(fgbg COMPONENTS mpi) and fgbg::mpi: one
#                     process (singleton MPI_Init) counts its positives through fgbg/mpi.hpp
#   fetch_content     fgbg through FetchContent
#   pkg_config        install fgbg, then compile with `$CXX $(pkg-config --cflags fgbg)` and no
#                     CMake on the consumer side (needs CXX and PKG_CONFIG)
#   eigen_only        configure fgbg with its defaults as on a machine that has only Eigen (Catch2,
#                     nlohmann_json, benchmark and MPI hidden): configuring must work and name each
#                     skipped part, and the install must hold the headers, LICENSE and fgbg.pc
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(run_output "${out}${err}" PARENT_SCOPE)
endfunction()

function(install_fgbg)
  run(${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/lib -DFGBG_BUILD_TESTS=OFF -DFGBG_BUILD_EXAMPLES=OFF
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_WITH_MPI=OFF ${ARGN})
  set(run_output "${run_output}" PARENT_SCOPE)
  run(${CMAKE_COMMAND} --install ${WORK}/lib --prefix ${WORK}/prefix)
  foreach(f include/fgbg/fgbg.hpp include/fgbg/mpi.hpp share/doc/fgbg/LICENSE share/pkgconfig/fgbg.pc)
    if(NOT EXISTS ${WORK}/prefix/${f})
      message(FATAL_ERROR "the install lacks ${f}")
    endif()
  endforeach()
endfunction()

file(REMOVE_RECURSE ${WORK})
set(extra "")
if(MODE STREQUAL "eigen_only")
  # AUTO is the default for tests and benchmarks; override the OFF that install_fgbg passes.
  install_fgbg(-DFGBG_BUILD_TESTS=AUTO -DFGBG_BUILD_BENCHMARKS=AUTO
               -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON
               -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON -DFGBG_WITH_MPI=AUTO
               -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
  foreach(part tests benchmarks "MPI component \\(fgbg::mpi\\)")
    if(NOT run_output MATCHES "fgbg: ${part} skipped: [^\n]* not found \\(")
      message(FATAL_ERROR "configuring without its packages did not say the ${part} were "
                          "skipped:\n${run_output}")
    endif()
  endforeach()
  if(EXISTS ${WORK}/lib/tests)
    message(FATAL_ERROR "tests were configured although Catch2 was hidden")
  endif()
  return()
elseif(MODE STREQUAL "pkg_config")
  install_fgbg()
  run(${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${WORK}/prefix/share/pkgconfig
      ${PKG_CONFIG} --cflags fgbg)
  string(STRIP "${run_output}" cflags)
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  file(MAKE_DIRECTORY ${WORK}/build)
  run(${CXX} -std=c++17 -O2 ${cflags} ${SRC}/tests/consumers/consumer_main.cpp
      -o ${WORK}/build/consumer)
  run(${WORK}/build/consumer)
  return()
elseif(MODE STREQUAL "find_package" OR MODE STREQUAL "find_package_mpi")
  install_fgbg()
  set(extra -DCMAKE_PREFIX_PATH=${WORK}/prefix)
endif()
run(${CMAKE_COMMAND} -S ${SRC}/tests/consumers/${MODE} -B ${WORK}/build -DFGBG_SOURCE_DIR=${SRC}
    -DCMAKE_BUILD_TYPE=Release ${extra})
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/consumer)
