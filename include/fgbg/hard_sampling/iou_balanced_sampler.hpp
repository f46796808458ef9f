/// @file iou_balanced_sampler.hpp
/// @brief IoU-balanced negative sampling (Libra R-CNN, Pang et al., CVPR 2019, §3.1): negatives
///        drawn evenly from K IoU bins, so that hard (higher-IoU) negatives are not swamped by
///        the many easy ones.
///
/// Matches mmdetection's `IoUBalancedNegSampler` (Libra R-CNN). Given the negatives Neg, their max
/// IoU with any GT, and N_exp negatives wanted (the batch rule, sampling_common.hpp):
///
///   if |Neg| ≤ N_exp: take all.
///   floor threshold τ:  τ > 0: F = {0 ≤ IoU < τ}, S = {IoU ≥ τ}, τ_eff = τ
///                       τ = 0: F = {IoU = 0},     S = {IoU > 0}, τ_eff = 0
///                       τ < 0: F = ∅,             S = Neg,       τ_eff = 0
///   N_s = ⌊N_exp · (1 − floor_fraction)⌋;
///   if |S| > N_s: K ≥ 2: bins B_k = {i ∈ S : τ_eff + kΔ ≤ IoU < τ_eff + (k+1)Δ},
///                        Δ = (m − τ_eff)/K, q = ⌊N_s/K⌋ random per bin, fill to N_s from
///                        S \ taken; K = 1: N_s random of S.        else take all of S;
///   then N_exp − (taken from S) random of F; then fill to N_exp from Neg \ taken.
///
/// Bin edges are `τ_eff + k·Δ` in double; IoUs are compared as doubles (as numpy does).
///
/// Two reference behaviours are made explicit:
/// 1. **Stateful floor_thr.** In mmdetection a sampler built with floor_thr = −1 (the Libra
///    config) sets its own floor_thr to 0 on its first sampling call (PR #1784/#1800), so only
///    the first call bins every negative; later calls bin only IoU > 0 and use IoU = 0
///    negatives as the floor set. `Mode::faithful` reproduces this, with the state in an
///    explicit IouBalancedState passed to every call (per rank: checkpointed with its save() /
///    load(), never reduced across ranks; see IouBalancedState). `Mode::clean` (the default) is
///    stateless:
///    τ = −1 always means "bin every negative over [0, m)", the behaviour the config asks for and
///    the paper describes; it equals the faithful first call.
/// 2. **Bin range.** m is, in the reference, the max IoU over *all* candidates (positives and GT
///    rows included), so with GT-as-proposals m = 1 and, with K = 3, the top bin [2/3, 1) never
///    holds a negative (mmdet#5323). `range_upper` chooses m: `global_max` (reference, default),
///    `neg_max` (max over negatives) or `fixed` (e.g. the assigner's neg_iou_thr).
///
/// IouBalancedSampler = Libra's CombinedSampler: instance-balanced positives (or random ones)
/// + IoU-balanced negatives, with the R-CNN batch rule (512, 0.25). Inputs: labels, assigned GT
/// index (for instance balance) and max IoU per candidate — an Assignment. Caller-owned URBG;
/// same seed (and state) ⇒ same sample; output ascending; no allocation once the Sample has
/// capacity.
///
/// @throws std::invalid_argument for a bad config, a label < −1, wrong lengths, an IoU outside
///         [0, 1] or a faithful call without state; std::domain_error for a non-finite IoU.
///         Neither the Sample nor the state is touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cstdint>
#include <vector>

#include "../boxes/max_iou_assigner.hpp"
#include "../core/state_io.hpp"
#include "instance_balanced_sampler.hpp"
#include "sampling_common.hpp"

namespace fgbg {

/// Stateless (clean, default) or mmdet's stateful floor_thr (faithful); see the file comment.
enum class IouBalanceMode { clean, faithful };

/// Upper end m of the IoU bins; see the file comment.
enum class IouRangeUpper { global_max, neg_max, fixed };

class IouBalancedSampler;

/// Explicit state of the faithful mode: mmdet's mutable `floor_thr` (−1 until the first call
/// that samples, then 0; or the config's τ ≥ 0 for ever). Create it with
/// IouBalancedSampler::initial_state(), which is also its reset.
///
/// Data parallelism: the state is per rank and is **not** reduced. In mmdetection every rank
/// holds its own sampler, whose floor_thr flips on that rank's first call that samples; the
/// sampling is per image, with a per-rank random generator (the caller's URBG), so there is no
/// batch statistic to sum and a cross-rank reduction would not reproduce the reference. It only
/// needs checkpointing: save() / load() (and the caller's URBG, e.g. std::mt19937_64's
/// operator<< / >>) let a resumed run draw the same samples as an uninterrupted one.
class IouBalancedState {
 public:
  static constexpr const char* kName = "fgbg::IouBalancedState";
  static constexpr std::uint32_t kVersion = 1;  ///< blob format

  /// Every field, as a plain struct (restore() takes it back).
  struct Snapshot {
    double floor_thr = -1;  ///< τ: −1, or in [0, 1]
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.floor_thr == b.floor_thr;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };

  /// A state with floor threshold τ (−1 by default, as a Libra config's first call). Throws
  /// std::invalid_argument unless τ is −1 or in [0, 1].
  explicit IouBalancedState(double floor_thr = -1) { restore({floor_thr}); }

  /// τ of the next faithful call.
  double floor_thr() const { return s_.floor_thr; }

  /// A copy of every field.
  Snapshot snapshot() const { return s_; }
  /// Takes every field. Throws std::invalid_argument (state untouched) unless floor_thr is −1 or
  /// in [0, 1] (NaN is refused).
  void restore(const Snapshot& s) {
    if (!(s.floor_thr == -1 || (s.floor_thr >= 0 && s.floor_thr <= 1)))
      detail::throw_invalid(kName, "floor_thr must be -1 or in [0, 1], got ", s.floor_thr);
    s_ = s;
  }
  /// Versioned, little-endian, checksummed blob (core/state_io.hpp): floor_thr (IEEE-754 bits).
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::iou_balanced, kVersion);
    w.f64(s_.floor_thr);
    return w.finish();
  }
  /// Loads a blob of save(). Throws std::invalid_argument (state untouched) for another method
  /// or version, a truncated, extended or corrupted blob, or contents restore() rejects.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::iou_balanced, kVersion);
    Snapshot s;
    s.floor_thr = r.f64();
    r.done();
    restore(s);
  }
  friend bool operator==(const IouBalancedState& a, const IouBalancedState& b) {
    return a.s_ == b.s_;
  }
  friend bool operator!=(const IouBalancedState& a, const IouBalancedState& b) { return !(a == b); }

 private:
  friend class IouBalancedSampler;
  Snapshot s_;
};

/// Configuration of IouBalancedSampler (defaults: mmdet's Libra R-CNN config).
struct IouBalancedSamplerConfig {
  SamplerConfig batch = SamplerConfig::rcnn();
  double floor_thr = -1;      ///< −1, or ≥ 0
  double floor_fraction = 0;  ///< share of N_exp reserved for the floor set, in [0, 1]
  Index num_bins = 3;         ///< K in [1, 1024] (IouBalancedSampler::kMaxBins)
  IouBalanceMode mode = IouBalanceMode::clean;
  IouRangeUpper range_upper = IouRangeUpper::global_max;
  double fixed_upper = 0.5;                 ///< m when range_upper == fixed, in (0, 1]
  bool instance_balanced_positives = true;  ///< Libra: InstanceBalancedPosSampler
  InstanceBalanceMode positive_mode = InstanceBalanceMode::clean;
};

/// Libra R-CNN sampler with IoU-balanced negatives; see the file comment.
class IouBalancedSampler {
 public:
  using Config = IouBalancedSamplerConfig;
  static constexpr const char* kName = "fgbg::IouBalancedSampler";
  /// Largest accepted num_bins. Each bin scans the binned set once (O(K · |S|) per call), and
  /// more bins than about the batch size only leave bins with a quota of 0 (q = ⌊N_s / K⌋); Libra
  /// R-CNN uses K = 3. The bound keeps a call's cost proportional to its data (K = 2^40 would
  /// loop for hours on an empty bin set).
  static constexpr Index kMaxBins = 1024;

  explicit IouBalancedSampler(const Config& config = {}) : config_(config) {
    const Config& c = config_;
    c.batch.validate(kName);
    detail::require_param(c.floor_thr == -1 || (c.floor_thr >= 0 && c.floor_thr <= 1), kName,
                          "floor_thr", "-1 or in [0, 1]", c.floor_thr);
    detail::require_param(c.floor_fraction >= 0 && c.floor_fraction <= 1, kName, "floor_fraction",
                          "in [0, 1]", c.floor_fraction);
    detail::require_param(c.num_bins >= 1 && c.num_bins <= kMaxBins, kName, "num_bins",
                          "in [1, 1024]", c.num_bins);
    detail::require_param(c.fixed_upper > 0 && c.fixed_upper <= 1, kName, "fixed_upper",
                          "in (0, 1]", c.fixed_upper);
  }

  const Config& config() const { return config_; }

  /// A fresh state for the faithful mode (floor_thr from the config).
  IouBalancedState initial_state() const { return IouBalancedState(config_.floor_thr); }

  /// Full sample (positives + IoU-balanced negatives). `state` is required in faithful mode and
  /// untouched in clean mode.
  template <typename LD, typename GD, typename ID, typename URBG>
  void sample(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index,
              const Eigen::DenseBase<ID>& max_iou, URBG& rng, Sample& out,
              IouBalancedState* state = nullptr) const {
    check(labels, max_iou, state);
    if (config_.instance_balanced_positives) detail::check_gt_index(kName, labels, gt_index);
    const Index p_exp = config_.batch.expected_positives();  // in [0, num]
    out.clear();
    if (config_.instance_balanced_positives) {
      detail::instance_balanced_positives(labels, gt_index, p_exp, config_.positive_mode, rng,
                                          out.scratch, out.positives);
    } else {
      detail::collect(
          labels, [](auto l) { return l > 0; }, out.positives);
      detail::choose_k(out.positives, p_exp, rng, true);
    }
    const Index n_exp = config_.batch.expected_negatives(out.num_positives());
    negatives_unchecked(labels, max_iou, n_exp, rng, out.scratch, out.negatives, state);
  }

  /// Full sample from an assignment (GT-as-proposals rows included if prepended).
  template <typename URBG>
  void sample(const Assignment& a, URBG& rng, Sample& out,
              IouBalancedState* state = nullptr) const {
    sample(a.labels(), a.gt_index(), a.max_iou(), rng, out, state);
  }

  /// Only the IoU-balanced negatives: `n_exp` wanted, into `out.negatives` (out.positives is
  /// left as is, so this composes with any positive sampler).
  template <typename LD, typename ID, typename URBG>
  void sample_negatives(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<ID>& max_iou,
                        Index n_exp, URBG& rng, Sample& out,
                        IouBalancedState* state = nullptr) const {
    check(labels, max_iou, state);
    if (n_exp < 0) detail::throw_invalid(kName, "n_exp must be >= 0, got ", n_exp);
    negatives_unchecked(labels, max_iou, n_exp, rng, out.scratch, out.negatives, state);
  }

 private:
  template <typename LD, typename ID>
  void check(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<ID>& max_iou,
             const IouBalancedState* state) const {
    detail::check_sampler_labels(kName, labels);
    detail::check_values(kName, "max_iou", max_iou, labels.size());
    for (Index i = 0; i < labels.size(); ++i) {
      const double v = static_cast<double>(max_iou.derived().coeff(i));
      if (v < 0 || v > 1)
        detail::throw_invalid(kName, "max_iou(", i, ") = ", v, " is outside [0, 1]");
    }
    // A state's floor_thr is always valid: its constructor, restore() and load() check it.
    if (config_.mode == IouBalanceMode::faithful && state == nullptr)
      detail::throw_invalid(kName, "the faithful mode needs an IouBalancedState (see ",
                            "initial_state()); pass &state");
  }

  template <typename LD, typename ID, typename URBG>
  void negatives_unchecked(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<ID>& iou_,
                           Index n_exp, URBG& rng, detail::SampleScratch& s,
                           std::vector<Index>& out, IouBalancedState* state) const {
    const auto& iou = iou_.derived();
    auto v = [&](Index i) { return static_cast<double>(iou.coeff(i)); };
    // The scratch buffers by role: all negatives, the floor set F (IoU below the floor
    // threshold), the binned set S, the candidates of one draw, and per candidate whether it is
    // already in `out`.
    auto &negatives = s.a, &floor_set = s.b, &binned_set = s.c, &drawn = s.d;
    auto& taken = s.marks;
    detail::collect(
        labels, [](auto l) { return l == 0; }, negatives);  // Neg, ascending
    if (static_cast<Index>(negatives.size()) <= n_exp) {
      out.assign(negatives.begin(), negatives.end());
      return;
    }
    const bool faithful = config_.mode == IouBalanceMode::faithful;
    const double tau = faithful ? state->floor_thr() : config_.floor_thr;
    out.clear();
    const double tau_eff = split_floor_and_binned(negatives, tau, v, floor_set, binned_set);
    if (tau < 0 && faithful) state->s_.floor_thr = 0;  // mmdet's permanent reset

    // ⌊N_exp · (1 − floor_fraction)⌋ ≤ N_exp, clamped in double (N_exp may be INT64_MAX).
    const Index n_s =
        detail::min_with_floor(n_exp, static_cast<double>(n_exp) * (1.0 - config_.floor_fraction));
    const Index neg_count = static_cast<Index>(negatives.size());
    taken.assign(static_cast<std::size_t>(labels.size()), 0);
    if (static_cast<Index>(binned_set.size()) > n_s) {
      if (config_.num_bins >= 2) {
        const double m = bin_upper(labels.size(), negatives, v);
        draw_per_bin(binned_set, tau_eff, m, n_s, v, rng, drawn, out, taken);
      } else {
        drawn = binned_set;
        detail::choose_k(drawn, n_s, rng, false);
        take(drawn, out, taken);
      }
    } else {
      take(binned_set, out, taken);
    }
    const Index n_f = n_exp - static_cast<Index>(out.size());
    detail::choose_k(floor_set, n_f, rng, false);
    take(floor_set, out, taken);
    const Index have = static_cast<Index>(out.size());
    if (have < n_exp && have < neg_count) {
      drawn.clear();
      for (const Index i : negatives)
        if (!taken[i]) drawn.push_back(i);
      detail::choose_k(drawn, n_exp - have, rng, false);
      out.insert(out.end(), drawn.begin(), drawn.end());
    }
    std::sort(out.begin(), out.end());
  }

  /// Splits the negatives into the floor set F and the binned set S (both ascending) by the
  /// floor threshold τ (see the file comment); returns τ_eff, the lower end of the bins.
  template <typename V>
  static double split_floor_and_binned(const std::vector<Index>& negatives, double tau, const V& v,
                                       std::vector<Index>& floor_set,
                                       std::vector<Index>& binned_set) {
    floor_set.clear();
    binned_set.clear();
    for (const Index i : negatives) {
      const double x = v(i);
      bool in_f, in_s;
      if (tau > 0) {
        in_f = x >= 0 && x < tau;
        in_s = x >= tau;
      } else if (tau == 0) {
        in_f = x == 0;
        in_s = x > 0;
      } else {
        in_f = false;
        in_s = x > tau;
      }
      if (in_f) floor_set.push_back(i);
      if (in_s) binned_set.push_back(i);
    }
    return tau > 0 ? tau : 0.0;
  }

  /// Upper end m of the IoU bins (config range_upper): over all `n` candidates, over the
  /// negatives, or the fixed value.
  template <typename V>
  double bin_upper(Index n, const std::vector<Index>& negatives, const V& v) const {
    double m = 0;
    if (config_.range_upper == IouRangeUpper::global_max) {
      for (Index i = 0; i < n; ++i) m = std::max(m, v(i));
    } else if (config_.range_upper == IouRangeUpper::neg_max) {
      for (const Index i : negatives) m = std::max(m, v(i));
    } else {
      m = config_.fixed_upper;
    }
    return m;
  }

  /// K ≥ 2 bins over [τ_eff, m): q = ⌊n_s / K⌋ drawn at random from each bin, then the draw is
  /// filled to n_s from the binned set's untaken members. Appends to `out`, marks `taken`.
  template <typename V, typename URBG>
  void draw_per_bin(const std::vector<Index>& binned_set, double tau_eff, double m, Index n_s,
                    const V& v, URBG& rng, std::vector<Index>& drawn, std::vector<Index>& out,
                    std::vector<unsigned char>& taken) const {
    const Index k_bins = config_.num_bins;
    const double delta = (m - tau_eff) / static_cast<double>(k_bins);
    const Index q = n_s / k_bins;
    for (Index k = 0; k < k_bins; ++k) {
      const double lo = tau_eff + static_cast<double>(k) * delta;
      const double hi = tau_eff + static_cast<double>(k + 1) * delta;
      drawn.clear();
      for (const Index i : binned_set)
        if (v(i) >= lo && v(i) < hi) drawn.push_back(i);
      detail::choose_k(drawn, q, rng, false);
      take(drawn, out, taken);
    }
    const Index taken_count = static_cast<Index>(out.size());
    if (taken_count < n_s) {
      drawn.clear();
      for (const Index i : binned_set)
        if (!taken[i]) drawn.push_back(i);
      detail::choose_k(drawn, n_s - taken_count, rng, false);
      take(drawn, out, taken);
    }
  }

  /// Appends `chosen` to `out` and marks them taken.
  static void take(const std::vector<Index>& chosen, std::vector<Index>& out,
                   std::vector<unsigned char>& taken) {
    for (const Index i : chosen) {
      out.push_back(i);
      taken[i] = 1;
    }
  }

  Config config_;
};

}  // namespace fgbg
