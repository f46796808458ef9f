/// @file softmax_focal_loss.hpp
/// @brief Softmax focal loss over C+1 columns (column 0 is background), Detectron α semantics.
///
/// Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017 (softmax variant, appendix).
/// Matches Detectron's `SoftmaxFocalLoss` op (RETINANET.SOFTMAX): α_y = α for a foreground label,
/// 1 − α for background (Detectron `RETINANET.SOFTMAX`). mmcv's SoftmaxFocalLoss uses one constant α for every
/// label; pass α < 0 (α_y = 1) and scale the result to reproduce it.
///
/// Per row, with p = softmax(x), q = 1 − p_y = Σ_{c≠y} p_c:
///
///   L       = −α_y q^γ log p_y
///   ∂L/∂x_c = α_y (γ q^{γ−1} p_y log p_y − q^γ)(1[c = y] − p_c)
///
/// evaluated as A = α_y q^γ (γ p_y · log(1−q)/q − 1), ∂L/∂x_c = −A p_c (c ≠ y), ∂L/∂x_y = A q,
/// with log(1−q)/q → −1 as q → 0: no negative power of q, finite for every γ ≥ 0.
///
/// Shapes: logits N × (C+1), labels N (−1 / 0 / 1..C), optional per-anchor weights N, gradient
/// N × (C+1). Default normaliser: max(1, #positive anchors) (Detectron's max(fg_num, 1)).
///
/// @throws std::invalid_argument for a bad config, shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>

#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/softmax_head.hpp"

namespace fgbg {

/// Configuration of SoftmaxFocalLoss; defaults are Detectron's.
template <typename Scalar>
struct SoftmaxFocalLossConfig {
  Scalar alpha = Scalar(0.25);  ///< foreground weight (background 1 − α); < 0 disables
  Scalar gamma = Scalar(2);     ///< focusing parameter, ≥ 0
  Normalizer normalizer = Normalizer::num_positives();
};

/// Softmax focal loss; see the file comment.
template <typename Scalar>
class SoftmaxFocalLoss : public SoftmaxLoss<SoftmaxFocalLoss<Scalar>, Scalar> {
 public:
  using Config = SoftmaxFocalLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::SoftmaxFocalLoss";

  explicit SoftmaxFocalLoss(const Config& config = {}) : config_(config) {
    detail::require_focal_params(kName, config.alpha, config.gamma);
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// One row; see the file comment.
  ///
  /// log p_y comes in double (it may be below −FLT_MAX for finite float logits); the term
  /// γ p_y log(1−q)/q is formed in double and is 0 when p_y underflowed to 0 (p log p → 0), so a
  /// row whose target probability is 0 in the scalar type gets the exact gradient α_y q^γ (p_c −
  /// 1[c = y]) instead of 0 · ∞. For a general γ, q^γ = exp(γ log q) is formed in double with
  /// log q = log1p(−p_y) while p_y ≤ 1/2: q rounded to the scalar type may be exactly 1 (float
  /// p_y = 5e-8), and a huge γ (1e30) then gave q^γ = 1 instead of ≈ 0, and an inf gradient.
  void row(double log_py, Scalar p_y, Scalar q, Label y, double& loss, Scalar& scale,
           Scalar& g_y) const {
    const double a = config_.alpha < 0 ? 1.0
                     : y > 0           ? static_cast<double>(config_.alpha)
                                       : 1.0 - static_cast<double>(config_.alpha);
    const Scalar g = config_.gamma;
    const double qd = static_cast<double>(q), pd = static_cast<double>(p_y);
    const double gd = static_cast<double>(g);
    const double qg = pow_fast(qd, gd, [&] {  // q^γ
      return std::exp(gd * (pd <= 0.5 ? std::log1p(-pd) : std::log(qd)));
    });
    const double ratio = q > Scalar(0) ? log_py / qd : -1.0;  // log(1−q)/q
    const double plogp = p_y > Scalar(0) ? static_cast<double>(g) * pd * ratio : 0.0;
    const double big_a = a * qg * (plogp - 1.0);
    loss = -a * qg * log_py;
    scale = static_cast<Scalar>(-big_a);
    g_y = static_cast<Scalar>(big_a * qd);
  }

 private:
  Config config_;
};

}  // namespace fgbg
