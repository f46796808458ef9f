// Softmax-head losses: cross-entropy and softmax focal loss against the reference vectors, the
// spec's hand-checked rows, central differences, saturated logits and hyper-parameter errors.
// What every loss promises (empty calls, bad inputs, layouts, allocation) is in test_contract.cpp.
#include <fgbg/fgbg.hpp>
#include <random>

#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

TEMPLATE_TEST_CASE("softmax cross-entropy matches torch", "[softmax][ce][reference]", float,
                   double) {
  run_reference_file<fgbg::SoftmaxCrossEntropyLoss<TestType>, TestType, true>(
      "softmax_ce.json", [](const json&) { return fgbg::SoftmaxCrossEntropyLoss<TestType>(); });
}

TEMPLATE_TEST_CASE("softmax focal loss matches the Detectron semantics",
                   "[softmax][focal][reference]", float, double) {
  run_reference_file<fgbg::SoftmaxFocalLoss<TestType>, TestType, true>(
      "softmax_focal.json", [](const json& p) {
        return fgbg::SoftmaxFocalLoss<TestType>(
            {p["alpha"].get<TestType>(), p["gamma"].get<TestType>()});
      });
}

TEST_CASE("softmax focal loss: hand-checked row", "[softmax][focal][spec]") {
  RowArray<double> x(1, 3), g(1, 3);
  x << 0.5, -1, 2;
  fgbg::LabelVector y(1);
  const fgbg::SoftmaxFocalLoss<double> fl({0.25, 2.0, fgbg::Normalizer::sum()});
  y << 0;
  CHECK(fl.value_and_grad(x, y, g) == Approx(0.888259353).margin(1e-10));
  CHECK(g(0, 0) == Approx(-0.7320988275).margin(1e-10));
  CHECK(g(0, 1) == Approx(0.0347204261).margin(1e-10));
  CHECK(g(0, 2) == Approx(0.6973784014).margin(1e-10));
  y << 2;
  CHECK(fl.value_and_grad(x, y, g) == Approx(0.0027731875).margin(1e-10));
  CHECK(g(0, 0) == Approx(0.0055768133).margin(1e-10));
  CHECK(g(0, 1) == Approx(0.0012443552).margin(1e-10));
  CHECK(g(0, 2) == Approx(-0.0068211685).margin(1e-10));
}

TEST_CASE("softmax losses: gradient equals central differences", "[softmax][gradcheck]") {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> nd(0.0, 2.5);
  std::uniform_int_distribution<int> ld(-1, 4);
  const Index n = 10, k = 5;  // C = 4
  RowArray<double> x(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = ld(rng);
  Eigen::ArrayXd w = Eigen::ArrayXd::LinSpaced(n, 0.5, 2.0);
  auto check = [&](const auto& loss, const char* what) {
    INFO(what);
    RowArray<double> g(n, k);
    loss.value_and_grad(x, y, g, w);
    const auto num =
        numeric_grad([&](const RowArray<double>& xx) { return loss.value(xx, y, w); }, x);
    CHECK(rel_max_diff(g, num) < 1e-7);
  };
  check(fgbg::SoftmaxCrossEntropyLoss<double>(), "ce");
  check(fgbg::SoftmaxFocalLoss<double>(), "focal");
  check(fgbg::SoftmaxFocalLoss<double>({0.75, 0.5, fgbg::Normalizer::mean()}), "focal g=.5");
  check(fgbg::SoftmaxFocalLoss<double>({-1.0, 0.0}), "focal g=0 == ce");
}

TEMPLATE_TEST_CASE("softmax losses: saturated logits", "[softmax][edge]", float, double) {
  using S = TestType;
  const fgbg::SoftmaxCrossEntropyLoss<S> ce;
  const fgbg::SoftmaxFocalLoss<S> fl({S(0.25), S(0.5)});
  SECTION("±1e4 logits stay finite, saturated rows have zero focal gradient") {
    RowArray<S> x(3, 3), g(3, 3);
    x << S(1e4), S(-1e4), S(0), S(-1e4), S(1e4), S(1e4), S(0), S(0), S(-1e4);
    fgbg::LabelVector y(3);
    y << 0, 2, 1;
    S v = ce.value_and_grad(x, y, g);
    CHECK(std::isfinite(v));
    CHECK(g.isFinite().all());
    v = fl.value_and_grad(x, y, g);
    CHECK(std::isfinite(v));
    CHECK(g.isFinite().all());
    CHECK((g.row(0) == S(0)).all());
  }
}

TEST_CASE("softmax focal loss: invalid hyper-parameters", "[softmax][focal][errors]") {
  CHECK_THROWS_WITH(fgbg::SoftmaxFocalLoss<double>({0.25, -2.0}),
                    Catch::Contains("config.gamma must be finite and >= 0, got -2"));
}
