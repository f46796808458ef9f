/// @file sigmoid_cross_entropy.hpp
/// @brief Binary cross-entropy with logits over a sigmoid head (one-hot targets), fused with its
///        gradient.
///
/// Matches `torch.nn.functional.binary_cross_entropy_with_logits` against the one-hot targets,
/// ignored rows masked (value and autograd gradient).
///
///   BCE(x, t) = softplus(x) − t·x,   ∂BCE/∂x = σ(x) − t
///
/// evaluated as softplus(x) for t = 0 and softplus(−x) for t = 1 (no cancellation).
///
/// Shapes: logits N × C, labels N (−1 / 0 / 1..C), optional weights N or N × C, gradient N × C.
/// Default normaliser: `mean` over the non-ignored elements (torch's default reduction).
///
/// @throws std::invalid_argument for a bad shape, label, weight or normaliser;
///         std::domain_error for a non-finite logit or weight.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/loss_base.hpp"
#include "../core/numerics.hpp"
#include "../core/sigmoid_head.hpp"

namespace fgbg {

/// Configuration of SigmoidCrossEntropyLoss.
struct SigmoidCrossEntropyLossConfig {
  Normalizer normalizer = Normalizer::mean();
};

/// Sigmoid binary cross-entropy; see the file comment.
template <typename Scalar>
class SigmoidCrossEntropyLoss : public OneHotSigmoidLoss<SigmoidCrossEntropyLoss<Scalar>, Scalar> {
 public:
  using Config = SigmoidCrossEntropyLossConfig;
  static constexpr const char* kName = "fgbg::SigmoidCrossEntropyLoss";

  explicit SigmoidCrossEntropyLoss(const Config& config = {}) : config_(config) {
    config_.normalizer.validate(kName);
  }

  const Config& config() const { return config_; }

  /// t = 0 over a tile: softplus(x) and σ(x).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar* scratch) const {
    using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
    const Index n = t.size();
    Eigen::Map<const Vec> x(xp, n);
    Eigen::Map<Vec> e(scratch, n);
    e = array::exp_neg_abs(x);
    Eigen::Map<Vec>(loss, n) = array::softplus_from(x, e);
    if (grad) Eigen::Map<Vec>(grad, n) = array::sigmoid_from(x, e);
  }

  /// Any target t, one element: (1 − t)·softplus(x) + t·softplus(−x), the direct form of
  /// softplus(x) − t·x (which cancels to 0 in float for t = 1, x > 16).
  void element(Scalar x, Scalar t, Index, Index, Scalar& loss, Scalar& grad) const {
    loss = t == Scalar(1) ? softplus(-x) : (Scalar(1) - t) * softplus(x) + t * softplus(-x);
    grad = t == Scalar(1) ? -sigmoid(-x) : sigmoid(x) - t;  // σ(x) − 1 = −σ(−x)
  }

 private:
  Config config_;
};

}  // namespace fgbg
