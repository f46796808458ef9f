/// @file ranking_workspace.hpp
/// @brief RankingWorkspace: the reusable buffers of the ranking losses (AP, aLRP, Rank & Sort).
///
/// Holds RankedPositive (one positive entry of the flattened N × C ranking), RankingWorkspace
/// (every buffer of a ranking call; it grows to the largest problem seen, then a call allocates
/// nothing) and grow (resize without shrinking the capacity).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/config.hpp"
#include "double_double.hpp"
#include "fenwick_tree.hpp"
#include "negative_grid.hpp"
#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// One positive entry of the flattened N × C ranking.
struct RankedPositive {
  double score;  ///< logit (as double)
  Index flat;    ///< anchor-major flattened index n·C + c (the tie-break key)
  Index anchor;  ///< n
  double aux;    ///< per-positive side input: aLRP localisation error ℓ, RS target IoU y
};

}  // namespace detail

/// Reusable buffers of the ranking losses (AP, aLRP, Rank & Sort). Pass the same workspace to
/// every call: it grows to the largest problem seen (O(P) for the positives plus 4 to 8 bytes
/// per relevant negative entry: that buffer grows geometrically) and after that a call
/// allocates nothing. A workspace may be shared
/// by different losses and scalar types, but not by two calls running at the same time.
///
/// Members are implementation details of fgbg's ranking losses.
class RankingWorkspace {
 public:
  RankingWorkspace() = default;

  /// Pre-sizes the buffers for up to `positives` positive entries and `relevant_negatives`
  /// relevant negative entries, so that even the first call does not allocate.
  void reserve(Index positives, Index relevant_negatives) {
    const std::size_t p = static_cast<std::size_t>(std::max<Index>(positives, 0)) + 1;
    pos.reserve(p);
    u.reserve(p);
    ref.reserve(p);
    win.reserve(p);
    for (auto* v : {&F, &weight, &rank, &sort_error, &sort_gap, &sort_share, &g, &c, &pos_loss})
      v->reserve(p + 1);
    for (auto* v : {&W, &V, &X, &XV, &weight_sum, &weight_offset_sum}) v->reserve(p + 1);
    count.reserve(p + 1);
    order.reserve(p);
    fenwick.reserve(p);
    grid.reserve(p);
    cells.reserve(2 * p + 1);
    slot_sums.reserve(2 * p + 1);
    slot_updates.reserve(2 * p + 1);
    neg_slots.reserve(static_cast<std::size_t>(std::max<Index>(relevant_negatives, 0)));
  }

  /// Bytes currently reserved (for diagnostics).
  std::size_t capacity_bytes() const {
    std::size_t b = pos.capacity() * sizeof(detail::RankedPositive) +
                    win.capacity() * sizeof(detail::Window) +
                    neg_slots.capacity() * sizeof(std::uint32_t) +
                    order.capacity() * sizeof(std::uint32_t) + grid.capacity_bytes();
    for (auto* v :
         {&u, &ref, &F, &weight, &rank, &sort_error, &sort_gap, &sort_share, &g, &c, &pos_loss})
      b += v->capacity() * sizeof(double);
    for (auto* v : {&W, &V, &X, &XV, &weight_sum, &weight_offset_sum, &slot_sums})
      b += v->capacity() * sizeof(detail::DD);
    b += count.capacity() * sizeof(std::int64_t) + cells.capacity() * sizeof(detail::ScatterCell) +
         slot_updates.capacity() * sizeof(detail::SlotUpdate);
    return b;
  }

  // --- implementation details -----------------------------------------------------------
  std::vector<detail::RankedPositive> pos;    ///< positives sorted by (score, flat index)
  std::vector<double> u;                      ///< their scores, times `scale`
  std::vector<double> ref;                    ///< chain reference of each positive (chain_refs)
  std::vector<detail::Window> win;            ///< window of each positive in u
  std::vector<double> F;                      ///< Σ_{j∈N} H(s_j − s_i) per positive
  std::vector<std::int64_t> count;            ///< #negatives with H > 0 per positive
  std::vector<double> weight;                 ///< per-positive weight (aLRP ℓ, RS 1 − IoU)
  std::vector<detail::DD> weight_sum;         ///< prefix sums of `weight`
  std::vector<detail::DD> weight_offset_sum;  ///< prefix sums of weight · (u − ref)
  std::vector<double> rank;                   ///< aLRP: R_i = R⁺_i + F_i
  std::vector<double> sort_error;             ///< RS: current sorting error c_i
  std::vector<double> sort_gap;               ///< RS: e_i = c_i − target sorting error
  std::vector<double> sort_share;             ///< RS: d_i = e_i / D_i, sent per unit of H
  std::vector<double> pos_loss;            ///< the loss of each sorted positive (ranking_loss.hpp)
  std::vector<double> g, c;                ///< per-positive update and distribution weight
  std::vector<detail::DD> W, V, X, XV;     ///< prefix sums over the sorted positives
  std::vector<detail::ScatterCell> cells;  ///< histogram of the negatives over the slots
  std::vector<detail::DD> slot_sums;       ///< prefix over slots of the chain-relative sums
  std::vector<detail::SlotUpdate> slot_updates;  ///< a negative's update per slot
  std::vector<std::uint32_t> neg_slots;          ///< slot of each relevant negative
  std::vector<std::uint32_t> order;              ///< permutations of the positives
  detail::RankFenwick fenwick;                   ///< Rank & Sort's IoU-conditioned sums
  detail::NegativeGrid grid;                     ///< the negatives' window thresholds
  double scale = 1;                              ///< power of 2 applied to scores and δ
  double delta = 1;                              ///< δ · scale
  Index relevant_negatives = 0;                  ///< N_rel of the last call
};

namespace detail {

/// Resizes a vector without shrinking its capacity (allocates only to grow).
template <typename T>
void grow(std::vector<T>& v, std::size_t n) {
  v.resize(n);
}

}  // namespace detail
}  // namespace fgbg
