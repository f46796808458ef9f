/// @file alrp_loss.hpp
/// @brief aLRP loss: the classification component (value and error-driven update), the ranks,
///        the localisation component and its gradient w.r.t. the per-positive localisation
///        errors, and the self-balance weight as an explicit state object (kemaloksuz/aLRPLoss).
///
/// Oksuz, Cam, Akbas, Kalkan, "A Ranking-based, Balanced Loss Function Unifying Classification
/// and Localisation in Object Detection", NeurIPS 2020. Matches kemaloksuz/aLRPLoss
/// (mmdet/models/losses/alrp_loss.py and dense_heads/alrp_loss_retina_head.py; the same
/// function is in kemaloksuz/RankSortLoss ranking_losses.py) on double inputs to rounding.
///
/// Entries and flattening as AP loss (ap_loss.hpp): logits N × C, labels N (−1 / 0 / 1..C),
/// one ranking over all entries of the call, P = {(n, labels[n]−1)}. `loc_error` holds one
/// localisation error ℓ_n ≥ 0 per anchor (read only at positive anchors; RetinaNet head:
/// ℓ = 1 − GIoU ∈ [0, 2], i.e. ((1 − GIoU)/2)/(1 − τ) with τ = 0.5). ℓ is a constant for the
/// classification update. With H_δ(x) = clamp(x/(2δ) + 1/2, 0, 1), for each positive i:
///
///   R⁺_i = 1 + Σ_{k∈P, k≠i} H_δ(s_k − s_i),  F_i = Σ_{j∈N} H_δ(s_j − s_i),  R_i = R⁺_i + F_i
///   cls  = 1 − (1/n_P) Σ_i R⁺_i/R_i                       (no interpolation)
///   E_i  = (F_i + Σ_{k∈P, k≠i} H_δ(s_k − s_i) ℓ_k) / R_i
///   update: if F_i > ε: u_i = −E_i/n_P and every j ∈ N gets E_i H_δ(s_j − s_i)/(F_i n_P);
///           else u_i = 0 and i sends nothing.  Σ_N u = −Σ_P u (Theorem 2).
///   loc  = (1/n_P) Σ_i (1/R_i) Σ_{k: π(k) ≤ π(i)} ℓ_k   (π: score descending, R detached)
///   ∂loc/∂ℓ_k = (1/n_P) Σ_{i: π(i) ≥ π(k)} 1/R_i
///   total = cls + λ_SB · loc  (λ_SB from ALRPSelfBalance)
///
/// IMPORTANT: the array written into `grad` is the error-driven update of the paper, used by the
/// official code as the gradient of the logits. It is NOT the derivative of `cls`. The
/// localisation gradient, in contrast, is the true ∂loc/∂ℓ (R_i detached): chain it into the box
/// regression loss, times λ_SB.
///
/// Defaults: δ = 1, ε = 1e-5 (the paper: δ is the only hyper-parameter). Normalisation: 1/n_P
/// built in. The localisation order π sorts by score descending with ties broken by the
/// flattened index ascending (the official code uses whatever torch.argsort returns). No
/// positives: everything 0 (as the detector head). F_i ≤ ε: zero update for i, but its precision
/// still counts in `cls`; F_i is exactly 0 when no negative is within reach.
///
/// All arithmetic is in double. Workspace: pass a RankingWorkspace for allocation-free calls.
///
/// @throws std::invalid_argument for δ not finite and ≥ 1e-250 (the computable range) or ε not
///         finite and ≥ 0, labels of the wrong length or outside −1..C, `loc_error` not of length
///         N or outside [0, 2^512] at a positive anchor (kMaxLocError), an output view of the
///         wrong shape; std::domain_error for a non-finite logit or a non-finite ℓ at a positive
///         anchor. Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <limits>

#include "ranking_loss.hpp"

namespace fgbg {

/// Largest localisation error ℓ accepted at a positive anchor (RetinaNet's ℓ = 1 − GIoU is in
/// [0, 2]). The negatives' updates are formed from E_i/F_i, with E_i up to max ℓ + 1 and F_i > 0
/// at least about 2^-110 (a smoothed step just above 0 is a difference of scores on the grid of
/// their ulps, over 2δ), summed over up to 2^32 positives; with ℓ ≤ 2^512 no such sum overflows
/// (the ℓ-weighted prefix sums and write_updates scale their weights by a power of two before
/// they meet the score offsets: scale_down_weights).
/// A double ℓ near DBL_MAX gave inf updates where the exact ones, at most E_i, are finite. Float
/// ℓ is always within the bound.
inline const double kMaxLocError = 0x1p512;

/// Configuration of ALRPLoss; defaults are the official ones.
struct ALRPLossConfig {
  double delta = 1.0;  ///< half-width δ of the smoothed step, finite and ≥ 1e-250
  double eps = 1e-5;   ///< gate: positive i is updated only if F_i > ε, ≥ 0
};

/// The two components of aLRP loss for one call (loc before the self-balance weight).
template <typename Scalar>
struct ALRPLossValue {
  Scalar cls = 0;  ///< classification component 1 − mean(R⁺/R)
  Scalar loc = 0;  ///< localisation component before λ_SB
  /// cls + weight · loc.
  Scalar total(double weight) const { return static_cast<Scalar>(cls + weight * loc); }
};

/// Configuration of ALRPSelfBalance; defaults are the official RetinaNet head's.
struct ALRPSelfBalanceConfig {
  double initial_weight = 50;  ///< λ_SB before the first period ends, finite and > 0
  Index period = 3665;  ///< iterations per update (one COCO epoch at 32 images/iteration), ≥ 1
};

/// The self-balance weight λ_SB of aLRP loss, as explicit, resettable state. Each training
/// iteration with positives records its (cls, loc) values (loc before weighting); when
/// `period` iterations have been recorded, λ_SB becomes (mean cls + mean loc) / mean loc over
/// them and the record restarts. The weight returned by update() already includes that
/// iteration (as in the official head, which updates before weighting). If mean loc is 0 at
/// the end of a period the weight is kept (the official code would divide by zero).
class ALRPSelfBalance {
 public:
  using Config = ALRPSelfBalanceConfig;
  static constexpr const char* kName = "fgbg::ALRPSelfBalance";

  explicit ALRPSelfBalance(const Config& config = {}) : config_(config) {
    detail::require_param(std::isfinite(config.initial_weight) && config.initial_weight > 0, kName,
                          "initial_weight", "finite and > 0", config.initial_weight);
    detail::require_param(config.period >= 1, kName, "period", ">= 1",
                          static_cast<long long>(config.period));
    reset();
  }

  const Config& config() const { return config_; }
  /// Current λ_SB.
  double weight() const { return weight_; }
  /// Iterations recorded in the current period.
  Index recorded() const { return count_; }

  /// Records one iteration and returns the weight to apply to its loc component.
  /// @throws std::invalid_argument (state untouched) unless both values are finite and ≥ 0.
  double update(double cls, double loc) {
    if (!(std::isfinite(cls) && cls >= 0) || !(std::isfinite(loc) && loc >= 0))
      detail::throw_invalid(kName, "update(cls, loc) needs finite values >= 0, got (", cls, ", ",
                            loc, ")");
    sum_cls_ += cls;
    sum_loc_ += loc;
    if (++count_ == config_.period) {
      const double n = static_cast<double>(count_);
      if (sum_loc_ > 0) weight_ = (sum_loc_ / n + sum_cls_ / n) / (sum_loc_ / n);
      sum_cls_ = sum_loc_ = 0;
      count_ = 0;
    }
    return weight_;
  }

  /// Back to the initial weight and an empty record.
  void reset() {
    weight_ = config_.initial_weight;
    sum_cls_ = sum_loc_ = 0;
    count_ = 0;
  }

 private:
  Config config_;
  double weight_ = 50, sum_cls_ = 0, sum_loc_ = 0;
  Index count_ = 0;
};

/// The call signature of ALRPLoss: the ranking losses', with the localisation errors as input,
/// the update and ∂loc/∂ℓ as outputs, and the ranks as an optional third output.
struct ALRPSignature : RankingSignature {
  static constexpr int inputs = 1;
  static constexpr int outputs = 2;
  static constexpr int optional_outputs = 1;
};

/// aLRP loss; see the file comment. Call (ranking_loss.hpp): `value(logits, labels, loc_error
/// [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])` gives both components;
/// `value_and_grad(logits, labels, loc_error, grad, grad_loc_error [, rank]
/// [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])` also writes the classification update into `grad`
/// (N × C, NOT ∂cls/∂logits, see the file comment), ∂loc/∂ℓ into `grad_loc_error` (N entries, 0
/// at non-positive anchors) and, if given, the smoothed rank R_i of every positive anchor into
/// `rank` (N entries, 0 at non-positive anchors; per group, each group's own ranks).
template <typename Scalar>
class ALRPLoss : public RankingLoss<ALRPLoss<Scalar>, Scalar, ALRPSignature> {
 public:
  using Config = ALRPLossConfig;
  using Value = ALRPLossValue<Scalar>;
  static constexpr const char* kName = "fgbg::ALRPLoss";

  explicit ALRPLoss(const Config& config = {}) : config_(config) {
    detail::check_delta(kName, config.delta);
    detail::check_eps(kName, config.eps);
  }

  const Config& config() const { return config_; }

  /// @name The pieces RankingLoss drives (see ranking_loss.hpp)
  /// @{
  template <typename XD, typename LD, typename In, typename Out>
  LabelStats check(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, const In& in,
                   Out& out) const {
    const LabelStats s = detail::check_ranking_call<Scalar>(kName, x, labels, std::get<0>(out));
    detail::check_positive_side_input<Scalar>(kName, "loc_error", std::get<0>(in), labels, 0.0,
                                              kMaxLocError, "[0, 2^512 = 1.34e154]");
    detail::prepare_vector_output(kName, "grad_loc_error", std::get<1>(out), x.rows(), false);
    detail::prepare_vector_output(kName, "rank", std::get<2>(out), x.rows(), false);
    return s;
  }
  template <typename XD, typename Out>
  void prepare(const Eigen::DenseBase<XD>& x, Out& out) const {
    detail::prepare_ranking_grad(kName, x, out);
    detail::prepare_vector_output(kName, "grad_loc_error", std::get<1>(out), x.rows(), true);
    detail::prepare_vector_output(kName, "rank", std::get<2>(out), x.rows(), true);
  }
  template <typename LD, typename In>
  bool is_positive(const Eigen::DenseBase<LD>& labels, const In&, Index a) const {
    return labels.derived().coeff(a) > 0;
  }
  Value make(const detail::RankValues& v) const {
    Value out;
    out.cls = static_cast<Scalar>(v.first);
    out.loc = static_cast<Scalar>(v.second);
    return out;
  }

  template <typename XD, typename LD, typename In, typename Out>
  detail::RankValues rank(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                          const In& in, Out& out, RankingWorkspace& ws, double scale) const {
    const auto& loc_error = std::get<0>(in);
    auto& grad = std::get<0>(out);
    auto& grad_loc = std::get<1>(out);
    auto& ranks = std::get<2>(out);
    using GD = detail::Bare<decltype(grad)>;
    using RD = detail::Bare<decltype(ranks)>;
    const LabelStats stats = check(x, labels, in, out);
    prepare(x, out);
    detail::zero_output(grad_loc);
    detail::zero_output(ranks);
    detail::RankValues values;
    if (stats.positives == 0) {
      detail::zero_output(grad);
      return values;
    }
    constexpr bool kGrad = detail::kGiven<GD>;
    const double delta = config_.delta;
    const auto all = [](Index) { return true; };
    detail::gather_positives(
        ws, x, labels, all,
        [&](Index a) { return static_cast<double>(loc_error.derived().coeff(a)); }, delta);
    detail::positive_prefix(ws);
    detail::scatter_negatives(ws, x, labels, all, kGrad);
    const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
    const double np = static_cast<double>(p);
    values.first = classification_part(ws, p, scale);
    values.second = localisation_part(ws, p, scale, grad_loc);
    if constexpr (detail::kGiven<RD>) {
      for (std::uint32_t k = 0; k < p; ++k)
        ranks.derived().coeffRef(ws.pos[k].anchor) = static_cast<Scalar>(ws.rank[k]);
    }
    if constexpr (kGrad) detail::write_updates(ws, x, labels, all, scale / np, grad);
    return values;
  }
  /// @}

 private:
  /// The classification part over the p sorted positives: every smoothed rank R_k (ws.rank), the
  /// update coefficients g and c, and the value 1 − mean(R⁺_k / R_k).
  double classification_part(RankingWorkspace& ws, std::uint32_t p, double scale) const {
    const double eps = config_.eps;
    const double np = static_cast<double>(p);
    // ℓ-weighted prefix sums over the sorted positives: weight_sum (Σℓ), weight_offset_sum (Σℓ·u)
    detail::grow(ws.weight, p);
    detail::grow(ws.weight_sum, p + 1);
    detail::grow(ws.weight_offset_sum, p + 1);
    detail::grow(ws.rank, p);
    detail::grow(ws.g, p);
    detail::grow(ws.c, p);
    detail::grow(ws.pos_loss, p);
    // ℓ scaled by 2^-m (m = 0 unless max ℓ > 2^40): ℓ up to 2^512 times score offsets up to
    // 2^902 overflowed the window sums (NaN updates for δ = 6e262 with ℓ = 4.1e120).
    for (std::uint32_t k = 0; k < p; ++k) ws.weight[k] = ws.pos[k].aux;
    const int m = detail::scale_down_weights(ws.weight.data(), p);
    detail::prefix_sums(ws.weight.data(), ws.u.data(), ws.ref.data(), p, ws.weight_sum.data(),
                        ws.weight_offset_sum.data());
    double sum_ratio = 0;
    for (std::uint32_t k = 0; k < p; ++k) {
      const double rp = 0.5 + detail::positives_above(ws, k);
      const double F = ws.F[k];
      const double R = rp + F;
      ws.rank[k] = R;
      sum_ratio += rp / R;
      ws.pos_loss[k] = F / R;  // 1 − R⁺/R
      if (F > eps) {
        const double S = std::ldexp(detail::weighted_above_others(ws, k), m);
        ws.g[k] = -(S + F) * scale / (R * np);
        ws.c[k] = (S + F) / (R * F);
      } else {
        ws.g[k] = 0;
        ws.c[k] = 0;
      }
    }
    return 1.0 - sum_ratio / np;
  }

  /// The localisation part: positives by score descending (ties by flat index ascending), the
  /// value mean(Σ_{above} ℓ / R_k), and ∂loc/∂ℓ into `grad_loc` when given.
  template <typename GED>
  double localisation_part(RankingWorkspace& ws, std::uint32_t p, double scale,
                           GED& grad_loc) const {
    const double np = static_cast<double>(p);
    detail::grow(ws.order, p);
    std::uint32_t t = 0;
    for (std::uint32_t end = p; end > 0;) {
      std::uint32_t begin = end - 1;
      while (begin > 0 && ws.pos[begin - 1].score == ws.pos[end - 1].score) --begin;
      for (std::uint32_t k = begin; k < end; ++k) ws.order[t++] = k;
      end = begin;
    }
    double cum = 0, loc = 0;
    for (std::uint32_t q = 0; q < p; ++q) {
      const std::uint32_t k = ws.order[q];
      cum += ws.pos[k].aux;
      loc += cum / ws.rank[k];
    }
    if constexpr (detail::kGiven<detail::Bare<GED>>) {
      double suffix = 0;
      for (std::uint32_t q = p; q-- > 0;) {
        const std::uint32_t k = ws.order[q];
        suffix += 1.0 / ws.rank[k];
        grad_loc.derived().coeffRef(ws.pos[k].anchor) = static_cast<Scalar>(suffix * scale / np);
      }
    }
    return loc / np;
  }

  Config config_;
};

}  // namespace fgbg
