/// @file ap_loss.hpp
/// @brief AP loss: 1 − (interpolated) average precision over one ranking of all (anchor, class)
///        entries, with its error-driven update, in O(P log P + N log P) (cccorn/AP-loss).
///
/// K. Chen et al., "Towards Accurate One-Stage Object Detection with AP-Loss", CVPR 2019;
/// K. Chen et al., "AP-Loss for Accurate One-Stage Object Detection", TPAMI 2020. Matches the
/// released loss of cccorn/AP-loss (lib/model/aploss.py) and the copies in kemaloksuz/aLRPLoss and
/// kemaloksuz/RankSortLoss, on double inputs to rounding.
///
/// Entries: logits N × C (sigmoid layout, no background column), labels N (−1 ignore,
/// 0 background, k → column k−1). The N × C matrix is flattened anchor-major into ONE ranking
/// for the whole call (all images and classes of the batch, as the official code does):
/// P = {(n, labels[n]−1)}, every other entry of a non-ignored anchor is a negative, ignored
/// anchors are inert. With H_δ(x) = clamp(x/(2δ) + 1/2, 0, 1), for each positive i:
///
///   A_i = 1 + Σ_{k∈P, k≠i} H_δ(s_k − s_i),  B_i = Σ_{j∈N} H_δ(s_j − s_i),  p_i = A_i/(A_i + B_i)
///   p̂_i = max_{k∈P, s_k ≤ s_i} p_k (interpolated, default) or p_i (CVPR'19, interpolate=false)
///   w_i = 1 if p_i is a new running maximum (ascending scores), else (1 − p̂_i)/(1 − p_i)
///
///   value = 1 − (1/n_P) Σ_i p̂_i
///   update: u_i = −(1 − p̂_i)/n_P (i ∈ P),  u_j = (1/n_P) Σ_i w_i H_δ(s_j − s_i)/(A_i + B_i)
///           (j ∈ N),  0 for ignored entries;  Σ_N u = −Σ_P u.
///
/// IMPORTANT: the array written into `grad` is the paper's error-driven ("perceptron") update,
/// which the official code feeds to backward() as the gradient. It is NOT the derivative of the
/// returned value (that value is piecewise constant as δ → 0); do not finite-difference it.
///
/// Defaults: δ = 1 (hard-coded in the official code), interpolation on. Normalisation: 1/n_P
/// built in (n_P = number of positive entries in the call). No positives (or N = 0, or all
/// ignored): value 0 and a zero update. Ties: a positive–negative tie counts ½ in B, a
/// positive–positive tie ½ in A; tied positives get bit-identical results.
///
/// All arithmetic is in double; float logits give the double result rounded to float.
/// Workspace: pass a RankingWorkspace to make steady-state calls allocation-free; the overloads
/// without one use a temporary workspace (and allocate).
///
/// @throws std::invalid_argument for δ not finite and ≥ 1e-250 (the computable range), labels of
/// the wrong length or outside
///         −1..C, a `grad` view of the wrong shape; std::domain_error for a non-finite logit.
///         Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "ranking_loss.hpp"

namespace fgbg {

/// Configuration of APLoss; defaults are the official ones.
struct APLossConfig {
  double delta = 1.0;       ///< half-width δ of the smoothed step H_δ, finite and ≥ 1e-250
  bool interpolate = true;  ///< interpolated AP (TPAMI / released code); false: CVPR'19 variant
};

/// AP loss; see the file comment. Call (ranking_loss.hpp): `value(logits, labels
/// [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])`, `value_and_grad(logits, labels, grad
/// [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])`; the value is 1 − mean (interpolated) precision over the
/// positives, and `grad` (N × C; a plain array is resized, a Map or block must have the shape)
/// receives the error-driven update (NOT ∂value/∂logits; see the file comment).
template <typename Scalar>
class APLoss : public RankingLoss<APLoss<Scalar>, Scalar, RankingSignature> {
 public:
  using Config = APLossConfig;
  static constexpr const char* kName = "fgbg::APLoss";

  explicit APLoss(const Config& config = {}) : config_(config) {
    detail::check_delta(kName, config.delta);
  }

  const Config& config() const { return config_; }

  /// @name The pieces RankingLoss drives (see ranking_loss.hpp)
  /// @{
  template <typename XD, typename LD, typename In, typename Out>
  LabelStats check(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, const In&,
                   const Out& out) const {
    return detail::check_ranking_call<Scalar>(kName, x, labels, std::get<0>(out));
  }
  template <typename XD, typename Out>
  void prepare(const Eigen::DenseBase<XD>& x, Out& out) const {
    detail::prepare_ranking_grad(kName, x, out);
  }
  template <typename LD, typename In>
  bool is_positive(const Eigen::DenseBase<LD>& labels, const In&, Index a) const {
    return labels.derived().coeff(a) > 0;
  }
  double make(double v) const { return v; }

  template <typename XD, typename LD, typename In, typename Out>
  double rank(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, const In& in,
              Out& out, RankingWorkspace& ws, double scale) const {
    auto& grad = std::get<0>(out);
    constexpr bool kGrad = detail::kGiven<detail::Bare<decltype(grad)>>;
    const LabelStats stats = check(x, labels, in, out);
    prepare(x, out);
    if (stats.positives == 0) {
      detail::zero_output(grad);
      return 0.0;
    }
    const double delta = config_.delta;
    const auto all = [](Index) { return true; };
    detail::gather_positives(
        ws, x, labels, all, [](Index) { return 0.0; }, delta);
    detail::positive_prefix(ws);
    detail::scatter_negatives(ws, x, labels, all, kGrad);
    const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
    const double np = static_cast<double>(p);
    detail::grow(ws.g, p);
    detail::grow(ws.c, p);
    detail::grow(ws.pos_loss, p);
    double run_max = 0, sum_hat = 0;
    for (std::uint32_t k = 0; k < p; ++k) {
      const double A = 0.5 + detail::positives_above(ws, k);
      const double AB = A + ws.F[k];
      const double prec = A / AB;
      double hat = prec, w = 1;
      if (config_.interpolate) {
        if (run_max <= prec) {
          run_max = prec;
        } else {
          w = (1 - run_max) / (1 - prec);
        }
        hat = run_max;
      }
      sum_hat += hat;
      ws.pos_loss[k] = 1 - hat;
      ws.g[k] = -(1 - hat) * scale / np;
      ws.c[k] = w / AB;
    }
    if constexpr (kGrad) detail::write_updates(ws, x, labels, all, scale / np, grad);
    return 1.0 - sum_hat / np;
  }
  /// @}

 private:
  Config config_;
};

}  // namespace fgbg
