/// @file vmath.hpp
/// @brief fgbg's own transcendentals for the dense hot loops: e^−|x|, log1p on [0, 1] through
///        the atanh series, the logistic parts of one logit (σ, 1 − σ, log1p(e^−|x|)) and the
///        γ power σ^γ.
///
/// Every function is branch-free scalar code made of IEEE +, −, ×, ÷ and integer adds, shifts
/// and logic on the bits (through std::memcpy; the selects and clamps too, see nonneg_mask):
/// inlined into a plain loop, GCC 12 and Clang 14 vectorise it at -O2 and -O3 for baseline
/// x86-64 (SSE2), AVX2 + FMA and AVX-512 (checked with -fopt-info-vec / -Rpass=loop-vectorize),
/// and a lane of the vector code computes the bits of the scalar code (test_vmath). The losses
/// run them over blocks of kBlock elements (for_blocks: sigmoid_head.hpp's modulated_negatives,
/// BCE's negatives), so every element of a tile goes through the same vector code whatever the
/// tile's alignment or length.
///
/// Measured error (tests/vmath/vmath_accuracy.cpp; g++ 12 -O2 -march=native, i.e. with FMA
/// contraction; the baseline x86-64 build (no FMA) is measured separately,
/// docs/performance.md): float over every float of the input range against the double std::
/// functions, double over 10^8 random inputs (uniform and log-uniform) plus the edges against
/// long double. Ulps of the result; in the subnormal range, ulps of the smallest subnormal.
///
/// | function                          | float, exhaustive      | double, 10^8 + edges   |
/// |-----------------------------------|------------------------|------------------------|
/// | exp_neg_abs (normal / subnormal)  | 1.061 / 0.750          | 0.977 / 0.763          |
/// | log1p_unit (normal / subnormal)   | 1.978 / 0 (exact)      | 1.959 / 0              |
/// | logistic: σ(x), 1 − σ(x)          | 2.825 / 0.750          | 2.800 / 0.763          |
/// | softplus(x) = max(x,0) + log1p_e  | 2.797 / 0.750          | 2.735 / 0.763          |
/// | sigmoid_pow, γ ∈ {.5, 1.5, 2.5, 3} | ≤ 3.005·(1 + γ·softplus(−x)) | ≤ 2.948·(1 + γ·softplus(−x)) |
///
/// (σ^γ = exp(−γ·softplus(−x)) amplifies the rounding of its argument by γ·softplus(−x), as any
/// exp(γ log p) does: e.g. 64 ulp in float for σ^1.5 at x = −51.) docs/performance.md has the
/// full table per build. Subnormal results are formed as p · 2^k1 · 2^k2 with k1 + k2 = k, so
/// only the last multiplication rounds into the subnormals (no second rounding, no clamp at
/// FLT_MIN/4 as in Eigen's exp); they cost a CPU's subnormal assist only for |x| in (87.3, 176)
/// (float) / (708.4, 1418) (double), which real logits never reach; beyond, the scale factors are
/// +0 and no subnormal is formed.
///
/// References: W. J. Cody, W. Waite, "Software Manual for the Elementary Functions", 1980 (range
/// reduction with a two-part ln 2); S. Moshier, Cephes (the same structure for exp); the atanh
/// form of log1p: log(1 + e) = 2 atanh(e / (2 + e)) (Abramowitz & Stegun 4.1.27 with
/// z = 1 + e). Polynomial coefficients: Chebyshev fits of (e^r − 1 − r)/r² on [−ln2/2, ln2/2]
/// and of (atanh(√z)/√z − 1)/z on [0, 1/9] (mpmath.chebyfit, 50 digits), rounded to the type.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

/// `restrict` for the block kernels: without it GCC's -O2 cost model (very-cheap in GCC 12)
/// refuses a loop that needs a run-time alias check.
#if defined(__GNUC__) || defined(_MSC_VER)
#define FGBG_RESTRICT __restrict
#else
#define FGBG_RESTRICT
#endif

/// Forced inlining of the kernels: a block loop vectorises only with them inlined, and GCC 12's
/// -O2 inliner declines the larger double ones (logistic, sigmoid_pow) otherwise.
#if defined(__GNUC__)
#define FGBG_VM_INLINE inline __attribute__((always_inline))
#else
#define FGBG_VM_INLINE inline
#endif

namespace fgbg {
namespace detail {
namespace vm {

/// Elements per block of the vm kernels: a constant trip count that every vector width divides
/// (no scalar remainder inside a block; the tail of a tile is padded to a block).
inline constexpr int kBlock = 64;

/// The unsigned integer type with the bits of T.
template <typename T>
using Bits = std::conditional_t<std::is_same<T, float>::value, std::uint32_t, std::uint64_t>;

/// The bits of v (std::memcpy: no union punning; compiles to nothing, vectorises).
template <typename T>
FGBG_VM_INLINE Bits<T> bits_of(T v) {
  Bits<T> b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

/// The T with bits b.
template <typename T>
FGBG_VM_INLINE T from_bits(Bits<T> b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

/// The sign bit of T.
template <typename T>
inline constexpr Bits<T> kSignBit = Bits<T>(1) << (8 * sizeof(T) - 1);

/// All ones where the sign bit of b is clear (x ≥ +0), else 0: the mask of the branch-free
/// selects below. Integer operations only: GCC 12 does not if-convert a float comparison under
/// its default -ftrapping-math when an arm is a constant (it sinks the arithmetic into the arms,
/// which then "could trap"), and SSE2 has no 64-bit integer comparison; shifts, adds and logic
/// vectorise in every x86-64 build.
template <typename T>
FGBG_VM_INLINE Bits<T> nonneg_mask(Bits<T> b) {
  return (b >> (8 * sizeof(T) - 1)) - Bits<T>(1);
}

/// min(a, b) for a, b < 2^(width−1) apart (both with the sign bit set, here), by the sign of
/// the wrapped difference: a + ((b − a) & (all ones if b < a)).
template <typename U>
FGBG_VM_INLINE U min_near(U a, U b) {
  const U d = b - a;
  return a + (d & (U(0) - (d >> (8 * sizeof(U) - 1))));
}

/// Constants of exp_nonpositive per type.
template <typename T>
struct ExpConsts;

template <>
struct ExpConsts<float> {
  /// The clamp: −176 gives k = −254, i.e. 2^k1 = 2^k2 = +0 (exponent field 0), so every x below
  /// it (±∞ and ±FLT_MAX included) gives p·0·0 = +0 without a subnormal operation. e^x < 2^−150
  /// rounds to 0 anyway from −103.98 on.
  static constexpr float kMinArg = -176.0f;
  static constexpr float kLog2e = 0x1.715476p+0f;
  /// 1.5 · 2^23: adding it rounds x·log2(e) to an integer held in the low bits.
  static constexpr float kShifter = 0x1.8p23f;
  static constexpr std::uint32_t kShifterBits = 0x4B400000u;
  /// ln 2 = kLn2Hi + kLn2Lo; kLn2Hi has 13 significant bits, so k·kLn2Hi is exact (|k| ≤ 254).
  static constexpr float kLn2Hi = 0x1.62ep-1f;
  static constexpr float kLn2Lo = 0x1.0bfbe8p-15f;
  static constexpr std::uint32_t kBias = 127u;
  static constexpr int kMantBits = 23;
};

template <>
struct ExpConsts<double> {
  /// −1418 gives k = −2046, 2^k1 = 2^k2 = +0 (see the float case); e^x < 2^−1075 from −745.14.
  static constexpr double kMinArg = -1418.0;
  static constexpr double kLog2e = 0x1.71547652b82fep+0;
  static constexpr double kShifter = 0x1.8p52;
  static constexpr std::uint64_t kShifterBits = 0x4338000000000000ull;
  /// fdlibm's split of ln 2: kLn2Hi has 32 significant bits, so k·kLn2Hi is exact.
  static constexpr double kLn2Hi = 0x1.62e42feep-1;
  static constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
  static constexpr std::uint64_t kBias = 1023u;
  static constexpr int kMantBits = 52;
};

/// (e^r − 1 − r) / r² on |r| ≤ ln2/2: degree 4 (float), 10 (double).
FGBG_VM_INLINE float exp_poly(float r) {
  return 0x1p-1f +
         r * (0x1.5554dep-3f + r * (0x1.55551ap-5f + r * (0x1.120b62p-7f + r * 0x1.6d10fcp-10f)));
}
FGBG_VM_INLINE double exp_poly(double r) {
  return 0x1p-1 + r * (0x1.5555555555557p-3 +
                       r * (0x1.5555555555556p-5 +
                            r * (0x1.11111111100dfp-7 +
                                 r * (0x1.6c16c16c162d6p-10 +
                                      r * (0x1.a01a01abe62ddp-13 +
                                           r * (0x1.a01a01a6d7808p-16 +
                                                r * (0x1.71de02375656cp-19 +
                                                     r * (0x1.27e4db67b4303p-22 +
                                                          r * (0x1.af4ddd84882fep-26 +
                                                               r * 0x1.1f72fc730b4ffp-29)))))))));
}

/// e^−|x| for any x (e^x for x ≤ 0): ±∞ and anything beyond the underflow threshold give +0.
///
/// Cody–Waite: y = max(−|x|, kMinArg), k = round(y / ln 2) by the 1.5·2^p shifter,
/// r = y − k·ln2 with a two-part ln 2 (exact high part), e^r = 1 + r + r²·P(r) on |r| ≤ ln2/2
/// (P of degree 4 in float, 10 in double), then e^y = e^r · 2^−m1 · 2^−m2 with m = −k,
/// m1 = ⌊m/2⌋, m2 = m − m1, built from the integer bits: both are normal powers of two wherever
/// the result is not 0, so a subnormal result is rounded once, by the last multiplication, and
/// both are +0 at the clamp. −|x| and the clamp are formed on the bits (for y ≤ 0 the order of
/// y is the unsigned order of its bits), with no float comparison (see nonneg_mask).
///
/// Measured: float, every float: at most 1.061 ulp where the result is normal, 0.750 ulp of the
/// smallest subnormal below; double, 10^8 random x plus the edges: 0.977 ulp, 0.763 subnormal ulp.
template <typename T>
FGBG_VM_INLINE T exp_neg_abs(T x) {
  using C = ExpConsts<T>;
  using U = Bits<T>;
  const U b = min_near<U>(bits_of(x) | kSignBit<T>, bits_of(C::kMinArg));
  const T y = from_bits<T>(b);              // max(−|x|, kMinArg)
  const T t = y * C::kLog2e + C::kShifter;  // the shifter's low bits hold k = round(y·log2 e)
  const T k = t - C::kShifter;
  const T r = (y - k * C::kLn2Hi) - k * C::kLn2Lo;
  const T p = T(1) + (r + (r * r) * exp_poly(r));
  const U m = C::kShifterBits - bits_of(t);  // −k ≥ 0
  const U m1 = m >> 1, m2 = m - m1;
  const T s1 = from_bits<T>((C::kBias - m1) << C::kMantBits);
  const T s2 = from_bits<T>((C::kBias - m2) << C::kMantBits);
  return (p * s1) * s2;
}

/// e^y for y ≤ 0 (exp_neg_abs: a positive y gives e^−y).
template <typename T>
FGBG_VM_INLINE T exp_nonpositive(T y) {
  return exp_neg_abs(y);
}

/// (atanh(s)/s − 1)/s² as a polynomial in z = s² on [0, 1/9]: degree 3 (float), 9 (double).
FGBG_VM_INLINE float atanh_poly(float z) {
  return 0x1.55554cp-2f + z * (0x1.99ad6cp-3f + z * (0x1.21249ap-3f + z * 0x1.12f598p-3f));
}
FGBG_VM_INLINE double atanh_poly(double z) {
  return 0x1.5555555555555p-2 +
         z * (0x1.999999999a3ddp-3 +
              z * (0x1.24924923d44c6p-3 +
                   z * (0x1.c71c727143318p-4 +
                        z * (0x1.745cf0b0e03bdp-4 +
                             z * (0x1.3b18b294bebf9p-4 +
                                  z * (0x1.10ac75dc602b1p-4 +
                                       z * (0x1.eb905e8575054p-5 +
                                            z * (0x1.687a6e7c95176p-5 +
                                                 z * 0x1.4b0a26c5f2aefp-4))))))));
}

/// log(1 + e) from q = e / (1 + e/2) = 2e/(2 + e) ∈ [0, 2/3] (e ∈ [0, 1]):
/// 2·atanh(q/2) = q + q·z·P(z), z = (q/2)². No log, no special-value masks. q rather than
/// s = e/(2 + e) (the same bits times 2 in the normal range): a subnormal e gives q = e and
/// log1p = e exactly, where e/(2 + e) would lose the last bit. The error is that of q (the
/// division and 1 + e/2: one rounding each) plus ≤ 0.6 ulp; see log1p_unit and logistic for the
/// measured bounds.
template <typename T>
FGBG_VM_INLINE T log1p_from_ratio(T q) {
  const T h = T(0.5) * q;
  const T z = h * h;
  return q + q * (z * atanh_poly(z));
}

/// log1p(e) for e ∈ [0, 1]: log1p_from_ratio(e / (1 + e/2)).
///
/// Measured: float, every float e ∈ [0, 1]: at most 1.978 ulp (exact for subnormal e); double,
/// 10^8 random e ∈ [0, 1] (uniform and log-uniform) plus the edges: at most 1.959 ulp.
template <typename T>
FGBG_VM_INLINE T log1p_unit(T e) {
  return log1p_from_ratio(e / (T(1) + T(0.5) * e));
}

/// What the sigmoid losses need of one logit x, from one exp and one division.
template <typename T>
struct Logistic {
  T e;        ///< e^−|x|
  T sig;      ///< σ(x)
  T sig_neg;  ///< 1 − σ(x) = σ(−x), without cancellation
  T log1p_e;  ///< log1p(e^−|x|): softplus(±x) = max(±x, 0) + log1p_e
};

/// The logistic parts of x: e = e^−|x|, 1/(1 + e) and e/(2 + e) by two divisions, so σ(x) =
/// 1/(1+e) for x ≥ 0 and e·(1/(1+e)) otherwise, σ(−x) the other one, and log1p(e) =
/// log1p_from_ratio(e/(2+e)). (One division shared by both, d = 1/((1+e)(2+e)), 1/(1+e) = (2+e)·d,
/// e/(2+e) = e(1+e)·d, was measured too: no faster on the project's machine, where the divider is
/// not the bottleneck of this loop in any build, and 1–2 ulp less accurate.) Nothing overflows;
/// e underflows to 0 for |x| beyond ~104 (float) / ~745 (double), and then σ is exactly 0 or 1
/// and log1p_e 0, so ±FLT_MAX / ±DBL_MAX give exact results. The selects are on the sign bit of
/// x (−0 counts as negative: σ(−0) = 1·1/2).
///
/// Measured (every float x; double: 10^8 random x plus the edges): σ(x) and 1 − σ(x) at most
/// 2.825 ulp (float) / 2.800 (double), softplus(x) = max(x, 0) + log1p_e at most 2.797 / 2.735
/// ulp; 0.750 / 0.763 ulp of the smallest subnormal where the result is subnormal.
template <typename T>
FGBG_VM_INLINE Logistic<T> logistic(T x) {
  using U = Bits<T>;
  const T e = exp_neg_abs(x);
  const T inv = T(1) / (T(1) + e);
  const T ei = e * inv;
  const U m = nonneg_mask<T>(bits_of(x));
  const U bi = bits_of(inv), be = bits_of(ei);
  return {e, from_bits<T>((bi & m) | (be & ~m)), from_bits<T>((be & m) | (bi & ~m)),
          log1p_from_ratio(e / (T(1) + T(0.5) * e))};
}

/// max(x, 0) on the bits (−0 gives +0).
template <typename T>
FGBG_VM_INLINE T relu(T x) {
  const Bits<T> b = bits_of(x);
  return from_bits<T>(b & nonneg_mask<T>(b));
}

/// max(−x, 0) on the bits.
template <typename T>
FGBG_VM_INLINE T relu_neg(T x) {
  const Bits<T> b = bits_of(x);
  return from_bits<T>((b ^ kSignBit<T>)&~nonneg_mask<T>(b));
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^−|x|), given the logistic parts of x.
template <typename T>
FGBG_VM_INLINE T softplus(T x, const Logistic<T>& l) {
  return relu(x) + l.log1p_e;
}

/// softplus(−x) = max(−x, 0) + log1p(e^−|x|) = −log σ(x), given the logistic parts of x.
template <typename T>
FGBG_VM_INLINE T softplus_neg(T x, const Logistic<T>& l) {
  return relu_neg(x) + l.log1p_e;
}

/// σ(x)^γ for γ ≥ 0 (any γ; the losses take γ = 0, 1, 2 by products instead), as
/// exp(−γ·softplus(−x)) with softplus(−x) formed from the parts (not softplus(x) − x, which
/// rounds to 0 for x ≳ 16 in float), so σ may underflow while σ^γ does not, and
/// γ·softplus(−x) = +∞ (huge γ or logit) gives 0.
///
/// The argument's rounding is amplified by γ·softplus(−x) (up to 104 in float, 745 in double
/// before the result underflows), as in every exp(γ·log p) form. Measured for γ ∈ {0.5, 1.5,
/// 2.5, 3}: |error| ≤ 3.005·(1 + γ·softplus(−x)) ulp over every float x, ≤ 2.948·(1 + γ·
/// softplus(−x)) over 10^8 random doubles (at most 64.5 ulp in float, 512.5 in double).
template <typename T>
FGBG_VM_INLINE T sigmoid_pow(T x, const Logistic<T>& l, T gamma) {
  return exp_nonpositive(-gamma * softplus_neg(x, l));
}

/// Runs `block(x, a, b)` over n elements in blocks of kBlock: `block` reads kBlock elements of
/// x and writes kBlock of a and (unless b is nullptr) of b. The tail (n mod kBlock elements) is
/// copied into a zero-padded local block and back, so every element goes through the same
/// vector code whatever n and the alignment of the pointers (the same bits for every layout).
template <typename T, typename Block>
inline void for_blocks(const T* x, T* a, T* b, std::ptrdiff_t n, Block&& block) {
  std::ptrdiff_t i = 0;
  for (; i + kBlock <= n; i += kBlock) block(x + i, a + i, b ? b + i : nullptr);
  if (i == n) return;
  alignas(64) T xt[kBlock] = {};
  alignas(64) T at[kBlock];
  alignas(64) T bt[kBlock];
  std::copy(x + i, x + n, xt);
  block(static_cast<const T*>(xt), at, b ? bt : nullptr);
  std::copy(at, at + (n - i), a + i);
  if (b) std::copy(bt, bt + (n - i), b + i);
}

}  // namespace vm
}  // namespace detail
}  // namespace fgbg
