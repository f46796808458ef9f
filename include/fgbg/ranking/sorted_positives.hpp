/// @file sorted_positives.hpp
/// @brief The sorted positives of a ranking call and the positive–positive sums over them.
///
/// Holds gather_positives (collects, sorts and scales the positive entries and finds their
/// chain references and windows), positive_prefix (their unit-weight prefix sums) and the Up
/// sums positives_above, weighted_above and weighted_above_others.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../core/config.hpp"
#include "ranking_workspace.hpp"
#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// Score bound of gather_positives: when the largest |positive score| or δ exceeds
/// kMaxUnscaledScore = 2^kMaxScoreExp, scores and δ are multiplied by a power of 2 (exact) that
/// brings the largest below 2^kMaxScoreExp. The 2^124 left to DBL_MAX keeps every difference,
/// window width 2δ and window sum finite (kMaxWeightExp, ranking_updates.hpp, budgets the weights
/// against it).
inline constexpr int kMaxScoreExp = 900;
inline constexpr double kMaxUnscaledScore = 0x1p900;  ///< 2^kMaxScoreExp

/// Collects the positive entries of an N × C sigmoid layout: entry (n, labels[n] − 1) for every
/// anchor with a foreground label for which `is_pos(n)` holds. `aux(n)` gives the side input.
/// Sorts them by (score, flat index), chooses the scale (a power of 2, exact: 1 unless the
/// largest |positive score| or δ exceeds 2^900, then the largest becomes < 2^900, so that no
/// difference or sum can overflow), computes the chain references and each positive's own
/// window. ws.delta is δ · scale. Call only after every check has passed.
template <typename XD, typename LD, typename IsPos, typename Aux>
void gather_positives(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                      const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, const Aux& aux,
                      double delta) {
  const Index n = x.rows(), C = x.cols();
  ws.pos.clear();
  double big = delta;
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab <= 0 || !is_pos(a)) continue;
    const Index col = static_cast<Index>(lab) - 1;
    const double sc = static_cast<double>(x.derived().coeff(a, col));
    big = std::max(big, std::abs(sc));
    ws.pos.push_back({sc, a * C + col, a, aux(a)});
  }
  std::sort(ws.pos.begin(), ws.pos.end(), [](const RankedPositive& l, const RankedPositive& r) {
    return l.score < r.score || (l.score == r.score && l.flat < r.flat);
  });
  ws.scale = big > kMaxUnscaledScore ? std::ldexp(1.0, kMaxScoreExp - 1 - std::ilogb(big)) : 1.0;
  ws.delta = delta * ws.scale;
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  grow(ws.u, p);
  grow(ws.ref, p);
  grow(ws.win, p);
  for (std::uint32_t k = 0; k < p; ++k) ws.u[k] = ws.pos[k].score * ws.scale;
  chain_refs(ws.u.data(), p, ws.delta, ws.ref.data());
  for (std::uint32_t k = 0; k < p; ++k) ws.win[k] = window_at(ws.u.data(), p, ws.u[k], ws.delta);
}

/// Prefix sums of unit weights (W) and of the chain-relative scores (V) over the sorted
/// positives.
inline void positive_prefix(RankingWorkspace& ws) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  grow(ws.W, p + 1);
  grow(ws.V, p + 1);
  prefix_sums(nullptr, ws.u.data(), ws.ref.data(), p, ws.W.data(), ws.V.data());
}

/// Σ_{k∈P} H_δ(s_k − s_i) for the sorted positive i (self term ½ included).
inline double positives_above(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.W.data(), ws.V.data(), ws.ref.data(), p, ws.win[i], ws.u[i], ws.delta);
}

/// Σ_k w_k H_δ(s_k − s_i) for the sorted positive i with the weighted prefix sums ws.weight_sum and
/// ws.weight_offset_sum (prefix_sums with weights ws.weight); i's own term w_i/2 included.
inline double weighted_above(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.weight_sum.data(), ws.weight_offset_sum.data(), ws.ref.data(), p, ws.win[i],
                ws.u[i], ws.delta);
}

/// Σ_{k≠i} w_k H_δ(s_k − s_i) for the sorted positive i with the weighted prefix sums
/// ws.weight_sum, ws.weight_offset_sum (prefix_sums with weights ws.weight); i's own term w_i/2 is
/// left out inside the sum.
inline double weighted_above_others(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.weight_sum.data(), ws.weight_offset_sum.data(), ws.ref.data(), p, ws.win[i],
                ws.u[i], ws.delta, ws.weight[i]);
}

}  // namespace detail
}  // namespace fgbg
