/// @file carl.hpp
/// @brief CARL of PISA: the classification-aware regression loss, with its gradients w.r.t. the
///        classification logits and w.r.t. the per-positive regression loss.
///
/// Cao, Chen, Loy, Lin, "Prime Sample Attention in Object Detection", CVPR 2020.
/// Matches `carl_loss` of mmdetection's `models/losses/pisa_loss.py` (the authors' release) and
/// its autograd gradients, in double precision (reference vectors tests/data/carl.json).
///
/// For the P positives i (labels 1..C) with regression loss ℓ_i (the head's per-coordinate
/// regression loss summed over the 4 coordinates, regression weights not applied):
///
///   s_i = σ(x_{i, c_i − 1})         (sigmoid head, N × C logits)
///   s_i = softmax(x_i)_{c_i}        (softmax head, N × (C+1) logits, column 0 background)
///   u_i = (b + (1 − b) s_i)^k       (k = 1, b = 0.2 by default)
///   ŵ_i = P · u_i / Σ_j u_j
///   L   = Σ_i ŵ_i ℓ_i / A
///
/// The score s is not detached, and the normaliser Σ u is differentiated too (as in the
/// reference). With ℓ̄ = Σ_i ŵ_i ℓ_i / P and ρ_i = (1 − b) s_i / (b + (1 − b) s_i) ∈ [0, 1]:
///
///   ∂L/∂ℓ_i            = ŵ_i / A
///   ∂L/∂s_i            = (ŵ_i / A) (ℓ_i − ℓ̄) k (1 − b) / (b + (1 − b) s_i)
///   sigmoid: ∂L/∂x_{i,c_i−1} = (ŵ_i / A) (ℓ_i − ℓ̄) k ρ_i (1 − s_i)        (other columns 0)
///   softmax: ∂L/∂x_{i,c}     = (ŵ_i / A) (ℓ_i − ℓ̄) k ρ_i (1[c = c_i] − p_{i,c})
///
/// Numerics: for b > 0, u ≥ b^k and Σu is summed directly (unless b^k would underflow); for
/// b = 0, u is handled in the log domain (log u = k·log s, with log s from log-sigmoid or x −
/// logsumexp) and ŵ = P·exp(log u_i − logsumexp_j log u_j), so saturated scores stay finite where
/// the reference returns NaN once every s underflows to 0 (here ŵ is the limit). s and 1 − s come
/// from one exp(−|x|) for sigmoid heads. Per-positive arithmetic and sums are in double.
/// Softmax rows (log-sum-exp and gradient) are evaluated column by column in double, so results
/// are bit-identical for every layout of the logits (row- or column-major, strided Map, block)
/// and every alignment. Every finite reg_loss ≥ 0 is accepted up to DBL_MAX: the weighted sums
/// of ℓ are scaled by a power of two when ℓ > 2^896, so ℓ̄, the value and the gradient stay
/// finite wherever the exact ones are (before, Σ u ℓ overflowed and the gradient was −inf).
///
/// Normalisation: A from the Normalizer (elements are rows): `num_positives` (default,
/// max(1, P): mmdetection's PISA RetinaNet passes the number of positives), `mean` (max(1,
/// number of non-ignored rows): the R-CNN head's default, the number of sampled RoIs),
/// `avg_factor(A)`, `sum`. CARL is an extra loss term added to the usual classification and
/// regression losses. It assumes a per-coordinate regression loss such as smooth L1; IoU-type
/// losses blew up in mmdetection (mmdetection#3568).
///
/// Outputs: `grad` (N × cols, zero outside the positive rows), `grad_reg_loss` (N, ŵ_i/A at
/// positives, 0 elsewhere), or `weights()` for ŵ. `value_and_accumulate_grad` adds into existing
/// buffers and touches only the positive rows, so CARL can be added to another loss's gradient
/// without an N × C pass. No positives (or N = 0): value 0, zero gradients. A trailing
/// `fgbg::anchor_losses(a)` (core/loss_output.hpp; N entries, the loss's scalar type) receives
/// a_i = ŵ_i ℓ_i at the positives and 0 elsewhere, so that the value is Σ a / A (written by
/// `value()` too, and overwritten, not added to, by `value_and_accumulate_grad`).
///
/// Only the values CARL reads are checked: labels (all rows), and at the positive rows the
/// logits (the class entry for sigmoid heads, the whole row for softmax heads) and reg_loss
/// (finite and ≥ 0). No allocation.
///
/// @throws std::invalid_argument for a bad config, shape, label, reg_loss < 0, normaliser,
///         output shape, or an output sharing memory with an input (`grad` with `logits`,
///         `grad_reg_loss` with `reg_loss`; both the writing and the accumulating calls);
///         std::domain_error for a non-finite value that is read. Nothing is
///         written then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/reduction.hpp"
#include "pisa_common.hpp"

namespace fgbg {

/// Configuration of CarlLoss; defaults are mmdetection's PISA RetinaNet ones.
template <typename Scalar>
struct CarlLossConfig {
  Scalar k = Scalar(1);       ///< exponent, finite and > 0
  Scalar bias = Scalar(0.2);  ///< bias b, in [0, 1)
  bool sigmoid = true;        ///< true: N × C sigmoid logits; false: N × (C+1) softmax logits
  Normalizer normalizer = Normalizer::num_positives();
};

/// The call signature of CarlLoss: the regression loss as input, two outputs, no weights, and
/// value_and_accumulate_grad.
struct CarlSignature : DefaultSignature {
  static constexpr int inputs = 1;
  static constexpr int outputs = 2;
  static constexpr CallOption option = CallOption::none;
  static constexpr bool accumulate = true;
  static constexpr LossOutputs losses = LossOutputs::anchor;  ///< ŵ_i ℓ_i per anchor
};

/// CARL loss; see the file comment.
template <typename Scalar>
class CarlLoss : public DenseLoss<CarlLoss<Scalar>, Scalar, CarlSignature> {
 public:
  using Config = CarlLossConfig<Scalar>;
  static constexpr const char* kName = "fgbg::CarlLoss";

  explicit CarlLoss(const Config& config = {}) : config_(config) {
    detail::require_param(std::isfinite(config.k) && config.k > Scalar(0), kName, "k",
                          "finite and > 0", config.k);
    detail::require_param(config.bias >= Scalar(0) && config.bias < Scalar(1), kName, "bias",
                          "in [0, 1)", config.bias);
    config_.normalizer.validate(kName);
    // Direct sums are safe when u ≥ b^k stays far from underflow.
    const double b = static_cast<double>(config.bias), k = static_cast<double>(config.k);
    direct_ = b > 0.0 && k * std::log(b) > -600.0;
  }

  const Config& config() const { return config_; }

  /// See DenseLoss: `value(logits, labels, reg_loss [, normalizer])`, `value_and_grad(logits,
  /// labels, reg_loss, grad, grad_reg_loss [, normalizer])` (writes ∂L/∂logits, N × cols, and
  /// ∂L/∂reg_loss, N), and `value_and_accumulate_grad` with the same arguments, which adds both
  /// into the outputs (which must have their shapes), touching only the positive rows.
  template <typename Call>
  double run(Call& c) const {
    return compute<Call::kAdd>(c.x, c.labels, std::get<0>(c.in), *c.normalizer, std::get<0>(c.out),
                               std::get<1>(c.out), c.losses);
  }

  /// Writes the CARL weights ŵ (N; 0 outside the positives). reg_loss is not needed.
  template <typename XD, typename LD, typename OD>
  void weights(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
               const Eigen::DenseBase<OD>& out_) const {
    static_assert(std::is_same<typename OD::Scalar, Scalar>::value,
                  "fgbg::CarlLoss: the weights must have the loss's scalar type");
    const Index c = check_head(logits);
    detail::pisa_check_output_vector(kName, "weights", out_, logits.rows());
    const auto no_reg = [](Index) { return 0.0; };
    check_rows(logits, labels, c, no_reg, false);
    const Sums s = sums(logits, labels, [](Index) { return 0.0; });
    auto& out = detail::pisa_prepare_vector(out_, logits.rows());
    out.setZero();
    detail::pisa_scan_labels(labels, [&](Index i, auto l) {
      out.coeffRef(i) =
          static_cast<Scalar>(s.weight(evaluate(logits, i, static_cast<Label>(l)).key));
    });
  }

 private:
  /// Σu and Σuℓ. Direct mode (b > 0: u ≥ b^k cannot underflow) sums u itself; log mode
  /// (b = 0) streams a log-sum-exp of log u, so ŵ stays finite when every score underflows.
  /// In log mode the key is log(b + (1 − b)s) and k multiplies only differences of keys
  /// (k·(key − m) ≤ 0), so a huge k (k·log base = −inf) still gives finite weights.
  struct Sums {
    bool direct = true;
    double k = 1;  ///< the exponent, applied to key differences in log mode
    double p = 0;  ///< number of positives
    /// s0 = Σ u and s1 = Σ u ℓ: plain sums in direct mode, streamed relative to the running
    /// maximum of log u (β = k) in log mode.
    detail::StreamingExpSums<false> sum;
    /// ℓ is summed as ℓ · scale: 1, or 2^-128 when some ℓ exceeds 2^896 (then Σ u ℓ could
    /// overflow although ℓ̄ ≤ max ℓ is finite; a power of two keeps every large ℓ exact).
    double scale = 1.0;
    void add(double key, double l) {
      l *= scale;
      p += 1;
      if (direct) {
        sum.s0 += key;
        sum.s1 += key * l;
      } else {
        sum.add(key, l, k);
      }
    }
    double weight(double key) const {  ///< ŵ from u (direct) or log u
      return direct ? p * key / sum.s0 : p * std::exp(k * (key - sum.max)) / sum.s0;
    }
    double mean_loss() const { return sum.s1 / sum.s0 / scale; }  ///< ℓ̄ (≤ max ℓ: finite)
  };

  /// What CARL needs of one positive row: s, 1 − s (sigmoid heads), the row's log-sum-exp
  /// (softmax heads) and the key (u in direct mode, log u / k in log mode).
  struct Positive {
    double s = 0, one_minus_s = 0, lse = 0, key = 0;
  };

  bool direct_mode() const { return direct_; }

  template <typename XD>
  Positive evaluate(const Eigen::DenseBase<XD>& x, Index i, Label l) const {
    const double b = static_cast<double>(config_.bias), k = static_cast<double>(config_.k);
    Positive r;
    double log_s = 0;
    if (config_.sigmoid) {
      const double xv = static_cast<double>(x.derived().coeff(i, l - 1));
      const double e = std::exp(-std::abs(xv)), inv = 1.0 / (1.0 + e);
      r.s = xv >= 0 ? inv : e * inv;
      r.one_minus_s = xv >= 0 ? e * inv : inv;
      if (!direct_mode()) log_s = -(std::max(-xv, 0.0) + std::log1p(e));  // log σ(x)
    } else {
      r.lse = row_lse(x, i);
      // A row spanning more than DBL_MAX (x_l = −DBL_MAX beside 4.5e307) makes x_l − lse −inf,
      // and the log-domain weights then formed (−inf) − (−inf) = NaN. Held at the lowest
      // finite value: such an entry's share is 0 beside any other positive, and a lone
      // positive still gets the whole weight, as in the exact limit.
      log_s = std::max(static_cast<double>(x.derived().coeff(i, l)) - r.lse,
                       std::numeric_limits<double>::lowest());
      r.s = std::exp(log_s);
    }
    if (direct_mode()) {
      const double base = b + (1.0 - b) * r.s;
      r.key = pow_fast(base, k, [&] { return std::pow(base, k); });
    } else if (b == 0.0) {
      r.key = log_s;  // log u / k = log s, finite however small s is
    } else {
      r.key = std::log(b + (1.0 - b) * r.s);  // b^k would underflow: stay in logs
    }
    return r;
  }

  /// Number of classes C of the logits; throws for a bad head shape.
  template <typename XD>
  Index check_head(const Eigen::DenseBase<XD>& x) const {
    static_assert(kStorableAs<typename XD::Scalar, Scalar>,
                  "fgbg::CarlLoss: the logits must have the loss's scalar type (or Eigen::half / "
                  "Eigen::bfloat16 for a float loss)");
    if (config_.sigmoid) {
      if (x.cols() < 1) detail::throw_invalid(kName, "sigmoid logits must have C >= 1 columns");
      return x.cols();
    }
    if (x.cols() < 2)
      detail::throw_invalid(kName,
                            "softmax logits must have C+1 >= 2 columns (column 0 is background), "
                            "got ",
                            x.cols());
    return x.cols() - 1;
  }

  /// One pass: labels in −1..C, and at the positive rows the logits read and reg_loss (finite,
  /// ≥ 0). Returns the label counts.
  template <typename XD, typename LD, typename RegAt>
  LabelStats check_rows(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, Index c,
                        const RegAt& reg_at, bool check_reg) const {
    static_assert(std::is_integral<typename LD::Scalar>::value,
                  "fgbg::CarlLoss: labels must be an integer array (-1 / 0 / 1..C)");
    const Index n = x.rows();
    detail::check_vector(kName, "labels", labels, n);
    LabelStats st;
    st.anchors = n;
    const Index ignored = detail::pisa_scan_labels(labels, [&](Index i, auto l) {
      if (l < -1 || l > c) detail::pisa_bad_label(kName, i, static_cast<long long>(l), c);
      ++st.positives;
      if (check_reg)
        detail::pisa_check_value(kName, "reg_loss", i, reg_at(i), 0.0, -1.0, ">= 0",
                                 "a positive anchor");
      if (config_.sigmoid) {
        const Scalar v = static_cast<Scalar>(x.derived().coeff(i, l - 1));
        if (!std::isfinite(v)) detail::throw_non_finite(kName, "logits", i, l - 1, double(v));
      } else if (!((x.derived().row(i).array().template cast<Scalar>() * Scalar(0)).sum() ==
                   Scalar(0))) {
        for (Index col = 0; col < x.cols(); ++col) {
          const Scalar v = static_cast<Scalar>(x.derived().coeff(i, col));
          if (!std::isfinite(v)) detail::throw_non_finite(kName, "logits", i, col, double(v));
        }
      }
    });
    st.valid = n - ignored;
    st.background = st.valid - st.positives;
    return st;
  }

  /// log-sum-exp of a softmax row, in double, column by column in ascending order: the same
  /// operations, hence the same bits, whatever the layout (row- or column-major, strided Map,
  /// block) and alignment of the logits. (Eigen's vectorised row reduction sums contiguous rows
  /// in another order than strided ones, and its packet exp differs from std::exp.) Only
  /// positive rows are evaluated, so the scalar loop costs nothing measurable.
  template <typename XD>
  static double row_lse(const Eigen::DenseBase<XD>& x, Index i) {
    const auto& xd = x.derived();
    const Index cols = xd.cols();
    double m = -std::numeric_limits<double>::infinity();
    for (Index col = 0; col < cols; ++col) m = std::max(m, static_cast<double>(xd.coeff(i, col)));
    double sum = 0.0;
    for (Index col = 0; col < cols; ++col)
      sum += std::exp(static_cast<double>(xd.coeff(i, col)) - m);
    return m + std::log(sum);
  }

  template <typename XD, typename LD, typename RegAt>
  Sums sums(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
            const RegAt& reg_at) const {
    Sums s;
    s.direct = direct_mode();
    s.k = static_cast<double>(config_.k);
    double lmax = 0.0;
    detail::pisa_scan_labels(labels, [&](Index i, auto) { lmax = std::max(lmax, reg_at(i)); });
    if (lmax > 0x1p896) s.scale = 0x1p-128;
    detail::pisa_scan_labels(labels, [&](Index i, auto l) {
      s.add(evaluate(x, i, static_cast<Label>(l)).key, reg_at(i));
    });
    return s;
  }

  template <bool kAccumulate, typename XD, typename LD, typename RD, typename GD, typename GR>
  double compute(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                 const Eigen::DenseBase<RD>& reg_loss, const Normalizer& normalizer, GD& grad_,
                 GR& grad_reg_, detail::LossSink<Scalar>& losses) const {
    constexpr bool kGrad = detail::kGiven<GD>;
    // ---- validation: nothing is written before it completes ----
    const Index n = x.rows();
    const Index c = check_head(x);
    detail::pisa_check_input_vector(kName, "reg_loss", reg_loss, n);
    normalizer.validate(kName);
    if constexpr (kGrad) {
      static_assert(kStorableAs<typename GD::Scalar, Scalar> &&
                        std::is_same<typename GR::Scalar, Scalar>::value,
                    "fgbg::CarlLoss: the gradients must have the loss's scalar type (grad may "
                    "also be Eigen::half / Eigen::bfloat16 for a float loss)");
      if constexpr (kAccumulate) {
        detail::check_shape(kName, "grad", grad_.rows(), grad_.cols(), n, x.cols());
        const bool ok = (grad_reg_.cols() == 1 || grad_reg_.rows() == 1) && grad_reg_.size() == n;
        if (!ok)
          detail::throw_invalid(kName, "grad_reg_loss must be a vector of ", n, " entries, got ",
                                grad_reg_.rows(), " x ", grad_reg_.cols());
      } else {
        detail::check_output(kName, "grad", grad_, n, x.cols());
        detail::pisa_check_output_vector(kName, "grad_reg_loss", grad_reg_, n);
      }
      // Both paths read the inputs while writing the outputs: no output may share their memory.
      detail::check_no_alias(kName, x, grad_);
      detail::pisa_check_no_alias(kName, "reg_loss", "grad_reg_loss", reg_loss, grad_reg_);
    }
    auto reg_at = [&](Index i) { return static_cast<double>(reg_loss.derived().coeff(i)); };
    const LabelStats stats = check_rows(x, labels, c, reg_at, true);
    const double a = normalizer.resolve(stats, 1);
    losses.check(kName, n, 1,
                 {{detail::MemView::of(x), "logits"}, {detail::MemView::of(reg_loss), "reg_loss"}});
    if constexpr (kGrad) {
      losses.check_apart(kName, detail::MemView::of(grad_), "grad");
      losses.check_apart(kName, detail::MemView::of(grad_reg_), "grad_reg_loss");
    }

    // ---- pass 1: Σu and Σuℓ (streaming, log domain) ----
    const Sums s = sums(x, labels, reg_at);
    // p · ℓ̄ / a; if p · ℓ̄ overflows (ℓ̄ near DBL_MAX), ℓ̄ · (p / a), finite when the value is.
    double value = s.p > 0 ? s.p * s.mean_loss() / a : 0.0;
    if (!std::isfinite(value)) value = s.mean_loss() * (s.p / a);
    // anchor_losses: ŵ_i ℓ_i at the positives (formed in double, rounded once), 0 elsewhere, so
    // the value is their sum over A; written by the positives' pass below (value(): its own).
    if (losses.given()) {
      losses.prepare(n, 1);
      losses.zero_anchors(0, n);
    }
    if constexpr (!kGrad) {
      if (losses.given())
        detail::pisa_scan_labels(labels, [&](Index i, auto l) {
          losses.set_anchor(i, s.weight(evaluate(x, i, static_cast<Label>(l)).key) * reg_at(i));
        });
      return value;
    } else {
      // ---- pass 2: gradients of the positive rows ----
      auto& grad = grad_;
      if constexpr (!kAccumulate) {
        detail::prepare_output(kName, "grad", grad, n, x.cols());
        grad.derived().setZero();
      }
      auto& grad_reg =
          kAccumulate ? grad_reg_.derived() : detail::pisa_prepare_vector(grad_reg_, n);
      if constexpr (!kAccumulate) grad_reg.setZero();
      if (s.p == 0) return value;
      const double b = static_cast<double>(config_.bias), k = static_cast<double>(config_.k);
      const double lbar = s.mean_loss();
      detail::pisa_scan_labels(labels, [&](Index i, auto label) {
        const Label l = static_cast<Label>(label);
        const Positive q = evaluate(x, i, l);
        const double wi = s.weight(q.key);
        const double rho = b == 0.0 ? 1.0 : (1.0 - b) * q.s / (b + (1.0 - b) * q.s);
        // ℓ_i − ℓ̄ is finite (both in [0, DBL_MAX]); if the product overflows in this order
        // (wi / a > 1 with |ℓ_i − ℓ̄| near DBL_MAX), regroup it, finite when g is.
        double g = wi / a * (reg_at(i) - lbar) * k * rho;
        if (!std::isfinite(g)) g = (reg_at(i) - lbar) * ((wi / a) * (k * rho));
        grad_reg.coeffRef(i) += static_cast<Scalar>(wi / a);
        if (losses.given()) losses.set_anchor(i, wi * reg_at(i));
        if (config_.sigmoid) {
          add_to(grad.derived().coeffRef(i, l - 1), g * q.one_minus_s);
        } else {
          // ∂/∂x_c = g (1[c = l] − p_c), p_c = exp(x_c − lse), element by element in double
          // (layout-independent bits, see row_lse).
          auto& gd = grad.derived();
          for (Index col = 0; col < x.cols(); ++col) {
            const double p = std::exp(static_cast<double>(x.derived().coeff(i, col)) - q.lse);
            const double d = col == l ? g * (1.0 - p) : -g * p;
            add_to(gd.coeffRef(i, col), d);
          }
        }
      });
      return value;
    }
  }

  /// Adds d to a gradient element: in the loss's scalar type as `+=`, or for a half-precision
  /// gradient in float, rounded once to the half type.
  template <typename G>
  static void add_to(G& ref, double d) {
    if constexpr (std::is_same<G, Scalar>::value)
      ref += static_cast<Scalar>(d);
    else
      ref = static_cast<G>(static_cast<float>(ref) + static_cast<float>(d));
  }

  Config config_;
  bool direct_ = true;  ///< sum u directly (b > 0) or in the log domain
};

}  // namespace fgbg
