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
/// Counts from several workers are merged by adding them (the reference all-reduces them):
/// AnchorStatistics::merge in one process, or its three steps under data parallelism
/// (batch_statistics → SUM all-reduce → commit; docs/data_parallel.md), exact integer counts, so
/// every rank ends with exactly the counts of one process. save() / load() checkpoint them.
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
#include "../core/state_io.hpp"
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
/// counts (merge(), or batch_statistics / commit through a ReduceBuffer). Storage is allocated
/// once, in the constructor; add(), merge() and commit() allocate nothing (restore() and load()
/// take the snapshot's storage).
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

  static constexpr std::uint32_t kVersion = 1;        ///< blob format
  static constexpr std::uint32_t kReduceVersion = 1;  ///< statistics buffer format

  /// Step 1 of data parallelism: the counts of one batch's `labels` (−1 / 0 / 1..C, any integer
  /// Eigen vector) as a ReduceBuffer; the object is not changed. Header: C; payload: N_fg, N_bg,
  /// the ignored count, then N_1 … N_C (3 + C exact integers). Sum the buffers of every worker,
  /// then commit() the sum on every rank. Throws std::invalid_argument for a label outside
  /// −1..C, or more than 2^53 labels.
  template <typename LD>
  ReduceBuffer batch_statistics(const Eigen::DenseBase<LD>& labels) const {
    ReduceBuffer b;
    batch_statistics(labels, b);
    return b;
  }
  /// batch_statistics into a caller-owned buffer, rebuilt in place (ReduceBuffer::assign): no
  /// allocation once `out` has held a buffer of this C. Throws as above; `out` is untouched then.
  template <typename LD>
  void batch_statistics(const Eigen::DenseBase<LD>& labels, ReduceBuffer& out) const {
    const LabelStats s = detail::check_labels(kName, labels, labels.size(), num_classes_);
    if (!(static_cast<double>(labels.size()) < ReduceBuffer::kExactLimit))
      detail::throw_invalid(kName, "a batch of ", labels.size(), " labels is not exact in double");
    out.assign(StateMethod::anchor_statistics, kReduceVersion,
               {static_cast<std::uint64_t>(num_classes_)}, payload_size(num_classes_));
    double* p = out.payload();
    p[0] = static_cast<double>(s.positives);
    p[1] = static_cast<double>(s.background);
    p[2] = static_cast<double>(s.ignored());
    for (Index i = 0; i < labels.size(); ++i) {
      const auto l = labels.derived().coeff(i);
      if (l > 0) p[2 + static_cast<std::size_t>(l)] += 1.0;
    }
  }
  /// Every count of this object as a statistics buffer, for a data set counted by each worker
  /// over its own shard with add(): reduce it once at the end and commit() the sum into a
  /// reset() object (committing into this one would count its own share twice). Throws
  /// std::invalid_argument for a count of 2^53 or more (not exact in double).
  ReduceBuffer counts_buffer() const {
    const std::int64_t top = std::max(std::max(num_fg_, num_bg_), num_ignored_);
    if (!(static_cast<double>(top) < ReduceBuffer::kExactLimit))
      detail::throw_invalid(kName, "a count of ", top, " is not exact in double (>= 2^53)");
    ReduceBuffer b =
        ReduceBuffer::make(StateMethod::anchor_statistics, kReduceVersion,
                           {static_cast<std::uint64_t>(num_classes_)}, payload_size(num_classes_));
    double* p = b.payload();
    p[0] = static_cast<double>(num_fg_);
    p[1] = static_cast<double>(num_bg_);
    p[2] = static_cast<double>(num_ignored_);
    for (std::size_t k = 0; k < per_class_.size(); ++k)
      p[3 + k] = static_cast<double>(per_class_[k]);
    return b;
  }
  /// Step 3: adds the counts of a reduced statistics buffer (the sum over workers of
  /// batch_statistics or counts_buffer) to this object; the counts are exact integers, so W
  /// workers that commit the sum of their shards' buffers hold exactly what one process holds
  /// after add() of the whole batch. Throws std::invalid_argument, counts unchanged, for a
  /// buffer of the wrong size or method, C differing across ranks or from this object's, counts
  /// that are not exact integers below 2^53, per-class counts that do not sum to N_fg, or a
  /// count that would exceed INT64_MAX. Allocates nothing.
  void commit(const ReduceBuffer& b) {
    b.check(kName, StateMethod::anchor_statistics, kReduceVersion,
            ReduceBuffer::size_for(1, payload_size(num_classes_)), {"classes"});
    b.expect_field(kName, 0, "classes", static_cast<std::uint64_t>(num_classes_));
    const std::int64_t add_fg = b.count(kName, "foreground count", 0);
    const std::int64_t add_bg = b.count(kName, "background count", 1);
    const std::int64_t add_ig = b.count(kName, "ignored count", 2);
    std::int64_t sum = 0;
    for (Index k = 0; k < num_classes_; ++k)
      sum = detail::checked_count_sum(kName, "sum of the per-class counts", sum,
                                      b.count(kName, "per-class count", 3 + k));
    if (sum != add_fg)
      detail::throw_invalid(kName, "reduced per-class counts sum to ", sum,
                            ", the foreground count is ", add_fg,
                            " (a corrupted or partially reduced buffer)");
    const std::int64_t fg = detail::checked_count_sum(kName, "num_fg", num_fg_, add_fg);
    const std::int64_t bg = detail::checked_count_sum(kName, "num_bg", num_bg_, add_bg);
    const std::int64_t ig = detail::checked_count_sum(kName, "num_ignored", num_ignored_, add_ig);
    // Per-class counts sum to num_fg on both sides, so they fit once the totals do.
    for (Index k = 0; k < num_classes_; ++k)
      per_class_[static_cast<std::size_t>(k)] += static_cast<std::int64_t>(b.payload()[3 + k]);
    num_fg_ = fg;
    num_bg_ = bg;
    num_ignored_ = ig;
  }

  /// Every field, as a plain struct (restore() takes it back).
  struct Snapshot {
    std::vector<std::int64_t> per_class;  ///< N_1 … N_C (C = its length)
    std::int64_t num_fg = 0, num_bg = 0, num_ignored = 0;
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.per_class == b.per_class && a.num_fg == b.num_fg && a.num_bg == b.num_bg &&
             a.num_ignored == b.num_ignored;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };
  /// A copy of every field.
  Snapshot snapshot() const { return {per_class_, num_fg_, num_bg_, num_ignored_}; }
  /// Takes every field, C included (C = per_class.size()). Throws std::invalid_argument
  /// (unchanged) unless C is in [1, 2^24], every count is ≥ 0 and the per-class counts sum to
  /// num_fg.
  void restore(const Snapshot& s) {
    const std::size_t c = s.per_class.size();
    if (c < 1 || c > static_cast<std::size_t>(kMaxStateClasses))
      detail::throw_invalid(kName, "snapshot has ", c, " classes, not in [1, ", kMaxStateClasses,
                            "]");
    if (s.num_fg < 0 || s.num_bg < 0 || s.num_ignored < 0)
      detail::throw_invalid(kName, "snapshot counts must be >= 0, got num_fg = ", s.num_fg,
                            ", num_bg = ", s.num_bg, ", num_ignored = ", s.num_ignored);
    std::int64_t sum = 0;
    for (std::size_t k = 0; k < c; ++k) {
      if (s.per_class[k] < 0)
        detail::throw_invalid(kName, "snapshot count of class ", k + 1, " must be >= 0, got ",
                              s.per_class[k]);
      sum = detail::checked_count_sum(kName, "sum of the per-class counts", sum, s.per_class[k]);
    }
    if (sum != s.num_fg)
      detail::throw_invalid(kName, "snapshot per-class counts sum to ", sum, ", num_fg is ",
                            s.num_fg);
    per_class_ = s.per_class;
    num_classes_ = static_cast<Index>(c);
    num_fg_ = s.num_fg;
    num_bg_ = s.num_bg;
    num_ignored_ = s.num_ignored;
  }
  /// Versioned, little-endian, checksummed blob (core/state_io.hpp): C, N_fg, N_bg, the ignored
  /// count, N_1 … N_C.
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::anchor_statistics, kVersion);
    w.u64(static_cast<std::uint64_t>(num_classes_));
    w.i64(num_fg_);
    w.i64(num_bg_);
    w.i64(num_ignored_);
    for (const std::int64_t v : per_class_) w.i64(v);
    return w.finish();
  }
  /// Loads a blob of save(), of any C. Throws std::invalid_argument (unchanged) for another
  /// method or version, a truncated, extended or corrupted blob, or contents restore() rejects.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::anchor_statistics, kVersion);
    const std::uint64_t c = r.u64();
    if (c < 1 || c > static_cast<std::uint64_t>(kMaxStateClasses) || r.remaining() != (3 + c) * 8)
      detail::throw_invalid(kName, "blob of ", c, " classes has ", r.remaining(), " payload bytes");
    Snapshot s;
    s.num_fg = r.i64();
    s.num_bg = r.i64();
    s.num_ignored = r.i64();
    s.per_class.resize(c);
    for (auto& v : s.per_class) v = r.i64();
    r.done();
    restore(s);
  }
  friend bool operator==(const AnchorStatistics& a, const AnchorStatistics& b) {
    return a.num_classes_ == b.num_classes_ && a.num_fg_ == b.num_fg_ && a.num_bg_ == b.num_bg_ &&
           a.num_ignored_ == b.num_ignored_ && a.per_class_ == b.per_class_;
  }
  friend bool operator!=(const AnchorStatistics& a, const AnchorStatistics& b) { return !(a == b); }

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
  static std::size_t payload_size(Index classes) { return 3 + static_cast<std::size_t>(classes); }
  Index num_classes_;
  std::int64_t num_fg_ = 0, num_bg_ = 0, num_ignored_ = 0;
  std::vector<std::int64_t> per_class_;
};

}  // namespace fgbg
