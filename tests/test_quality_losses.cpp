// Quality-aware and equalized focal losses: QFL, VFL and soft-target BCE against the reference
// vectors and spec §11.3, EFL against a plain re-computation (values, gradients and the evolution of its
// statistics), central differences, edge cases and hyper-parameter errors. What every loss
// promises (empty calls, bad inputs, layouts, allocation) is in test_contract.cpp.
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/soft_sampling/soft_target_cross_entropy.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>
#include <functional>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/problems.hpp"
#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename Scalar>
using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

/// Runs every case of qfl.json / vfl.json through `loss` (value_and_grad and value()).
template <typename Loss, typename Scalar>
void run_quality_reference(const char* file, const std::function<Loss(const json&)>& make) {
  const json ref = load_reference(file);
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<Scalar>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const auto q = vector<Scalar>(c["iou"]);
      const Loss loss = make(c["params"]);
      const fgbg::Normalizer norm = normalizer(c["normalization"]);
      RowArray<Scalar> g(n, k);
      const Scalar v = loss.value_and_grad(x, y, q, g, norm);
      check_scalar<Scalar>("loss", v, c["expected"]["loss"]);
      check_array<Scalar>("grad", g, c["expected"]["grad"]);
      check_scalar<Scalar>("value()", loss.value(x, y, q, norm), c["expected"]["loss"]);
    }
  }
}

/// Random logits, labels in -1..C and qualities in [0.05, 1] (positives; 0 elsewhere) for the
/// gradient checks: support/problems.hpp with uniform labels and centred logits.
struct QProblem {
  RowArray<double> x;
  fgbg::LabelVector y;
  Eigen::ArrayXd q, w;
};

QProblem make_problem(Index n, Index k, std::uint64_t seed, double spread = 3.0) {
  fgbg_test::ProblemOptions o;
  o.n = n;
  o.classes = k;
  o.positive_fraction = double(k) / double(k + 2);
  o.ignored_fraction = 1.0 / double(k + 2);
  o.logit_centre = 0;
  o.logit_spread = spread;
  o.positive_lift = 0;
  o.min_quality = 0.05;
  o.min_weight = 0.5;
  o.max_weight = 1.1;
  o.at_least_one_positive = false;
  fgbg_test::Problem<double> r = fgbg_test::random_problem<double>(seed, o);
  QProblem p{std::move(r.logits), std::move(r.labels), std::move(r.quality), std::move(r.weights)};
  for (Index i = 0; i < n; ++i)
    if (p.y[i] <= 0) p.q[i] = 0.0;
  return p;
}

/// EFL written plainly from the paper's formula, with its own statistics: the test's oracle.
struct PlainEfl {
  double alpha = 0.25, gamma_b = 2, scale = 8, decay = 1;
  std::vector<double> pos, neg, ratio;

  explicit PlainEfl(Index c) : pos(c, 0.0), neg(c, 0.0), ratio(c, 1.0) {}

  double gamma(Index j) const { return gamma_b + scale * (1 - ratio[j]); }

  /// Value (sum / max(1, #pos)) and gradient, then the statistics update.
  double call(const RowArray<double>& x, const fgbg::LabelVector& y, RowArray<double>& g) {
    const Index n = x.rows(), c = x.cols();
    double npos = 0;
    for (Index i = 0; i < n; ++i) npos += y[i] > 0;
    const double norm = std::max(1.0, npos);
    double loss = 0;
    g.setZero(n, c);
    for (Index i = 0; i < n; ++i) {
      if (y[i] < 0) continue;
      for (Index j = 0; j < c; ++j) {
        const bool t = y[i] == j + 1;
        const double p = 1 / (1 + std::exp(-x(i, j)));
        const double pt = t ? p : 1 - p;
        const double at = t ? alpha : 1 - alpha;
        const double gam = gamma(j), w = gam / gamma_b;
        loss += at * w * std::pow(1 - pt, gam) * -std::log(pt);
        const double dz = at * w * std::pow(1 - pt, gam) * (gam * pt * std::log(pt) + pt - 1);
        g(i, j) = (t ? dz : -dz) / norm;
      }
    }
    std::vector<double> bp(c, 0.0), bn(c, 0.0);
    for (Index i = 0; i < n; ++i) {
      if (y[i] < 0) continue;
      for (Index j = 0; j < c; ++j) (y[i] == j + 1 ? bp : bn)[j] += std::abs(g(i, j));
    }
    for (Index j = 0; j < c; ++j) {
      pos[j] = decay * pos[j] + bp[j];
      neg[j] = decay * neg[j] + bn[j];
      ratio[j] = std::min(1.0, std::max(0.0, pos[j] / (neg[j] + 1e-10)));
    }
    return loss / norm;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reference vectors

TEMPLATE_TEST_CASE("quality focal loss matches mmdetection (torch autograd)", "[qfl][reference]",
                   float, double) {
  run_quality_reference<fgbg::QualityFocalLoss<TestType>, TestType>("qfl.json", [](const json& p) {
    return fgbg::QualityFocalLoss<TestType>({p["beta"].get<TestType>()});
  });
}

TEMPLATE_TEST_CASE("varifocal loss matches mmdetection (torch autograd)", "[vfl][reference]", float,
                   double) {
  run_quality_reference<fgbg::VarifocalLoss<TestType>, TestType>("vfl.json", [](const json& p) {
    fgbg::VarifocalLossConfig<TestType> cfg;
    cfg.alpha = p["alpha"].get<TestType>();
    cfg.gamma = p["gamma"].get<TestType>();
    cfg.iou_weighted = p["iou_weighted"].get<bool>();
    return fgbg::VarifocalLoss<TestType>(cfg);
  });
}

TEMPLATE_TEST_CASE("soft-target BCE matches ultralytics' BCE (torch autograd)",
                   "[soft_bce][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("soft_target_bce.json");
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const auto t = vector<S>(c["targets"]);
      const fgbg::SoftTargetCrossEntropyLoss<S> loss;
      const fgbg::Normalizer norm = normalizer(c["normalization"]);
      RowArray<S> g(n, k), e;
      const S v = loss.value_and_grad(x, y, t, g, norm, fgbg::element_losses(e));
      check_scalar<S>("loss", v, c["expected"]["loss"]);
      check_array<S>("grad", g, c["expected"]["grad"]);
      check_array<S>("per_element", e, c["expected"]["per_element"]);
      check_scalar<S>("value()", loss.value(x, y, t, norm), c["expected"]["loss"]);
    }
  }
}

TEMPLATE_TEST_CASE("soft-target BCE: one-hot targets are BCE, target_sum is ultralytics'",
                   "[soft_bce]", float, double) {
  using S = TestType;
  const S eps = std::numeric_limits<S>::epsilon();
  ProblemOptions o;
  o.n = 400;
  o.classes = 6;
  const auto p = random_problem<S>(21, o);
  const fgbg::SoftTargetCrossEntropyLoss<S> soft;
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  const auto ones = Vec<S>::Ones(p.rows()).eval();
  RowArray<S> g_soft, g_bce;
  for (const auto norm :
       {fgbg::Normalizer::sum(), fgbg::Normalizer::mean(), fgbg::Normalizer::avg_factor(3.25)}) {
    const double v_soft = soft.value_and_grad(p.logits, p.labels, ones, g_soft, p.weights, norm);
    const double v_bce = bce.value_and_grad(p.logits, p.labels, g_bce, p.weights, norm);
    CHECK(std::abs(v_soft - v_bce) <= 4 * eps * v_bce);
    CHECK(((g_soft - g_bce).abs() <= 4 * eps * g_bce.abs().maxCoeff()).all());
  }
  // target_sum: A = max(1, Σ targets of the positives); ignored and background rows' entries of
  // the target vector are never read.
  Vec<S> t = p.quality;
  double tsum = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    if (p.labels[i] > 0) tsum += double(t[i]);
    if (p.labels[i] <= 0) t[i] = S(7);  // not read
  }
  REQUIRE(tsum > 1);
  Eigen::Array<S, Eigen::Dynamic, 1> a;
  const double v = soft.value(p.logits, p.labels, t, fgbg::anchor_losses(a));
  CHECK(v == soft.value(p.logits, p.labels, t, fgbg::Normalizer::avg_factor(tsum)));
  CHECK(std::abs(a.template cast<double>().sum() / tsum - v) <= 64 * eps * v);
  // Σ targets below 1 (a batch of a few weak positives) divides by 1.
  Vec<S> small = t * S(1e-4);
  CHECK(soft.value(p.logits, p.labels, small) ==
        soft.value(p.logits, p.labels, small, fgbg::Normalizer::sum()));
  // target_sum is refused by a loss without soft targets, at construction and per call.
  CHECK_THROWS_WITH(fgbg::SigmoidCrossEntropyLoss<S>({fgbg::Normalizer::target_sum()}),
                    Catch::Contains("target_sum() needs a loss with soft targets"));
  RowArray<S> g = RowArray<S>::Constant(p.rows(), p.cols(), S(3));
  CHECK_THROWS_WITH(fgbg::SigmoidFocalLoss<S>().value_and_grad(p.logits, p.labels, g,
                                                               fgbg::Normalizer::target_sum()),
                    Catch::Contains("fgbg::SigmoidFocalLoss: Normalizer::target_sum() needs"));
  CHECK((g == S(3)).all());
  // A well-trained positive (t = σ(x) rounded to S): the gradient σ − t is the tiny rounding
  // residual. The plain difference in S would be off by about eps(S)·σ, more than the residual
  // itself; formed in Wide<S> without cancellation (detail::sigmoid_minus) the error is that of
  // logit(t) in Wide: about eps(Wide)·|logit t|·σ(1 − σ) (Wide = double for float, long double
  // for double; on a platform where long double is double the double case gains nothing).
  RowArray<S> x1(1, 1);
  x1(0, 0) = S(2.5);
  fgbg::LabelVector y1(1);
  y1[0] = 1;
  Vec<S> t1(1);
  t1[0] = static_cast<S>(1 / (1 + std::exp(-2.5L)));
  RowArray<S> g1;
  soft.value_and_grad(x1, y1, t1, g1, fgbg::Normalizer::sum());
  const long double want = 1 / (1 + std::exp(-2.5L)) - static_cast<long double>(t1[0]);
  const long double eps_wide = std::numeric_limits<fgbg::detail::Wide<S>>::epsilon();
  CHECK(want != 0);
  CHECK(std::abs(static_cast<long double>(g1(0, 0)) - want) <=
        std::max<long double>(16 * eps_wide * 2.5L * 0.07L, eps * std::abs(want)));
}

TEMPLATE_TEST_CASE("QFL and VFL: per-element vectors", "[qfl][vfl][spec]", float, double) {
  using S = TestType;
  struct Row {
    double x, y, qfl, dqfl, vfl, dvfl;
  };
  const Row rows[] = {{0, 0, 0.1732867951, 0.2982867951, 0.1299650964, 0.2237150964},
                      {1.5, 0, 1.137272316, 0.9614246875, 0.8529542367, 0.7210685156},
                      {0, 0.8, 0.06238324625, -0.1309720771, 0.5545177444, -0.24},
                      {2, 0.6, 0.07308549196, 0.07679518993, 0.5561568066, 0.1684782468},
                      {-3, 0.9, 1.997900435, -0.8314529949, 2.473728616, -0.7673167141}};
  const fgbg::QualityFocalLoss<S> qfl({S(2), fgbg::Normalizer::sum()});
  fgbg::VarifocalLossConfig<S> vcfg;
  vcfg.normalizer = fgbg::Normalizer::sum();
  const fgbg::VarifocalLoss<S> vfl(vcfg);
  const double tol = std::is_same<S, double>::value ? 2e-9 : 2e-6;
  for (const Row& r : rows) {
    RowArray<S> x(1, 1), g(1, 1);
    x(0, 0) = static_cast<S>(r.x);
    fgbg::LabelVector y(1);
    y[0] = r.y > 0 ? 1 : 0;
    Vec<S> q(1);
    q[0] = static_cast<S>(r.y);
    INFO("x = " << r.x << ", y = " << r.y);
    CHECK(qfl.value_and_grad(x, y, q, g) == Approx(r.qfl).epsilon(tol));
    CHECK(g(0, 0) == Approx(r.dqfl).epsilon(tol));
    CHECK(vfl.value_and_grad(x, y, q, g) == Approx(r.vfl).epsilon(tol));
    CHECK(g(0, 0) == Approx(r.dvfl).epsilon(tol));
    if (r.y == 0) {  // QFL: a positive of quality 0 is exactly a negative
      y[0] = 1;
      CHECK(qfl.value_and_grad(x, y, q, g) == Approx(r.qfl).epsilon(tol));
      CHECK(g(0, 0) == Approx(r.dqfl).epsilon(tol));
    }
  }
}

TEMPLATE_TEST_CASE("QFL with quality 1 is focal loss without α, γ = β", "[qfl][focal]", float,
                   double) {
  using S = TestType;
  const QProblem p = make_problem(57, 11, 5);
  const RowArray<S> x = p.x.template cast<S>();
  const Vec<S> ones = Vec<S>::Ones(x.rows());
  for (S beta : {S(2), S(1.5)}) {
    const fgbg::QualityFocalLoss<S> qfl({beta});
    const fgbg::SigmoidFocalLoss<S> focal({S(-1), beta});
    RowArray<S> g1(x.rows(), x.cols()), g2(x.rows(), x.cols());
    const S v1 = qfl.value_and_grad(x, p.y, ones, g1);
    const S v2 = focal.value_and_grad(x, p.y, g2);
    CHECK(v1 == Approx(v2).epsilon(1e-5));
    CHECK(rel_max_diff(g1.template cast<double>(), g2.template cast<double>()) < 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------
// Gradients

TEST_CASE("QFL, VFL, EFL: gradient equals central differences", "[qfl][vfl][efl][gradcheck]") {
  const QProblem p = make_problem(13, 5, 11);
  const Index n = p.x.rows(), k = p.x.cols();
  auto check_quality = [&](const auto& loss, const char* what) {
    INFO(what);
    RowArray<double> g(n, k);
    loss.value_and_grad(p.x, p.y, p.q, g, p.w);
    const auto num = numeric_grad(
        [&](const RowArray<double>& xx) { return double(loss.value(xx, p.y, p.q, p.w)); }, p.x);
    CHECK(rel_max_diff(g, num) < 1e-7);
  };
  check_quality(fgbg::QualityFocalLoss<double>(), "qfl beta=2");
  check_quality(fgbg::QualityFocalLoss<double>({1.5}), "qfl beta=1.5");
  check_quality(fgbg::QualityFocalLoss<double>({3.0, fgbg::Normalizer::mean()}), "qfl beta=3");
  check_quality(fgbg::QualityFocalLoss<double>({1.0}), "qfl beta=1");
  check_quality(fgbg::VarifocalLoss<double>(), "vfl default");
  check_quality(fgbg::SoftTargetCrossEntropyLoss<double>(), "soft-target bce, target_sum");
  check_quality(fgbg::SoftTargetCrossEntropyLoss<double>({fgbg::Normalizer::mean()}),
                "soft-target bce, mean");
  fgbg::VarifocalLossConfig<double> v2;
  v2.iou_weighted = false;
  v2.gamma = 0.5;
  v2.alpha = 0.3;
  check_quality(fgbg::VarifocalLoss<double>(v2), "vfl not iou-weighted, gamma .5");

  SECTION("EFL with a non-uniform state (γ_j constant within a call)") {
    fgbg::EqualizedFocalState state(k);
    const fgbg::EqualizedFocalLoss<double> efl;
    RowArray<double> g(n, k);
    efl.value_and_grad(p.x, p.y, g, state, p.w);  // the first update makes γ_j differ
    efl.value_and_grad(p.x, p.y, g, state, p.w);
    const fgbg::EqualizedFocalState frozen = state;
    bool differ = false;
    for (Index j = 1; j < k; ++j) differ = differ || efl.gamma(frozen, j) != efl.gamma(frozen, 0);
    CHECK(differ);
    efl.value_and_grad(p.x, p.y, g, state, p.w);
    const auto num = numeric_grad(
        [&](const RowArray<double>& xx) { return double(efl.value(xx, p.y, frozen, p.w)); }, p.x);
    CHECK(rel_max_diff(g, num) < 1e-7);
    // per-element weights and α disabled
    fgbg::EqualizedFocalLossConfig<double> cfg;
    cfg.alpha = -1;
    cfg.gamma_b = 1.5;
    cfg.scale = 3;
    const fgbg::EqualizedFocalLoss<double> efl2(cfg);
    RowArray<double> we = RowArray<double>::Constant(n, k, 0.7);
    we(2, 3) = 2.0;
    fgbg::EqualizedFocalState s2 = frozen;
    efl2.value_and_grad(p.x, p.y, g, s2, we);
    const auto num2 = numeric_grad(
        [&](const RowArray<double>& xx) { return double(efl2.value(xx, p.y, frozen, we)); }, p.x);
    CHECK(rel_max_diff(g, num2) < 1e-7);
  }
}

// ---------------------------------------------------------------------------------------------
// EFL statistics

TEST_CASE("EFL with a fresh state is the focal loss", "[efl][focal]") {
  const QProblem p = make_problem(40, 6, 21);
  fgbg::EqualizedFocalState state(6);
  const fgbg::EqualizedFocalLoss<double> efl;
  const fgbg::SigmoidFocalLoss<double> focal;
  RowArray<double> g1(40, 6), g2(40, 6);
  CHECK(efl.value(p.x, p.y, state) == Approx(focal.value(p.x, p.y)).epsilon(1e-14));
  const double v1 = efl.value_and_grad(p.x, p.y, g1, state);
  const double v2 = focal.value_and_grad(p.x, p.y, g2);
  CHECK(v1 == Approx(v2).epsilon(1e-14));
  CHECK(rel_max_diff(g1, g2) < 1e-14);
  CHECK(state.updates() == 1);
}

TEST_CASE("EFL statistics evolve as a plain re-computation says", "[efl][state]") {
  const Index k = 7;
  // Class 7 never has a positive (its γ rises to γ_b + s); class 1 has many.
  auto batch = [&](std::uint64_t seed, Index n) {
    QProblem p = make_problem(n, k, seed, 2.5);
    for (Index i = 0; i < n; ++i) {
      if (p.y[i] == 7) p.y[i] = 0;
      if (i % 5 == 0) p.y[i] = 1;
    }
    return p;
  };
  for (double decay : {1.0, 0.6}) {
    DYNAMIC_SECTION("decay " << decay) {
      fgbg::EqualizedFocalLossConfig<double> cfg;
      cfg.decay = decay;
      const fgbg::EqualizedFocalLoss<double> efl(cfg);
      fgbg::EqualizedFocalState state(k);
      PlainEfl plain(k);
      plain.decay = decay;
      for (int call = 0; call < 5; ++call) {
        INFO("call " << call);
        const QProblem p = batch(100 + call, 30 + 7 * call);
        RowArray<double> g(p.x.rows(), k), g_plain;
        for (Index j = 0; j < k; ++j) CHECK(efl.gamma(state, j) == Approx(plain.gamma(j)));
        const double v = efl.value_and_grad(p.x, p.y, g, state);
        const double v_plain = plain.call(p.x, p.y, g_plain);
        CHECK(v == Approx(v_plain).epsilon(1e-12));
        CHECK(rel_max_diff(g, g_plain) < 1e-12);
        for (Index j = 0; j < k; ++j) {
          CHECK(state.pos_grad()[j] == Approx(plain.pos[j]).epsilon(1e-12).margin(1e-300));
          CHECK(state.neg_grad()[j] == Approx(plain.neg[j]).epsilon(1e-12));
          CHECK(state.ratio()[j] == Approx(plain.ratio[j]).epsilon(1e-12));
        }
        CHECK(state.updates() == call + 1);
      }
      CHECK(efl.gamma(state, 6) == Approx(10.0));  // never a positive: g = 0, γ = γ_b + s
      CHECK(efl.gamma(state, 0) < 10.0);
      state.reset();
      CHECK((state.ratio() == 1.0).all());
      CHECK((state.pos_grad() == 0.0).all());
      CHECK(state.updates() == 0);
    }
  }
}

// Stateful-API convention (as GHM-C): value_and_grad(inputs, grad, state, [weights,
// [normalizer]]) and value(inputs, const state, ...). EFL used to take the state before the
// gradient; these checks did not compile against that order. The reverse order must not compile:
// tests/compile_fail/call_misuse.cpp checks that it stops with fgbg's message.
template <typename Loss, typename A, typename B, typename = void>
struct CallsValueAndGrad : std::false_type {};
template <typename Loss, typename A, typename B>
struct CallsValueAndGrad<
    Loss, A, B,
    std::void_t<decltype(std::declval<const Loss&>().value_and_grad(
        std::declval<const RowArray<double>&>(), std::declval<const fgbg::LabelVector&>(),
        std::declval<A>(), std::declval<B>()))>> : std::true_type {};
template <typename Loss, typename St, typename = void>
struct CallsValue : std::false_type {};
template <typename Loss, typename St>
struct CallsValue<Loss, St,
                  std::void_t<decltype(std::declval<const Loss&>().value(
                      std::declval<const RowArray<double>&>(),
                      std::declval<const fgbg::LabelVector&>(), std::declval<St>()))>>
    : std::true_type {};

TEST_CASE("EFL: argument order is inputs, gradient, state; value() takes a const state",
          "[efl][state][api][regression]") {
  using Efl = fgbg::EqualizedFocalLoss<double>;
  using State = fgbg::EqualizedFocalState;
  STATIC_REQUIRE(CallsValueAndGrad<Efl, RowArray<double>&, State&>::value);
  STATIC_REQUIRE(CallsValue<Efl, const State&>::value);
  // With weights and an explicit normaliser, the state stays right after the gradient.
  const QProblem p = make_problem(40, 5, 7);
  const Efl efl;
  State state(5), twin(5);
  RowArray<double> g(40, 5), g2(40, 5);
  const double v = efl.value_and_grad(p.x, p.y, g, state, p.w, fgbg::Normalizer::mean());
  const double v2 = efl.value_and_grad(p.x, p.y, g2, twin, p.w, fgbg::Normalizer::mean());
  CHECK(v == v2);
  CHECK(state.updates() == 1);
  // value() with the current state reports what value_and_grad would compute now.
  const State& frozen = state;
  const double predicted = efl.value(p.x, p.y, frozen, p.w, fgbg::Normalizer::mean());
  CHECK(state.updates() == 1);
  CHECK(efl.value_and_grad(p.x, p.y, g, state, p.w, fgbg::Normalizer::mean()) == predicted);
}

TEMPLATE_TEST_CASE("EFL: value() does not update, float follows double", "[efl][state]", float,
                   double) {
  using S = TestType;
  const QProblem p = make_problem(300, 9, 31);
  const RowArray<S> x = p.x.template cast<S>();
  const fgbg::EqualizedFocalLoss<S> efl;
  fgbg::EqualizedFocalState state(9);
  RowArray<S> g(300, 9);
  for (int i = 0; i < 3; ++i) efl.value_and_grad(x, p.y, g, state);
  const fgbg::EqualizedFocalState before = state;
  efl.value(x, p.y, state);
  CHECK((state.ratio() == before.ratio()).all());
  CHECK(state.updates() == 3);
  // The same three calls in double.
  const fgbg::EqualizedFocalLoss<double> efld;
  fgbg::EqualizedFocalState sd(9);
  RowArray<double> gd(300, 9);
  double vd = 0;
  for (int i = 0; i < 3; ++i) vd = efld.value_and_grad(p.x, p.y, gd, sd);
  CHECK(rel_max_diff(state.ratio(), sd.ratio()) < 1e-4);
  CHECK(static_cast<double>(efl.value(x, p.y, before)) ==
        Approx(efld.value(p.x, p.y, before)).epsilon(1e-5));
  (void)vd;
}

// ---------------------------------------------------------------------------------------------
// Layouts

// ---------------------------------------------------------------------------------------------
// Edge cases

TEMPLATE_TEST_CASE("QFL, VFL, EFL: edge cases", "[qfl][vfl][efl][edge]", float, double) {
  using S = TestType;
  const fgbg::QualityFocalLoss<S> qfl;
  const fgbg::VarifocalLoss<S> vfl;
  const fgbg::EqualizedFocalLoss<S> efl;
  SECTION("N = 0: EFL counts the update, the ratio becomes 0") {
    RowArray<S> x(0, 80), g(0, 80);
    fgbg::LabelVector y(0);
    fgbg::EqualizedFocalState st(80);
    CHECK(efl.value_and_grad(x, y, g, st) == S(0));
    CHECK(st.updates() == 1);
    CHECK((st.ratio() == 0.0).all());  // the reference's clamp(0 / 1e-10)
  }
  SECTION("no positives: sum of the negative terms, normaliser 1") {
    RowArray<S> x = RowArray<S>::Constant(3, 2, S(-1.2)), g(3, 2);
    x(1, 1) = S(0.7);
    fgbg::LabelVector y = fgbg::LabelVector::Zero(3);
    const Vec<S> q = Vec<S>::Zero(3);
    double qsum = 0, vsum = 0;
    for (Index i = 0; i < x.size(); ++i) {
      const double xi = x.data()[i], p = 1 / (1 + std::exp(-xi)), sp = std::log1p(std::exp(xi));
      qsum += p * p * sp;
      vsum += 0.75 * p * p * sp;
    }
    CHECK(double(qfl.value_and_grad(x, y, q, g)) == Approx(qsum).epsilon(1e-6));
    CHECK((g > S(0)).all());
    CHECK(double(vfl.value_and_grad(x, y, q, g)) == Approx(vsum).epsilon(1e-6));
    fgbg::EqualizedFocalState st(2);
    efl.value_and_grad(x, y, g, st);
    CHECK((st.pos_grad() == 0.0).all());
    CHECK((st.neg_grad() > 0.0).all());
  }
  SECTION("all ignored: EFL statistics unchanged") {
    RowArray<S> x = RowArray<S>::Constant(5, 3, S(1.5)), g = RowArray<S>::Constant(5, 3, S(9));
    fgbg::LabelVector y = fgbg::LabelVector::Constant(5, -1);
    fgbg::EqualizedFocalState st(3);
    CHECK(efl.value_and_grad(x, y, g, st) == S(0));
    CHECK((g == S(0)).all());
    CHECK((st.pos_grad() == 0.0).all());
    CHECK((st.neg_grad() == 0.0).all());
  }
  SECTION("±1e4 logits stay finite") {
    RowArray<S> x(4, 2), g(4, 2);
    x << S(1e4), S(-1e4), S(-1e4), S(1e4), S(1e4), S(1e4), S(-1e4), S(-1e4);
    fgbg::LabelVector y(4);
    y << 1, 2, 0, 0;
    Vec<S> q(4);
    q << S(0.7), S(0.3), S(0), S(0);
    for (S beta : {S(1), S(1.5), S(2)}) {
      CHECK(std::isfinite(fgbg::QualityFocalLoss<S>({beta}).value_and_grad(x, y, q, g)));
      CHECK(g.isFinite().all());
    }
    for (S gamma : {S(0), S(0.5), S(2)}) {
      fgbg::VarifocalLossConfig<S> c;
      c.gamma = gamma;
      CHECK(std::isfinite(fgbg::VarifocalLoss<S>(c).value_and_grad(x, y, q, g)));
      CHECK(g.isFinite().all());
    }
    fgbg::EqualizedFocalState st(2);
    for (int i = 0; i < 3; ++i) {
      CHECK(std::isfinite(efl.value_and_grad(x, y, g, st)));
      CHECK(g.isFinite().all());
      CHECK(st.ratio().isFinite().all());
    }
  }
  SECTION("VFL clamps a positive's quality 0 to min_quality") {
    RowArray<S> x = RowArray<S>::Constant(1, 2, S(0.3)), g1(1, 2), g2(1, 2);
    fgbg::LabelVector y(1);
    y << 2;
    Vec<S> q0(1), qm(1);
    q0 << S(0);
    qm << S(1e-6);
    CHECK(vfl.value_and_grad(x, y, q0, g1) == vfl.value_and_grad(x, y, qm, g2));
    CHECK((g1 == g2).all());
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST_CASE("QFL, VFL, EFL: invalid hyper-parameters", "[qfl][vfl][efl][errors]") {
  CHECK_THROWS_WITH(fgbg::QualityFocalLoss<float>({0.5f}),
                    "fgbg::QualityFocalLoss: config.beta must be finite and >= 1, got 0.5");
  CHECK_THROWS_AS(fgbg::QualityFocalLoss<double>({std::nan("")}), std::invalid_argument);
  CHECK_THROWS_AS(fgbg::QualityFocalLoss<double>({2.0, fgbg::Normalizer::avg_factor(0)}),
                  std::invalid_argument);
  fgbg::VarifocalLossConfig<double> v;
  v.alpha = -0.1;
  CHECK_THROWS_WITH(fgbg::VarifocalLoss<double>(v), Catch::Contains("config.alpha must be"));
  v = {};
  v.gamma = -1;
  CHECK_THROWS_WITH(fgbg::VarifocalLoss<double>(v), Catch::Contains("config.gamma must be"));
  v = {};
  v.min_quality = 2;
  CHECK_THROWS_WITH(fgbg::VarifocalLoss<double>(v), Catch::Contains("config.min_quality must be"));
  fgbg::EqualizedFocalLossConfig<double> e;
  e.gamma_b = 0;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<double>(e),
                    "fgbg::EqualizedFocalLoss: config.gamma_b must be finite and > 0, got 0");
  e = {};
  e.scale = -1;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<double>(e), Catch::Contains("config.scale"));
  e = {};
  e.decay = 1.5;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<double>(e), Catch::Contains("config.decay"));
  e = {};
  e.alpha = 2;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<double>(e), Catch::Contains("config.alpha"));
  CHECK_THROWS_AS(fgbg::EqualizedFocalState(-1), std::invalid_argument);
}
