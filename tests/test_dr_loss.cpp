// DR loss: reference vectors (the authors' module, torch autograd), the spec's hand-checked
// values, central differences, a long-double oracle on multi-tile inputs, grouping, layouts
// (in place, label types), edge cases and hyper-parameter errors. What every loss promises (bad
// inputs, layouts, allocation) is in test_contract.cpp.
#include <fgbg/ranking/dr_loss.hpp>
#include <random>
#include <vector>

#include "support/problems.hpp"
#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename Scalar>
fgbg::DRLoss<Scalar> make_dr(const json& p) {
  fgbg::DRLossConfig<Scalar> c;
  c.pos_lambda = static_cast<Scalar>(p["pos_lambda"].get<double>());
  c.neg_lambda = static_cast<Scalar>(p["neg_lambda"].get<double>());
  c.L = static_cast<Scalar>(p["L"].get<double>());
  c.tau = static_cast<Scalar>(p["tau"].get<double>());
  c.margin = static_cast<Scalar>(p["margin"].get<double>());
  return fgbg::DRLoss<Scalar>(c);
}

/// Straightforward long-double DR loss (flattened entries, max-subtracted softmaxes) and its
/// closed-form gradient: the oracle for inputs larger than the reference cases. The softmaxes are
/// over keys k (p for negatives, −p for positives) with t = (k − max k)/λ, and the gradient factor
/// 1 ± (p − D)/λ is formed as 1 + t − Σ q·t: p − D over a tiny λ would amplify D's rounding.
struct Oracle {
  double value = 0;
  RowArray<double> grad;
};

template <typename Scalar>
Oracle oracle(const RowArray<Scalar>& x, const fgbg::LabelVector& y,
              const fgbg::DRLossConfig<Scalar>& cfg = {}) {
  using LD = long double;
  const Index n = x.rows(), c = x.cols();
  const LD ln = cfg.neg_lambda, lp = cfg.pos_lambda;
  auto prob = [&](Index i, Index k) { return 1.0L / (1.0L + std::exp(-LD(x(i, k)))); };
  auto kind = [&](Index i, Index k) { return y[i] == -1 ? 0 : (y[i] == k + 1 ? 1 : -1); };
  LD mn = -INFINITY, mp = -INFINITY;
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < c; ++k) {
      if (kind(i, k) < 0) mn = std::max(mn, prob(i, k));
      if (kind(i, k) > 0) mp = std::max(mp, -prob(i, k));
    }
  auto t_of = [&](Index i, Index k) {
    return kind(i, k) < 0 ? (prob(i, k) - mn) / ln : (-prob(i, k) - mp) / lp;
  };
  LD s0n = 0, stn = 0, s0p = 0, stp = 0;
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < c; ++k) {
      if (kind(i, k) == 0) continue;
      const LD t = t_of(i, k), w = std::exp(t);
      (kind(i, k) < 0 ? s0n : s0p) += w;
      (kind(i, k) < 0 ? stn : stp) += w * t;
    }
  const LD mtn = s0n > 0 ? stn / s0n : 0.0L, mtp = s0p > 0 ? stp / s0p : 0.0L;
  const LD dn = s0n > 0 ? mn + ln * mtn : 0.0L, dp = s0p > 0 ? -(mp + lp * mtp) : 1.0L;
  const LD lu = LD(cfg.L) * (dn - dp + LD(cfg.margin));
  const LD a = LD(cfg.tau) / (1.0L + std::exp(-lu));
  Oracle o;
  o.value = static_cast<double>(LD(cfg.tau) / LD(cfg.L) * std::log1p(std::exp(lu)));
  o.grad = RowArray<double>::Zero(n, c);
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < c; ++k) {
      if (kind(i, k) == 0) continue;
      const LD p = prob(i, k), sd = p * (1 - p), t = t_of(i, k);
      if (kind(i, k) < 0)
        o.grad(i, k) = double(a * std::exp(t) / s0n * (1 + t - mtn) * sd);
      else
        o.grad(i, k) = double(-a * std::exp(t) / s0p * (1 + t - mtp) * sd);
    }
  return o;
}

/// Random batch (support/problems.hpp): logits ~ N(mu, sd), labels −1 (10 %), 1..C (20 %), 0.
template <typename Scalar>
void random_batch(Index n, Index c, std::uint64_t seed, RowArray<Scalar>& x, fgbg::LabelVector& y,
                  double mu = -2.0, double sd = 2.5) {
  ProblemOptions o;
  o.n = n;
  o.classes = c;
  o.positive_fraction = 0.2;
  o.ignored_fraction = 0.1;
  o.logit_centre = mu;
  o.logit_spread = sd;
  o.positive_lift = 0;
  o.at_least_one_positive = false;
  Problem<Scalar> p = random_problem<Scalar>(seed, o);
  x = std::move(p.logits);
  y = std::move(p.labels);
}

const double kEmptyValue = 4.0 / 6.0 * std::log1p(std::exp(-3.0));  // D+ = 1, D- = 0

}  // namespace

TEMPLATE_TEST_CASE("DR loss matches the authors' module (reference vectors)", "[dr][reference]",
                   float, double) {
  using S = TestType;
  const json ref = load_reference("dr_loss.json");
  REQUIRE(ref["cases"].size() >= 10);
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      REQUIRE(c["normalization"] == "none");
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const fgbg::DRLoss<S> loss = make_dr<S>(c["params"]);
      RowArray<S> g = RowArray<S>::Constant(n, k, S(9));
      const S v = loss.value_and_grad(x, y, g);
      check_scalar<S>("loss", v, c["expected"]["loss"]);
      if (n > 0) check_array<S>("grad", g, c["expected"]["grad"]);
      check_scalar<S>("value()", loss.value(x, y), c["expected"]["loss"]);
      // The same case as one group gives the same numbers.
      RowArray<S> g2(n, k);
      const Eigen::ArrayXi one_group = Eigen::ArrayXi::Zero(n);
      if (n > 0) {
        CHECK(loss.value_and_grad(x, y, g2, fgbg::groups(one_group)) == v);
        CHECK((g2 == g).all());
      }
    }
  }
}

TEST_CASE("DR loss: hand-checked values", "[dr][spec]") {
  const fgbg::DRLoss<double> dr;
  RowArray<double> x(8, 1), g(8, 1);
  x << 2.0, 0.3, -0.4, 1.2, 0.0, -1.5, 0.25, 0.9;
  fgbg::LabelVector y(8);
  y << 1, 1, 1, 0, 0, 0, -1, 0;
  CHECK(dr.value_and_grad(x, y, g) == Approx(2.662827939587).epsilon(1e-11));
  const double want[8] = {-0.072657002970,
                          -0.330332580425,
                          -0.452415007104,
                          0.601471824450,
                          -0.045846588765,
                          -0.001503380587,
                          0.0,
                          0.151807261291};
  for (int i = 0; i < 8; ++i) {
    INFO("entry " << i);
    CHECK(g(i, 0) == Approx(want[i]).margin(1e-12));
  }
  // Negative gradients on easy negatives (p_j < D− − λ−), as the spec notes.
  CHECK(g(4, 0) < 0);
  CHECK(g(5, 0) < 0);

  // Positives removed (made ignored): D+ = 1.
  y << -1, -1, -1, 0, 0, 0, -1, 0;
  CHECK(dr.value_and_grad(x, y, g) == Approx(1.113977028423).epsilon(1e-11));
  CHECK(g(0, 0) == 0.0);

  // All p = 0.5: D− = D+ = 0.5, value 4·ln(1 + e³)/6 ≈ 2.0324 (the authors' sanity value).
  RowArray<double> z = RowArray<double>::Zero(50, 4), gz(50, 4);
  fgbg::LabelVector yz = fgbg::LabelVector::Zero(50);
  yz.head(10).setConstant(2);
  CHECK(dr.value(z, yz) == Approx(4.0 / 6.0 * std::log1p(std::exp(3.0))).epsilon(1e-14));
  CHECK(dr.value(z, yz) == Approx(2.0324).margin(1e-4));
}

TEST_CASE("DR loss: gradient equals central differences", "[dr][gradcheck]") {
  RowArray<double> x;
  fgbg::LabelVector y;
  random_batch(13, 4, 11, x, y, 0.0, 2.0);
  y[0] = 2;
  y[1] = 0;
  y[2] = -1;
  auto check = [&](const fgbg::DRLossConfig<double>& cfg, const char* what) {
    INFO(what);
    const fgbg::DRLoss<double> dr(cfg);
    RowArray<double> g(x.rows(), x.cols());
    dr.value_and_grad(x, y, g);
    const auto num = numeric_grad([&](const RowArray<double>& xx) { return dr.value(xx, y); }, x);
    CHECK(rel_max_diff(g, num) < 1e-8);
    CHECK(g.row(2).isZero(0));
    // Grouped: three images of 5, 5 and 3 anchors.
    Eigen::ArrayXi groups(13);
    groups << 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 4, 4, 4;
    dr.value_and_grad(x, y, g, fgbg::groups(groups));
    const auto numg = numeric_grad(
        [&](const RowArray<double>& xx) { return dr.value(xx, y, fgbg::groups(groups)); }, x);
    CHECK(rel_max_diff(g, numg) < 1e-8);
  };
  check({}, "defaults");
  check({0.5, 0.3, 2.0, 1.0, 0.2}, "lambda+ .5, lambda- .3, L 2, tau 1, margin .2");
  check({2.0, 0.05, 10.0, 3.0, -0.3}, "lambda+ 2, lambda- .05, L 10, tau 3, margin -.3");
  y.setZero();
  y[2] = -1;
  check({}, "no positives");
  y.setConstant(1);
  y[2] = -1;
  check({}, "every anchor positive (other columns negative)");
}

// Found by fuzz_dr: with τ at the type's maximum, A·q·(1 + (p − D₋)/λ₋) overflowed before σ'(x)
// brought the negative gradient back into range (float: inf where the exact is 2.2e33).
TEMPLATE_TEST_CASE("DR loss: tau at the type's maximum gives the finite exact gradient",
                   "[dr][oracle][hardening]", float, double) {
  using S = TestType;
  fgbg::DRLossConfig<S> cfg{S(3.76904296875), S(0.00048828125), S(54526976),
                            std::numeric_limits<S>::max(), S(10.66015625)};
  RowArray<S> x(3, 2);
  x << S(0.309570312), S(11.9995117), S(0), S(0), S(2), S(7.16064453);
  fgbg::LabelVector y(3);
  y << 0, 0, 0;
  for (int pos = 0; pos < 2; ++pos) {
    if (pos) y[2] = 2;  // and with a positive entry (its gradient is formed in double)
    const Oracle o = oracle(x, y, cfg);
    const fgbg::DRLoss<S> dr(cfg);
    RowArray<S> g(3, 2);
    dr.value_and_grad(x, y, g);
    for (Index i = 0; i < 3; ++i)
      for (Index k = 0; k < 2; ++k) {
        INFO("entry " << i << ", " << k << ": exact " << o.grad(i, k) << ", got " << g(i, k));
        if (!(std::abs(o.grad(i, k)) < 0.5 * double(std::numeric_limits<S>::max()))) continue;
        CHECK(std::isfinite(g(i, k)));
        CHECK(std::abs(double(g(i, k)) - o.grad(i, k)) <= 1e-4 * std::abs(o.grad(i, k)) + 1e-30);
      }
  }
}

// Found by fuzz_dr: margin = DBL_MAX with L = DBL_MIN and τ = 1e-15 gave an inf value (h + sp/L
// overflowed before the multiplication by τ) where the exact value is 1.8e293.
TEST_CASE("DR loss: a huge margin with a tiny L and tau gives the finite value",
          "[dr][oracle][hardening]") {
  const double mx = std::numeric_limits<double>::max();
  const fgbg::DRLossConfig<double> cfg{1e-15, mx, std::numeric_limits<double>::min(), 1e-15, mx};
  RowArray<double> x(2, 1);
  x << -0.00048828125, -0.00048828125;
  fgbg::LabelVector y(2);
  y << 0, -1;
  const Oracle o = oracle(x, y, cfg);
  const fgbg::DRLoss<double> dr(cfg);
  RowArray<double> g(2, 1);
  const double v = dr.value_and_grad(x, y, g);
  INFO("value " << v << ", exact " << o.value);
  CHECK(std::isfinite(v));
  CHECK(std::abs(v - o.value) <= 1e-12 * o.value);
  CHECK(dr.value(x, y) == v);
}

TEMPLATE_TEST_CASE("DR loss: multi-tile inputs match a long-double oracle", "[dr][oracle]", float,
                   double) {
  using S = TestType;
  const double tol = std::is_same<S, double>::value ? 1e-12 : 2e-5;
  RowArray<S> x;
  fgbg::LabelVector y;
  SECTION("3000 x 80, hardest negative in the last tile (running max rescaled)") {
    random_batch(3000, 80, 5, x, y, -4.0, 1.0);
    x(2990, 7) = S(6);
    y[2990] = 0;
    for (const fgbg::DRLossConfig<S> cfg :
         {fgbg::DRLossConfig<S>{}, fgbg::DRLossConfig<S>{S(0.01), S(0.002), S(6), S(4), S(0.5)}}) {
      const Oracle o = oracle(x, y, cfg);
      const fgbg::DRLoss<S> dr(cfg);
      RowArray<S> g(x.rows(), x.cols());
      const S v = dr.value_and_grad(x, y, g);
      CHECK(std::abs(v - o.value) <= tol * std::max(1.0, std::abs(o.value)));
      CHECK(rel_max_diff(g.template cast<double>(), o.grad) < tol);
      CHECK(dr.value(x, y) == v);
    }
  }
  SECTION("one column, 20000 anchors, half positive") {
    random_batch(20000, 1, 9, x, y, 0.0, 3.0);
    for (Index i = 0; i < y.size(); i += 2) y[i] = 1;
    const Oracle o = oracle(x, y);
    const fgbg::DRLoss<S> dr;
    RowArray<S> g(x.rows(), 1);
    const S v = dr.value_and_grad(x, y, g);
    CHECK(std::abs(v - o.value) <= tol * std::max(1.0, std::abs(o.value)));
    CHECK(rel_max_diff(g.template cast<double>(), o.grad) < tol);
  }
  SECTION("C = 3000 > tile width (tiles split a row)") {
    random_batch(7, 3000, 6, x, y, -3.0, 2.0);
    y << 2999, 1, 0, -1, 1500, 0, 3000;
    const Oracle o = oracle(x, y);
    const fgbg::DRLoss<S> dr;
    RowArray<S> g(x.rows(), x.cols());
    const S v = dr.value_and_grad(x, y, g);
    CHECK(std::abs(v - o.value) <= tol * std::max(1.0, std::abs(o.value)));
    CHECK(rel_max_diff(g.template cast<double>(), o.grad) < tol);
  }
}

TEMPLATE_TEST_CASE("DR loss: per-image groups equal separate calls summed", "[dr][groups]", float,
                   double) {
  using S = TestType;
  RowArray<S> x;
  fgbg::LabelVector y;
  random_batch(900, 20, 3, x, y);
  // Images of 400, 1 (background only), 150 (all ignored), 349 (no positives) anchors.
  const Index sizes[4] = {400, 1, 150, 349};
  y[400] = 0;
  y.segment(401, 150).setConstant(-1);
  for (Index i = 551; i < 900; ++i) y[i] = std::min(y[i], 0);
  Eigen::ArrayXi groups(900);
  const fgbg::DRLoss<S> dr;
  RowArray<S> g(900, 20), gs(900, 20);
  double sum = 0;
  for (Index k = 0, r0 = 0; k < 4; r0 += sizes[k], ++k) {
    groups.segment(r0, sizes[k]).setConstant(static_cast<int>(10 * k) - 5);
    RowArray<S> xk = x.middleRows(r0, sizes[k]), gk(sizes[k], 20);
    const fgbg::LabelVector yk = y.segment(r0, sizes[k]);
    sum += dr.value_and_grad(xk, yk, gk);
    gs.middleRows(r0, sizes[k]) = gk;
  }
  const S v = dr.value_and_grad(x, y, g, fgbg::groups(groups));
  CHECK(v == Approx(sum).epsilon(std::is_same<S, double>::value ? 1e-14 : 1e-6));
  // Not bit for bit: a group starts at another offset inside a tile than a separate call, so an
  // element can fall on the vectorised or the scalar-tail path of exp (1 ulp apart).
  CHECK(rel_max_diff(g.template cast<double>(), gs.template cast<double>()) <
        (std::is_same<S, double>::value ? 1e-14 : 1e-6));
  CHECK(dr.value(x, y, fgbg::groups(groups)) == v);
  CHECK(g.middleRows(401, 150).isZero(0));
  // Pooled is a different loss.
  CHECK(std::abs(dr.value(x, y) - v) > 1e-3);
}

TEMPLATE_TEST_CASE("DR loss: layouts, Maps, blocks, expressions and aliasing agree", "[dr][layout]",
                   float, double) {
  using S = TestType;
  RowArray<S> x;
  fgbg::LabelVector y;
  random_batch(157, 37, 8, x, y);
  const fgbg::DRLoss<S> dr;
  RowArray<S> g_ref(157, 37);
  const S v_ref = dr.value_and_grad(x, y, g_ref);
  // Equal up to the last bit: with -march=native, Eigen peels unaligned heads of a tile through
  // the scalar exp, so where a tile sits in memory can move a result by one ulp.
  const double tol = std::is_same<S, double>::value ? 1e-14 : 1e-6;
  auto same = [&](const auto& g) {
    return rel_max_diff(g.template cast<double>(), g_ref.template cast<double>()) < tol;
  };
  auto same_v = [&](S v) {
    return std::abs(double(v) - double(v_ref)) <= tol * std::max(1.0, std::abs(double(v_ref)));
  };

  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> xc = x, gc(157, 37);
  CHECK(same_v(dr.value_and_grad(xc, y, gc)));
  CHECK(same(gc));

  std::vector<S> buffer(x.data(), x.data() + x.size());
  Eigen::Map<const RowArray<S>> xm(buffer.data(), 157, 37);
  RowArray<S> big = RowArray<S>::Constant(160, 40, S(42));
  CHECK(same_v(dr.value_and_grad(xm, y, big.block(1, 2, 157, 37))));
  CHECK(same(big.block(1, 2, 157, 37)));
  CHECK(big(0, 0) == S(42));
  CHECK(big(159, 39) == S(42));

  RowArray<S> g2(157, 37);
  CHECK(same_v(dr.value_and_grad(x * S(1), y, g2)));
  CHECK(same(g2));

  // Gradient written over the logits (in place).
  RowArray<S> inplace = x;
  CHECK(same_v(dr.value_and_grad(inplace, y, inplace)));
  CHECK(same(inplace));

  // Labels as a row vector of another integer type.
  Eigen::Array<std::int64_t, 1, Eigen::Dynamic> y64 = y.transpose().template cast<std::int64_t>();
  CHECK(same_v(dr.value_and_grad(x, y64, g2)));
  CHECK(dr.value(x, y64) == v_ref);
}

TEMPLATE_TEST_CASE("DR loss: edge cases", "[dr][edge]", float, double) {
  using S = TestType;
  const fgbg::DRLoss<S> dr;
  SECTION("N = 0: D+ = 1, D- = 0") {
    RowArray<S> x(0, 80), g(0, 80);
    fgbg::LabelVector y(0);
    CHECK(dr.value_and_grad(x, y, g) == Approx(kEmptyValue));
    CHECK(dr.value(x, y) == Approx(kEmptyValue));
    // No groups at all: the sum over zero groups.
    CHECK(dr.value(x, y, fgbg::groups(Eigen::ArrayXi(0))) == S(0));
  }
  SECTION("all ignored: constant value, zero gradient written") {
    RowArray<S> x = RowArray<S>::Constant(5, 3, S(1.5)), g = RowArray<S>::Constant(5, 3, S(9));
    fgbg::LabelVector y = fgbg::LabelVector::Constant(5, -1);
    CHECK(dr.value_and_grad(x, y, g) == Approx(kEmptyValue));
    CHECK((g == S(0)).all());
  }
  SECTION("no positives: D+ = 1") {
    RowArray<S> x(3, 2), g(3, 2);
    x << S(-1), S(0.5), S(2), S(-3), S(0), S(1);
    fgbg::LabelVector y = fgbg::LabelVector::Zero(3);
    const Oracle o = oracle(x, y);
    CHECK(dr.value_and_grad(x, y, g) == Approx(o.value).epsilon(1e-6));
    CHECK(rel_max_diff(g.template cast<double>(), o.grad) < 1e-6);
  }
  SECTION("no negatives: D- = 0") {
    RowArray<S> x(3, 1), g(3, 1);
    x << S(-1), S(0.5), S(2);
    fgbg::LabelVector y = fgbg::LabelVector::Ones(3);
    const Oracle o = oracle(x, y);
    CHECK(dr.value_and_grad(x, y, g) == Approx(o.value).epsilon(1e-6));
    CHECK(rel_max_diff(g.template cast<double>(), o.grad) < 1e-6);
    CHECK((g <= S(0)).all());
  }
  SECTION("±1e4 logits stay finite, for tiny lambdas too") {
    RowArray<S> x(4, 3), g(4, 3);
    x << S(1e4), S(-1e4), S(3), S(-1e4), S(1e4), S(-1e4), S(1e4), S(1e4), S(0), S(-1e4), S(-1e4),
        S(-1e4);
    fgbg::LabelVector y(4);
    y << 1, 1, 0, 3;
    for (const fgbg::DRLossConfig<S> cfg :
         {fgbg::DRLossConfig<S>{}, fgbg::DRLossConfig<S>{S(1e-3), S(1e-4), S(50), S(4), S(0.5)}}) {
      const fgbg::DRLoss<S> d(cfg);
      const S v = d.value_and_grad(x, y, g);
      CHECK(std::isfinite(v));
      CHECK(g.isFinite().all());
      const Oracle o = oracle(x, y, cfg);
      CHECK(v == Approx(o.value).epsilon(1e-5));
      CHECK(rel_max_diff(g.template cast<double>(), o.grad) < 1e-5);
    }
    // Every negative saturated at p = 0 while the positive sits at p = 0.
    RowArray<S> z = RowArray<S>::Constant(3, 2, S(-1e4));
    fgbg::LabelVector yz(3);
    yz << 1, 0, 0;
    const fgbg::DRLoss<S> tiny({S(1), S(1e-4)});
    CHECK(std::isfinite(tiny.value_and_grad(z, yz, g.topRows(3).leftCols(2))));
    CHECK(g.topRows(3).leftCols(2).isFinite().all());
  }
  SECTION("tiny lambdas with tied hardest entries: finite, exact gradient") {
    // Found by fuzz_dr: with λ₊ = 1e-301 the factor 1 − (p − D₊)/λ₊ of three tied hardest
    // positives is exactly 1, but D₊ = Σ w p / Σ w rounded by an ulp of p, and the ulp times
    // 1/λ₊ made it 1e284 and the gradient −inf. The other entries' weights are e^{-1e300} = 0.
    const S lam = std::numeric_limits<S>::min() * S(4);  // 1/λ finite in the scalar type
    const S xp = S(-0.00048828125), xn = S(0.3);
    RowArray<S> x(8, 1), g(8, 1);
    x << xp, S(2), xp, S(8), xp, xn, S(-1), xn;
    fgbg::LabelVector y(8);
    y << 1, 1, 1, 1, 1, 0, 0, 0;
    // Positives 0, 2, 4 tie at the lowest p (key −p), 1 and 3 are above; negatives 5 and 7 tie
    // at the highest p, 6 is below.
    for (const bool tiny_pos : {true, false}) {
      fgbg::DRLossConfig<S> cfg;
      (tiny_pos ? cfg.pos_lambda : cfg.neg_lambda) = lam;
      const fgbg::DRLoss<S> d(cfg);
      const S v = d.value_and_grad(x, y, g);
      const Oracle o = oracle(x, y, cfg);
      INFO("tiny " << (tiny_pos ? "pos" : "neg") << "_lambda");
      CHECK(v == Approx(o.value).epsilon(1e-5));
      REQUIRE(g.isFinite().all());
      CHECK(rel_max_diff(g.template cast<double>(), o.grad) < 1e-5);
      const Index tie0 = tiny_pos ? 0 : 5, tie1 = tiny_pos ? 2 : 7, other = tiny_pos ? 1 : 6;
      CHECK(g(tie0, 0) == g(tie1, 0));
      CHECK(g(other, 0) == S(0));
      CHECK(g(tie0, 0) != S(0));
    }
  }
}

TEST_CASE("DR loss: invalid hyper-parameters", "[dr][errors]") {
  using D = fgbg::DRLoss<float>;
  using C = fgbg::DRLossConfig<float>;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(D(C{0.f}), "fgbg::DRLoss: config.pos_lambda must be finite and > 0, got 0");
  CHECK_THROWS_WITH(D(C{1.f, -0.1f}),
                    "fgbg::DRLoss: config.neg_lambda must be finite and > 0, got -0.100000001");
  CHECK_THROWS_AS(D(C{1.f, 1e-45f}), std::invalid_argument);  // 1/λ overflows
  CHECK_THROWS_WITH(D(C{1.f, 0.1f, 0.f}), Catch::Contains("config.L must be finite and > 0"));
  CHECK_THROWS_WITH(D(C{1.f, 0.1f, 6.f, nan}), Catch::Contains("config.tau must be finite"));
  CHECK_THROWS_WITH(D(C{1.f, 0.1f, 6.f, 4.f, INFINITY}),
                    Catch::Contains("config.margin must be finite, got inf"));
  const D d;
  CHECK(d.config().neg_lambda == Approx(0.1 / std::log(3.5)));
  CHECK(d.config().pos_lambda == 1.f);
  CHECK(d.config().L == 6.f);
  CHECK(d.config().tau == 4.f);
  CHECK(d.config().margin == 0.5f);
}
