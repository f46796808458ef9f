// Issue 9 (§3, §5) for the dense losses: overflow of the sums, weight × 1/A, cancellations,
// extreme hyper-parameters, and a long-double oracle on the reported cases and on random extreme
// inputs (layout and alignment independence: the contract suite, test_contract.cpp).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fgbg/fgbg.hpp>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using fgbg::Index;
using fgbg::LabelVector;
using fgbg::Normalizer;
using fgbg::RowArray;
using LD = long double;

namespace {

template <typename S>
constexpr S kMax = std::numeric_limits<S>::max();
std::string g_case_inputs;  // the current random case, for failure messages

// ---------------------------------------------------------------------------------------------
// Long-double oracle (x86: 64-bit mantissa, 15-bit exponent: nothing below overflows).
LD sp_l(LD x) {
  return std::max(x, LD(0)) + std::log1p(std::exp(-std::fabs(x)));
}
LD sig_l(LD x) {
  const LD e = std::exp(-std::fabs(x));
  return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

struct Oracle {
  LD value = 0;
  std::vector<LD> grad;    // row-major
  std::vector<LD> floor_;  // per-element absolute slack of the gradient (see tolerance below)
  LD value_floor = 0;
};

// Relative tolerances this file demonstrates (docs/conventions.md, Precision).
template <typename S>
constexpr double kRel = std::is_same<S, float>::value ? 2e-5 : 2e-13;

// |got − exact| ≤ rel·|exact| + floor, and finite.
template <typename S>
bool close(S got, LD exact, LD floor_abs) {
  if (!std::isfinite(got)) return false;
  return std::fabs(LD(got) - exact) <= LD(kRel<S>) * std::fabs(exact) + floor_abs;
}

template <typename S>
bool representable(LD v) {
  return std::fabs(v) <= LD(kMax<S>) * (1 - 1e-6L);
}

// Slack of an element computed in the scalar type and then scaled by w/A: a few units of the
// smallest subnormal (the absolute resolution of the scalar), times w/A.
template <typename S>
LD elem_floor(LD w_over_a) {
  return 4 * LD(std::numeric_limits<S>::denorm_min()) * w_over_a +
         LD(std::numeric_limits<S>::denorm_min());
}

// A sigmoid-head oracle for one element function f(x, t) -> (loss, grad).
template <typename S, typename F>
Oracle sigmoid_oracle(const RowArray<S>& x, const LabelVector& y, const std::vector<LD>& w_anchor,
                      LD norm, const std::vector<LD>& targets, F f) {
  Oracle o;
  const Index n = x.rows(), c = x.cols();
  o.grad.assign(static_cast<size_t>(n * c), 0);
  o.floor_.assign(static_cast<size_t>(n * c), LD(std::numeric_limits<S>::denorm_min()));
  for (Index i = 0; i < n; ++i) {
    if (y[i] < 0) continue;
    const LD w = w_anchor.empty() ? 1 : w_anchor[static_cast<size_t>(i)];
    for (Index j = 0; j < c; ++j) {
      const bool pos = y[i] == j + 1;
      const LD t = pos ? targets[static_cast<size_t>(i)] : 0;
      LD l = 0, g = 0;
      f(LD(x(i, j)), t, j, l, g);
      o.value += w * l / norm;
      o.grad[static_cast<size_t>(i * c + j)] = w * g / norm;
      o.floor_[static_cast<size_t>(i * c + j)] = elem_floor<S>(w / norm);
      o.value_floor += elem_floor<S>(w / norm);
    }
  }
  return o;
}

template <typename S>
void check_against(const Oracle& o, S value, const RowArray<S>& g, const std::string& what,
                   const RowArray<S>* x = nullptr) {
  auto x_of = [&](Index k) { return x ? double(x->data()[k]) : 0.0; };
  INFO(g_case_inputs);
  INFO(what);
  INFO("value " << value << " exact " << double(o.value));
  CHECK(close(value, o.value, o.value_floor));
  for (Index k = 0; k < g.size(); ++k) {
    const LD ex = o.grad[static_cast<size_t>(k)];
    if (!close(g.data()[k], ex, o.floor_[static_cast<size_t>(k)])) {
      INFO("grad[" << k << "] = " << std::setprecision(17) << g.data()[k] << " exact " << double(ex)
                   << " logit " << x_of(k));
      CHECK(false);
    }
  }
}

// Focal element (any γ) in long double.
auto focal_elem(LD alpha, LD gamma) {
  return [=](LD x, LD t, Index, LD& l, LD& g) {
    const LD sign = t > 0.5L ? 1 : -1, z = sign * x;
    const LD at = alpha < 0 ? 1 : (sign > 0 ? alpha : 1 - alpha);
    const LD mod = std::exp(-gamma * sp_l(z));  // (1 − p_t)^γ
    const LD pt = sig_l(z), logpt = -sp_l(-z);
    l = at * mod * sp_l(-z);
    g = sign * at * mod * (gamma * pt * logpt - sig_l(-z));
  };
}
auto bce_elem() {
  return [](LD x, LD t, Index, LD& l, LD& g) {
    l = t > 0.5L ? sp_l(-x) : sp_l(x);
    g = t > 0.5L ? -sig_l(-x) : sig_l(x);
  };
}
auto fl_star_elem(LD alpha, LD gamma) {
  return [=](LD x, LD t, Index, LD& l, LD& g) {
    const LD sign = t > 0.5L ? 1 : -1, z = sign * x;
    const LD at = alpha < 0 ? 1 : (sign > 0 ? alpha : 1 - alpha);
    l = at * sp_l(-gamma * z) / gamma;
    g = -sign * at * sig_l(-gamma * z);
  };
}
auto qfl_elem(LD beta) {
  return [=](LD x, LD t, Index, LD& l, LD& g) {
    // σ(x) − t = σ(x)(1 − t)(−expm1(logit t − x)): the plain difference cancels for σ(x) ≈ t.
    const LD p = sig_l(x);
    const LD u = t > 0 && t < 1 ? std::log(t) - std::log1p(-t) : 0;
    const LD d = t == 0                  ? p
                 : t == 1                ? -sig_l(-x)
                 : std::fabs(u - x) >= 1 ? p - t
                                         : -p * (1 - t) * std::expm1(u - x);
    const LD ad = std::fabs(d);
    const LD bce = (1 - t) * sp_l(x) + t * sp_l(-x);
    const LD slope = p * sig_l(-x);
    const LD mod = std::pow(ad, beta);
    const LD dmod = d == 0 ? 0 : beta * std::pow(ad, beta - 1);
    l = mod * bce;
    g = (d > 0 ? dmod : -dmod) * slope * bce + mod * d;
  };
}

// Softmax oracle (cross-entropy when focal == false).
template <typename S>
Oracle softmax_oracle(const RowArray<S>& x, const LabelVector& y, const std::vector<LD>& w, LD norm,
                      bool focal, LD alpha, LD gamma) {
  Oracle o;
  const Index n = x.rows(), k = x.cols();
  o.grad.assign(static_cast<size_t>(n * k), 0);
  o.floor_.assign(static_cast<size_t>(n * k), LD(std::numeric_limits<S>::denorm_min()));
  for (Index i = 0; i < n; ++i) {
    if (y[i] < 0) continue;
    const LD wi = w.empty() ? 1 : w[static_cast<size_t>(i)];
    LD m = -INFINITY;
    Index am = 0;
    for (Index c = 0; c < k; ++c)
      if (LD(x(i, c)) > m) m = LD(x(i, c)), am = c;
    std::vector<LD> e(static_cast<size_t>(k));
    LD rest = 0;  // Σ over c ≠ arg-max, so log S = log1p(rest) keeps its relative precision
    for (Index c = 0; c < k; ++c) {
      e[static_cast<size_t>(c)] = std::exp(LD(x(i, c)) - m);
      if (c != am) rest += e[static_cast<size_t>(c)];
    }
    const LD s = 1 + rest;
    const LD logpy = (LD(x(i, y[i])) - m) - std::log1p(rest);
    LD q = 0;
    for (Index c = 0; c < k; ++c)
      if (c != y[i]) q += e[static_cast<size_t>(c)];
    q /= s;
    const LD py = e[static_cast<size_t>(y[i])] / s;
    LD l, scale, gy;
    if (!focal) {
      l = -logpy;
      scale = 1;
      gy = -q;
    } else {
      const LD a = alpha < 0 ? 1 : (y[i] > 0 ? alpha : 1 - alpha);
      const LD qg = std::pow(q, gamma);
      const LD ratio = q > 0 ? logpy / q : -1;
      const LD big_a = a * qg * (gamma * py * ratio - 1);
      l = -a * qg * logpy;
      scale = -big_a;
      gy = big_a * q;
    }
    o.value += wi * l / norm;
    o.value_floor += elem_floor<S>(wi / norm) * k;
    for (Index c = 0; c < k; ++c) {
      const LD gc = c == y[i] ? gy : scale * e[static_cast<size_t>(c)] / s;
      o.grad[static_cast<size_t>(i * k + c)] = wi * gc / norm;
      o.floor_[static_cast<size_t>(i * k + c)] = elem_floor<S>(wi / norm) * 4;
    }
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// §3: sums of runs accumulated in the scalar type.

TEST_CASE("hardening: BCE mean over huge background logits does not overflow", "[hardening]") {
  {
    RowArray<float> x(1, 4), g(1, 4);
    x.setConstant(1.7e38f);
    LabelVector y(1);
    y << 0;
    const fgbg::SigmoidCrossEntropyLoss<float> bce;
    const float v = bce.value_and_grad(x, y, g);
    CHECK(std::isfinite(v));
    CHECK(v == Approx(1.7e38).epsilon(1e-6));
    CHECK(bce.value(x, y) == v);
    CHECK((g == 0.25f).all());
  }
  {
    RowArray<double> x(1, 4), g(1, 4);
    x.setConstant(9e307);
    LabelVector y(1);
    y << 0;
    const fgbg::SigmoidCrossEntropyLoss<double> bce;
    const double v = bce.value_and_grad(x, y, g);
    CHECK(std::isfinite(v));
    CHECK(v == Approx(9e307).epsilon(1e-14));
  }
}

TEST_CASE("hardening: FL*, EFL, focal and CE sums of huge terms stay finite", "[hardening]") {
  LabelVector y(1);
  y << 0;
  {
    RowArray<float> x(1, 4), g(1, 4);
    x.setConstant(1.7e38f);
    const fgbg::FocalLossStar<float> fls({-1.0f, 1.0f, Normalizer::mean()});
    CHECK(fls.value_and_grad(x, y, g) == Approx(1.7e38).epsilon(1e-6));
    fgbg::EqualizedFocalState st(4);
    const fgbg::EqualizedFocalLoss<float> efl({0.25f, 2.0f, 8.0f, 1.0, Normalizer::mean()});
    // (1 − α) · w · σ² · softplus(x) = 0.75 · 1.7e38 per element, mean over 4.
    CHECK(efl.value_and_grad(x, y, g, st) == Approx(0.75 * 1.7e38).epsilon(1e-6));
    CHECK(std::isfinite(st.neg_grad().sum()));
    const fgbg::SigmoidFocalLoss<float> fl({0.25f, 2.0f, Normalizer::mean()});
    CHECK(fl.value_and_grad(x, y, g) == Approx(0.75 * 1.7e38).epsilon(1e-6));
  }
  {
    RowArray<double> x(1, 4), g(1, 4);
    x.setConstant(9e307);
    const fgbg::FocalLossStar<double> fls({-1.0, 1.0, Normalizer::mean()});
    CHECK(fls.value_and_grad(x, y, g) == Approx(9e307).epsilon(1e-14));
    fgbg::EqualizedFocalState st(4);
    const fgbg::EqualizedFocalLoss<double> efl({-1.0, 2.0, 8.0, 1.0, Normalizer::mean()});
    CHECK(efl.value_and_grad(x, y, g, st) == Approx(9e307).epsilon(1e-14));
  }
  {
    // Softmax CE, mean over 4 rows whose loss is 1.7e38 each (float) / 9e307 (double).
    RowArray<float> x(4, 2), g(4, 2);
    x.col(0).setZero();
    x.col(1).setConstant(1.7e38f);
    LabelVector y4 = LabelVector::Zero(4);
    const fgbg::SoftmaxCrossEntropyLoss<float> ce;
    CHECK(ce.value_and_grad(x, y4, g) == Approx(1.7e38).epsilon(1e-6));
    RowArray<double> xd(4, 2), gd(4, 2);
    xd.col(0).setZero();
    xd.col(1).setConstant(9e307);
    const fgbg::SoftmaxCrossEntropyLoss<double> ced;
    CHECK(ced.value_and_grad(xd, y4, gd) == Approx(9e307).epsilon(1e-14));
  }
}

TEST_CASE("hardening: residual objectness sums do not overflow", "[hardening]") {
  fgbg::ResidualObjectnessConfig cfg;
  const fgbg::ResidualObjectnessLoss<float> loss(cfg);
  RowArray<float> s(4, 1), z(4, 3), gs, gz;
  s.setConstant(1.7e38f);
  z.setZero();
  LabelVector y = LabelVector::Zero(4);
  fgbg::ResidualObjectnessState st;
  const auto r = loss.value_and_grad(z, y, s, gz, gs, st);
  CHECK(std::isfinite(r.obj_loss));
  CHECK(r.obj_loss == Approx(4 * 1.7e38 / r.obj_normalizer).epsilon(1e-6));
  RowArray<double> sd(4, 1), zd(4, 3), gsd, gzd;
  sd.setConstant(9e307);
  zd.setZero();
  fgbg::ResidualObjectnessState std_;
  const auto rd =
      fgbg::ResidualObjectnessLoss<double>(cfg).value_and_grad(zd, y, sd, gzd, gsd, std_);
  CHECK(std::isfinite(rd.obj_loss));
  CHECK(rd.obj_loss == Approx(9e307 / rd.obj_normalizer * 4).epsilon(1e-14));
}

// ---------------------------------------------------------------------------------------------
// §3: weight × 1/A formed in the scalar type.

TEST_CASE("hardening: QFL with a large weight over a tiny avg_factor", "[hardening]") {
  RowArray<float> x(1, 1), g(1, 1);
  x << -20.0f;
  LabelVector y(1);
  y << 0;
  Eigen::ArrayXf q = Eigen::ArrayXf::Zero(1), w(1);
  w << 9742.0f;
  const fgbg::QualityFocalLoss<float> qfl;
  const LD A = LD(1e-37);
  const float v = qfl.value_and_grad(x, y, q, g, w, Normalizer::avg_factor(1e-37));
  // σ² softplus(x) and σ²(σ + 2(1 − σ) softplus(x)), times 9742 / 1e-37.
  const LD s = sig_l(-20), spx = sp_l(-20);
  const LD ev = s * s * spx * 9742 / A, eg = s * s * (s + 2 * (1 - s) * spx) * 9742 / A;
  CHECK(std::isfinite(v));
  CHECK(std::isfinite(g(0, 0)));
  CHECK(std::fabs(v - ev) <= 1e-5L * ev);
  CHECK(std::fabs(g(0, 0) - eg) <= 1e-5L * eg);
  // The reproducer: x = −4.82 (the value 4e40 is not representable; the gradient is).
  x << -4.82f;
  qfl.value_and_grad(x, y, q, g, w, Normalizer::avg_factor(1e-37));
  const LD s2 = sig_l(LD(-4.82f)), sp2 = sp_l(LD(-4.82f));
  const LD eg2 = s2 * s2 * (s2 + 2 * (1 - s2) * sp2) * 9742 / A;
  CHECK(std::isfinite(g(0, 0)));
  CHECK(std::fabs(g(0, 0) - eg2) <= 1e-5L * eg2);
}

TEST_CASE("hardening: BCE with weight FLT_MAX over A = 0.5", "[hardening]") {
  {
    // 64 elements, so the vectorised exp runs (it used to floor exp(−200) at ≈ 3e-39).
    RowArray<float> x(1, 64), g(1, 64);
    x.setConstant(-200.0f);
    LabelVector y(1);
    y << 0;
    Eigen::ArrayXf w(1);
    w << kMax<float>;
    for (auto nz : {Normalizer::avg_factor(0.5), Normalizer::sum()}) {
      const float v = fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(x, y, g, w, nz);
      CHECK(std::isfinite(v));
      CHECK(std::fabs(v) <= 1e-40f);
      CHECK((g.abs() <= 1e-44f).all());
    }
    const float v2 =
        fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, g, w, Normalizer::avg_factor(0.5));
    CHECK(std::fabs(v2) <= 1e-40f);
    CHECK((g.abs() <= 1e-44f).all());
  }
  RowArray<float> x(1, 2), g(1, 2);
  x << -200.0f, -50.0f;
  LabelVector y(1);
  y << 0;
  Eigen::ArrayXf w(1);
  w << kMax<float>;
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  const float v = bce.value_and_grad(x, y, g, w, Normalizer::avg_factor(0.5));
  const LD f = LD(kMax<float>) / 0.5L;
  CHECK(std::isfinite(v));
  CHECK(std::isfinite(g(0, 0)));
  CHECK(std::isfinite(g(0, 1)));
  CHECK(std::fabs(g(0, 0)) <= 1e-44f);  // exact ≈ 9.8e-49
  const LD e1 = sig_l(-50) * f;         // ≈ 1.3e17
  CHECK(std::fabs(g(0, 1) - e1) <= 1e-5L * e1);
  const LD ev = (sp_l(-200) + sp_l(-50)) * f;
  CHECK(std::fabs(v - ev) <= 1e-5L * ev);
  // Per-element weights take the same care.
  RowArray<float> we(1, 2);
  we.setConstant(kMax<float>);
  bce.value_and_grad(x, y, g, we, Normalizer::avg_factor(0.5));
  CHECK(std::isfinite(g(0, 0)));
  CHECK(std::fabs(g(0, 1) - e1) <= 1e-5L * e1);
  // Softmax heads too.
  RowArray<float> xs(1, 2), gs(1, 2);
  xs << 0.0f, -60.0f;
  const fgbg::SoftmaxCrossEntropyLoss<float> ce;
  ce.value_and_grad(xs, y, gs, w, Normalizer::avg_factor(0.5));
  const LD p1 = std::exp(LD(-60)) / (1 + std::exp(LD(-60)));
  CHECK(std::isfinite(gs(0, 0)));
  CHECK(std::fabs(gs(0, 1) - p1 * f) <= 1e-5L * p1 * f);
  CHECK(std::fabs(gs(0, 0) + p1 * f) <= 1e-5L * p1 * f);
}

// ---------------------------------------------------------------------------------------------
// §3: cancellations.

TEST_CASE("hardening: GHM-C positives with huge logits have a loss of about 0", "[hardening]") {
  for (const std::vector<float>& xs : {std::vector<float>{3e38f, 1e38f, 2e37f},
                                       std::vector<float>{1e30f, 3e30f, 7e30f, 1.1e31f}}) {
    const Index n = static_cast<Index>(xs.size());
    RowArray<float> x(n, 1), g(n, 1);
    for (Index i = 0; i < n; ++i) x(i, 0) = xs[static_cast<size_t>(i)];
    LabelVector y = LabelVector::Ones(n);
    const fgbg::GhmcLoss<float> ghm;
    const float v = ghm.value_and_grad(x, y, g);
    CHECK(v == 0.0f);  // exact: Σ f·softplus(−x) with softplus(−x) < 1e-30000
    CHECK(ghm.value(x, y) == v);
    CHECK((g == 0.0f).all());
  }
  // Moderate positives: BCE(x, 1) = softplus(−x) to float precision.
  RowArray<float> x(2, 1), g(2, 1);
  x << 20.0f, 30.0f;
  LabelVector y = LabelVector::Ones(2);
  const float v = fgbg::GhmcLoss<float>().value_and_grad(x, y, g);
  // One bin (g ≈ 0): β = 2/2/1 = 1, f = 1/2.
  const LD ev = (sp_l(-20) + sp_l(-30)) / 2;
  CHECK(std::fabs(v - ev) <= 1e-6L * ev);
  CHECK(std::fabs(g(0, 0) + sig_l(-20) / 2) <= 1e-6L * sig_l(-20));
}

TEST_CASE("hardening: positive BCE does not cancel for x > 16 (float)", "[hardening]") {
  RowArray<float> x(3, 2), g(3, 2);
  x << 20.0f, 0.0f, 30.0f, 0.0f, 17.0f, 0.0f;
  LabelVector y = LabelVector::Ones(3);
  const fgbg::SigmoidCrossEntropyLoss<float> bce({Normalizer::sum()});
  const float v = bce.value_and_grad(x, y, g);
  const LD ev = sp_l(-20) + sp_l(-30) + sp_l(-17) + 3 * sp_l(0);
  CHECK(std::fabs(v - ev) <= 1e-6L * ev);
  CHECK(std::fabs(g(0, 0) + sig_l(-20)) <= 1e-6L * sig_l(-20));
  // Its positive part alone.
  RowArray<float> x1(1, 1), g1(1, 1);
  x1 << 20.0f;
  LabelVector y1(1);
  y1 << 1;
  const float v1 = bce.value_and_grad(x1, y1, g1);
  CHECK(std::fabs(v1 - sp_l(-20)) <= 1e-6L * sp_l(-20));
  CHECK(std::fabs(g1(0, 0) + sig_l(-20)) <= 1e-6L * sig_l(-20));
  // Residual objectness: a positive anchor with o = 20 and a positive class logit 20.
  RowArray<float> s(1, 2), z(1, 2), gs, gz;
  s << 12.0f, 8.0f;
  z << 20.0f, -3.0f;
  fgbg::ResidualObjectnessState st;
  const auto r = fgbg::ResidualObjectnessLoss<float>().value_and_grad(z, y1, s, gz, gs, st);
  CHECK(std::fabs(r.obj_loss - sp_l(-20) / r.obj_normalizer) <=
        1e-6L * sp_l(-20) / r.obj_normalizer);
  CHECK(std::fabs(gs(0, 0) + sig_l(-20) / r.obj_normalizer) <=
        1e-6L * sig_l(-20) / r.obj_normalizer);
  const LD ec = sp_l(-20) + sp_l(-3);
  CHECK(std::fabs(r.cls_loss - ec / r.cls_normalizer) <= 1e-6L * ec / r.cls_normalizer);
  CHECK(std::fabs(gz(0, 0) + sig_l(-20) / r.cls_normalizer) <=
        1e-6L * sig_l(-20) / r.cls_normalizer);
}

TEST_CASE("hardening: softmax focal on a row with p_y = 0 in float", "[hardening]") {
  RowArray<float> x(1, 2), g(1, 2);
  x << -kMax<float>, 1e38f;
  LabelVector y(1);
  y << 0;
  {
    const fgbg::SoftmaxFocalLoss<float> fl({-1.0f, 2.0f, Normalizer::sum()});
    fl.value_and_grad(x, y, g);
    CHECK(g(0, 0) == -1.0f);
    CHECK(g(0, 1) == 1.0f);
  }
  {
    // α = 0.25, background: the value 0.75 · (FLT_MAX + 1e38) = 3.3e38 is representable.
    const fgbg::SoftmaxFocalLoss<float> fl({0.25f, 2.0f, Normalizer::sum()});
    const float v = fl.value_and_grad(x, y, g);
    const LD ev = 0.75L * (LD(kMax<float>) + LD(1e38f));
    CHECK(std::isfinite(v));
    CHECK(std::fabs(v - ev) <= 1e-6L * ev);
    CHECK(g(0, 0) == -0.75f);
    CHECK(g(0, 1) == 0.75f);
  }
  {
    const fgbg::SoftmaxCrossEntropyLoss<float> ce({Normalizer::avg_factor(2.0)});
    const float v = ce.value_and_grad(x, y, g);
    const LD ev = (LD(kMax<float>) + LD(1e38f)) / 2;
    CHECK(std::fabs(v - ev) <= 1e-6L * ev);
    CHECK(g(0, 0) == -0.5f);
    CHECK(g(0, 1) == 0.5f);
  }
}

// Found by fuzz_softmax: float p_y = 4.8e-8 makes q = 1 − p_y round to 1, and q^γ with γ = 1e30
// was 1 instead of ≈ 0, so the gradient, scaled by Ω/A = 2.3e32, was inf where the exact one is 0.
TEMPLATE_TEST_CASE("hardening: softmax focal with a huge gamma and q rounding to 1", "[hardening]",
                   float, double) {
  using S = TestType;
  RowArray<S> x(2, 4), g(2, 4);
  x << S(6.92578125), S(-14.6201172), S(-9.9140625), S(-9.9140625),  //
      S(0.5), S(0.25), S(-1), S(2);
  LabelVector y(2);
  y << 3, 2;
  Eigen::Array<S, Eigen::Dynamic, 1> w(2);
  w << S(710), S(1);
  for (const S gamma : {S(1.0000000150474662e30), S(1e4), S(3.5)}) {
    const Normalizer nz = Normalizer::avg_factor(3.0320707250946598e-30);
    const fgbg::SoftmaxFocalLoss<S> fl({S(1), gamma, nz});
    const std::vector<LD> wl{LD(w[0]), LD(w[1])};
    const Oracle o = softmax_oracle<S>(x, y, wl, LD(nz.factor), true, 1, LD(gamma));
    const S v = fl.value_and_grad(x, y, g, w, nz);
    INFO("gamma " << gamma);
    check_against(o, v, g, "softmax focal, huge gamma", &x);
  }
}

// Found by fuzz_sigmoid: VFL (double) with α = 2.2e252 on a negative logit of 4.4e154 has an
// element loss beyond DBL_MAX; with weight 0 the exact value is 0, but 0 · inf gave NaN.
TEST_CASE("hardening: a zero weight masks an element whose term overflows", "[hardening]") {
  const fgbg::VarifocalLoss<double> vfl(
      {2.1807171534542645e+252, 2.0, true, 1e-6, Normalizer::sum()});
  RowArray<double> x(3, 1), g(3, 1);
  x << 4.39951994e+154, 7.25537109, -3.0;
  LabelVector y(3);
  y << 0, 0, 1;
  const Eigen::ArrayXd q = Eigen::ArrayXd::Constant(3, 0.5);
  RowArray<double> we = RowArray<double>::Zero(3, 1);
  Eigen::ArrayXd wa = Eigen::ArrayXd::Zero(3);
  CHECK(vfl.value_and_grad(x, y, q, g, fgbg::Weights<double>(we)) == 0.0);
  CHECK((g == 0.0).all());
  CHECK(vfl.value_and_grad(x, y, q, g, fgbg::Weights<double>(wa)) == 0.0);
  CHECK((g == 0.0).all());
  // weight 1 on the other rows: their terms are finite and counted, row 0 stays masked
  we(1, 0) = 1, we(2, 0) = 1, wa[1] = 1, wa[2] = 1;
  const double v1 = vfl.value_and_grad(x, y, q, g, fgbg::Weights<double>(we));
  CHECK(std::isfinite(v1));
  CHECK(v1 > 0.0);
  CHECK(g(0, 0) == 0.0);
  CHECK(vfl.value_and_grad(x, y, q, g, fgbg::Weights<double>(wa)) == v1);
  CHECK(g(0, 0) == 0.0);
}

// ---------------------------------------------------------------------------------------------
// §3: FL* and EFL hyper-parameters.

TEST_CASE("hardening: FL* rejects a subnormal gamma and survives gamma * x overflowing",
          "[hardening]") {
  const float den = std::numeric_limits<float>::denorm_min() * 8;
  CHECK_THROWS_AS(fgbg::FocalLossStar<float>({-1.0f, den}), std::invalid_argument);
  CHECK_THROWS_WITH(fgbg::FocalLossStar<float>({-1.0f, den}),
                    Catch::Contains("fgbg::FocalLossStar: config.gamma must be"));
  CHECK_THROWS_AS(fgbg::FocalLossStar<double>({-1.0, 1e-310}), std::invalid_argument);
  CHECK_NOTHROW(fgbg::FocalLossStar<float>({-1.0f, std::numeric_limits<float>::min()}));
  // The smallest accepted γ gives finite results.
  {
    const fgbg::FocalLossStar<float> fls(
        {-1.0f, std::numeric_limits<float>::min(), Normalizer::sum()});
    RowArray<float> x(1, 2), g(1, 2);
    x << 1.0f, -1e30f;
    LabelVector y(1);
    y << 1;
    const float v = fls.value_and_grad(x, y, g);
    CHECK(std::isfinite(v));
    CHECK(g.isFinite().all());
    // log 2 / FLT_MIN for each element (plus 1e30 for the negative with x = −1e30: no, softplus
    // of γ·x → 0 there) — compare with the oracle.
    const LD gam = LD(std::numeric_limits<float>::min());
    const LD ev = sp_l(-gam * 1) / gam + sp_l(gam * LD(-1e30f)) / gam;
    CHECK(std::fabs(v - ev) <= 1e-5L * ev);
  }
  RowArray<float> x(2, 2), g(2, 2);
  x << 1e38f, -1e38f, -1e38f, 1e38f;
  LabelVector y(2);
  y << 0, 1;
  const fgbg::FocalLossStar<float> fls({-1.0f, 5.0f, Normalizer::sum()});
  const float v = fls.value_and_grad(x, y, g);
  // Row 0 (background): softplus(5e38)/5 = 1e38 and softplus(−5e38)/5 = 0; row 1 (class 1):
  // element (1, 0) is the positive at x = −1e38: softplus(5e38)/5 = 1e38; (1, 1) a negative at
  // 1e38: 1e38.
  CHECK(std::isfinite(v));
  CHECK(v == Approx(3e38).epsilon(1e-6));
  CHECK(g(0, 0) == 1.0f);
  CHECK(g(0, 1) == 0.0f);
  CHECK(g(1, 0) == -1.0f);
  CHECK(g(1, 1) == 1.0f);
}

TEST_CASE("hardening: EFL rejects a subnormal gamma_b and an unrepresentable class weight",
          "[hardening]") {
  using Cfg = fgbg::EqualizedFocalLossConfig<float>;
  Cfg c;
  c.gamma_b = std::numeric_limits<float>::denorm_min() * 4;
  CHECK_THROWS_AS(fgbg::EqualizedFocalLoss<float>(c), std::invalid_argument);
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<float>(c),
                    Catch::Contains("fgbg::EqualizedFocalLoss: config.gamma_b must be"));
  c.gamma_b = 1e-30f;  // normal, but 1 + 1e10 / 1e-30 > FLT_MAX
  c.scale = 1e10f;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<float>(c),
                    Catch::Contains("fgbg::EqualizedFocalLoss: config.scale must be"));
  c.gamma_b = 1e-30f;
  c.scale = 1e-30f;  // weight 2: fine
  const fgbg::EqualizedFocalLoss<float> efl(c);
  fgbg::EqualizedFocalState st(2);
  RowArray<float> x(2, 2), g(2, 2);
  x << 3.0f, -2.0f, 0.5f, 40.0f;
  LabelVector y(2);
  y << 1, 0;
  for (int it = 0; it < 3; ++it) {
    const float v = efl.value_and_grad(x, y, g, st);
    CHECK(std::isfinite(v));
    CHECK(g.isFinite().all());
    CHECK(st.neg_grad().isFinite().all());
    CHECK(st.pos_grad().isFinite().all());
  }
  CHECK_THROWS_AS(fgbg::EqualizedFocalLoss<double>({0.25, 1e-310, 8.0}), std::invalid_argument);
  // Found by fuzz_state: γ_b = FLT_MAX with s = 7.9e33 passed (1 + s/γ_b is 1), but γ_j = γ_b + s
  // is inf once the ratio reaches 0, and the next call returned NaN.
  c.gamma_b = std::numeric_limits<float>::max();
  c.scale = 7.8935080209963524e+33f;
  CHECK_THROWS_WITH(fgbg::EqualizedFocalLoss<float>(c),
                    Catch::Contains("config.scale must be such that gamma_b + scale is finite"));
  c.scale = 1e30f;  // γ_b + s rounds to FLT_MAX: accepted, and every call is finite
  const fgbg::EqualizedFocalLoss<float> big(c);
  fgbg::EqualizedFocalState st2(1);
  RowArray<float> x2(2, 1), g2(2, 1);
  LabelVector y2(2);
  y2 << -1, 0;
  for (const float v : {-0.00048828125f, -710.0f, -5.61575473e+29f}) {
    x2 << 15.0175781f, v;
    CHECK(std::isfinite(big.value_and_grad(x2, y2, g2, st2)));
    CHECK(g2.isFinite().all());
  }
}

// Found by fuzz_state: a double weight of DBL_MAX on one anchor made the batch sum of |Γ| over
// anchors overflow, G⁺ inf and the ratio NaN. The statistics saturate at DBL_MAX.
TEST_CASE("hardening: EFL statistics saturate instead of overflowing", "[hardening][efl]") {
  const fgbg::EqualizedFocalLoss<double> efl({-1.0, 1.0, 1.0, 1.0, Normalizer::sum()});
  fgbg::EqualizedFocalState st(3);
  RowArray<double> x(3, 3), g(3, 3);
  x << 12.4213867, 12.1835938, 14.8012695, -13.3022461, 7.55224609, -0.0, -3.4e-161, -13.3022461,
      -12.6772461;
  LabelVector y(3);
  y << 3, 3, 2;
  Eigen::ArrayXd w(3);
  w << std::numeric_limits<double>::max(), 12.4213867, 12.1835938;
  for (int it = 0; it < 3; ++it) {
    efl.value_and_grad(x, y, g, st, fgbg::Weights<double>(w));
    CHECK(st.pos_grad().isFinite().all());
    CHECK(st.neg_grad().isFinite().all());
    CHECK(st.ratio().isFinite().all());
    CHECK((st.ratio() >= 0.0).all());
    CHECK((st.ratio() <= 1.0).all());
  }
  CHECK(st.neg_grad().maxCoeff() == std::numeric_limits<double>::max());  // saturated
}

// Found by fuzz_state: float EFL formed softplus(−x) as softplus(x) − x, which is 0 for x = 15.05
// (the 2.9e-7 is below the ulp of 15); with γ_j = 1.4e32 the modulating factor σ^γ_j came out 1
// instead of 0, and the value 3.3e33 and an inf gradient instead of 0.
TEST_CASE("hardening: EFL with a huge gamma_j on large float logits", "[hardening][efl]") {
  fgbg::EqualizedFocalLossConfig<float> cf;
  cf.alpha = 1.1267801802716804e-08f;
  cf.gamma_b = 1.02490234375f;
  cf.scale = 1.3765479300652793e+32f;
  cf.decay = 0.999;
  cf.normalizer = Normalizer::mean();
  const fgbg::EqualizedFocalLoss<float> efl(cf);
  fgbg::EqualizedFocalState st(4);
  RowArray<float> x(1, 4), g(1, 4);
  LabelVector y(1);
  Eigen::ArrayXf w(1);
  x << -7.4580484e-08f, -2.19980648e-24f, 11.6586914f, 1e-15f;
  y << -1;
  w << 0.125f;
  efl.value_and_grad(x, y, g, st, fgbg::Weights<float>(w));  // ratio 1 → 0: γ_j = γ_b + s
  x << 15.0483398f, 4.42236328f, -13.3173828f, -13.3022461f;
  y << 4;
  w << 6.47460938f;
  // Every σ^γ_j and (1 − p)^γ_j is exp(−1.4e32 · (≥ 2.9e-7)) = 0: value and gradient are 0.
  CHECK(efl.value(x, y, st, fgbg::Weights<float>(w)) == 0.0f);
  CHECK(efl.value_and_grad(x, y, g, st, fgbg::Weights<float>(w)) == 0.0f);
  CHECK((g == 0.0f).all());
  CHECK(st.neg_grad().isFinite().all());
}

// Found by fuzz_softmax: a double weight of DBL_MAX times the row's gradient scale (2.3) over
// A = 0.59 overflowed before the softmax probability brought the gradient back (inf where the
// exact one is 2.7e305). With label 1 (the row's arg-max, p_y = 1) the row's scale is 0 and
// w / A = inf: the factor inf · 0 made the gradient NaN where the exact one is 0.
TEST_CASE("hardening: softmax focal with weights near DBL_MAX", "[hardening]") {
  RowArray<double> x(3, 4), g(3, 4);
  x << -0.65625, -1.53710938, 7.78466797, -0.0942382812, 9.22558594, 5.96556473e+36, 1e-15, 1e-15,
      9.22558594, 7.40771484, 0.253417969, -11.7578125;
  const fgbg::Label label = GENERATE(fgbg::Label(2), fgbg::Label(1));
  LabelVector y(3);
  y << 0, label, -1;
  Eigen::ArrayXd w(3);
  w << kMax<double>, kMax<double>, 4.49423284e+307;
  const Normalizer nz = Normalizer::avg_factor(0.59375);
  const fgbg::SoftmaxFocalLoss<double> fl({2.2250738585072014e-308, 2.32373046875, nz});
  const std::vector<LD> wl{LD(w[0]), LD(w[1]), LD(w[2])};
  const Oracle o = softmax_oracle<double>(x, y, wl, LD(nz.factor), true, 2.2250738585072014e-308L,
                                          2.32373046875L);
  RowArray<double> gc(3, 4);
  fl.value_and_grad(x, y, gc, fgbg::Weights<double>(w), nz);
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 4; ++j) {
      const LD e = o.grad[static_cast<size_t>(i * 4 + j)];
      if (!(std::fabs(e) < LD(kMax<double>))) continue;
      INFO("grad " << i << ", " << j << ": exact " << static_cast<double>(e) << ", got "
                   << gc(i, j));
      CHECK(std::isfinite(gc(i, j)));
      CHECK(std::fabs(LD(gc(i, j)) - e) <= 1e-12L * std::fabs(e) + 1e-300L);
    }
}

// §5 (layout and alignment independence of every dense loss, residual objectness included) is
// checked by the contract suite: tests/test_contract.cpp, "every layout, stride and alignment".

// ---------------------------------------------------------------------------------------------
// §6 (numerics part): random extreme inputs against the long-double oracle.

namespace {

template <typename S>
S extreme_value(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_real_distribution<double> u(0, 1);
  const double lmax = std::log10(double(kMax<S>));
  const double sign = (rng() & 1) ? 1.0 : -1.0;
  switch (kind(rng)) {
    case 0:
      return static_cast<S>(sign * double(kMax<S>));
    case 1:
      return S(0);
    case 2:
    case 3:
      return static_cast<S>(sign * std::pow(10.0, u(rng) * lmax));  // 1 … max
    case 4:
      return static_cast<S>(sign * std::pow(10.0, -u(rng) * 30));  // tiny
    default:
      return static_cast<S>(sign * u(rng) * 30);  // the ordinary range
  }
}

template <typename S>
S extreme_weight(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_real_distribution<double> u(0, 1);
  switch (kind(rng)) {
    case 0:
      return S(0);
    case 1:
      return kMax<S>;
    case 2:
      return static_cast<S>(std::pow(10.0, u(rng) * std::log10(double(kMax<S>))));
    default:
      return static_cast<S>(u(rng) * 4);
  }
}

template <typename S>
Normalizer extreme_normalizer(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  switch (rng() % 5) {
    case 0:
      return Normalizer::sum();
    case 1:
      return Normalizer::mean();
    case 2:
      return Normalizer::num_positives();
    case 3:
      return Normalizer::avg_factor(1e-37 * (1 + u(rng)));
    default:
      return Normalizer::avg_factor(
          std::pow(10.0, -37 + u(rng) * (37 + std::log10(double(kMax<S>)))));
  }
}

LD resolve(const Normalizer& nz, const LabelVector& y, Index per_row) {
  Index valid = 0, pos = 0;
  for (Index i = 0; i < y.size(); ++i) {
    valid += y[i] >= 0;
    pos += y[i] > 0;
  }
  switch (nz.reduction) {
    case fgbg::Reduction::sum:
      return 1;
    case fgbg::Reduction::mean:
      return std::max<LD>(1, LD(valid) * per_row);
    case fgbg::Reduction::avg_factor:
      return LD(nz.factor);
    default:
      return std::max<LD>(1, LD(pos));
  }
}

bool oracle_representable_all(const Oracle& o, LD max) {
  if (!(std::fabs(o.value) <= max)) return false;
  for (LD g : o.grad)
    if (!(std::fabs(g) <= max)) return false;
  return true;
}

template <typename S, typename Run>
int random_cases(int count, Index cols, bool softmax, Run&& run) {
  std::mt19937_64 rng(12345 + cols);
  int checked = 0;
  for (int it = 0; it < count; ++it) {
    const Index n = 1 + static_cast<Index>(rng() % 6);
    RowArray<S> x(n, cols);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = extreme_value<S>(rng);
    LabelVector y(n);
    const Index labels = softmax ? cols - 1 : cols;
    for (Index i = 0; i < n; ++i) y[i] = static_cast<fgbg::Label>(rng() % (labels + 2)) - 1;
    std::vector<LD> wl;
    Eigen::Array<S, Eigen::Dynamic, 1> w(n);
    const bool weighted = rng() % 2;
    for (Index i = 0; i < n; ++i) w[i] = extreme_weight<S>(rng);
    if (weighted)
      for (Index i = 0; i < n; ++i) wl.push_back(LD(w[i]));
    const Normalizer nz = extreme_normalizer<S>(rng);
    {
      std::ostringstream os;
      os << std::setprecision(17) << "x = [" << x << "]\ny = [" << y.transpose() << "] weights "
         << (weighted ? "[" : "(unused) [") << w.transpose() << "] reduction "
         << fgbg::to_string(nz.reduction) << " factor " << nz.factor;
      g_case_inputs = os.str();
    }
    checked += run(x, y, w, wl, weighted, nz, resolve(nz, y, softmax ? 1 : cols), it);
  }
  return checked;
}

}  // namespace

TEMPLATE_TEST_CASE("hardening: dense losses against a long-double oracle on extreme inputs",
                   "[hardening][oracle]", float, double) {
  using S = TestType;
  const LD lmax = LD(kMax<S>) * (1 - 1e-5L);
  auto sigmoid_run = [&](const auto& loss, auto elem, const char* name) {
    return [&, elem, name](const RowArray<S>& x, const LabelVector& y,
                           const Eigen::Array<S, Eigen::Dynamic, 1>& w, const std::vector<LD>& wl,
                           bool weighted, const Normalizer& nz, LD A, int it) -> int {
      std::vector<LD> ones(static_cast<size_t>(x.rows()), 1);
      const Oracle o = sigmoid_oracle<S>(x, y, wl, A, ones, elem);
      if (!oracle_representable_all(o, lmax)) return 0;
      RowArray<S> g(x.rows(), x.cols());
      const S v = weighted ? loss.value_and_grad(x, y, g, w, nz) : loss.value_and_grad(x, y, g, nz);
      check_against(o, v, g, std::string(name) + " case " + std::to_string(it), &x);
      return 1;
    };
  };
  int checked = 0;
  checked += random_cases<S>(400, 5, false,
                             sigmoid_run(fgbg::SigmoidCrossEntropyLoss<S>(), bce_elem(), "BCE"));
  for (S gamma : {S(2), S(0), S(1), S(2.5)})
    checked += random_cases<S>(300, 4, false,
                               sigmoid_run(fgbg::SigmoidFocalLoss<S>({S(0.25), gamma}),
                                           focal_elem(0.25L, LD(gamma)), "focal"));
  for (S gamma : {S(1), S(0.5), S(5)})
    checked += random_cases<S>(
        300, 4, false,
        sigmoid_run(fgbg::FocalLossStar<S>({S(-1), gamma}), fl_star_elem(-1, LD(gamma)), "FL*"));
  // QFL with hard targets (quality 1) and with random qualities.
  for (int soft = 0; soft < 2; ++soft) {
    const fgbg::QualityFocalLoss<S> qfl;
    checked += random_cases<S>(
        300, 4, false,
        [&](const RowArray<S>& x, const LabelVector& y, const Eigen::Array<S, Eigen::Dynamic, 1>& w,
            const std::vector<LD>& wl, bool weighted, const Normalizer& nz, LD A, int it) -> int {
          Eigen::Array<S, Eigen::Dynamic, 1> q(x.rows());
          std::vector<LD> ql;
          for (Index i = 0; i < x.rows(); ++i) {
            q[i] = soft ? static_cast<S>(((it * 7 + i * 13) % 11) / 10.0) : S(1);
            ql.push_back(LD(q[i]));
          }
          const Oracle o = sigmoid_oracle<S>(x, y, wl, A, ql, qfl_elem(2));
          if (!oracle_representable_all(o, lmax)) return 0;
          RowArray<S> g(x.rows(), x.cols());
          const S v =
              weighted ? qfl.value_and_grad(x, y, q, g, w, nz) : qfl.value_and_grad(x, y, q, g, nz);
          check_against(o, v, g, "QFL case " + std::to_string(it), &x);
          return 1;
        });
  }
  auto softmax_run = [&](const auto& loss, bool focal, LD alpha, LD gamma, const char* name) {
    return [&, focal, alpha, gamma, name](const RowArray<S>& x, const LabelVector& y,
                                          const Eigen::Array<S, Eigen::Dynamic, 1>& w,
                                          const std::vector<LD>& wl, bool weighted,
                                          const Normalizer& nz, LD A, int it) -> int {
      const Oracle o = softmax_oracle<S>(x, y, wl, A, focal, alpha, gamma);
      if (!oracle_representable_all(o, lmax)) return 0;
      RowArray<S> g(x.rows(), x.cols());
      const S v = weighted ? loss.value_and_grad(x, y, g, w, nz) : loss.value_and_grad(x, y, g, nz);
      check_against(o, v, g, std::string(name) + " case " + std::to_string(it), &x);
      return 1;
    };
  };
  checked += random_cases<S>(400, 4, true,
                             softmax_run(fgbg::SoftmaxCrossEntropyLoss<S>(), false, 0, 0, "CE"));
  for (S gamma : {S(2), S(0.5)})
    checked += random_cases<S>(300, 4, true,
                               softmax_run(fgbg::SoftmaxFocalLoss<S>({S(0.25), gamma}), true, 0.25L,
                                           LD(gamma), "softmax focal"));
  INFO("checked " << checked);
  CHECK(checked > 1000);
}

// Regression (fuzz_state): GhmcState sized its vectors before checking `bins`, so a negative
// count threw std::length_error from std::vector instead of fgbg's invalid_argument; an EFL state
// of more classes than int32 labels can address asked for the memory before failing.
TEST_CASE("state constructors validate their sizes before allocating", "[hardening][state]") {
  for (const int bins :
       {-1, 0, 257, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()}) {
    INFO("bins " << bins);
    CHECK_THROWS_AS(fgbg::GhmcState(bins), std::invalid_argument);
    CHECK_THROWS_WITH(fgbg::GhmcState(bins),
                      Catch::Contains("fgbg::GhmcState: config.bins must be in 1..256"));
  }
  CHECK(fgbg::GhmcState(1).bins() == 1);
  CHECK(fgbg::GhmcState(256).bins() == 256);
  for (const fgbg::Index c :
       {fgbg::Index(-1), fgbg::Index(std::numeric_limits<std::int32_t>::max()) + 1,
        fgbg::Index(fgbg::kMaxStateClasses) + 1,  // 2^31 − 1 classes allocated 80 GiB (fuzz_state)
        fgbg::Index(std::numeric_limits<std::int32_t>::max()),
        std::numeric_limits<fgbg::Index>::max()}) {
    INFO("num_classes " << c);
    CHECK_THROWS_AS(fgbg::EqualizedFocalState(c), std::invalid_argument);
    CHECK_THROWS_WITH(fgbg::EqualizedFocalState(c),
                      Catch::Contains("fgbg::EqualizedFocalState: num_classes must be in"));
  }
}

// Regression (fuzz_sigmoid): the modulating factor of the negatives, σ^γ = exp(−γ·softplus(−x)),
// took softplus(−x) as softplus(x) − x, which rounds to 0 for float x ≳ 16: with a huge γ (QFL's
// β = 6.7e31) σ^γ came out 1 instead of 0, and the gradient γ(1 − σ)·softplus(x) ≈ 3.6e26 instead
// of 0 (inf after a large weight).
TEST_CASE("QFL: a huge beta on confident negatives gives the vanishing modulated loss",
          "[hardening][qfl]") {
  using S = float;
  const fgbg::QualityFocalLoss<S> qfl({S(6.6965703933793497e+31), fgbg::Normalizer::sum()});
  RowArray<S> x(4, 1);
  x << S(14.9331055), S(7.93310547), S(20), S(-3);
  const fgbg::LabelVector y = fgbg::LabelVector::Zero(4);
  const Eigen::ArrayXf q = Eigen::ArrayXf::Zero(4);
  RowArray<S> g(4, 1);
  const double v = qfl.value_and_grad(x, y, q, g);
  // Exact: σ(x)^β = exp(−β·softplus(−x)) with β·softplus(−x) ≥ 6.7e31·0.049 for x = −3: 0.
  CHECK(v == 0.0);
  CHECK((g == S(0)).all());
  // A moderate exponent still matches the long-double formula at a confident negative.
  const fgbg::QualityFocalLoss<S> q25({S(2.5), fgbg::Normalizer::sum()});
  RowArray<S> x1(1, 1);
  x1 << S(18);
  RowArray<S> g1(1, 1);
  const double v1 = q25.value_and_grad(x1, fgbg::LabelVector::Zero(1), Eigen::ArrayXf::Zero(1), g1);
  const long double xl = 18.0L, spn = std::log1p(std::exp(-xl)), spp = xl + spn;
  const long double want = std::exp(-2.5L * spn) * spp;
  CHECK(v1 == Approx(static_cast<double>(want)).epsilon(1e-6));
}

// Found by fuzz_sigmoid in CI: a positive at x = 100 with quality 3.3e-28 has |d| = σ(x) − t =
// 1 − 3.3e-28, which is 1 in double and in long double; with β = 4.2e151 the power |d|^β came out 1
// instead of exp(−1.4e124) = 0, and the gradient inf after a weight of 4.4e199. The power near
// |d| = 1 is now formed from 1 − |d| = σ(−x) + t.
TEMPLATE_TEST_CASE("QFL: a huge beta on a positive whose |sigma - t| rounds to 1",
                   "[hardening][qfl]", float, double) {
  using S = TestType;
  const S beta = sizeof(S) == 8 ? S(4.1720162224485174e+151) : S(1e30);
  const fgbg::QualityFocalLoss<S> qfl({beta, fgbg::Normalizer::num_positives()});
  RowArray<S> x(1, 3), g(1, 3);
  // (float: negatives at −30, whose σ^β vanishes; a negative at 100 keeps σ^β ≈ 1 for any float β)
  if (sizeof(S) == 8)
    x << S(7.27832031), S(100), S(100);
  else
    x << S(-30), S(100), S(-30);
  fgbg::LabelVector y(1);
  y << 2;
  Eigen::Array<S, Eigen::Dynamic, 1> q(1), w(1);
  q << S(3.3104452e-28);
  w << (sizeof(S) == 8 ? S(4.39673449e+199) : S(1e30));
  const double v = qfl.value_and_grad(x, y, q, g, fgbg::Weights<S>(w));
  // Exact: every factor |d|^β, β|d|^(β−1) and σ^β is exp(−(≥ 1e2)) = 0 or below the range.
  CHECK(v == 0.0);
  CHECK((g == S(0)).all());
  // A moderate β takes the same path (|d| > 1/2) and matches the long-double formula.
  const fgbg::QualityFocalLoss<S> q25({S(2.5), fgbg::Normalizer::sum()});
  RowArray<S> x1(1, 1), g1(1, 1);
  x1 << S(3);
  Eigen::Array<S, Eigen::Dynamic, 1> t1(1);
  t1 << S(0.25);
  fgbg::LabelVector y1(1);
  y1 << 1;
  const double v1 = q25.value_and_grad(x1, y1, t1, g1);
  using LD = long double;
  const LD xl = 3, tl = LD(S(0.25)), s = 1 / (1 + std::exp(-xl)), d = s - tl;
  const LD bce = (1 - tl) * (xl + std::log1p(std::exp(-xl))) + tl * std::log1p(std::exp(-xl));
  const LD want_v = std::pow(d, 2.5L) * bce;
  const LD want_g = 2.5L * std::pow(d, 1.5L) * s * (1 - s) * bce + std::pow(d, 2.5L) * d;
  CHECK(v1 == Approx(static_cast<double>(want_v)).epsilon(sizeof(S) == 8 ? 1e-13 : 1e-6));
  CHECK(static_cast<double>(g1(0, 0)) ==
        Approx(static_cast<double>(want_g)).epsilon(sizeof(S) == 8 ? 1e-13 : 1e-6));
}

// From fuzz_sigmoid in CI (an oracle error, the library was right): a positive of quality 0 at a
// logit where 1 − σ(x) rounds to 0 even in long double. With β·σ(−x) ≈ 0.4 the modulator's slope
// term β·σ^(β−1)·σ(1 − σ)·softplus(x) is about 16 times the second term σ^β·σ; a formula that
// forms 1 − σ or σ^β directly drops it and gives 1 − 0.4 ≈ 0.6 instead of about 10.
TEMPLATE_TEST_CASE("QFL: the slope term survives where 1 - sigma(x) rounds to 0",
                   "[hardening][qfl]", float, double) {
  using S = TestType;
  const bool dbl = sizeof(S) == 8;
  const S xs = dbl ? S(40) : S(20), beta = dbl ? S(1e17) : S(2e8);
  const fgbg::QualityFocalLoss<S> qfl({beta, fgbg::Normalizer::sum()});
  RowArray<S> x(1, 1), g(1, 1);
  x << xs;
  fgbg::LabelVector y(1);
  y << 1;
  Eigen::Array<S, Eigen::Dynamic, 1> q(1);
  q << S(0);
  const double v = qfl.value_and_grad(x, y, q, g);
  using LD = long double;
  const LD xl = xs, bl = beta, qm = std::exp(-xl) / (1 + std::exp(-xl)), s = 1 / (1 + qm);
  const LD sp = xl + std::log1p(std::exp(-xl)), log_s = std::log1p(-qm);
  const LD want_v = std::exp(bl * log_s) * sp;
  const LD want_g = bl * std::exp((bl - 1) * log_s) * s * qm * sp + std::exp(bl * log_s) * s;
  REQUIRE(static_cast<double>(want_g) > 5.0);  // the slope term dominates
  CHECK(v == Approx(static_cast<double>(want_v)).epsilon(dbl ? 1e-12 : 1e-6));
  CHECK(static_cast<double>(g(0, 0)) ==
        Approx(static_cast<double>(want_g)).epsilon(dbl ? 1e-12 : 1e-6));
}

// Regression (fuzz_state, UBSan): EFL's state update took row(i) of an N × 0 gradient for every
// background anchor, offsetting a null data pointer. C = 0 now adds nothing.
TEST_CASE("EFL: zero classes leave the statistics empty", "[hardening][efl][edge]") {
  const fgbg::EqualizedFocalLoss<float> efl;
  fgbg::EqualizedFocalState st(0);
  Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic> x(3, 0), g(3, 0);
  fgbg::LabelVector y(3);
  y << 0, -1, 0;
  CHECK(efl.value_and_grad(x, y, g, st) == 0.0f);
  CHECK(g.size() == 0);
  CHECK(st.num_classes() == 0);
}
