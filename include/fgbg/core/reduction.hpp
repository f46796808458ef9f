/// @file reduction.hpp
/// @brief How a summed loss is normalised: `sum`, `mean`, `avg_factor`, `num_positives`.
///
/// Every loss of fgbg computes L = Σ_i Ω_i · ℓ_i / A (the survey's Eq. (1)); the Normalizer
/// decides A, and the gradient always includes the same 1/A. A is a constant for the gradient.
///
/// | kind            | A                                            | used by (reference)      |
/// |-----------------|----------------------------------------------|--------------------------|
/// | `sum`           | 1                                            | `reduction='sum'`        |
/// | `mean`          | max(1, number of non-ignored elements)       | torch `reduction='mean'` |
/// | `avg_factor(A)` | A exactly, given by the caller (finite, > 0) | mmdetection's avg_factor |
/// | `num_positives` | max(1, #anchors with a foreground label)     | RetinaNet (Detectron)    |
/// | `target_sum`    | max(1, Σ soft targets of the positive anchors) | ultralytics YOLOv8/11   |
///
/// `target_sum` exists only for the losses with soft targets: QFL, VFL and
/// SoftTargetCrossEntropyLoss (one per positive anchor), DenseTargetFocalLoss and
/// DenseTargetCrossEntropyLoss (Σ over the N × C targets of the non-ignored rows): ultralytics'
/// `target_scores_sum = max(target_scores.sum(), 1)`.
///
/// An element is one (anchor, class) pair for sigmoid heads and one anchor for softmax heads;
/// per-element weights do not change the count. mmdetection divides by `A + FLT_EPSILON`; pass
/// `avg_factor(A + FLT_EPSILON)` to reproduce that to the last bit.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cmath>

#include "checks.hpp"

namespace fgbg {

/// The normalisation kinds; see Normalizer.
enum class Reduction { sum, mean, avg_factor, num_positives, target_sum };

/// The smallest avg_factor a Normalizer accepts: gradients are scaled by 1/A in float, so 1/A
/// must be a finite float.
inline constexpr double kMinAvgFactor = 1e-37;

/// A normalisation rule, resolved to a number A on every call from that call's labels.
struct Normalizer {
  Reduction reduction = Reduction::num_positives;
  double factor = 1.0;  ///< A for Reduction::avg_factor, unused otherwise

  static constexpr Normalizer sum() { return {Reduction::sum, 1.0}; }
  static constexpr Normalizer mean() { return {Reduction::mean, 1.0}; }
  static constexpr Normalizer avg_factor(double a) { return {Reduction::avg_factor, a}; }
  static constexpr Normalizer num_positives() { return {Reduction::num_positives, 1.0}; }
  static constexpr Normalizer target_sum() { return {Reduction::target_sum, 1.0}; }

  /// Throws unless the rule is usable: an avg_factor must be finite and > 0, and large enough
  /// that 1/A is a finite float (A ≥ 1e-37), since gradients are scaled by 1/A in the scalar type;
  /// target_sum needs a loss with soft targets (`soft_targets`).
  void validate(const char* where, bool soft_targets = false) const {
    if (reduction == Reduction::target_sum && !soft_targets)
      detail::throw_invalid(where,
                            "Normalizer::target_sum() needs a loss with soft targets (QFL, VFL, "
                            "SoftTargetCrossEntropyLoss, DenseTargetFocalLoss, "
                            "DenseTargetCrossEntropyLoss)");
    if (reduction == Reduction::avg_factor && !(std::isfinite(factor) && factor > 0.0))
      detail::throw_invalid(where, "avg_factor must be finite and > 0, got ", factor);
    if (reduction == Reduction::avg_factor && factor < kMinAvgFactor)
      detail::throw_invalid(where, "avg_factor must be >= 1e-37 (1/A must be a finite float), got ",
                            factor);
  }

  /// A for one call. `elements_per_row` is C for sigmoid heads, 1 for softmax heads.
  double resolve(const LabelStats& s, Index elements_per_row) const {
    switch (reduction) {
      case Reduction::sum:
        return 1.0;
      case Reduction::mean:
        return std::max<double>(1.0, static_cast<double>(s.valid) * elements_per_row);
      case Reduction::avg_factor:
        return factor;
      case Reduction::num_positives:
        return std::max<double>(1.0, static_cast<double>(s.positives));
      case Reduction::target_sum:
        return std::max(1.0, s.target_sum);
    }
    return 1.0;
  }
};

/// Name of a reduction, for messages and the demo.
inline const char* to_string(Reduction r) {
  switch (r) {
    case Reduction::sum:
      return "sum";
    case Reduction::mean:
      return "mean";
    case Reduction::avg_factor:
      return "avg_factor";
    case Reduction::num_positives:
      return "num_positives";
    case Reduction::target_sum:
      return "target_sum";
  }
  return "?";
}

}  // namespace fgbg
