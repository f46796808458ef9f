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
#include "../core/vmath.hpp"

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

  /// t = 0 over a tile: softplus(x) and σ(x), one fused pass in blocks of vm::kBlock
  /// (core/vmath.hpp: one exp(−|x|), 1/(1 + e) for σ, log1p(e) as 2 atanh; bounds there).
  void negatives(const detail::Tile& t, const Scalar* xp, Scalar* loss, Scalar* grad,
                 Scalar*) const {
    namespace vm = detail::vm;
    if (grad)
      vm::for_blocks(xp, loss, grad, t.size(),
                     [](const Scalar* x, Scalar* l, Scalar* g) { block<true>(x, l, g); });
    else
      vm::for_blocks(xp, loss, static_cast<Scalar*>(nullptr), t.size(),
                     [](const Scalar* x, Scalar* l, Scalar*) {
                       block<false>(x, l, static_cast<Scalar*>(nullptr));
                     });
  }

  /// Any target t, one element: (1 − t)·softplus(x) + t·softplus(−x), the direct form of
  /// softplus(x) − t·x (which cancels to 0 in float for t = 1, x > 16).
  void element(Scalar x, Scalar t, Index, Index, Scalar& loss, Scalar& grad) const {
    loss = t == Scalar(1) ? softplus(-x) : (Scalar(1) - t) * softplus(x) + t * softplus(-x);
    grad = t == Scalar(1) ? -sigmoid(-x) : sigmoid(x) - t;  // σ(x) − 1 = −σ(−x)
  }

 private:
  /// One block of negatives: softplus(x) into loss, σ(x) into grad (kGrad).
  template <bool kGrad>
  static void block(const Scalar* FGBG_RESTRICT x, Scalar* FGBG_RESTRICT loss,
                    Scalar* FGBG_RESTRICT grad) {
    for (int i = 0; i < detail::vm::kBlock; ++i) {
      const detail::vm::Logistic<Scalar> p = detail::vm::logistic(x[i]);
      loss[i] = detail::vm::softplus(x[i], p);
      if constexpr (kGrad) grad[i] = p.sig;
    }
  }
  Config config_;
};

}  // namespace fgbg
