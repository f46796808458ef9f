/// @file softmax_cross_entropy.hpp
/// @brief Softmax cross-entropy over C+1 columns (column 0 is background), fused with its
///        gradient.
///
/// Matches `torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1)` (value) and its
/// autograd gradient; the classification loss of every R-CNN head.
///
///   CE_i = −log p_{i,y_i} = logsumexp(x_i) − x_{i,y_i},   ∂CE_i/∂x_{i,c} = p_{i,c} − 1[c = y_i]
///
/// Shapes: logits N × (C+1), labels N (−1 ignore, 0 background, k → column k), optional
/// per-anchor weights N, gradient N × (C+1). Default normaliser: `mean` over the non-ignored rows.
///
/// @throws std::invalid_argument for a bad shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/loss_base.hpp"
#include "../core/softmax_head.hpp"

namespace fgbg {

/// Configuration of SoftmaxCrossEntropyLoss.
struct SoftmaxCrossEntropyLossConfig {
  Normalizer normalizer = Normalizer::mean();
};

/// Softmax cross-entropy; see the file comment.
template <typename Scalar>
class SoftmaxCrossEntropyLoss : public SoftmaxLoss<SoftmaxCrossEntropyLoss<Scalar>, Scalar> {
 public:
  using Config = SoftmaxCrossEntropyLossConfig;
  static constexpr const char* kName = "fgbg::SoftmaxCrossEntropyLoss";

  explicit SoftmaxCrossEntropyLoss(const Config& config = {}) : config_(config) {
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// One row: ℓ = −log p_y, ∂ℓ/∂x_c = p_c (c ≠ y), ∂ℓ/∂x_y = −q.
  void row(double log_py, Scalar, Scalar q, Label, double& loss, Scalar& scale, Scalar& g_y) const {
    loss = -log_py;
    scale = Scalar(1);
    g_y = -q;
  }

 private:
  Config config_;
};

}  // namespace fgbg
