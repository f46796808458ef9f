/// @file table_lookup.hpp
/// @brief out[i] = table[idx[i]] for a small float table: the per-element weight lookup of the
///        histogram-based losses (GHM-C's β per bin).
///
/// A compiler turns the plain loop into a gather (or scalar loads), which costs ~10% of a GHM-C
/// call on the AVX-512 machine of docs/performance.md. A table of at most 32 entries fits in
/// registers, and a register permute does the lookup instead: one vpermt2ps per 16 elements with
/// AVX-512, four vpermps and three blends per 8 elements with AVX2. The path is chosen at compile
/// time from the target flags (-march=...); every path gives identical results (it only copies
/// table entries), and the plain loop serves larger tables and other targets.
#pragma once

#include "requires_cxx17.hpp"

#include <cstdint>

#include "config.hpp"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fgbg {
namespace detail {

/// Largest table the register-permute paths take.
inline constexpr int kRegisterTableMax = 32;

/// out[i] = table[idx[i]] for i < n. Requires 0 ≤ idx[i] < entries (not checked).
inline void lookup_table(const float* table, int entries, const std::int32_t* idx, float* out,
                         Index n) {
  Index i = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  if (entries <= kRegisterTableMax) {
    alignas(64) float padded[kRegisterTableMax] = {};
    for (int k = 0; k < entries; ++k) padded[k] = table[k];
#if defined(__AVX512F__)
    const __m512 t0 = _mm512_load_ps(padded), t1 = _mm512_load_ps(padded + 16);
    for (; i + 16 <= n; i += 16) {
      const __m512i v = _mm512_loadu_si512(static_cast<const void*>(idx + i));
      _mm512_storeu_ps(out + i, _mm512_permutex2var_ps(t0, v, t1));
    }
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
      const __m512i v = _mm512_maskz_loadu_epi32(m, idx + i);
      _mm512_mask_storeu_ps(out + i, m, _mm512_permutex2var_ps(t0, v, t1));
    }
    return;
#else
    const __m256 t0 = _mm256_load_ps(padded), t1 = _mm256_load_ps(padded + 8);
    const __m256 t2 = _mm256_load_ps(padded + 16), t3 = _mm256_load_ps(padded + 24);
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
      // vpermps uses the low 3 bits; bits 3 and 4 pick the quarter (blendv reads the sign bit)
      const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 28));
      const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(v, 27));
      const __m256 lo =
          _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, v), _mm256_permutevar8x32_ps(t1, v), bit3);
      const __m256 hi =
          _mm256_blendv_ps(_mm256_permutevar8x32_ps(t2, v), _mm256_permutevar8x32_ps(t3, v), bit3);
      _mm256_storeu_ps(out + i, _mm256_blendv_ps(lo, hi, bit4));
    }
    for (; i < n; ++i) out[i] = padded[idx[i]];
    return;
#endif
  }
#endif
  (void)entries;
  for (; i < n; ++i) out[i] = table[idx[i]];
}

/// The same for double tables (a plain loop).
inline void lookup_table(const double* table, int /*entries*/, const std::int32_t* idx, double* out,
                         Index n) {
  for (Index i = 0; i < n; ++i) out[i] = table[idx[i]];
}

}  // namespace detail
}  // namespace fgbg
