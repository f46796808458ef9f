/// @file ghm_c_loss.hpp
/// @brief GHM-C, the gradient harmonizing mechanism for classification, fused with its gradient.
///
/// Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019. Matches mmdetection's
/// `GHMC` (mmdet/models/losses/ghm_loss.py) and the authors' libuyu/GHM_Detection.
///
/// With g = |σ(x) − t| (detached), M bins with edges k/M computed in float32 and the last edge
/// raised by 1e-6, R_k the number of valid elements whose g falls in bin k, n the number of
/// non-empty bins and tot = max(1, #valid elements):
///
///   β = tot / R_k            (momentum μ = 0), or
///   S_k ← μ S_k + (1−μ) R_k for non-empty bins, β = tot / S_k   (μ > 0; empty bins keep S_k)
///   β ← β / n                (the reference; the paper divides by M: GhmcDivision::bins)
///   L = Σ β · BCE(x, t) / tot,   ∂L/∂x = β · (σ(x) − t) / tot   (β constant for the gradient)
///
/// BCE(x, 1) is evaluated as softplus(−x) and BCE(x, 0) as softplus(x): no cancellation for
/// positives with large logits.
///
/// Weights act only as a validity mask (Ω > 0), as the reference's label_weight does; their
/// magnitude is ignored. The normaliser is GHM-C's own tot (the RetinaNet avg_factor is ignored
/// by the reference too). The reference calls GHM-C once per FPN level with one shared moving
/// average; here the caller chooses the grouping by what it passes per call.
///
/// Shapes: logits N × C, labels N (−1 / 0 / 1..C), optional weights N or N × C, gradient N × C;
/// fgbg::element_losses (N × C) or fgbg::anchor_losses (N) as the last argument receive β·BCE of
/// each element (0 where invalid) or its row sum, in the same pass: their sum divided by tot is
/// the value. Cost: two vectorised passes (histogram, then loss and gradient).
///
/// Data parallelism (docs/data_parallel.md): `batch_statistics(logits, labels [, weights])`
/// returns this worker's R_k and valid count in a ReduceBuffer; the caller sums the buffers of
/// all workers; a call given the reduced buffer as its last argument uses the global R_k, n and
/// tot for its factors (and value_and_grad commits the moving average from them), so every
/// worker's gradient equals the rows of the single-process gradient of the whole batch.
///
/// @throws std::invalid_argument for a bad config, shape, label, weight, a state of the wrong
///         size, μ > 0 without a state, or a reduce buffer of the wrong size, of another method,
///         or whose bins, momentum or division differ across ranks; std::domain_error for a non-finite logit or weight.
///         A failed call leaves the state as it was.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/loss_base.hpp"
#include "../core/loss_output.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "../core/state_io.hpp"
#include "../core/table_lookup.hpp"
#include "../core/weights.hpp"

namespace fgbg {

namespace detail {

/// GHM-C's bin of g (−1 for g < 0, the mark of an invalid element): ⌊g·M⌋ corrected by one step
/// against the edges k/M computed in float32, which reproduces the reference's float32 edge table
/// exactly (its last edge, 1 + 1e-6, is above every g ≤ 1). The scalar form is exact. The packet
/// form (float) skips the divisions: it returns ⌊g·M⌋ unless g·M lies within 1e-4 of an inner
/// edge — where float rounding of g·M or of k/M could matter — and −2 there, for the caller to
/// finish with the exact scalar form (see resolve_bin).
template <typename Scalar>
struct GhmBinOp {
  Scalar m;
  static Scalar edge(Scalar k, Scalar m) {
    return static_cast<Scalar>(static_cast<float>(k) / static_cast<float>(m));
  }
  EIGEN_STRONG_INLINE Scalar operator()(const Scalar& g) const {
    if (g < Scalar(0)) return Scalar(-1);
    Scalar k = std::min(std::floor(g * m), m - Scalar(1));
    if (g < edge(k, m))
      k -= Scalar(1);
    else if (k + Scalar(1) < m && g >= edge(k + Scalar(1), m))
      k += Scalar(1);
    return k;
  }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& g) const {
    namespace ei = Eigen::internal;
    const Packet zero = ei::pzero(g), one = ei::pset1<Packet>(Scalar(1));
    const Packet eps = ei::pset1<Packet>(Scalar(1e-4));
    const Packet gm = ei::pmul(g, ei::pset1<Packet>(m));
    const Packet fl = ei::pfloor(gm);
    const Packet frac = ei::psub(gm, fl);
    // Near an edge k/M with 0 < k (edge 0 is exact), or at or above M (g = 1).
    const Packet near = ei::por(ei::pand(ei::pcmp_lt(frac, eps), ei::pcmp_lt(zero, fl)),
                                ei::pcmp_lt(ei::psub(one, eps), frac));
    const Packet k = ei::pselect(near, ei::pset1<Packet>(Scalar(-2)), fl);
    return ei::pselect(ei::pcmp_lt(g, zero), ei::pset1<Packet>(Scalar(-1)), k);
  }
};

}  // namespace detail
}  // namespace fgbg

namespace Eigen {
namespace internal {
template <typename Scalar>
struct functor_traits<fgbg::detail::GhmBinOp<Scalar>> {
  // The packet path is written for float's rounding; double uses the exact scalar form.
  enum { Cost = 10, PacketAccess = std::is_same<Scalar, float>::value };
};
}  // namespace internal
}  // namespace Eigen

namespace fgbg {

/// What β is divided by after the density weighting.
enum class GhmcDivision {
  nonempty_bins,  ///< n, the number of non-empty bins (reference code; default)
  bins            ///< M, the number of bins (paper)
};

/// Configuration of GhmcLoss; defaults are mmdetection's class defaults (its published RetinaNet
/// config uses bins = 30, momentum = 0.75).
struct GhmcLossConfig {
  int bins = 10;          ///< M, 1..256
  double momentum = 0.0;  ///< μ ∈ [0, 1)
  GhmcDivision division = GhmcDivision::nonempty_bins;
};

/// The explicit state of GHM-C: the moving bin populations S_k (used when μ > 0) and the
/// statistics of the last call. Reset it to restart training; one state per independent stream.
class GhmcState {
 public:
  explicit GhmcState(int bins = 10)
      : moving_(checked_bins(bins), 0.0), counts_(checked_bins(bins), 0) {}

  /// Zeroes the moving averages and the last-call statistics.
  void reset() {
    std::fill(moving_.begin(), moving_.end(), 0.0);
    std::fill(counts_.begin(), counts_.end(), 0);
    nonempty_ = 0;
    tot_ = 0;
  }

  int bins() const { return static_cast<int>(moving_.size()); }
  /// S_k, the moving bin populations (zero until a call with μ > 0).
  const std::vector<double>& moving_counts() const { return moving_; }
  /// R_k of the last call.
  const std::vector<Index>& bin_counts() const { return counts_; }
  /// n of the last call.
  Index nonempty_bins() const { return nonempty_; }
  /// tot of the last call.
  double tot() const { return tot_; }

  /// Every field of the state as a plain struct (restore() takes it back).
  struct Snapshot {
    std::vector<double> moving;  ///< S_k
    std::vector<Index> counts;   ///< R_k of the last call
    Index nonempty = 0;          ///< n of the last call
    double tot = 0;              ///< tot of the last call
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.moving == b.moving && a.counts == b.counts && a.nonempty == b.nonempty &&
             a.tot == b.tot;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };
  static constexpr std::uint32_t kVersion = 1;  ///< blob format of GhmcState
  static constexpr const char* kName = "fgbg::GhmcState";

  /// A copy of every field.
  Snapshot snapshot() const { return {moving_, counts_, nonempty_, tot_}; }
  /// Takes every field from `s`. Throws std::invalid_argument (state untouched) unless it has
  /// 1..256 bins, counts and moving averages of equal length, S_k finite and ≥ 0, R_k ≥ 0,
  /// n ≤ bins and tot ≥ 0 finite.
  void restore(const Snapshot& s) {
    const std::size_t m = s.moving.size();
    if (m < 1 || m > 256 || s.counts.size() != m)
      detail::throw_invalid(kName, "snapshot has ", m, " moving averages and ", s.counts.size(),
                            " counts; both must be one equal number in 1..256");
    for (std::size_t k = 0; k < m; ++k)
      if (!(std::isfinite(s.moving[k]) && s.moving[k] >= 0.0) || s.counts[k] < 0)
        detail::throw_invalid(kName, "snapshot bin ", k, " has S = ", s.moving[k],
                              ", R = ", s.counts[k], "; both must be finite and >= 0");
    if (s.nonempty < 0 || s.nonempty > static_cast<Index>(m) || !(std::isfinite(s.tot)) ||
        s.tot < 0.0)
      detail::throw_invalid(kName, "snapshot has n = ", s.nonempty, ", tot = ", s.tot,
                            "; n must be in 0..bins, tot finite and >= 0");
    moving_ = s.moving;
    counts_ = s.counts;
    nonempty_ = s.nonempty;
    tot_ = s.tot;
  }
  /// The state as a versioned, little-endian, checksummed blob (core/state_io.hpp): bins, then
  /// S_k (IEEE-754 bits), R_k, n, tot.
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::ghm_c, kVersion);
    w.u64(moving_.size());
    for (double v : moving_) w.f64(v);
    for (Index v : counts_) w.i64(v);
    w.i64(nonempty_);
    w.f64(tot_);
    return w.finish();
  }
  /// Loads a blob written by save(), of any number of bins. Throws std::invalid_argument for a
  /// blob of another method or version, a truncated or corrupted one (checksum) or invalid
  /// contents (as restore()); the state is untouched then.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::ghm_c, kVersion);
    const std::uint64_t m = r.u64();
    if (m < 1 || m > 256) detail::throw_invalid(kName, "blob has ", m, " bins, not in 1..256");
    Snapshot s;
    s.moving.resize(m);
    s.counts.resize(m);
    for (auto& v : s.moving) v = r.f64();
    for (auto& v : s.counts) v = r.i64();
    s.nonempty = r.i64();
    s.tot = r.f64();
    r.done();
    restore(s);
  }
  friend bool operator==(const GhmcState& a, const GhmcState& b) {
    return a.snapshot() == b.snapshot();
  }
  friend bool operator!=(const GhmcState& a, const GhmcState& b) { return !(a == b); }

 private:
  // Validated before the members are sized (a negative count used to reach std::vector first).
  static std::size_t checked_bins(int bins) {
    detail::require_param(bins >= 1 && bins <= 256, "fgbg::GhmcState", "bins", "in 1..256", bins);
    return static_cast<std::size_t>(bins);
  }
  template <typename>
  friend class GhmcLoss;
  std::vector<double> moving_;
  std::vector<Index> counts_;
  Index nonempty_ = 0;
  double tot_ = 0;
};

/// The call signature of GhmcLoss: an optional state (required with momentum), weights as a
/// validity mask, no normaliser (GHM-C normalises by its own tot).
struct GhmcSignature : DefaultSignature {
  using State = GhmcState;
  static constexpr StateUse state = StateUse::optional;
  static constexpr bool normalizer = false;
  static constexpr bool reduce = true;  ///< the reduced histogram of batch_statistics
  /// element_losses / anchor_losses receive β·BCE (Σ / tot is the value)
  static constexpr LossOutputs losses = LossOutputs::both;
};

/// GHM-C loss; see the file comment. Call: (logits, labels [, grad] [, state] [, weights]);
/// `value` with a state gives the value value_and_grad would return, advancing the moving
/// averages only in a local copy; `value_and_grad` updates the state.
template <typename Scalar>
class GhmcLoss : public DenseLoss<GhmcLoss<Scalar>, Scalar, GhmcSignature> {
 public:
  using Config = GhmcLossConfig;
  static constexpr const char* kName = "fgbg::GhmcLoss";
  static constexpr int kMaxBins = 256;

  explicit GhmcLoss(const Config& config = {}) : config_(config) {
    detail::require_param(config.bins >= 1 && config.bins <= kMaxBins, kName, "bins", "in 1..256",
                          config.bins);
    detail::require_param(config.momentum >= 0.0 && config.momentum < 1.0, kName, "momentum",
                          "in [0, 1)", config.momentum);
  }

  const Config& config() const { return config_; }

  static constexpr std::uint32_t kReduceVersion = 1;  ///< format of the statistics buffer

  /// Step 1 of data parallelism: this worker's histogram as a ReduceBuffer. Header: bins,
  /// momentum (IEEE bits), division; payload: R_0 … R_{M−1}, then the valid count (exact
  /// integers). Sum the buffers of every worker (SUM all-reduce over `data(), size()`), then
  /// pass the result as the last argument of value / value_and_grad. Throws as a call does
  /// (shapes, labels, weights, non-finite logits); changes nothing.
  template <typename XD, typename LD>
  ReduceBuffer batch_statistics(const Eigen::DenseBase<XD>& logits,
                                const Eigen::DenseBase<LD>& labels,
                                Weights<Scalar> weights = {}) const {
    detail::None none;
    check_call(logits, labels, weights, nullptr, none, false);
    const Histogram h = histogram(logits, labels, weights, none);
    ReduceBuffer b = empty_buffer();
    for (int k = 0; k < config_.bins; ++k) b.payload()[k] = static_cast<double>(h.count[k]);
    b.payload()[config_.bins] = static_cast<double>(h.valid);
    return b;
  }
  /// batch_statistics with weights given as any Eigen array (N or N × C).
  template <typename XD, typename LD, typename WD>
  ReduceBuffer batch_statistics(const Eigen::DenseBase<XD>& logits,
                                const Eigen::DenseBase<LD>& labels,
                                const Eigen::DenseBase<WD>& weights) const {
    return batch_statistics(logits, labels, Weights<Scalar>(weights));
  }

  /// See DenseLoss and the class comment.
  template <typename Call>
  double run(Call& c) const {
    auto& grad = std::get<0>(c.out);
    Weights<Scalar>& w = c.option;
    Histogram global{};
    if constexpr (Call::kReduce) global = reduced_histogram(*c.reduce);
    detail::MemView grad_view;
    if constexpr (detail::kGiven<std::decay_t<decltype(grad)>>)
      grad_view = detail::MemView::of(grad);
    c.losses.check(
        kName, c.x.rows(), c.x.cols(),
        {{detail::MemView::of(c.x), "logits"}, {grad_view, "grad"}, {w.view(), "weights"}});
    check_call(c.x, c.labels, w, c.state, grad);
    c.losses.prepare(c.x.rows(), c.x.cols());
    // Pass 1: the bin of every element and the histogram of the valid ones.
    Histogram h = histogram(c.x, c.labels, w, grad);
    const bool local_empty = h.valid == 0;
    if constexpr (Call::kReduce) h = global;  // the factors come from the whole batch
    // The per-bin factors β_k / tot, and the state update.
    std::array<Scalar, kMaxBins + 1> factor{};
    GhmcState* update = nullptr;
    if constexpr (Call::kGrad) update = c.state;
    bin_factors(h, c.state, update, factor);
    // Pass 2: loss and gradient (and the loss outputs, which pass 2 writes even when this
    // worker has no valid element: zeros).
    if (local_empty && !c.losses.given()) {
      if constexpr (Call::kGrad) grad.derived().setZero();
      return 0.0;
    }
    const double tot = std::max<double>(1.0, static_cast<double>(h.valid));
    return loss_pass(c.x, c.labels, w, factor, grad, c.losses, tot);
  }

 private:
  struct Histogram {
    Index count[kMaxBins];
    Index valid;
  };
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

  /// A zeroed statistics buffer with this loss's header.
  ReduceBuffer empty_buffer() const {
    return ReduceBuffer::make(
        StateMethod::ghm_c, kReduceVersion,
        {static_cast<std::uint64_t>(config_.bins), double_bits(config_.momentum),
         static_cast<std::uint64_t>(config_.division)},
        static_cast<std::size_t>(config_.bins) + 1);
  }

  /// The global histogram of a reduced buffer, after checking its size, header (against this
  /// loss's config) and counts; throws std::invalid_argument, reads only.
  Histogram reduced_histogram(const ReduceBuffer& b) const {
    const std::size_t want = ReduceBuffer::size_for(3, static_cast<std::size_t>(config_.bins) + 1);
    b.check(kName, StateMethod::ghm_c, kReduceVersion, want, {"bins", "momentum", "division"});
    b.expect_field(kName, 0, "bins", static_cast<std::uint64_t>(config_.bins));
    b.expect_field(kName, 1, "momentum", double_bits(config_.momentum));
    b.expect_field(kName, 2, "division", static_cast<std::uint64_t>(config_.division));
    Histogram h{};
    std::int64_t sum = 0;
    for (int k = 0; k < config_.bins; ++k) {
      h.count[k] = b.count(kName, "bin count", static_cast<std::size_t>(k));
      sum = detail::checked_count_sum(kName, "sum of the bin counts", sum, h.count[k]);
    }
    h.valid = b.count(kName, "valid count", static_cast<std::size_t>(config_.bins));
    if (sum != h.valid)
      detail::throw_invalid(kName, "reduced bin counts sum to ", sum, ", the valid count is ",
                            h.valid, " (a corrupted or partially reduced buffer)");
    return h;
  }

  /// Bin of every g of a tile into `bins` (−1 where g < 0, i.e. invalid; −2 where the fast
  /// float path leaves the element to resolve_bin).
  void bins_of(const Scalar* g, Scalar* bins, Index n) const {
    Eigen::Map<Vec>(bins, n) = Eigen::Map<const Vec>(g, n).unaryExpr(
        detail::GhmBinOp<Scalar>{static_cast<Scalar>(config_.bins)});
  }

  /// The final bin index of element i: bins[i], or the exact scalar form where it is −2.
  int resolve_bin(const Scalar* g, Scalar* bins, Index i) const {
    if (bins[i] < Scalar(-1.5))
      bins[i] = detail::GhmBinOp<Scalar>{static_cast<Scalar>(config_.bins)}(g[i]);
    return static_cast<int>(bins[i]);
  }

  /// Turns p = σ(x) of a tile into g = |p − t| in place, and marks invalid elements (ignored
  /// rows, zero weights) with g = −1.
  template <typename LD>
  void to_g(const detail::Tile& t, const Eigen::DenseBase<LD>& labels, const Weights<Scalar>& w,
            Scalar* g) const {
    for (Index r = 0; r < t.rows; ++r) {
      const Index row = t.row0 + r;
      const auto lab = labels.derived().coeff(row);
      Scalar* gr = g + r * t.cols;
      if (lab == kIgnore ||
          (w.kind() == Weights<Scalar>::Kind::per_anchor && !(w.anchor(row) > Scalar(0)))) {
        Eigen::Map<Vec>(gr, t.cols).setConstant(Scalar(-1));
        continue;
      }
      const Index col = static_cast<Index>(lab) - 1 - t.col0;
      if (lab > 0 && col >= 0 && col < t.cols) gr[col] = Scalar(1) - gr[col];
      if (w.kind() == Weights<Scalar>::Kind::per_element)
        for (Index j = 0; j < t.cols; ++j)
          if (!(w.at(row, t.col0 + j) > Scalar(0))) gr[j] = Scalar(-1);
    }
  }

  /// Every check, before anything is written; nothing after it throws.
  template <typename XD, typename LD, typename GradOut>
  void check_call(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                  Weights<Scalar>& w, const GhmcState* state, GradOut& grad,
                  bool need_state = true) const {
    static_assert(kStorableAs<typename XD::Scalar, Scalar>,
                  "fgbg: the logits must have the loss's scalar type (or Eigen::half / "
                  "Eigen::bfloat16 for a float loss)");
    detail::check_labels(kName, labels, x.rows(), x.cols());
    w.bind(kName, x.rows(), x.cols());
    if constexpr (detail::kGiven<GradOut>) {
      detail::check_output(kName, "grad", grad, x.rows(), x.cols());
      detail::check_no_alias(kName, x, grad);
      w.check_no_alias(kName, grad);
    }
    if (state && state->bins() != config_.bins)
      detail::throw_invalid(kName, "state has ", state->bins(), " bins, the loss ", config_.bins);
    if (need_state && !state && config_.momentum > 0.0)
      detail::throw_invalid(kName, "momentum ", config_.momentum,
                            " > 0 needs a GhmcState argument");
    detail::check_finite(kName, "logits", x);
    if constexpr (detail::kGiven<GradOut>)
      detail::prepare_output(kName, "grad", grad, x.rows(), x.cols());
  }

  /// Pass 1: the bin of every element (−1 if invalid) and the histogram of the valid ones. With
  /// a gradient output the bins are kept in it, so pass 2 need not recompute them.
  template <typename XD, typename LD, typename GradOut>
  Histogram histogram(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                      const Weights<Scalar>& w, GradOut& grad) const {
    Histogram init{};
    auto tile = [&](const detail::Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch,
                    Histogram& acc) {
      const Index n = t.size();
      Scalar* g = scratch;
      Scalar* bins = gt ? gt : scratch + detail::kTileElems;
      Eigen::Map<Vec>(g, n) = array::sigmoid(Eigen::Map<const Vec>(xt, n));
      to_g(t, labels, w, g);
      bins_of(g, bins, n);
      // Counter index bin + 2: 0 counts the −2 marks the fast binning left to the exact form
      // (rare: resolved below), 1 the invalid elements, k + 2 bin k. One vectorised conversion.
      std::int32_t idx[detail::kTileElems];
      Eigen::Map<Eigen::Array<std::int32_t, Eigen::Dynamic, 1>>(idx, n) =
          Eigen::Map<const Vec>(bins, n).template cast<std::int32_t>() + 2;
      // Eight interleaved sub-histograms: consecutive elements mostly share a bin, and a single
      // counter would serialise every increment on the previous one.
      constexpr int kSub = 8;
      const int slots = config_.bins + 2;
      std::int32_t sub[kSub][kMaxBins + 2];
      for (auto& h8 : sub) std::fill(h8, h8 + slots, 0);
      Index i = 0;
      for (; i + kSub <= n; i += kSub)
        for (int j = 0; j < kSub; ++j) ++sub[j][idx[i + j]];
      for (; i < n; ++i) ++sub[0][idx[i]];
      std::int32_t hist[kMaxBins + 2] = {};
      for (int b = 0; b < slots; ++b)
        for (int j = 0; j < kSub; ++j) hist[b] += sub[j][b];
      if (hist[0] > 0)
        for (Index q = 0; q < n; ++q)
          if (idx[q] == 0) ++hist[resolve_bin(g, bins, q) + 2];
      acc.valid += n - hist[1];
      for (int k = 0; k < config_.bins; ++k) acc.count[k] += hist[k + 2];
    };
    auto merge = [&](Histogram& total, const Histogram& part) {
      for (int k = 0; k < config_.bins; ++k) total.count[k] += part.count[k];
      total.valid += part.valid;
    };
    return detail::tiled_reduce<Scalar>(x, grad, init, tile, merge);
  }

  /// factor[k + 1] = β_k / tot for bin k (factor[0] = 0 is for invalid elements); records the
  /// call's statistics and moving averages in `update` when given.
  void bin_factors(const Histogram& h, const GhmcState* state, GhmcState* update,
                   std::array<Scalar, kMaxBins + 1>& factor) const {
    const int m = config_.bins;
    const double tot = std::max<double>(1.0, static_cast<double>(h.valid));
    Index nonempty = 0;
    for (int k = 0; k < m; ++k) nonempty += h.count[k] > 0;
    const double divide = config_.division == GhmcDivision::bins ? m : std::max<Index>(nonempty, 1);
    for (int k = 0; k < m; ++k) {
      if (h.count[k] == 0) continue;
      double density = static_cast<double>(h.count[k]);
      if (config_.momentum > 0.0) {
        density = config_.momentum * state->moving_[k] + (1.0 - config_.momentum) * density;
        if (update) update->moving_[k] = density;
      }
      // (tot / density / divide) / tot
      factor[k + 1] = static_cast<Scalar>(1.0 / (density * divide));
    }
    if (update) {
      for (int k = 0; k < m; ++k) update->counts_[k] = h.count[k];
      update->nonempty_ = nonempty;
      update->tot_ = tot;
    }
  }

  /// Pass 2: Σ f·BCE and the gradient f·(σ − t), f = β/tot per element (0 if invalid); β·BCE
  /// = f·BCE·tot into the loss output `losses` when given.
  template <typename XD, typename LD, typename GradOut>
  double loss_pass(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                   const Weights<Scalar>& w, const std::array<Scalar, kMaxBins + 1>& factor,
                   GradOut& grad, const detail::LossSink<Scalar>& losses, double tot) const {
    constexpr bool kGrad = detail::kGiven<GradOut>;
    const int m = config_.bins;
    using Sink = detail::LossSink<Scalar>;
    detail::ErasedOutput<Scalar> element_out = losses.element;
    return detail::tiled_sum<Scalar>(
        x, grad, [&](const detail::Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch) {
          const Index n = t.size();
          Eigen::Map<const Vec> xv(xt, n);
          Eigen::Map<Vec> p(scratch, n), sp(scratch + detail::kTileElems, n),
              g(scratch + 2 * detail::kTileElems, n), f(scratch + 3 * detail::kTileElems, n);
          p = array::exp_neg_abs(xv);
          sp = array::softplus_from(xv, p);
          p = array::sigmoid_from(xv, p);
          const Scalar* bins;
          if constexpr (kGrad) {
            // The bins pass 1 left in the gradient output (gathered if it is not row-major;
            // exact in half precision too: integers −2 .. 255).
            bins = detail::load_tile(grad, t, g.data());
          } else {
            g = p;
            to_g(t, labels, w, g.data());
            bins_of(g.data(), f.data(), n);
            for (Index i = 0; i < n; ++i) resolve_bin(g.data(), f.data(), i);
            bins = f.data();
          }
          // Indices first (a vectorised conversion), then the table lookup (register permutes
          // for up to 31 bins).
          std::int32_t idx[detail::kTileElems];
          Eigen::Map<Eigen::Array<std::int32_t, Eigen::Dynamic, 1>>(idx, n) =
              Eigen::Map<const Vec>(bins, n).template cast<std::int32_t>() + 1;
          detail::lookup_table(factor.data(), m + 1, idx, f.data(), n);
          if constexpr (kGrad) Eigen::Map<Vec>(gt, n) = f * p;
          // Positive elements: BCE(x, 1) = softplus(−x) directly (softplus(x) − x cancels, and
          // f·softplus(x) − f·x summed apart lost everything for large x), gradient f·(p − 1).
          for (Index r = 0; r < t.rows; ++r) {
            const auto lab = labels.derived().coeff(t.row0 + r);
            const Index col = static_cast<Index>(lab) - 1 - t.col0;
            if (lab <= 0 || col < 0 || col >= t.cols) continue;
            const Index i = r * t.cols + col;
            sp[i] = softplus(-xt[i]);
            if constexpr (kGrad) gt[i] = -f[i] * sigmoid(-xt[i]);  // f·(p − 1), no cancellation
          }
          if (losses.kind == Sink::Kind::element) {
            alignas(64) Scalar buf[detail::kTileElems];
            Scalar* et = detail::output_tile(element_out, t, buf);
            for (Index i = 0; i < n; ++i)
              et[i] = f[i] == Scalar(0) ? Scalar(0)
                                        : static_cast<Scalar>(static_cast<double>(sp[i]) *
                                                              static_cast<double>(f[i]) * tot);
            detail::store_tile(element_out, t, et, buf);
          } else if (losses.kind == Sink::Kind::anchor) {
            double anchor_of[detail::kTileElems];
            for (Index r = 0; r < t.rows; ++r) {
              double row = 0.0;
              for (Index j = 0; j < t.cols; ++j) {
                const Index i = r * t.cols + j;
                if (f[i] != Scalar(0))
                  row += static_cast<double>(sp[i]) * static_cast<double>(f[i]) * tot;
              }
              anchor_of[r] = row;
            }
            losses.anchor_fn(losses.obj, t.row0, t.rows, anchor_of, t.col0 > 0);
          }
          // Every f·BCE ≥ 0 is at most the result, so only a run's rounding can overflow: the
          // reduction then sums that run again in double.
          sp *= f;
          return detail::sum_normalised(sp.data(), n, detail::ElementScale(1.0));
        });
  }

  Config config_;
};

}  // namespace fgbg
