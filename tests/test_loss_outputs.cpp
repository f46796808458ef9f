// Per-element and per-anchor losses (issue 11, item 1): fgbg::element_losses / anchor_losses as
// the last argument of a sigmoid or softmax head's call (core/loss_output.hpp). What is
// specific to the outputs: they leave the value and the gradient bit-identical, they hold the
// closed-form weighted losses (mmdetection's reduction='none'), their sum over the normaliser is
// the value, every layout gives the same numbers, rows wider than one tile are summed over their
// column tiles, and every bad output throws before anything is written.
#include <catch2/catch.hpp>

#include <fgbg/fgbg.hpp>

#include <cmath>
#include <limits>

#include "support/problems.hpp"

namespace {

using fgbg::Index;

enum class WeightKind { none, anchor, element };

/// The weights of a problem for a kind (element: a deterministic N × C pattern with zeros).
template <typename S>
fgbg::RowArray<S> element_weights(Index n, Index c) {
  fgbg::RowArray<S> w(n, c);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < c; ++j) w(i, j) = S((i * 7 + j * 3) % 5) * S(0.375);
  return w;
}

/// Calls `loss` with the weights of `kind` and the trailing arguments `tail...` (normaliser,
/// loss output), with or without a gradient.
template <typename Loss, typename S, typename G, typename... T>
double call(const Loss& loss, const fgbg_test::Problem<S>& p, WeightKind kind,
            const fgbg::RowArray<S>& we, G* grad, const T&... tail) {
  if (kind == WeightKind::none)
    return grad ? loss.value_and_grad(p.logits, p.labels, *grad, tail...)
                : loss.value(p.logits, p.labels, tail...);
  if (kind == WeightKind::anchor)
    return grad ? loss.value_and_grad(p.logits, p.labels, *grad, p.weights, tail...)
                : loss.value(p.logits, p.labels, p.weights, tail...);
  return grad ? loss.value_and_grad(p.logits, p.labels, *grad, we, tail...)
              : loss.value(p.logits, p.labels, we, tail...);
}

/// The common checks of one sigmoid loss on one problem: bit-identity with and without outputs,
/// anchor = Σ_j element, Σ element / A = value, `reference(i, j, weight)` per element.
template <typename Loss, typename S, typename Ref>
void check_sigmoid_outputs(const Loss& loss, const fgbg_test::Problem<S>& p, const Ref& reference) {
  const S eps = std::numeric_limits<S>::epsilon();
  const auto norm = fgbg::Normalizer::avg_factor(37.5);
  const auto we = element_weights<S>(p.rows(), p.cols());
  for (WeightKind kind : {WeightKind::none, WeightKind::anchor, WeightKind::element}) {
    INFO("weights " << static_cast<int>(kind));
    fgbg::RowArray<S> g0, g1, g2, e;
    Eigen::Array<S, Eigen::Dynamic, 1> a;
    const double v0 = call(loss, p, kind, we, &g0, norm);
    const double v1 = call(loss, p, kind, we, &g1, norm, fgbg::element_losses(e));
    const double v2 = call(loss, p, kind, we, &g2, norm, fgbg::anchor_losses(a));
    CHECK(v1 == v0);
    CHECK(v2 == v0);
    CHECK((g1 == g0).all());
    CHECK((g2 == g0).all());
    // value() writes the same outputs.
    fgbg::RowArray<S> ev;
    Eigen::Array<S, Eigen::Dynamic, 1> av;
    fgbg::RowArray<S>* none = nullptr;
    CHECK(call(loss, p, kind, we, none, norm, fgbg::element_losses(ev)) == v0);
    CHECK(call(loss, p, kind, we, none, norm, fgbg::anchor_losses(av)) == v0);
    CHECK((ev == e).all());
    CHECK((av == a).all());
    REQUIRE(e.rows() == p.rows());
    REQUIRE(e.cols() == p.cols());
    REQUIRE(a.size() == p.rows());
    double total = 0, total_abs = 0;
    for (Index i = 0; i < p.rows(); ++i) {
      double row = 0;
      for (Index j = 0; j < p.cols(); ++j) {
        const double w = kind == WeightKind::none     ? 1.0
                         : kind == WeightKind::anchor ? double(p.weights[i])
                                                      : double(we(i, j));
        const double ref = p.labels[i] < 0 ? 0.0 : reference(i, j, w);
        INFO("element (" << i << ", " << j << ") label " << p.labels[i] << " got " << e(i, j)
                         << " want " << ref << " ulps "
                         << std::abs(double(e(i, j)) - ref) / (eps * std::abs(ref)));
        CHECK(std::abs(double(e(i, j)) - ref) <= 8 * eps * std::abs(ref) + 1e-300);
        row += double(e(i, j));
      }
      // The anchor's sum: the row summed in the scalar type, then weighted in double.
      CHECK(std::abs(double(a[i]) - row) <= 2 * p.cols() * eps * row + 1e-300);
      if (p.labels[i] < 0) CHECK(a[i] == S(0));
      total += double(a[i]);
      total_abs += std::abs(double(a[i]));
    }
    CHECK(std::abs(total / 37.5 - v0) <= 4 * p.cols() * eps * total_abs / 37.5 + 1e-300);
  }
}

// References in long double (x87 extended on x86: 11 more bits than double).
using Wide = long double;
Wide softplus(Wide x) {
  return std::max(x, Wide(0)) + std::log1p(std::exp(-std::abs(x)));
}
Wide sigmoid(Wide x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

}  // namespace

TEMPLATE_TEST_CASE("Loss outputs: BCE and focal loss per element, per anchor, value unchanged",
                   "[loss_outputs]", float, double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 700;
  o.classes = 9;
  const auto p = fgbg_test::random_problem<S>(11, o);
  const auto target = [&p](Index i, Index j) { return p.labels[i] == j + 1 ? 1.0 : 0.0; };
  check_sigmoid_outputs(fgbg::SigmoidCrossEntropyLoss<S>(), p, [&](Index i, Index j, double w) {
    const Wide x = p.logits(i, j), t = target(i, j);
    return double(w * (t == 1 ? softplus(-x) : softplus(x)));
  });
  fgbg::SigmoidFocalLossConfig<S> cfg;  // α = 0.25, γ = 2 (torchvision)
  check_sigmoid_outputs(fgbg::SigmoidFocalLoss<S>(cfg), p, [&](Index i, Index j, double w) {
    const Wide x = p.logits(i, j), pr = sigmoid(x), qr = sigmoid(-x);
    return double(target(i, j) == 1 ? w * Wide(0.25) * qr * qr * softplus(-x)
                                    : w * Wide(0.75) * pr * pr * softplus(x));
  });
}

TEMPLATE_TEST_CASE("Loss outputs: QFL, VFL, FL* and EFL keep the value and agree with the value",
                   "[loss_outputs]", float, double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 500;
  o.classes = 6;
  const auto p = fgbg_test::random_problem<S>(12, o);
  const auto norm = fgbg::Normalizer::avg_factor(37.5);
  const S eps = std::numeric_limits<S>::epsilon();
  // For each: bit-identity, and Σ anchor / A = value.
  const auto agree = [&](auto&& with) {
    fgbg::RowArray<S> g0, g1, g2, e;
    Eigen::Array<S, Eigen::Dynamic, 1> a;
    const double v0 = with(g0, fgbg::Normalizer(norm));
    const double v1 = with(g1, fgbg::element_losses(e));
    const double v2 = with(g2, fgbg::anchor_losses(a));
    CHECK(v1 == v0);
    CHECK(v2 == v0);
    CHECK((g1 == g0).all());
    CHECK((g2 == g0).all());
    const double sa = a.template cast<double>().sum();
    CHECK(std::abs(sa / 37.5 - v0) <= 64 * eps * std::abs(sa) / 37.5);
    CHECK(std::abs(e.template cast<double>().sum() - sa) <= 64 * eps * std::abs(sa));
    for (Index i = 0; i < p.rows(); ++i)
      if (p.labels[i] < 0) CHECK((e.row(i) == S(0)).all());
  };
  const fgbg::QualityFocalLoss<S> qfl;
  agree([&](fgbg::RowArray<S>& g, const auto& last) {
    if constexpr (std::is_same<std::decay_t<decltype(last)>, fgbg::Normalizer>::value)
      return qfl.value_and_grad(p.logits, p.labels, p.quality, g, last);
    else
      return qfl.value_and_grad(p.logits, p.labels, p.quality, g, norm, last);
  });
  const fgbg::VarifocalLoss<S> vfl;
  agree([&](fgbg::RowArray<S>& g, const auto& last) {
    if constexpr (std::is_same<std::decay_t<decltype(last)>, fgbg::Normalizer>::value)
      return vfl.value_and_grad(p.logits, p.labels, p.quality, g, p.weights, last);
    else
      return vfl.value_and_grad(p.logits, p.labels, p.quality, g, p.weights, norm, last);
  });
  const fgbg::FocalLossStar<S> fls;
  agree([&](fgbg::RowArray<S>& g, const auto& last) {
    if constexpr (std::is_same<std::decay_t<decltype(last)>, fgbg::Normalizer>::value)
      return fls.value_and_grad(p.logits, p.labels, g, last);
    else
      return fls.value_and_grad(p.logits, p.labels, g, norm, last);
  });
  // EFL: the state a call commits is the same with and without outputs.
  const fgbg::EqualizedFocalLoss<S> efl;
  fgbg::EqualizedFocalState s0(p.cols()), s1(p.cols()), s2(p.cols());
  int call_no = 0;
  agree([&](fgbg::RowArray<S>& g, const auto& last) {
    fgbg::EqualizedFocalState& s = call_no == 0 ? s0 : call_no == 1 ? s1 : s2;
    ++call_no;
    if constexpr (std::is_same<std::decay_t<decltype(last)>, fgbg::Normalizer>::value)
      return efl.value_and_grad(p.logits, p.labels, g, s, last);
    else
      return efl.value_and_grad(p.logits, p.labels, g, s, norm, last);
  });
  CHECK(s1 == s0);
  CHECK(s2 == s0);
}

TEMPLATE_TEST_CASE("Loss outputs: softmax heads per anchor", "[loss_outputs]", float, double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 600;
  o.classes = 7;
  o.softmax = true;
  const auto p = fgbg_test::random_problem<S>(13, o);
  const S eps = std::numeric_limits<S>::epsilon();
  const auto norm = fgbg::Normalizer::avg_factor(12.0);
  const fgbg::SoftmaxCrossEntropyLoss<S> ce;
  fgbg::RowArray<S> g0, g1;
  Eigen::Array<S, Eigen::Dynamic, 1> a;
  const double v0 = ce.value_and_grad(p.logits, p.labels, g0, p.weights, norm);
  const double v1 =
      ce.value_and_grad(p.logits, p.labels, g1, p.weights, norm, fgbg::anchor_losses(a));
  CHECK(v1 == v0);
  CHECK((g1 == g0).all());
  double total = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    if (p.labels[i] < 0) {
      CHECK(a[i] == S(0));
      continue;
    }
    // −log p_y = (m − x_y) + log1p(Σ_{j ≠ argmax} exp(x_j − m)), without cancellation.
    Index arg = 0;
    for (Index j = 1; j < p.cols(); ++j)
      if (p.logits(i, j) > p.logits(i, arg)) arg = j;
    const Wide m = p.logits(i, arg);
    Wide rest = 0;
    for (Index j = 0; j < p.cols(); ++j)
      if (j != arg) rest += std::exp(Wide(p.logits(i, j)) - m);
    const double ref =
        double(Wide(p.weights[i]) * ((m - Wide(p.logits(i, p.labels[i]))) + std::log1p(rest)));
    INFO("anchor " << i);
    CHECK(std::abs(double(a[i]) - ref) <= 16 * eps * std::abs(ref) + 1e-300);
    total += double(a[i]);
  }
  CHECK(std::abs(total / 12.0 - v0) <= 16 * eps * total / 12.0);
  // Softmax focal: bit-identity and the sum.
  const fgbg::SoftmaxFocalLoss<S> sf;
  Eigen::Array<S, Eigen::Dynamic, 1> af;
  const double f0 = sf.value(p.logits, p.labels, norm);
  CHECK(sf.value(p.logits, p.labels, norm, fgbg::anchor_losses(af)) == f0);
  CHECK(std::abs(af.template cast<double>().sum() / 12.0 - f0) <= 16 * eps * f0);
}

TEST_CASE("Loss outputs: every layout of the output gives the same numbers", "[loss_outputs]") {
  fgbg_test::ProblemOptions o;
  o.n = 300;
  o.classes = 5;
  const auto p = fgbg_test::random_problem<float>(14, o);
  const fgbg::SigmoidFocalLoss<float> focal;
  fgbg::RowArray<float> ref;
  Eigen::ArrayXf ref_a;
  const double v = focal.value(p.logits, p.labels, p.weights, fgbg::element_losses(ref));
  focal.value(p.logits, p.labels, p.weights, fgbg::anchor_losses(ref_a));
  // Column-major.
  Eigen::ArrayXXf cm;
  CHECK(focal.value(p.logits, p.labels, p.weights, fgbg::element_losses(cm)) == v);
  CHECK((cm == ref).all());
  // A strided Map (every other column of a wider buffer) and a block.
  Eigen::ArrayXXf wide = Eigen::ArrayXXf::Constant(p.rows(), 2 * p.cols(), -7.f);
  Eigen::Map<Eigen::ArrayXXf, 0, Eigen::OuterStride<>> strided(wide.data(), p.rows(), p.cols(),
                                                               Eigen::OuterStride<>(2 * p.rows()));
  focal.value(p.logits, p.labels, p.weights, fgbg::element_losses(strided));
  CHECK((strided == ref).all());
  for (Index j = 0; j < p.cols(); ++j) CHECK((wide.col(2 * j + 1) == -7.f).all());
  fgbg::RowArray<float> big = fgbg::RowArray<float>::Constant(p.rows() + 4, p.cols() + 3, -7.f);
  focal.value(p.logits, p.labels, p.weights,
              fgbg::element_losses(big.block(2, 1, p.rows(), p.cols())));
  CHECK((big.block(2, 1, p.rows(), p.cols()) == ref).all());
  CHECK((big.topRows(2) == -7.f).all());
  // Per anchor: a column of a matrix, a row vector, a strided Map.
  Eigen::ArrayXXf cols = Eigen::ArrayXXf::Zero(p.rows(), 3);
  focal.value(p.logits, p.labels, p.weights, fgbg::anchor_losses(cols.col(1)));
  CHECK((cols.col(1) == ref_a).all());
  CHECK((cols.col(0) == 0.f).all());
  Eigen::Array<float, 1, Eigen::Dynamic> row_vec;
  focal.value(p.logits, p.labels, p.weights, fgbg::anchor_losses(row_vec));
  CHECK((row_vec.transpose() == ref_a).all());
  Eigen::ArrayXf spaced = Eigen::ArrayXf::Constant(3 * p.rows(), 5.f);
  Eigen::Map<Eigen::ArrayXf, 0, Eigen::InnerStride<3>> every_third(spaced.data(), p.rows());
  focal.value(p.logits, p.labels, p.weights, fgbg::anchor_losses(every_third));
  CHECK((every_third == ref_a).all());
  CHECK(spaced[1] == 5.f);
  // The logits' layout does not matter either.
  const Eigen::ArrayXXf x_cm = p.logits;
  Eigen::ArrayXf a_cm;
  CHECK(focal.value(x_cm, p.labels, p.weights, fgbg::anchor_losses(a_cm)) == v);
  CHECK((a_cm == ref_a).all());
}

TEMPLATE_TEST_CASE("Loss outputs: rows wider than one tile are summed over their column tiles",
                   "[loss_outputs]", float, double) {
  using S = TestType;
  fgbg_test::ProblemOptions o;
  o.n = 23;
  o.classes = 4500;  // three column tiles of 2048
  o.positive_fraction = 0.3;
  const auto p = fgbg_test::random_problem<S>(15, o);
  const fgbg::SigmoidCrossEntropyLoss<S> bce;
  const S eps = std::numeric_limits<S>::epsilon();
  fgbg::RowArray<S> e;
  Eigen::Array<S, Eigen::Dynamic, 1> a;
  const auto norm = fgbg::Normalizer::avg_factor(10.0);
  const double v = bce.value(p.logits, p.labels, p.weights, norm, fgbg::element_losses(e));
  CHECK(bce.value(p.logits, p.labels, p.weights, norm, fgbg::anchor_losses(a)) == v);
  for (Index i = 0; i < p.rows(); ++i) {
    const double row = e.row(i).template cast<double>().sum();
    INFO("anchor " << i);
    CHECK(std::abs(double(a[i]) - row) <= 4 * 256 * eps * row + 1e-300);
  }
  CHECK(std::abs(a.template cast<double>().sum() / 10.0 - v) <= 4 * 256 * eps * v);
}

TEST_CASE("Loss outputs: edge cases", "[loss_outputs]") {
  const fgbg::SigmoidFocalLoss<float> focal;
  // N = 0: a plain array is resized to nothing.
  fgbg::RowArray<float> x0(0, 4);
  fgbg::LabelVector y0(0);
  fgbg::RowArray<float> e0 = fgbg::RowArray<float>::Ones(2, 2);
  Eigen::ArrayXf a0 = Eigen::ArrayXf::Ones(3);
  CHECK(focal.value(x0, y0, fgbg::element_losses(e0)) == 0.0);
  CHECK(focal.value(x0, y0, fgbg::anchor_losses(a0)) == 0.0);
  CHECK(e0.rows() == 0);
  CHECK(e0.cols() == 4);
  CHECK(a0.size() == 0);
  // All ignored: zeros, whatever was there.
  fgbg::RowArray<float> x = fgbg::RowArray<float>::Constant(5, 3, 2.f);
  const fgbg::LabelVector ign = fgbg::LabelVector::Constant(5, -1);
  fgbg::RowArray<float> e = fgbg::RowArray<float>::Constant(5, 3, 9.f);
  Eigen::ArrayXf a = Eigen::ArrayXf::Constant(5, 9.f);
  CHECK(focal.value(x, ign, fgbg::element_losses(e)) == 0.0);
  CHECK(focal.value(x, ign, fgbg::anchor_losses(a)) == 0.0);
  CHECK((e == 0.f).all());
  CHECK((a == 0.f).all());
  // Extreme finite logits: the element losses are the closed form (x for a negative at x = max:
  // softplus(x) = x, times α σ² = 0.75), finite; an anchor's sum that exceeds float's range is
  // inf while the normalised value is finite.
  const float big = std::numeric_limits<float>::max();
  fgbg::RowArray<float> xe(2, 3);
  xe << big, -big, big, 0.f, 0.f, 0.f;
  fgbg::LabelVector ye(2);
  ye << 2, 0;
  fgbg::RowArray<float> ee;
  Eigen::ArrayXf ae;
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  const double ve = bce.value(xe, ye, fgbg::Normalizer::avg_factor(4.0), fgbg::element_losses(ee));
  CHECK(std::isfinite(ve));
  CHECK(ee(0, 0) == big);  // negative at x = max: softplus(x) = x
  CHECK(ee(0, 1) == big);  // positive at x = −max: softplus(−x) = max
  CHECK(ee(0, 2) == big);
  CHECK(std::abs(ee(1, 0) - float(std::log(2.0))) <= 1e-7f);
  bce.value(xe, ye, fgbg::Normalizer::avg_factor(4.0), fgbg::anchor_losses(ae));
  CHECK(std::isinf(ae[0]));
  CHECK(std::abs(ae[1] - float(3 * std::log(2.0))) <= 1e-6f);
}

TEST_CASE("Loss outputs: a bad output throws before anything is written", "[loss_outputs]") {
  fgbg_test::ProblemOptions o;
  o.n = 40;
  o.classes = 3;
  const auto p = fgbg_test::random_problem<float>(16, o);
  const fgbg::SigmoidFocalLoss<float> focal;
  fgbg::RowArray<float> g = fgbg::RowArray<float>::Constant(40, 3, 5.f);
  // A view of the wrong shape.
  fgbg::RowArray<float> buf = fgbg::RowArray<float>::Constant(41, 3, 5.f);
  Eigen::ArrayXf abuf = Eigen::ArrayXf::Constant(41, 5.f);
  CHECK_THROWS_WITH(
      focal.value_and_grad(p.logits, p.labels, g, fgbg::element_losses(buf.topRows(39))),
      Catch::Contains("element_losses must be 40 x 3, got 39 x 3"));
  CHECK_THROWS_WITH(focal.value_and_grad(p.logits, p.labels, g, fgbg::anchor_losses(abuf.head(41))),
                    Catch::Contains("anchor_losses must have 40 entries, got 41"));
  CHECK((g == 5.f).all());
  CHECK((buf == 5.f).all());
  CHECK((abuf == 5.f).all());
  // Sharing memory with the logits, the gradient or the weights.
  fgbg::RowArray<float> x = p.logits;
  CHECK_THROWS_WITH(focal.value(x, p.labels, fgbg::element_losses(x)),
                    Catch::Contains("element_losses must not share memory with the logits"));
  CHECK_THROWS_WITH(focal.value_and_grad(p.logits, p.labels, g, fgbg::element_losses(g)),
                    Catch::Contains("must not share memory with the grad"));
  Eigen::ArrayXf w = p.weights;
  CHECK_THROWS_WITH(focal.value(p.logits, p.labels, w, fgbg::anchor_losses(w)),
                    Catch::Contains("anchor_losses must not share memory with the weights"));
  CHECK_THROWS_WITH(
      focal.value_and_grad(p.logits, p.labels, g,
                           fgbg::anchor_losses(Eigen::Map<Eigen::ArrayXf>(g.data() + 30, 40))),
      Catch::Contains("anchor_losses must not share memory with the grad"));
  CHECK((g == 5.f).all());
  CHECK((x == p.logits).all());
  CHECK((w == p.weights).all());
  // Disjoint column blocks of one buffer are fine: gradient in columns 0..2, losses in 3..5.
  fgbg::RowArray<float> both = fgbg::RowArray<float>::Zero(40, 6);
  fgbg::RowArray<float> g_ref, e_ref;
  const double v_ref = focal.value_and_grad(p.logits, p.labels, g_ref, fgbg::element_losses(e_ref));
  CHECK(focal.value_and_grad(p.logits, p.labels, both.leftCols(3),
                             fgbg::element_losses(both.rightCols(3))) == v_ref);
  CHECK((both.leftCols(3) == g_ref).all());
  CHECK((both.rightCols(3) == e_ref).all());
  // Any other bad input leaves the outputs untouched too (here: a label out of range).
  fgbg::LabelVector bad = p.labels;
  bad[7] = 4;
  fgbg::RowArray<float> e = fgbg::RowArray<float>::Constant(40, 3, 5.f);
  CHECK_THROWS_AS(focal.value(p.logits, bad, fgbg::element_losses(e)), std::invalid_argument);
  CHECK((e == 5.f).all());
  // Softmax: the shape check.
  o.softmax = true;
  const auto ps = fgbg_test::random_problem<float>(17, o);
  Eigen::ArrayXf as = Eigen::ArrayXf::Constant(39, 5.f);
  Eigen::Map<Eigen::ArrayXf> as_view(as.data(), 39);
  CHECK_THROWS_WITH(fgbg::SoftmaxCrossEntropyLoss<float>().value(ps.logits, ps.labels,
                                                                 fgbg::anchor_losses(as_view)),
                    Catch::Contains("anchor_losses must have 40 entries, got 39"));
  CHECK((as == 5.f).all());
}
