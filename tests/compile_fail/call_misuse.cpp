// Calls that break the one call interface of core/loss_base.hpp (logits, labels, inputs...,
// outputs..., [state], [option], [workspace], [normalizer], [reduce], [losses]) and must stop at
// compile time with fgbg's message (check_messages.cmake compiles this file once per FGBG_CASE).
#include <fgbg/fgbg.hpp>

int main() {
  using fgbg::RowArray;
  RowArray<float> x = RowArray<float>::Zero(4, 3), g(4, 3);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(4);
  Eigen::ArrayXf q = Eigen::ArrayXf::Zero(4), w = Eigen::ArrayXf::Ones(4);
  fgbg::EqualizedFocalState st(3);
  const fgbg::EqualizedFocalState cst(3);
  const auto norm = fgbg::Normalizer::mean();
  fgbg::ReduceBuffer buf;
  (void)q, (void)w, (void)st, (void)cst, (void)norm, (void)buf;
#if FGBG_CASE == 0
  // EFL's state before the gradient (its order before the stateful convention).
  fgbg::EqualizedFocalLoss<float>().value_and_grad(x, y, st, g);
#elif FGBG_CASE == 1
  // EFL without its state.
  fgbg::EqualizedFocalLoss<float>().value(x, y);
#elif FGBG_CASE == 2
  // A const state given to value_and_grad, which updates it.
  fgbg::EqualizedFocalLoss<float>().value_and_grad(x, y, g, cst);
#elif FGBG_CASE == 3
  // The normaliser before the weights.
  fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, g, norm, w);
#elif FGBG_CASE == 4
  // QFL's gradient without the quality.
  fgbg::QualityFocalLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 5
  // Weights for DR loss, which has none (it weights through its own softmaxes).
  fgbg::DRLoss<float>().value_and_grad(x, y, g, w);
#elif FGBG_CASE == 6
  // A normaliser for GHM-C, which normalises by its own count.
  fgbg::GhmcLoss<float>().value(x, y, norm);
#elif FGBG_CASE == 7
  // value_and_accumulate_grad on a loss without it.
  fgbg::SigmoidFocalLoss<float>().value_and_accumulate_grad(x, y, g);
#elif FGBG_CASE == 8
  // Two weights.
  fgbg::SigmoidFocalLoss<float>().value(x, y, w, w);
#elif FGBG_CASE == 9
  // The reduce buffer before the normaliser (it comes last).
  fgbg::EqualizedFocalLoss<float>().value_and_grad(x, y, g, st, buf, norm);
#elif FGBG_CASE == 10
  // A reduce buffer for a loss without statistics to reduce.
  fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, g, buf);
#elif FGBG_CASE == 11
  // EFL's statistics come from the gradient: value() cannot write them.
  fgbg::EqualizedFocalLoss<float>().value(x, y, cst, buf);
#elif FGBG_CASE == 12
  // Per-element losses from a softmax head, which has one loss per anchor.
  fgbg::SoftmaxCrossEntropyLoss<float>().value(x, y, fgbg::element_losses(g));
#elif FGBG_CASE == 13
  // Loss outputs from a loss that does not write them (DR loss: not a sum over anchors).
  fgbg::DRLoss<float>().value(x, y, fgbg::anchor_losses(q));
#elif FGBG_CASE == 14
  // The loss output before the normaliser (it comes last).
  fgbg::SigmoidFocalLoss<float>().value(x, y, fgbg::anchor_losses(q), norm);
#elif FGBG_CASE == 15
  // A double output for a float loss.
  Eigen::ArrayXd qd(4);
  fgbg::SigmoidFocalLoss<float>().value(x, y, fgbg::anchor_losses(qd));
#elif FGBG_CASE == 16
  // Per-anchor losses into a matrix.
  fgbg::SigmoidFocalLoss<float>().value(x, y, fgbg::anchor_losses(g));
#elif FGBG_CASE == 17
  // Per-element losses from a ranking loss, which has one loss per positive anchor.
  fgbg::APLoss<float>().value(x, y, fgbg::element_losses(g));
#endif
  return 0;
}
