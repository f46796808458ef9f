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

#include "ranking_primitives.hpp"

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

/// aLRP loss; see the file comment.
template <typename Scalar>
class ALRPLoss {
 public:
  using Config = ALRPLossConfig;
  using Value = ALRPLossValue<Scalar>;
  static constexpr const char* kName = "fgbg::ALRPLoss";

  explicit ALRPLoss(const Config& config = {}) : config_(config) {
    detail::check_delta(kName, config.delta);
    detail::check_eps(kName, config.eps);
  }

  const Config& config() const { return config_; }

  /// Both components, no update.
  template <typename XD, typename LD, typename ED>
  Value value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
              const Eigen::DenseBase<ED>& loc_error, RankingWorkspace& ws) const {
    detail::None none;
    return make(run(logits, labels, loc_error, none, none, none, ws));
  }

  /// Both components; the classification update into `grad` (N × C, NOT ∂cls/∂logits, see the
  /// file comment) and ∂loc/∂ℓ into `grad_loc_error` (N entries, 0 at non-positive anchors).
  template <typename XD, typename LD, typename ED, typename GD, typename GED>
  Value value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                       const Eigen::DenseBase<ED>& loc_error, const Eigen::DenseBase<GD>& grad,
                       const Eigen::DenseBase<GED>& grad_loc_error, RankingWorkspace& ws) const {
    detail::None none;
    return make(run(logits, labels, loc_error, detail::writable(grad),
                    detail::writable(grad_loc_error), none, ws));
  }

  /// As above, also writing the smoothed rank R_i of every positive anchor into `rank`
  /// (N entries, 0 at non-positive anchors).
  template <typename XD, typename LD, typename ED, typename GD, typename GED, typename RD>
  Value value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                       const Eigen::DenseBase<ED>& loc_error, const Eigen::DenseBase<GD>& grad,
                       const Eigen::DenseBase<GED>& grad_loc_error,
                       const Eigen::DenseBase<RD>& rank, RankingWorkspace& ws) const {
    return make(run(logits, labels, loc_error, detail::writable(grad),
                    detail::writable(grad_loc_error), detail::writable(rank), ws));
  }

  /// value_and_grad with a temporary workspace (allocates).
  template <typename XD, typename LD, typename ED, typename GD, typename GED>
  Value value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                       const Eigen::DenseBase<ED>& loc_error, const Eigen::DenseBase<GD>& grad,
                       const Eigen::DenseBase<GED>& grad_loc_error) const {
    RankingWorkspace ws;
    return value_and_grad(logits, labels, loc_error, grad, grad_loc_error, ws);
  }

  /// One ranking per group (e.g. per image); see APLoss::value_and_grad_per_group. cls and loc
  /// are means over the groups with at least one positive, and each group's update and
  /// ∂loc/∂ℓ are divided by that number; `rank` holds each group's own ranks. Labels, loc
  /// errors, groups and the vector outputs must be vectors at compile time.
  template <typename XD, typename LD, typename ED, typename GrD, typename GD, typename GED,
            typename RD>
  Value value_and_grad_per_group(const Eigen::DenseBase<XD>& logits,
                                 const Eigen::DenseBase<LD>& labels,
                                 const Eigen::DenseBase<ED>& loc_error,
                                 const Eigen::DenseBase<GrD>& groups,
                                 const Eigen::DenseBase<GD>& grad,
                                 const Eigen::DenseBase<GED>& grad_loc_error,
                                 const Eigen::DenseBase<RD>& rank, RankingWorkspace& ws) const {
    auto& g = detail::writable(grad);
    auto& gl = detail::writable(grad_loc_error);
    auto& rk = detail::writable(rank);
    const Index n = logits.rows();
    detail::check_ranking_call<Scalar>(kName, logits, labels, g);
    detail::check_positive_side_input<Scalar>(kName, "loc_error", loc_error, labels, 0.0,
                                              kMaxLocError, "[0, 2^512 = 1.34e154]");
    detail::check_groups(kName, groups, n);
    detail::prepare_vector_output(kName, "grad_loc_error", gl, n, false);
    detail::prepare_vector_output(kName, "rank", rk, n, false);
    detail::prepare_output(kName, "grad", g, n, logits.cols());
    detail::prepare_vector_output(kName, "grad_loc_error", gl, n, true);
    detail::prepare_vector_output(kName, "rank", rk, n, true);
    const Index gp = detail::count_groups_with_positives(
        groups, [&](Index a) { return labels.derived().coeff(a) > 0; });
    if (gp == 0) {
      g.derived().setZero();
      gl.derived().setZero();
      rk.derived().setZero();
      return Value{};
    }
    double cls = 0, loc = 0;
    detail::for_each_group(groups, [&](Index first, Index len) {
      auto gb = g.derived().middleRows(first, len);
      auto glb = gl.derived().segment(first, len);
      auto rkb = rk.derived().segment(first, len);
      const detail::RankValues v = run(
          logits.derived().middleRows(first, len), labels.derived().segment(first, len),
          loc_error.derived().segment(first, len), gb, glb, rkb, ws, 1.0 / static_cast<double>(gp));
      cls += v.first;
      loc += v.second;
    });
    return make({cls / static_cast<double>(gp), loc / static_cast<double>(gp)});
  }

 private:
  static Value make(const detail::RankValues& v) {
    Value out;
    out.cls = static_cast<Scalar>(v.first);
    out.loc = static_cast<Scalar>(v.second);
    return out;
  }

  template <typename XD, typename LD, typename ED, typename GD, typename GED, typename RD>
  detail::RankValues run(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                         const Eigen::DenseBase<ED>& loc_error, GD& grad, GED& grad_loc, RD& rank,
                         RankingWorkspace& ws, double scale = 1.0) const {
    const LabelStats stats = detail::check_ranking_call<Scalar>(kName, x, labels, grad);
    detail::check_positive_side_input<Scalar>(kName, "loc_error", loc_error, labels, 0.0,
                                              kMaxLocError, "[0, 2^512 = 1.34e154]");
    const Index n = x.rows();
    detail::prepare_vector_output(kName, "grad_loc_error", grad_loc, n, false);
    detail::prepare_vector_output(kName, "rank", rank, n, false);
    // every check passed: from here on outputs may be written
    if constexpr (detail::kGiven<GD>) detail::prepare_output(kName, "grad", grad, n, x.cols());
    detail::prepare_vector_output(kName, "grad_loc_error", grad_loc, n, true);
    detail::prepare_vector_output(kName, "rank", rank, n, true);
    detail::zero_output(grad_loc);
    detail::zero_output(rank);
    detail::RankValues out;
    if (stats.positives == 0) {
      detail::zero_output(grad);
      return out;
    }
    constexpr bool kGrad = detail::kGiven<GD>;
    const double delta = config_.delta, eps = config_.eps;
    const auto all = [](Index) { return true; };
    detail::gather_positives(
        ws, x, labels, all,
        [&](Index a) { return static_cast<double>(loc_error.derived().coeff(a)); }, delta);
    detail::positive_prefix(ws);
    detail::scatter_negatives(ws, x, labels, all, kGrad);
    const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
    const double np = static_cast<double>(p);
    // ℓ-weighted prefix sums over the sorted positives: weight_sum (Σℓ), weight_offset_sum (Σℓ·u)
    detail::grow(ws.weight, p);
    detail::grow(ws.weight_sum, p + 1);
    detail::grow(ws.weight_offset_sum, p + 1);
    detail::grow(ws.rank, p);
    detail::grow(ws.g, p);
    detail::grow(ws.c, p);
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
      if (F > eps) {
        const double S = std::ldexp(detail::weighted_above_others(ws, k), m);
        ws.g[k] = -(S + F) * scale / (R * np);
        ws.c[k] = (S + F) / (R * F);
      } else {
        ws.g[k] = 0;
        ws.c[k] = 0;
      }
    }
    out.first = 1.0 - sum_ratio / np;
    // localisation: order by score descending, ties by flat index ascending
    detail::grow(ws.order, p);
    {
      std::uint32_t t = 0;
      std::uint32_t end = p;
      while (end > 0) {
        std::uint32_t begin = end - 1;
        while (begin > 0 && ws.pos[begin - 1].score == ws.pos[end - 1].score) --begin;
        for (std::uint32_t k = begin; k < end; ++k) ws.order[t++] = k;
        end = begin;
      }
    }
    double cum = 0, loc = 0;
    for (std::uint32_t t = 0; t < p; ++t) {
      const std::uint32_t k = ws.order[t];
      cum += ws.pos[k].aux;
      loc += cum / ws.rank[k];
    }
    out.second = loc / np;
    if constexpr (detail::kGiven<GED>) {
      double suffix = 0;
      for (std::uint32_t t = p; t-- > 0;) {
        const std::uint32_t k = ws.order[t];
        suffix += 1.0 / ws.rank[k];
        grad_loc.derived().coeffRef(ws.pos[k].anchor) = static_cast<Scalar>(suffix * scale / np);
      }
    }
    if constexpr (detail::kGiven<RD>) {
      for (std::uint32_t k = 0; k < p; ++k)
        rank.derived().coeffRef(ws.pos[k].anchor) = static_cast<Scalar>(ws.rank[k]);
    }
    if constexpr (kGrad) detail::write_updates(ws, x, labels, all, scale / np, grad);
    return out;
  }

  Config config_;
};

}  // namespace fgbg
