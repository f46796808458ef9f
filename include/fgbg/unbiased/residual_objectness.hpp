/// @file residual_objectness.hpp
/// @brief Residual objectness (ResObj): a cascade of objectness logits summed through residual
///        connections carries the foreground–background imbalance, so the classifier is trained
///        on positive anchors only. Loss value, gradients of every stage logit and of the class
///        logits in one pass, with the EMA normaliser in an explicit state object; and the
///        inference scores σ(objectness)·σ(class).
///
/// J. Chen et al., "Residual Objectness for Imbalance Reduction", arXiv 1908.09075
/// (2019); Pattern Recognition 130:108781 (2022). Matches chenjoya/resobj @ 15da804
/// (resobj/resobj_retinanet.py, the detectron2 port).
///
/// Inputs, per anchor n: K stage logits s_{n,1..K} (N × K; the released head has K = 2, a conv on
/// the objectness tower plus a residual conv), C class logits z_{n,c} (N × C, no background
/// column) and a label (−1 ignore, 0 background, k ∈ 1..C).
///
///   o_n    = Σ_k s_{n,k}                         (summed in double, rounded to the scalar)
///   L_obj  = Σ_{n: label ≥ 0} BCE(o_n, [label_n > 0]) / (a_obj · Ê_obj)
///   L_cls  = Σ_{n: label > 0} Σ_c BCE(z_{n,c}, [c = label_n]) / (a_cls · Ê_cls)
///   value  = L_obj + L_cls          (the regression loss, / (a_box · Ê_box), is the caller's)
///   ∂/∂s_{n,k} = (σ(o_n) − [label_n > 0]) / (a_obj · Ê_obj) for every stage k (0 if ignored)
///   ∂/∂z_{n,c} = (σ(z_{n,c}) − [c = label_n]) / (a_cls · Ê_cls) on positive rows, 0 elsewhere
/// with BCE(x, t) = softplus(x) − t·x. Only the summed logit is supervised; every stage receives
/// the same gradient. Only positive anchors train the classifier.
///
/// Normaliser: Ê is detectron2's EMA of the number of positives m = max(#positives, 1) of the
/// call, E ← μ·E + (1 − μ)·m, starting from E₀ = 100, μ = 0.9; a_obj = 20, a_cls = 10, a_box = 1.
/// Quirk of the release (default, `EmaUpdates::three_per_call`): the EMA is updated three times
/// per iteration (once for each of the three normalisers, under one name), so Ê_obj = E₁,
/// Ê_cls = E₂, Ê_box = E₃ and the state ends at E₃ (effective momentum μ³). `one_per_call`
/// updates once and uses E₁ for all three. The faithful mode is the default because it is what
/// produced the published numbers and it only changes how fast the normaliser follows the
/// positive count, not what is trained. The state lives in ResidualObjectnessState, which the
/// caller owns and can reset; value_and_grad(class_logits, labels, stage_logits, grad_classes,
/// grad_stages, state) updates it, value(class_logits, labels, stage_logits, const state)
/// reports the same normalisers and losses without updating it, and a failed call leaves it
/// unchanged. The call has the shape of every fgbg loss (core/loss_base.hpp): the classification
/// logits and labels first, the stage logits as the method's input, then the outputs in the
/// same order, then the state.
///
/// Inference: score_{n,c} = σ(o_n)·σ(z_{n,c}) (the release then thresholds at 0.05, keeps the
/// top 1000 per level and runs NMS 0.5). Initialisation used by the release: every stage bias
/// prior_bias(0.001) ≈ −6.907 (so o starts near −13.8), class bias −ln(C − 1) (prior 1/C).
///
/// @throws std::invalid_argument for a bad config, a shape mismatch (K < 1, rows differ, grads of
///         the wrong shape), a gradient sharing memory with a logit array or with the other
///         gradient, a label outside −1..C, a started state whose num_pos_ema is not finite and
///         > 0, or a normaliser a·Ê outside the normal range; std::domain_error for a
///         non-finite logit or a summed objectness that overflows the scalar. Nothing is written
///         by a failed call.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"

namespace fgbg {

/// How often the EMA of the number of positives is updated per call (see the file comment).
enum class EmaUpdates {
  three_per_call,  ///< released detectron2 port: Ê_obj = E₁, Ê_cls = E₂, Ê_box = E₃ (default)
  one_per_call     ///< one update, Ê_obj = Ê_cls = Ê_box = E₁
};

/// Configuration of ResidualObjectnessLoss; defaults are the released ones.
struct ResidualObjectnessConfig {
  double obj_normalizer_scale = 20.0;  ///< a_obj, finite > 0
  double cls_normalizer_scale = 10.0;  ///< a_cls, finite > 0
  double box_normalizer_scale = 1.0;   ///< a_box, finite > 0 (reported for the caller's L_box)
  double ema_momentum = 0.9;           ///< μ in [0, 1)
  double ema_initial = 100.0;          ///< E₀, finite > 0
  EmaUpdates ema_updates = EmaUpdates::three_per_call;
};

/// The EMA of the number of positives, owned by the caller (one per head / training run).
struct ResidualObjectnessState {
  double num_pos_ema = 0.0;  ///< E after the last successful call (meaningless before the first)
  bool started = false;      ///< false until the first successful call: E₀ = config.ema_initial
  std::int64_t calls = 0;    ///< successful calls since the last reset
  void reset() { *this = ResidualObjectnessState(); }
};

/// Outcome of one call.
struct ResidualObjectnessResult {
  double loss = 0;            ///< obj_loss + cls_loss
  double obj_loss = 0;        ///< L_obj
  double cls_loss = 0;        ///< L_cls
  double obj_normalizer = 0;  ///< a_obj · Ê_obj
  double cls_normalizer = 0;  ///< a_cls · Ê_cls
  double box_normalizer = 0;  ///< a_box · Ê_box, to divide the caller's summed regression loss
  Index num_positives = 0;
  Index num_valid = 0;
};

/// The call signature of ResidualObjectnessLoss: the stage logits as input, the two gradients
/// (classes, then stages) as outputs, the state required; no weights, no normaliser argument
/// (the config's scales and the state's EMA set the normalisers).
struct ResidualObjectnessSignature : DefaultSignature {
  static constexpr int inputs = 1;
  static constexpr int outputs = 2;
  using State = ResidualObjectnessState;
  static constexpr StateUse state = StateUse::required;
  static constexpr CallOption option = CallOption::none;
  static constexpr bool normalizer = false;
};

/// Residual objectness loss; see the file comment.
template <typename Scalar>
class ResidualObjectnessLoss
    : public DenseLoss<ResidualObjectnessLoss<Scalar>, Scalar, ResidualObjectnessSignature> {
 public:
  using Config = ResidualObjectnessConfig;
  static constexpr const char* kName = "fgbg::ResidualObjectnessLoss";

  explicit ResidualObjectnessLoss(const Config& config = {}) : config_(config) {
    auto positive = [](double v) { return std::isfinite(v) && v > 0.0; };
    detail::require_param(positive(config.obj_normalizer_scale), kName, "obj_normalizer_scale",
                          "finite and > 0", config.obj_normalizer_scale);
    detail::require_param(positive(config.cls_normalizer_scale), kName, "cls_normalizer_scale",
                          "finite and > 0", config.cls_normalizer_scale);
    detail::require_param(positive(config.box_normalizer_scale), kName, "box_normalizer_scale",
                          "finite and > 0", config.box_normalizer_scale);
    detail::require_param(config.ema_momentum >= 0.0 && config.ema_momentum < 1.0, kName,
                          "ema_momentum", "in [0, 1)", config.ema_momentum);
    detail::require_param(positive(config.ema_initial), kName, "ema_initial", "finite and > 0",
                          config.ema_initial);
  }

  const Config& config() const { return config_; }

  /// See DenseLoss: `value_and_grad(class_logits, labels, stage_logits, grad_classes,
  /// grad_stages, state)` gives the loss values and normalisers, writes ∂value/∂class_logits
  /// (N × C) and ∂value/∂stage_logits (N × K) and updates `state`; `value(class_logits, labels,
  /// stage_logits, state)` reports what value_and_grad would with the state as it is, without
  /// updating it (the EMA step is taken on a local copy). Plain gradient arrays are resized,
  /// views must have the shape and must not share memory with the logits or with each other.
  template <typename Call>
  ResidualObjectnessResult run(Call& c) const {
    double ema = 0.0;
    const ResidualObjectnessResult r = compute<Call::kGrad>(
        std::get<0>(c.in), c.x, c.labels, *c.state, ema, std::get<1>(c.out), std::get<0>(c.out));
    if constexpr (Call::kGrad) {
      c.state->num_pos_ema = ema;
      c.state->started = true;
      ++c.state->calls;
    }
    return r;
  }

 private:
  template <bool kGrad, typename OD, typename CD, typename LD, typename GO, typename GC>
  ResidualObjectnessResult compute(const Eigen::DenseBase<OD>& s, const Eigen::DenseBase<CD>& z,
                                   const Eigen::DenseBase<LD>& labels,
                                   const ResidualObjectnessState& state, double& ema_out, GO& go,
                                   GC& gc) const {
    static_assert(std::is_same<typename OD::Scalar, Scalar>::value &&
                      std::is_same<typename CD::Scalar, Scalar>::value,
                  "fgbg::ResidualObjectnessLoss: the logits must have the loss's scalar type");
    // 1. Every check, before anything is written.
    const Index n = s.rows(), k = s.cols(), c = z.cols();
    if (k < 1)
      detail::throw_invalid(kName, "stage_logits must have at least one column (K >= 1), got ", n,
                            " x ", k);
    if (z.rows() != n)
      detail::throw_invalid(kName, "class_logits must have ", n, " rows (one per anchor), got ",
                            z.rows(), " x ", c);
    const LabelStats ls = detail::check_labels(kName, labels, n, c);
    if constexpr (kGrad) {
      detail::check_output(kName, "grad_stages", go, n, k);
      detail::check_output(kName, "grad_classes", gc, n, c);
      // The class gradient is zeroed first and the stage gradient written tile by tile, so an
      // output over the logits (or over the other output) would overwrite what is still read.
      detail::check_no_alias(kName, s, go);
      detail::check_no_alias(kName, s, gc);
      detail::check_no_alias(kName, z, go);
      detail::check_no_alias(kName, z, gc);
      detail::check_no_alias(kName, go, gc);
    }
    detail::check_finite(kName, "stage_logits", s);
    detail::check_finite(kName, "class_logits", z);
    for (Index i = 0; i < n; ++i)
      if (!(std::abs(objectness(s, i)) <= static_cast<double>(std::numeric_limits<Scalar>::max())))
        throw std::domain_error(detail::concat(kName, ": the summed objectness of anchor ", i,
                                               " overflows the scalar type"));

    // 2. Normalisers from a local copy of the EMA.
    ResidualObjectnessResult r;
    r.num_positives = ls.positives;
    r.num_valid = ls.valid;
    const double m = static_cast<double>(std::max<Index>(ls.positives, 1));
    const double mu = config_.ema_momentum;
    double e = state.started ? state.num_pos_ema : config_.ema_initial;
    auto step = [&] { return e = mu * e + (1.0 - mu) * m; };
    const double e_obj = step();
    const double e_cls = config_.ema_updates == EmaUpdates::three_per_call ? step() : e_obj;
    const double e_box = config_.ema_updates == EmaUpdates::three_per_call ? step() : e_obj;
    r.obj_normalizer = config_.obj_normalizer_scale * e_obj;
    r.cls_normalizer = config_.cls_normalizer_scale * e_cls;
    r.box_normalizer = config_.box_normalizer_scale * e_box;
    // A state restored by hand (num_pos_ema NaN, 0 or negative), or a scale so extreme that a·Ê
    // leaves the normal range, would give a zero, inf or NaN normaliser: refused here, before
    // anything is written or committed.
    if (state.started && !(std::isfinite(state.num_pos_ema) && state.num_pos_ema > 0.0))
      detail::throw_invalid(kName, "state.num_pos_ema must be finite and > 0 once started, got ",
                            state.num_pos_ema);
    const std::pair<const char*, double> normalizers[] = {
        {"obj", r.obj_normalizer}, {"cls", r.cls_normalizer}, {"box", r.box_normalizer}};
    for (const auto& [name, a] : normalizers)
      if (!(std::isnormal(a) && a > 0.0))
        detail::throw_invalid(kName, "the ", name, " normaliser (", name,
                              "_normalizer_scale times the EMA of the positive count) must be a "
                              "positive normal number, got ",
                              a);

    // 3. Values and gradients (nothing below throws).
    if constexpr (kGrad) {
      detail::prepare_output(kName, "grad_stages", go, n, k);
      detail::prepare_output(kName, "grad_classes", gc, n, c);
    }
    r.obj_loss = objectness_part<kGrad>(s, labels, r.obj_normalizer, go);
    r.cls_loss = class_part<kGrad>(z, labels, r.cls_normalizer, gc);
    r.loss = r.obj_loss + r.cls_loss;

    ema_out = e;  // value_and_grad commits it to the state; value() drops it
    return r;
  }

  template <typename OD>
  static double objectness(const Eigen::DenseBase<OD>& s, Index i) {
    double o = 0.0;
    for (Index j = 0; j < s.cols(); ++j) o += static_cast<double>(s.derived().coeff(i, j));
    return o;
  }

  /// Σ_valid BCE(o, t) / norm over the N summed objectness logits o_i, on the dense engine: the
  /// o_i are a lazy N × 1 expression the engine gathers tile by tile, and each tile's gradient
  /// (N × 1) is written across the K columns of `go`.
  template <bool kGrad, typename OD, typename LD, typename GO>
  double objectness_part(const Eigen::DenseBase<OD>& s, const Eigen::DenseBase<LD>& labels,
                         double norm, GO& go) const {
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    const detail::GradFactor<Scalar> inv(1.0, norm);
    const Index k = s.cols();
    const auto o_all =
        Vec::NullaryExpr(s.rows(), [&s](Index i) { return static_cast<Scalar>(objectness(s, i)); });
    detail::None none;
    return detail::tiled_sum<Scalar>(
        o_all, none, [&](const detail::Tile& tile, const Scalar* op, Scalar*, Scalar* scratch) {
          const Index t = tile.rows, i0 = tile.row0;
          Scalar* tb = scratch;
          Scalar* vb = scratch + detail::kTileElems;
          for (Index i = 0; i < t; ++i) {
            const auto l = labels.derived().coeff(i0 + i);
            tb[i] = l > 0 ? Scalar(-1) : Scalar(1);  // the sign of z = (1 − 2t)·o
            vb[i] = l >= 0 ? Scalar(1) : Scalar(0);
          }
          Eigen::Map<const Vec> o(op, t);
          Eigen::Map<Vec> tg(tb, t), v(vb, t), e(scratch + 2 * detail::kTileElems, t),
              loss(scratch + 3 * detail::kTileElems, t);
          e = array::exp_neg_abs(o);
          // BCE(o, t) = softplus((1 − 2t)·o): softplus(−o) for positives directly (softplus(o) − o
          // cancels to 0 in float for o > 16).
          loss = ((o * tg).max(Scalar(0)) + e.log1p()) * v;  // softplus(z), z = (1 − 2t)·o
          const double sum = detail::sum_normalised(loss.data(), t, detail::ElementScale(norm));
          if constexpr (kGrad) {
            // ∂softplus(z)/∂o = (1 − 2t)·σ(z): −σ(−o) for positives, without σ(o) − 1 cancelling.
            loss = array::sigmoid_from(o * tg, e) * tg * v;
            detail::scale_gradient(loss.data(), t, inv);
            for (Index i = 0; i < t; ++i)
              for (Index j = 0; j < k; ++j) go.derived().coeffRef(i0 + i, j) = loss[i];
          }
          return sum;
        });
  }

  /// Σ_positive rows Σ_c BCE(z, onehot) / norm; zero gradient on the other rows. Each positive
  /// row is one pass of the dense engine (the other rows are never read).
  template <bool kGrad, typename CD, typename LD, typename GC>
  double class_part(const Eigen::DenseBase<CD>& z, const Eigen::DenseBase<LD>& labels, double norm,
                    GC& gc) const {
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    const detail::GradFactor<Scalar> inv(1.0, norm);
    if constexpr (kGrad) gc.derived().setZero();
    double total = 0.0;
    for (Index i = 0; i < z.rows(); ++i) {
      const auto l = labels.derived().coeff(i);
      if (l <= 0) continue;
      const Index col = static_cast<Index>(l) - 1;
      auto row_pass = [&](const detail::Tile& tile, const Scalar* xb, Scalar* gb, Scalar* scratch) {
        const Index t = tile.cols, c0 = tile.col0;
        Eigen::Map<const Vec> x(xb, t);
        Eigen::Map<Vec> e(scratch, t), loss(scratch + detail::kTileElems, t);
        e = array::exp_neg_abs(x);
        loss = array::softplus_from(x, e);
        const bool has_target = col >= c0 && col < c0 + t;
        if (has_target) loss[col - c0] = softplus(-xb[col - c0]);  // direct form, no cancellation
        const double sum = detail::sum_normalised(loss.data(), t, detail::ElementScale(norm));
        if constexpr (kGrad) {
          Eigen::Map<Vec> g(gb, t);
          g = array::sigmoid_from(x, e);
          if (has_target) gb[col - c0] = -sigmoid(-xb[col - c0]);  // σ(z) − 1 = −σ(−z)
          detail::scale_gradient(gb, t, inv);
        }
        return sum;
      };
      const auto zr = z.derived().row(i);
      if constexpr (kGrad) {
        auto gr = gc.derived().row(i);
        total += detail::tiled_sum<Scalar>(zr, gr, row_pass);
      } else {
        detail::None none;
        total += detail::tiled_sum<Scalar>(zr, none, row_pass);
      }
    }
    return total;
  }

  Config config_;
};

/// Inference scores σ(o_n)·σ(z_{n,c}) with o_n the summed stage logits, written into `scores`
/// (N × C; a plain array is resized, a view must have the shape and must not share memory with
/// either logit array).
/// @throws std::invalid_argument for mismatched shapes (K < 1, rows differ, wrong output shape)
///         or scores sharing memory with the logits;
///         std::domain_error for a non-finite logit or an overflowing sum.
template <typename OD, typename CD, typename SD>
void residual_objectness_scores(const Eigen::DenseBase<OD>& stage_logits,
                                const Eigen::DenseBase<CD>& class_logits,
                                const Eigen::DenseBase<SD>& scores_) {
  constexpr const char* kWhere = "fgbg::residual_objectness_scores";
  using Scalar = typename SD::Scalar;
  static_assert(std::is_same<typename OD::Scalar, Scalar>::value &&
                    std::is_same<typename CD::Scalar, Scalar>::value,
                "fgbg::residual_objectness_scores: logits and scores must share the scalar type");
  const Index n = stage_logits.rows(), k = stage_logits.cols(), c = class_logits.cols();
  if (k < 1)
    detail::throw_invalid(kWhere, "stage_logits must have at least one column (K >= 1), got ", n,
                          " x ", k);
  if (class_logits.rows() != n)
    detail::throw_invalid(kWhere, "class_logits must have ", n, " rows (one per anchor), got ",
                          class_logits.rows(), " x ", c);
  detail::check_output(kWhere, "scores", scores_, n, c);
  detail::check_no_alias(kWhere, stage_logits, scores_);
  detail::check_no_alias(kWhere, class_logits, scores_);
  detail::check_finite(kWhere, "stage_logits", stage_logits);
  detail::check_finite(kWhere, "class_logits", class_logits);
  auto sum_row = [&](Index i) {
    double o = 0.0;
    for (Index j = 0; j < k; ++j) o += static_cast<double>(stage_logits.derived().coeff(i, j));
    return o;
  };
  for (Index i = 0; i < n; ++i)
    if (!(std::abs(sum_row(i)) <= static_cast<double>(std::numeric_limits<Scalar>::max())))
      throw std::domain_error(detail::concat(kWhere, ": the summed objectness of anchor ", i,
                                             " overflows the scalar type"));
  auto& scores = detail::writable(scores_);
  detail::prepare_output(kWhere, "scores", scores, n, c);
  scores.derived() = array::sigmoid(class_logits.derived().array());
  for (Index i = 0; i < n; ++i) scores.derived().row(i) *= sigmoid(static_cast<Scalar>(sum_row(i)));
}

}  // namespace fgbg
