// Sigmoid-head dense losses: BCE, focal loss and FL* against the reference vectors, closed forms,
// central differences, saturated logits, weights and hyper-parameter errors. What every loss
// promises (empty calls, bad inputs, layouts, allocation, aliasing) is in test_contract.cpp.
#include <fgbg/fgbg.hpp>
#include <random>

#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename Scalar>
fgbg::SigmoidFocalLoss<Scalar> make_focal(const json& p) {
  return fgbg::SigmoidFocalLoss<Scalar>({p["alpha"].get<Scalar>(), p["gamma"].get<Scalar>()});
}

}  // namespace

TEMPLATE_TEST_CASE("sigmoid focal loss matches torchvision", "[focal][reference]", float, double) {
  run_reference_file<fgbg::SigmoidFocalLoss<TestType>, TestType>("sigmoid_focal.json",
                                                                 make_focal<TestType>);
}

TEMPLATE_TEST_CASE("sigmoid BCE matches torch", "[bce][reference]", float, double) {
  run_reference_file<fgbg::SigmoidCrossEntropyLoss<TestType>, TestType>(
      "bce.json", [](const json&) { return fgbg::SigmoidCrossEntropyLoss<TestType>(); });
}

TEST_CASE("sigmoid focal loss: per-element vectors", "[focal][spec]") {
  struct Row {
    double x;
    int t;
    double fl, dfl;
  };
  const Row rows[] = {{0, 1, 0.04332169878, -0.07457169878},
                      {0, 0, 0.1299650964, 0.2237150964},
                      {2, 1, 0.0004508907088, -0.001217735049},
                      {2, 0, 1.237558635, 0.8075352978},
                      {-4.59511985, 0, 7.537751893e-07, 2.242474875e-06},
                      {-4.59511985, 1, 1.128381825, -0.2651423865},
                      {-30, 1, 7.5, -0.25},
                      {30, 0, 22.5, 0.75}};
  const fgbg::SigmoidFocalLoss<double> focal({0.25, 2.0, fgbg::Normalizer::sum()});
  for (const Row& r : rows) {
    RowArray<double> x(1, 1), g(1, 1);
    x(0, 0) = r.x;
    fgbg::LabelVector y(1);
    y[0] = r.t;
    const double v = focal.value_and_grad(x, y, g);
    INFO("x = " << r.x << ", t = " << r.t);
    CHECK(v == Approx(r.fl).epsilon(1e-9));
    CHECK(g(0, 0) == Approx(r.dfl).epsilon(1e-9));
  }
}

TEST_CASE("sigmoid losses: gradient equals central differences", "[focal][bce][gradcheck]") {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> nd(0.0, 3.0);
  std::uniform_int_distribution<int> ld(-1, 4);
  const Index n = 9, k = 4;
  RowArray<double> x(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = ld(rng);
  Eigen::ArrayXd w(n);
  for (Index i = 0; i < n; ++i) w[i] = 0.5 + 0.1 * i;

  auto check = [&](const auto& loss, const char* what) {
    INFO(what);
    RowArray<double> g(n, k);
    loss.value_and_grad(x, y, g, w);
    const auto num =
        numeric_grad([&](const RowArray<double>& xx) { return loss.value(xx, y, w); }, x);
    CHECK(rel_max_diff(g, num) < 1e-7);
  };
  check(fgbg::SigmoidFocalLoss<double>(), "focal a=.25 g=2");
  check(fgbg::SigmoidFocalLoss<double>({-1.0, 0.5}), "focal no alpha, g=.5");
  check(fgbg::SigmoidFocalLoss<double>({0.4, 1.3, fgbg::Normalizer::mean()}), "focal g=1.3");
  check(fgbg::SigmoidFocalLoss<double>({0.25, 0.0}), "focal g=0");
  check(fgbg::SigmoidCrossEntropyLoss<double>(), "bce");
}

TEMPLATE_TEST_CASE("sigmoid losses: saturated logits", "[focal][bce][edge]", float, double) {
  using S = TestType;
  const fgbg::SigmoidFocalLoss<S> focal;
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  SECTION("±1e4 logits stay finite") {
    RowArray<S> x(4, 2), g(4, 2);
    x << S(1e4), S(-1e4), S(-1e4), S(1e4), S(1e4), S(1e4), S(-1e4), S(-1e4);
    fgbg::LabelVector y(4);
    y << 1, 2, 0, 0;
    for (S gamma : {S(0), S(0.5), S(2)}) {
      const fgbg::SigmoidFocalLoss<S> f({S(0.25), gamma});
      const S v = f.value_and_grad(x, y, g);
      CHECK(std::isfinite(v));
      CHECK(g.isFinite().all());
    }
    CHECK(std::isfinite(bce.value_and_grad(x, y, g)));
    CHECK(g.isFinite().all());
  }
}

TEMPLATE_TEST_CASE("sigmoid losses: weights", "[focal][weights]", float, double) {
  using S = TestType;
  RowArray<S> x(3, 2), g(3, 2), g1(3, 2), g2(3, 2);
  x << S(0.3), S(-1), S(2), S(0.5), S(-0.7), S(1.1);
  fgbg::LabelVector y(3);
  y << 1, 0, 2;
  const fgbg::SigmoidFocalLoss<S> focal({S(0.25), S(2), fgbg::Normalizer::sum()});
  Eigen::Array<S, Eigen::Dynamic, 1> wa(3);
  wa << S(2), S(0), S(0.5);
  RowArray<S> we(3, 2);
  we << S(2), S(2), S(0), S(0), S(0.5), S(0.5);
  const S v1 = focal.value_and_grad(x, y, g1, wa);
  const S v2 = focal.value_and_grad(x, y, g2, we);
  CHECK(v1 == Approx(v2));
  CHECK(rel_max_diff(g1.template cast<double>(), g2.template cast<double>()) < 1e-6);
  // Ω = 2 on row 0 doubles its contribution.
  const S v = focal.value_and_grad(x, y, g);
  CHECK(g1(0, 0) == Approx(2 * g(0, 0)));
  CHECK(g1(1, 1) == S(0));
  CHECK(v1 < v * 2);
}

TEST_CASE("sigmoid focal loss: invalid hyper-parameters", "[focal][errors]") {
  using F = fgbg::SigmoidFocalLoss<float>;
  CHECK_THROWS_WITH(F({0.25f, -1.0f}),
                    "fgbg::SigmoidFocalLoss: config.gamma must be finite and >= 0, got -1");
  CHECK_THROWS_WITH(F({1.5f, 2.0f}), Catch::Contains("config.alpha must be <= 1"));
  CHECK_THROWS_AS(F({0.25f, std::numeric_limits<float>::quiet_NaN()}), std::invalid_argument);
  CHECK_THROWS_AS(F({0.25f, 2.0f, fgbg::Normalizer::avg_factor(-1)}), std::invalid_argument);
}

TEST_CASE("FL*: closed form, gradient and γ = 1 equals BCE", "[flstar]") {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> nd(0.0, 3.0);
  const Index n = 8, k = 3;
  RowArray<double> x(n, k), g(n, k), gb(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  fgbg::LabelVector y(n);
  y << 0, 1, 2, 3, -1, 0, 2, 1;
  const fgbg::FocalLossStar<double> star1({-1.0, 1.0, fgbg::Normalizer::sum()});
  const fgbg::SigmoidCrossEntropyLoss<double> bce({fgbg::Normalizer::sum()});
  CHECK(star1.value_and_grad(x, y, g) == Approx(bce.value_and_grad(x, y, gb)).epsilon(1e-14));
  CHECK(rel_max_diff(g, gb) < 1e-14);
  const fgbg::FocalLossStar<double> star({0.25, 2.5});
  star.value_and_grad(x, y, g);
  const auto num = numeric_grad([&](const RowArray<double>& xx) { return star.value(xx, y); }, x);
  CHECK(rel_max_diff(g, num) < 1e-7);
  // One positive element by hand: α softplus(−γx)/γ.
  RowArray<double> one(1, 1), g1(1, 1);
  one << 0.7;
  fgbg::LabelVector pos(1);
  pos << 1;
  const double v = fgbg::FocalLossStar<double>({0.25, 2.5, fgbg::Normalizer::sum()})
                       .value_and_grad(one, pos, g1);
  CHECK(v == Approx(0.25 * std::log1p(std::exp(-2.5 * 0.7)) / 2.5).epsilon(1e-14));
  CHECK(g1(0, 0) == Approx(-0.25 / (1 + std::exp(2.5 * 0.7))).epsilon(1e-14));
  CHECK_THROWS_WITH(fgbg::FocalLossStar<double>({0.25, 0.0}),
                    Catch::Contains("config.gamma must be finite and > 0, got 0"));
}

TEST_CASE("prior_bias: RetinaNet initialisation", "[prior]") {
  CHECK(fgbg::prior_bias(0.01) == Approx(-4.59511985013459).epsilon(1e-14));
  CHECK(fgbg::prior_bias(0.5) == 0.0);
  CHECK_THROWS_WITH(fgbg::prior_bias(0.0), Catch::Contains("pi must be in (0, 1), got 0"));
  CHECK_THROWS_AS(fgbg::prior_bias(1.0), std::invalid_argument);
}
