/// @file quality_loss_base.hpp
/// @brief What the quality-aware sigmoid losses (QFL, VFL) take: the per-anchor quality array as
///        a required input after the labels (QualitySignature), and its validation.
///
/// @code
///   value(logits, labels, quality [, weights] [, normalizer])
///   value_and_grad(logits, labels, quality, grad [, weights] [, normalizer])
/// @endcode
///
/// `quality` is a vector of N entries (any Eigen vector expression of float or double): the
/// quality target (IoU of the predicted box with its ground truth) of each anchor. Only the
/// entries of positive rows (label k ≥ 1) are read; the others may hold anything (0, the
/// assigner's max IoU, …) and are not checked. A positive's entry must be finite and in [0, 1]
/// (VarifocalLoss adds its own lower bound, see there).
///
/// The quality is required: with an optional one a per-anchor weight vector passed in its place,
/// or a forgotten quality array, would silently change meaning. For hard targets (quality 1)
/// pass a vector of ones.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>
#include <type_traits>

#include "../core/checks.hpp"
#include "../core/loss_base.hpp"
#include "../core/sigmoid_head.hpp"

namespace fgbg {

/// The call signature of QFL and VFL: the sigmoid heads' (with per-element and per-anchor loss
/// outputs), with the quality as one required input.
struct QualitySignature : SigmoidSignature {
  static constexpr int inputs = 1;
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

/// The checks of a call `c` with a soft target per positive anchor (QFL, VFL, soft-target BCE;
/// see DenseLoss), before anything is written: those of every sigmoid head, then the quality.
/// Returns the label counts with the sum of the positives' targets (Normalizer::target_sum).
template <typename Call>
LabelStats check_quality_call(const char* where, Call& c) {
  LabelStats s = check_sigmoid_call(where, c.x, c.labels, c.option, *c.normalizer,
                                    std::get<0>(c.out), c.losses, /*soft_targets=*/true);
  const auto& q = std::get<0>(c.in);
  check_quality(where, q, c.labels);  // labels: N, checked above
  for (Index i = 0; i < c.x.rows(); ++i)
    if (c.labels.derived().coeff(i) > 0) s.target_sum += static_cast<double>(q.derived().coeff(i));
  return s;
}
}  // namespace detail
}  // namespace fgbg
