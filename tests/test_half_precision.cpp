// Half-precision logits (Eigen::half, Eigen::bfloat16), what a mixed-precision training step
// hands over: read and written in that type, computed in float. For every dense loss of the
// contract suite (support/contract.hpp) a call with half-precision logits and gradient must give
// exactly what the float call gives on the same (widened) logits: the same value bits, and the
// float gradient rounded once to the half type.
#include <catch2/catch.hpp>

#include "support/contract.hpp"

using namespace fgbg_test::contract;
using fgbg_test::ProblemOptions;

namespace {

template <typename H, typename F>
void check_half(const F& f, const Case<float>& c0) {
  using Half = RowArray<H>;
  Case<float> c = c0;
  const Half xh = c.p.logits.template cast<H>();
  c.p.logits = xh.template cast<float>();  // the float call sees exactly the half values
  auto a_half = f.make_aux(c), a_float = f.make_aux(c);
  Half gh = Half::Constant(c.p.rows(), c.p.cols(), H(7.25f));
  RowArray<float> gf(c.p.rows(), c.p.cols());
  const Values vh = f.grad(c, xh, gh, a_half);
  const Values vf = f.grad(c, c.p.logits, gf, a_float);
  INFO("half " << vh << ", float " << vf);
  CHECK(same(vh, vf));
  CHECK(same_array(gh, Half(gf.template cast<H>())));
  if constexpr (std::is_same<F, EflFixture<float>>::value) {
    // EFL accumulates its statistics from the gradient as written, rounded to H (what the
    // reference's backward hook sees in a mixed-precision step): sums of |g| of one sign, so
    // within H's relative rounding of the float statistics.
    const double tol = std::is_same<H, Eigen::bfloat16>::value ? 0x1p-8 : 0x1p-11;
    const auto &ph = a_half.state.pos_grad(), &pf = a_float.state.pos_grad();
    const auto &nh = a_half.state.neg_grad(), &nf = a_float.state.neg_grad();
    CHECK(((ph - pf).abs() <= tol * pf.abs()).all());
    CHECK(((nh - nf).abs() <= tol * nf.abs()).all());
    CHECK(a_half.state.updates() == a_float.state.updates());
  } else {
    CHECK(F::same(a_half, a_float));
  }
  // value() with the same state: the same bits.
  CHECK(same(f.value(c, xh, a_float), f.value(c, c.p.logits, a_float)));
}

}  // namespace

/// Every loss of the contract suite but the guided loss (its gradient is not the float one
/// rounded: below). The ranking losses read the half logits as double and round their double
/// update to float and then to half, which is the float call's update rounded.
using DenseFixtures =
    std::tuple<BceFixture<float>, FocalFixture<float>, FocalStarFixture<float>,
               SoftmaxCeFixture<float>, SoftmaxFocalFixture<float>, QflFixture<float>,
               SoftBceFixture<float>, VflFixture<float>, DenseFocalFixture<float>,
               DenseBceFixture<float>, EflFixture<float>, GhmcFixture<float>, DrFixture<float>,
               ResObjClassFixture<float>, ResObjStageFixture<float>, CarlFixture<float, false>,
               CarlFixture<float, true>, ApFixture<float>, AlrpFixture<float>, RsFixture<float>>;

TEMPLATE_LIST_TEST_CASE("half precision: half and bfloat16 logits give the float results", "[half]",
                        DenseFixtures) {
  using F = TestType;
  for (int v = 0; v < F::kVariants; ++v) {
    const F f(v);
    INFO(F::kName << " variant " << v);
    Case<float> c = make_case<float>(11, options_for<F>(300, 7), false);
    check_half<Eigen::half>(f, c);
    check_half<Eigen::bfloat16>(f, c);
  }
}

TEMPLATE_LIST_TEST_CASE("half precision: saturated and tiny half logits stay finite",
                        "[half][edge]", DenseFixtures) {
  // The fp16 failures of other implementations: log(max(p, FLT_MIN)) with FLT_MIN flushed to 0
  // in half (NaN / -inf focal loss from |x| ≈ 9.4, mmcv#1488), σ(x) rounding to 0 or 1, and
  // the largest half logits. Here every value is computed in float from the half logits, so the
  // results are the float results: finite, and the gradient rounded once to half.
  using F = TestType;
  const float extremes[] = {65504.f, -65504.f, 9.4f, -9.4f, 17.f,    -17.f, 11.1f,
                            -11.1f,  0.f,      -0.f, 1e-4f, -1e-4f,  6e-8f, -6e-8f,
                            30.f,    -30.f,    1e4f, -1e4f, -4.595f, 2.5f};
  for (int v = 0; v < F::kVariants; ++v) {
    const F f(v);
    INFO(F::kName << " variant " << v);
    Case<float> c = make_case<float>(12, options_for<F>(120, 5), false);
    for (Index i = 0; i < c.p.logits.size(); ++i)
      c.p.logits.data()[i] = extremes[(i * 7) % (sizeof extremes / sizeof extremes[0])];
    check_half<Eigen::half>(f, c);
    check_half<Eigen::bfloat16>(f, c);
    RowArray<Eigen::half> xh = c.p.logits.template cast<Eigen::half>(), gh(xh.rows(), xh.cols());
    auto a = f.make_aux(c);
    const Values r = f.grad(c, xh, gh, a);
    for (int k = 0; k < r.n; ++k) CHECK(std::isfinite(r.v[k]));
    CHECK(gh.template cast<float>().isFinite().all());
  }
}

TEST_CASE("half precision: non-finite half logits are refused, nothing written", "[half][errors]") {
  const fgbg::SigmoidFocalLoss<float> focal;
  RowArray<Eigen::half> x = RowArray<Eigen::half>::Constant(4, 3, Eigen::half(-2.f));
  fgbg::LabelVector y(4);
  y << 1, 0, 3, -1;
  RowArray<Eigen::half> g = RowArray<Eigen::half>::Constant(4, 3, Eigen::half(7.25f));
  x(2, 1) = Eigen::half(std::numeric_limits<float>::infinity());
  CHECK_THROWS_WITH(focal.value_and_grad(x, y, g), Catch::StartsWith("fgbg::SigmoidFocalLoss") &&
                                                       Catch::Contains("logits(2, 1) is inf"));
  x(2, 1) = Eigen::half(std::nanf(""));
  CHECK_THROWS_AS(focal.value_and_grad(x, y, g), std::domain_error);
  CHECK((g.template cast<float>() == 7.25f).all());
  // A float gradient for half logits (and the other way round) is fine too.
  x(2, 1) = Eigen::half(0.5f);
  RowArray<float> gf;
  const float v = focal.value_and_grad(x, y, gf);
  const RowArray<float> xf = x.template cast<float>();
  RowArray<float> gf2;
  CHECK(v == focal.value_and_grad(xf, y, gf2));
  CHECK((gf == gf2).all());
}

namespace {

/// One half ulp of the rounded value v (and the smallest subnormal step below the normal range).
template <typename H>
float half_ulp(float v) {
  const bool bf = std::is_same<H, Eigen::bfloat16>::value;
  const float min_normal = bf ? 1.17549435e-38f : 6.10351562e-05f;
  const float step = bf ? 0x1p-7f : 0x1p-10f;
  const float a = std::max(std::abs(v), min_normal);
  return std::ldexp(step, std::ilogb(a));
}

template <typename H>
void check_guided_half(const GuidedFixture<float>& f, const Case<float>& c0) {
  using Half = RowArray<H>;
  Case<float> c = c0;
  const Half xh = c.p.logits.template cast<H>();
  c.p.logits = xh.template cast<float>();
  NoAux a;
  Half gh = Half::Constant(c.p.rows(), c.p.cols(), H(7.25f));
  RowArray<float> gf(c.p.rows(), c.p.cols());
  const Values vh = f.grad(c, xh, gh, a);
  const Values vf = f.grad(c, c.p.logits, gf, a);
  INFO("half " << vh << ", float " << vf);
  CHECK(same(vh, vf));
  CHECK(same(f.value(c, xh, a), vf));
  // Rounded once from the float computation: within one half ulp of the float gradient.
  int worst = 0;
  for (Index i = 0; i < gf.size(); ++i) {
    const float h = static_cast<float>(gh.data()[i]), g = gf.data()[i];
    if (!(std::abs(h - g) <= half_ulp<H>(g))) ++worst;
    if (g == 0.0f && h != 0.0f) ++worst;
  }
  CHECK(worst == 0);
}

}  // namespace

TEST_CASE("half precision: the guided loss writes its gradient in half, rounded once",
          "[half][guided]") {
  for (int v = 0; v < GuidedFixture<float>::kVariants; ++v) {
    const GuidedFixture<float> f(v);
    INFO("variant " << v);
    for (int seed : {11, 12, 13}) {
      Case<float> c = make_case<float>(seed, options_for<GuidedFixture<float>>(300, 7), false);
      check_guided_half<Eigen::half>(f, c);
      check_guided_half<Eigen::bfloat16>(f, c);
    }
  }
  // The exact gradient is s·L_reg·∂S/∂x / S: with a mean normaliser (L_cls ≪ L_reg) the
  // wrapped loss's own half gradient would underflow to 0 before the guided scale; here it is
  // the float result rounded to half.
  const fgbg::GuidedLoss<fgbg::SigmoidCrossEntropyLoss<float>> guided;
  RowArray<float> x = RowArray<float>::Constant(400, 80, -9.0f);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(400);
  y[3] = 5;
  const RowArray<Eigen::half> xh = x.template cast<Eigen::half>();
  RowArray<Eigen::half> gh(400, 80);
  RowArray<float> gf(400, 80);
  const auto mean = fgbg::Normalizer::mean();
  const auto rh = guided.value_and_grad(xh, y, 2.0, gh, {}, mean);
  const auto rf = guided.value_and_grad(x, y, 2.0, gf, {}, mean);
  CHECK(rh.value == rf.value);
  CHECK(rh.cls_loss == rf.cls_loss);
  CHECK(gf(0, 0) > 1e-5f);  // the inner mean-normalised gradient, σ(−9)/32000 ≈ 3.9e-9, is not
  CHECK(std::abs(static_cast<float>(gh(0, 0)) - gf(0, 0)) <= half_ulp<Eigen::half>(gf(0, 0)));
  // A bad gradient view throws before anything is written, after the value passes.
  RowArray<Eigen::half> big = RowArray<Eigen::half>::Constant(401, 80, Eigen::half(7.25f));
  CHECK_THROWS_AS(guided.value_and_grad(xh, y, 2.0, big.topRows(399)), std::invalid_argument);
  CHECK((big.template cast<float>() == 7.25f).all());
  // s·L_reg beyond half's range: the gradient would not be representable.
  CHECK_THROWS_WITH(guided.value_and_grad(xh, y, 7e4, gh),
                    Catch::Contains("classification_scale * reg_loss must be <= 65504"));
}
