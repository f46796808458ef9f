// core/vmath.hpp compiled for one path (tests/CMakeLists.txt: baseline x86-64 with -mno-avx2,
// AVX2 + FMA, AVX-512) and checked on a sample against std:: references with the bounds the
// exhaustive tool measured (tests/vmath/vmath_check.hpp), so the vectorised code of every path
// is tested whatever -march the rest of the tests use. Exits 0 without testing when the CPU
// lacks the instruction set.
#include <cstdio>

#include "../vmath/vmath_check.hpp"
#include "simd_path.hpp"

int main() {
  const simd_path::Path p = simd_path::compiled();
  if (!simd_path::runnable(p)) return 0;
  const char* path = p.name;
  vmath_check::Report rep;
  vmath_check::check_float(rep, 65521);
  vmath_check::check_double(rep, 100000);
  for (const auto& f : rep.failures) std::printf("  %s\n", f.c_str());
  std::printf("%s: %ld checks, %zu failures\n", path, rep.checked, rep.failures.size());
  return rep.failures.empty() ? 0 : 1;
}
