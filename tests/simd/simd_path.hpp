// The instruction-set path a tests/simd program was compiled for (tests/CMakeLists.txt builds
// each of them once per path), and whether the running CPU can execute it.
#pragma once

#include <cstdio>

namespace simd_path {

struct Path {
  const char* name;
  bool supported;
};

/// The compiled path: AVX-512, AVX2 (both with FMA) or the baseline.
inline Path compiled() {
#if defined(__AVX512F__)
  return {"AVX-512", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")};
#elif defined(__AVX2__)
  return {"AVX2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")};
#else
  return {"baseline", true};
#endif
}

/// Prints that the path is skipped when the CPU cannot run it; returns whether it can.
inline bool runnable(const Path& p) {
  if (!p.supported) std::printf("%s: not supported by this CPU, skipped\n", p.name);
  return p.supported;
}

}  // namespace simd_path
