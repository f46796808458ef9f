/// @file focal_loss_star.hpp
/// @brief FL*, the focal-loss alternative of the RetinaNet appendix, fused with its gradient.
///
/// Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, appendix A. Matches fvcore's
/// `sigmoid_focal_loss_star` (defaults α = −1, i.e. off, and γ = 1, where FL* equals BCE).
/// With z = (2t − 1)x (spec §5.5):
///
///   FL*(x, t) = α_t · softplus(−γ z) / γ,   ∂FL*/∂x = −(2t − 1) · α_t · σ(−γ z)
///
/// Shapes: logits N × C, labels N (−1 / 0 / 1..C), optional weights N or N × C, gradient N × C.
/// Default normaliser: max(1, #positive anchors).
///
/// @throws std::invalid_argument for a bad config, shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"

namespace fgbg {

/// Configuration of FocalLossStar; defaults are fvcore's.
template <typename Scalar>
struct FocalLossStarConfig {
  Scalar alpha = Scalar(-1);  ///< weight of positives (1−α for negatives); < 0 disables
  Scalar gamma = Scalar(1);   ///< > 0
  Normalizer normalizer = Normalizer::num_positives();
};

/// FL*; see the file comment.
template <typename Scalar>
class FocalLossStar : public OneHotSigmoidLoss<FocalLossStar<Scalar>, Scalar> {
 public:
  using Config = FocalLossStarConfig<Scalar>;
  static constexpr const char* kName = "fgbg::FocalLossStar";

  explicit FocalLossStar(const Config& config = {}) : config_(config) {
    detail::require_focal_params(kName, config.alpha, config.gamma, true);
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// t = 0 over a tile: softplus(γx)/γ · (1−α), gradient σ(γx) · (1−α).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    const Index n = t.size();
    const Scalar g = config_.gamma, a = alpha_neg();
    Eigen::Map<const Vec> x(xp, n);
    Eigen::Map<Vec> gx(scratch, n), e(scratch + detail::kTileElems, n);
    gx = g * x;
    e = array::exp_neg_abs(gx);
    Eigen::Map<Vec>(loss, n) = (a / g) * array::softplus_from(gx, e);
    if (grad) Eigen::Map<Vec>(grad, n) = a * array::sigmoid_from(gx, e);
  }

  /// Any binary t, one element.
  void element(Scalar x, Scalar t, Index, Index, Scalar& loss, Scalar& grad) const {
    const Scalar sign = t > Scalar(0.5) ? Scalar(1) : Scalar(-1);
    const Scalar a = sign > 0 ? alpha_pos() : alpha_neg();
    const Scalar gz = config_.gamma * sign * x;
    loss = a * softplus(-gz) / config_.gamma;
    grad = -sign * a * sigmoid(-gz);
  }

 private:
  Scalar alpha_pos() const { return config_.alpha < 0 ? Scalar(1) : config_.alpha; }
  Scalar alpha_neg() const { return config_.alpha < 0 ? Scalar(1) : Scalar(1) - config_.alpha; }
  Config config_;
};

}  // namespace fgbg
