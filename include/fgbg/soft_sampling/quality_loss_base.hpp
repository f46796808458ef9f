/// @file quality_loss_base.hpp
/// @brief The call surface of the quality-aware sigmoid losses (QFL, VFL): DenseLoss's overloads
///        with the per-anchor quality array inserted after the labels, and its validation.
///
/// @code
///   value(logits, labels, quality [, weights [, normalizer]])
///   value_and_grad(logits, labels, quality, grad [, weights [, normalizer]])
/// @endcode
///
/// `quality` is a vector of N entries (any Eigen vector expression of float or double): the
/// quality target (IoU of the predicted box with its ground truth) of each anchor. Only the
/// entries of positive rows (label k ≥ 1) are read; the others may hold anything (0, the
/// assigner's max IoU, …) and are not checked. A positive's entry must be finite and in [0, 1]
/// (VarifocalLoss adds its own lower bound, see there).
///
/// The plain DenseLoss overloads (no quality) are deliberately absent: with them a per-anchor
/// weight vector passed in third position, or a forgotten quality array, would silently change
/// meaning. For hard targets (quality 1) pass a vector of ones.
///
/// A derived loss implements
/// `template <class XD, class LD, class QD, class GradOut> double run(x, labels, quality,
/// Weights, Normalizer, GradOut& grad) const` (validate everything, then compute).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/dense.hpp"
#include "../core/reduction.hpp"
#include "../core/weights.hpp"

namespace fgbg {

/// CRTP base of QualityFocalLoss and VarifocalLoss; see the file comment.
template <typename Derived, typename Scalar_>
class QualityDenseLoss {
 public:
  using Scalar = Scalar_;

  /// Normalised loss value.
  template <typename XD, typename LD, typename QD>
  Scalar value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
               const Eigen::DenseBase<QD>& quality, Weights<Scalar> weights = {}) const {
    return value(logits, labels, quality, weights, self().config().normalizer);
  }

  /// Normalised loss value with an explicit normalizer for this call.
  template <typename XD, typename LD, typename QD>
  Scalar value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
               const Eigen::DenseBase<QD>& quality, Weights<Scalar> weights,
               const Normalizer& normalizer) const {
    detail::None none;
    return static_cast<Scalar>(self().run(logits, labels, quality, weights, normalizer, none));
  }

  /// Normalised loss value; writes ∂value/∂logits (normalisation included) into `grad`.
  template <typename XD, typename LD, typename QD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<QD>& quality, const Eigen::DenseBase<GD>& grad,
                        Weights<Scalar> weights = {}) const {
    return value_and_grad(logits, labels, quality, grad, weights, self().config().normalizer);
  }

  /// As above, with an explicit normalizer for this call.
  template <typename XD, typename LD, typename QD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<QD>& quality, const Eigen::DenseBase<GD>& grad,
                        Weights<Scalar> weights, const Normalizer& normalizer) const {
    static_assert(std::is_same<typename GD::Scalar, Scalar>::value,
                  "fgbg: the gradient must have the loss's scalar type");
    auto& g = detail::writable(grad);
    return static_cast<Scalar>(self().run(logits, labels, quality, weights, normalizer, g));
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

namespace detail {

/// Validates the quality array of an N-anchor call: a vector of N entries whose positive rows
/// hold finite values in [0, 1] (check_positive_values). Only positive rows are read.
/// @throws std::invalid_argument for a wrong length or a value outside [0, 1];
///         std::domain_error for a non-finite value.
template <typename QD, typename LD>
void check_quality(const char* where, const Eigen::DenseBase<QD>& q,
                   const Eigen::DenseBase<LD>& labels) {
  check_positive_values(where, "quality", q, labels, 0.0, 1.0, "[0, 1]");
}
}  // namespace detail
}  // namespace fgbg
