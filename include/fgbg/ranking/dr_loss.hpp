/// @file dr_loss.hpp
/// @brief DR loss (Distributional Ranking) over a sigmoid head: value and its true gradient with
///        respect to the logits, in two vectorised passes.
///
/// Qian, Chen, Li, Jin, "DR Loss: Improving Object Detection by Distributional Ranking",
/// CVPR 2020. Matches the authors' released module (`SigmoidDRLoss` of idstcv/DR_loss,
/// sigmoid_dr_loss.py, run in double precision) and its autograd gradient; reference vectors in
/// tests/data/dr_loss.json, hand-checked values in tests/test_dr_loss.cpp.
///
/// Entries: the N × C logits are read as N·C (anchor, class) entries. Entry (n, c) is positive
/// iff labels[n] == c+1, ignored iff labels[n] == −1, and negative otherwise (so the other
/// classes of a positive anchor are negatives). With p = σ(x) (the ranking is on probabilities):
///
///   q⁻_j = softmax_{j∈N}(p_j / λ₋),   D₋ = Σ_{j∈N} q⁻_j p_j       (D₋ = 0 if N = ∅)
///   q⁺_i = softmax_{i∈P}(−p_i / λ₊),  D₊ = Σ_{i∈P} q⁺_i p_i       (D₊ = 1 if P = ∅)
///   u = D₋ − D₊ + γ,   L_DR = (τ/L) · log(1 + exp(L·u))
///
/// The softmaxes up-weight hard negatives (high p) and hard positives (low p); they are the
/// closed form of the paper's KL-constrained worst-case distributions. There is no normaliser
/// (none in the reference; keeping RetinaNet's 1/#positives is the documented failure mode, DR
/// issue #2). Gradient (a true derivative, A = τ·σ(L·u), σ'(x) = p(1−p)):
///
///   ∂L/∂x_j = A · q⁻_j · (1 + (p_j − D₋)/λ₋) · σ'(x_j)     for negatives
///   ∂L/∂x_i = −A · q⁺_i · (1 − (p_i − D₊)/λ₊) · σ'(x_i)    for positives
///   0 for ignored entries. (A negative with p_j < D₋ − λ₋ gets a small negative gradient.)
///
/// Defaults (the released code): λ₊ = 1, λ₋ = 0.1/ln 3.5, L = 6, τ = 4, γ (margin) = 0.5. The
/// authors train with classifier prior 0.5 (bias 0), not RetinaNet's 0.01.
///
/// Granularity: one call pools every entry of the call into one positive and one negative
/// distribution. Called on a whole batch this is the released behaviour (maskrcnn-benchmark
/// concatenates the images of a GPU). Passing `fgbg::groups(ids)` (one integer per anchor, e.g.
/// the image index, non-decreasing so that each group's anchors are contiguous rows) evaluates DR loss
/// separately on every group and returns the sum of the group values (the gradient is that of
/// the sum): the paper's per-image ranking. Divide by the number of groups for a mean.
///
/// Numerics: both softmaxes are evaluated as streaming log-sum-exp sums (running maximum, sums
/// rescaled when it grows), accumulated in double, so any λ > 0 and any finite logit (±1e4) give
/// finite results. Pass 1 reads the logits and accumulates the two softmax sums (it writes
/// nothing, so in a pooled call it also serves as the NaN/inf check); pass 2 reads them again and
/// writes the gradient. Value-only calls do pass 1 only. `grad` may be the logits themselves
/// (the same elements in the same layout: an in-place gradient); any other overlap with the
/// logits is rejected (std::invalid_argument, "grad must not share memory with the logits").
/// Positive entries (at most one per anchor) take a scalar path in double. No heap allocation
/// (stack tiles of core/dense.hpp). With FGBG_USE_OPENMP the passes run on threads, and results are
/// bit-identical for any thread count.
///
/// Call (core/loss_base.hpp): `value(logits, labels [, fgbg::groups(ids)])`,
/// `value_and_grad(logits, labels, grad [, fgbg::groups(ids)])`. Weights (Ω) are not taken (a
/// compile-time error): DR reweights entries itself through its softmaxes, and the reference has
/// no weights; select anchors with label −1.
///
/// Shapes: logits N × C (any Eigen expression, row- or column-major), labels N (integers,
/// −1 / 0 / 1..C), groups N (integers, non-decreasing), gradient N × C (a plain array is resized).
///
/// @throws std::invalid_argument for a bad config, shape, label or groups;
///         std::domain_error for a non-finite logit. Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/weights.hpp"

namespace fgbg {

/// Configuration of DRLoss; the defaults are those of the released code.
template <typename Scalar>
struct DRLossConfig {
  Scalar pos_lambda = Scalar(1);                    ///< λ₊, temperature of positives, > 0
  Scalar neg_lambda = Scalar(0.07982356001479281);  ///< λ₋ = 0.1 / ln 3.5, > 0
  Scalar L = Scalar(6);                             ///< smoothness of the hinge, > 0
  Scalar tau = Scalar(4);                           ///< scale τ, > 0
  Scalar margin = Scalar(0.5);                      ///< γ, finite (hard-coded in the reference)
};

namespace detail {

/// DR's streaming softmax sums: keys k (p for negatives, −p for positives), and s1 the sum of
/// the weighted offsets k − M, so the mean key is M + s1/s0 (StreamingExpSums).
///
/// Every gradient factor 1 ± (p − D)β is 1 + β(k − M) − β·s1/s0, formed from offsets to M: with
/// p − D formed directly, the rounding of D (an ulp of p) was multiplied by β, and a huge β
/// (λ = 1e-301) turned a factor of exactly 1 into 1e284 and the gradient into inf. β·s1/s0 =
/// Σ t e^t / Σ e^t with t = β(k − M) ≤ 0 and Σ e^t ≥ 1 (the maximum's term) is at most (number of
/// entries)/e in magnitude, so nothing there overflows.
using DrSoftmaxSums = StreamingExpSums<true>;

/// Partial sums of one chunk of tiles.
struct DrPartial {
  DrSoftmaxSums neg, pos;
  double probe = 0.0;  ///< Σ x·0 over the logits read: 0 unless one is NaN or ±inf
};

/// s0 += Σ w_i, s1 += Σ w_i·d_i, accumulated in double. Eigen 3.4 does not vectorise casts and a
/// plain running double sum is latency-bound (~4 cycles per element), so float input is widened
/// block by block in a loop the compiler vectorises and summed with Eigen's vectorised reduction.
/// The order is fixed, so the result depends only on the input.
template <typename Scalar>
void dr_sums(const Scalar* w, const Scalar* d, Index n, double& s0, double& s1) {
  using VecD = Eigen::Array<double, Eigen::Dynamic, 1>;
  if constexpr (std::is_same<Scalar, double>::value) {
    const Eigen::Map<const VecD> wm(w, n), pm(d, n);
    s0 += wm.sum();
    s1 += (wm * pm).sum();
  } else {
    constexpr Index kBlock = 512;
    alignas(64) double wd[kBlock];
    alignas(64) double pd[kBlock];
    for (Index i0 = 0; i0 < n; i0 += kBlock) {
      const Index m = std::min(kBlock, n - i0);
      for (Index i = 0; i < m; ++i) {
        wd[i] = static_cast<double>(w[i0 + i]);
        pd[i] = static_cast<double>(d[i0 + i]);
      }
      const Eigen::Map<const VecD> wm(wd, m), pm(pd, m);
      s0 += wm.sum();
      s1 += (wm * pm).sum();
    }
  }
}

}  // namespace detail

/// The call signature of DRLoss: optional groups, no weights, no normaliser.
struct DRSignature : DefaultSignature {
  static constexpr CallOption option = CallOption::groups;
  static constexpr bool normalizer = false;
};

/// DR loss; see the file comment.
template <typename Scalar>
class DRLoss : public DenseLoss<DRLoss<Scalar>, Scalar, DRSignature> {
  static_assert(std::is_floating_point<Scalar>::value, "fgbg::DRLoss: Scalar must be float/double");

 public:
  using Config = DRLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::DRLoss";

  /// @throws std::invalid_argument naming the field if a hyper-parameter is out of range.
  explicit DRLoss(const Config& config = {}) : config_(config) {
    auto positive = [](Scalar v) { return std::isfinite(v) && v > 0 && std::isfinite(1 / v); };
    detail::require_param(positive(config.pos_lambda), kName, "pos_lambda", "finite and > 0",
                          config.pos_lambda);
    detail::require_param(positive(config.neg_lambda), kName, "neg_lambda", "finite and > 0",
                          config.neg_lambda);
    detail::require_param(positive(config.L), kName, "L", "finite and > 0", config.L);
    detail::require_param(std::isfinite(config.tau) && config.tau > 0, kName, "tau",
                          "finite and > 0", config.tau);
    detail::require_param(std::isfinite(config.margin), kName, "margin", "finite", config.margin);
  }

  const Config& config() const { return config_; }

  /// See DenseLoss: (logits, labels [, grad] [, fgbg::groups(ids)]). Without groups all entries
  /// are pooled (the released behaviour); with groups (one integer per anchor, non-decreasing)
  /// the value is the sum over groups of the per-group value. No weights: DR loss weights
  /// entries through its own softmaxes (give excluded anchors label −1 instead).
  template <typename Call>
  double run(Call& c) const {
    if constexpr (detail::kGiven<decltype(c.option)>)
      return evaluate_call(c.x, c.labels, c.option.ids, std::get<0>(c.out));
    else
      return evaluate_call(c.x, c.labels, detail::None{}, std::get<0>(c.out));
  }

 private:
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

  /// True when `x` and `g` are the same elements in the same layout (the in-place gradient).
  template <typename XD, typename GD>
  static bool same_view(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g) {
    if constexpr (bool(XD::Flags & Eigen::DirectAccessBit) &&
                  bool(GD::Flags & Eigen::DirectAccessBit) &&
                  std::is_same<typename XD::Scalar, typename GD::Scalar>::value) {
      const XD& a = x.derived();
      const GD& b = g.derived();
      return static_cast<const void*>(a.data()) == static_cast<const void*>(b.data()) &&
             bool(XD::IsRowMajor) == bool(GD::IsRowMajor) && a.rows() == b.rows() &&
             a.cols() == b.cols() && a.innerStride() == b.innerStride() &&
             (a.outerStride() == b.outerStride() || a.size() <= 1);
    } else {
      return false;
    }
  }

  /// Validates everything, then evaluates group by group.
  template <typename XD, typename LD, typename Groups, typename GradOut>
  double evaluate_call(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                       const Groups& groups, GradOut& grad) const {
    static_assert(kStorableAs<typename XD::Scalar, Scalar>,
                  "fgbg::DRLoss: the logits must have the loss's scalar type (or Eigen::half / "
                  "Eigen::bfloat16 for a float loss)");
    constexpr bool kGrouped = detail::kGiven<Groups>;
    constexpr bool kGrad = detail::kGiven<GradOut>;
    const Index n = x.rows(), c = x.cols();
    detail::check_labels(kName, labels, n, c);
    if constexpr (kGrouped) detail::check_groups(kName, groups, n);
    if constexpr (kGrad) {
      detail::check_output(kName, "grad", grad, n, c);
      // The exact in-place gradient (the same elements in the same layout) is supported: pass 2
      // reads each tile's logits before writing that tile. Any other overlap would overwrite
      // logits that are read later: rejected with the check every loss applies.
      if (!same_view(x, grad)) detail::check_no_alias(kName, x, grad);
    }

    if constexpr (!kGrouped) {
      // The finiteness check is fused into pass 1, which writes nothing (see two_passes).
      if constexpr (kGrad) {
        if (grad.rows() != n || grad.cols() != c) {
          // A plain gradient of another shape is resized by prepare_output, which frees the
          // buffer a block taken before it would point into: check everything, resize, and
          // only then take the gradient block (this path is rare; it costs one extra read).
          detail::check_finite(kName, "logits", x);
          detail::prepare_output(kName, "grad", grad, n, c);
          return evaluate(x, labels, 0, n, grad, nullptr);
        }
        return evaluate(x, labels, 0, n, grad, [&](bool non_finite) {
          if (non_finite) detail::check_finite(kName, "logits", x);
          detail::prepare_output(kName, "grad", grad, n, c);
        });
      } else {
        return evaluate(x, labels, 0, n, grad, [&](bool non_finite) {
          if (non_finite) detail::check_finite(kName, "logits", x);
        });
      }
    } else {
      // Group k's gradient is written before group k+1 is read: check everything first.
      detail::check_finite(kName, "logits", x);
      if constexpr (kGrad) detail::prepare_output(kName, "grad", grad, n, c);
      double total = 0.0;
      for (Index r0 = 0; r0 < n;) {
        Index r1 = r0 + 1;
        while (r1 < n && groups.derived().coeff(r1) == groups.derived().coeff(r0)) ++r1;
        total += evaluate(x, labels, r0, r1 - r0, grad, nullptr);
        r0 = r1;
      }
      return total;
    }
  }

  /// DR loss of rows [r0, r0 + rows) alone; writes those rows of the gradient.
  template <typename XD, typename LD, typename GradOut, typename BeforeWriting>
  double evaluate(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, Index r0,
                  Index rows, GradOut& grad, BeforeWriting&& before_writing) const {
    // With C = 0 the rows hold no entries, and a block at a non-zero row of an N × 0 array
    // would offset its null data pointer: take the empty block at row 0 instead.
    if (x.cols() == 0) r0 = rows = 0;
    const auto xb = x.derived().middleRows(r0, rows);
    if constexpr (!detail::kGiven<GradOut>) {
      return two_passes(xb, labels, r0, grad, before_writing);
    } else {
      auto gb = grad.derived().middleRows(r0, rows);
      return two_passes(xb, labels, r0, gb, before_writing);
    }
  }

  /// Pass 1 (sums; reads the logits, writes nothing), the scalar finish, pass 2 (reads the
  /// logits again, writes the gradient) over one block of rows. Unless `before_writing` is
  /// nullptr, pass 1 also probes the logits for NaN/inf (Σ x·0 is NaN iff one is) and
  /// `before_writing(probe_fired)` runs between the passes: it runs the full finiteness check
  /// when the probe fired (which throws, naming the element, before anything is written) and
  /// prepares the gradient.
  template <typename XB, typename LD, typename GradOut, typename BeforeWriting>
  double two_passes(const Eigen::DenseBase<XB>& x, const Eigen::DenseBase<LD>& labels, Index label0,
                    GradOut& grad, BeforeWriting&& before_writing) const {
    constexpr bool kGrad = detail::kGiven<GradOut>;
    constexpr bool kProbe = !std::is_same<std::decay_t<BeforeWriting>, std::nullptr_t>::value;
    const double beta_neg = static_cast<double>(Scalar(1) / config_.neg_lambda);
    const double beta_pos = 1.0 / static_cast<double>(config_.pos_lambda);
    // Pass 1: per chunk of tiles, in a fixed order, then merged in order.
    detail::None no_output;
    const detail::DrPartial total = detail::tiled_reduce<Scalar>(
        x, no_output, detail::DrPartial{},
        [&](const detail::Tile& t, const Scalar* xt, Scalar*, Scalar* scratch,
            detail::DrPartial& part) {
          if constexpr (kProbe)
            part.probe += (Eigen::Map<const Vec>(xt, t.size()) * Scalar(0)).sum();
          sums_tile(t, xt, labels, label0, part, beta_neg, beta_pos, scratch);
        },
        [&](detail::DrPartial& all, const detail::DrPartial& part) {
          all.neg.merge(part.neg, beta_neg);
          all.pos.merge(part.pos, beta_pos);
          all.probe += part.probe;
        });
    if constexpr (kProbe) before_writing(!(total.probe == 0.0));  // throws on NaN / inf

    // The scalar finish, in double.
    // D₋ = M₋ + offset₋ (0 without negatives); D₊ = −(M₊ + offset₊) (1 without positives).
    const double d_neg = total.neg.any ? total.neg.max + total.neg.offset() : 0.0;
    const double minus_d_pos = total.pos.any ? total.pos.max + total.pos.offset() : -1.0;
    const double L = static_cast<double>(config_.L);
    const double hinge = d_neg + minus_d_pos + static_cast<double>(config_.margin);
    const double lu = L * hinge;  // may overflow to ±inf for a huge L: only σ(lu) uses it then
    const double tau = static_cast<double>(config_.tau);
    // τ/L · softplus(L·h), written so that L·h overflowing (L near the type's maximum) still gives
    // the finite limit: for h > 0 it is τ·h + τ·softplus(−L·h)/L, for h ≤ 0 τ·softplus(L·h)/L.
    // Both terms are ≥ 0 and at most the value, and τ·sp/L goes through scale_ratio, so nothing
    // overflows unless the value does (h + sp/L overflowed for h near DBL_MAX with a tiny τ).
    const double value = hinge > 0.0 ? tau * hinge + detail::scale_ratio(softplus(-lu), tau, L)
                                     : detail::scale_ratio(softplus(lu), tau, L);
    if constexpr (kGrad) {
      const double a = tau * sigmoid(lu);
      Coefficients co;
      co.any_neg = total.neg.any;
      co.c_neg = total.neg.any ? static_cast<Scalar>(a / total.neg.s0) : Scalar(0);
      co.max_neg = total.neg.any ? static_cast<Scalar>(total.neg.max) : Scalar(0);
      co.beta_neg = Scalar(1) / config_.neg_lambda;
      co.bm_neg = total.neg.any ? static_cast<Scalar>(beta_neg * total.neg.offset()) : Scalar(0);
      co.c_pos = total.pos.any ? -a / total.pos.s0 : 0.0;
      co.max_pos = total.pos.max;
      co.beta_pos = beta_pos;
      co.bm_pos = total.pos.any ? beta_pos * total.pos.offset() : 0.0;
      // Pass 2: every tile independently.
      detail::tiled_write<Scalar>(
          x, grad, [&](const detail::Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch) {
            grad_tile(t, xt, gt, labels, label0, co, scratch);
          });
    }
    return value;
  }

  /// What pass 2 needs from pass 1.
  struct Coefficients {
    bool any_neg = false;
    Scalar c_neg, max_neg, beta_neg, bm_neg;  // A / s0⁻, M₋ = max p over N, 1/λ₋, β₋·offset₋
    double c_pos, max_pos, beta_pos, bm_pos;  // −A / s0⁺, M₊ = max −p over P, 1/λ₊, β₊·offset₊
  };

  /// Calls f(first, count, is_positive) for the entries of a tile that are not negatives: each
  /// ignored row (count = tile width) and the positive entry of each foreground row (count = 1).
  template <typename LD, typename F>
  static void for_non_negatives(const detail::Tile& t, const Eigen::DenseBase<LD>& labels,
                                Index label0, F&& f) {
    for (Index r = 0; r < t.rows; ++r) {
      const auto lab = labels.derived().coeff(label0 + t.row0 + r);
      if (lab == kIgnore) {
        f(r * t.cols, t.cols, false);
        continue;
      }
      const Index col = static_cast<Index>(lab) - 1 - t.col0;
      if (lab > 0 && col >= 0 && col < t.cols) f(r * t.cols + col, Index(1), true);
    }
  }

  /// s = σ(−|x|) into `sp` and p = σ(x) into `pp` for one tile (identical in both passes).
  /// The select is a branch-free loop the compiler vectorises (Eigen 3.4's select is not
  /// vectorised); products with f ∈ {0, 1} are exact.
  static void probabilities(const Scalar* xp, Index n, Scalar* sp, Scalar* pp) {
    Eigen::Map<Vec> e(sp, n);
    e = array::exp_neg_abs(Eigen::Map<const Vec>(xp, n));
    e = e / (Scalar(1) + e);  // exact in both tails
    for (Index i = 0; i < n; ++i) {
      const Scalar f = static_cast<Scalar>(xp[i] >= Scalar(0));
      pp[i] = f * (Scalar(1) - sp[i]) + (Scalar(1) - f) * sp[i];
    }
  }

  /// Pass 1 on one tile: accumulates the softmax sums.
  template <typename LD>
  void sums_tile(const detail::Tile& t, const Scalar* xp, const Eigen::DenseBase<LD>& labels,
                 Index label0, detail::DrPartial& part, double beta_neg, double beta_pos,
                 Scalar* scratch) const {
    const Index n = t.size();
    Scalar* sp = scratch;
    Scalar* pp = scratch + detail::kTileElems;
    probabilities(xp, n, sp, pp);
    // Positives go to the scalar path (double); they and ignored rows are masked with p = −1.
    for_non_negatives(t, labels, label0, [&](Index j, Index count, bool positive) {
      if (positive) {
        const double pj = sigmoid(static_cast<double>(xp[j]));
        part.pos.add(-pj, 0.0, beta_pos);
      }
      std::fill(pp + j, pp + j + count, Scalar(-1));
    });
    Eigen::Map<Vec> e(sp, n), p(pp, n);
    const Scalar tile_max = p.maxCoeff();
    if (tile_max < Scalar(0)) return;  // no negative entry in this tile
    part.neg.raise_to(static_cast<double>(tile_max), beta_neg);
    const Scalar m = static_cast<Scalar>(part.neg.max);
    // The offsets p − m, then the weights e^{(p − m)/λ₋} (argument ≤ 0). Eigen's exp clamps its
    // argument near the bottom of the range and returns ~FLT_MIN/4 there instead of 0, which
    // pass 2's A/s0 (up to τ) turned into a large wrong gradient (−175 where the exact one is
    // ~1e-335): exp_nonpositive rounds into the subnormals.
    p -= m;
    e = array::exp_nonpositive(p * (Scalar(1) / config_.neg_lambda));
    for_non_negatives(t, labels, label0,
                      [&](Index j, Index count, bool) { std::fill(sp + j, sp + j + count, 0); });
    detail::dr_sums(sp, pp, n, part.neg.s0, part.neg.s1);
    part.neg.any = true;
  }

  /// Pass 2 on one tile: the gradient of the tile from its logits (`gp` may alias `xp`).
  template <typename LD>
  void grad_tile(const detail::Tile& t, const Scalar* xp, Scalar* gp,
                 const Eigen::DenseBase<LD>& labels, Index label0, const Coefficients& co,
                 Scalar* scratch) const {
    const Index n = t.size();
    // Positives first, in double, before anything is written.
    Index pos_index[detail::kTileElems];
    Scalar pos_grad[detail::kTileElems];
    Index num_pos = 0;
    for_non_negatives(t, labels, label0, [&](Index j, Index, bool positive) {
      if (!positive) return;
      const double xj = static_cast<double>(xp[j]);
      const double pj = sigmoid(xj), s = sigmoid(-std::abs(xj));
      const double tj = co.beta_pos * (-pj - co.max_pos);  // β₊(k − M₊) in [−β₊, 0]
      pos_index[num_pos] = j;
      // σ'·e^t·(1 + t − β₊·offset₊) (= σ'·w·(1 − (p − D₊)/λ₊)) is bounded by a small multiple
      // of the entry count; A/s0⁺ comes last, so no product overflows before the gradient
      // itself would (A = τ·σ(L·u) may be near the type's max).
      pos_grad[num_pos++] =
          static_cast<Scalar>(s * (1.0 - s) * std::exp(tj) * (1.0 + tj - co.bm_pos) * co.c_pos);
    });
    if (co.any_neg) {
      Scalar* sp = scratch;
      Scalar* pp = scratch + detail::kTileElems;
      probabilities(xp, n, sp, pp);
      Eigen::Map<Vec> s(sp, n), p(pp, n), g(gp, n);
      // t = β₋(p − M₋) ≤ 0 (p ≤ M₋ for every negative: the min only touches entries overwritten
      // below), held at the lowest finite value so that e^t = 0 never meets an infinite factor.
      p = ((p.min(co.max_neg) - co.max_neg) * co.beta_neg)
              .max(std::numeric_limits<Scalar>::lowest());
      // Same order as the positives: the bounded factors first, A/s0⁻ (up to τ) last.
      g = s * (Scalar(1) - s) * array::exp_nonpositive(p) * (Scalar(1) + p - co.bm_neg) * co.c_neg;
    } else {
      std::fill(gp, gp + n, Scalar(0));
    }
    for_non_negatives(t, labels, label0, [&](Index j, Index count, bool) {
      std::fill(gp + j, gp + j + count, Scalar(0));
    });
    for (Index k = 0; k < num_pos; ++k) gp[pos_index[k]] = pos_grad[k];
  }

  Config config_;
};

}  // namespace fgbg
