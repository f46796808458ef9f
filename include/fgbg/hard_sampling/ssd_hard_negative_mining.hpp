/// @file ssd_hard_negative_mining.hpp
/// @brief SSD-style hard negative mining (Liu et al., SSD, ECCV 2016, §2.2 "Hard negative
///        mining"): all positives plus the highest-loss negatives, at most 3 per positive.
///
/// Matches mmdetection's `SSDHead.loss_by_feat_single` (per image):
///
///   Pos = {label ≥ 1}, Neg = {label = 0}, k = min(⌊neg_pos_ratio · |Pos|⌋, |Neg|) (the min is
///   taken in double, so any finite ratio is safe: 1e30 selects every negative),
///   sample = Pos ∪ (the k negatives of largest loss, ties by index ascending).
///
/// `losses` is the per-anchor classification loss (mmdet: softmax CE with the anchor's label,
/// computed without gradient). Ignored anchors (−1) are never selected; mmdet keeps them in the
/// negative pool with loss 0 (label weight 0), which changes no loss value.
///
/// torchvision's `SSD.compute_loss` takes k = 3·P without the clamp; when 3·P > |Neg| the
/// positives (ranked last at −∞) fall into its window and are counted twice. Here k is always
/// clamped to |Neg|, so a positive is never counted twice.
///
/// An image without positives selects no negative (mmdet: it contributes no classification
/// loss). Normalise with sample_avg_factor(SampleNormalization::mmdet_ssd (Σ max(P, 1)) or
/// torchvision_ssd (max(1, ΣP))). Deterministic (no RNG); O(N) top-k by std::nth_element.
/// Output ascending unless `sorted = false` (negatives then in (loss desc, index asc) order).
///
/// @throws std::invalid_argument for a bad config, a label < −1 or a loss vector of the wrong
///         length; std::domain_error for a non-finite loss. The Sample is not touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../boxes/max_iou_assigner.hpp"
#include "sampling_common.hpp"

namespace fgbg {

/// Configuration of SsdHardNegativeMining.
struct SsdHardNegativeMiningConfig {
  double neg_pos_ratio = 3.0;  ///< negatives per positive
  bool sorted = true;
};

/// SSD hard negative mining; see the file comment.
class SsdHardNegativeMining {
 public:
  using Config = SsdHardNegativeMiningConfig;
  static constexpr const char* kName = "fgbg::SsdHardNegativeMining";

  explicit SsdHardNegativeMining(const Config& config = {}) : config_(config) {
    detail::require_param(config_.neg_pos_ratio >= 0 && std::isfinite(config_.neg_pos_ratio), kName,
                          "neg_pos_ratio", "finite and >= 0", config_.neg_pos_ratio);
  }

  const Config& config() const { return config_; }

  /// Mines one image: labels (N: −1 / 0 / ≥ 1) and per-anchor losses (N).
  template <typename LD, typename VD>
  void sample(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<VD>& losses,
              Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    detail::check_values(kName, "losses", losses, labels.size());
    out.clear();
    detail::collect(
        labels, [](auto l) { return l > 0; }, out.positives);
    const Index p = out.num_positives();
    auto& keyed = out.scratch.keyed;
    keyed.clear();
    const Index n = labels.size();
    for (Index i = 0; i < n; ++i)
      if (labels.derived().coeff(i) == 0)
        keyed.emplace_back(static_cast<double>(losses.derived().coeff(i)), i);
    // Clamped in double first: a huge ratio (e.g. 1e30) means "every negative", never overflow.
    const Index k = detail::min_with_floor(static_cast<Index>(keyed.size()),
                                           config_.neg_pos_ratio * static_cast<double>(p));
    detail::top_k(keyed, k);
    detail::keyed_to_indices(keyed, out.negatives, config_.sorted);
  }

 private:
  Config config_;
};

}  // namespace fgbg
