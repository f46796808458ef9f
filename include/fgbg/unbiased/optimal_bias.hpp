/// @file optimal_bias.hpp
/// @brief Sampling-free optimal bias initialisation: the classifier bias that makes the initial
///        prediction equal the data set's foreground frequency, computed from anchor statistics.
///
/// J. Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
/// Detectors?", IEEE TIP 2021 (arXiv 1909.04868), the "optimal bias initialisation" ingredient.
/// Matches ChenJoya/sampling-free @ 5f133dc (maskrcnn_benchmark/modeling/sampling_free.py and the
/// cached init_prior.json).
///
/// Statistics: run the detector's own assigner over the training set once and count
///   N_fg = anchors with a foreground label (1..C; includes low-quality best matches),
///   N_bg = anchors labelled background (0); ignored anchors (-1) are not counted.
/// Counts from several workers are merged by adding them (the reference all-reduces them).
///
/// Sigmoid heads (C foreground channels, one shared scalar for every channel, as released):
///   π = N_fg / (N_fg + N_bg) / C,        b = ln(π / (1 − π))
/// b minimises the initial BCE when the weights are ≈ 0 (σ(b) equals the mean target per channel);
/// it is fgbg::prior_bias (soft_sampling/prior_bias.hpp), the RetinaNet init with π taken from the
/// data instead of 0.01, computed as b = ln(N_fg / ((C − 1) N_fg + C N_bg)) so that it stays
/// exact when π rounds to 1 in double.
///
/// Every int64 count and every num_classes ≥ 1 is accepted without overflow (sums are formed in
/// double); the results are finite whenever the exact bias is (|b| ≤ ln 2^127 < 89).
/// RetinaNet on COCO gives π ≈ 1e-5 (b ≈ −11.51); the RPN (C = 1) π ≈ 2e-4 (b ≈ −8.52).
///
/// Softmax heads (C + 1 outputs, column 0 background; derived here, not in the released
/// code, which leaves the RoI classifier bias at 0): with r = N_fg / (N_fg + N_bg) and uniform
/// foreground classes, foreground biases 0 and
///   b_bg = ln(C (1 − r) / r) = ln(C · N_bg / N_fg)
///
/// Per-class foreground frequencies f_k = N_k / (N_fg + N_bg) are also counted (they drive the
/// per-class threshold of class_adaptive_threshold.hpp); Σ_k f_k / C = π.
///
/// @throws std::invalid_argument for negative counts, C < 1, zero counted anchors, and for counts
///         whose bias is infinite (N_fg = 0 → b = −∞; π = 1, i.e. C = 1 and N_bg = 0 → b = +∞;
///         softmax with N_bg = 0). Nothing is modified by a failed call.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/checks.hpp"
#include "../soft_sampling/prior_bias.hpp"

namespace fgbg {

namespace detail {

inline void check_bias_counts(const char* where, std::int64_t num_fg, std::int64_t num_bg,
                              Index num_classes) {
  if (num_fg < 0) throw_invalid(where, "num_fg must be >= 0, got ", num_fg);
  if (num_bg < 0) throw_invalid(where, "num_bg must be >= 0, got ", num_bg);
  if (num_classes < 1) throw_invalid(where, "num_classes must be >= 1, got ", num_classes);
  // Both are >= 0, so the sum is 0 exactly when both are (never formed: it may overflow).
  if (num_fg == 0 && num_bg == 0)
    throw_invalid(where, "no anchors counted (num_fg + num_bg must be > 0, got 0)");
}

}  // namespace detail

/// π = N_fg / (N_fg + N_bg) / C: the shared sigmoid prior (may be 0 or, for C = 1, 1).
/// @throws std::invalid_argument for negative counts, C < 1 or N_fg + N_bg = 0.
inline double optimal_sigmoid_prior(std::int64_t num_fg, std::int64_t num_bg, Index num_classes) {
  detail::check_bias_counts("fgbg::optimal_sigmoid_prior", num_fg, num_bg, num_classes);
  const double all = static_cast<double>(num_fg) + static_cast<double>(num_bg);
  return static_cast<double>(num_fg) / all / static_cast<double>(num_classes);
}

/// b = ln(π / (1 − π)) for every channel of a C-channel sigmoid head.
/// @throws std::invalid_argument as optimal_sigmoid_prior, and when b is infinite (N_fg = 0, or
///         C = 1 with N_bg = 0).
inline double optimal_sigmoid_bias(std::int64_t num_fg, std::int64_t num_bg, Index num_classes) {
  constexpr const char* kWhere = "fgbg::optimal_sigmoid_bias";
  detail::check_bias_counts(kWhere, num_fg, num_bg, num_classes);
  if (num_fg == 0)
    detail::throw_invalid(kWhere, "num_fg must be > 0 (a zero prior gives the bias -inf), got 0");
  if (num_classes == 1 && num_bg == 0)
    detail::throw_invalid(kWhere,
                          "the prior is 1 (num_bg = 0 with num_classes = 1), so the bias would "
                          "be +inf");
  // π / (1 − π) = N_fg / (C (N_fg + N_bg) − N_fg) = N_fg / ((C − 1) N_fg + C N_bg): a sum of
  // non-negative terms, so no cancellation even when π rounds to 1 in double (N_fg = 2^62,
  // N_bg = 1, C = 1 gives ln 2^62 ≈ 42.98, where ln(π / (1 − π)) would be +inf). The
  // denominator is ≤ 2^127 and ≥ 1, the ratio in [2^-127, 2^63]: no overflow or underflow.
  const double fg = static_cast<double>(num_fg), bg = static_cast<double>(num_bg);
  const double c = static_cast<double>(num_classes);
  return std::log(fg / ((c - 1.0) * fg + c * bg));
}

/// Background bias of a softmax head whose C foreground biases are 0: ln(C · N_bg / N_fg)
/// (derived; the released code does not initialise the softmax head).
/// @throws std::invalid_argument as optimal_sigmoid_prior, and for N_fg = 0 or N_bg = 0 (infinite).
inline double optimal_softmax_background_bias(std::int64_t num_fg, std::int64_t num_bg,
                                              Index num_classes) {
  constexpr const char* kWhere = "fgbg::optimal_softmax_background_bias";
  detail::check_bias_counts(kWhere, num_fg, num_bg, num_classes);
  if (num_fg == 0) detail::throw_invalid(kWhere, "num_fg must be > 0 (bias +inf), got 0");
  if (num_bg == 0) detail::throw_invalid(kWhere, "num_bg must be > 0 (bias -inf), got 0");
  // ln(C · N_bg / N_fg) directly: through r = N_fg / (N_fg + N_bg), 1 − r rounds to 0 for
  // N_fg ≫ N_bg (2^62, 1, 1 gave −inf; exact −42.98). C · N_bg ≤ 2^126, the ratio ≥ 2^-63.
  return std::log(static_cast<double>(num_classes) * static_cast<double>(num_bg) /
                  static_cast<double>(num_fg));
}

/// Counts N_fg, N_bg, the ignored anchors and the foreground anchors of each class over a data
/// set's assignments (one labels array per image or batch), mergeable across workers by adding
/// counts. Storage is allocated once, in the constructor; add() and merge() allocate nothing.
class AnchorStatistics {
 public:
  static constexpr const char* kName = "fgbg::AnchorStatistics";

  /// @throws std::invalid_argument if num_classes is outside [1, kMaxStateClasses = 2^24] (one
  ///         int64 counter per class is allocated, before anything else).
  explicit AnchorStatistics(Index num_classes) : num_classes_(num_classes) {
    if (num_classes < 1 || num_classes > kMaxStateClasses)
      detail::throw_invalid(kName, "num_classes must be in [1, ", kMaxStateClasses, "], got ",
                            num_classes);
    per_class_.assign(static_cast<std::size_t>(num_classes), 0);
  }

  /// Adds one assignment (labels -1 / 0 / 1..C, any integer Eigen vector).
  /// @throws std::invalid_argument for a label outside -1..C, or when a count would exceed
  ///         INT64_MAX; the counts are then unchanged.
  template <typename LD>
  void add(const Eigen::DenseBase<LD>& labels) {
    const LabelStats s = detail::check_labels(kName, labels, labels.size(), num_classes_);
    // The per-class counts sum to num_fg, so once num_fg + positives fits, every per-class
    // increment below does too.
    const std::int64_t fg = detail::checked_count_sum(kName, "num_fg", num_fg_, s.positives);
    const std::int64_t bg = detail::checked_count_sum(kName, "num_bg", num_bg_, s.background);
    const std::int64_t ig =
        detail::checked_count_sum(kName, "num_ignored", num_ignored_, s.ignored());
    for (Index i = 0; i < labels.size(); ++i) {
      const auto l = labels.derived().coeff(i);
      if (l > 0) ++per_class_[static_cast<std::size_t>(l - 1)];
    }
    num_fg_ = fg;
    num_bg_ = bg;
    num_ignored_ = ig;
  }

  /// Adds another worker's counts.
  /// @throws std::invalid_argument if the numbers of classes differ or a count would exceed
  ///         INT64_MAX; the counts are then unchanged.
  AnchorStatistics& merge(const AnchorStatistics& other) {
    if (other.num_classes_ != num_classes_)
      detail::throw_invalid(kName, "cannot merge statistics of ", other.num_classes_,
                            " classes into statistics of ", num_classes_, " classes");
    const std::int64_t fg = detail::checked_count_sum(kName, "num_fg", num_fg_, other.num_fg_);
    const std::int64_t bg = detail::checked_count_sum(kName, "num_bg", num_bg_, other.num_bg_);
    const std::int64_t ig =
        detail::checked_count_sum(kName, "num_ignored", num_ignored_, other.num_ignored_);
    // Per-class counts sum to num_fg on both sides, so they fit once the totals do.
    for (std::size_t k = 0; k < per_class_.size(); ++k) per_class_[k] += other.per_class_[k];
    num_fg_ = fg;
    num_bg_ = bg;
    num_ignored_ = ig;
    return *this;
  }
  AnchorStatistics& operator+=(const AnchorStatistics& other) { return merge(other); }

  /// Back to zero counts (same number of classes).
  void reset() {
    std::fill(per_class_.begin(), per_class_.end(), std::int64_t(0));
    num_fg_ = num_bg_ = num_ignored_ = 0;
  }

  Index num_classes() const { return num_classes_; }
  std::int64_t num_fg() const { return num_fg_; }
  std::int64_t num_bg() const { return num_bg_; }
  std::int64_t num_ignored() const { return num_ignored_; }
  /// Foreground anchors of class `label` (1..C).
  /// @throws std::invalid_argument for a label outside 1..C.
  std::int64_t num_fg_of(Index label) const {
    if (label < 1 || label > num_classes_)
      detail::throw_invalid(kName, "class label must be in 1..", num_classes_, ", got ", label);
    return per_class_[static_cast<std::size_t>(label - 1)];
  }
  /// f_k = N_k / (N_fg + N_bg) for class `label` (1..C).
  /// @throws std::invalid_argument for a bad label or no counted anchors.
  double class_frequency(Index label) const {
    const std::int64_t nk = num_fg_of(label);
    if (num_fg_ == 0 && num_bg_ == 0) detail::throw_invalid(kName, "no anchors counted yet");
    return static_cast<double>(nk) / (static_cast<double>(num_fg_) + static_cast<double>(num_bg_));
  }

  /// See optimal_sigmoid_prior.
  double sigmoid_prior() const { return optimal_sigmoid_prior(num_fg_, num_bg_, num_classes_); }
  /// See optimal_sigmoid_bias.
  double sigmoid_bias() const { return optimal_sigmoid_bias(num_fg_, num_bg_, num_classes_); }
  /// See optimal_softmax_background_bias.
  double softmax_background_bias() const {
    return optimal_softmax_background_bias(num_fg_, num_bg_, num_classes_);
  }

 private:
  Index num_classes_;
  std::int64_t num_fg_ = 0, num_bg_ = 0, num_ignored_ = 0;
  std::vector<std::int64_t> per_class_;
};

}  // namespace fgbg
