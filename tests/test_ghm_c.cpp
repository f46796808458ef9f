// GHM-C against the reference vectors (single calls and sequences through one state), spec
// §11.2, its gradient (β constant) by central differences, modes, edge cases and hyper-parameter
// errors. What every loss promises (bad inputs, layouts, allocation) is in test_contract.cpp.
#include <fgbg/fgbg.hpp>
#include <random>

#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {
template <typename S>
void check_call(const fgbg::GhmcLoss<S>& loss, fgbg::GhmcState& state, const json& call) {
  const Index k = logit_cols(call, call["num_classes"]);
  const auto x = matrix<S>(call["logits"], k);
  const auto y = labels(call["labels"]);
  RowArray<S> g(x.rows(), k);
  const json& e = call["expected"];
  const S v = loss.value_and_grad(x, y, g, state);
  check_scalar<S>("loss", v, e["loss"]);
  check_array<S>("grad", g, e["grad"]);
  for (int b = 0; b < state.bins(); ++b) CHECK(state.bin_counts()[b] == e["bin_counts"][b]);
  CHECK(state.nonempty_bins() == e["num_nonempty_bins"]);
  CHECK(state.tot() == e["tot"].get<double>());
  if (e.contains("state_after"))
    for (int b = 0; b < state.bins(); ++b)
      CHECK(state.moving_counts()[b] == Approx(e["state_after"][b].get<double>()).epsilon(1e-12));
}
}  // namespace

TEMPLATE_TEST_CASE("GHM-C matches the reference", "[ghmc][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("ghm_c.json");
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const fgbg::GhmcLoss<S> loss(
          {c["params"]["bins"].get<int>(), c["params"]["momentum"].get<double>()});
      fgbg::GhmcState state(c["params"]["bins"].get<int>());
      if (c.contains("calls")) {
        for (const json& call : c["calls"]) check_call(loss, state, call);
      } else {
        check_call(loss, state, c);
      }
    }
  }
}

TEST_CASE("GHM-C: hand-checked example", "[ghmc][spec]") {
  RowArray<double> x(4, 3), g(4, 3);
  x << -2, 0.5, 3, 1, -1, 0, -4, -3, 2.5, 0.2, 0.1, -0.3;
  fgbg::LabelVector y(4);  // targets [[0,1,1],...] are not one-hot: use per-element data below
  // Row 0 has two positive columns, which the label convention cannot express; check the rows
  // that are one-hot through the full-matrix path with an equivalent decomposition instead:
  // here we verify the published bin counts and loss via a one-hot re-encoding of the same
  // (g, BCE) multiset: g and BCE depend only on z = (2t-1)x, so flipping the sign of x for t=1
  // entries and using t=0 everywhere leaves every g, bin and BCE term unchanged.
  const int t[4][3] = {{0, 1, 1}, {1, 0, 0}, {0, 0, 1}, {0, 0, 0}};
  RowArray<double> z(4, 3);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) z(r, c) = t[r][c] ? -x(r, c) : x(r, c);
  y.setZero();
  fgbg::GhmcState state(10);
  const fgbg::GhmcLoss<double> loss;
  const double v = loss.value_and_grad(z, y, g, state);
  CHECK(v == Approx(0.3770671814).epsilon(1e-9));
  const Index counts[10] = {4, 1, 2, 1, 1, 3, 0, 0, 0, 0};
  for (int b = 0; b < 10; ++b) CHECK(state.bin_counts()[b] == counts[b]);
  CHECK(state.nonempty_bins() == 6);
  const double expected[4][3] = {{0.0198671537, -0.0629234448, -0.001976078},
                                 {-0.0224117851, 0.0224117851, 0.0277777778},
                                 {0.0007494254, 0.001976078, -0.0031607575},
                                 {0.0305463332, 0.0291655104, 0.0709262472}};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) {
      const double gx = t[r][c] ? -g(r, c) : g(r, c);  // chain rule of the sign flip
      CHECK(gx == Approx(expected[r][c]).margin(1e-10));
    }
}

TEST_CASE("GHM-C: gradient with β held constant equals central differences", "[ghmc][gradcheck]") {
  // Keep every element away from bin edges so small perturbations do not move g across one.
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> ud(-3, 3);
  const Index n = 12, k = 3;
  RowArray<double> x(n, k);
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<int>(i % 5) - 1;
  const fgbg::GhmcLoss<double> loss({10});
  auto near_edge = [&](const RowArray<double>& xx) {
    for (Index r = 0; r < n; ++r)
      for (Index c = 0; c < k; ++c) {
        const double p = 1 / (1 + std::exp(-xx(r, c)));
        const double gg = y[r] == c + 1 ? 1 - p : p;
        if (std::abs(gg * 10 - std::round(gg * 10)) < 1e-3) return true;
      }
    return false;
  };
  do {
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = ud(rng);
  } while (near_edge(x));
  RowArray<double> g(n, k);
  loss.value_and_grad(x, y, g);
  const auto num = numeric_grad([&](const RowArray<double>& xx) { return loss.value(xx, y); }, x);
  CHECK(rel_max_diff(g, num) < 1e-7);
}

TEST_CASE("GHM-C: options and weights", "[ghmc]") {
  RowArray<double> x(6, 2), g(6, 2), g2(6, 2);
  x << -2, 0.5, 3, 1, -1, 0, -4, -3, 2.5, 0.2, 0.1, -0.3;
  fgbg::LabelVector y(6);
  y << 1, 0, 2, 0, -1, 1;
  SECTION("dividing by M instead of n scales by n/M") {
    fgbg::GhmcState s(10);
    const double v1 = fgbg::GhmcLoss<double>({10}).value_and_grad(x, y, g, s);
    const double v2 =
        fgbg::GhmcLoss<double>({10, 0.0, fgbg::GhmcDivision::bins}).value_and_grad(x, y, g2);
    CHECK(v2 == Approx(v1 * s.nonempty_bins() / 10.0));
    CHECK(rel_max_diff(g2 * 10.0 / s.nonempty_bins(), g) < 1e-14);
  }
  SECTION("weights are a validity mask only") {
    Eigen::ArrayXd w(6), w01(6);
    w << 3, 0, 0.5, 2, 1, 1;
    w01 << 1, 0, 1, 1, 1, 1;
    const fgbg::GhmcLoss<double> loss;
    CHECK(loss.value_and_grad(x, y, g, w) == loss.value_and_grad(x, y, g2, w01));
    CHECK((g == g2).all());
    CHECK((g.row(1) == 0).all());
  }
  SECTION("a single non-empty bin gives plain mean BCE") {
    RowArray<double> z = RowArray<double>::Constant(6, 2, -5.0);
    fgbg::LabelVector bg = fgbg::LabelVector::Zero(6);
    const double v = fgbg::GhmcLoss<double>().value(z, bg);
    CHECK(v == Approx(fgbg::SigmoidCrossEntropyLoss<double>().value(z, bg)).epsilon(1e-14));
  }
}

TEMPLATE_TEST_CASE("GHM-C: edge cases", "[ghmc][edge]", float, double) {
  using S = TestType;
  const fgbg::GhmcLoss<S> loss({30, 0.75});
  fgbg::GhmcState state(30);
  SECTION("N = 0 and all ignored give 0 and leave S unchanged") {
    RowArray<S> x(0, 3), g(0, 3);
    fgbg::LabelVector y(0);
    CHECK(loss.value_and_grad(x, y, g, state) == S(0));
    RowArray<S> x2 = RowArray<S>::Ones(2, 3), g2 = RowArray<S>::Constant(2, 3, S(4));
    fgbg::LabelVector y2 = fgbg::LabelVector::Constant(2, -1);
    CHECK(loss.value_and_grad(x2, y2, g2, state) == S(0));
    CHECK((g2 == S(0)).all());
    for (double s : state.moving_counts()) CHECK(s == 0.0);
  }
  SECTION("±1e4") {
    RowArray<S> x(2, 2), g(2, 2);
    x << S(1e4), S(-1e4), S(-1e4), S(1e4);
    fgbg::LabelVector y(2);
    y << 1, 0;
    CHECK(std::isfinite(loss.value_and_grad(x, y, g, state)));
    CHECK(g.isFinite().all());
  }
}

TEST_CASE("GHM-C: invalid hyper-parameters", "[ghmc][errors]") {
  CHECK_THROWS_WITH(fgbg::GhmcLoss<double>({0}), Catch::Contains("config.bins must be in 1..256"));
  CHECK_THROWS_WITH(fgbg::GhmcLoss<double>({10, 1.0}),
                    Catch::Contains("config.momentum must be in [0, 1), got 1"));
}

TEST_CASE("GHM-C: value() with a state reports the next value and leaves the state alone",
          "[ghmc][state]") {
  RowArray<double> x(6, 2), g(6, 2);
  x << -2, 0.5, 3, 1, -1, 0, -4, -3, 2.5, 0.2, 0.1, -0.3;
  fgbg::LabelVector y(6);
  y << 1, 0, 2, 0, -1, 1;
  const fgbg::GhmcLoss<double> loss({10, 0.75});
  fgbg::GhmcState state(10);
  loss.value_and_grad(x, y, g, state);  // one step so that S is not zero
  const std::vector<double> moving = state.moving_counts();
  const std::vector<Index> counts = state.bin_counts();
  const double predicted = loss.value(x * 0.5, y, state);
  CHECK(state.moving_counts() == moving);
  CHECK(state.bin_counts() == counts);
  const RowArray<double> half = x * 0.5;
  CHECK(loss.value_and_grad(half, y, g, state) == predicted);
  CHECK(state.moving_counts() != moving);
}

TEST_CASE("GHM-C: the vectorised float binning equals the exact edge comparison", "[ghmc][bins]") {
  for (int m : {1, 3, 7, 10, 30, 100, 256}) {
    std::vector<float> gs = {0.f, 1.f, 1e-30f, 1e-8f, 0.5f, 1.f - 1e-7f};
    for (int k = 0; k <= m; ++k) {
      float e = static_cast<float>(k) / static_cast<float>(m);
      for (int step = 0; step < 4; ++step) e = std::nextafter(e, 0.f);
      for (int step = 0; step < 9; ++step, e = std::nextafter(e, 2.f))
        if (e >= 0.f && e <= 1.f) gs.push_back(e);
    }
    std::mt19937 rng(m);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (int i = 0; i < 2000; ++i) gs.push_back(u(rng));
    const Eigen::Map<const Eigen::ArrayXf> g(gs.data(), static_cast<Index>(gs.size()));
    const fgbg::detail::GhmBinOp<float> op{static_cast<float>(m)};
    Eigen::ArrayXf fast = g.unaryExpr(op);  // packet path for the bulk
    int mismatches = 0;
    for (Index i = 0; i < g.size(); ++i) {
      const float resolved = fast[i] < -1.5f ? op(g[i]) : fast[i];
      // The exact rule: the last k with edge_k <= g, edges computed in float32.
      int k = 0;
      for (int j = 1; j < m; ++j)
        if (g[i] >= static_cast<float>(j) / static_cast<float>(m)) k = j;
      mismatches += static_cast<int>(resolved) != k;
    }
    INFO("bins = " << m);
    CHECK(mismatches == 0);
  }
}

TEMPLATE_TEST_CASE("GHM-C: per-element and per-anchor losses", "[ghmc][losses]", float, double) {
  using S = TestType;
  const S eps = std::numeric_limits<S>::epsilon();
  std::mt19937_64 rng(13);
  std::normal_distribution<double> nd(-2.0, 2.5);
  std::uniform_int_distribution<int> ld(-1, 5);
  const Index n = 900, k = 5;  // several tiles
  RowArray<S> x(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = ld(rng) == 5 ? 1 + (i % k) : std::min(ld(rng), 0);
  RowArray<S> we = RowArray<S>::Ones(n, k);
  we(3, 1) = 0;  // an invalid element
  const fgbg::GhmcLoss<S> loss({10, 0.75});
  for (bool weights : {false, true}) {
    INFO("per-element weights " << weights);
    fgbg::GhmcState s1(10), s2(10), s3(10);
    RowArray<S> g1, g2, e;
    Eigen::Array<S, Eigen::Dynamic, 1> a;
    const S v = weights ? loss.value_and_grad(x, y, g1, s1, we) : loss.value_and_grad(x, y, g1, s1);
    // The outputs change neither the value, nor the gradient, nor the state.
    CHECK(v == (weights ? loss.value_and_grad(x, y, g2, s2, we, fgbg::element_losses(e))
                        : loss.value_and_grad(x, y, g2, s2, fgbg::element_losses(e))));
    CHECK((g1 == g2).all());
    CHECK(s1 == s2);
    CHECK(v == (weights ? loss.value_and_grad(x, y, g2, s3, we, fgbg::anchor_losses(a))
                        : loss.value_and_grad(x, y, g2, s3, fgbg::anchor_losses(a))));
    CHECK(s1 == s3);
    REQUIRE(e.rows() == n);
    REQUIRE(a.size() == n);
    // Σ β·BCE / tot is the value; each anchor's loss is its row of element losses; invalid
    // elements are 0; an element's loss is β·BCE with β = tot·(its gradient)/(σ − t).
    const double tot = s1.tot();
    CHECK(std::abs(e.template cast<double>().sum() / tot - double(v)) <= 64 * eps * double(v));
    for (Index i = 0; i < n; ++i) {
      if (y[i] == -1) {
        CHECK((e.row(i) == S(0)).all());
        CHECK(a[i] == S(0));
        continue;
      }
      CHECK(std::abs(double(a[i]) - e.row(i).template cast<double>().sum()) <=
            8 * eps * std::max(1.0, double(a[i])));
    }
    if (weights) CHECK(e(3, 1) == S(0));
    // value() with an output: the same numbers, the state untouched.
    RowArray<S> e2;
    const fgbg::GhmcState before = s1;
    CHECK(loss.value(x, y, s1, fgbg::element_losses(e2)) == loss.value(x, y, s1));
    CHECK(s1 == before);
  }
  // A view of the wrong shape, or one over the logits, throws before anything is written.
  fgbg::GhmcState s(10);
  const fgbg::GhmcState before = s;
  RowArray<S> g = RowArray<S>::Constant(n, k, S(7.25)), wrong(n - 1, k);
  Eigen::Map<RowArray<S>> view(wrong.data(), n - 1, k);
  CHECK_THROWS_WITH(loss.value_and_grad(x, y, g, s, fgbg::element_losses(view)),
                    Catch::Contains("element_losses must be 900 x 5"));
  CHECK_THROWS_WITH(loss.value_and_grad(x, y, g, s, fgbg::element_losses(g)),
                    Catch::Contains("element_losses must not share memory with the grad"));
  CHECK((g == S(7.25)).all());
  CHECK(s == before);
}
