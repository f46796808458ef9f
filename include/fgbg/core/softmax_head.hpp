/// @file softmax_head.hpp
/// @brief The shared driver of softmax-head losses (cross-entropy, softmax focal loss).
///
/// Logits are N × (C+1) with column 0 the background; label y ∈ 0..C selects the target column,
/// −1 ignores the row. Per row the driver computes, stably and once:
///
///   m = max_c x_c (first arg-max a),  E_c = exp(x_c − m),  r = Σ_{c≠a} E_c,  S = 1 + r
///   log p_y = (x_y − m) − log1p(r),   q = 1 − p_y = Σ_{c≠y} p_c (no cancellation)
///
/// and asks the method for its row loss ℓ and gradient in the form
/// ∂ℓ/∂x_c = s · p_c for c ≠ y and ∂ℓ/∂x_y = g_y. A method supplies
///
/// @code
///   void row(double log_py, Scalar p_y, Scalar q, Label y, double& loss, Scalar& s,
///            Scalar& g_y) const;   // log p_y and ℓ in double: x_y − m may overflow the scalar
/// @endcode
///
/// Rows are never split across tiles, so a softmax head may have at most detail::kTileElems
/// columns (2048: LVIS's 1204 fit).
#pragma once

#include "requires_cxx17.hpp"

#include <cmath>

#include "checks.hpp"
#include "dense.hpp"
#include "loss_base.hpp"
#include "numerics.hpp"
#include "reduction.hpp"
#include "sigmoid_head.hpp"
#include "weights.hpp"

namespace fgbg {
namespace detail {

/// Validates a softmax-head call (labels in −1..C for N × (C+1) logits, per-anchor weights
/// only) and returns the label counts. Nothing is written.
template <typename Scalar, typename XD, typename LD, typename GradOut>
LabelStats check_softmax_call(const char* where, const Eigen::DenseBase<XD>& x,
                              const Eigen::DenseBase<LD>& labels, Weights<Scalar>& weights,
                              const Normalizer& normalizer, const GradOut& grad,
                              const LossSink<Scalar>& losses) {
  if (x.cols() < 2)
    throw_invalid(where, "logits must have C+1 >= 2 columns (column 0 is background), got ",
                  x.cols());
  if (x.cols() > kTileElems)
    throw_invalid(where, "softmax heads support at most ", kTileElems, " columns, got ", x.cols());
  return check_dense_call(where, x, labels, x.cols() - 1, weights, 1, normalizer, grad, losses);
}

/// Σ_i Ω_i ℓ_i / A over an N × (C+1) softmax head; see the file comment.
///
/// Every row is evaluated in an aligned scratch buffer (never in the caller's gradient memory),
/// so the bits do not depend on where the gradient or the logits live nor on their layout; the
/// gradient row is then written as one scaled copy. log p_y and the row loss are formed in
/// double (x_y − m may overflow the scalar for finite logits), and Ω/A and the row's gradient
/// scale are combined in double (GradFactor), so nothing overflows before the final rounding.
template <typename Scalar, typename Elem, typename XD, typename LD, typename GradOut>
double softmax_rows(const Elem& elem, const Eigen::DenseBase<XD>& x,
                    const Eigen::DenseBase<LD>& labels, const Weights<Scalar>& w, double norm,
                    GradOut& grad, LossSink<Scalar>& losses) {
  constexpr bool kGrad = kGiven<GradOut>;
  if constexpr (kGrad) prepare_output("", "grad", grad, x.rows(), x.cols());
  losses.prepare(x.rows(), x.cols());
  const bool to_anchors = losses.kind == LossSink<Scalar>::Kind::anchor;
  const ElementScale row_scale(norm);
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  auto kernel = [&](const Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch) {
    const Index k = t.cols;
    double anchor_of[kTileElems];  // Ω_i ℓ_i of each row, when asked for
    double sum = 0.0;
    for (Index r = 0; r < t.rows; ++r) {
      const Index row = t.row0 + r;
      const Label y = static_cast<Label>(labels.derived().coeff(row));
      anchor_of[r] = 0.0;
      if (y == kIgnore) {
        if constexpr (kGrad) Eigen::Map<Vec>(gt + r * k, k).setZero();
        continue;
      }
      Eigen::Map<const Vec> xr(xt + r * k, k);
      Eigen::Map<Vec> e(scratch, k);
      Index a = 0;
      const Scalar m = xr.maxCoeff(&a);
      e = array::exp_nonpositive(xr - m);  // exact down to the subnormals (see numerics.hpp)
      e[a] = Scalar(0);
      const Scalar rest = e.sum();
      e[a] = Scalar(1);
      const Scalar s_total = Scalar(1) + rest;
      // x_y − m overflows double when the row spans more than DBL_MAX (double logits): then the
      // row's loss, linear in log p_y there (p_y = 0), is formed from halves and doubled after
      // the normalisation (rare branch).
      const double lse = static_cast<double>(std::log1p(rest));
      const double diff = static_cast<double>(xr[y]) - static_cast<double>(m);
      const bool halves = !std::isfinite(diff);
      const double log_py =
          halves ? (0.5 * static_cast<double>(xr[y]) - 0.5 * static_cast<double>(m)) - 0.5 * lse
                 : diff - lse;
      const Scalar q = y == a ? rest / s_total : (s_total - e[y]) / s_total;
      const Scalar p_y = e[y] / s_total;
      double loss = 0;
      Scalar scale = 0, g_y = 0;
      elem.row(log_py, p_y, q, y, loss, scale, g_y);
      const double wr =
          w.kind() == Weights<Scalar>::Kind::none ? 1.0 : static_cast<double>(w.anchor(row));
      sum += halves ? row_scale(loss, wr) * 2.0 : row_scale(loss, wr);
      if (to_anchors && wr != 0.0) anchor_of[r] = (halves ? 2.0 * loss : loss) * wr;
      if constexpr (kGrad) {
        Scalar* gr = gt + r * k;
        scale_into(
            gr, e.data(), k,
            GradFactor<Scalar>(wr, norm, static_cast<double>(scale), static_cast<double>(s_total)));
        gr[y] = GradFactor<Scalar>(wr, norm)(g_y);
      }
    }
    if (to_anchors) losses.anchor_fn(losses.obj, t.row0, t.rows, anchor_of, false);
    return sum;
  };
  return tiled_sum<Scalar>(x, grad, kernel);
}

}  // namespace detail

/// The call signature of the softmax heads: DenseLoss's, plus the per-anchor loss output
/// (fgbg::anchor_losses; a softmax head has one loss per anchor, not per element).
struct SoftmaxSignature : DefaultSignature {
  static constexpr LossOutputs losses = LossOutputs::anchor;
};

/// Base of the softmax-head losses: its `run` is the checks, then the row driver, so a loss only
/// writes its config and its `row` formula. Call: (logits, labels [, grad] [, weights]
/// [, normalizer] [, anchor_losses]).
template <typename Derived, typename Scalar>
class SoftmaxLoss : public DenseLoss<Derived, Scalar, SoftmaxSignature> {
 public:
  /// See DenseLoss.
  template <typename Call>
  double run(Call& c) const {
    auto& grad = std::get<0>(c.out);
    const LabelStats s = detail::check_softmax_call(Derived::kName, c.x, c.labels, c.option,
                                                    *c.normalizer, grad, c.losses);
    return detail::softmax_rows(static_cast<const Derived&>(*this), c.x, c.labels, c.option,
                                c.normalizer->resolve(s, 1), grad, c.losses);
  }
};

}  // namespace fgbg
