/// @file class_adaptive_threshold.hpp
/// @brief Sampling-free class-adaptive score thresholds (the released global one and a per-class
///        variant) and the selection of the (anchor, class, score) candidates above them.
///
/// J. Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
/// Detectors?", IEEE TIP 2021 (arXiv 1909.04868), the "class-adaptive threshold" ingredient.
/// Reference: ChenJoya/sampling-free (the adaptive thresholds at inference).
///
/// Released (ChenJoya/sampling-free @ 5f133dc, modeling/rpn/retinanet/inference.py): one global
/// pre-NMS threshold for a RetinaNet head trained with the optimal bias,
///   τ = π · (C + 1),   π = N_fg / (N_fg + N_bg) / C
/// (the code multiplies by NUM_CLASSES, which counts the background: 81 on COCO), i.e. about the
/// foreground ratio, ≈ 8.1e-4 on COCO instead of the usual 0.05. The released RoI head uses a
/// fixed 1e-4 instead (pass it to select_above_threshold).
///
/// Per-class variant (fgbg's; the paper's per-class formula could not be verified):
/// the same rule with each class's own foreground frequency f_k = N_k / (N_fg + N_bg),
///   τ_k = max(floor, f_k · (C + 1)),
/// so the mean of the τ_k over the classes is the released τ (with floor 0) and uniform classes
/// give τ_k = τ. A class never seen in the statistics gets τ_k = floor (default 0: every positive
/// score kept); pass a floor such as 1e-4 to bound the candidates of unseen classes.
///
/// Selection: a candidate is kept iff score > τ_k (strict, as the references' `scores > thresh`),
/// compared in the scores' scalar type (the threshold is rounded to it first, as torch does when
/// comparing a float tensor with a Python float). Candidates go into a caller-owned vector,
/// cleared first; once its capacity suffices nothing is allocated. Order is deterministic:
/// `anchor_major` (anchor ascending, then class ascending: the order of torch.nonzero on the
/// N × C mask; default) or `score_descending` (ties by anchor, then class, ascending).
///
/// Shapes: scores N × C (any layout, probabilities in the sigmoid-head column order, class k in
/// column k−1), thresholds a vector of C entries.
/// @throws std::invalid_argument for a shape mismatch, a floor < 0 or non-finite, or statistics
///         without counted anchors; std::domain_error for a non-finite score or threshold. A failed
///         call leaves the output vector untouched.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/checks.hpp"
#include "optimal_bias.hpp"

namespace fgbg {

namespace detail {

/// A finite double threshold in the scores' type: rounded to nearest, and ±inf beyond the type's
/// range (no score exceeds a threshold above FLT_MAX, every finite score exceeds one below
/// −FLT_MAX), where a plain conversion would be out of range.
template <typename Scalar>
Scalar threshold_as(double t) {
  const double mx = static_cast<double>(std::numeric_limits<Scalar>::max());
  if (t > mx) return std::numeric_limits<Scalar>::infinity();
  if (t < -mx) return -std::numeric_limits<Scalar>::infinity();
  return static_cast<Scalar>(t);
}

}  // namespace detail

/// The released global threshold π · (C + 1) from counts.
/// @throws std::invalid_argument as optimal_sigmoid_prior.
inline double released_score_threshold(std::int64_t num_fg, std::int64_t num_bg,
                                       Index num_classes) {
  // C + 1 in double: num_classes may be INT64_MAX.
  return optimal_sigmoid_prior(num_fg, num_bg, num_classes) *
         (static_cast<double>(num_classes) + 1.0);
}

/// The released global threshold π · (C + 1) from accumulated statistics.
inline double released_score_threshold(const AnchorStatistics& stats) {
  return released_score_threshold(stats.num_fg(), stats.num_bg(), stats.num_classes());
}

/// Writes τ_k = max(floor, f_k · (C + 1)) for k = 1..C into `out`: any vector-shaped output of C
/// entries (column or row; Array, Matrix, Map or block). A plain array is resized: to 1 × C if it
/// is a row vector type or currently has one row (and not one column), else to C × 1; so a
/// dynamic 2-D array (ArrayXXf, fgbg::RowArray) works too.
/// @throws std::invalid_argument for no counted anchors, a bad floor or a wrong output size.
template <typename Derived>
void per_class_score_thresholds(const AnchorStatistics& stats,
                                const Eigen::DenseBase<Derived>& out_, double floor = 0.0) {
  constexpr const char* kWhere = "fgbg::per_class_score_thresholds";
  using Scalar = typename Derived::Scalar;
  const Index c = stats.num_classes();
  if (!(std::isfinite(floor) && floor >= 0.0))
    detail::throw_invalid(kWhere, "floor must be finite and >= 0, got ", floor);
  if (stats.num_fg() == 0 && stats.num_bg() == 0)  // both >= 0; their sum may overflow
    detail::throw_invalid(kWhere, "no anchors counted (num_fg + num_bg must be > 0, got 0)");
  auto& out = detail::writable(out_);
  if constexpr (std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value &&
                Derived::SizeAtCompileTime == Eigen::Dynamic) {
    // Any plain array: a fixed row vector (or a dynamic one with one row now) becomes 1 × C,
    // everything else C × 1. resize(c) alone only compiles for compile-time vectors.
    const bool row = Derived::RowsAtCompileTime == 1 ||
                     (Derived::ColsAtCompileTime != 1 && out.rows() == 1 && out.cols() != 1);
    if (row)
      detail::prepare_output(kWhere, "thresholds", out, 1, c);
    else
      detail::prepare_output(kWhere, "thresholds", out, c, 1);
  }
  detail::check_vector(kWhere, "thresholds", out, c);
  // (row, column) access: a block of a 2-D array has no linear coeffRef(k).
  const bool as_row = out.rows() == 1;
  for (Index k = 0; k < c; ++k) {
    const Scalar v = detail::threshold_as<Scalar>(
        std::max(floor, stats.class_frequency(k + 1) * (static_cast<double>(c) + 1.0)));
    if (as_row)
      out.derived().coeffRef(0, k) = v;
    else
      out.derived().coeffRef(k, 0) = v;
  }
}

/// One kept candidate: anchor index, class label (1..C, column label−1) and score.
template <typename Scalar>
struct ScoredCandidate {
  Index anchor = 0;
  Label label = 0;
  Scalar score = 0;
  bool operator==(const ScoredCandidate& o) const {
    return anchor == o.anchor && label == o.label && score == o.score;
  }
};

/// Order of the candidates returned by the selection functions.
enum class CandidateOrder { anchor_major, score_descending };

namespace detail {

template <typename Scalar, typename SD, typename ThresholdAt>
Index select_candidates(const Eigen::DenseBase<SD>& scores, const ThresholdAt& threshold_at,
                        std::vector<ScoredCandidate<Scalar>>& out, CandidateOrder order) {
  out.clear();
  const Index n = scores.rows(), c = scores.cols();
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < c; ++k) {
      const Scalar s = scores.derived().coeff(i, k);
      if (s > threshold_at(k)) out.push_back({i, static_cast<Label>(k + 1), s});
    }
  if (order == CandidateOrder::score_descending)
    std::sort(out.begin(), out.end(),
              [](const ScoredCandidate<Scalar>& a, const ScoredCandidate<Scalar>& b) {
                if (a.score != b.score) return a.score > b.score;
                if (a.anchor != b.anchor) return a.anchor < b.anchor;
                return a.label < b.label;
              });
  return static_cast<Index>(out.size());
}

}  // namespace detail

/// Keeps every (anchor, class) whose score is > thresholds(class−1); returns how many.
/// @throws std::invalid_argument for a threshold vector of the wrong length; std::domain_error
///         for a non-finite score or threshold. `out` is untouched by a failed call.
template <typename SD, typename TD>
Index select_above_thresholds(const Eigen::DenseBase<SD>& scores,
                              const Eigen::DenseBase<TD>& thresholds,
                              std::vector<ScoredCandidate<typename SD::Scalar>>& out,
                              CandidateOrder order = CandidateOrder::anchor_major) {
  constexpr const char* kWhere = "fgbg::select_above_thresholds";
  using Scalar = typename SD::Scalar;
  detail::check_vector(kWhere, "thresholds", thresholds, scores.cols());
  detail::check_finite(kWhere, "thresholds", thresholds);
  detail::check_finite(kWhere, "scores", scores);
  return detail::select_candidates<Scalar>(
      scores,
      [&](Index k) {
        return detail::threshold_as<Scalar>(static_cast<double>(thresholds.derived().coeff(k)));
      },
      out, order);
}

/// Keeps every (anchor, class) whose score is > threshold (one global threshold, as released).
/// @throws std::domain_error for a non-finite score or threshold.
template <typename SD>
Index select_above_threshold(const Eigen::DenseBase<SD>& scores, double threshold,
                             std::vector<ScoredCandidate<typename SD::Scalar>>& out,
                             CandidateOrder order = CandidateOrder::anchor_major) {
  constexpr const char* kWhere = "fgbg::select_above_threshold";
  using Scalar = typename SD::Scalar;
  if (!std::isfinite(threshold))
    throw std::domain_error(
        detail::concat(kWhere, ": threshold is ", threshold, "; it must be finite"));
  detail::check_finite(kWhere, "scores", scores);
  const Scalar t = detail::threshold_as<Scalar>(threshold);
  return detail::select_candidates<Scalar>(
      scores, [t](Index) { return t; }, out, order);
}

}  // namespace fgbg
