/// @file loss_base.hpp
/// @brief The public call surface shared by every dense classification loss.
///
/// Each loss class derives from DenseLoss<Derived, Scalar> and implements one function,
/// `template <class XD, class LD, class GradOut> double run(x, labels, Weights, Normalizer,
/// GradOut& grad) const`, which validates everything first and then computes the normalised
/// value (writing the gradient unless GradOut is detail::None). DenseLoss turns it into the
/// overload set of every dense loss:
///
/// @code
///   value(logits, labels [, weights [, normalizer]])
///   value_and_grad(logits, labels, grad [, weights [, normalizer]])
/// @endcode
///
/// `grad` may be a plain array (resized to the logits' shape if needed; no allocation once it
/// has the right size), a Map over caller memory or a block; it is written only after every
/// check has passed. The normalizer defaults to the one in the loss's config.
#pragma once

#include "requires_cxx17.hpp"

#include "dense.hpp"
#include "reduction.hpp"
#include "weights.hpp"

namespace fgbg {

/// CRTP base giving every dense loss the same value / value_and_grad overloads.
template <typename Derived, typename Scalar_>
class DenseLoss {
 public:
  using Scalar = Scalar_;

  /// Normalised loss value.
  template <typename XD, typename LD>
  Scalar value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
               Weights<Scalar> weights = {}) const {
    return value(logits, labels, weights, self().config().normalizer);
  }

  /// Normalised loss value with an explicit normalizer for this call.
  template <typename XD, typename LD>
  Scalar value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
               Weights<Scalar> weights, const Normalizer& normalizer) const {
    detail::None none;
    return static_cast<Scalar>(self().run(logits, labels, weights, normalizer, none));
  }

  /// Normalised loss value; writes ∂value/∂logits (normalisation included) into `grad`.
  template <typename XD, typename LD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<GD>& grad, Weights<Scalar> weights = {}) const {
    return value_and_grad(logits, labels, grad, weights, self().config().normalizer);
  }

  /// As above, with an explicit normalizer for this call.
  template <typename XD, typename LD, typename GD>
  Scalar value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                        const Eigen::DenseBase<GD>& grad, Weights<Scalar> weights,
                        const Normalizer& normalizer) const {
    static_assert(std::is_same<typename GD::Scalar, Scalar>::value,
                  "fgbg: the gradient must have the loss's scalar type");
    auto& g = detail::writable(grad);
    return static_cast<Scalar>(self().run(logits, labels, weights, normalizer, g));
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace fgbg
