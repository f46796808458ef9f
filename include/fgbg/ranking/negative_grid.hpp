/// @file negative_grid.hpp
/// @brief The slots of the negatives: NegativeGrid, the 2P thresholds at which a negative's window in
///        the sorted positives changes, and the per-slot records of the negatives' histogram.
///
/// Holds ScatterCell (count and offset sum of the negatives in one slot, filled by
/// scatter_negatives), SlotUpdate (the precomputed update of a negative in one slot, used by
/// write_updates) and NegativeGrid (the merged sorted keys u_k ± δ, the slot → window table,
/// each slot's reference double and the BucketedSearch over the keys).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "bucketed_search.hpp"
#include "double_double.hpp"

namespace fgbg {
namespace detail {

/// One slot t of the negative histogram (see NegativeGrid and scatter_negatives).
struct ScatterCell {
  std::int64_t count = 0;  ///< relevant negatives in slot t
  DD sum;                  ///< Σ of their offsets s − key[t − 1] (double-double)
};

/// Precomputed update of a negative in slot t: Down_c(s) = base + slope · min((s − ref)/δ, 4).
struct SlotUpdate {
  double base = 0, slope = 0, ref = 0;
};

/// The 2P thresholds at which a negative's window in the sorted positives changes. For a
/// negative of (scaled) score s, its window [lo, hi) in the sorted positives u is
///
///   lo = #{k : s − u_k ≥ δ}    (H_δ(s − u_k) = 1 for k < lo),
///   hi = #{k : s − u_k > −δ}   (H_δ(s − u_k) > 0 for k < hi),
///
/// with the differences as computed in double (monotone in s, so each predicate holds for s
/// above a threshold). Both are counts of thresholds passed, so they are read off one merged,
/// sorted array of keys with the single predicate key < s: key_k is the largest double for which
/// the predicate fails (found from u_k ± δ by nextafter steps or a bisection), so key < s ⇔
/// predicate, exactly, for every δ (also below half an ulp of u_k, where u_k ± δ round to u_k: a
/// negative tied with u_k then gets ½). One search per negative gives its slot t = #{keys < s} ∈
/// [0, 2P]; slot 0 is "H = 0 against every positive" (irrelevant), and window(t) is a table lookup.
/// A tie group of keys is passed all at once, so the table is exact.
class NegativeGrid {
 public:
  /// Builds the keys, the slot → window table and each positive's two key positions.
  void build(const double* u, std::uint32_t p, double delta) {
    keys_.resize(2 * static_cast<std::size_t>(p));
    windows_.resize(2 * static_cast<std::size_t>(p) + 1);
    pos_lo_.resize(p);
    pos_hi_.resize(p);
    constexpr double kInf = std::numeric_limits<double>::infinity();
    // The estimate u_k ± δ and the predicate's difference c − u_k are each rounded once, so the
    // threshold is almost always within an ulp or two of the estimate: kNextafterSteps single
    // steps settle it; the bisection (at most 64 halvings of the ordinals) is the exact fallback.
    constexpr int kNextafterSteps = 4;
    // largest double c with !pred(c), pred monotone (false at -DBL_MAX, true at DBL_MAX),
    // starting from the estimate c: a few nextafter steps, else a bisection over the doubles
    const auto threshold = [&](double c, auto pred) {
      for (int i = 0; i < kNextafterSteps; ++i) {
        if (pred(c)) {
          c = std::nextafter(c, -kInf);
        } else if (!pred(std::nextafter(c, kInf))) {
          c = std::nextafter(c, kInf);
        } else {
          return c;
        }
      }
      std::int64_t lo = ordinal(-std::numeric_limits<double>::max());  // pred false
      std::int64_t hi = ordinal(std::numeric_limits<double>::max());   // pred true
      const auto gap = [](std::int64_t l, std::int64_t h) {            // h − l without overflow
        return static_cast<std::uint64_t>(h) - static_cast<std::uint64_t>(l);
      };
      while (gap(lo, hi) > 1) {
        const std::int64_t mid = lo + static_cast<std::int64_t>(gap(lo, hi) / 2);
        if (pred(from_ordinal(mid))) {
          hi = mid;
        } else {
          lo = mid;
        }
      }
      return from_ordinal(lo);
    };
    const auto key_lo = [&](std::uint32_t k) {
      const double uk = u[k];
      return threshold(uk + delta, [&](double c) { return c - uk >= delta; });
    };
    const auto key_hi = [&](std::uint32_t k) {
      const double uk = u[k];
      return threshold(uk - delta, [&](double c) { return c - uk > -delta; });
    };
    std::uint32_t a = 0, b = 0;
    double next_lo = p ? key_lo(0) : 0.0, next_hi = p ? key_hi(0) : 0.0;
    windows_[0] = Window{0, 0};
    for (std::uint32_t t = 0; t < 2 * p; ++t) {
      // merge: take the hi key while it is ≤ the next lo key
      if (b < p && (a == p || next_hi <= next_lo)) {
        keys_[t] = next_hi;
        pos_hi_[b++] = t;
        if (b < p) next_hi = key_hi(b);
      } else {
        keys_[t] = next_lo;
        pos_lo_[a++] = t;
        if (a < p) next_lo = key_lo(a);
      }
      windows_[t + 1] = Window{a, b};
    }
    search_.build(keys_.data(), 2 * p);
    // the smallest double of each slot (its negatives s satisfy keys[t − 1] < s ≤ keys[t])
    slot_ref_.resize(2 * static_cast<std::size_t>(p) + 1);
    slot_ref_[0] = -kInf;
    for (std::size_t t = 1; t <= 2 * static_cast<std::size_t>(p); ++t)
      slot_ref_[t] = std::nextafter(keys_[t - 1], kInf);
  }

  /// The doubles in order as integers (−0 and +0 both map to 0).
  static std::int64_t ordinal(double d) {
    std::int64_t b;
    std::memcpy(&b, &d, sizeof b);
    return b < 0 ? -(b & std::numeric_limits<std::int64_t>::max()) : b;
  }
  static double from_ordinal(std::int64_t o) {
    const std::int64_t b = o < 0 ? ((-o) | std::numeric_limits<std::int64_t>::min()) : o;
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  }

  void reserve(std::size_t p) {
    keys_.reserve(2 * p);
    slot_ref_.reserve(2 * p + 1);
    windows_.reserve(2 * p + 1);
    pos_lo_.reserve(p);
    pos_hi_.reserve(p);
    search_.reserve(2 * p);
  }

  std::size_t capacity_bytes() const {
    return keys_.capacity() * sizeof(double) + windows_.capacity() * sizeof(Window) +
           (pos_lo_.capacity() + pos_hi_.capacity()) * sizeof(std::uint32_t);
  }

  BucketedSearch::View search() const { return search_.view(); }
  const double* keys() const { return keys_.data(); }
  const Window* windows() const { return windows_.data(); }
  /// The smallest double of slot t ≥ 1 (the reference of its negatives' offsets: s − ref ≥ 0,
  /// and every H of the slot's window is in [0, 1] there).
  const double* slot_refs() const { return slot_ref_.data(); }
  /// Position in the keys of positive k's lo key (u_k + δ) and hi key (u_k − δ).
  std::uint32_t pos_lo(std::uint32_t k) const { return pos_lo_[k]; }
  std::uint32_t pos_hi(std::uint32_t k) const { return pos_hi_[k]; }

 private:
  std::vector<double> keys_, slot_ref_;
  std::vector<Window> windows_;
  std::vector<std::uint32_t> pos_lo_, pos_hi_;
  BucketedSearch search_;
};

}  // namespace detail
}  // namespace fgbg
