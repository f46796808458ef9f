/// @file sampling_common.hpp
/// @brief What every mini-batch sampler shares: the batch configuration (num, pos_fraction,
///        neg_pos_ub), label checks, pools, random choice and top-k selection with index ties.
///
/// The batch rule (mmdetection `BaseSampler.sample`, torchvision/maskrcnn-benchmark
/// `BalancedPositiveNegativeSampler`, detectron2 `subsample_labels`):
///   P_exp = ⌊num · pos_fraction⌋, P = min(P_exp, |Pos|),
///   N_exp = num − P (too few positives ⇒ more negatives), capped by ⌊neg_pos_ub · max(1, P)⌋
///   when neg_pos_ub ≥ 0 (neg_pos_ub = −1: no bound; a huge finite bound, e.g. 1e30, is clamped
///   in double before any integer conversion, so it acts as no bound). Ignored candidates
///   (label −1) are never sampled.
///
/// Every value of the config fields is either rejected by validate() (std::invalid_argument:
/// num < 0, pos_fraction outside [0, 1] or NaN, neg_pos_ub neither −1 nor finite ≥ 0) or gives a
/// well-defined batch: num may be anything up to INT64_MAX (products are clamped in double before
/// any conversion to an integer).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "../core/checks.hpp"
#include "../core/random.hpp"
#include "sample.hpp"

namespace fgbg {

/// Batch configuration shared by the mini-batch samplers. Defaults: the R-CNN preset.
struct SamplerConfig {
  Index num = 512;             ///< candidates sampled per image (upper bound)
  double pos_fraction = 0.25;  ///< at most ⌊num · pos_fraction⌋ positives
  double neg_pos_ub = -1;      ///< −1: no bound; else #neg ≤ ⌊neg_pos_ub · max(1, #pos)⌋
  bool sorted = true;          ///< indices ascending (mmdet `unique()`); false: draw order

  /// RPN of Faster R-CNN in every framework: 256 anchors, half positive.
  static SamplerConfig rpn() { return {256, 0.5, -1, true}; }
  /// R-CNN / RoI head: 512 RoIs, a quarter positive.
  static SamplerConfig rcnn() { return {512, 0.25, -1, true}; }

  void validate(const char* where) const {
    detail::require_param(num >= 0, where, "num", ">= 0", num);
    detail::require_param(pos_fraction >= 0 && pos_fraction <= 1, where, "pos_fraction",
                          "in [0, 1]", pos_fraction);
    detail::require_param(neg_pos_ub == -1 || (neg_pos_ub >= 0 && std::isfinite(neg_pos_ub)), where,
                          "neg_pos_ub", "-1 (no bound) or finite >= 0", neg_pos_ub);
  }

  /// min(num, ⌊num · pos_fraction⌋) (Python's int() of the same double product). The product is
  /// clamped to `num` in double before the conversion: with num = INT64_MAX the double product
  /// rounds up to 2^63, which is outside the Index range (converting it would be undefined).
  Index expected_positives() const {
    return detail::min_with_floor(num, static_cast<double>(num) * pos_fraction);
  }

  /// Negatives wanted once `p` positives are taken (0 ≤ p ≤ num, so num − p cannot overflow).
  Index expected_negatives(Index p) const {
    Index n = num - p;
    if (neg_pos_ub >= 0)
      n = detail::min_with_floor(n, neg_pos_ub * static_cast<double>(std::max<Index>(1, p)));
    return std::max<Index>(n, 0);
  }
};

namespace detail {

/// Validates a label vector (−1 ignore, 0 background, ≥ 1 foreground) and counts it.
template <typename LD>
LabelStats check_sampler_labels(const char* where, const Eigen::DenseBase<LD>& labels) {
  static_assert(std::is_integral<typename LD::Scalar>::value,
                "fgbg: labels must be an integer array (-1 ignore, 0 background, 1..C)");
  const Index n = labels.size();
  check_vector(where, "labels", labels, n);
  LabelStats s;
  s.anchors = n;
  for (Index i = 0; i < n; ++i) {
    const auto l = labels.derived().coeff(i);
    if (l < -1)
      throw_invalid(where, "labels(", i, ") = ", static_cast<long long>(l),
                    " is below -1 (-1 ignore, 0 background, 1..C class)");
    s.valid += (l != -1);
    s.positives += (l > 0);
    s.background += (l == 0);
  }
  return s;
}

/// Validates a per-candidate vector of n finite doubles-convertible values.
template <typename D>
void check_values(const char* where, const char* arg, const Eigen::DenseBase<D>& v, Index n) {
  static_assert(std::is_floating_point<typename D::Scalar>::value,
                "fgbg: losses / IoUs must be a float or double array");
  check_vector(where, arg, v, n);
  for (Index i = 0; i < n; ++i)
    if (!std::isfinite(v.derived().coeff(i)))
      throw std::domain_error(concat(where, ": ", arg, "(", i, ") is ", v.derived().coeff(i),
                                     "; every input must be finite"));
}

/// Appends the indices i (ascending) with pred(labels(i)) to `out` (cleared first).
template <typename LD, typename Pred>
void collect(const Eigen::DenseBase<LD>& labels, Pred pred, std::vector<Index>& out) {
  out.clear();
  const Index n = labels.size();
  for (Index i = 0; i < n; ++i)
    if (pred(labels.derived().coeff(i))) out.push_back(i);
}

/// Keeps k entries of `pool` chosen uniformly without replacement (all if k ≥ size, without
/// drawing). With `sorted`, the kept entries are sorted ascending.
template <typename URBG>
void choose_k(std::vector<Index>& pool, Index k, URBG& rng, bool sorted) {
  if (k < static_cast<Index>(pool.size())) {
    choose_in_place(pool, k, rng);
    pool.resize(static_cast<std::size_t>(k));
    if (sorted) std::sort(pool.begin(), pool.end());
  }
}

/// Order of top-k selection: key descending, index ascending (deterministic ties).
inline bool key_desc_index_asc(const std::pair<double, Index>& a,
                               const std::pair<double, Index>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

/// An unsigned key with the order of the doubles (−0 and +0 the same key): for doubles that are
/// not NaN, a > b ⇔ sortable_key(a) > sortable_key(b).
inline std::uint64_t sortable_key(double v) {
  if (v == 0.0) v = 0.0;  // −0 == +0 in the comparator, so one key
  std::uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u >> 63) ? ~u : (u | (std::uint64_t(1) << 63));
}

/// Pools below this size are selected by std::nth_element directly.
inline constexpr Index kRadixSelectMin = 2048;
/// Digit width of the radix selection: 2^11 buckets (16 KB of counts on the stack).
inline constexpr int kRadixBits = 11;

/// Keeps in `keyed` the k entries first in (key desc, index asc) order; the kept entries are in
/// no particular order. Large pools by radix selection: a histogram of the keys' top
/// kRadixBits over the range of the undecided keys finds the bucket where the k-th entry lies,
/// an in-place partition keeps everything above it and narrows to that bucket, and
/// the next round refines within it (at most ⌈64 / 11⌉ rounds; usually 2). Entries of one key
/// are then taken by index. Two passes over the pool per round instead of nth_element's
/// comparator calls on (key, index) pairs.
inline void top_k(std::vector<std::pair<double, Index>>& keyed, Index k) {
  using Entry = std::pair<double, Index>;
  const Index m = static_cast<Index>(keyed.size());
  if (k >= m) return;
  if (k <= 0) {
    keyed.clear();
    return;
  }
  const auto by_index = [](const Entry& a, const Entry& b) { return a.second < b.second; };
  if (m < kRadixSelectMin) {
    std::nth_element(keyed.begin(), keyed.begin() + (k - 1), keyed.end(), key_desc_index_asc);
    keyed.resize(static_cast<std::size_t>(k));
    return;
  }
  Entry* const e = keyed.data();
  Index first = 0, last = m, need = k;  // [0, first) kept; need more of [first, last)
  while (need < last - first) {
    std::uint64_t lo = ~std::uint64_t(0), hi = 0;
    for (Index i = first; i < last; ++i) {
      const std::uint64_t u = sortable_key(e[i].first);
      lo = std::min(lo, u);
      hi = std::max(hi, u);
    }
    if (lo == hi) {  // one key: the smallest indices
      std::nth_element(e + first, e + first + need - 1, e + last, by_index);
      break;
    }
    int width = 0;  // bits of hi − lo
    for (std::uint64_t r = hi - lo; r != 0; r >>= 1) ++width;
    const int shift = std::max(0, width - kRadixBits);
    const auto bucket = [&](const Entry& x) {
      return static_cast<Index>((sortable_key(x.first) - lo) >> shift);
    };
    Index count[Index(1) << kRadixBits] = {};
    for (Index i = first; i < last; ++i) ++count[bucket(e[i])];
    Index b = (hi - lo) >> shift, above = 0;  // the boundary bucket, entries above it
    while (above + count[b] < need) above += count[b--];
    // Bucket b and above to the front (few entries: a swap only for those), then above b
    // before b within them: [first, lt) above b (kept), [lt, gt) bucket b, the rest below.
    Index gt = first;
    for (Index i = first; i < last; ++i)
      if (bucket(e[i]) >= b) std::swap(e[gt++], e[i]);
    Index lt = first;
    for (Index i = first; i < gt; ++i)
      if (bucket(e[i]) > b) std::swap(e[lt++], e[i]);
    need -= lt - first;
    first = lt;
    last = gt;
    if (shift == 0 && need < last - first) {  // bucket b is one key: the smallest indices
      std::nth_element(e + first, e + first + need - 1, e + last, by_index);
      break;
    }
  }
  keyed.resize(static_cast<std::size_t>(k));
}

/// Moves the indices of `keyed` into `out`, ascending when `sorted`, else in (key desc, index
/// asc) order.
inline void keyed_to_indices(std::vector<std::pair<double, Index>>& keyed, std::vector<Index>& out,
                             bool sorted) {
  if (!sorted) std::sort(keyed.begin(), keyed.end(), key_desc_index_asc);
  out.clear();
  for (const auto& kv : keyed) out.push_back(kv.second);
  if (sorted) std::sort(out.begin(), out.end());
}

}  // namespace detail
}  // namespace fgbg
