// Issue 9 §3 and §5 for boxes and CARL: finite inputs whose exact result is finite give that
// result (IoU of huge boxes, CARL with reg_loss near DBL_MAX), and CARL's results do not depend
// on the layout or alignment of the logits. Oracles are long double formulas.
#include <catch2/catch.hpp>

#include <fgbg/boxes/iou.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using fgbg::Index;

namespace {

template <typename S>
using Boxes = Eigen::Array<S, Eigen::Dynamic, 4, Eigen::RowMajor>;

/// IoU of two boxes in long double (range to 1e4932: no overflow for any float or double box).
long double iou_ld(const long double* a, const long double* b) {
  const long double iw = std::max(std::min(a[2], b[2]) - std::max(a[0], b[0]), 0.0L);
  const long double ih = std::max(std::min(a[3], b[3]) - std::max(a[1], b[1]), 0.0L);
  const long double inter = iw * ih;
  const long double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return inter / std::max(uni, static_cast<long double>(fgbg::kIouEps));
}

template <typename S>
long double iou_ld(const Boxes<S>& a, Index i, const Boxes<S>& b, Index j) {
  long double x[4], y[4];
  for (int q = 0; q < 4; ++q) {
    x[q] = a(i, q);
    y[q] = b(j, q);
  }
  return iou_ld(x, y);
}

template <typename S>
void check_close_iou(S got, long double want) {
  // A few ulps relative, or below the smallest normal of S.
  const long double tol =
      (std::is_same<S, float>::value ? 1e-5L : 1e-13L) * want + std::numeric_limits<S>::min();
  INFO("got " << got << ", want " << static_cast<double>(want));
  CHECK(std::isfinite(got));
  CHECK(std::abs(static_cast<long double>(got) - want) <= tol);
}

}  // namespace

TEMPLATE_TEST_CASE("IoU of huge finite boxes: exact, and the assigner accepts its own matrix",
                   "[hardening][boxes]", float, double) {
  using S = TestType;
  // float (0, 0, 1e20, 1e20): the area overflowed, the self-IoU was inf / inf = NaN.
  const S big = std::is_same<S, float>::value ? S(1e20) : S(1e200);
  const S mx = std::numeric_limits<S>::max();
  // Found by fuzz_boxes: float (-8.98e-33, 1e4, -1.18e-38, 8.5e37) had self-IoU 0, because one
  // power of two, chosen for the huge y, scaled the tiny x width below the float range.
  const bool f = std::is_same<S, float>::value;
  const S tiny = f ? S(8.98077684e-33) : S(1e-300);
  const S huge = f ? S(8.50705867e37) : S(1e300);
  Boxes<S> b(10, 4);
  b << 0, 0, big, big,                    // huge square
      0, 0, big / 2, big,                 // its left half: IoU 0.5
      0, 0, S(1), S(1),                   // unit box inside: IoU 1 / big^2
      -mx, -mx, mx, mx,                   // the whole range (widths overflow too)
      -mx / 2, -mx / 2, mx / 2, mx / 2,   // a quarter of it
      S(3), S(4), S(10), S(9),            // ordinary
      -tiny, S(1e4), -tiny / 1000, huge,  // thin in x, huge in y
      -tiny, S(1e4), tiny, huge / 2,      // overlaps the previous
      S(1e4), -tiny, huge, tiny / 2,      // the same, transposed
      S(1e4), -tiny, huge / 2, tiny;
  const Index n = b.rows();
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> m(n, n);
  fgbg::iou_matrix(b, b, m);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      INFO("pair " << i << ", " << j);
      check_close_iou(m(i, j), iou_ld(b, i, b, j));
      const S one = fgbg::detail::box_iou(b(i, 0), b(i, 1), b(i, 2), b(i, 3), b(j, 0), b(j, 1),
                                          b(j, 2), b(j, 3));
      check_close_iou(one, iou_ld(b, i, b, j));
    }
  for (Index i = 0; i < n; ++i) CHECK(m(i, i) == S(1));
  CHECK(m(0, 1) == Approx(0.5).epsilon(1e-6));
  CHECK(m(3, 4) == Approx(0.25).epsilon(1e-6));
  CHECK(m(6, 7) > S(0.2));

  Eigen::Array<S, Eigen::Dynamic, 1> al;
  fgbg::aligned_iou(b, b, al);
  for (Index i = 0; i < n; ++i) CHECK(al[i] == S(1));
  // Matrix (not Array) inputs and a column-major copy take the same path.
  const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> bm = b.matrix();
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> mm(n, n);
  fgbg::iou_matrix(bm, bm, mm);
  CHECK((mm.array() == m).all());

  // The assigner: every box is a positive of its own GT; from the matrix, the same assignment.
  fgbg::LabelVector gl = fgbg::LabelVector::Ones(n);
  const fgbg::MaxIouAssigner as;
  fgbg::Assignment a1, a2;
  as.assign(b, b, gl, a1);
  REQUIRE_NOTHROW(as.assign_from_iou(m, gl, a2));
  for (Index i = 0; i < n; ++i) {
    CHECK(a1.labels()[i] == 1);
    CHECK(a2.labels()[i] == 1);
    CHECK(a1.max_iou()[i] == 1.0);
  }
}

TEMPLATE_TEST_CASE("IoU: random boxes over the whole exponent range equal the long double IoU",
                   "[hardening][boxes]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(17);
  const int emax = std::numeric_limits<S>::max_exponent - 2;
  std::uniform_int_distribution<int> ex(-20, emax);
  std::uniform_real_distribution<double> u(-1, 1), w(0, 1);
  auto draw = [&](Index rows, double scale_exp) {
    Boxes<S> b(rows, 4);
    for (Index i = 0; i < rows; ++i) {
      const double s = std::ldexp(1.0, static_cast<int>(scale_exp >= 0 ? scale_exp : ex(rng)));
      const S x = static_cast<S>(u(rng) * s / 2), y = static_cast<S>(u(rng) * s / 2);
      const S wx = static_cast<S>(w(rng) * s / 2), wy = static_cast<S>(w(rng) * s / 2);
      b.row(i) << x, y, std::min(x + wx, std::numeric_limits<S>::max()),
          std::min(y + wy, std::numeric_limits<S>::max());
    }
    return b;
  };
  for (const double e : {-1.0, 10.0, double(emax - 1), double(emax / 2 + 2)}) {
    const Boxes<S> b = draw(150, e), g = draw(7, e);
    Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(b.rows(), g.rows());
    fgbg::iou_matrix(b, g, m);
    for (Index i = 0; i < b.rows(); ++i)
      for (Index j = 0; j < g.rows(); ++j) {
        INFO("exp " << e << " pair " << i << ", " << j);
        check_close_iou(m(i, j), iou_ld(b, i, g, j));
      }
  }
}

// ------------------------------------------------------------------ CARL
namespace {

/// CARL sigmoid-head gradient in long double: ŵ = P u / Σu, ℓ̄ = Σuℓ / Σu, A = P,
/// ∂/∂x_i = (ŵ_i / A)(ℓ_i − ℓ̄) k ρ_i (1 − s_i), ρ = (1 − b) s / (b + (1 − b) s).
std::vector<long double> carl_grad_ld(const std::vector<long double>& x,
                                      const std::vector<long double>& reg, long double k,
                                      long double b, long double* value) {
  const std::size_t p = x.size();
  std::vector<long double> s(p), u(p), g(p);
  long double su = 0, sul = 0;
  for (std::size_t i = 0; i < p; ++i) {
    s[i] = 1 / (1 + std::exp(-x[i]));
    u[i] = std::pow(b + (1 - b) * s[i], k);
    su += u[i];
    sul += u[i] * reg[i];
  }
  const long double lbar = sul / su;
  *value = lbar;  // Σ ŵ ℓ / P
  for (std::size_t i = 0; i < p; ++i) {
    const long double wi = p * u[i] / su;
    const long double rho = (1 - b) * s[i] / (b + (1 - b) * s[i]);
    g[i] = wi / p * (reg[i] - lbar) * k * rho * (1 - s[i]);
  }
  return g;
}

}  // namespace

TEST_CASE("CARL in double with reg_loss near DBL_MAX: finite, exact gradient",
          "[hardening][carl]") {
  // Σ u ℓ overflowed, ℓ̄ = inf and the gradient was −inf.
  const double mx = std::numeric_limits<double>::max();
  const std::vector<long double> xs = {0.5L, -1.0L, 2.0L};
  const std::vector<double> regs = {0.9 * mx, 0.8 * mx, 1.0};
  const Index n = 4;
  Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(n, 1), g(n, 1);
  fgbg::LabelVector y(n);
  Eigen::ArrayXd reg(n), gr(n);
  std::vector<long double> rl;
  for (Index i = 0; i < 3; ++i) {
    x(i, 0) = static_cast<double>(xs[i]);
    y[i] = 1;
    reg[i] = regs[i];
    rl.push_back(regs[i]);
  }
  x(3, 0) = 0;
  y[3] = 0;
  reg[3] = 0;
  for (const double b : {0.2, 0.0}) {
    const fgbg::CarlLoss<double> carl({1.0, b, true});
    const double v = carl.value_and_grad(x, y, reg, g, gr);
    long double vo = 0;
    const auto go = carl_grad_ld(xs, rl, 1.0L, b, &vo);
    INFO("bias " << b);
    REQUIRE(std::isfinite(v));
    CHECK(std::abs(v - static_cast<double>(vo)) <= 1e-12 * static_cast<double>(vo));
    long double gmax = 0;
    for (const auto q : go) gmax = std::max(gmax, std::abs(q));
    for (Index i = 0; i < 3; ++i) {
      INFO("row " << i << ": " << g(i, 0) << " vs " << static_cast<double>(go[i]));
      REQUIRE(std::isfinite(g(i, 0)));
      CHECK(std::abs(g(i, 0) - static_cast<double>(go[i])) <= 1e-12 * static_cast<double>(gmax));
    }
    CHECK(g(3, 0) == 0.0);
    CHECK(carl.value(x, y, reg) == v);
  }
}

// Found by fuzz_pisa in CI: a softmax row spanning more than DBL_MAX made x_l − lse −inf for the
// positive's class, and the log-domain weight (−inf) − (−inf) NaN. A lone positive gets the whole
// weight (ŵ = 1), whatever its probability: value = ℓ, ∂/∂ℓ = 1, no logit gradient (ℓ = ℓ̄).
TEST_CASE("CARL softmax: a row spanning more than DBL_MAX", "[hardening][carl]") {
  const double mx = std::numeric_limits<double>::max();
  Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(1, 4), g(1, 4);
  x << 4.00045805e-100, 4.49423284e+307, -mx, 0;
  fgbg::LabelVector y(1);
  Eigen::ArrayXd reg(1), gr(1);
  reg << 0.124511719;
  for (const fgbg::Label l : {fgbg::Label(2), fgbg::Label(1)}) {
    y << l;
    const fgbg::CarlLoss<double> carl({8.28955078125, 0.0, false, fgbg::Normalizer::sum()});
    const double v = carl.value_and_grad(x, y, reg, g, gr);
    INFO("label " << l);
    CHECK(v == reg[0]);
    CHECK(gr[0] == 1.0);
    CHECK((g == 0.0).all());
    CHECK(carl.value(x, y, reg) == v);
  }
}

TEMPLATE_TEST_CASE("CARL: results are bit-identical for every layout and alignment",
                   "[hardening][carl][layout]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(23);
  std::normal_distribution<double> nd(0.0, 3.0);
  const Index n = 37, c = 11;
  fgbg::LabelVector y(n);
  Eigen::Array<S, Eigen::Dynamic, 1> reg(n);
  for (Index i = 0; i < n; ++i) {
    y[i] = static_cast<int>(i % (c + 2)) - 1;
    reg[i] = static_cast<S>(std::abs(nd(rng)));
  }
  for (const bool sigmoid : {false, true}) {
    const Index cols = sigmoid ? c : c + 1;
    using RM = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using CM = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    RM x(n, cols);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
    const fgbg::CarlLoss<S> carl({S(1.5), S(0.2), sigmoid});
    RM g0(n, cols);
    Eigen::Array<S, Eigen::Dynamic, 1> gr0(n);
    const S v0 = carl.value_and_grad(x, y, reg, g0, gr0);

    auto same = [&](auto&& xin, const char* what) {
      INFO(what << (sigmoid ? " (sigmoid)" : " (softmax)"));
      RM g(n, cols);
      Eigen::Array<S, Eigen::Dynamic, 1> gr(n);
      const S v = carl.value_and_grad(xin, y, reg, g, gr);
      CHECK(v == v0);
      CHECK((g == g0).all());
      CHECK((gr == gr0).all());
      CHECK(carl.value(xin, y, reg) == v0);
      // Column-major gradient output too.
      CM gc(n, cols);
      carl.value_and_grad(xin, y, reg, gc, gr);
      CHECK((gc == g0).all());
    };
    const CM xc = x;
    same(xc, "column-major");
    // Strided Map: every other element of a larger buffer.
    std::vector<S> buf(static_cast<std::size_t>(2 * n * cols + 8));
    Eigen::Map<RM, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> xs(
        buf.data() + 1, n, cols, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(2 * cols, 2));
    xs = x;
    same(xs, "strided map");
    // Blocks of larger arrays, both layouts.
    RM bigr = RM::Constant(n + 3, cols + 5, S(7));
    bigr.block(2, 3, n, cols) = x;
    same(bigr.block(2, 3, n, cols), "row-major block");
    CM bigc = CM::Constant(n + 3, cols + 5, S(7));
    bigc.block(1, 4, n, cols) = x;
    same(bigc.block(1, 4, n, cols), "column-major block");
    // Every alignment of a row-major Map.
    std::vector<S> raw(static_cast<std::size_t>(n * cols + 16));
    for (int off = 0; off < 8; ++off) {
      Eigen::Map<RM> xm(raw.data() + off, n, cols);
      xm = x;
      INFO("offset " << off);
      same(xm, "unaligned map");
    }
  }
}

// ------------------------------------------------------------------ NMS over huge boxes

TEMPLATE_TEST_CASE("NMS paths (nms_match, OHEM paper mode) group huge duplicate boxes",
                   "[hardening][boxes][nms]", float, double) {
  using S = TestType;
  // The IoU of two copies of (0, 0, 1e20, 1e20) was NaN in float: never ≥ the threshold, so the
  // duplicates were never suppressed.
  const S big = std::is_same<S, float>::value ? S(1e20) : S(1e200);
  Boxes<S> b(4, 4);
  b << 0, 0, big, big, 0, 0, big, big, S(1), S(1), S(2), S(2), 0, 0, big, big;
  Eigen::Array<S, Eigen::Dynamic, 1> sc(4);
  sc << S(0.9), S(0.8), S(0.7), S(0.6);
  fgbg::NmsMatchGroups groups;
  fgbg::NmsMatchWorkspace<S> ws;
  fgbg::nms_match(b, sc, 0.5, groups, ws);
  REQUIRE(groups.groups() == 2);
  CHECK(groups.members[static_cast<std::size_t>(groups.begin[0])] == 0);
  CHECK(groups.begin[1] - groups.begin[0] == 3);  // 0 keeps 1 and 3

  fgbg::LabelVector y(4);
  y << 1, 1, 1, 1;
  Eigen::ArrayXd loss(4);
  loss << 4, 3, 2, 1;
  fgbg::OhemPaperSamplerConfig c;
  c.num = 10;
  fgbg::Sample out;
  fgbg::OhemPaperSampler(c).sample(y, b, loss, out);
  CHECK(out.positives == std::vector<Index>{0, 2});
}

// Regression (fuzz_pisa): in log mode (b = 0 or b^k underflowing) CARL kept k·log(base) as its
// key, which is −inf for a huge k, and exp(−inf − (−inf)) made the weights NaN. The key is now
// log(base) and k multiplies only key differences. As k → ∞ the weights concentrate on the
// positive with the largest score: ŵ = P there and 0 elsewhere, so the value is its ℓ.
TEMPLATE_TEST_CASE("CARL: a huge k with a subnormal or zero bias gives the k → ∞ limit",
                   "[pisa][carl][hardening]", float, double) {
  using S = TestType;
  const S tiny = std::numeric_limits<S>::denorm_min() * S(1000);
  for (const S bias : {S(0), tiny}) {
    for (const bool sigmoid : {true, false}) {
      INFO("bias " << bias << ", sigmoid " << sigmoid);
      const Index n = 4, cols = sigmoid ? 2 : 3;
      fgbg::RowArray<S> x = fgbg::RowArray<S>::Zero(n, cols);
      fgbg::LabelVector y(n);
      y << 1, 2, 1, 0;
      // The positive of row 1 has the largest score of its class column.
      x(0, sigmoid ? 0 : 1) = S(-1);
      x(1, sigmoid ? 1 : 2) = S(2);
      x(2, sigmoid ? 0 : 1) = S(0.5);
      Eigen::Array<S, Eigen::Dynamic, 1> reg(n);
      reg << S(0.25), S(0.75), S(0.5), S(0);
      const fgbg::CarlLoss<S> carl({std::numeric_limits<S>::max(), bias, sigmoid});
      fgbg::RowArray<S> g(n, cols);
      Eigen::Array<S, Eigen::Dynamic, 1> gr(n);
      const S v = carl.value_and_grad(x, y, reg, g, gr);
      CHECK(v == Approx(0.75));
      CHECK(carl.value(x, y, reg) == v);
      CHECK(gr(1) == Approx(1.0));  // ŵ_1 / A = P / P
      CHECK(gr(0) == S(0));
      CHECK(gr(2) == S(0));
      CHECK(g.isFinite().all());
      // The fuzzer's case: every positive tied, every ℓ = 0: value 0, zero gradient.
      const fgbg::RowArray<S> z = fgbg::RowArray<S>::Zero(2, cols);
      fgbg::LabelVector yz(2);
      yz << 0, sigmoid ? 2 : 2;
      const Eigen::Array<S, Eigen::Dynamic, 1> rz = Eigen::Array<S, Eigen::Dynamic, 1>::Zero(2);
      fgbg::RowArray<S> gz(2, cols);
      Eigen::Array<S, Eigen::Dynamic, 1> grz(2);
      CHECK(carl.value_and_grad(z, yz, rz, gz, grz) == S(0));
      CHECK((gz == S(0)).all());
      CHECK(grz.isFinite().all());
    }
  }
}
