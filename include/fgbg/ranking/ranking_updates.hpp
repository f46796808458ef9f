/// @file ranking_updates.hpp
/// @brief Writing a ranking loss's update of every entry: the transposed sums Σ_i c_i H_δ(s_j − s_i)
///        of the negatives and the positives' final updates (write_updates).
///
/// Holds kMaxWeightExp and scale_down_weights (the overflow guard of the weights c) and
/// write_updates, which reads the negatives' slots that scatter_negatives stored.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../core/config.hpp"
#include "double_double.hpp"
#include "negative_grid.hpp"
#include "ranking_workspace.hpp"
#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// Largest weight exponent a window sum may meet: weights are at most 2^kMaxWeightExp after
/// scale_down_weights, score offsets at most a few 2^901 after gather_positives' scaling, and up
/// to 2^32 terms are summed, so every window sum stays below 2^975.
inline constexpr int kMaxWeightExp = 40;

/// Scales the n weights w by 2^-m so that the largest is at most 2^kMaxWeightExp and returns m
/// (0, and nothing changed, when the largest already is). Exact except for weights that fall
/// below the normal range: those are below 2^(m − 1022) ≤ 2^-550 of their original size relative
/// to the largest, far below the sums' rounding.
inline int scale_down_weights(double* w, std::uint32_t n) {
  double wmax = 0.0;
  for (std::uint32_t k = 0; k < n; ++k) wmax = std::max(wmax, w[k]);
  const int m = wmax > std::ldexp(1.0, kMaxWeightExp) ? std::ilogb(wmax) - kMaxWeightExp : 0;
  if (m > 0)
    for (std::uint32_t k = 0; k < n; ++k) w[k] = std::ldexp(w[k], -m);
  return m;
}

/// Cap on a negative's offset (s − r_t)/δ from its slot's smallest double in write_updates. A slot
/// inside a window is at most 2δ wide, so the cap (twice that) never changes a used offset; a slot
/// with an empty window (slope 0) may be arbitrarily wide, and there the cap keeps the offset
/// finite so that 0 · offset stays 0 instead of 0 · inf = NaN.
inline constexpr double kMaxSlotOffset = 4.0;

/// Writes the update of every entry: 0 for ignored entries and irrelevant negatives;
/// scale · Σ_i c_i H_δ(s_j − s_i) for a relevant negative j, with c from ws.c over the sorted
/// positives; ws.g[k] (final, normalisation included) for the sorted positive k. Requires
/// scatter_negatives(…, keep_slots = true) on the same inputs. Each slot's update is
/// precomputed (in double-double) as Down(r_t) at the slot's smallest double r_t plus a slope: a
/// negative's update is then one multiply-add from its slot, with both terms ≥ 0 (no
/// cancellation, whatever the slot's width in units of δ).
template <typename XD, typename LD, typename GD, typename IsPos>
void write_updates(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                   const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, double scale,
                   GD& grad) {
  using GS = typename GD::Scalar;
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  const Index n = x.rows(), C = x.cols();
  if (p == 0) {
    grad.derived().setZero();
    return;
  }
  const double delta = ws.delta, inv_delta = 1.0 / ws.delta, sscale = ws.scale;
  // The weights c (aLRP: E_i/F_i, up to (max ℓ + 1)·2^111) are multiplied by score offsets of up
  // to a few δ (≤ 2^902 after gather_positives' scaling) in the window sums, which overflowed
  // (NaN updates for δ = 4.4e262 with ℓ = 1.8e55) although every update is at most max E. They
  // are scaled by 2^-m (scale_down_weights) so that no sum can overflow, and each slot's base and
  // slope by 2^m: the bits are unchanged when m = 0, i.e. whenever max c ≤ 2^kMaxWeightExp.
  const int m = scale_down_weights(ws.c.data(), p);
  grow(ws.X, p + 1);
  grow(ws.XV, p + 1);
  prefix_sums(ws.c.data(), ws.u.data(), ws.ref.data(), p, ws.X.data(), ws.XV.data());
  const std::size_t slots_n = 2 * static_cast<std::size_t>(p) + 1;
  grow(ws.slot_updates, slots_n);
  SlotUpdate* const su = ws.slot_updates.data();
  const Window* const window = ws.grid.windows();
  const double* const slot_ref = ws.grid.slot_refs();
  su[0] = SlotUpdate{};
  for (std::size_t t = 1; t < slots_n; ++t) {
    const Window w = window[t];
    SlotUpdate& out = su[t];
    out.ref = slot_ref[t];
    out.base = std::ldexp(
        scale * down_sum(ws.X.data(), ws.XV.data(), ws.ref.data(), w, out.ref, delta), m);
    out.slope =
        w.lo < w.hi ? std::ldexp(scale * 0.5 * dd_value(dd_sub(ws.X[w.hi], ws.X[w.lo])), m) : 0.0;
  }
  const double first_key = ws.grid.keys()[0];
  const std::uint32_t* slot = ws.neg_slots.data();
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab < 0) {
      for (Index col = 0; col < C; ++col) grad.coeffRef(a, col) = GS(0);
      continue;
    }
    const Index pc = (lab > 0 && is_pos(a)) ? static_cast<Index>(lab) - 1 : -1;
    for (Index col = 0; col < C; ++col) {
      GS out = GS(0);
      const double s = static_cast<double>(x.derived().coeff(a, col)) * sscale;
      if (col != pc && first_key < s) {
        const SlotUpdate& q = su[*slot++];
        out = static_cast<GS>(q.base + q.slope * std::min((s - q.ref) * inv_delta, kMaxSlotOffset));
      }
      grad.coeffRef(a, col) = out;
    }
  }
  for (std::uint32_t k = 0; k < p; ++k) {
    const Index flat = ws.pos[k].flat;
    grad.coeffRef(flat / C, flat % C) = static_cast<GS>(ws.g[k]);
  }
}

}  // namespace detail
}  // namespace fgbg
