/// @file focal_loss_star.hpp
/// @brief FL*, the focal-loss alternative of the RetinaNet appendix, fused with its gradient.
///
/// Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, appendix A. Matches fvcore's
/// `sigmoid_focal_loss_star` (defaults α = −1, i.e. off, and γ = 1, where FL* equals BCE).
/// With z = (2t − 1)x (fvcore `sigmoid_focal_loss_star`):
///
///   FL*(x, t) = α_t · softplus(−γ z) / γ,   ∂FL*/∂x = −(2t − 1) · α_t · σ(−γ z)
///
/// evaluated as α_t (max(−z, 0) + log1p(exp(−γ|z|))/γ), so γz may overflow (γ = 5, x = 1e38)
/// without the result doing so. γ must be a normal number (≥ FLT_MIN / DBL_MIN): for a subnormal
/// γ, 1/γ overflows.
///
/// Shapes: logits N × C, labels N (−1 / 0 / 1..C), optional weights N or N × C, gradient N × C.
/// Default normaliser: max(1, #positive anchors).
///
/// @throws std::invalid_argument for a bad config, shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

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
    // A subnormal γ makes α/γ overflow (softplus(γz)/γ → log 2/γ): reject it.
    detail::require_param(config.gamma >= std::numeric_limits<Scalar>::min(), kName, "gamma",
                          "finite and >= the smallest normal number", config.gamma);
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
    gx = g * x;  // may overflow to ±inf: only its sign and exp(−|γx|) are used
    e = array::exp_neg_abs(gx);
    // softplus(γx)/γ = max(x, 0) + log1p(exp(−|γx|))/γ, finite whenever the result is.
    Eigen::Map<Vec>(loss, n) = a * x.max(Scalar(0)) + (a / g) * e.log1p();
    if (grad) Eigen::Map<Vec>(grad, n) = a * array::sigmoid_from(gx, e);
  }

  /// Any binary t, one element.
  void element(Scalar x, Scalar t, Index, Index, Scalar& loss, Scalar& grad) const {
    const Scalar sign = t > Scalar(0.5) ? Scalar(1) : Scalar(-1);
    const Scalar a = sign > 0 ? alpha_pos() : alpha_neg();
    const Scalar z = sign * x;
    const Scalar gz = config_.gamma * z;  // may overflow to ±inf, as in negatives()
    loss = a * std::max(-z, Scalar(0)) + (a / config_.gamma) * std::log1p(std::exp(-std::abs(gz)));
    grad = -sign * a * sigmoid(-gz);
  }

 private:
  Scalar alpha_pos() const { return config_.alpha < 0 ? Scalar(1) : config_.alpha; }
  Scalar alpha_neg() const { return config_.alpha < 0 ? Scalar(1) : Scalar(1) - config_.alpha; }
  Config config_;
};

}  // namespace fgbg
