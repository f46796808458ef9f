// Runs fgbg::detail::lookup_table as compiled for one path and compares it with table[idx[i]].
// The build compiles this file once per path (tests/CMakeLists.txt): the plain loop (-mno-avx2 on
// x86), AVX2 (-mavx2 -mfma -mno-avx512f) and AVX-512 (-mavx512f -mfma; Eigen wants FMA with
// them), so every path is tested whatever -march the rest of the tests use. A program exits 0
// without testing when the CPU lacks its instruction set.
#include <cstdio>
#include <random>
#include <vector>

#include <fgbg/core/table_lookup.hpp>
#include "simd_path.hpp"

int main() {
  const simd_path::Path p = simd_path::compiled();
  if (!simd_path::runnable(p)) return 0;
  const char* path = p.name;
  std::mt19937 rng(7);
  std::vector<float> table(40);
  for (float& t : table) t = std::uniform_real_distribution<float>(-1, 1)(rng);
  long checked = 0, wrong = 0;
  for (int entries = 1; entries <= 40; ++entries) {
    for (fgbg::Index n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 2048}) {
      std::vector<std::int32_t> idx(static_cast<std::size_t>(n));
      for (auto& v : idx) v = static_cast<std::int32_t>(rng() % static_cast<unsigned>(entries));
      std::vector<float> out(static_cast<std::size_t>(n) + 1, 42.f);
      fgbg::detail::lookup_table(table.data(), entries, idx.data(), out.data(), n);
      for (fgbg::Index i = 0; i < n; ++i, ++checked) wrong += out[i] != table[idx[i]] ? 1 : 0;
      wrong += out[n] != 42.f ? 1 : 0;  // nothing written past the end
    }
  }
  // the double overload (a plain loop in every build)
  const double dt[3] = {0.5, -2.0, 3.0};
  const std::int32_t di[4] = {2, 0, 1, 2};
  double dout[4] = {};
  fgbg::detail::lookup_table(dt, 3, di, dout, 4);
  wrong += (dout[0] != 3.0) + (dout[1] != 0.5) + (dout[2] != -2.0) + (dout[3] != 3.0);
  std::printf("%s: %ld lookups, %ld wrong\n", path, checked, wrong);
  return wrong == 0 ? 0 : 1;
}
