/// @file requires_cxx17.hpp
/// @brief Stops a compile below C++17 with one clear message. Every public header includes it
///        first, so the message comes before any C++17 construct could fail to parse.
#pragma once

#if (defined(_MSVC_LANG) ? _MSVC_LANG : __cplusplus) < 201703L
#error \
    "fgbg needs C++17 or later: compile with -std=c++17 (CMake: target_compile_features(... cxx_std_17), which linking fgbg::fgbg adds)"
// A missing include is fatal in GCC, Clang and MSVC: it ends the compile here instead of letting
// hundreds of follow-on errors bury the message above.
#include "fgbg: C++17 required, see the message above"
#endif
