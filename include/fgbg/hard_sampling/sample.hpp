/// @file sample.hpp
/// @brief The result of every sampler, and the bridge from a sample to the Ω weights that every
///        loss of fgbg accepts (`sample → weights → loss`).
#pragma once

#include <vector>

#include "../core/checks.hpp"

namespace fgbg {

/// Indices chosen by a sampler, owned by the caller and reused across calls: samplers clear and
/// refill the vectors, so once their capacity suffices no call allocates. Indices are ascending
/// unless a sampler's docs say otherwise. `negative_weights` is filled only by samplers that
/// define per-negative weights (ISR-N / Score-HLR); otherwise it is empty.
struct Sample {
  std::vector<Index> positives;
  std::vector<Index> negatives;
  std::vector<double> negative_weights;

  Index size() const { return static_cast<Index>(positives.size() + negatives.size()); }
  void clear() {
    positives.clear();
    negatives.clear();
    negative_weights.clear();
  }
};

/// Writes Ω for `n` anchors: 1 for sampled indices (or the sampler's negative weight), 0 for
/// every other anchor. `weights` is any writable Eigen vector of n entries (an Array is resized).
/// @throws std::invalid_argument if an index is outside [0, n) or the weights have the wrong size.
template <typename Derived>
void sample_weights(const Sample& sample, Index n, const Eigen::DenseBase<Derived>& weights_) {
  constexpr const char* kWhere = "fgbg::sample_weights";
  for (const Index i : sample.positives)
    if (i < 0 || i >= n)
      detail::throw_invalid(kWhere, "positive index ", i, " is outside [0, ", n, ")");
  for (const Index i : sample.negatives)
    if (i < 0 || i >= n)
      detail::throw_invalid(kWhere, "negative index ", i, " is outside [0, ", n, ")");
  if (!sample.negative_weights.empty() && sample.negative_weights.size() != sample.negatives.size())
    detail::throw_invalid(kWhere, "negative_weights must be empty or match negatives");
  detail::prepare_output(kWhere, "weights", weights_, n, 1);
  auto& w = const_cast<Eigen::DenseBase<Derived>&>(weights_).derived();
  using Scalar = typename Derived::Scalar;
  w.setZero();
  for (const Index i : sample.positives) w.coeffRef(i) = Scalar(1);
  for (std::size_t k = 0; k < sample.negatives.size(); ++k)
    w.coeffRef(sample.negatives[k]) = sample.negative_weights.empty()
                                          ? Scalar(1)
                                          : static_cast<Scalar>(sample.negative_weights[k]);
}

}  // namespace fgbg
