/// @file random_sampler.hpp
/// @brief Mini-batch biased random sampling with a foreground fraction (Faster R-CNN, Ren et al.,
///        NeurIPS 2015: 256 anchors per image for the RPN, up to 1:1; 512 RoIs, 25 % foreground,
///        for the R-CNN head).
///
/// Matches mmdetection's `RandomSampler` (+ `BaseSampler.sample`), which is torchvision's and
/// maskrcnn-benchmark's `BalancedPositiveNegativeSampler` and detectron2's `subsample_labels`
/// plus the optional `neg_pos_ub` (mmdet `RandomSampler`):
///
///   P_exp = ⌊num · pos_fraction⌋; take all positives if |Pos| ≤ P_exp, else P_exp uniformly
///   without replacement; N_exp = num − P (capped by ⌊neg_pos_ub · max(1, P)⌋ if neg_pos_ub ≥ 0);
///   take all negatives if |Neg| ≤ N_exp, else N_exp uniformly without replacement.
///
/// Candidates: labels −1 ignore (never sampled), 0 negative, ≥ 1 positive — an Assignment's
/// labels (with GT-as-proposals prepended for the second stage, see max_iou_assigner.hpp).
/// Randomness: a caller-owned URBG (partial Fisher–Yates via fgbg::choose_in_place, positives
/// drawn first); same seed ⇒ same sample. Not bit-identical to torch's randperm (no framework is
/// reproducible across the others). Output indices ascending by default (mmdet's
/// `unique()`); `sorted = false` keeps draw order (detectron2).
///
/// Normalise the loss with sample_avg_factor() (sample.hpp): the references differ.
///
/// @throws std::invalid_argument for a bad config (constructor) or a label < −1; the Sample is
///         not touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../boxes/max_iou_assigner.hpp"
#include "sampling_common.hpp"

namespace fgbg {

/// Configuration of RandomSampler (the R-CNN preset by default; SamplerConfig::rpn() for RPN).
using RandomSamplerConfig = SamplerConfig;

/// Biased random mini-batch sampler; see the file comment.
class RandomSampler {
 public:
  using Config = RandomSamplerConfig;
  static constexpr const char* kName = "fgbg::RandomSampler";

  explicit RandomSampler(const Config& config = {}) : config_(config) { config_.validate(kName); }

  const Config& config() const { return config_; }

  /// Samples from a label vector (−1 / 0 / ≥ 1) into `out`.
  template <typename LD, typename URBG>
  void sample(const Eigen::DenseBase<LD>& labels, URBG& rng, Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    const Index p_exp = config_.expected_positives();  // in [0, num]: nothing below can throw
    out.clear();
    detail::collect(
        labels, [](auto l) { return l > 0; }, out.positives);
    detail::choose_k(out.positives, p_exp, rng, config_.sorted);
    const Index n_exp = config_.expected_negatives(out.num_positives());
    detail::collect(
        labels, [](auto l) { return l == 0; }, out.negatives);
    detail::choose_k(out.negatives, n_exp, rng, config_.sorted);
  }

  /// Samples from an assignment.
  template <typename URBG>
  void sample(const Assignment& a, URBG& rng, Sample& out) const {
    sample(a.labels(), rng, out);
  }

 private:
  Config config_;
};

}  // namespace fgbg
