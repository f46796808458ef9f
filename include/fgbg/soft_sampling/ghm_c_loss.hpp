/// @file ghm_c_loss.hpp
/// @brief GHM-C, the gradient harmonizing mechanism for classification, fused with its gradient.
///
/// Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019. Matches mmdetection's
/// `GHMC` (mmdet/models/losses/ghm_loss.py) and the authors' libuyu/GHM_Detection (spec §6).
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
/// Weights act only as a validity mask (Ω > 0), as the reference's label_weight does; their
/// magnitude is ignored. The normaliser is GHM-C's own tot (the RetinaNet avg_factor is ignored
/// by the reference too). The reference calls GHM-C once per FPN level with one shared moving
/// average; here the caller chooses the grouping by what it passes per call.
///
/// Shapes: logits N × C, labels N (−1 / 0 / 1..C), optional weights N or N × C, gradient N × C.
/// Cost: two vectorised passes (histogram, then loss and gradient).
///
/// @throws std::invalid_argument for a bad config, shape, label, weight, a state of the wrong
///         size, or μ > 0 without a state; std::domain_error for a non-finite logit or weight.
///         A failed call leaves the state as it was.
#pragma once

#include <array>
#include <cmath>
#include <vector>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"
#include "../core/weights.hpp"

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
      : moving_(static_cast<std::size_t>(bins), 0.0), counts_(static_cast<std::size_t>(bins), 0) {
    detail::require_param(bins >= 1 && bins <= 256, "fgbg::GhmcState", "bins", "in 1..256",
                          bins);
  }

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

 private:
  template <typename>
  friend class GhmcLoss;
  std::vector<double> moving_;
  std::vector<Index> counts_;
  Index nonempty_ = 0;
  double tot_ = 0;
};

/// GHM-C loss; see the file comment.
template <typename Scalar>
class GhmcLoss {
 public:
  using Config = GhmcLossConfig;
  static constexpr const char* kName = "fgbg::GhmcLoss";
  static constexpr int kMaxBins = 256;

  explicit GhmcLoss(const Config& config = {}) : config_(config) {
    detail::require_param(config.bins >= 1 && config.bins <= kMaxBins, kName, "bins",
                          "in 1..256", config.bins);
    detail::require_param(config.momentum >= 0.0 && config.momentum < 1.0, kName, "momentum",
                          "in [0, 1)", config.momentum);
    const int m = config.bins;
    for (int k = 0; k <= m; ++k) edges_[k] = static_cast<float>(k) / static_cast<float>(m);
    edges_[m] = static_cast<float>(edges_[m] + 1e-6f);
  }

  const Config& config() const { return config_; }

  /// Loss value (μ = 0 only: with momentum pass a GhmcState).
  template <typename XD, typename LD>
  Scalar value(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
               Weights<Scalar> w = {}) const {
    detail::NoGrad none;
    return static_cast<Scalar>(run(x, labels, w, nullptr, none));
  }
  /// Loss value; updates `state` exactly as value_and_grad does.
  template <typename XD, typename LD>
  Scalar value(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
               GhmcState& state, Weights<Scalar> w = {}) const {
    detail::NoGrad none;
    return static_cast<Scalar>(run(x, labels, w, &state, none));
  }
  /// Loss value and gradient (μ = 0 only: with momentum pass a GhmcState).
  template <typename XD, typename LD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<GD>& grad, Weights<Scalar> w = {}) const {
    auto& g = const_cast<Eigen::DenseBase<GD>&>(grad);
    return static_cast<Scalar>(run(x, labels, w, nullptr, g));
  }
  /// Loss value and gradient; updates `state` (moving averages and last-call statistics).
  template <typename XD, typename LD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<GD>& grad, GhmcState& state,
                        Weights<Scalar> w = {}) const {
    auto& g = const_cast<Eigen::DenseBase<GD>&>(grad);
    return static_cast<Scalar>(run(x, labels, w, &state, g));
  }

 private:
  struct Histogram {
    Index count[kMaxBins];
    Index valid;
  };

  int bin_of(Scalar g) const {
    const int m = config_.bins;
    const double gd = static_cast<double>(g);
    int k = static_cast<int>(gd * m);
    k = k < 0 ? 0 : (k > m - 1 ? m - 1 : k);
    while (k > 0 && gd < static_cast<double>(edges_[k])) --k;
    while (k < m - 1 && gd >= static_cast<double>(edges_[k + 1])) ++k;
    return k;
  }

  /// Visits every valid element of a tile with (index in tile, row, column, t).
  template <typename LD, typename F>
  void for_valid(const detail::Tile& t, const Eigen::DenseBase<LD>& labels,
                 const Weights<Scalar>& w, F&& f) const {
    for (Index r = 0; r < t.rows; ++r) {
      const Index row = t.row0 + r;
      const auto lab = labels.derived().coeff(row);
      if (lab == kIgnore) continue;
      if (w.kind() == Weights<Scalar>::Kind::per_anchor && !(w.anchor(row) > Scalar(0))) continue;
      for (Index j = 0; j < t.cols; ++j) {
        if (w.kind() == Weights<Scalar>::Kind::per_element && !(w.at(row, t.col0 + j) > Scalar(0)))
          continue;
        f(r * t.cols + j, row, t.col0 + j, lab == t.col0 + j + 1);
      }
    }
  }

  template <typename XD, typename LD, typename GradOut>
  double run(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
             Weights<Scalar> w, GhmcState* state, GradOut& grad) const {
    constexpr bool kGrad = !std::is_same<GradOut, detail::NoGrad>::value;
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    static_assert(std::is_same<typename XD::Scalar, Scalar>::value,
                  "fgbg: the logits must have the loss's scalar type");
    // Checks first: nothing below may throw.
    detail::check_labels(kName, labels, x.rows(), x.cols());
    w.bind(kName, x.rows(), x.cols());
    if constexpr (kGrad) detail::check_output(kName, "grad", grad, x.rows(), x.cols());
    if (state && state->bins() != config_.bins)
      detail::throw_invalid(kName, "state has ", state->bins(), " bins, the loss ", config_.bins);
    if (!state && config_.momentum > 0.0)
      detail::throw_invalid(kName, "momentum ", config_.momentum,
                            " > 0 needs a GhmcState argument");
    detail::check_finite(kName, "logits", x);
    if constexpr (kGrad) detail::prepare_output(kName, "grad", grad, x.rows(), x.cols());

    // Pass 1: the histogram of g over valid elements.
    detail::NoGrad none;
    Histogram init{};
    const Histogram h = detail::tiled_reduce<Scalar>(
        x, none, init,
        [&](const detail::Tile& t, const Scalar* xt, Scalar*, Scalar* scratch, Histogram& acc) {
          Eigen::Map<Vec> p(scratch, t.size());
          p = array::sigmoid(Eigen::Map<const Vec>(xt, t.size()));
          for_valid(t, labels, w, [&](Index i, Index, Index, bool pos) {
            ++acc.count[bin_of(pos ? Scalar(1) - p[i] : p[i])];
            ++acc.valid;
          });
        },
        [&](Histogram& total, const Histogram& part) {
          for (int k = 0; k < config_.bins; ++k) total.count[k] += part.count[k];
          total.valid += part.valid;
        });

    // Per-bin factor β_k / tot, and the state update.
    const int m = config_.bins;
    const double tot = std::max<double>(1.0, static_cast<double>(h.valid));
    Index nonempty = 0;
    for (int k = 0; k < m; ++k) nonempty += h.count[k] > 0;
    std::array<double, kMaxBins> factor{};
    const double divide = config_.division == GhmcDivision::bins ? m : std::max<Index>(nonempty, 1);
    for (int k = 0; k < m; ++k) {
      if (h.count[k] == 0) continue;
      double density = static_cast<double>(h.count[k]);
      if (config_.momentum > 0.0) {
        double& s = state->moving_[k];
        s = config_.momentum * s + (1.0 - config_.momentum) * density;
        density = s;
      }
      factor[k] = 1.0 / (density * divide);  // (tot / density / divide) / tot
    }
    if (state) {
      for (int k = 0; k < m; ++k) state->counts_[k] = h.count[k];
      state->nonempty_ = nonempty;
      state->tot_ = tot;
    }

    // Pass 2: loss and gradient.
    if (h.valid == 0) {
      if constexpr (kGrad) grad.derived().setZero();
      return 0.0;
    }
    const double sum = detail::tiled_sum<Scalar>(
        x, grad, [&](const detail::Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch) {
          const Index n = t.size();
          Eigen::Map<const Vec> xv(xt, n);
          Eigen::Map<Vec> e(scratch, n), sp(scratch + detail::kTileElems, n);
          e = array::exp_neg_abs(xv);
          sp = array::softplus_from(xv, e);
          e = array::sigmoid_from(xv, e);  // p
          if constexpr (kGrad) Eigen::Map<Vec>(gt, n).setZero();
          double acc = 0.0;
          for_valid(t, labels, w, [&](Index i, Index, Index, bool pos) {
            const Scalar p = e[i];
            const double f = factor[bin_of(pos ? Scalar(1) - p : p)];
            acc += f * static_cast<double>(pos ? sp[i] - xt[i] : sp[i]);
            if constexpr (kGrad) gt[i] = static_cast<Scalar>(f) * (pos ? p - Scalar(1) : p);
          });
          return acc;
        });
    return sum;
  }

  Config config_;
  std::array<float, kMaxBins + 1> edges_{};
};

}  // namespace fgbg
