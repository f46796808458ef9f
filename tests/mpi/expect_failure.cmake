# Runs COMMAND (a list) and passes only if it exits non-zero and its output holds the check that
# test_mpi's hidden "[.inject]" test fails on rank 1 (and rank 0 reports passing).
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "a check failing on rank 1 did not fail the run (exit 0):\n${all}")
endif()
if(NOT all MATCHES "injected failure on rank 1")
  message(FATAL_ERROR "the run failed (${rc}) but not on the injected check:\n${all}")
endif()
if(NOT all MATCHES "All tests passed")
  message(FATAL_ERROR "rank 0 should pass the injected test:\n${all}")
endif()
message(STATUS "a check failing on rank 1 only failed the run (exit ${rc}), as it must")
