// core/vmath.hpp compiled for one path (tests/CMakeLists.txt: baseline x86-64 with -mno-avx2,
// AVX2 + FMA, AVX-512) and checked on a sample against std:: references with the bounds the
// exhaustive tool measured (tests/vmath/vmath_check.hpp), so the vectorised code of every path
// is tested whatever -march the rest of the tests use. Exits 0 without testing when the CPU
// lacks the instruction set.
#include <cstdio>

#include "../vmath/vmath_check.hpp"

int main() {
#if defined(__AVX512F__)
  const char* path = "AVX-512";
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#elif defined(__AVX2__)
  const char* path = "AVX2";
  const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const char* path = "baseline";
  const bool supported = true;
#endif
  if (!supported) {
    std::printf("%s: not supported by this CPU, skipped\n", path);
    return 0;
  }
  vmath_check::Report rep;
  vmath_check::check_float(rep, 65521);
  vmath_check::check_double(rep, 100000);
  for (const auto& f : rep.failures) std::printf("  %s\n", f.c_str());
  std::printf("%s: %ld checks, %zu failures\n", path, rep.checked, rep.failures.size());
  return rep.failures.empty() ? 0 : 1;
}
