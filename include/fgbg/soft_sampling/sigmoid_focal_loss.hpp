/// @file sigmoid_focal_loss.hpp
/// @brief Sigmoid focal loss (RetinaNet) with its fused, closed-form gradient.
///
/// Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.
/// Matches `torchvision.ops.sigmoid_focal_loss` (value) and its autograd gradient; the same
/// formula as Detectron, detectron2/fvcore, mmdetection and mmcv.
///
/// Per element, with p = σ(x), z = (2t − 1)x, p_t = σ(z), α_t = α if t = 1 else 1 − α:
///
///   FL(x, t) = −α_t (1 − p_t)^γ log p_t = α_t · exp(−γ softplus(z)) · softplus(−z)
///   ∂FL/∂x   = (2t − 1) · α_t (1 − p_t)^γ (γ p_t log p_t + p_t − 1)
///
/// The modulating factor is differentiated (as in every reference). The softplus forms are
/// finite for every finite logit and every γ ≥ 0. α < 0 switches α-weighting off (α_t = 1).
///
/// Shapes: logits N × C (no background column), labels N (−1 ignore, 0 background, k → column
/// k−1), optional weights N or N × C, gradient N × C. Default normaliser: max(1, #positive
/// anchors) (RetinaNet); see Normalizer.
///
/// @throws std::invalid_argument for a bad config, shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"

namespace fgbg {

/// Configuration of SigmoidFocalLoss; defaults are the RetinaNet / torchvision ones.
template <typename Scalar>
struct SigmoidFocalLossConfig {
  Scalar alpha = Scalar(0.25);  ///< weight of positives (1−α for negatives); < 0 disables
  Scalar gamma = Scalar(2);     ///< focusing parameter, ≥ 0
  Normalizer normalizer = Normalizer::num_positives();
};

/// Sigmoid focal loss; see the file comment.
template <typename Scalar>
class SigmoidFocalLoss : public OneHotSigmoidLoss<SigmoidFocalLoss<Scalar>, Scalar> {
 public:
  using Config = SigmoidFocalLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::SigmoidFocalLoss";

  explicit SigmoidFocalLoss(const Config& config = {}) : config_(config) {
    detail::require_focal_params(kName, config.alpha, config.gamma);
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// t = 0 over a tile: FL = (1−α) p^γ softplus(x), ∂FL/∂x = (1−α) p^γ (p + γ(1−p) softplus(x)).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    detail::modulated_negatives(xp, loss, grad, scratch, t.size(), alpha_neg(), config_.gamma);
  }

  /// Any binary t, one element (stable closed form).
  void element(Scalar x, Scalar t, Index, Index, Scalar& loss, Scalar& grad) const {
    const Scalar sign = t > Scalar(0.5) ? Scalar(1) : Scalar(-1);
    const Scalar z = sign * x;
    const Scalar at = sign > 0 ? alpha_pos() : alpha_neg();
    const Scalar sp_neg = softplus(-z);  // −log p_t
    const Scalar pt = sigmoid(z);
    const Scalar mod = pow_gamma(sigmoid(-z), -softplus(z), config_.gamma);  // (1−p_t)^γ
    loss = at * mod * sp_neg;
    grad = sign * at * mod * (-config_.gamma * pt * sp_neg - sigmoid(-z));  // p_t − 1 = −σ(−z)
  }

 private:
  Scalar alpha_pos() const { return config_.alpha < 0 ? Scalar(1) : config_.alpha; }
  Scalar alpha_neg() const { return config_.alpha < 0 ? Scalar(1) : Scalar(1) - config_.alpha; }
  Config config_;
};

}  // namespace fgbg
