// Sigmoid-head dense losses: BCE and focal loss against the reference vectors, closed forms,
// central differences, layouts, edge cases and errors.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
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

TEMPLATE_TEST_CASE("sigmoid focal loss: layouts, blocks and Maps give identical results",
                   "[focal][layout]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(-3.0, 2.0);
  const Index n = 157, k = 37;  // not a multiple of the tile size
  RowArray<S> x(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<int>(i % (k + 2)) - 1;
  const fgbg::SigmoidFocalLoss<S> focal;

  RowArray<S> g_ref(n, k);
  const S v_ref = focal.value_and_grad(x, y, g_ref);

  // Column-major input and output.
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> xc = x, gc(n, k);
  CHECK(focal.value_and_grad(xc, y, gc) == v_ref);
  CHECK((gc == g_ref).all());

  // Map over a raw buffer, gradient into a block of a larger array.
  std::vector<S> buffer(x.data(), x.data() + x.size());
  Eigen::Map<const RowArray<S>> xm(buffer.data(), n, k);
  RowArray<S> big = RowArray<S>::Constant(n + 2, k + 3, S(42));
  CHECK(focal.value_and_grad(xm, y, big.block(1, 2, n, k)) == v_ref);
  CHECK((big.block(1, 2, n, k) == g_ref).all());
  CHECK(big(0, 0) == S(42));
  CHECK(big(n + 1, k + 2) == S(42));

  // An expression as input.
  RowArray<S> g2(n, k);
  CHECK(focal.value_and_grad(x * S(1), y, g2) == v_ref);
  CHECK((g2 == g_ref).all());
}

TEMPLATE_TEST_CASE("sigmoid losses: edge cases", "[focal][bce][edge]", float, double) {
  using S = TestType;
  const fgbg::SigmoidFocalLoss<S> focal;
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  SECTION("N = 0") {
    RowArray<S> x(0, 80), g(0, 80);
    fgbg::LabelVector y(0);
    CHECK(focal.value_and_grad(x, y, g) == S(0));
    CHECK(bce.value_and_grad(x, y, g) == S(0));
  }
  SECTION("all ignored: value 0, zero gradient") {
    RowArray<S> x = RowArray<S>::Constant(5, 3, S(1.5)), g = RowArray<S>::Constant(5, 3, S(9));
    fgbg::LabelVector y = fgbg::LabelVector::Constant(5, -1);
    CHECK(focal.value_and_grad(x, y, g) == S(0));
    CHECK((g == S(0)).all());
    CHECK(bce.value_and_grad(x, y, g) == S(0));
    CHECK((g == S(0)).all());
  }
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
  SECTION("no positives: normaliser 1") {
    RowArray<S> x = RowArray<S>::Constant(3, 2, S(-4.6)), g(3, 2);
    fgbg::LabelVector y = fgbg::LabelVector::Zero(3);
    const S v = focal.value_and_grad(x, y, g);
    const S sum = fgbg::SigmoidFocalLoss<S>({S(0.25), S(2), fgbg::Normalizer::sum()}).value(x, y);
    CHECK(v == sum);
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

TEST_CASE("sigmoid losses: bad inputs throw and leave the gradient untouched", "[focal][errors]") {
  const fgbg::SigmoidFocalLoss<double> focal;
  RowArray<double> x = RowArray<double>::Constant(3, 2, 0.5);
  RowArray<double> g = RowArray<double>::Constant(3, 2, 7.0);
  fgbg::LabelVector y(3);
  y << 1, 0, -1;
  auto untouched = [&] { return (g == 7.0).all(); };

  SECTION("label out of range") {
    y[1] = 3;
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g),
                      Catch::Contains("labels(1) = 3 is outside -1..2"));
    y[1] = -2;
    CHECK_THROWS_AS(focal.value_and_grad(x, y, g), std::invalid_argument);
  }
  SECTION("labels of the wrong length") {
    fgbg::LabelVector y2(4);
    y2 << 0, 0, 0, 0;
    CHECK_THROWS_WITH(focal.value_and_grad(x, y2, g),
                      Catch::Contains("labels must be a vector of 3 entries, got 4 x 1"));
  }
  SECTION("gradient view of the wrong shape") {
    RowArray<double> big = RowArray<double>::Constant(4, 4, 7.0);
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, big.block(0, 0, 2, 2)),
                      Catch::Contains("grad must be 3 x 2, got 2 x 2"));
    CHECK((big == 7.0).all());
  }
  SECTION("NaN and inf logits") {
    x(2, 1) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(focal.value_and_grad(x, y, g), std::domain_error);
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g), Catch::Contains("logits(2, 1) is nan"));
    x(2, 1) = 0;
    x(1, 0) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g), Catch::Contains("logits(1, 0) is inf"));
  }
  SECTION("bad weights") {
    Eigen::ArrayXd w(3);
    w << 1, -1, 1;
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g, w), Catch::Contains("is negative"));
    w << 1, std::nan(""), 1;
    CHECK_THROWS_AS(focal.value_and_grad(x, y, g, w), std::domain_error);
    Eigen::ArrayXd w2(2);
    w2 << 1, 1;
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g, w2), Catch::Contains("weights must be"));
  }
  SECTION("bad normaliser") {
    CHECK_THROWS_WITH(focal.value_and_grad(x, y, g, fgbg::Normalizer::avg_factor(0)),
                      Catch::Contains("avg_factor must be finite and > 0, got 0"));
    CHECK_THROWS_AS(focal.value_and_grad(x, y, g, fgbg::Normalizer::avg_factor(-2)),
                    std::invalid_argument);
  }
  CHECK(untouched());
}

TEST_CASE("sigmoid focal loss: invalid hyper-parameters", "[focal][errors]") {
  using F = fgbg::SigmoidFocalLoss<float>;
  CHECK_THROWS_WITH(F({0.25f, -1.0f}),
                    "fgbg::SigmoidFocalLoss: config.gamma must be finite and >= 0, got -1");
  CHECK_THROWS_WITH(F({1.5f, 2.0f}), Catch::Contains("config.alpha must be <= 1"));
  CHECK_THROWS_AS(F({0.25f, std::numeric_limits<float>::quiet_NaN()}), std::invalid_argument);
  CHECK_THROWS_AS(F({0.25f, 2.0f, fgbg::Normalizer::avg_factor(-1)}), std::invalid_argument);
}

TEMPLATE_TEST_CASE("sigmoid losses allocate nothing in steady state", "[focal][bce][alloc]", float,
                   double) {
  using S = TestType;
  const Index n = 3000, k = 80;
  RowArray<S> x = RowArray<S>::Constant(n, k, S(-4.6)), g(n, k);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(n);
  y[10] = 3;
  y[20] = -1;
  Eigen::Array<S, Eigen::Dynamic, 1> w = Eigen::Array<S, Eigen::Dynamic, 1>::Ones(n);
  const fgbg::SigmoidFocalLoss<S> focal;
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  NoAllocScope guard;
  focal.value_and_grad(x, y, g);
  focal.value_and_grad(x, y, g, w);
  focal.value(x, y);
  bce.value_and_grad(x, y, g);
  CHECK(guard.count() == 0);
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

TEST_CASE("a gradient buffer aliasing the logits is refused", "[errors][alias]") {
  RowArray<float> x = RowArray<float>::Constant(4, 3, 0.5f);
  fgbg::LabelVector y(4);
  y << 1, 0, 0, -1;
  const float before = x(0, 0);
  CHECK_THROWS_WITH(fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, x),
                    Catch::Contains("grad must not share memory with the logits"));
  CHECK_THROWS_AS(fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(x, y, x.block(0, 0, 4, 3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(fgbg::GhmcLoss<float>().value_and_grad(x, y, x), std::invalid_argument);
  RowArray<float> xs = RowArray<float>::Constant(4, 3, 0.5f);
  CHECK_THROWS_AS(fgbg::SoftmaxCrossEntropyLoss<float>().value_and_grad(xs, y, xs),
                  std::invalid_argument);
  CHECK(x(0, 0) == before);
  // Disjoint blocks of one buffer are fine.
  RowArray<float> both = RowArray<float>::Constant(4, 6, 0.5f);
  CHECK_NOTHROW(
      fgbg::SigmoidFocalLoss<float>().value_and_grad(both.leftCols(3), y, both.rightCols(3)));
}
