/// @file negative_scatter.hpp
/// @brief The positive–negative sums F_i = Σ_{j∈N} H_δ(s_j − s_i), computed without sorting the
///        negatives (scatter_negatives).
///
/// Every relevant negative finds its slot in the NegativeGrid and is added to a histogram
/// (histogram_negatives); prefix sums over the slots (slot_prefix_sums) then give F_i and the
/// count of negatives with H > 0 for every positive (negatives_above_positives).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../core/config.hpp"
#include "bucketed_search.hpp"
#include "double_double.hpp"
#include "negative_grid.hpp"
#include "ranking_workspace.hpp"
#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// Phase 1 of scatter_negatives: puts every relevant negative into its slot of ws.grid (one
/// search) and adds it to that slot's ScatterCell (count and offset sum s − slot_ref[t]); with
/// `keep_slots` also stores the slot in ws.neg_slots (anchor-major order). ws.grid and ws.cells
/// must be built for the p ≥ 1 sorted positives. Returns N_rel, the number of relevant negatives.
template <typename XD, typename LD, typename IsPos>
Index histogram_negatives(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                          const Eigen::DenseBase<LD>& labels, const IsPos& is_pos,
                          bool keep_slots) {
  // locals, so that the hot loop keeps them in registers
  const double scale = ws.scale, first_key = ws.grid.keys()[0];
  const double* const slot_ref = ws.grid.slot_refs();
  const BucketedSearch::View search = ws.grid.search();
  ScatterCell* const cell = ws.cells.data();
  const Index n = x.rows(), C = x.cols();
  // The slot of negative j is added to the histogram and returned (false: irrelevant).
  const auto visit = [&](Index a, Index col, std::uint32_t& t) {
    const double s = static_cast<double>(x.derived().coeff(a, col)) * scale;
    if (!(first_key < s)) return false;  // H = 0 against every positive: irrelevant
    t = search.template bound<false>(s);
    ++cell[t].count;
    cell[t].sum = dd_add(cell[t].sum, s - slot_ref[t]);  // t ≥ 1: s ≥ slot_ref[t]
    return true;
  };
  // The slots buffer: its size is the room available (all of its capacity; reserve() sizes it);
  // it grows only when a slot would not fit, so a call after reserve(P, N_rel) never allocates.
  auto& slots = ws.neg_slots;
  if (keep_slots && slots.size() < slots.capacity()) slots.resize(slots.capacity());
  const std::size_t total = static_cast<std::size_t>(n * C);
  Index relevant = 0;
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab < 0) continue;
    const Index pc = (lab > 0 && is_pos(a)) ? static_cast<Index>(lab) - 1 : -1;
    Index row = 0;  // relevant negatives of this anchor
    std::uint32_t t = 0;
    if (!keep_slots) {
      for (Index col = 0; col < C; ++col) row += (col != pc && visit(a, col, t)) ? 1 : 0;
    } else if (slots.size() >= static_cast<std::size_t>(relevant + C)) {  // room for the row
      std::uint32_t* out = slots.data() + relevant;
      for (Index col = 0; col < C; ++col)
        if (col != pc && visit(a, col, t)) out[row++] = t;
    } else {  // near the end of the buffer: check every slot, grow geometrically if needed
      for (Index col = 0; col < C; ++col) {
        if (col == pc || !visit(a, col, t)) continue;
        const std::size_t used = static_cast<std::size_t>(relevant + row);
        if (used == slots.size()) slots.resize(std::min(std::max(2 * used, used + 1), total));
        slots[used] = t;
        ++row;
      }
    }
    relevant += row;
  }
  return relevant;
}

/// Phase 2 of scatter_negatives: prefix sums over the 2p + 1 slots of the histogram. The counts
/// become N(t) in place (ws.cells); ws.slot_sums gets S(t) = Σ_{t' ≤ t} (offset sum + count·(key
/// − ref)) over the slots inside a window (the others are never part of a window's difference).
inline void slot_prefix_sums(RankingWorkspace& ws, std::uint32_t p) {
  ScatterCell* const cell = ws.cells.data();
  const double* const slot_ref = ws.grid.slot_refs();
  const std::size_t slots_n = 2 * static_cast<std::size_t>(p) + 1;
  grow(ws.slot_sums, slots_n);
  DD* const S = ws.slot_sums.data();
  const Window* const window = ws.grid.windows();
  S[0] = DD{};
  for (std::size_t t = 1; t < slots_n; ++t) {
    DD contrib;
    const Window w = window[t];
    if (w.lo < w.hi && cell[t].count > 0) {
      const DD shift =
          dd_mul(two_sum(slot_ref[t], -ws.ref[w.lo]), static_cast<double>(cell[t].count));
      contrib = dd_add(cell[t].sum, shift);
    }
    S[t] = dd_add(S[t - 1], contrib);
    cell[t].count += cell[t - 1].count;
  }
}

/// Phase 3 of scatter_negatives: F_k and count_k of every sorted positive k (ws.F, ws.count,
/// already sized p) from the slot prefix sums and the positive's two key positions a = pos_lo(k),
/// b = pos_hi(k) (see scatter_negatives). `relevant` is N_rel.
inline void negatives_above_positives(RankingWorkspace& ws, std::uint32_t p, Index relevant) {
  const double delta = ws.delta;
  const double* u = ws.u.data();
  const ScatterCell* const cell = ws.cells.data();
  const DD* const S = ws.slot_sums.data();
  for (std::uint32_t k = 0; k < p; ++k) {
    const std::uint32_t ta = ws.grid.pos_lo(k), tb = ws.grid.pos_hi(k);
    const std::int64_t full = relevant - cell[ta].count, count = relevant - cell[tb].count;
    const std::int64_t cw = count - full;
    double f = static_cast<double>(full);
    if (cw > 0) {
      const double off =
          window_offset_sum(DD{static_cast<double>(cw), 0}, dd_sub(S[ta], S[tb]), u[k], ws.ref[k]);
      f += 0.5 * (static_cast<double>(cw) + off / delta);
    }
    ws.count[k] = count;
    ws.F[k] = count == 0 ? 0.0 : f;
  }
}

/// Computes F_i = Σ_{j∈N} H_δ(s_j − s_i) and the integer count of negatives with H > 0 for every
/// sorted positive i (ws.F, ws.count). Every relevant negative j finds its slot t_j in the
/// NegativeGrid (one search) and is counted in a histogram of count and offset sum per slot
/// (offsets s_j − r_t from the slot's smallest double r_t, in double-double: the same multiset of
/// negatives gives the same sums in any order, to about 2^-100). With prefix sums N(t) and
/// chain-relative offset sums S(t) over the slots and a = pos_lo(k), b = pos_hi(k), for positive k
///
///   count_k = N_rel − N(b)          (negatives with s_j − u_k > −δ: H > 0)
///   full_k  = N_rel − N(a)          (negatives with s_j − u_k ≥ δ: H = 1)
///   F_k     = full_k + ½ (cw + (S(a) − S(b) − cw·(u_k − ref_k))/δ),  cw = count_k − full_k.
///
/// With `keep_slots` the slots are stored (ws.neg_slots, in anchor-major order) for
/// write_updates. Negatives are the entries (n, c) with label ≥ 0 other than the
/// positive entry of their anchor.
template <typename XD, typename LD, typename IsPos>
void scatter_negatives(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                       const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, bool keep_slots) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  ws.relevant_negatives = 0;
  if (p == 0) return;
  ws.grid.build(ws.u.data(), p, ws.delta);
  ws.cells.assign(2 * static_cast<std::size_t>(p) + 1, ScatterCell{});
  const Index relevant = histogram_negatives(ws, x, labels, is_pos, keep_slots);
  ws.relevant_negatives = relevant;
  grow(ws.F, p);
  grow(ws.count, p);
  slot_prefix_sums(ws, p);
  negatives_above_positives(ws, p, relevant);
}

}  // namespace detail
}  // namespace fgbg
