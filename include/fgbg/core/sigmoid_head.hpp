/// @file sigmoid_head.hpp
/// @brief The shared driver of every sigmoid-head loss with one-hot (or one soft) target per
///        anchor: BCE, focal, FL*, QFL, VFL.
///
/// Such a loss is ℓ(x, t) per element, with t = 0 everywhere except at column k-1 of an anchor
/// labelled k. The driver lets the method compute its t = 0 formula over whole tiles with
/// vectorised Eigen code, then patches the one positive element per foreground row with a scalar
/// call, zeroes ignored rows, applies Ω and the normaliser, and sums in double. A method supplies
///
/// @code
///   // t = 0 for all n elements of a tile; `grad` may be nullptr (value only).
///   void negatives(const detail::Tile&, const Scalar* x, Scalar* loss, Scalar* grad,
///                  Scalar* scratch) const;
///   // any target t, one element (row, col) of the logits.
///   void element(Scalar x, Scalar t, Index row, Index col, Scalar& loss, Scalar& grad) const;
/// @endcode
#pragma once

#include "requires_cxx17.hpp"

#include "checks.hpp"
#include "dense.hpp"
#include "loss_base.hpp"
#include "numerics.hpp"
#include "reduction.hpp"
#include "vmath.hpp"
#include "weights.hpp"

namespace fgbg {
namespace detail {

/// The checks every dense head runs, in this order, before anything is written: labels in
/// −1..num_classes, the normaliser, weights (N × weight_cols or N), the gradient's shape and its
/// aliasing with the logits and the weights, the loss output's shape and aliasing, and finite
/// logits. Returns the label counts. `soft_targets`: the loss has a soft target per positive
/// anchor (so Normalizer::target_sum() is allowed).
template <typename Scalar, typename XD, typename LD, typename GradOut>
LabelStats check_dense_call(const char* where, const Eigen::DenseBase<XD>& x,
                            const Eigen::DenseBase<LD>& labels, Index num_classes,
                            Weights<Scalar>& weights, Index weight_cols,
                            const Normalizer& normalizer, const GradOut& grad,
                            const LossSink<Scalar>& losses, bool soft_targets = false) {
  static_assert(kStorableAs<typename XD::Scalar, Scalar>,
                "fgbg: the logits must have the loss's scalar type (or Eigen::half / "
                "Eigen::bfloat16 for a float loss)");
  const LabelStats s = check_labels(where, labels, x.rows(), num_classes);
  normalizer.validate(where, soft_targets);
  weights.bind(where, x.rows(), weight_cols);
  MemView grad_view;  // empty without a gradient
  if constexpr (kGiven<GradOut>) {
    check_output(where, "grad", grad, x.rows(), x.cols());
    check_no_alias(where, x, grad);
    weights.check_no_alias(where, grad);
    grad_view = MemView::of(grad);
  }
  losses.check(where, x.rows(), x.cols(),
               {{MemView::of(x), "logits"}, {grad_view, "grad"}, {weights.view(), "weights"}});
  check_finite(where, "logits", x);
  return s;
}

/// check_dense_call for an N × C sigmoid head (per-anchor or per-element weights).
template <typename Scalar, typename XD, typename LD, typename GradOut>
LabelStats check_sigmoid_call(const char* where, const Eigen::DenseBase<XD>& x,
                              const Eigen::DenseBase<LD>& labels, Weights<Scalar>& weights,
                              const Normalizer& normalizer, const GradOut& grad,
                              const LossSink<Scalar>& losses, bool soft_targets = false) {
  return check_dense_call(where, x, labels, x.cols(), weights, x.cols(), normalizer, grad, losses,
                          soft_targets);
}

/// One block (vm::kBlock elements) of modulated_negatives, γ fixed at compile time where it is
/// 0, 1 or 2 (kGamma; −1: any γ). One loop in registers: vm::logistic (one exp, two divisions,
/// the atanh log1p), σ^γ by products or vm::sigmoid_pow.
template <int kGamma, bool kGrad, typename Scalar>
void modulated_block(const Scalar* FGBG_RESTRICT x, Scalar* FGBG_RESTRICT loss,
                     Scalar* FGBG_RESTRICT grad, Scalar a, Scalar gamma) {
  for (int i = 0; i < vm::kBlock; ++i) {
    const Scalar xi = x[i];
    const vm::Logistic<Scalar> p = vm::logistic(xi);
    const Scalar sp = vm::softplus(xi, p);
    Scalar m;  // a·σ^γ
    if constexpr (kGamma == 2) {
      m = a * (p.sig * p.sig);
    } else if constexpr (kGamma == 1) {
      m = a * p.sig;
    } else if constexpr (kGamma == 0) {
      m = a;
    } else {
      m = a * vm::sigmoid_pow(xi, p, gamma);
    }
    loss[i] = m * sp;
    if constexpr (kGrad) {
      if constexpr (kGamma == 0)
        grad[i] = m * p.sig;
      else
        grad[i] = m * (p.sig + gamma * p.sig_neg * sp);
    }
  }
}

/// The t = 0 formula shared by focal loss, QFL and VFL: a·σ(x)^γ·softplus(x) per element, and
/// its derivative a·σ^γ·(σ + γ(1 − σ)·softplus(x)) (the modulating factor differentiated).
/// One fused pass over the tile in blocks of vm::kBlock (core/vmath.hpp): one exp(−|x|), the
/// divisions 1/(1 + e) (σ(x) and 1 − σ(x) = σ(−x), no cancellation) and e/(1 + e/2) (log1p(e)
/// as 2 atanh; error bounds in vmath.hpp); σ^γ by
/// products for γ ∈ {0, 1, 2}, else as exp(−γ·softplus(−x)) with softplus(−x) formed from
/// e^−|x|, not as softplus(x) − x (that difference rounds to 0 for x ≳ 16 in float, and a huge γ
/// then gave σ^γ = 1). `grad` may be nullptr; `scratch` is not used (kept for the callers).
template <typename Scalar>
void modulated_negatives(const Scalar* xp, Scalar* loss, Scalar* grad, Scalar* scratch, Index n,
                         Scalar a, Scalar gamma) {
  (void)scratch;
  auto run = [&](auto gamma_tag) {
    constexpr int kGamma = decltype(gamma_tag)::value;
    if (grad)
      vm::for_blocks(xp, loss, grad, n, [&](const Scalar* x, Scalar* l, Scalar* g) {
        modulated_block<kGamma, true>(x, l, g, a, gamma);
      });
    else
      vm::for_blocks(
          xp, loss, static_cast<Scalar*>(nullptr), n, [&](const Scalar* x, Scalar* l, Scalar*) {
            modulated_block<kGamma, false>(x, l, static_cast<Scalar*>(nullptr), a, gamma);
          });
  };
  if (gamma == Scalar(2))
    run(std::integral_constant<int, 2>());
  else if (gamma == Scalar(1))
    run(std::integral_constant<int, 1>());
  else if (gamma == Scalar(0))
    run(std::integral_constant<int, 0>());
  else
    run(std::integral_constant<int, -1>());
}

/// Target 1 at the label column: BCE and focal loss.
struct UnitTarget {
  double operator()(Index) const { return 1.0; }
};

/// The target at the label column of each foreground row, with its type erased: 1 (BCE, focal
/// loss) when `fn` is nullptr, else fn(obj, row).
struct ErasedTarget {
  const void* obj = nullptr;
  double (*fn)(const void*, Index) = nullptr;
  double operator()(Index row) const { return fn ? fn(obj, row) : 1.0; }
};

/// The tiles of sigmoid_onehot behind the erased views: compiled once per method, scalar type and
/// kGrad, whatever the caller's layouts. `losses` receives Ω_ij ℓ_ij or Σ_j Ω_ij ℓ_ij, formed
/// from the unweighted element losses of the tile (before any scaling), so asking for them
/// changes neither the value nor the gradient.
///
/// With `dense` (N × C targets, DenseTargetFocalLoss and DenseTargetCrossEntropyLoss) every
/// element whose target is not 0 is patched with elem.element(x, t) instead of the label column
/// of each foreground row; the labels then only mark ignored rows.
template <typename Scalar, bool kGrad, typename Elem, typename GradOut>
double sigmoid_onehot_tiles(const Elem& elem, const ErasedInput<Scalar>& x,
                            const ErasedLabels& labels, const Weights<Scalar>& w, double norm,
                            GradOut& grad, const ErasedTarget& target,
                            const LossSink<Scalar>& losses,
                            const ErasedInput<Scalar>* dense = nullptr) {
  const GradFactor<Scalar> unit(1.0, norm);
  const ElementScale per_element(norm), unnormalised(1.0);
  using Kind = typename Weights<Scalar>::Kind;
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  using Sink = LossSink<Scalar>;
  const bool to_elements = losses.kind == Sink::Kind::element;
  const bool to_anchors = losses.kind == Sink::Kind::anchor;
  ErasedOutput<Scalar> element_out = losses.element;
  auto kernel = [&](const Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch) {
    Scalar* loss = scratch;
    const Index n = t.size();
    elem.negatives(t, xt, loss, gt, scratch + kTileElems);
    Label lab_of[kTileElems];
    labels.gather(t.row0, t.rows, lab_of);
    alignas(64) Scalar target_buf[kTileElems];
    const Scalar* tt = dense ? load_tile(*dense, t, target_buf) : nullptr;
    alignas(64) Scalar element_buf[kTileElems];
    double anchor_of[kTileElems];
    Scalar* et = to_elements ? output_tile(element_out, t, element_buf) : nullptr;
    Scalar dummy = 0;
    double sum = 0.0;
    for (Index r = 0; r < t.rows; ++r) {
      const Index row = t.row0 + r;
      const Label lab = lab_of[r];
      Scalar* lp = loss + r * t.cols;
      Scalar* ep = et ? et + r * t.cols : nullptr;
      Eigen::Map<Vec> lr(lp, t.cols);
      if (lab == kIgnore) {
        lr.setZero();
        if constexpr (kGrad) Eigen::Map<Vec>(gt + r * t.cols, t.cols).setZero();
        if (ep) Eigen::Map<Vec>(ep, t.cols).setZero();
        anchor_of[r] = 0.0;
        continue;
      }
      const Index col = static_cast<Index>(lab) - 1 - t.col0;
      if (tt) {
        const Scalar* tr = tt + r * t.cols;
        for (Index j = 0; j < t.cols; ++j) {
          if (tr[j] == Scalar(0)) continue;
          Scalar* gslot = kGrad ? gt + r * t.cols + j : &dummy;
          elem.element(xt[r * t.cols + j], tr[j], row, t.col0 + j, lr[j], *gslot);
        }
      } else if (lab > 0 && col >= 0 && col < t.cols) {
        Scalar* gslot = kGrad ? gt + r * t.cols + col : &dummy;
        elem.element(xt[r * t.cols + col], static_cast<Scalar>(target(row)), row, lab - 1, lr[col],
                     *gslot);
      }
      if (w.kind() == Kind::per_element) {
        double row_sum = 0.0;
        for (Index j = 0; j < t.cols; ++j) {
          const double wj = static_cast<double>(w.at(row, t.col0 + j));
          sum += per_element(lp[j], wj);
          if constexpr (kGrad) {
            Scalar& gj = gt[r * t.cols + j];
            gj = static_cast<Scalar>(per_element(gj, wj));
          }
          if (to_elements || to_anchors) {
            const double e = wj == 0.0 ? 0.0 : static_cast<double>(lp[j]) * wj;
            if (ep) ep[j] = static_cast<Scalar>(e);
            row_sum += e;
          }
        }
        anchor_of[r] = row_sum;
        continue;
      }
      const double wr = w.kind() == Kind::per_anchor ? static_cast<double>(w.anchor(row)) : 1.0;
      anchor_of[r] = 0.0;
      if (w.kind() == Kind::per_anchor) {
        // One pass over the row's runs gives the value's share and the anchor's loss.
        sum += weighted_sum(lp, t.cols, wr, per_element, to_anchors ? &anchor_of[r] : nullptr);
        if constexpr (kGrad) scale_gradient(gt + r * t.cols, t.cols, GradFactor<Scalar>(wr, norm));
      } else if (to_anchors) {
        anchor_of[r] = weighted_sum(lp, t.cols, 1.0, unnormalised);
      }
      if (ep) {
        if (w.kind() == Kind::per_anchor)
          for (Index j = 0; j < t.cols; ++j)
            ep[j] = static_cast<Scalar>(wr == 0.0 ? 0.0 : static_cast<double>(lp[j]) * wr);
        else
          Eigen::Map<Vec>(ep, t.cols) = lr;
      }
    }
    if (et) store_tile(element_out, t, et, element_buf);
    // A row wider than one tile is summed over its column tiles in order (chunks hold whole
    // rows of tiles: for_each_chunk).
    if (to_anchors) losses.anchor_fn(losses.obj, t.row0, t.rows, anchor_of, t.col0 > 0);
    if (w.kind() != Kind::none) return sum;
    if constexpr (kGrad) scale_gradient(gt, n, unit);
    return sum_normalised(loss, n, per_element);
  };
  return tiled_sum<Scalar>(x, grad, kernel);
}

/// Σ_i Ω_i ℓ_i / A over an N × C sigmoid head (see the file comment). `target(row)` gives the
/// target at the label column of a foreground row. Gradients are scaled by Ω/A; `grad` and the
/// loss output `losses` (core/loss_output.hpp) are resized if they are plain arrays. Call after
/// check_sigmoid_call.
///
/// Ω and 1/A are never multiplied in the scalar type: the loss of a row (per-anchor weights) or
/// of a run (no weights) is summed first and then scaled by Ω/A in double (weighted_sum), and a
/// gradient row is multiplied by Ω/A rounded once to the scalar when that is a normal number,
/// element by element through double otherwise (GradFactor, decided once per row). Per-element
/// weights go through double element by element. So the value and the gradient are finite
/// whenever each element's loss and gradient and the exact results are.
///
/// The logits, labels, gradient and target are erased at the tile boundary (ErasedInput): the
/// tiles are compiled once per method, not once per layout.
template <typename Scalar, typename Elem, typename XD, typename LD, typename GradOut,
          typename TargetFn>
double sigmoid_onehot(const Elem& elem, const Eigen::DenseBase<XD>& x,
                      const Eigen::DenseBase<LD>& labels, const Weights<Scalar>& w, double norm,
                      GradOut& grad, const TargetFn& target, LossSink<Scalar>& losses) {
  constexpr bool kGrad = kGiven<GradOut>;
  ErasedTarget t;
  if constexpr (!std::is_same<TargetFn, UnitTarget>::value) {
    t.obj = &target;
    t.fn = [](const void* o, Index row) { return (*static_cast<const TargetFn*>(o))(row); };
  }
  const ErasedInput<Scalar> xe(x);
  const ErasedLabels le(labels);
  losses.prepare(x.rows(), x.cols());
  if constexpr (kGrad) {
    prepare_output("", "grad", grad, x.rows(), x.cols());
    ErasedOutput<Scalar> ge(grad);
    return sigmoid_onehot_tiles<Scalar, true>(elem, xe, le, w, norm, ge, t, losses);
  } else {
    None none;
    return sigmoid_onehot_tiles<Scalar, false>(elem, xe, le, w, norm, none, t, losses);
  }
}

/// sigmoid_onehot with a target for every element: `targets` (N × C, checked to lie in [0, 1])
/// replaces the one-hot target of the labels, which then only mark ignored rows (−1) and what
/// Normalizer::num_positives counts. Elements with target 0 take the vectorised negatives().
template <typename Scalar, typename Elem, typename XD, typename LD, typename TD, typename GradOut>
double sigmoid_dense_targets(const Elem& elem, const Eigen::DenseBase<XD>& x,
                             const Eigen::DenseBase<LD>& labels,
                             const Eigen::DenseBase<TD>& targets, const Weights<Scalar>& w,
                             double norm, GradOut& grad, LossSink<Scalar>& losses) {
  const ErasedInput<Scalar> xe(x), te(targets);
  const ErasedLabels le(labels);
  const ErasedTarget none_target;
  losses.prepare(x.rows(), x.cols());
  if constexpr (kGiven<GradOut>) {
    prepare_output("", "grad", grad, x.rows(), x.cols());
    ErasedOutput<Scalar> ge(grad);
    return sigmoid_onehot_tiles<Scalar, true>(elem, xe, le, w, norm, ge, none_target, losses, &te);
  } else {
    None none;
    return sigmoid_onehot_tiles<Scalar, false>(elem, xe, le, w, norm, none, none_target, losses,
                                               &te);
  }
}

}  // namespace detail

/// The call signature of the sigmoid heads: DenseLoss's, plus per-element and per-anchor loss
/// outputs (fgbg::element_losses, fgbg::anchor_losses).
struct SigmoidSignature : DefaultSignature {
  static constexpr LossOutputs losses = LossOutputs::both;
};

/// Base of the sigmoid losses with a unit target at the label column (BCE, focal loss, FL*): its
/// `run` is the checks, then the shared driver, so a loss only writes its config and its
/// `negatives` / `element` formulas. Call: (logits, labels [, grad] [, weights] [, normalizer]
/// [, element_losses / anchor_losses]).
template <typename Derived, typename Scalar>
class OneHotSigmoidLoss : public DenseLoss<Derived, Scalar, SigmoidSignature> {
 public:
  /// See DenseLoss.
  template <typename Call>
  double run(Call& c) const {
    auto& grad = std::get<0>(c.out);
    const LabelStats s = detail::check_sigmoid_call(Derived::kName, c.x, c.labels, c.option,
                                                    *c.normalizer, grad, c.losses);
    return detail::sigmoid_onehot(static_cast<const Derived&>(*this), c.x, c.labels, c.option,
                                  c.normalizer->resolve(s, c.x.cols()), grad, detail::UnitTarget{},
                                  c.losses);
  }
};

}  // namespace fgbg
