/// @file sample.hpp
/// @brief The result of every sampler, the bridge from a sample to the Ω weights that every
///        loss of fgbg accepts (`sample → weights → loss`), and the normaliser each framework
///        divides by after sampling (spec §1.3, §2.5).
///
/// Ω_i = 1 for a sampled anchor (or the sampler's per-negative weight), 0 otherwise; the loss
/// is then Σ Ω_i ℓ_i / A with A from sample_avg_factor() (pass `Normalizer::avg_factor(A)`).
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "../core/checks.hpp"

namespace fgbg {

namespace detail {

/// Scratch buffers the samplers reuse between calls (owned by the Sample, so one Sample per
/// thread makes every sampler thread-safe; capacity is kept, so steady-state calls never
/// allocate).
struct SampleScratch {
  std::vector<Index> a, b, c, d;
  std::vector<double> losses;
  std::vector<std::pair<double, Index>> keyed;  ///< (key, index) pairs for top-k selection
  std::vector<unsigned char> marks;
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
  detail::SampleScratch scratch;  ///< samplers' workspace; not part of the result

  Index num_positives() const { return static_cast<Index>(positives.size()); }
  Index num_negatives() const { return static_cast<Index>(negatives.size()); }
  Index size() const { return static_cast<Index>(positives.size() + negatives.size()); }
  void clear() {
    positives.clear();
    negatives.clear();
    negative_weights.clear();
  }
};

/// Writes Ω for `n` anchors: 1 for sampled indices (or the sampler's negative weight), 0 for
/// every other anchor. `weights` is any writable Eigen vector of n entries (a plain Array is
/// resized; a Map or block must have n entries).
/// @throws std::invalid_argument if an index is outside [0, n), an index is sampled twice, or
///         the weights have the wrong size. The weights are not touched, except for a duplicate
///         (detected while writing), which leaves them all zero.
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
  auto& w = const_cast<Eigen::DenseBase<Derived>&>(weights_).derived();
  using Scalar = typename Derived::Scalar;
  if (!(is_vector && weights_.size() == n)) detail::prepare_output(kWhere, "weights", w, n, 1);
  w.setZero();
  // Duplicates are detected while writing: the sentinel -1 marks a sampled entry. On a duplicate
  // the weights are reset to zero before throwing (no partially written Ω survives).
  auto fail_duplicate = [&](Index i) {
    w.setZero();
    detail::throw_invalid(kWhere, "index ", i, " is sampled twice");
  };
  for (const Index i : sample.positives) {
    if (w.coeff(i) != Scalar(0)) fail_duplicate(i);
    w.coeffRef(i) = Scalar(-1);
  }
  for (const Index i : sample.negatives) {
    if (w.coeff(i) != Scalar(0)) fail_duplicate(i);
    w.coeffRef(i) = Scalar(-1);
  }
  for (const Index i : sample.positives) w.coeffRef(i) = Scalar(1);
  for (std::size_t k = 0; k < sample.negatives.size(); ++k)
    w.coeffRef(sample.negatives[k]) = sample.negative_weights.empty()
                                          ? Scalar(1)
                                          : static_cast<Scalar>(sample.negative_weights[k]);
}

/// Which normaliser A the references divide the summed loss by after sampling (spec §2.5, §3.3).
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
