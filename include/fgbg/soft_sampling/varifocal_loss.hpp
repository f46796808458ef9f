/// @file varifocal_loss.hpp
/// @brief Varifocal Loss (VFL, VarifocalNet) with its fused, closed-form gradient.
///
/// Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector",
/// CVPR 2021. Matches mmdetection's `varifocal_loss` (`mmdet/models/losses/varifocal_loss.py`,
/// value and autograd gradient).
///
/// Per element, with σ = σ(x) and target q = the anchor's quality (IoU) at the label column of a
/// positive anchor, 0 everywhere else:
///
///   q > 0:  VFL = q · BCE(x, q)              ∂VFL/∂x = q (σ − q)
///           (iou_weighted = false: BCE(x, q), ∂ = σ − q)
///   q = 0:  VFL = α σ^γ softplus(x)          ∂VFL/∂x = α σ^γ (σ + γ (1 − σ) softplus(x))
///
/// with BCE(x, q) = (1 − q)·softplus(x) + q·softplus(−x). The negative weight α σ^γ is not
/// detached (as in mmdetection); q is a constant. mmdetection writes the negative weight as
/// α|σ − q|^γ masked to q ≤ 0, which equals α σ^γ only for q = 0 (VarifocalNet#8
/// row 28); this uses α σ^γ on every element whose target is 0.
///
/// A positive anchor's quality must therefore be > 0, or its label column would be trained as a
/// negative. VFNet clamps the IoU targets to ≥ 1e-6 before the loss; `min_quality` (default
/// 1e-6) does the same here: a positive's quality q ∈ [0, 1] is used as max(q, min_quality).
/// With min_quality = 0 a positive of quality 0 throws.
///
/// Shapes: logits N × C (no background column), labels N (−1 ignore, 0 background, k → column
/// k−1), quality N (read on positive rows only), optional weights N or N × C, gradient N × C.
/// Default normaliser: num_positives = max(1, #positive anchors), VFNet's max(mean over GPUs of
/// #pos, 1) on one GPU; mmdetection adds FLT_EPSILON to an avg_factor (Normalizer::avg_factor).
///
/// @throws std::invalid_argument for a bad config, shape, label, quality outside [0, 1] (or 0
///         with min_quality = 0), weight or normaliser; std::domain_error for a non-finite logit,
///         quality or weight. Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>

#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "quality_loss_base.hpp"

namespace fgbg {

/// Configuration of VarifocalLoss; defaults are mmdetection's / VFNet's.
template <typename Scalar>
struct VarifocalLossConfig {
  Scalar alpha = Scalar(0.75);        ///< weight of the negatives, finite and ≥ 0
  Scalar gamma = Scalar(2);           ///< exponent of σ on the negatives, finite and ≥ 0
  bool iou_weighted = true;           ///< positives weighted by q (true) or 1 (false)
  Scalar min_quality = Scalar(1e-6);  ///< lower clamp of a positive's quality, in [0, 1]
  Normalizer normalizer = Normalizer::num_positives();
};

/// Varifocal loss; see the file comment.
template <typename Scalar>
class VarifocalLoss : public DenseLoss<VarifocalLoss<Scalar>, Scalar, QualitySignature> {
 public:
  using Config = VarifocalLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::VarifocalLoss";

  explicit VarifocalLoss(const Config& config = {}) : config_(config) {
    detail::require_param(std::isfinite(config.alpha) && config.alpha >= Scalar(0), kName, "alpha",
                          "finite and >= 0", config.alpha);
    detail::require_param(std::isfinite(config.gamma) && config.gamma >= Scalar(0), kName, "gamma",
                          "finite and >= 0", config.gamma);
    detail::require_param(config.min_quality >= Scalar(0) && config.min_quality <= Scalar(1), kName,
                          "min_quality", "in [0, 1]", config.min_quality);
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
    const double floor = static_cast<double>(config_.min_quality);
    if (floor == 0.0)
      for (Index i = 0; i < x.rows(); ++i)
        if (labels.derived().coeff(i) > 0 && quality.derived().coeff(i) == 0)
          detail::throw_invalid(kName, "quality(", i,
                                ") = 0 for a positive anchor; VFL needs q > 0 on positives "
                                "(set config.min_quality > 0 to clamp, VFNet uses 1e-6)");
    const auto target = [&quality, floor](Index row) {
      return std::max(floor, static_cast<double>(quality.derived().coeff(row)));
    };
    return detail::sigmoid_onehot(*this, x, labels, c.option, c.normalizer->resolve(s, x.cols()),
                                  std::get<0>(c.out), target, c.losses);
  }

  /// q = 0 over a tile: α σ^γ softplus(x) and α σ^γ (σ + γ(1 − σ) softplus(x)).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    detail::modulated_negatives(xp, loss, grad, scratch, t.size(), config_.alpha, config_.gamma);
  }

  /// Any target q ∈ [0, 1], one element.
  void element(Scalar x, Scalar q, Index, Index, Scalar& loss, Scalar& grad) const {
    if (q > Scalar(0)) {
      const Scalar bce = (Scalar(1) - q) * softplus(x) + q * softplus(-x);
      const Scalar wq = config_.iou_weighted ? q : Scalar(1);
      loss = wq * bce;
      // σ(x) − q in the wider type (it cancels when σ(x) ≈ q); −σ(−x) for q = 1.
      using W = detail::Wide<Scalar>;
      const W dq = detail::sigmoid_minus(W(x), W(q));
      grad = static_cast<Scalar>(W(wq) * dq);
      return;
    }
    const Scalar p = sigmoid(x), sp = softplus(x), g = config_.gamma;
    const Scalar mod = config_.alpha * pow_gamma(p, -softplus(-x), g);
    loss = mod * sp;
    grad = mod * (p + g * sigmoid(-x) * sp);
  }

 private:
  Config config_;
};

}  // namespace fgbg
