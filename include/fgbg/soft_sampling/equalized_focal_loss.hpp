/// @file equalized_focal_loss.hpp
/// @brief Equalized Focal Loss (EFL) for long-tailed dense detection, with its fused gradient and
///        its per-class gradient statistics in an explicit, resettable state object.
///
/// Li et al., "Equalized Focal Loss for Dense Long-Tailed Object
/// Detection", CVPR 2022. Matches `EqualizedFocalLoss` and its gradient hook in
/// ModelTC/United-Perception (`up/tasks/det/plugins/efl/models/losses/efl.py`,
/// `…/efl/utils/hook_helper.py`).
///
/// State per class j: accumulated gradient magnitudes G⁺_j (from positive elements) and G⁻_j
/// (from negative elements), and the ratio g_j = clamp(G⁺_j / (G⁻_j + 1e-10), 0, 1), which
/// starts at 1. Per element, with p = σ(x), z = (2t − 1)x, p_t = σ(z), α_t = α if t = 1 else
/// 1 − α (α < 0: α_t = 1):
///
///   γ_j   = γ_b + s (1 − g_j),   w_j = γ_j / γ_b          (constants within a call;
///                                                         γ_b + s must be finite)
///   EFL   = α_t · w_j · (1 − p_t)^γ_j · softplus(−z)       (softplus(−z) = −log p_t)
///   ∂/∂x  = (2t − 1) · α_t w_j (1 − p_t)^γ_j (γ_j p_t log p_t + p_t − 1)
///
/// i.e. the sigmoid focal loss with a per-class γ, times γ_j/γ_b. The modulating factor is
/// differentiated through p (as in the reference, which detaches only γ_j and w_j). The
/// reference computes −log p_t directly (overflow for saturated logits); this
/// uses softplus.
///
/// State update: value_and_grad, after computing the gradient Γ = ∂L/∂x of the call (normaliser
/// and Ω included; ignored rows contribute nothing), adds the batch sums Σ_i |Γ_ij| t_ij and
/// Σ_i |Γ_ij| (1 − t_ij) to G⁺_j and G⁻_j, then recomputes g_j. The new γ_j apply from the next
/// call. The reference accumulates from the start of training without decay (the default,
/// decay = 1); config.decay < 1 gives the optional exponential forgetting
/// G ← decay·G + batch. value(x, labels, const state) never updates it: it
/// returns what value_and_grad(x, labels, grad, state) would return with the state as is. Call
/// value_and_grad once per iteration over the anchors of every FPN level and image (the
/// reference collects all levels before one update); the statistics are kept in double.
///
/// Shapes: logits N × C (no background column), labels N (−1 ignore, 0 background, k → column
/// k−1; the reference's num_classes counts the background, so C = num_classes − 1), optional
/// weights N or N × C, gradient N × C, state of C classes. Default normaliser: num_positives =
/// max(1, #positive anchors).
///
/// @throws std::invalid_argument for a bad config, shape, label, weight, normaliser or a state
///         of the wrong number of classes; std::domain_error for a non-finite logit or weight.
///         A call that throws writes no output and leaves the state unchanged.
///
/// Data parallelism (docs/data_parallel.md): value_and_grad(…, state, [weights], [normalizer],
/// buffer) writes this worker's batch sums into `buffer` (a ReduceBuffer; header: C, decay, α,
/// γ_b, s) and does not commit them; the caller sums the buffers of all workers and calls
/// state.commit(buffer) on every rank. The sums are real-valued, so the committed G equals one
/// process's to rounding: each sum of n non-negative terms is within (n − 1)·2^−53 relative of
/// the exact one whatever the order, so two orders differ by at most 2(n − 1)·2^−53 relative.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "../core/state_io.hpp"

namespace fgbg {

template <typename Scalar>
class EqualizedFocalLoss;

/// The per-class gradient statistics of EqualizedFocalLoss (see its file comment). Owns its
/// buffers (allocated once, in the constructor); copyable, so a snapshot is a copy.
class EqualizedFocalState {
 public:
  /// Fresh statistics for `num_classes` foreground classes: G⁺ = G⁻ = 0, g = 1.
  explicit EqualizedFocalState(Index num_classes = 0) {
    // At most kMaxStateClasses (2^24): five arrays of doubles per class are allocated here.
    if (num_classes < 0 || num_classes > kMaxStateClasses)
      detail::throw_invalid("fgbg::EqualizedFocalState", "num_classes must be in [0, ",
                            kMaxStateClasses, "], got ", num_classes);
    pos_.resize(num_classes);
    neg_.resize(num_classes);
    ratio_.resize(num_classes);
    batch_pos_.resize(num_classes);
    batch_neg_.resize(num_classes);
    reset();
  }

  /// Back to the start of training: G⁺ = G⁻ = 0, g = 1, no updates.
  void reset() {
    pos_.setZero();
    neg_.setZero();
    ratio_.setOnes();
    updates_ = 0;
  }

  Index num_classes() const { return pos_.size(); }
  /// G⁺_j: accumulated |∂L/∂x| over positive elements of class j (saturates at DBL_MAX).
  const Eigen::ArrayXd& pos_grad() const { return pos_; }
  /// G⁻_j: accumulated |∂L/∂x| over negative elements of class j (saturates at DBL_MAX).
  const Eigen::ArrayXd& neg_grad() const { return neg_; }
  /// g_j = clamp(G⁺_j / (G⁻_j + 1e-10), 0, 1); 1 before the first update.
  const Eigen::ArrayXd& ratio() const { return ratio_; }
  /// Number of value_and_grad calls that updated the statistics since the last reset.
  long long updates() const { return updates_; }

  static constexpr const char* kName = "fgbg::EqualizedFocalState";
  static constexpr std::uint32_t kVersion = 1;        ///< blob format
  static constexpr std::uint32_t kReduceVersion = 1;  ///< statistics buffer format

  /// Every field of the state as a plain struct (g is recomputed from G⁺, G⁻ on restore).
  struct Snapshot {
    std::vector<double> pos, neg;  ///< G⁺_j, G⁻_j
    std::vector<double> ratio;     ///< g_j
    long long updates = 0;
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.pos == b.pos && a.neg == b.neg && a.ratio == b.ratio && a.updates == b.updates;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };
  Snapshot snapshot() const {
    auto v = [](const Eigen::ArrayXd& a) {
      return std::vector<double>(a.data(), a.data() + a.size());
    };
    return {v(pos_), v(neg_), v(ratio_), updates_};
  }
  /// Takes every field. Throws std::invalid_argument (state untouched) unless the three
  /// vectors have one length ≤ 2^24, G finite and ≥ 0, g in [0, 1] and updates ≥ 0.
  void restore(const Snapshot& s) {
    const std::size_t c = s.pos.size();
    if (c > static_cast<std::size_t>(kMaxStateClasses) || s.neg.size() != c || s.ratio.size() != c)
      detail::throw_invalid(kName, "snapshot has ", c, ", ", s.neg.size(), " and ", s.ratio.size(),
                            " classes; they must agree and be at most ", kMaxStateClasses);
    for (std::size_t j = 0; j < c; ++j)
      if (!(std::isfinite(s.pos[j]) && s.pos[j] >= 0 && std::isfinite(s.neg[j]) && s.neg[j] >= 0 &&
            s.ratio[j] >= 0 && s.ratio[j] <= 1))
        detail::throw_invalid(kName, "snapshot class ", j, " has G+ = ", s.pos[j],
                              ", G- = ", s.neg[j], ", g = ", s.ratio[j],
                              "; G must be finite and >= 0, g in [0, 1]");
    if (s.updates < 0)
      detail::throw_invalid(kName, "snapshot updates must be >= 0, got ", s.updates);
    const Index n = static_cast<Index>(c);
    *this = EqualizedFocalState(n);
    pos_ = Eigen::Map<const Eigen::ArrayXd>(s.pos.data(), n);
    neg_ = Eigen::Map<const Eigen::ArrayXd>(s.neg.data(), n);
    ratio_ = Eigen::Map<const Eigen::ArrayXd>(s.ratio.data(), n);
    updates_ = s.updates;
  }
  /// Versioned, little-endian, checksummed blob (core/state_io.hpp): C, G⁺, G⁻, g (IEEE bits),
  /// updates.
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::equalized_focal, kVersion);
    w.u64(static_cast<std::uint64_t>(num_classes()));
    for (const Eigen::ArrayXd* a : {&pos_, &neg_, &ratio_})
      for (Index j = 0; j < a->size(); ++j) w.f64((*a)[j]);
    w.i64(updates_);
    return w.finish();
  }
  /// Loads a blob of save(); throws std::invalid_argument (state untouched) for another method
  /// or version, a truncated or corrupted blob, or contents restore() rejects.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::equalized_focal, kVersion);
    const std::uint64_t c = r.u64();
    if (c > static_cast<std::uint64_t>(kMaxStateClasses) || r.remaining() != (3 * c + 1) * 8)
      detail::throw_invalid(kName, "blob of ", c, " classes has ", r.remaining(), " payload bytes");
    Snapshot s;
    for (std::vector<double>* a : {&s.pos, &s.neg, &s.ratio}) {
      a->resize(c);
      for (auto& v : *a) v = r.f64();
    }
    s.updates = r.i64();
    r.done();
    restore(s);
  }
  friend bool operator==(const EqualizedFocalState& a, const EqualizedFocalState& b) {
    return a.snapshot() == b.snapshot();
  }
  friend bool operator!=(const EqualizedFocalState& a, const EqualizedFocalState& b) {
    return !(a == b);
  }

  /// Step 3 of data parallelism: commits the sum over workers of the statistics buffers that
  /// value_and_grad(…, buffer) wrote: G ← decay·G + Σ_r batch_r, then g. The decay comes from
  /// the buffer's header (every rank's loss config). Throws std::invalid_argument (state
  /// untouched) for a buffer of the wrong size or method, classes or hyper-parameters that
  /// differ across ranks or classes not this state's, or a sum that is negative or NaN.
  void commit(const ReduceBuffer& b) {
    b.check(kName, StateMethod::equalized_focal, kReduceVersion, buffer_size(num_classes()),
            {"classes", "decay", "alpha", "gamma_b", "scale"});
    b.expect_field(kName, 0, "classes", static_cast<std::uint64_t>(num_classes()));
    const double decay = bits_double(b.decode(3));
    const Index c = num_classes();
    for (Index j = 0; j < 2 * c; ++j)
      if (!(b.payload()[j] >= 0.0))
        detail::throw_invalid(kName, "reduced gradient sum ", j, " is ", b.payload()[j],
                              "; it must be >= 0");
    batch_pos_ = Eigen::Map<const Eigen::ArrayXd>(b.payload(), c);
    batch_neg_ = Eigen::Map<const Eigen::ArrayXd>(b.payload() + c, c);
    apply_batch(decay);
  }
  /// Length in doubles of a statistics buffer for `classes` classes (five header fields, 2·C
  /// payload slots).
  static std::size_t buffer_size(Index classes) {
    return ReduceBuffer::size_for(5, 2 * static_cast<std::size_t>(classes));
  }

 private:
  template <typename>
  friend class EqualizedFocalLoss;

  /// Adds the batch sums of |grad| split by target, then recomputes g (never throws).
  template <typename GD, typename LD>
  void accumulate(const Eigen::DenseBase<GD>& grad, const Eigen::DenseBase<LD>& labels,
                  double decay) {
    batch_sums(grad, labels);
    apply_batch(decay);
  }

  /// The batch sums Σ_i |Γ_ij| t_ij and Σ_i |Γ_ij| (1 − t_ij) into batch_pos_ / batch_neg_
  /// (their storage is the constructor's: allocates nothing; never throws).
  template <typename GD, typename LD>
  void batch_sums(const Eigen::DenseBase<GD>& grad, const Eigen::DenseBase<LD>& labels) {
    batch_pos_.setZero();
    batch_neg_.setZero();
    const Index n = grad.rows(), c = grad.cols();
    // C = 0: nothing to add (and row(i) of an empty N × 0 array would offset a null pointer).
    for (Index i = 0; c > 0 && i < n; ++i) {
      const auto lab = labels.derived().coeff(i);
      if (lab == kIgnore) continue;
      if (lab == kBackground) {
        batch_neg_ += grad.derived().row(i).transpose().array().abs().template cast<double>();
        continue;
      }
      for (Index j = 0; j < c; ++j) {
        const double a = std::abs(static_cast<double>(grad.derived().coeff(i, j)));
        if (j == lab - 1) {
          batch_pos_[j] += a;
        } else {
          batch_neg_[j] += a;
        }
      }
    }
  }

  /// Writes this call's batch sums (as accumulate() forms them) into a statistics buffer with
  /// the loss's header (classes, decay, α, γ_b, s as IEEE bits); the state's G and g are not
  /// changed. `out` is rebuilt in place (ReduceBuffer::assign): a buffer reused from the
  /// previous step is not reallocated, so the steady state allocates nothing.
  template <typename GD, typename LD>
  void batch_into(const Eigen::DenseBase<GD>& grad, const Eigen::DenseBase<LD>& labels,
                  const std::array<std::uint64_t, 5>& header, ReduceBuffer& out) {
    batch_sums(grad, labels);
    const Index c = num_classes();
    out.assign(StateMethod::equalized_focal, kReduceVersion, header,
               2 * static_cast<std::size_t>(c));
    for (Index j = 0; j < c; ++j) {
      out.payload()[j] = batch_pos_[j];
      out.payload()[c + j] = batch_neg_[j];
    }
  }

  /// G ← decay·G + batch (saturated), then g (never throws).
  void apply_batch(double decay) {
    if (decay != 1.0) {
      pos_ *= decay;
      neg_ *= decay;
    }
    // Saturated at the largest double: a double gradient near DBL_MAX summed over anchors (or
    // over a long training) would otherwise make G inf and the ratio inf / inf = NaN.
    constexpr double kMax = std::numeric_limits<double>::max();
    pos_ = (pos_ + batch_pos_).min(kMax);
    neg_ = (neg_ + batch_neg_).min(kMax);
    ratio_ = (pos_ / (neg_ + 1e-10)).max(0.0).min(1.0);
    ++updates_;
  }

  Eigen::ArrayXd pos_, neg_, ratio_, batch_pos_, batch_neg_;
  long long updates_ = 0;
};

/// Configuration of EqualizedFocalLoss; defaults are the reference's (LVIS config).
template <typename Scalar>
struct EqualizedFocalLossConfig {
  Scalar alpha = Scalar(0.25);  ///< focal α (weight of positives); ≤ 1, < 0 disables
  Scalar gamma_b = Scalar(2);   ///< base focusing parameter γ_b (focal_gamma), finite and > 0
  Scalar scale = Scalar(8);     ///< s (scale_factor), finite and ≥ 0
  double decay = 1.0;           ///< statistics decay in [0, 1]; 1 = cumulative (reference)
  Normalizer normalizer = Normalizer::num_positives();
};

namespace detail {

/// The per-call kernel of EqualizedFocalLoss: the config plus the state's g (read only).
template <typename Scalar>
struct EqualizedFocalKernel {
  static_assert(kScratchBuffers >= 4, "EqualizedFocalKernel uses three scratch buffers");
  Scalar alpha_pos, alpha_neg, gamma_b, scale;
  const double* ratio;

  Scalar gamma(Index j) const { return gamma_b + scale * static_cast<Scalar>(1.0 - ratio[j]); }

  /// t = 0 over a tile, per-column γ_j:
  /// (1−α) w_j σ^γ_j softplus(x) and (1−α) w_j σ^γ_j (σ + γ_j (1 − σ) softplus(x)).
  /// γ_j is expanded over the whole tile first, so every step is one flat vectorised pass
  /// (broadcasting a column vector with colwise() was about 2× slower).
  void negatives(const Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    const Index n = t.size();
    Eigen::Map<const Vec> x(xp, n);
    Eigen::Map<Vec> e(scratch, n), sp(scratch + kTileElems, n), gam(scratch + 2 * kTileElems, n),
        l(loss, n);
    bool all_two = true;
    for (Index j = 0; j < t.cols; ++j) {
      gam[j] = gamma(t.col0 + j);
      all_two = all_two && gam[j] == Scalar(2);
    }
    e = array::exp_neg_abs(x);
    l = e.log1p();  // log1p(e), shared by softplus(x) and softplus(−x)
    sp = x.max(Scalar(0)) + l;
    // softplus(−x) = log1p(e) − min(x, 0), formed directly: softplus(x) − x cancels for float
    // x ≳ 16, and a huge γ_j then turned σ^γ_j ≈ 0 into 1 (a 1e33 loss where the exact is 0).
    if (!all_two) l -= x.min(Scalar(0));
    e = array::sigmoid_from(x, e);         // e now holds σ
    const Scalar c = alpha_neg / gamma_b;  // (1−α) w_j = c γ_j
    if (all_two) {
      l = (Scalar(2) * c) * e.square();
      if (grad) Eigen::Map<Vec>(grad, n) = l * (e + Scalar(2) * (Scalar(1) - e) * sp);
      l *= sp;
      return;
    }
    for (Index r = 1; r < t.rows; ++r) gam.segment(r * t.cols, t.cols) = gam.head(t.cols);
    // σ^γ_j = exp(−γ_j softplus(−x)); exp_nonpositive, not Eigen's exp, which returns ~FLT_MIN/4
    // instead of the subnormal or 0 at the bottom of the range.
    l = array::exp_nonpositive(-(gam * l));
    if (grad) Eigen::Map<Vec>(grad, n) = c * gam * l * (e + gam * (Scalar(1) - e) * sp);
    l = c * gam * l * sp;
  }

  /// t = 1 at column `col` (the one positive element of a row).
  void element(Scalar x, Scalar, Index, Index col, Scalar& loss, Scalar& grad) const {
    const Scalar g = gamma(col);
    const Scalar sp_neg = softplus(-x);  // −log p
    const Scalar p = sigmoid(x);
    const Scalar mod = alpha_pos * (g / gamma_b) * pow_gamma(sigmoid(-x), -softplus(x), g);
    loss = mod * sp_neg;
    grad = mod * (-g * p * sp_neg - sigmoid(-x));  // p − 1 = −σ(−x), no cancellation
  }
};

}  // namespace detail

/// The call signature of EqualizedFocalLoss: the sigmoid heads' (with loss outputs), with its
/// state required.
struct EqualizedFocalSignature : SigmoidSignature {
  using State = EqualizedFocalState;
  static constexpr StateUse state = StateUse::required;
  static constexpr bool reduce = true;  ///< value_and_grad(…, buffer): statistics, no commit
};

/// Equalized focal loss; see the file comment.
template <typename Scalar>
class EqualizedFocalLoss
    : public DenseLoss<EqualizedFocalLoss<Scalar>, Scalar, EqualizedFocalSignature> {
 public:
  using Config = EqualizedFocalLossConfig<Scalar>;
  using State = EqualizedFocalState;
  static constexpr const char* kName = "fgbg::EqualizedFocalLoss";

  explicit EqualizedFocalLoss(const Config& config = {}) : config_(config) {
    detail::require_param(config.alpha <= Scalar(1) && std::isfinite(config.alpha), kName, "alpha",
                          "<= 1 (or < 0 to disable)", config.alpha);
    detail::require_param(std::isfinite(config.gamma_b) && config.gamma_b > Scalar(0), kName,
                          "gamma_b", "finite and > 0", config.gamma_b);
    detail::require_param(std::isfinite(config.scale) && config.scale >= Scalar(0), kName, "scale",
                          "finite and >= 0", config.scale);
    // The class weight w_j = γ_j/γ_b reaches 1 + s/γ_b, and the kernel forms (1−α)/γ_b: both
    // must be finite in the scalar type (a subnormal γ_b gave inf values and statistics).
    detail::require_param(config.gamma_b >= std::numeric_limits<Scalar>::min(), kName, "gamma_b",
                          "finite and >= the smallest normal number", config.gamma_b);
    detail::require_param(
        1.0 + static_cast<double>(config.scale) / static_cast<double>(config.gamma_b) <=
            static_cast<double>(std::numeric_limits<Scalar>::max()),
        kName, "scale", "such that 1 + scale / gamma_b is finite in the scalar type", config.scale);
    // The largest γ_j, reached once the state's ratio is 0, is γ_b + s: in the scalar type it
    // must be finite (float γ_b = FLT_MAX with s = 7.9e33 made γ_j inf, and the gradient NaN).
    detail::require_param(std::isfinite(config.gamma_b + config.scale), kName, "scale",
                          "such that gamma_b + scale is finite in the scalar type", config.scale);
    detail::require_param(config.decay >= 0.0 && config.decay <= 1.0, kName, "decay", "in [0, 1]",
                          config.decay);
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// γ_j = γ_b + s (1 − g_j) that a call with `state` uses for class column j.
  Scalar gamma(const State& state, Index j) const { return kernel(state).gamma(j); }

  /// See DenseLoss: (logits, labels [, grad], state [, weights] [, normalizer]). `value` uses the
  /// state's current γ_j and leaves it as it is; `value_and_grad` then adds this call's gradient
  /// to the state's statistics (see the file comment).
  template <typename Call>
  double run(Call& c) const {
    const auto& x = c.x;
    const auto& labels = c.labels;
    auto& grad = std::get<0>(c.out);
    const State& state = *c.state;
    const LabelStats s =
        detail::check_sigmoid_call(kName, x, labels, c.option, *c.normalizer, grad, c.losses);
    if (state.num_classes() != x.cols())
      detail::throw_invalid(kName, "state has ", state.num_classes(), " classes, the logits ",
                            x.cols(), " columns");
    const double v = detail::sigmoid_onehot(kernel(state), x, labels, c.option,
                                            c.normalizer->resolve(s, x.cols()), grad,
                                            detail::UnitTarget{}, c.losses);
    if constexpr (Call::kReduce) {
      static_assert(
          Call::kGrad,
          "fgbg: this loss (EqualizedFocalLoss) writes its statistics into a ReduceBuffer "
          "from the gradient: pass it to value_and_grad, not value");
      static_assert(!std::is_const<std::remove_pointer_t<decltype(c.reduce)>>::value,
                    "fgbg: this loss (EqualizedFocalLoss) writes its statistics into the "
                    "ReduceBuffer: pass a non-const one");
      c.state->batch_into(grad, labels, header_fields(x.cols()), *c.reduce);
    } else if constexpr (Call::kGrad) {
      c.state->accumulate(grad, labels, config_.decay);
    }
    return v;
  }

  /// The header of this loss's statistics buffers: classes, decay, α, γ_b, s (IEEE bits), as
  /// value_and_grad(…, buffer) writes it.
  std::vector<std::uint64_t> header(Index classes) const {
    const auto h = header_fields(classes);
    return {h.begin(), h.end()};
  }

 private:
  /// header() without allocating (what the call writes).
  std::array<std::uint64_t, 5> header_fields(Index classes) const {
    return {static_cast<std::uint64_t>(classes), double_bits(config_.decay),
            double_bits(static_cast<double>(config_.alpha)),
            double_bits(static_cast<double>(config_.gamma_b)),
            double_bits(static_cast<double>(config_.scale))};
  }

  detail::EqualizedFocalKernel<Scalar> kernel(const State& state) const {
    const bool off = config_.alpha < Scalar(0);
    return {off ? Scalar(1) : config_.alpha, off ? Scalar(1) : Scalar(1) - config_.alpha,
            config_.gamma_b, config_.scale, state.ratio().data()};
  }

  Config config_;
};

}  // namespace fgbg
