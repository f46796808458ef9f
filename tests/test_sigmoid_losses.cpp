// Sigmoid-head dense losses: BCE, focal loss and FL* against the reference vectors, closed forms,
// central differences, saturated logits, weights and hyper-parameter errors; the dense-target
// (N × C float targets) focal loss and BCE against torchvision / torch. What every loss
// promises (empty calls, bad inputs, layouts, allocation, aliasing) is in test_contract.cpp.
#include <fgbg/fgbg.hpp>
#include <random>

#include "support/problems.hpp"
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

// ---------------------------------------------------------------------------------------------
// Dense (N × C float) targets: DenseTargetFocalLoss, DenseTargetCrossEntropyLoss.

TEMPLATE_TEST_CASE("dense-target focal and BCE match torchvision and torch",
                   "[dense_targets][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("dense_target_focal.json");
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const auto t = matrix<S>(c["targets"], k);
      const fgbg::Normalizer norm = normalizer(c["normalization"]);
      RowArray<S> g(n, k), e;
      auto run = [&](const auto& loss) {
        const S v = loss.value_and_grad(x, y, t, g, norm, fgbg::element_losses(e));
        check_scalar<S>("loss", v, c["expected"]["loss"]);
        check_array<S>("grad", g, c["expected"]["grad"]);
        check_array<S>("per_element", e, c["expected"]["per_element"]);
        check_scalar<S>("value()", loss.value(x, y, t, norm), c["expected"]["loss"]);
      };
      if (c["loss"] == "focal")
        run(fgbg::DenseTargetFocalLoss<S>({c["alpha"].get<S>(), c["gamma"].get<S>()}));
      else
        run(fgbg::DenseTargetCrossEntropyLoss<S>());
    }
  }
}

TEMPLATE_TEST_CASE("dense-target losses: one-hot targets are the label losses, bit for bit",
                   "[dense_targets]", float, double) {
  using S = TestType;
  ProblemOptions o;
  o.n = 700;  // several tiles
  o.classes = 9;
  const auto p = random_problem<S>(31, o);
  RowArray<S> t = RowArray<S>::Zero(p.rows(), p.cols());
  for (Index i = 0; i < p.rows(); ++i)
    if (p.labels[i] > 0) t(i, p.labels[i] - 1) = S(1);
  const RowArray<S> we = p.weights.replicate(1, p.cols()) * S(0.75);
  RowArray<S> g1, g2, e1, e2;
  Eigen::Array<S, Eigen::Dynamic, 1> a1, a2;
  for (S gamma : {S(2), S(1.5), S(0), S(1)})
    for (S alpha : {S(0.25), S(-1)}) {
      INFO("gamma " << gamma << " alpha " << alpha);
      const fgbg::SigmoidFocalLoss<S> focal({alpha, gamma});
      const fgbg::DenseTargetFocalLoss<S> dense({alpha, gamma});
      CHECK(dense.value_and_grad(p.logits, p.labels, t, g2, fgbg::element_losses(e2)) ==
            focal.value_and_grad(p.logits, p.labels, g1, fgbg::element_losses(e1)));
      CHECK((g1 == g2).all());
      CHECK((e1 == e2).all());
      CHECK(dense.value_and_grad(p.logits, p.labels, t, g2, p.weights, fgbg::Normalizer::mean(),
                                 fgbg::anchor_losses(a2)) ==
            focal.value_and_grad(p.logits, p.labels, g1, p.weights, fgbg::Normalizer::mean(),
                                 fgbg::anchor_losses(a1)));
      CHECK((g1 == g2).all());
      CHECK((a1 == a2).all());
      CHECK(dense.value_and_grad(p.logits, p.labels, t, g2, we) ==
            focal.value_and_grad(p.logits, p.labels, g1, we));
      CHECK((g1 == g2).all());
    }
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  const fgbg::DenseTargetCrossEntropyLoss<S> dense_bce;
  CHECK(dense_bce.value_and_grad(p.logits, p.labels, t, g2, p.weights) ==
        bce.value_and_grad(p.logits, p.labels, g1, p.weights));
  CHECK((g1 == g2).all());
}

TEMPLATE_TEST_CASE("dense-target losses: labels mark ignored rows and positives only",
                   "[dense_targets]", float, double) {
  using S = TestType;
  const S eps = std::numeric_limits<S>::epsilon();
  ProblemOptions o;
  o.n = 300;
  o.classes = 6;
  const auto p = random_problem<S>(32, o);
  // Soft targets everywhere, different from any one-hot reading of the labels.
  RowArray<S> t(p.rows(), p.cols());
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = S((i * 37) % 101) / S(100);
  const fgbg::DenseTargetFocalLoss<S> focal({S(0.25), S(2), fgbg::Normalizer::sum()});
  RowArray<S> g;
  const double v = focal.value_and_grad(p.logits, p.labels, t, g);
  // The class of a foreground label is not read: relabelling every positive changes nothing.
  fgbg::LabelVector y2 = p.labels;
  for (Index i = 0; i < y2.size(); ++i)
    if (y2[i] > 0) y2[i] = 1 + (y2[i] % 6);
  RowArray<S> g2;
  CHECK(focal.value_and_grad(p.logits, y2, t, g2) == v);
  CHECK((g == g2).all());
  // Ignored rows: zero gradient, and their targets do not count in target_sum.
  double valid_sum = 0, valid_rows = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    if (p.labels[i] == -1) {
      CHECK((g.row(i) == S(0)).all());
    } else {
      valid_sum += t.row(i).template cast<double>().sum();
      ++valid_rows;
    }
  }
  const fgbg::DenseTargetCrossEntropyLoss<S> bce;
  CHECK(std::abs(bce.value(p.logits, p.labels, t, fgbg::Normalizer::target_sum()) -
                 bce.value(p.logits, p.labels, t, fgbg::Normalizer::avg_factor(valid_sum))) <=
        8 * eps * bce.value(p.logits, p.labels, t, fgbg::Normalizer::target_sum()));
  CHECK(bce.value(p.logits, p.labels, t) ==
        bce.value(p.logits, p.labels, t, fgbg::Normalizer::avg_factor(valid_rows * 6)));
  CHECK(focal.value(p.logits, p.labels, t, fgbg::Normalizer::num_positives()) ==
        focal.value(p.logits, p.labels, t,
                    fgbg::Normalizer::avg_factor(std::max<double>(1, p.positives()))));
  // Column-major and strided targets: the same bits.
  const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> tc = t;
  RowArray<S> g3;
  CHECK(focal.value_and_grad(p.logits, p.labels, tc, g3) == v);
  CHECK((g3 == g).all());
  RowArray<S> wide = RowArray<S>::Constant(p.rows(), 2 * p.cols(), S(9));
  wide.leftCols(p.cols()) = t;
  CHECK(focal.value_and_grad(p.logits, p.labels, wide.leftCols(p.cols()), g3) == v);
  CHECK((g3 == g).all());
}

TEST_CASE("dense-target losses: gradient equals central differences",
          "[dense_targets][gradcheck]") {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> nd(0.0, 3.0);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::uniform_int_distribution<int> ld(-1, 4);
  const Index n = 11, k = 4;
  RowArray<double> x(n, k), t(n, k);
  for (Index i = 0; i < x.size(); ++i) {
    x.data()[i] = nd(rng);
    const double u = ud(rng);
    t.data()[i] = u < 0.3 ? 0.0 : u < 0.4 ? 1.0 : ud(rng);
  }
  t(0, 0) = 1 / (1 + std::exp(-x(0, 0)));  // t = σ(x)
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = ld(rng);
  RowArray<double> we(n, k);
  for (Index i = 0; i < we.size(); ++i) we.data()[i] = 0.5 + 0.05 * i;
  auto check = [&](const auto& loss, const char* what) {
    INFO(what);
    RowArray<double> g;
    loss.value_and_grad(x, y, t, g, we);
    const auto num =
        numeric_grad([&](const RowArray<double>& xx) { return loss.value(xx, y, t, we); }, x);
    CHECK(rel_max_diff(g, num) < 1e-7);
  };
  using F = fgbg::DenseTargetFocalLoss<double>;
  check(F(), "focal a=.25 g=2");
  check(F({-1.0, 0.5}), "focal no alpha, g=.5");
  check(F({0.6, 1.3, fgbg::Normalizer::mean()}), "focal a=.6 g=1.3");
  check(F({0.25, 0.0}), "focal g=0");
  check(F({0.25, 3.5, fgbg::Normalizer::target_sum()}), "focal g=3.5 target_sum");
  check(fgbg::DenseTargetCrossEntropyLoss<double>(), "bce");
}

TEMPLATE_TEST_CASE("dense-target losses: extreme finite logits and targets",
                   "[dense_targets][edge]", float, double) {
  using S = TestType;
  const S big = std::numeric_limits<S>::max();
  RowArray<S> x(4, 3), t(4, 3), g;
  x << big, -big, S(0), -big, big, S(1e4), S(-1e4), S(30), S(-30), S(1e-30), big, -big;
  t << S(0.5), S(0.5), S(0.5), S(1), S(0), S(0.25), S(0.75), S(1e-7), S(1) - S(1e-6), S(0), S(1),
      S(0);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(4);
  for (S gamma : {S(0), S(0.5), S(2), S(3.5)}) {
    INFO("gamma " << gamma);
    // Σ of the losses is beyond the scalar's range (CE ≈ |x|/2): divided by 1e30 it is not.
    const fgbg::DenseTargetFocalLoss<S> f({S(0.25), gamma, fgbg::Normalizer::avg_factor(1e30)});
    const S v = f.value_and_grad(x, y, t, g);
    CHECK(std::isfinite(v));
    CHECK(v > S(0));
    CHECK(g.isFinite().all());
    RowArray<S> e;
    f.value(x, y, t, fgbg::element_losses(e));
    CHECK(e.isFinite().all());
  }
  const fgbg::DenseTargetCrossEntropyLoss<S> bce({fgbg::Normalizer::avg_factor(1e30)});
  CHECK(std::isfinite(bce.value_and_grad(x, y, t, g)));
  CHECK(g.isFinite().all());
}
