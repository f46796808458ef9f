/// @file ranking_checks.hpp
/// @brief The argument checks every ranking loss call runs before it writes anything.
///
/// Holds check_positive_count (P fits the 32-bit windows), check_ranking_call (labels, output
/// shape and aliasing, finite logits, positive count), kMinDelta and check_delta, check_eps
/// and check_positive_side_input (aLRP ℓ, RS IoU).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"

namespace fgbg {
namespace detail {

/// Checks that P fits the 32-bit windows (always true for any realistic batch).
inline void check_positive_count(const char* where, std::size_t p) {
  // the negatives' grid holds 2P keys and 2P + 1 slots, indexed in 32 bits
  if (p > static_cast<std::size_t>(std::numeric_limits<std::uint32_t>::max() / 2 - 1))
    throw_invalid(where, "too many positive entries (", p, "); at most 2^31 - 2 are supported");
}

/// The checks every ranking call starts with, in order: label range and length, the update's
/// shape and that it shares no memory with the logits (if wanted), finite logits, and a positive
/// count that fits the 32-bit windows. Nothing is written. Returns the label counts.
template <typename Scalar, typename XD, typename LD, typename GD>
LabelStats check_ranking_call(const char* where, const Eigen::DenseBase<XD>& x,
                              const Eigen::DenseBase<LD>& labels, const GD& grad) {
  static_assert(kStorableAs<typename XD::Scalar, Scalar>,
                "fgbg: the logits must have the loss's scalar type (or Eigen::half / "
                "Eigen::bfloat16 for a float loss)");
  const LabelStats s = check_labels(where, labels, x.rows(), x.cols());
  if constexpr (kGiven<GD>) {
    static_assert(kStorableAs<typename GD::Scalar, Scalar>,
                  "fgbg: the gradient must have the loss's scalar type (or Eigen::half / "
                  "Eigen::bfloat16 for a float loss)");
    check_output(where, "grad", grad, x.rows(), x.cols());
    // The update is written while the logits are still read (sorted positives, negatives'
    // slots): a gradient over the logits' memory would read its own writes.
    check_no_alias(where, x.derived(), grad.derived());
  }
  check_finite(where, "logits", x);
  check_positive_count(where, static_cast<std::size_t>(s.positives));
  return s;
}

/// Smallest δ the ranking losses accept. Below it 1/δ (after the scores are scaled down by up to
/// 2^-124 so that no sum overflows, see gather_positives) would leave the normal range; every δ
/// in [kMinDelta, DBL_MAX] is computed for every finite score.
inline constexpr double kMinDelta = 1e-250;

/// Validates a ranking-loss δ (finite and ≥ kMinDelta).
inline void check_delta(const char* where, double delta) {
  require_param(std::isfinite(delta) && delta >= kMinDelta, where, "delta", "finite and >= 1e-250",
                delta);
}

/// Validates an ε gate (finite, ≥ 0).
inline void check_eps(const char* where, double eps) {
  require_param(std::isfinite(eps) && eps >= 0, where, "eps", "finite and >= 0", eps);
}

/// Checks the per-anchor side input (aLRP ℓ, RS IoU) of a ranking loss at the anchors with a
/// foreground label: check_positive_values, with the loss's scalar type.
template <typename Scalar, typename TD, typename LD>
void check_positive_side_input(const char* where, const char* arg, const Eigen::DenseBase<TD>& t,
                               const Eigen::DenseBase<LD>& labels, double lo, double hi,
                               const char* range) {
  static_assert(std::is_same<typename TD::Scalar, Scalar>::value,
                "fgbg: the side input must have the loss's scalar type");
  check_positive_values(where, arg, t, labels, lo, hi, range);
}

}  // namespace detail
}  // namespace fgbg
