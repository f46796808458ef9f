/// @file quality_focal_loss.hpp
/// @brief Quality Focal Loss (QFL, the classification half of Generalized Focal Loss) with its
///        fused, closed-form gradient.
///
/// Li et al., "Generalized Focal Loss: Learning Qualified and
/// Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020.
/// Matches mmdetection's `quality_focal_loss` (`mmdet/models/losses/gfocal_loss.py`, value and
/// autograd gradient). The original `implus/GFocal` code
/// raised the *signed* difference to β (NaN for non-integer β, implus/GFocal); like mmdetection
/// this uses |y − σ|^β.
///
/// Per element, with σ = σ(x), target t = y_i (the anchor's quality, its IoU) at the label column
/// of a positive anchor and t = 0 everywhere else, d = σ − t:
///
///   QFL(x, t) = |d|^β · BCE(x, t),   BCE(x, t) = (1 − t)·softplus(x) + t·softplus(−x)
///   ∂QFL/∂x   = β |d|^(β−1) sign(d) · σ(1 − σ) · BCE(x, t) + |d|^β · d
///   t = 0:      QFL = σ^β softplus(x),  ∂QFL/∂x = σ^β (σ + β (1 − σ) softplus(x))
///
/// The modulating factor |d|^β is differentiated (as in both references); the quality y is a
/// constant (it comes from detached boxes). There is no α. β ≥ 1 is required: for β < 1 the
/// derivative of |d|^β is infinite at d = 0.
///
/// Shapes: logits N × C (no background column), labels N (−1 ignore, 0 background, k → column
/// k−1), quality N (read on positive rows only, each in [0, 1]), optional weights N or N × C,
/// gradient N × C. Default normaliser: num_positives = max(1, #positive anchors). mmdetection's
/// GFL head divides by avg_factor = Σ_img max(P_img, 1) averaged over GPUs (plus FLT_EPSILON):
/// the same number for one image on one GPU; pass Normalizer::avg_factor(A) to reproduce it
/// otherwise.
///
/// @throws std::invalid_argument for a bad config (β < 1), shape, label, quality outside [0, 1],
///         weight or normaliser; std::domain_error for a non-finite logit, quality or weight.
///         Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>

#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "quality_loss_base.hpp"

namespace fgbg {

/// Configuration of QualityFocalLoss; defaults are mmdetection's / GFL's.
template <typename Scalar>
struct QualityFocalLossConfig {
  Scalar beta = Scalar(2);  ///< exponent of |y − σ|, finite and ≥ 1
  Normalizer normalizer = Normalizer::num_positives();
};

/// Quality focal loss; see the file comment.
template <typename Scalar>
class QualityFocalLoss : public DenseLoss<QualityFocalLoss<Scalar>, Scalar, QualitySignature> {
 public:
  using Config = QualityFocalLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::QualityFocalLoss";

  explicit QualityFocalLoss(const Config& config = {}) : config_(config) {
    detail::require_param(std::isfinite(config.beta) && config.beta >= Scalar(1), kName, "beta",
                          "finite and >= 1", config.beta);
    config_.normalizer.validate(kName, /*soft_targets=*/true);
  }

  const Config& config() const { return config_; }

  /// See DenseLoss: (logits, labels, quality [, grad] [, weights] [, normalizer]).
  template <typename Call>
  double run(Call& c) const {
    const LabelStats s = detail::check_quality_call(kName, c);
    const auto& x = c.x;
    const auto& labels = c.labels;
    const auto& quality = std::get<0>(c.in);
    const auto target = [&quality](Index row) {
      return static_cast<double>(quality.derived().coeff(row));
    };
    return detail::sigmoid_onehot(*this, x, labels, c.option, c.normalizer->resolve(s, x.cols()),
                                  std::get<0>(c.out), target, c.losses);
  }

  /// t = 0 over a tile: σ^β softplus(x) and σ^β (σ + β(1 − σ) softplus(x)).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    detail::modulated_negatives(xp, loss, grad, scratch, t.size(), Scalar(1), config_.beta);
  }

  /// Any target t ∈ [0, 1], one element (the closed form of the file comment).
  ///
  /// Evaluated in detail::Wide<Scalar> (one call per positive anchor): d = σ(x) − t cancels when
  /// σ(x) ≈ t: it is formed as σ(x)(1 − t)(−expm1(logit(t) − x)) (detail::sigmoid_minus).
  void element(Scalar xs, Scalar ts, Index, Index, Scalar& loss, Scalar& grad) const {
    using W = detail::Wide<Scalar>;
    const W x = xs, t = ts;
    const W p = sigmoid(x), q = sigmoid(-x);
    const W d = detail::sigmoid_minus(x, t);
    const W ad = std::abs(d);
    const W bce = t == W(1) ? softplus(-x) : (W(1) - t) * softplus(x) + t * softplus(-x);
    const W slope = p * q;  // σ(1 − σ), without cancellation
    const W b = config_.beta;
    if (b == W(2)) {
      loss = static_cast<Scalar>(d * d * bce);
      grad = static_cast<Scalar>(d * (W(2) * slope * bce + d * d));
      return;
    }
    // Near |d| = 1, |d| itself has lost 1 − |d| (σ(100) − 3e-28 is 1 in double and long double),
    // and a huge β turned (1 − 3e-28)^β ≈ 0 into 1 and the gradient into inf: there the power is
    // exp(β·log1p(−(1 − |d|))) with 1 − |d| = σ(−x) + t (d > 0) or (1 − t) + σ(x) (d < 0), sums
    // of non-negative terms. Elsewhere std::pow, as before.
    W mod, dmod;
    if (ad > W(0.5)) {
      const W log_ad = std::log1p(-(d > W(0) ? q + t : (W(1) - t) + p));
      mod = std::exp(b * log_ad);
      dmod = b * std::exp((b - W(1)) * log_ad);  // |·|'
    } else {
      mod = std::pow(ad, b);
      dmod = d == W(0) ? W(0) : b * std::pow(ad, b - W(1));
    }
    loss = static_cast<Scalar>(mod * bce);
    grad = static_cast<Scalar>((d > W(0) ? dmod : -dmod) * slope * bce + mod * d);
  }

 private:
  Config config_;
};

}  // namespace fgbg
