// Misuses that must stop at compile time with fgbg's message (check_messages.cmake compiles this
// file once per FGBG_CASE and expects the message). Each case passes a read-only gradient (or
// loss output): a const Map over the caller's buffer. Before the one output check of core/dense.hpp, QFL, VFL and
// EFL failed with Eigen's THIS_EXPRESSION_IS_NOT_A_LVALUE inside a kernel instead.
#include <fgbg/fgbg.hpp>

int main() {
  using fgbg::RowArray;
  RowArray<float> x = RowArray<float>::Zero(4, 3);
  const float* buf = x.data();
  Eigen::Map<const RowArray<float>> g(buf, 4, 3);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(4);
  Eigen::ArrayXf q = Eigen::ArrayXf::Zero(4);
  (void)q;
#if FGBG_CASE == 0
  fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 1
  fgbg::QualityFocalLoss<float>().value_and_grad(x, y, q, g);
#elif FGBG_CASE == 2
  fgbg::VarifocalLoss<float>().value_and_grad(x, y, q, g);
#elif FGBG_CASE == 3
  fgbg::EqualizedFocalState st(3);
  fgbg::EqualizedFocalLoss<float>().value_and_grad(x, y, g, st);
#elif FGBG_CASE == 4
  fgbg::GhmcLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 5
  fgbg::DRLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 6
  fgbg::APLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 7
  fgbg::SoftmaxCrossEntropyLoss<float>().value_and_grad(x, y, g);
#elif FGBG_CASE == 8
  // A read-only per-element loss output.
  fgbg::SigmoidFocalLoss<float>().value(x, y, fgbg::element_losses(g));
#endif
  return 0;
}
