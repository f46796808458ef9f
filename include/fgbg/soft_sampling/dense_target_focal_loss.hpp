/// @file dense_target_focal_loss.hpp
/// @brief Sigmoid focal loss and binary cross-entropy against a float target for every element
///        (N × C in [0, 1]): torchvision's `sigmoid_focal_loss(inputs, targets)` and torch's
///        `binary_cross_entropy_with_logits(inputs, targets)` with one-hot or soft targets, fused
///        with their gradients.
///
/// Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017. Matches
/// `torchvision.ops.sigmoid_focal_loss` (torchvision/ops/focal_loss.py; value and autograd
/// gradient; reference vectors in tests/data/dense_target_focal.json), which mmdetection's
/// `py_sigmoid_focal_loss` and detectron2/fvcore's `sigmoid_focal_loss` also compute. Per element,
/// with p = σ(x) and target t ∈ [0, 1]:
///
///   CE(x, t)  = (1 − t)·softplus(x) + t·softplus(−x)        (= BCE-with-logits)
///   1 − p_t   = (1 − t)·σ(x) + t·σ(−x)                     (p_t = p·t + (1 − p)(1 − t))
///   α_t       = α·t + (1 − α)(1 − t)   (1 when α < 0)
///   FL(x, t)  = α_t · CE(x, t) · (1 − p_t)^γ
///   ∂FL/∂x    = α_t · [(σ(x) − t)(1 − p_t)^γ + γ·CE·(1 − p_t)^(γ−1)·σ(x)σ(−x)(1 − 2t)]
///
/// Both sums are of non-negative terms, so nothing cancels (torchvision forms 1 − p_t as a
/// difference, which loses everything below eps for confident predictions; the results agree
/// wherever that difference is exact). For t = 0 and t = 1 the formulas are SigmoidFocalLoss's
/// and SigmoidCrossEntropyLoss's, bit for bit: one-hot targets give the same value and gradient
/// as those losses with the matching labels. A soft target is computed in detail::Wide<Scalar>
/// (double for float) with σ(x) − t formed without cancellation (detail::sigmoid_minus).
///
/// DenseTargetCrossEntropyLoss is CE alone (γ = 0, α switched off): torch's
/// `binary_cross_entropy_with_logits` with N × C targets, e.g. ultralytics' `target_scores`
/// (normalised by Normalizer::target_sum(), ultralytics' max(1, Σ targets)).
///
/// The labels (N: −1 ignore, 0 background, k ≥ 1 foreground) only say which rows count: an
/// ignored row has loss and gradient 0 and is not counted by Normalizer::mean(); a foreground row
/// is counted by Normalizer::num_positives() (RetinaNet's num_foreground). The class k is not read:
/// the targets alone give each element's target. Without ignored anchors pass zeros (torchvision's
/// `reduction='mean'` is Normalizer::mean(), `'sum'` Normalizer::sum(), `'none'`
/// fgbg::element_losses). Normalizer::target_sum() is Σ of the targets of the non-ignored rows.
///
/// Shapes: logits N × C, labels N, targets N × C (the loss's scalar type; every element finite and
/// in [0, 1]; may not share memory with the gradient or a loss output), optional weights N or
/// N × C, gradient N × C; per-element or per-anchor losses (core/loss_output.hpp).
///
/// @throws std::invalid_argument for a bad config, shape, label, target outside [0, 1], weight or
///         normaliser; std::domain_error for a non-finite logit, target or weight. Nothing is
///         written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/errors.hpp"
#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "sigmoid_cross_entropy.hpp"
#include "sigmoid_focal_loss.hpp"
#include "soft_target_cross_entropy.hpp"

namespace fgbg {

/// The call signature of the dense-target losses: the sigmoid heads', with the N × C targets as
/// one required input after the labels.
struct DenseTargetSignature : SigmoidSignature {
  static constexpr int inputs = 1;
};

namespace detail {

/// Σ of the targets of the non-ignored rows, after checking every target: finite (else
/// std::domain_error) and in [0, 1] (else std::invalid_argument), naming the first bad element in
/// row-major order. One pass over the tiles of the dense engine.
template <typename Scalar, typename TD, typename LD>
double check_dense_targets(const char* where, const Eigen::DenseBase<TD>& targets,
                           const Eigen::DenseBase<LD>& labels) {
  struct Acc {
    bool ok = true;
    double sum = 0.0;
  };
  const ErasedLabels le(labels);
  None none;
  const Acc all = tiled_reduce<Scalar>(
      targets, none, Acc{},
      [&le](const Tile& t, const Scalar* tt, Scalar*, Scalar*, Acc& acc) {
        using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
        const Eigen::Map<const Vec> v(tt, t.size());
        acc.ok = acc.ok && (v >= Scalar(0) && v <= Scalar(1)).all();  // false for NaN too
        Label lab_of[kTileElems];
        le.gather(t.row0, t.rows, lab_of);
        for (Index r = 0; r < t.rows; ++r)
          if (lab_of[r] != kIgnore)
            acc.sum += static_cast<double>(v.segment(r * t.cols, t.cols).sum());
      },
      [](Acc& total, const Acc& part) {
        total.ok = total.ok && part.ok;
        total.sum += part.sum;
      });
  if (all.ok) return all.sum;
  for (Index r = 0; r < targets.rows(); ++r)
    for (Index c = 0; c < targets.cols(); ++c) {
      const double v = static_cast<double>(targets.derived().coeff(r, c));
      if (!std::isfinite(v)) throw_non_finite(where, "targets", r, c, v);
      if (v < 0.0 || v > 1.0)
        throw_invalid(where, "targets(", r, ", ", c, ") = ", v, " must be in [0, 1]");
    }
  return all.sum;
}

/// The checks of a dense-target call `c` (see DenseLoss) before anything is written: those of
/// every sigmoid head, then the targets' shape, memory (not shared with the gradient or a loss
/// output) and values. Returns the label counts with the target sum of the non-ignored rows.
template <typename Call>
LabelStats check_dense_target_call(const char* where, Call& c) {
  using Scalar = ComputeOf<typename std::decay_t<decltype(c.x.derived())>::Scalar>;
  const auto& targets = std::get<0>(c.in);
  static_assert(
      std::is_same<typename std::decay_t<decltype(targets.derived())>::Scalar, Scalar>::value,
      "fgbg: the targets must have the loss's scalar type");
  LabelStats s = check_sigmoid_call(where, c.x, c.labels, c.option, *c.normalizer,
                                    std::get<0>(c.out), c.losses, /*soft_targets=*/true);
  check_shape(where, "targets", targets.rows(), targets.cols(), c.x.rows(), c.x.cols());
  if constexpr (kGiven<std::decay_t<decltype(std::get<0>(c.out))>>)
    check_no_alias(where, targets, std::get<0>(c.out), "targets");
  c.losses.check(where, c.x.rows(), c.x.cols(), {{MemView::of(targets), "targets"}});
  s.target_sum = check_dense_targets<Scalar>(where, targets, c.labels);
  return s;
}

}  // namespace detail

/// Base of the dense-target losses (as OneHotSigmoidLoss is of the label losses): its `run` is
/// the checks, then the shared sigmoid driver, so a loss writes only its config and its
/// `negatives` / `element` formulas. Call: (logits, labels, targets [, grad] [, weights]
/// [, normalizer] [, element_losses / anchor_losses]).
template <typename Derived, typename Scalar>
class DenseTargetSigmoidLoss : public DenseLoss<Derived, Scalar, DenseTargetSignature> {
 public:
  /// See DenseLoss.
  template <typename Call>
  double run(Call& c) const {
    const LabelStats s = detail::check_dense_target_call(Derived::kName, c);
    return detail::sigmoid_dense_targets(
        static_cast<const Derived&>(*this), c.x, c.labels, std::get<0>(c.in), c.option,
        c.normalizer->resolve(s, c.x.cols()), std::get<0>(c.out), c.losses);
  }
};

/// Configuration of DenseTargetFocalLoss; defaults are torchvision's α and γ and RetinaNet's
/// normaliser.
template <typename Scalar>
struct DenseTargetFocalLossConfig {
  Scalar alpha = Scalar(0.25);  ///< α_t = α·t + (1−α)(1−t); < 0 disables (α_t = 1); ≤ 1
  Scalar gamma = Scalar(2);     ///< focusing parameter, ≥ 0
  Normalizer normalizer = Normalizer::num_positives();
};

/// Sigmoid focal loss against N × C float targets; see the file comment.
template <typename Scalar>
class DenseTargetFocalLoss : public DenseTargetSigmoidLoss<DenseTargetFocalLoss<Scalar>, Scalar> {
 public:
  using Config = DenseTargetFocalLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::DenseTargetFocalLoss";

  explicit DenseTargetFocalLoss(const Config& config = {})
      : config_(config), binary_(binary_config(config)) {}

  const Config& config() const { return config_; }

  /// t = 0 over a tile: SigmoidFocalLoss's.
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    binary_.negatives(t, xp, loss, grad, scratch);
  }

  /// Any target t ∈ (0, 1], one element: SigmoidFocalLoss's closed form for t = 1, else the
  /// formula of the file comment in detail::Wide<Scalar>.
  void element(Scalar xs, Scalar ts, Index row, Index col, Scalar& loss, Scalar& grad) const {
    if (ts == Scalar(1)) return binary_.element(xs, ts, row, col, loss, grad);
    using W = detail::Wide<Scalar>;
    const W x = xs, t = ts, gamma = config_.gamma;
    const W a =
        config_.alpha < 0 ? W(1) : W(config_.alpha) * t + (W(1) - config_.alpha) * (W(1) - t);
    // σ(±x) and softplus(±x) from one exp(−|x|) and one log1p.
    const W e = std::exp(-std::abs(x)), r = W(1) / (W(1) + e), l1 = std::log1p(e);
    const W s = x >= 0 ? r : e * r, sn = x >= 0 ? e * r : r;
    const W q = (W(1) - t) * s + t * sn;  // 1 − p_t
    const W ce = (W(1) - t) * (std::max(x, W(0)) + l1) + t * (std::max(-x, W(0)) + l1);
    // mod = q^γ; slope = γ·q^(γ−1) (0 where q = 0, which needs t ∈ {0, 1}).
    W mod = 1, slope = 0;
    if (gamma == W(2)) {
      mod = q * q, slope = 2 * q;
    } else if (gamma == W(1)) {
      mod = q, slope = 1;
    } else if (gamma != W(0) && q > W(0)) {
      mod = std::exp(gamma * std::log(q)), slope = gamma * mod / q;
    } else if (gamma != W(0)) {
      mod = 0;
    }
    loss = static_cast<Scalar>(a * ce * mod);
    grad = static_cast<Scalar>(
        a * (detail::sigmoid_minus(x, t) * mod + ce * slope * s * sn * (W(1) - 2 * t)));
  }

 private:
  /// Validates `config` (before anything else is built) and gives SigmoidFocalLoss's.
  static SigmoidFocalLossConfig<Scalar> binary_config(const Config& config) {
    detail::require_focal_params(kName, config.alpha, config.gamma);
    config.normalizer.validate(kName, /*soft_targets=*/true);
    return {config.alpha, config.gamma, Normalizer::num_positives()};
  }

  Config config_;
  SigmoidFocalLoss<Scalar> binary_;  ///< the t ∈ {0, 1} formulas
};

/// Configuration of DenseTargetCrossEntropyLoss; the default is torch's `reduction='mean'`.
struct DenseTargetCrossEntropyLossConfig {
  Normalizer normalizer = Normalizer::mean();
};

/// Sigmoid binary cross-entropy against N × C float targets; see the file comment.
template <typename Scalar>
class DenseTargetCrossEntropyLoss
    : public DenseTargetSigmoidLoss<DenseTargetCrossEntropyLoss<Scalar>, Scalar> {
 public:
  using Config = DenseTargetCrossEntropyLossConfig;
  static constexpr const char* kName = "fgbg::DenseTargetCrossEntropyLoss";

  explicit DenseTargetCrossEntropyLoss(const Config& config = {}) : config_(config) {
    config_.normalizer.validate(kName, /*soft_targets=*/true);
  }

  const Config& config() const { return config_; }

  /// t = 0 over a tile: SigmoidCrossEntropyLoss's.
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    SigmoidCrossEntropyLoss<Scalar>().negatives(t, xp, loss, grad, scratch);
  }

  /// Any target t ∈ (0, 1], one element: SigmoidCrossEntropyLoss's for t = 1, else
  /// SoftTargetCrossEntropyLoss's (σ(x) − t without cancellation).
  void element(Scalar x, Scalar t, Index row, Index col, Scalar& loss, Scalar& grad) const {
    if (t == Scalar(1))
      return SigmoidCrossEntropyLoss<Scalar>().element(x, t, row, col, loss, grad);
    SoftTargetCrossEntropyLoss<Scalar>().element(x, t, row, col, loss, grad);
  }

 private:
  Config config_;
};

}  // namespace fgbg
