/// @file sample.hpp
/// @brief The result of every sampler, the bridge from a sample to the Ω weights that every
///        loss of fgbg accepts (`sample → weights → loss`), and the normaliser each framework
///        divides by after sampling (mmdet `SamplingResult`).
///
/// Ω_i = 1 for a sampled anchor (or the sampler's per-negative weight), 0 otherwise; the loss
/// is then Σ Ω_i ℓ_i / A with A from sample_avg_factor() (pass `Normalizer::avg_factor(A)`).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/checks.hpp"

namespace fgbg {

namespace detail {

/// min(n, ⌊x⌋) for a finite x ≥ 0 that may exceed the Index range (e.g. neg_pos_ub = 1e30):
/// compared in double, so ⌊x⌋ is only converted when it is below n (no overflow, no UB).
inline Index min_with_floor(Index n, double x) {
  const double f = std::floor(x);
  return f < static_cast<double>(n) ? static_cast<Index>(f) : n;
}

/// Scratch buffers the samplers reuse between calls (owned by the Sample, so one Sample per
/// thread makes every sampler thread-safe; capacity is kept, so steady-state calls never
/// allocate).
struct SampleScratch {
  /// Four index lists whose role depends on the sampler: each sampler binds them to role names
  /// where it starts (IouBalancedSampler: negatives, floor_set, binned_set, drawn;
  /// instance-balanced positives: positives, by_gt, work, group_start; OhemSampler: pos_pool,
  /// neg_pool, pos_kept, neg_kept; OhemPaperSampler: pool, kept).
  std::vector<Index> a, b, c, d;
  std::vector<double> losses;                   ///< the loss callback's output for one pool (OHEM)
  std::vector<std::pair<double, Index>> keyed;  ///< (key, index) pairs for top-k selection
  /// One flag per candidate: already taken (IouBalancedSampler) or already seen (the duplicate
  /// check of sample_weights).
  std::vector<unsigned char> marks;
  std::vector<std::pair<std::uint64_t, Index>> grouped;  ///< (GT id, index) of positives
};

}  // namespace detail

/// Indices chosen by a sampler, owned by the caller and reused across calls: samplers clear and
/// refill the vectors, so once their capacity suffices no call allocates. Indices are ascending
/// (mmdetection's `unique()`) unless a sampler's docs say otherwise. `negative_weights` is filled
/// only by samplers that define per-negative weights (ISR-N / Score-HLR); otherwise it is empty.
struct Sample {
  std::vector<Index> positives;
  std::vector<Index> negatives;
  std::vector<double> negative_weights;
  /// Samplers' workspace; not part of the result. Mutable because sample_weights() also uses it
  /// (duplicate check of unsorted indices) on a const Sample: like the samplers, do not use one
  /// Sample from two threads at once.
  mutable detail::SampleScratch scratch;

  Index num_positives() const { return static_cast<Index>(positives.size()); }
  Index num_negatives() const { return static_cast<Index>(negatives.size()); }
  Index size() const { return static_cast<Index>(positives.size() + negatives.size()); }
  void clear() {
    positives.clear();
    negatives.clear();
    negative_weights.clear();
  }
};

namespace detail {

/// True if v is strictly ascending.
inline bool strictly_ascending(const std::vector<Index>& v) {
  for (std::size_t k = 1; k < v.size(); ++k)
    if (!(v[k - 1] < v[k])) return false;
  return true;
}

/// Throws if an index of `s` (all already in [0, n)) is sampled twice; writes nothing but the
/// Sample's scratch. Both lists strictly ascending (every sampler's default output): a merge,
/// O(P + N), no memory. Otherwise (e.g. ISR-N's rank order, `sorted = false`): one mark per
/// anchor in scratch.marks, O(n + P + N), no allocation once its capacity reaches n.
inline void check_no_duplicate(const char* where, const Sample& s, Index n) {
  auto fail = [&](Index i) { throw_invalid(where, "index ", i, " is sampled twice"); };
  if (strictly_ascending(s.positives) && strictly_ascending(s.negatives)) {
    auto p = s.positives.begin(), q = s.negatives.begin();
    while (p != s.positives.end() && q != s.negatives.end()) {
      if (*p == *q) fail(*p);
      if (*p < *q)
        ++p;
      else
        ++q;
    }
    return;
  }
  auto& marks = s.scratch.marks;
  marks.assign(static_cast<std::size_t>(n), 0);
  for (const auto* list : {&s.positives, &s.negatives})
    for (const Index i : *list) {
      if (marks[static_cast<std::size_t>(i)]) fail(i);
      marks[static_cast<std::size_t>(i)] = 1;
    }
}

}  // namespace detail

/// Writes Ω for `n` anchors: 1 for sampled indices (or the sampler's negative weight), 0 for
/// every other anchor. `weights` is any writable Eigen vector of n entries (a plain Array is
/// resized; a Map or block must have n entries).
/// Cost O(n + P + N); indices not strictly ascending use the Sample's scratch for the duplicate
/// check (no allocation once warm).
/// @throws std::invalid_argument if an index is outside [0, n), an index is sampled twice, or
///         the weights have the wrong size. Everything is checked before the first write: the
///         weights are not touched then.
template <typename Derived>
void sample_weights(const Sample& sample, Index n, const Eigen::DenseBase<Derived>& weights_) {
  constexpr const char* kWhere = "fgbg::sample_weights";
  if (n < 0) detail::throw_invalid(kWhere, "n must be >= 0, got ", n);
  for (const Index i : sample.positives)
    if (i < 0 || i >= n)
      detail::throw_invalid(kWhere, "positive index ", i, " is outside [0, ", n, ")");
  for (const Index i : sample.negatives)
    if (i < 0 || i >= n)
      detail::throw_invalid(kWhere, "negative index ", i, " is outside [0, ", n, ")");
  if (!sample.negative_weights.empty() && sample.negative_weights.size() != sample.negatives.size())
    detail::throw_invalid(kWhere, "negative_weights must be empty or match negatives");
  const bool is_vector = weights_.cols() == 1 || weights_.rows() == 1;
  if (!(is_vector && weights_.size() == n)) detail::check_output(kWhere, "weights", weights_, n, 1);
  detail::check_no_duplicate(kWhere, sample, n);
  // ---- every check passed: write ----
  auto& w = detail::writable(weights_).derived();
  using Scalar = typename Derived::Scalar;
  if (!(is_vector && weights_.size() == n)) detail::prepare_output(kWhere, "weights", w, n, 1);
  w.setZero();
  for (const Index i : sample.positives) w.coeffRef(i) = Scalar(1);
  for (std::size_t k = 0; k < sample.negatives.size(); ++k)
    w.coeffRef(sample.negatives[k]) = sample.negative_weights.empty()
                                          ? Scalar(1)
                                          : static_cast<Scalar>(sample.negative_weights[k]);
}

/// Which normaliser A the references divide the summed loss by after sampling.
enum class SampleNormalization {
  /// mmdetection RPN (any sampler, §1.3): Σ_images (max(P, 1) + max(N, 1)).
  mmdet_rpn,
  /// Number sampled, max(Σ_images (P + N), 1): mmdetection RoI classification, and the `mean`
  /// over sampled anchors / RoIs of torchvision, maskrcnn-benchmark and detectron2's RoI head.
  sampled,
  /// detectron2 RPN: the nominal batch size per image × number of images (a constant).
  detectron2_rpn,
  /// mmdetection SSD (hard-negative mining): Σ_images max(P, 1).
  mmdet_ssd,
  /// torchvision SSD: max(1, Σ_images P).
  torchvision_ssd,
};

/// Batch normaliser A over the samples of a batch (one Sample per image, [first, last)).
/// `nominal_num` is the per-image batch size (used by detectron2_rpn only, must be > 0 then).
/// Pass the result to a loss as `Normalizer::avg_factor(A)`. A is always ≥ 1.
/// @throws std::invalid_argument for detectron2_rpn with nominal_num ≤ 0.
template <typename It>
double sample_avg_factor(SampleNormalization kind, It first, It last, Index nominal_num = 0) {
  double a = 0.0, total_pos = 0.0, total = 0.0, images = 0.0;
  for (It it = first; it != last; ++it) {
    const Sample& s = *it;
    const double p = static_cast<double>(s.num_positives());
    const double q = static_cast<double>(s.num_negatives());
    images += 1.0;
    total_pos += p;
    total += p + q;
    if (kind == SampleNormalization::mmdet_rpn) a += std::max(p, 1.0) + std::max(q, 1.0);
    if (kind == SampleNormalization::mmdet_ssd) a += std::max(p, 1.0);
  }
  switch (kind) {
    case SampleNormalization::mmdet_rpn:
    case SampleNormalization::mmdet_ssd:
      return std::max(a, 1.0);
    case SampleNormalization::sampled:
      return std::max(total, 1.0);
    case SampleNormalization::detectron2_rpn:
      if (nominal_num <= 0)
        detail::throw_invalid("fgbg::sample_avg_factor",
                              "detectron2_rpn needs nominal_num > 0, got ", nominal_num);
      return std::max(static_cast<double>(nominal_num) * images, 1.0);
    case SampleNormalization::torchvision_ssd:
      return std::max(total_pos, 1.0);
  }
  return 1.0;
}

/// Normaliser A of a single image (see the iterator overload).
inline double sample_avg_factor(SampleNormalization kind, const Sample& s, Index nominal_num = 0) {
  return sample_avg_factor(kind, &s, &s + 1, nominal_num);
}

}  // namespace fgbg
