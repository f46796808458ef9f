/// @file ranking_primitives.hpp
/// @brief The sort-based machinery shared by AP loss, aLRP loss and Rank & Sort loss
///        (docs/ranking.md §4), written once.
///
/// All three losses need, for every positive i, sums of the form Σ_k w_k H_δ(s_k − s_i) over a
/// set, and the transposed sums Σ_i c_i H_δ(s_j − s_i) for every other entry j, where
///
///   H_δ(x) = clamp(x / (2δ) + 1/2, 0, 1)      (0 for x ≤ −δ, 1 for x ≥ δ, H_δ(0) = 1/2).
///
/// H_δ is piecewise linear with breakpoints at ±δ, so over a set sorted ascending, v_0 ≤ … ≤
/// v_{n−1}, with prefix sums W[m] = Σ_{k<m} w_k and V[m] = Σ_{k<m} w_k v_k, and the window
///
///   lo = first k with v_k > t − δ,   hi = first k with v_k ≥ t + δ,
///
///   Up(t)   = Σ_k w_k H_δ(v_k − t)
///           = (W[n] − W[hi]) + ((V[hi] − V[lo]) − (t − δ)(W[hi] − W[lo]))/(2δ)
///   Down(u) = Σ_k c_k H_δ(u − v_k)
///           = C[lo] + ((u + δ)(C[hi] − C[lo]) − (CV[hi] − CV[lo]))/(2δ)
///
/// (Primitive A and Primitive B of the spec, written here in the form actually evaluated: the
/// window is lo = first k with v_k − t > −δ, hi = first k with v_k − t ≥ δ, differences as
/// computed in double, and a window element counts ½ (1 ± (v_k − t)/δ), its offset sum taken
/// relative to a chain reference; see Numerics below). Elements exactly at t − δ get H = 0 and
/// elements exactly at t + δ get H = 1: clamp semantics.
///
/// How the pieces are laid out here (see docs/ranking.md):
///  - Only the positives are sorted, by (score, flattened index) ascending (std::sort on a total
///    order: deterministic, no allocation). P is small next to N.
///  - Positive–positive sums use prefix arrays over the sorted positives (positive_prefix,
///    up_sum, prefix_sums).
///  - Positive–negative sums Σ_j H_δ(s_j − s_i) ("how many negatives are above positive i") are
///    computed without sorting the negatives. A negative's window [a_j, b_j) in the sorted
///    positives (H = 1 against [0, a_j), H = (s_j − s_i + δ)/(2δ) against [a_j, b_j)) changes
///    only at the 2P thresholds s_i ± δ, so every relevant negative finds its slot among those
///    thresholds with one search (NegativeGrid over a BucketedSearch: O(1) expected, O(log P)
///    worst case) and adds itself to a histogram of counts and offset sums per slot
///    (scatter_negatives). Prefix sums over the 2P + 1 slots then yield F_i for all i, and the
///    slot gives that negative's window, hence its update Down_c(s_j), later
///    (write_updates). Cost O(P log P + N log P), memory O(P + N_rel).
///  - Negatives with s_j ≤ min_P s − δ ("irrelevant") have H = 0 against every positive; they
///    are skipped after one comparison and get an update of exactly 0.
///  - Rank & Sort's IoU-conditioned sums use a Fenwick tree over the positives' score ranks
///    (RankFenwick) with the same window formula.
///
/// Numerics (docs/ranking.md §4): H's argument is always the computed difference
/// s_j − s_i (windows and keys are exact thresholds of those predicates, so δ below an ulp of
/// the scores still gives ties ½). Every window lies in one chain of the sorted positives
/// (consecutive scores within 2δ) and its sums are taken relative to the chain's first score,
/// in double-double (prefix sums, Fenwick nodes, per-slot sums of the negatives' offsets from
/// the slot's smallest double): no cancellation against outliers, and the same result for any
/// order of the anchors (to ~2^-100 before the final rounding). Scores and δ are scaled by a
/// power of 2 when they exceed 2^900 so that nothing overflows; δ ≥ 1e-250 keeps 1/δ normal.
/// ε gates use exact integer counts: a sum whose integer count of contributing elements is 0
/// is exactly 0.
///
/// The RankingWorkspace holds every buffer; it grows to the largest problem seen and then a call
/// allocates nothing.
///
/// This header is the umbrella of the pieces, one role each (all in fgbg::detail except
/// RankingWorkspace):
///  - double_double.hpp: the double-double arithmetic of every sum;
///  - window_sums.hpp: Window, window_at, chain_refs, prefix_sums, up_sum, down_sum;
///  - bucketed_search.hpp: find_window, bound_in, BucketedSearch;
///  - negative_grid.hpp: NegativeGrid and the per-slot ScatterCell and SlotUpdate;
///  - fenwick_tree.hpp: RankFenwick;
///  - ranking_workspace.hpp: RankedPositive, RankingWorkspace, grow;
///  - sorted_positives.hpp: gather_positives and the positive–positive sums;
///  - negative_scatter.hpp: scatter_negatives (F_i for every positive);
///  - ranking_updates.hpp: write_updates and its weight scaling;
///  - ranking_checks.hpp: the checks a ranking call starts with, kMinDelta;
///  - ranking_output.hpp: RankValues and the output preparation;
///  - ranking_groups.hpp: for_each_group, count_groups_with_positives.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/checks.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"

#include "bucketed_search.hpp"
#include "double_double.hpp"
#include "fenwick_tree.hpp"
#include "negative_grid.hpp"
#include "negative_scatter.hpp"
#include "ranking_checks.hpp"
#include "ranking_groups.hpp"
#include "ranking_output.hpp"
#include "ranking_updates.hpp"
#include "ranking_workspace.hpp"
#include "sorted_positives.hpp"
#include "window_sums.hpp"
