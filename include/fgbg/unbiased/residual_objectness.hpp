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
/// Data parallelism (docs/data_parallel.md), three steps: (1) compute
/// `loss.batch_statistics(labels, C)`: this worker's positive and valid counts in a
/// ReduceBuffer; (2) reduce: the caller sums the buffers of all workers; (3) commit
/// `loss.value_and_grad(class_logits, labels, stage_logits, grad_classes, grad_stages, state,
/// reduced)`: m = max(P, 1) with P the global positive count, so every rank's normalisers and
/// committed E equal one process's on the whole batch, bit for bit (P is an exact integer and
/// the EMA arithmetic is the same), and every rank's gradient is the rows of the single-process
/// gradient (bit-identical for the class logits; for the stage logits bit-identical when the
/// shards are cut at multiples of 2048 rows, the objectness tiles, and within a few ulps
/// otherwise: docs/data_parallel.md). A local buffer is the reduced buffer of W = 1:
/// bit-identical to the call without one. The state checkpoints with save() / load().
///
/// Inference: score_{n,c} = σ(o_n)·σ(z_{n,c}) (the release then thresholds at 0.05, keeps the
/// top 1000 per level and runs NMS 0.5). Initialisation used by the release: every stage bias
/// prior_bias(0.001) ≈ −6.907 (so o starts near −13.8), class bias −ln(C − 1) (prior 1/C).
///
/// @throws std::invalid_argument for a bad config, a shape mismatch (K < 1, rows differ, grads of
///         the wrong shape), a gradient sharing memory with a logit array or with the other
///         gradient, a label outside −1..C, a normaliser a·Ê outside the normal range, a bad
///         reduce buffer (see run()) or a state whose call count would overflow; a state
///         snapshot or blob restore() / load() reject; std::domain_error for a
///         non-finite logit or a summed objectness that overflows the scalar. Nothing is written
///         by a failed call.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/state_io.hpp"

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

template <typename Scalar>
class ResidualObjectnessLoss;

/// The EMA of the number of positives, owned by the caller (one per head / training run): E
/// after the last committed call, whether a call was committed since the last reset (before
/// that, a call starts from E₀ = config.ema_initial) and how many. Only
/// ResidualObjectnessLoss::value_and_grad (and restore() / load()) change it; its invariant,
/// checked by restore(), is: not started ⇔ calls = 0 ⇔ E = 0, and E finite and > 0 once
/// started. Checkpoint it with save() / load(); under data parallelism every rank commits the
/// same E from the reduced positive count (see the file comment).
class ResidualObjectnessState {
 public:
  static constexpr const char* kName = "fgbg::ResidualObjectnessState";
  static constexpr std::uint32_t kVersion = 1;  ///< blob format

  /// Every field, as a plain struct (restore() takes it back).
  struct Snapshot {
    double num_pos_ema = 0.0;  ///< E (0 before the first call)
    bool started = false;      ///< a call was committed since the last reset
    std::int64_t calls = 0;    ///< committed calls since the last reset
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.num_pos_ema == b.num_pos_ema && a.started == b.started && a.calls == b.calls;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };

  /// A fresh state: not started, E₀ comes from the loss's config.
  ResidualObjectnessState() = default;

  /// E after the last committed call (0 before the first: the call then uses config.ema_initial).
  double num_pos_ema() const { return s_.num_pos_ema; }
  /// Whether a call was committed since the last reset.
  bool started() const { return s_.started; }
  /// Committed calls since the last reset.
  std::int64_t calls() const { return s_.calls; }
  /// Back to a fresh state.
  void reset() { s_ = Snapshot(); }

  /// A copy of every field.
  Snapshot snapshot() const { return s_; }
  /// Takes every field. Throws std::invalid_argument (state untouched) for calls < 0, started
  /// not equal to calls > 0, or E not finite and > 0 once started (not 0 before).
  void restore(const Snapshot& s) {
    if (s.calls < 0) detail::throw_invalid(kName, "snapshot calls must be >= 0, got ", s.calls);
    if (s.started != (s.calls > 0))
      detail::throw_invalid(kName, "snapshot has started = ", s.started ? "true" : "false",
                            " with calls = ", s.calls, "; started must equal calls > 0");
    if (s.started && !(std::isfinite(s.num_pos_ema) && s.num_pos_ema > 0.0))
      detail::throw_invalid(kName, "snapshot num_pos_ema must be finite and > 0 once started, got ",
                            s.num_pos_ema);
    if (!s.started && s.num_pos_ema != 0.0)
      detail::throw_invalid(kName, "snapshot num_pos_ema must be 0 before the first call, got ",
                            s.num_pos_ema);
    s_ = s;
  }
  /// The state as a versioned, little-endian, checksummed blob (core/state_io.hpp): E (IEEE-754
  /// bits), started (0 or 1), calls.
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::residual_objectness, kVersion);
    w.f64(s_.num_pos_ema);
    w.u32(s_.started ? 1u : 0u);
    w.i64(s_.calls);
    return w.finish();
  }
  /// Loads a blob of save(). Throws std::invalid_argument (state untouched) for a blob of another
  /// method or version, a truncated, extended or corrupted one, a started flag other than 0 or 1,
  /// or contents restore() rejects.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::residual_objectness, kVersion);
    Snapshot s;
    s.num_pos_ema = r.f64();
    const std::uint32_t started = r.u32();
    s.calls = r.i64();
    r.done();
    if (started > 1)
      detail::throw_invalid(kName, "blob's started flag is ", started, ", not 0 or 1");
    s.started = started == 1;
    restore(s);
  }
  friend bool operator==(const ResidualObjectnessState& a, const ResidualObjectnessState& b) {
    return a.s_ == b.s_;
  }
  friend bool operator!=(const ResidualObjectnessState& a, const ResidualObjectnessState& b) {
    return !(a == b);
  }

 private:
  template <typename>
  friend class ResidualObjectnessLoss;
  /// The commit of a call (E > 0 finite: the call checked its normalisers).
  void commit(double ema) {
    s_.num_pos_ema = ema;
    s_.started = true;
    ++s_.calls;
  }
  Snapshot s_;
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
  static constexpr bool reduce = true;  ///< the reduced positive count of batch_statistics
  static constexpr LossOutputs losses = LossOutputs::anchor;  ///< each anchor's share of the value
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

  static constexpr std::uint32_t kReduceVersion = 1;  ///< format of the statistics buffer
  /// Header fields of the statistics buffer after tag and version.
  static constexpr std::size_t kReduceFields = 7;

  /// Step 1 of data parallelism: this worker's counts as a ReduceBuffer, for the anchors of its
  /// call (`labels`: N labels in −1..classes, `classes` = C, the columns of its class logits).
  /// Header: C, ema_momentum, ema_initial (IEEE bits), ema_updates, the three normaliser scales
  /// (IEEE bits), so ranks with another config are detected; payload: {#positive anchors
  /// (label ≥ 1), #valid anchors (label ≠ −1)}, exact integers. Sum the buffers of every worker
  /// (SUM all-reduce over `data(), size()`), then pass the result as the last argument of
  /// value / value_and_grad. Call it on every rank, every step (also with no positives: the
  /// all-reduce is a collective). Throws std::invalid_argument for C < 0 or a label outside
  /// −1..C; changes nothing.
  template <typename LD>
  ReduceBuffer batch_statistics(const Eigen::DenseBase<LD>& labels, Index classes) const {
    ReduceBuffer b;
    batch_statistics(labels, classes, b);
    return b;
  }
  /// batch_statistics into a caller-owned buffer, rebuilt in place (ReduceBuffer::assign): no
  /// allocation once `out` has held a buffer of this loss. Throws as above; `out` is untouched
  /// then.
  template <typename LD>
  void batch_statistics(const Eigen::DenseBase<LD>& labels, Index classes,
                        ReduceBuffer& out) const {
    constexpr const char* kWhere = "fgbg::ResidualObjectnessLoss::batch_statistics";
    if (classes < 0) detail::throw_invalid(kWhere, "classes must be >= 0, got ", classes);
    const LabelStats ls = detail::check_labels(kWhere, labels, labels.size(), classes);
    out.assign(StateMethod::residual_objectness, kReduceVersion, header_fields(classes), 2);
    out.payload()[0] = static_cast<double>(ls.positives);
    out.payload()[1] = static_cast<double>(ls.valid);
  }

  /// See DenseLoss: `value_and_grad(class_logits, labels, stage_logits, grad_classes,
  /// grad_stages, state)` gives the loss values and normalisers, writes ∂value/∂class_logits
  /// (N × C) and ∂value/∂stage_logits (N × K) and updates `state`; `value(class_logits, labels,
  /// stage_logits, state)` reports what value_and_grad would with the state as it is, without
  /// updating it (the EMA step is taken on a local copy). Plain gradient arrays are resized,
  /// views must have the shape and must not share memory with the logits or with each other.
  ///
  /// With a reduced buffer of batch_statistics as the last argument (data parallelism, see the
  /// file comment), m = max(P, 1) is the global positive count P of the buffer instead of this
  /// call's, so every rank's normalisers, and the E that value_and_grad commits, are those of one
  /// process on the whole batch; the result's num_positives and num_valid stay this call's.
  /// Throws std::invalid_argument, before anything is written, for a buffer of the wrong size or
  /// method, a header that differs across ranks or from this loss's config and C, counts that
  /// are not exact integers, or global counts below this call's (a buffer of another batch).
  template <typename Call>
  ResidualObjectnessResult run(Call& c) const {
    const ReduceBuffer* reduced = nullptr;
    if constexpr (Call::kReduce) reduced = c.reduce;
    if constexpr (Call::kGrad)
      if (c.state->calls() == std::numeric_limits<std::int64_t>::max())
        detail::throw_invalid(kName, "state.calls() would overflow int64");
    double ema = 0.0;
    const ResidualObjectnessResult r =
        compute<Call::kGrad>(std::get<0>(c.in), c.x, c.labels, *c.state, reduced, ema,
                             std::get<1>(c.out), std::get<0>(c.out), c.losses);
    if constexpr (Call::kGrad) c.state->commit(ema);
    return r;
  }

 private:
  /// The header of the statistics buffer (see batch_statistics), built without allocating.
  std::array<std::uint64_t, kReduceFields> header_fields(Index classes) const {
    return {
        static_cast<std::uint64_t>(classes),       double_bits(config_.ema_momentum),
        double_bits(config_.ema_initial),          static_cast<std::uint64_t>(config_.ema_updates),
        double_bits(config_.obj_normalizer_scale), double_bits(config_.cls_normalizer_scale),
        double_bits(config_.box_normalizer_scale)};
  }

  /// The global positive count of a reduced buffer, after checking its size, its header
  /// (against this loss's config and `classes`) and its counts (exact integers, positives ≤
  /// valid, and at least this call's `local`). Throws std::invalid_argument; reads only.
  std::int64_t reduced_positives(const ReduceBuffer& b, Index classes,
                                 const LabelStats& local) const {
    static constexpr std::array<const char*, kReduceFields> kFields = {"classes",
                                                                       "ema_momentum",
                                                                       "ema_initial",
                                                                       "ema_updates",
                                                                       "obj_normalizer_scale",
                                                                       "cls_normalizer_scale",
                                                                       "box_normalizer_scale"};
    b.check(kName, StateMethod::residual_objectness, kReduceVersion,
            ReduceBuffer::size_for(kReduceFields, 2), kFields);
    const auto h = header_fields(classes);
    for (std::size_t f = 0; f < kReduceFields; ++f) b.expect_field(kName, f, kFields[f], h[f]);
    const std::int64_t positives = b.count(kName, "positive count", 0);
    const std::int64_t valid = b.count(kName, "valid count", 1);
    if (positives > valid)
      detail::throw_invalid(kName, "reduced positive count ", positives, " exceeds the valid ",
                            valid);
    if (positives < local.positives || valid < local.valid)
      detail::throw_invalid(kName, "reduced counts (", positives, " positive, ", valid,
                            " valid) are below this call's (", local.positives, ", ", local.valid,
                            "): a buffer of another batch, or not reduced over this rank");
    return positives;
  }

  template <bool kGrad, typename OD, typename CD, typename LD, typename GO, typename GC>
  ResidualObjectnessResult compute(const Eigen::DenseBase<OD>& s, const Eigen::DenseBase<CD>& z,
                                   const Eigen::DenseBase<LD>& labels,
                                   const ResidualObjectnessState& state,
                                   const ReduceBuffer* reduced, double& ema_out, GO& go, GC& gc,
                                   detail::LossSink<Scalar>& losses) const {
    static_assert(
        kStorableAs<typename OD::Scalar, Scalar> && kStorableAs<typename CD::Scalar, Scalar>,
        "fgbg::ResidualObjectnessLoss: the logits must have the loss's scalar type (or "
        "Eigen::half / Eigen::bfloat16 for a float loss)");
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
    losses.check(
        kName, n, 1,
        {{detail::MemView::of(s), "stage_logits"}, {detail::MemView::of(z), "class_logits"}});
    if constexpr (kGrad) {
      losses.check_apart(kName, detail::MemView::of(go), "grad_stages");
      losses.check_apart(kName, detail::MemView::of(gc), "grad_classes");
    }
    detail::check_finite(kName, "stage_logits", s);
    detail::check_finite(kName, "class_logits", z);
    for (Index i = 0; i < n; ++i)
      if (!(std::abs(objectness(s, i)) <= static_cast<double>(std::numeric_limits<Scalar>::max())))
        throw std::domain_error(detail::concat(kName, ": the summed objectness of anchor ", i,
                                               " overflows the scalar type"));

    // The positive count of the batch: this call's, or the global one of a reduced buffer.
    const std::int64_t positives = reduced ? reduced_positives(*reduced, c, ls) : ls.positives;

    // 2. Normalisers from a local copy of the EMA.
    ResidualObjectnessResult r;
    r.num_positives = ls.positives;
    r.num_valid = ls.valid;
    const double m = static_cast<double>(std::max<std::int64_t>(positives, 1));
    const double mu = config_.ema_momentum;
    double e = state.started() ? state.num_pos_ema() : config_.ema_initial;
    auto step = [&] { return e = mu * e + (1.0 - mu) * m; };
    const double e_obj = step();
    const double e_cls = config_.ema_updates == EmaUpdates::three_per_call ? step() : e_obj;
    const double e_box = config_.ema_updates == EmaUpdates::three_per_call ? step() : e_obj;
    r.obj_normalizer = config_.obj_normalizer_scale * e_obj;
    r.cls_normalizer = config_.cls_normalizer_scale * e_cls;
    r.box_normalizer = config_.box_normalizer_scale * e_box;
    // A scale so extreme that a·Ê leaves the normal range would give a zero, inf or NaN
    // normaliser: refused here, before anything is written or committed. (A started state's E
    // is finite and > 0: restore() and load() refuse anything else.)
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
    losses.prepare(n, 1);
    r.obj_loss = objectness_part<kGrad>(s, labels, r.obj_normalizer, go, losses);
    r.cls_loss = class_part<kGrad>(z, labels, r.cls_normalizer, gc, losses);
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
  /// (N × 1) is written across the K columns of `go`. A given `losses` receives every anchor's
  /// BCE(o, t) / norm (0 if ignored).
  template <bool kGrad, typename OD, typename LD, typename GO>
  double objectness_part(const Eigen::DenseBase<OD>& s, const Eigen::DenseBase<LD>& labels,
                         double norm, GO& go, const detail::LossSink<Scalar>& losses) const {
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
          if (losses.given()) {
            double share[detail::kTileElems];
            for (Index i = 0; i < t; ++i) share[i] = static_cast<double>(loss[i]) / norm;
            losses.anchor_fn(losses.obj, i0, t, share, false);
          }
          if constexpr (kGrad) {
            // ∂softplus(z)/∂o = (1 − 2t)·σ(z): −σ(−o) for positives, without σ(o) − 1 cancelling.
            loss = array::sigmoid_from(o * tg, e) * tg * v;
            detail::scale_gradient(loss.data(), t, inv);
            for (Index i = 0; i < t; ++i)
              for (Index j = 0; j < k; ++j)
                go.derived().coeffRef(i0 + i, j) =
                    static_cast<typename std::decay_t<decltype(go.derived())>::Scalar>(loss[i]);
          }
          return sum;
        });
  }

  /// Σ_positive rows Σ_c BCE(z, onehot) / norm; zero gradient on the other rows. Each positive
  /// row is one pass of the dense engine (the other rows are never read). A given `losses` has
  /// each positive row's class loss / norm added to it.
  template <bool kGrad, typename CD, typename LD, typename GC>
  double class_part(const Eigen::DenseBase<CD>& z, const Eigen::DenseBase<LD>& labels, double norm,
                    GC& gc, const detail::LossSink<Scalar>& losses) const {
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
      double row = 0.0;
      if constexpr (kGrad) {
        auto gr = gc.derived().row(i);
        row = detail::tiled_sum<Scalar>(zr, gr, row_pass);
      } else {
        detail::None none;
        row = detail::tiled_sum<Scalar>(zr, none, row_pass);
      }
      total += row;
      if (losses.given()) losses.anchor_fn(losses.obj, i, 1, &row, true);
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
