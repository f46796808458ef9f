/// @file soft_target_cross_entropy.hpp
/// @brief Binary cross-entropy with logits against a soft target at the label column of each
///        positive anchor: the classification loss of YOLOv8/11 (ultralytics), PP-YOLOE, YOLOv6
///        and TOOD-style heads, fused with its gradient.
///
/// Matches ultralytics' `v8DetectionLoss` classification term (`ultralytics/utils/loss.py`):
/// `BCEWithLogitsLoss(reduction='none')(pred_scores, target_scores).sum() / target_scores_sum`
/// with `target_scores_sum = max(target_scores.sum(), 1)`, where `target_scores` is one-hot at
/// the assigned class scaled by the task-aligned score t̂ (Feng et al., "TOOD: Task-aligned
/// One-stage Object Detection", ICCV 2021; Jocher et al., ultralytics YOLOv8). Value and autograd
/// gradient of `torch.nn.functional.binary_cross_entropy_with_logits` (reference vectors in
/// tests/data/soft_target_bce.json). Equivalently: QFL with β = 0.
///
/// Per element, with target t = t̂_i (the anchor's soft target) at the label column of a positive
/// anchor and t = 0 everywhere else:
///
///   BCE(x, t) = (1 − t)·softplus(x) + t·softplus(−x),   ∂BCE/∂x = σ(x) − t
///
/// (the direct form of softplus(x) − t·x, which cancels for t = 1, x ≫ 0). σ(x) − t is formed in
/// detail::Wide<Scalar> without cancellation when σ(x) ≈ t (detail::sigmoid_minus): for a
/// well-trained positive its error is about eps(Wide)·|logit t|·σ(1 − σ), where the plain
/// difference in the scalar type is off by eps·σ, often more than the gradient itself.
///
/// Shapes: logits N × C (no background column), labels N (−1 ignore, 0 background, k → column
/// k−1), targets N (read on positive rows only, each in [0, 1]; t = 1 is one-hot BCE), optional
/// weights N or N × C, gradient N × C; per-element or per-anchor losses (core/loss_output.hpp).
/// Default normaliser: Normalizer::target_sum() = max(1, Σ t̂ over the positives), ultralytics'.
/// An assigned anchor in ultralytics is a positive with its t̂ (which may be tiny); there are no
/// ignored anchors there (label −1 is fgbg's extension).
///
/// @throws std::invalid_argument for a bad shape, label, target outside [0, 1], weight or
///         normaliser; std::domain_error for a non-finite logit, target or weight. Nothing is
///         written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "quality_loss_base.hpp"
#include "sigmoid_cross_entropy.hpp"

namespace fgbg {

/// Configuration of SoftTargetCrossEntropyLoss; the default is ultralytics'.
struct SoftTargetCrossEntropyLossConfig {
  Normalizer normalizer = Normalizer::target_sum();
};

/// Soft-target sigmoid binary cross-entropy; see the file comment.
template <typename Scalar>
class SoftTargetCrossEntropyLoss
    : public DenseLoss<SoftTargetCrossEntropyLoss<Scalar>, Scalar, QualitySignature> {
 public:
  using Config = SoftTargetCrossEntropyLossConfig;
  static constexpr const char* kName = "fgbg::SoftTargetCrossEntropyLoss";

  explicit SoftTargetCrossEntropyLoss(const Config& config = {}) : config_(config) {
    config_.normalizer.validate(kName, /*soft_targets=*/true);
  }

  const Config& config() const { return config_; }

  /// See DenseLoss: (logits, labels, targets [, grad] [, weights] [, normalizer] [, losses]).
  template <typename Call>
  double run(Call& c) const {
    const LabelStats s = detail::check_quality_call(kName, c);
    const auto& targets = std::get<0>(c.in);
    const auto target = [&targets](Index row) {
      return static_cast<double>(targets.derived().coeff(row));
    };
    return detail::sigmoid_onehot(*this, c.x, c.labels, c.option,
                                  c.normalizer->resolve(s, c.x.cols()), std::get<0>(c.out), target,
                                  c.losses);
  }

  /// t = 0 over a tile: softplus(x) and σ(x) (BCE's).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    SigmoidCrossEntropyLoss<Scalar>().negatives(t, xp, loss, grad, scratch);
  }

  /// Any target t ∈ [0, 1], one element, in detail::Wide<Scalar> (one call per positive anchor).
  void element(Scalar xs, Scalar ts, Index, Index, Scalar& loss, Scalar& grad) const {
    using W = detail::Wide<Scalar>;
    const W x = xs, t = ts;
    loss =
        static_cast<Scalar>(t == W(1) ? softplus(-x) : (W(1) - t) * softplus(x) + t * softplus(-x));
    grad = static_cast<Scalar>(detail::sigmoid_minus(x, t));
  }

 private:
  Config config_;
};

}  // namespace fgbg
