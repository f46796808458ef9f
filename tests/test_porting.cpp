// The recipes of docs/porting.md marked "tested": each reference formula written out here in
// long double, next to the fgbg call the page gives for it.
#include <catch2/catch.hpp>

#include <fgbg/fgbg.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "support/problems.hpp"

namespace {

using fgbg::Index;
using Wide = long double;

Wide softplus(Wide x) {
  return std::max(x, Wide(0)) + std::log1p(std::exp(-std::abs(x)));
}

}  // namespace

TEMPLATE_TEST_CASE("porting: loss_weight is avg_factor(A / lambda)", "[porting]", float, double) {
  using S = TestType;
  const S eps = std::numeric_limits<S>::epsilon();
  fgbg_test::ProblemOptions o;
  o.n = 300;
  o.classes = 8;
  const auto p = fgbg_test::random_problem<S>(31, o);
  const fgbg::SigmoidFocalLoss<S> focal;
  const double a = std::max<double>(1.0, double(p.positives()));
  for (double lambda : {0.5, 1.0, 2.0, 7.25}) {
    fgbg::RowArray<S> g1, g2;
    const double v1 = focal.value_and_grad(p.logits, p.labels, g1, fgbg::Normalizer::avg_factor(a));
    const double v2 =
        focal.value_and_grad(p.logits, p.labels, g2, fgbg::Normalizer::avg_factor(a / lambda));
    INFO("lambda " << lambda);
    CHECK(std::abs(v2 - lambda * v1) <= 4 * eps * lambda * v1);
    CHECK(((g2 - S(lambda) * g1).abs() <= 4 * eps * S(lambda) * g1.abs()).all());
  }
}

TEMPLATE_TEST_CASE("porting: mmdetection's sigmoid class_weight is pos_weight", "[porting]", float,
                   double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 250;
  o.classes = 6;
  o.positive_fraction = 0.2;
  const auto p = fgbg_test::random_problem<S>(32, o);
  const Index n = p.rows(), c = p.cols();
  std::vector<S> cw{S(0.5), S(2), S(1), S(3), S(0.25), S(1.5)};
  // docs/porting.md §3, sigmoid heads.
  fgbg::RowArray<S> omega = fgbg::RowArray<S>::Ones(n, c);
  for (Index i = 0; i < n; ++i)
    if (p.labels[i] > 0) omega(i, p.labels[i] - 1) = cw[p.labels[i] - 1];
  const double a = 17.0;
  fgbg::RowArray<S> g;
  const double v = fgbg::SigmoidCrossEntropyLoss<S>().value_and_grad(
      p.logits, p.labels, g, omega, fgbg::Normalizer::avg_factor(a));
  // binary_cross_entropy_with_logits(x, t, pos_weight=cw): pw_j·t·softplus(−x) + (1 − t)
  // softplus(x), ignored rows (label_weights 0) out; d/dx = pw_j·t·(σ − 1) + (1 − t)·σ.
  Wide want = 0;
  for (Index i = 0; i < n; ++i) {
    if (p.labels[i] < 0) continue;
    for (Index j = 0; j < c; ++j) {
      const Wide x = p.logits(i, j);
      const bool t = p.labels[i] == j + 1;
      want += t ? Wide(cw[j]) * softplus(-x) : softplus(x);
      const Wide s = 1 / (1 + std::exp(-x));
      const Wide d = (t ? Wide(cw[j]) * (s - 1) : s) / Wide(a);
      CHECK(std::abs(Wide(g(i, j)) - d) <= 8 * std::numeric_limits<S>::epsilon() * std::abs(d));
    }
  }
  want /= Wide(a);
  CHECK(std::abs(Wide(v) - want) <= 8 * std::numeric_limits<S>::epsilon() * want);
}

TEMPLATE_TEST_CASE("porting: mmdetection's softmax class_weight and torch's weighted mean",
                   "[porting]", float, double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 200;
  o.classes = 4;
  o.softmax = true;
  o.positive_fraction = 0.3;
  const auto p = fgbg_test::random_problem<S>(33, o);
  const Index n = p.rows(), classes = 4;
  // mmdetection's order: classes 0..C−1, background C.
  std::vector<S> cw{S(2), S(0.5), S(1.5), S(3), S(0.25)};
  // docs/porting.md §3, softmax heads.
  Eigen::Array<S, Eigen::Dynamic, 1> omega(n);
  for (Index i = 0; i < n; ++i)
    omega[i] = p.labels[i] < 0 ? S(0) : p.labels[i] == 0 ? cw[classes] : cw[p.labels[i] - 1];
  // The reference: F.cross_entropy(weight=cw, reduction='none') on mmdetection's labels, summed.
  Wide sum = 0, wsum = 0;
  for (Index i = 0; i < n; ++i) {
    if (p.labels[i] < 0) continue;
    const int mm = p.labels[i] == 0 ? int(classes) : p.labels[i] - 1;  // mmdetection's label
    const Index col = p.labels[i];                                     // fgbg's column
    Wide m = p.logits(i, 0);
    for (Index j = 1; j <= classes; ++j) m = std::max(m, Wide(p.logits(i, j)));
    Wide se = 0;
    for (Index j = 0; j <= classes; ++j) se += std::exp(Wide(p.logits(i, j)) - m);
    sum += Wide(cw[mm]) * (m + std::log(se) - Wide(p.logits(i, col)));
    wsum += Wide(cw[mm]);
  }
  const S eps = std::numeric_limits<S>::epsilon();
  const fgbg::SoftmaxCrossEntropyLoss<S> ce;
  const double a = 9.0;
  CHECK(std::abs(Wide(ce.value(p.logits, p.labels, omega, fgbg::Normalizer::avg_factor(a))) -
                 sum / a) <= 16 * eps * sum / a);
  // torch's nn.CrossEntropyLoss(weight=cw) with reduction='mean' divides by Σ cw[y_i].
  const double tw = double(omega.template cast<double>().sum());
  CHECK(std::abs(Wide(ce.value(p.logits, p.labels, omega, fgbg::Normalizer::avg_factor(tw))) -
                 sum / wsum) <= 16 * eps * sum / wsum);
}
