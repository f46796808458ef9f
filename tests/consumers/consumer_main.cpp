// A downstream program: focal loss on an Eigen::Map over its own row-major float buffer.
#include <cmath>
#include <cstdio>
#include <fgbg/fgbg.hpp>
#include <vector>

int main() {
  std::vector<float> logits = {0.f, 2.f, -4.59511985f, 0.f};  // 2 anchors × 2 classes
  std::vector<float> grad(4, 0.f);
  std::vector<int> labels = {1, 0};
  Eigen::Map<const fgbg::RowArray<float>> x(logits.data(), 2, 2);
  Eigen::Map<fgbg::RowArray<float>> g(grad.data(), 2, 2);
  Eigen::Map<const fgbg::LabelVector> y(labels.data(), 2);
  const fgbg::SigmoidFocalLoss<float> focal;  // α = 0.25, γ = 2, / max(1, #positives)
  const float value = focal.value_and_grad(x, y, g);
  std::printf("focal = %.9g, grad[0] = %.9g\n", value, grad[0]);
  // Row 0: x = (0, 2), label 1 → FL(0, t=1) + FL(2, t=0); row 1: FL(-4.595, 0) + FL(0, 0).
  const double total = 0.04332169878 + 1.237558635 + 7.537751893e-07 + 0.1299650964;
  if (std::abs(value - total) > 1e-5 * total) return 1;
  if (std::abs(grad[0] - (-0.07457169878)) > 1e-6) return 2;
  return 0;
}
