/// @file isr_p.hpp
/// @brief ISR-P of PISA: importance-based sample reweighting of the positives by their IoU
///        hierarchical local rank (IoU-HLR), with the loss-preserving renormalisation.
///
/// Cao, Chen, Loy, Lin, "Prime Sample Attention in Object Detection", CVPR 2020.
/// Matches `isr_p` of mmdetection's `models/losses/pisa_loss.py` (the authors' release, PR #2626)
/// computed in double precision (reference vectors tests/data/isr_p.json).
///
/// For the positives i (labels 1..C) with class c_i, assigned GT g_i, IoU_i ∈ [0, 1] between the
/// box decoded from the current prediction and its target, detached classification loss ℓ_i and
/// base label weight lw_i:
///
///   n_max   = the largest number of positives of any one class
///   ρ_i     = rank of IoU_i, descending, among the positives of the same (class, GT)
///   κ_i     = IoU_i + (n_max − ρ_i)                    (IoU-HLR key)
///   r_i     = rank of κ_i, descending, among the positives of class c_i
///   u_i     = lw_i · (n_max − r_i) / n_max
///   w_i     = (b + (1 − b) · u_i)^k                     (k = 2, b = 0 by default)
///   w_i    ← w_i · Σ_pos ℓ·lw / Σ_pos ℓ·w              (the positive loss is unchanged)
///
/// Every sort is by (key descending, anchor index ascending), so ties keep anchor order, as the
/// reference's stable sorts do. The κ order is evaluated exactly (rank first, then IoU; an IoU of
/// exactly 1 at rank ρ ties with an IoU of exactly 0 at rank ρ − 1, as κ says), not through a
/// rounded floating-point sum: mmdetection adds in float32, where IoUs closer than ulp(n_max)
/// tie. If Σ ℓ·w = 0 exactly (every positive has ℓ = 0 or w = 0) the positives keep w = lw
/// instead of dividing by zero (mmdetection would produce NaN/inf).
///
/// Range: every finite k ≥ 0 and every finite label weight are accepted, and the weights are the
/// exact ones (a few ulps) whenever those are representable: when base^k, Σℓ·lw or Σℓ·w would
/// overflow or underflow in double (k = FLT_MAX with a label weight above 1, label weights near
/// 1e200 with k = 2, …) they are formed in scaled form, (base/max base)^k · … (see rescale()),
/// instead of giving inf · 0 = NaN. A weight whose exact value exceeds the output type's range
/// throws std::domain_error (before anything is written).
///
/// Output: the new label weight of every anchor: positives get w_i, background rows keep lw,
/// ignored rows (label −1) get 0. The weights are constants for the gradient (computed from
/// detached inputs); feed them to any loss as its per-anchor Weights (Ω).
///
/// Inputs (N anchors, any Eigen vectors): labels (−1 / 0 / 1..C), gt_index (integer id of the
/// assigned GT; read for positives only, must be ≥ 0 and unique across the images of a batch,
/// e.g. offset per image), iou and cls_loss (read for positives only; for a sigmoid head pass the
/// row sum of the per-element loss), label_weights (optional, every entry finite and ≥ 0;
/// default 1). C is
/// always passed explicitly (older mmdetection hard-coded 80). Everything is computed in double; the output has
/// the class's scalar type. `out` may alias `label_weights` (in-place update as in mmdetection).
///
/// Cost: one O(N) pass over the labels plus two sorts of the P positives, O(N + P log P). The
/// sort buffers live in an IsrPWorkspace; once it has seen the largest P, no call allocates.
///
/// @throws std::invalid_argument for a bad config, C < 1, a wrong length, a label outside −1..C,
///         a positive with gt_index < 0, IoU outside [0, 1] or cls_loss < 0, a negative label
///         weight, or an output view of the wrong size; std::domain_error for a non-finite value
///         that is read. Nothing is written then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/checks.hpp"
#include "../core/numerics.hpp"
#include "pisa_common.hpp"

namespace fgbg {

/// Configuration of IsrP; defaults are mmdetection's PISA configs (`isr=dict(k=2, bias=0)`).
template <typename Scalar>
struct IsrPConfig {
  Scalar k = Scalar(2);     ///< exponent of the non-linear map, finite and ≥ 0
  Scalar bias = Scalar(0);  ///< bias b of the map, in [0, 1]
};

/// Reusable sort buffers of IsrP (one entry per positive). Not thread-safe: one per thread.
struct IsrPWorkspace {
  struct Entry {
    Index anchor;      ///< anchor index
    long long gt;      ///< assigned GT id
    double iou;        ///< IoU of the prediction with its target
    double loss;       ///< detached classification loss ℓ
    double lw;         ///< base label weight
    Label cls;         ///< class 1..C
    Index local_rank;  ///< ρ: rank within (class, GT)
    double w;          ///< ISR-P weight (before, then after renormalisation)
    double base;       ///< b + u (1 − b), the base of w = base^k
  };
  std::vector<Entry> entries;

  /// Pre-sizes the buffers for up to `positives` positives.
  void reserve(Index positives) { entries.reserve(static_cast<std::size_t>(positives)); }
};

/// What one IsrP call found (for logging and tests).
struct IsrPResult {
  Index positives = 0;            ///< P
  Index max_class_positives = 0;  ///< n_max
  double ratio = 1.0;    ///< Σℓ·lw / Σℓ·w applied to the positives (1 when guarded)
  bool guarded = false;  ///< true if Σℓ·w was 0 and the positives kept w = lw
};

/// ISR-P weights; see the file comment.
template <typename Scalar>
class IsrP {
 public:
  using Config = IsrPConfig<Scalar>;
  static constexpr const char* kName = "fgbg::IsrP";

  explicit IsrP(const Config& config = {}) : config_(config) {
    detail::require_param(std::isfinite(config.k) && config.k >= Scalar(0), kName, "k",
                          "finite and >= 0", config.k);
    detail::require_param(config.bias >= Scalar(0) && config.bias <= Scalar(1), kName, "bias",
                          "in [0, 1]", config.bias);
  }

  const Config& config() const { return config_; }

  /// Writes the new label weights of all N anchors into `out` (see the file comment).
  template <typename LD, typename GD, typename ID, typename CD, typename WD, typename OD>
  IsrPResult weights(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                     const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                     const Eigen::DenseBase<WD>& label_weights, Index num_classes,
                     const Eigen::DenseBase<OD>& out, IsrPWorkspace& ws) const {
    return run(labels, gt_index, iou, cls_loss, &label_weights.derived(), num_classes, out, ws);
  }

  /// As above with every base label weight 1.
  template <typename LD, typename GD, typename ID, typename CD, typename OD>
  IsrPResult weights(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                     const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                     Index num_classes, const Eigen::DenseBase<OD>& out, IsrPWorkspace& ws) const {
    const detail::None* none = nullptr;
    return run(labels, gt_index, iou, cls_loss, none, num_classes, out, ws);
  }

  /// Convenience overloads with a temporary workspace (allocate on every call).
  template <typename LD, typename GD, typename ID, typename CD, typename WD, typename OD>
  IsrPResult weights(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                     const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                     const Eigen::DenseBase<WD>& label_weights, Index num_classes,
                     const Eigen::DenseBase<OD>& out) const {
    IsrPWorkspace ws;
    return weights(labels, gt_index, iou, cls_loss, label_weights, num_classes, out, ws);
  }
  template <typename LD, typename GD, typename ID, typename CD, typename OD>
  IsrPResult weights(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                     const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                     Index num_classes, const Eigen::DenseBase<OD>& out) const {
    IsrPWorkspace ws;
    return weights(labels, gt_index, iou, cls_loss, num_classes, out, ws);
  }

 private:
  using Entry = IsrPWorkspace::Entry;

  template <typename LW>
  static double lw_at(const LW* lw, Index i) {
    if constexpr (!detail::kGiven<LW>) {
      (void)lw;
      (void)i;
      return 1.0;
    } else {
      return static_cast<double>(lw->coeff(i));
    }
  }

  /// a before b in κ-descending order? (exact; see the file comment). Same class assumed.
  static bool kappa_before(const Entry& a, const Entry& b) {
    if (a.local_rank == b.local_rank) {
      if (a.iou != b.iou) return a.iou > b.iou;
    } else if (a.local_rank + 1 == b.local_rank) {
      // κ_a − κ_b = 1 + IoU_a − IoU_b ≥ 0, zero only for IoU_a = 0, IoU_b = 1.
      if (!(a.iou == 0.0 && b.iou == 1.0)) return true;
    } else if (b.local_rank + 1 == a.local_rank) {
      if (!(b.iou == 0.0 && a.iou == 1.0)) return false;
    } else {
      return a.local_rank < b.local_rank;
    }
    return a.anchor < b.anchor;
  }

  template <typename LD, typename GD, typename ID, typename CD, typename LW, typename OD>
  IsrPResult run(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                 const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                 const LW* lw, Index num_classes, const Eigen::DenseBase<OD>& out_,
                 IsrPWorkspace& ws) const {
    static_assert(std::is_integral<typename GD::Scalar>::value,
                  "fgbg::IsrP: gt_index must be an integer array");
    static_assert(std::is_same<typename OD::Scalar, Scalar>::value,
                  "fgbg::IsrP: the output weights must have the class's scalar type");
    // ---- validation: nothing is written before it completes ----
    check_inputs(labels, gt_index, iou, cls_loss, lw, num_classes, out_);
    std::vector<Entry>& e = ws.entries;
    gather_positives(labels, gt_index, iou, cls_loss, lw, num_classes, e);

    IsrPResult result;
    result.positives = static_cast<Index>(e.size());
    auto& out = detail::pisa_prepare_vector(out_, labels.size());

    // ---- IoU-HLR ranks, weights, loss-preserving normalisation ----
    if (!e.empty()) {
      result.max_class_positives = assign_local_ranks(e);
      const LossSums sums = weigh_by_global_rank(e, result.max_class_positives);
      normalise(e, sums, result);
      check_representable(e, result);
    }

    // ---- write: background keeps lw, ignored 0, positives w·ratio ----
    write_weights(labels, lw, e, result, out);
    return result;
  }

  /// The argument checks of run() (shapes, value ranges of the side inputs, output shape).
  template <typename LD, typename GD, typename ID, typename CD, typename LW, typename OD>
  static void check_inputs(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
                           const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<CD>& cls_loss,
                           const LW* lw, Index num_classes, const Eigen::DenseBase<OD>& out_) {
    if (num_classes < 1)
      detail::throw_invalid(kName, "num_classes must be >= 1, got ", num_classes);
    const Index n = labels.size();
    detail::check_vector(kName, "labels", labels, n);
    static_assert(std::is_integral<typename LD::Scalar>::value,
                  "fgbg::IsrP: labels must be an integer array (-1 / 0 / 1..C)");
    detail::pisa_check_input_vector(kName, "gt_index", gt_index, n);
    detail::pisa_check_input_vector(kName, "iou", iou, n);
    detail::pisa_check_input_vector(kName, "cls_loss", cls_loss, n);
    if constexpr (detail::kGiven<LW>) {
      detail::pisa_check_input_vector(kName, "label_weights", *lw, n);
      detail::pisa_check_nonnegative(kName, "label_weights", *lw);
    }
    detail::pisa_check_output_vector(kName, "weights", out_, n);
  }

  /// One pass over the labels: range check, and gather (and check) the positives into `e`.
  template <typename LD, typename GD, typename ID, typename CD, typename LW>
  static void gather_positives(const Eigen::DenseBase<LD>& labels,
                               const Eigen::DenseBase<GD>& gt_index,
                               const Eigen::DenseBase<ID>& iou,
                               const Eigen::DenseBase<CD>& cls_loss, const LW* lw,
                               Index num_classes, std::vector<Entry>& e) {
    e.clear();
    detail::pisa_scan_labels(labels, [&](Index i, auto l) {
      if (l < -1 || l > num_classes)
        detail::pisa_bad_label(kName, i, static_cast<long long>(l), num_classes);
      const long long g = static_cast<long long>(gt_index.derived().coeff(i));
      if (g < 0)
        detail::throw_invalid(kName, "gt_index(", i, ") = ", g,
                              " must be >= 0 for a positive anchor");
      const double v = static_cast<double>(iou.derived().coeff(i));
      detail::pisa_check_value(kName, "iou", i, v, 0.0, 1.0, "in [0, 1]", "a positive anchor");
      const double li = static_cast<double>(cls_loss.derived().coeff(i));
      detail::pisa_check_value(kName, "cls_loss", i, li, 0.0, -1.0, ">= 0", "a positive anchor");
      e.push_back(Entry{i, g, v, li, lw_at(lw, i), static_cast<Label>(l), 0, 0.0, 0.0});
    });
  }

  /// Sorts `e` by (class, GT, IoU desc, anchor asc) and sets the local rank ρ within each
  /// (class, GT). Returns n_max, the largest number of positives of one class.
  static Index assign_local_ranks(std::vector<Entry>& e) {
    std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) {
      if (a.cls != b.cls) return a.cls < b.cls;
      if (a.gt != b.gt) return a.gt < b.gt;
      if (a.iou != b.iou) return a.iou > b.iou;
      return a.anchor < b.anchor;
    });
    Index n_max = 0;
    for (std::size_t i = 0, class_begin = 0; i < e.size(); ++i) {
      if (i > 0 && e[i].cls == e[i - 1].cls && e[i].gt == e[i - 1].gt)
        e[i].local_rank = e[i - 1].local_rank + 1;
      if (i > 0 && e[i].cls != e[i - 1].cls) class_begin = i;
      n_max = std::max<Index>(n_max, static_cast<Index>(i - class_begin + 1));
    }
    return n_max;
  }

  /// The sums of the loss-preserving ratio Σℓ·lw / Σℓ·w.
  struct LossSums {
    double num = 0.0;      ///< Σℓ·lw
    double den = 0.0;      ///< Σℓ·w
    bool den_zero = true;  ///< Σℓ·w = 0 exactly: every term has ℓ = 0 or w = 0
  };

  /// Sorts `e` by (class, κ desc, anchor asc), gives each positive its global rank r within its
  /// class and its weight w = (b + u (1 − b))^k, u = lw · (n_max − r) / n_max; returns the sums.
  LossSums weigh_by_global_rank(std::vector<Entry>& e, Index n_max) const {
    std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) {
      if (a.cls != b.cls) return a.cls < b.cls;
      return kappa_before(a, b);
    });
    const double b = static_cast<double>(config_.bias), k = static_cast<double>(config_.k);
    const double nm = static_cast<double>(n_max);
    LossSums sums;
    Index r = 0;
    for (std::size_t i = 0; i < e.size(); ++i) {
      r = (i > 0 && e[i].cls == e[i - 1].cls) ? r + 1 : 0;
      const double u = e[i].lw * ((nm - static_cast<double>(r)) / nm);
      const double base = b + u * (1.0 - b);
      e[i].base = base;
      e[i].w = pow_fast(base, k, [&] { return std::pow(base, k); });
      sums.num += e[i].loss * e[i].lw;
      sums.den += e[i].loss * e[i].w;
      sums.den_zero = sums.den_zero && (e[i].loss == 0.0 || (base == 0.0 && k > 0.0));
    }
    return sums;
  }

  /// Applies the ratio to the weights (result.ratio, result.guarded): none when guarded, the
  /// direct product when nothing overflowed or underflowed, else rescale().
  void normalise(std::vector<Entry>& e, const LossSums& sums, IsrPResult& result) const {
    const double k = static_cast<double>(config_.k);
    const double ratio = sums.num / sums.den;
    result.guarded = sums.den_zero;
    // The direct form is exact when nothing overflowed or underflowed: Σℓ·lw and Σℓ·w finite
    // and normal, ratio finite. Otherwise (a large k or label weight: w = base^k = inf, or
    // every w underflowing) the weights are formed in scaled form (rescale()).
    const bool direct = std::isfinite(sums.num) && std::isfinite(sums.den) &&
                        sums.den >= std::numeric_limits<double>::min() && std::isfinite(ratio) &&
                        std::isfinite(ratio * max_w(e));
    if (result.guarded) {
      result.ratio = 1.0;
    } else if (direct) {
      result.ratio = ratio;
      for (Entry& en : e) en.w *= ratio;
    } else {
      result.ratio = rescale(e, k);
    }
  }

  /// Throws std::domain_error if a final weight overflows double, or (float) exceeds FLT_MAX.
  static void check_representable(const std::vector<Entry>& e, const IsrPResult& result) {
    for (const Entry& en : e)
      if (!std::isfinite(en.w))
        throw std::domain_error(detail::concat(
            kName, ": the ISR-P weight of anchor ", en.anchor,
            " overflows double (its exact value w_i · Σℓ·lw / Σℓ·w is not representable)"));
    if constexpr (std::is_same<Scalar, float>::value) {
      for (const Entry& en : e) {
        const double v = result.guarded ? en.lw : en.w;
        if (!(v <= static_cast<double>(std::numeric_limits<float>::max())))
          throw std::domain_error(detail::concat(kName, ": the ISR-P weight of anchor ", en.anchor,
                                                 " is ", v, ", beyond FLT_MAX"));
      }
    }
  }

  /// Writes every anchor's weight: background keeps lw, ignored 0, positives their final w (lw
  /// when guarded). Reads of lw happen before the write of the same anchor, so `out` may alias
  /// label_weights.
  template <typename LD, typename LW, typename O>
  static void write_weights(const Eigen::DenseBase<LD>& labels, const LW* lw,
                            const std::vector<Entry>& e, const IsrPResult& result, O& out) {
    const Index n = labels.size();
    for (Index i = 0; i < n; ++i) {  // branch-free: ignored anchors are not predictable
      const Scalar keep = labels.derived().coeff(i) != kIgnore ? Scalar(1) : Scalar(0);
      if constexpr (!detail::kGiven<LW>)
        out.coeffRef(i) = keep;
      else
        out.coeffRef(i) = keep * static_cast<Scalar>(lw->coeff(i));
    }
    for (const Entry& en : e)
      out.coeffRef(en.anchor) = static_cast<Scalar>(result.guarded ? en.lw : en.w);
  }

  static double max_w(const std::vector<Entry>& e) {
    double m = 0.0;
    for (const Entry& en : e) m = std::max(m, en.w);
    return m;
  }

  /// Final weights w_i · Σℓ·lw / Σℓ·w without forming base^k, Σℓ·lw or Σℓ·w themselves (they
  /// overflow or underflow for a large k or label weight). With B the largest base among the
  /// positives with ℓ > 0, q_i = (base_i / B)^k and j the index of the largest term ℓ_j q_j:
  ///   w_i · Σℓ·lw / Σℓ·w = q_i · F,   F = Σℓ·lw / (ℓ_j · Σ_m (ℓ_m / ℓ_j) q_m),
  /// where the sum is in [1, P] and F is formed through logs of moderate magnitude. q_i comes
  /// from pow (a few ulps) while it is a normal number, else q_i · F is exp(k ln(base_i / B) +
  /// ln F), so a q_i below the double range still gives its (representable) weight. Nothing
  /// overflows unless the final weight itself does (then inf, rejected by the caller). Writes
  /// the final weights into e[i].w; returns the ratio Σℓ·lw / Σℓ·w (which may be 0 or inf: only
  /// the weights are promised).
  static double rescale(std::vector<Entry>& e, double k) {
    const double ninf = -std::numeric_limits<double>::infinity();
    const double tiny = std::numeric_limits<double>::min();
    // Σℓ·lw, directly when it fits, else as a log-sum-exp.
    double num = 0.0, mn = ninf;
    for (const Entry& en : e) {
      num += en.loss * en.lw;
      mn = std::max(mn, std::log(en.loss) + std::log(en.lw));
    }
    if (mn == ninf) {  // Σℓ·lw = 0: every final weight is exactly 0
      for (Entry& en : e) en.w = 0.0;
      return 0.0;
    }
    double log_num;
    if (std::isfinite(num) && num >= tiny) {
      log_num = std::log(num);
    } else {
      double sn = 0.0;
      for (const Entry& en : e) sn += std::exp(std::log(en.loss) + std::log(en.lw) - mn);
      log_num = mn + std::log(sn);
    }
    // B and the log of q_i (k ln(base_i / B), 0 for k = 0: then every w = 1).
    double bmax = 0.0;
    for (const Entry& en : e)
      if (en.loss > 0.0) bmax = std::max(bmax, en.base);
    auto log_q = [&](const Entry& en) { return k == 0.0 ? 0.0 : k * std::log(en.base / bmax); };
    auto q_of = [&](const Entry& en) { return k == 0.0 ? 1.0 : std::pow(en.base / bmax, k); };
    // j: the largest term ln ℓ + ln q (not guarded, so some term is finite).
    std::size_t j = 0;
    double tj = ninf;
    for (std::size_t i = 0; i < e.size(); ++i) {
      if (!(e[i].loss > 0.0)) continue;
      const double t = std::log(e[i].loss) + log_q(e[i]);
      if (t > tj) tj = t, j = i;
    }
    const double lj = e[j].loss, log_lj = std::log(lj), log_qj = log_q(e[j]);
    double sd = 0.0;  // Σ (ℓ_m / ℓ_j) (q_m / q_j), the j term exactly 1
    for (const Entry& en : e) {
      if (!(en.loss > 0.0)) continue;
      const double r = en.loss / lj, q = q_of(en);
      const double qj = q_of(e[j]);
      const double direct = r * (q / qj);
      sd += (std::isfinite(direct) && q >= tiny && qj >= tiny && r >= tiny)
                ? direct
                : std::exp(std::log(en.loss) - log_lj + log_q(en) - log_qj);
    }
    // ln F' = ln Σℓ·lw − ln ℓ_j − ln q_j − ln sd; the final weight is (q_i / q_j)·… = q_i · F.
    const double log_f = log_num - log_lj - log_qj - std::log(sd);
    const double f = std::exp(log_f);
    for (Entry& en : e) {
      const double q = q_of(en);
      const double w = q * f;
      en.w = (q >= tiny && std::isfinite(f) && f >= tiny && std::isfinite(w))
                 ? w
                 : std::exp(log_q(en) + log_f);
    }
    return k == 0.0 ? f : std::exp(log_f - k * std::log(bmax));
  }

  Config config_;
};

}  // namespace fgbg
