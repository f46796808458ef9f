/// @file window_sums.hpp
/// @brief Windows of a query point in a sorted set and the window sums Up and Down evaluated from
///        prefix sums (docs/ranking.md §4).
///
/// Holds Window (a half-open index range [lo, hi)), window_at (the exact window at ±δ by the
/// computed differences), chain_refs (the chain reference of each sorted positive),
/// prefix_sums (weight and chain-relative offset prefix sums in double-double),
/// window_offset_sum, up_sum and down_sum. The formulas are in ranking_primitives.hpp's file
/// comment and docs/ranking.md §4.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cstdint>

#include "double_double.hpp"

namespace fgbg {
namespace detail {

/// Half-open index window [lo, hi) of a sorted set for a query point (see the file comment).
struct Window {
  std::uint32_t lo = 0, hi = 0;
};

/// Window of t in a sorted set v[0..n) at ±δ, by the differences themselves (monotone in v_k,
/// so a binary search applies): lo = first k with v_k − t > −δ, hi = first k with v_k − t ≥ δ.
/// Unlike comparing v_k with t ± δ, this never loses an element tied with t when δ is below half
/// an ulp of t (t ± δ would round to t).
inline Window window_at(const double* v, std::uint32_t n, double t, double delta) {
  std::uint32_t lo = 0, len = n;
  while (len > 0) {  // first k with v_k − t > −δ
    const std::uint32_t half = len / 2;
    if (!(v[lo + half] - t > -delta)) {
      lo += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  std::uint32_t hi = lo;
  len = n - lo;
  while (len > 0) {  // first k ≥ lo with v_k − t ≥ δ
    const std::uint32_t half = len / 2;
    if (!(v[hi + half] - t >= delta)) {
      hi += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return {lo, hi};
}

/// Chain references of the sorted positives u[0..n): ref[k] = u of the first element of k's
/// chain, a maximal run in which consecutive scores differ by at most 2δ (a little more, so
/// that rounding can only merge chains, never split one). Every window (of a positive or of a
/// negative) lies inside one chain, so window sums of w·(u − ref) never mix far-apart scores:
/// the cancellation of a window sum is relative to the chain's spread, not to the outliers.
inline void chain_refs(const double* u, std::uint32_t n, double delta, double* ref) {
  // Relative widening of the 2δ chain gap: far above the few ulps by which the rounded half
  // difference 0.5·(u_k − u_{k−1}) can exceed the exact one, so a pair within 2δ is never split,
  // and far below any δ that matters (a wider chain only shifts the reference).
  constexpr double kChainGapSlack = 0x1p-40;
  const double gap = delta * (1 + kChainGapSlack);
  for (std::uint32_t k = 0; k < n; ++k)
    ref[k] = (k > 0 && !(0.5 * (u[k] - u[k - 1]) > gap)) ? ref[k - 1] : u[k];
}

/// Prefix sums W[m] = Σ_{k<m} w_k and V[m] = Σ_{k<m} w_k (u_k − ref_k) in double-double
/// (w = nullptr: unit weights).
inline void prefix_sums(const double* w, const double* u, const double* ref, std::uint32_t n, DD* W,
                        DD* V) {
  DD sw, sv;
  W[0] = V[0] = DD{};
  for (std::uint32_t k = 0; k < n; ++k) {
    const double wk = w ? w[k] : 1.0;
    sw = dd_add(sw, wk);
    sv = dd_add(sv, dd_mul(two_sum(u[k], -ref[k]), wk));
    W[k + 1] = sw;
    V[k + 1] = sv;
  }
}

/// Σ_{k∈[lo,hi)} w_k (u_k − t) = V_w − W_w (t − ref) for a window inside one chain of
/// reference ref (W_w, V_w: the window's weight and offset sums).
inline double window_offset_sum(DD Ww, DD Vw, double t, double ref) {
  return dd_value(dd_sub(Vw, dd_mul(Ww, two_sum(t, -ref))));
}

/// Up(t) = Σ_k w_k H_δ(u_k − t) from the prefix sums and the window of t (Primitive A): the
/// elements above the window count 1, those in it ½ (1 + (u_k − t)/δ).
/// `self` (default 0) is a weight inside the window at t itself (H = ½) to leave out: it is taken
/// from the window's weight sum in double-double, before rounding, so a huge own weight does not
/// swamp the others' (aLRP's Σ_{k≠i} H ℓ_k with ℓ_i = 1.8e55 lost a 0.11 beside it).
inline double up_sum(const DD* W, const DD* V, const double* ref, std::uint32_t n, Window w,
                     double t, double delta, double self = 0.0) {
  const double full = dd_value(dd_sub(W[n], W[w.hi]));
  if (w.lo == w.hi) return full;
  const DD Ww = dd_sub(W[w.hi], W[w.lo]);
  const double off = window_offset_sum(Ww, dd_sub(V[w.hi], V[w.lo]), t, ref[w.lo]);
  const double others = self == 0.0 ? dd_value(Ww) : dd_value(dd_sub(Ww, DD{self, 0.0}));
  return full + 0.5 * (others + off / delta);
}

/// Down(t) = Σ_k c_k H_δ(t − u_k) (Primitive B): the elements below the window count 1, those
/// in it ½ (1 + (t − u_k)/δ).
inline double down_sum(const DD* C, const DD* CV, const double* ref, Window w, double t,
                       double delta) {
  const double below = dd_value(C[w.lo]);
  if (w.lo == w.hi) return below;
  const DD Cw = dd_sub(C[w.hi], C[w.lo]);
  const double off = window_offset_sum(Cw, dd_sub(CV[w.hi], CV[w.lo]), t, ref[w.lo]);
  return below + 0.5 * (dd_value(Cw) - off / delta);
}

}  // namespace detail
}  // namespace fgbg
