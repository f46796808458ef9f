# Compiles SOURCE once per case (-DFGBG_CASE=0..CASES-1); each must fail with a message matching
# the regular expression MESSAGE.
# Run as: cmake -DCXX=... -DINCLUDE_DIRS="a;b" -DSOURCE=... -DCASES=8 -DMESSAGE=... -P
# check_messages.cmake
set(flags)
foreach(dir ${INCLUDE_DIRS})
  list(APPEND flags -I${dir})
endforeach()
set(failures 0)
math(EXPR last "${CASES} - 1")
foreach(c RANGE ${last})
  execute_process(COMMAND ${CXX} -std=c++17 -fsyntax-only ${flags} -DFGBG_CASE=${c} ${SOURCE}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(SEND_ERROR "case ${c} of ${SOURCE} compiled; it must be refused")
    math(EXPR failures "${failures} + 1")
  elseif(NOT err MATCHES "${MESSAGE}")
    message(SEND_ERROR "case ${c} failed without fgbg's message:\n${err}")
    math(EXPR failures "${failures} + 1")
  endif()
endforeach()
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} of ${CASES} misuse cases did not stop with fgbg's message")
endif()
message(STATUS "${CASES} misuses of ${SOURCE} refused with fgbg's message")
