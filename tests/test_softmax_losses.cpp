// Softmax-head losses: cross-entropy and softmax focal loss against the reference vectors, the
// spec's hand-checked rows, central differences, edge cases and errors.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
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

TEMPLATE_TEST_CASE("softmax losses: edge cases", "[softmax][edge]", float, double) {
  using S = TestType;
  const fgbg::SoftmaxCrossEntropyLoss<S> ce;
  const fgbg::SoftmaxFocalLoss<S> fl({S(0.25), S(0.5)});
  SECTION("N = 0") {
    RowArray<S> x(0, 81), g(0, 81);
    fgbg::LabelVector y(0);
    CHECK(ce.value_and_grad(x, y, g) == S(0));
    CHECK(fl.value_and_grad(x, y, g) == S(0));
  }
  SECTION("all ignored") {
    RowArray<S> x = RowArray<S>::Constant(4, 3, S(0.7)), g = RowArray<S>::Constant(4, 3, S(5));
    fgbg::LabelVector y = fgbg::LabelVector::Constant(4, -1);
    CHECK(ce.value_and_grad(x, y, g) == S(0));
    CHECK((g == S(0)).all());
    CHECK(fl.value_and_grad(x, y, g) == S(0));
    CHECK((g == S(0)).all());
  }
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
  SECTION("column-major input equals row-major") {
    RowArray<S> x(7, 4), g(7, 4);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = S(std::sin(1.0 + i));
    fgbg::LabelVector y(7);
    y << 0, 1, 2, 3, -1, 0, 2;
    Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> xc = x, gc(7, 4);
    CHECK(fl.value_and_grad(x, y, g) == fl.value_and_grad(xc, y, gc));
    CHECK((gc == g).all());
  }
}

TEST_CASE("softmax losses: bad inputs throw and leave the gradient untouched",
          "[softmax][errors]") {
  const fgbg::SoftmaxFocalLoss<double> fl;
  RowArray<double> x = RowArray<double>::Constant(3, 3, 0.1);
  RowArray<double> g = RowArray<double>::Constant(3, 3, 7.0);
  fgbg::LabelVector y(3);
  y << 1, 0, 2;
  SECTION("label above C") {
    y[2] = 3;
    CHECK_THROWS_WITH(fl.value_and_grad(x, y, g),
                      Catch::Contains("labels(2) = 3 is outside -1..2"));
  }
  SECTION("one column only") {
    RowArray<double> x1(3, 1), g1(3, 1);
    x1.setZero();
    CHECK_THROWS_WITH(fl.value_and_grad(x1, y, g1), Catch::Contains("C+1 >= 2 columns"));
  }
  SECTION("per-element weights are refused") {
    RowArray<double> w = RowArray<double>::Ones(3, 3);
    CHECK_THROWS_WITH(fl.value_and_grad(x, y, g, w), Catch::Contains("weights must be"));
  }
  SECTION("NaN") {
    x(1, 2) = std::nan("");
    CHECK_THROWS_WITH(fl.value_and_grad(x, y, g), Catch::Contains("logits(1, 2) is nan"));
  }
  SECTION("bad hyper-parameters") {
    CHECK_THROWS_WITH(fgbg::SoftmaxFocalLoss<double>({0.25, -2.0}),
                      Catch::Contains("config.gamma must be finite and >= 0, got -2"));
  }
  CHECK((g == 7.0).all());
}

TEMPLATE_TEST_CASE("softmax losses allocate nothing in steady state", "[softmax][alloc]", float,
                   double) {
  using S = TestType;
  const Index n = 2000, k = 81;
  RowArray<S> x = RowArray<S>::Constant(n, k, S(0.3)), g(n, k);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(n);
  y[3] = 7;
  const fgbg::SoftmaxCrossEntropyLoss<S> ce;
  const fgbg::SoftmaxFocalLoss<S> fl;
  NoAllocScope guard;
  ce.value_and_grad(x, y, g);
  fl.value_and_grad(x, y, g);
  fl.value(x, y);
  CHECK(guard.count() == 0);
}
