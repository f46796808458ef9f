/// @file guided_loss.hpp
/// @brief Sampling-free guided loss scaling: any dense classification loss of fgbg, rescaled so
///        that its value equals the regression loss, with the gradient scaled by the same
///        detached ratio, in one fused pass.
///
/// J. Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
/// Detectors?", IEEE TIP 2021 (arXiv 1909.04868), the "guided loss" ingredient. Matches
/// ChenJoya/sampling-free @ 5f133dc (modeling/rpn/retinanet/loss.py, modeling/rpn/loss.py,
/// modeling/roi_heads/box_head/loss.py).
///
///   w = L_reg / L_cls          (computed without gradient: w is a constant)
///   L̃ = s · w · L_cls          value: s · L_reg
///   ∂L̃/∂x = s · w · ∂L_cls/∂x
///
/// L_cls is the wrapped loss (e.g. SigmoidCrossEntropyLoss, plain BCE on every anchor, no
/// sampling) with its own weights and normaliser; any constant normaliser of L_cls cancels
/// exactly, so only the normalisation of L_reg sets the classification gradient scale. L_reg is
/// the caller's (detached) regression loss, a finite scalar ≥ 0; the regression loss itself is
/// untouched. s = `classification_scale`: 1 for RetinaNet and the RPN (default), 2 for the
/// Faster R-CNN RoI head (the released README's "classification_scale 2.0 for rcnn").
///
/// L_cls is taken in double from the wrapped loss (DenseLoss::run_double, never rounded to the scalar)
/// and s·w is formed in double; if it does not fit the scalar (float: every valid logit below
/// about −88), the gradient is scaled element-wise in double as (g / L_cls)·s·L_reg, so finite
/// logits of any magnitude give a finite value and gradient and ignored rows stay 0.
///
/// L_cls = 0 (no valid anchor, N = 0, or a loss that underflows to 0) ⇒ value 0, zero gradient,
/// w = 0 (the released heads return (0, 0) when there is nothing to train). A negative L_cls (not
/// produced by any loss of fgbg) is treated the same way.
///
/// Quirk (`treat_ignored_as_negative`, default false): the released RetinaNet loss builds one-hot
/// targets from labels whose ignored anchors (IoU in [0.4, 0.5)) are −1, which gives them
/// all-zero rows, so they are trained as negatives there (the focal-loss variant ignores them).
/// With the option on, labels −1 are passed to the wrapped loss as 0 (background) on the fly (no
/// copy). Default off: the ignore band exists precisely to keep ambiguous anchors out of the
/// classification loss, every other loss of fgbg (and the paper's description) ignores them,
/// and the flag only exists to reproduce the released numbers.
///
/// Cost: the wrapped loss's fused value_and_grad, then one in-place scale of the gradient (a
/// streaming pass over the N × C gradient, ~0.1–0.2 ns per element, no second pass over the
/// logits). No allocation beyond the wrapped loss's.
///
/// Half precision (float loss, Eigen::half / Eigen::bfloat16 logits and gradient): two value
/// passes give L_cls and the unnormalised sum S, then the wrapped loss writes the gradient itself
/// with the normaliser B = S / (s·L_reg), so that every element is rounded to half once (the
/// scaling afterwards is used only when B is outside a normaliser's range); s·L_reg must fit
/// the gradient's type.
///
/// Shapes, labels, weights and normaliser: those of the wrapped loss.
/// @throws std::invalid_argument for a bad config, a negative L_reg, s · L_reg beyond the largest
///         value of the scalar type (the value, which bounds every gradient element, would not be
///         representable), and whatever the wrapped loss throws; std::domain_error for a non-finite
///         L_reg or logit. A failed call writes nothing.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "../core/loss_base.hpp"

namespace fgbg {

/// Configuration of GuidedLoss; defaults are the released RetinaNet / RPN ones.
struct GuidedLossConfig {
  /// s: 1 for RetinaNet and the RPN, 2 for the RoI head. Finite, > 0.
  double classification_scale = 1.0;
  /// Released RetinaNet quirk: train ignored anchors (label −1) as background. Off by default.
  bool treat_ignored_as_negative = false;
};

/// Outcome of one guided call.
struct GuidedLossResult {
  double value = 0;     ///< s · w · L_cls (= s · L_reg when L_cls > 0, else 0)
  double weight = 0;    ///< w = L_reg / L_cls (0 when L_cls ≤ 0)
  double cls_loss = 0;  ///< L_cls, the wrapped loss's unscaled value
};

namespace detail {

/// Maps label −1 to 0 and leaves every other label (including invalid ones, which the wrapped
/// loss then rejects) unchanged.
template <typename L>
struct IgnoredAsBackground {
  L operator()(const L& l) const { return l == L(-1) ? L(0) : l; }
};

/// True if `Loss` derives from DenseLoss (so its value in double is available through
/// run_double).
template <typename Loss, typename = void>
struct IsDenseLoss : std::false_type {};

template <typename Loss>
struct IsDenseLoss<Loss, std::void_t<typename Loss::Signature>>
    : std::is_base_of<DenseLoss<Loss, typename Loss::Scalar, typename Loss::Signature>, Loss> {};

}  // namespace detail

/// Guided scaling of a dense classification loss; see the file comment. `Loss` is any type with
/// the DenseLoss call surface (value / value_and_grad with optional weights and normaliser).
template <typename Loss>
class GuidedLoss {
 public:
  using Scalar = typename Loss::Scalar;
  using Config = GuidedLossConfig;
  static constexpr const char* kName = "fgbg::GuidedLoss";

  explicit GuidedLoss(Loss loss = Loss(), const Config& config = {})
      : loss_(std::move(loss)), config_(config) {
    detail::require_param(
        std::isfinite(config.classification_scale) && config.classification_scale > 0.0, kName,
        "classification_scale", "finite and > 0", config.classification_scale);
  }

  const Loss& loss() const { return loss_; }
  const Config& config() const { return config_; }

  /// Value, w and L_cls; writes s·w·∂L_cls/∂logits into `grad`. The wrapped loss's default
  /// normaliser is used (it cancels anyway).
  template <typename XD, typename LD, typename GD>
  GuidedLossResult value_and_grad(const Eigen::DenseBase<XD>& logits,
                                  const Eigen::DenseBase<LD>& labels, double reg_loss,
                                  const Eigen::DenseBase<GD>& grad,
                                  Weights<Scalar> weights = {}) const {
    return grad_call(logits, labels, reg_loss, grad, weights, nullptr);
  }

  /// As above with an explicit normaliser for the wrapped loss.
  template <typename XD, typename LD, typename GD>
  GuidedLossResult value_and_grad(const Eigen::DenseBase<XD>& logits,
                                  const Eigen::DenseBase<LD>& labels, double reg_loss,
                                  const Eigen::DenseBase<GD>& grad, Weights<Scalar> weights,
                                  const Normalizer& normalizer) const {
    return grad_call(logits, labels, reg_loss, grad, weights, &normalizer);
  }

  /// Value, w and L_cls without a gradient.
  template <typename XD, typename LD>
  GuidedLossResult value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                         double reg_loss, Weights<Scalar> weights = {}) const {
    check_reg_loss(reg_loss);
    detail::None none;
    const double cls = with_labels(
        labels, [&](const auto& lab) { return wrapped(logits, lab, weights, nullptr, none); });
    return finish(cls, reg_loss, none);
  }

  /// As above with an explicit normaliser for the wrapped loss.
  template <typename XD, typename LD>
  GuidedLossResult value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                         double reg_loss, Weights<Scalar> weights,
                         const Normalizer& normalizer) const {
    check_reg_loss(reg_loss);
    detail::None none;
    const double cls = with_labels(
        labels, [&](const auto& lab) { return wrapped(logits, lab, weights, &normalizer, none); });
    return finish(cls, reg_loss, none);
  }

 private:
  /// `limit`: the largest value of the gradient's type (the loss's scalar, or half / bfloat16).
  void check_reg_loss(double reg_loss, double limit = static_cast<double>(
                                           std::numeric_limits<Scalar>::max())) const {
    if (!std::isfinite(reg_loss))
      throw std::domain_error(
          detail::concat(kName, ": reg_loss is ", reg_loss, "; it must be finite"));
    if (reg_loss < 0.0) detail::throw_invalid(kName, "reg_loss must be >= 0, got ", reg_loss);
    // The value is s · L_reg, and every gradient element is bounded by it (|∂ℓ/∂x| ≤ ℓ for the
    // losses of fgbg, so |s · L_reg · ∂L_cls/∂x / L_cls| ≤ s · L_reg): when s · L_reg exceeds
    // the scalar's range the result is not representable (before, the factor overflowed and the
    // zero rows became inf · 0 = NaN). Checked before the wrapped loss writes anything.
    const double sr = config_.classification_scale * reg_loss;
    if (!(sr <= limit))
      detail::throw_invalid(kName, "classification_scale * reg_loss must be <= ", limit,
                            " (the value s * L_reg, which bounds the gradient, in the gradient's ",
                            "scalar type), got s = ", config_.classification_scale,
                            ", reg_loss = ", reg_loss);
  }

  template <typename XD, typename LD, typename GD>
  GuidedLossResult grad_call(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                             double reg_loss, const Eigen::DenseBase<GD>& grad,
                             Weights<Scalar> weights, const Normalizer* normalizer) const {
    using G = typename GD::Scalar;
    static_assert(kStorableAs<G, Scalar>,
                  "fgbg: the gradient must have the loss's scalar type (or Eigen::half / "
                  "Eigen::bfloat16 for a float loss)");
    auto& g = detail::writable(grad);
    if constexpr (!std::is_same<G, Scalar>::value) {
      static_assert(detail::IsDenseLoss<Loss>::value,
                    "fgbg::GuidedLoss: a half-precision gradient needs a wrapped fgbg loss");
      check_reg_loss(reg_loss, static_cast<double>(std::numeric_limits<G>::max()));
      detail::None none;
      // The gradient s·L_reg·∂S/∂x / S (S the unnormalised sum: L_cls's normaliser cancels) is
      // written by the wrapped loss itself, with the normaliser B = S / (s·L_reg), so that it is
      // rounded to half once. S and L_cls take two value passes first.
      const Normalizer& n = normalizer ? *normalizer : loss_.config().normalizer;
      const double cls = with_labels(
          labels, [&](const auto& lab) { return wrapped(logits, lab, weights, &n, none); });
      const double s = config_.classification_scale;
      if (cls > 0.0 && std::isfinite(cls) && reg_loss > 0.0) {
        const Normalizer sum = Normalizer::sum();
        const double total = with_labels(
            labels, [&](const auto& lab) { return wrapped(logits, lab, weights, &sum, none); });
        const double b = total / (s * reg_loss);
        if (std::isfinite(b) && b >= kMinAvgFactor) {
          const Normalizer nb = Normalizer::avg_factor(b);
          with_labels(labels,
                      [&](const auto& lab) { return wrapped(logits, lab, weights, &nb, g); });
          return finish(cls, reg_loss, none);
        }
      }
      // Untrained (zero gradient), or B outside the normaliser's range: the general path.
      with_labels(labels, [&](const auto& lab) { return wrapped(logits, lab, weights, &n, g); });
      return finish(cls, reg_loss, g);
    } else {
      check_reg_loss(reg_loss);
      const double cls = with_labels(
          labels, [&](const auto& lab) { return wrapped(logits, lab, weights, normalizer, g); });
      return finish(cls, reg_loss, g);
    }
  }

  /// L_cls in double. A DenseLoss exposes `run_double`, whose double result is used as is (casting
  /// it to a float first would lose an L_cls below ~1e-38, where w = L_reg / L_cls matters most);
  /// another loss type goes through its value / value_and_grad.
  template <typename XD, typename LD, typename GradOut>
  double wrapped(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& lab, Weights<Scalar> w,
                 const Normalizer* norm, GradOut& g) const {
    constexpr bool kGrad = detail::kGiven<GradOut>;
    if constexpr (detail::IsDenseLoss<Loss>::value) {
      const Normalizer& n = norm ? *norm : loss_.config().normalizer;
      if constexpr (kGrad)
        return loss_.template run_double<true>(x, lab, g, w, n);
      else
        return loss_.template run_double<false>(x, lab, w, n);
    } else if constexpr (kGrad) {
      return norm ? static_cast<double>(loss_.value_and_grad(x, lab, g, w, *norm))
                  : static_cast<double>(loss_.value_and_grad(x, lab, g, w));
    } else {
      return norm ? static_cast<double>(loss_.value(x, lab, w, *norm))
                  : static_cast<double>(loss_.value(x, lab, w));
    }
  }

  /// Calls f with the labels as given, or with −1 mapped to 0 (a lazy expression, no copy).
  template <typename LD, typename F>
  double with_labels(const Eigen::DenseBase<LD>& labels, F&& f) const {
    if (config_.treat_ignored_as_negative)
      return f(labels.derived().unaryExpr(detail::IgnoredAsBackground<typename LD::Scalar>{}));
    return f(labels.derived());
  }

  /// w from L_cls, then the in-place scale of the gradient (the only extra pass). The factor
  /// f = s·L_reg/L_cls is formed in double; when it does not fit the scalar (a float L_cls below
  /// ~1e-38 · L_reg, e.g. every valid logit below about −88), each element is scaled in double
  /// as (g / L_cls) · s·L_reg, which stays finite because |g| ≲ L_cls for these losses, and
  /// zeros (ignored rows) stay 0 instead of becoming 0 · inf = NaN.
  template <typename GradOut>
  GuidedLossResult finish(double cls, double reg_loss, GradOut& grad) const {
    GuidedLossResult r;
    r.cls_loss = cls;
    const double s = config_.classification_scale;
    const bool trained = cls > 0.0 && std::isfinite(cls) && reg_loss > 0.0;
    if (trained) {
      r.weight = reg_loss / cls;  // +inf only if a double L_cls is below ~1e-308 · L_reg
      r.value = s * reg_loss;     // = s · w · L_cls exactly, without forming w · L_cls
    } else if (cls > 0.0 && std::isfinite(cls)) {
      r.weight = 0.0;  // L_reg = 0
    }
    if constexpr (detail::kGiven<GradOut>) {
      auto& g = grad.derived();
      using G = typename std::decay_t<decltype(g)>::Scalar;
      if (!trained) {
        g.setZero();
        return r;
      }
      const double f = s * reg_loss / cls;
      const Scalar fs = static_cast<Scalar>(f);
      if constexpr (std::is_same<G, Scalar>::value) {
        if (std::isfinite(f) && std::isfinite(fs) && fs > Scalar(0)) {
          g *= fs;
          return r;
        }
      }
      const double sr = s * reg_loss;
      // sr is finite (checked), |v| / cls ≲ 1, and a 0 stays exactly 0. (A half gradient gets
      // here only when the wrapped loss could not write it directly: rounded twice.)
      g = g.unaryExpr([cls, sr](G v) {
        return v == G(0) ? G(0) : static_cast<G>(static_cast<double>(v) / cls * sr);
      });
    }
    return r;
  }

  Loss loss_;
  Config config_;
};

/// Makes a GuidedLoss around `loss` (type deduction helper).
template <typename Loss>
GuidedLoss<Loss> make_guided_loss(Loss loss, const GuidedLossConfig& config = {}) {
  return GuidedLoss<Loss>(std::move(loss), config);
}

}  // namespace fgbg
