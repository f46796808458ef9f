/// @file fenwick_tree.hpp
/// @brief RankFenwick: the Fenwick tree over the sorted positives' score ranks behind Rank & Sort
///        loss's IoU-conditioned window sums.
///
/// Each node holds RankFenwick::kSums double-double sums and an exact integer count; up() and
/// down() evaluate the same window formulas as up_sum and down_sum (window_sums.hpp) over the
/// elements inserted so far.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cstdint>
#include <vector>

#include "double_double.hpp"
#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// Fenwick tree (binary indexed tree) over the n score ranks of the sorted positives, holding
/// up to four weighted sums per node (double-double) plus an exact integer count. Used by Rank &
/// Sort loss for the IoU-conditioned window sums of RS loss. Value weights are given relative
/// to the element's chain reference (w · (u − ref), see chain_refs), so that a window sum never
/// cancels against far-away scores.
class RankFenwick {
 public:
  static constexpr int kSums = 4;

  /// Empties the tree for n positions (no allocation once the capacity suffices).
  void reset(std::uint32_t n) {
    n_ = n;
    sums_.assign(static_cast<std::size_t>(n + 1) * kSums, DD{});
    counts_.assign(n + 1, 0);
    total_count_ = 0;
    for (DD& t : totals_) t = DD{};
  }

  /// Reserves room for n positions.
  void reserve(std::size_t n) {
    sums_.reserve((n + 1) * kSums);
    counts_.reserve(n + 1);
  }

  /// Adds (w0..w3) and one to the count at position pos (0-based).
  void add(std::uint32_t pos, const DD (&w)[kSums]) {
    for (int s = 0; s < kSums; ++s) totals_[s] = dd_add(totals_[s], w[s]);
    ++total_count_;
    for (std::uint32_t i = pos + 1; i <= n_; i += i & (~i + 1)) {
      DD* node = &sums_[static_cast<std::size_t>(i) * kSums];
      for (int s = 0; s < kSums; ++s) node[s] = dd_add(node[s], w[s]);
      ++counts_[i];
    }
  }

  /// Sums over positions [0, m): out[s] for each weight, returns the count.
  std::int64_t prefix(std::uint32_t m, DD (&out)[kSums]) const {
    for (DD& o : out) o = DD{};
    std::int64_t c = 0;
    for (std::uint32_t i = m; i > 0; i -= i & (~i + 1)) {
      const DD* node = &sums_[static_cast<std::size_t>(i) * kSums];
      for (int s = 0; s < kSums; ++s) out[s] = dd_add(out[s], node[s]);
      c += counts_[i];
    }
    return c;
  }

  std::int64_t total_count() const { return total_count_; }

  /// Window sums at a query point for the weight pair (count weight `sw`, offset weight `sv`):
  /// Up (Σ w H(v − t)) and the number of inserted elements with v − t > −δ. `ref` is the chain
  /// reference of the window (ref[w.lo]; unused for an empty window).
  struct UpResult {
    double up = 0;
    std::int64_t count = 0;
  };
  UpResult up(Window w, int sw, int sv, double t, double ref, double delta) const {
    DD lo[kSums], hi[kSums];
    const std::int64_t clo = prefix(w.lo, lo);
    const std::int64_t chi = prefix(w.hi, hi);
    UpResult r;
    r.count = total_count_ - clo;
    if (r.count == 0) return r;  // exact zero when nothing is in range
    if (total_count_ != chi) r.up = dd_value(dd_sub(totals_[sw], hi[sw]));
    if (chi != clo) {
      const DD Ww = dd_sub(hi[sw], lo[sw]);
      const double off = window_offset_sum(Ww, dd_sub(hi[sv], lo[sv]), t, ref);
      r.up += 0.5 * (dd_value(Ww) + off / delta);
    }
    return r;
  }

  /// Down (Σ c H(t − v)) for the weight pair (c in `sc`, c·(v − ref) in `scv`).
  double down(Window w, int sc, int scv, double t, double ref, double delta) const {
    DD lo[kSums], hi[kSums];
    const std::int64_t clo = prefix(w.lo, lo);
    const std::int64_t chi = prefix(w.hi, hi);
    double r = clo > 0 ? dd_value(lo[sc]) : 0.0;
    if (chi != clo) {
      const DD Cw = dd_sub(hi[sc], lo[sc]);
      const double off = window_offset_sum(Cw, dd_sub(hi[scv], lo[scv]), t, ref);
      r += 0.5 * (dd_value(Cw) - off / delta);
    }
    return r;
  }

 private:
  std::uint32_t n_ = 0;
  std::vector<DD> sums_;
  std::vector<std::int64_t> counts_;
  DD totals_[kSums] = {};
  std::int64_t total_count_ = 0;
};

}  // namespace detail
}  // namespace fgbg
