// The contract suite: what every classification loss of fgbg promises, checked on every loss
// (the fixtures of support/contract.hpp), in float and double:
//   - N = 0 and all-ignored calls give the empty value and a zero gradient;
//   - a call without positives is finite (and 0 for the losses defined as 0 there, and for
//     losses normalised by max(1, #positives) equal to the sum);
//   - every bad input (labels, shapes, NaN / inf logits, weights, normaliser, aliasing outputs,
//     the loss's own side inputs and state) throws the documented exception with its message
//     and leaves the gradient, the side outputs and the state bit for bit as they were;
//   - row-major, column-major, strided Maps (inner and outer strides, every alignment) and
//     blocks give bit-identical values, gradients, side outputs and states;
//   - value() returns the value of value_and_grad() bit for bit, and leaves the state alone;
//   - steady-state calls allocate nothing.
// (The 1-thread / 2-thread check runs the same fixtures in test_threads, built with OpenMP.)
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <catch2/catch.hpp>

#include "support/contract.hpp"

using namespace fgbg_test::contract;
using fgbg_test::ProblemOptions;

namespace {

template <typename S>
constexpr S kSentinel = S(7.25);

template <typename S>
bool all_sentinel(const RowArray<S>& g) {
  for (Index k = 0; k < g.size(); ++k)
    if (!same_bits_s<S>(g.data()[k], kSentinel<S>)) return false;
  return true;
}

template <typename F>
std::string describe(int variant, bool weights) {
  return std::string(F::kName) + " (" +
         (std::is_same<typename F::Scalar, float>::value ? "float" : "double") + ", variant " +
         std::to_string(variant) + (weights ? ", weights" : "") + ")";
}

/// The weight modes a fixture is called with: none, and per-anchor weights if it takes them.
template <typename F>
std::vector<bool> weight_modes() {
  if (F::kWeights) return {false, true};
  return {false};
}

/// Index of the first positive row (its label column is read by every loss), or 0.
template <typename S>
Index first_positive(const Case<S>& c) {
  for (Index i = 0; i < c.p.rows(); ++i)
    if (c.p.labels[i] > 0) return i;
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("contract: value() equals value_and_grad() and leaves the state alone",
                        "[contract][value]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v)
    for (bool w : weight_modes<F>()) {
      const F f(v);
      for (std::uint64_t seed : {1u, 2u}) {
        Case<S> c = make_case<S>(seed, options_for<F>(97, 7), w);
        std::vector<std::optional<fgbg::Normalizer>> norms = {std::nullopt};
        if (F::kNormalizer) norms.push_back(fgbg::Normalizer::avg_factor(3.5));
        for (const auto& norm : norms) {
          c.norm = norm;
          INFO(describe<F>(v, w) << " seed " << seed << (norm ? " avg_factor 3.5" : ""));
          auto a = f.make_aux(c);
          const auto before = a;
          const Values u = f.value(c, c.p.logits, a);
          CHECK(F::same(a, before));  // value() never updates the state
          RowArray<S> g(c.p.rows(), c.p.cols());
          const Values vg = f.grad(c, c.p.logits, g, a);
          INFO("value() " << u << ", value_and_grad() " << vg);
          CHECK(same(u, vg));
          CHECK(std::isfinite(vg.v[0]));
          CHECK(g.isFinite().all());
        }
      }
    }
}

TEMPLATE_LIST_TEST_CASE("contract: N = 0 gives the empty value", "[contract][edge]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v)
    for (bool w : weight_modes<F>()) {
      const F f(v);
      Case<S> c = make_case<S>(3, options_for<F>(0, 80), w);
      INFO(describe<F>(v, w));
      REQUIRE(c.p.rows() == 0);
      auto a = f.make_aux(c);
      RowArray<S> g(0, c.p.cols());
      const Values u = f.value(c, c.p.logits, a);
      const Values vg = f.grad(c, c.p.logits, g, a);
      INFO("value_and_grad() " << vg << ", value() " << u);
      CHECK(same(u, vg));
      const double e = empty_value(f, c);
      for (int k = 0; k < vg.n; ++k) CHECK(vg.v[k] == (k == 0 ? e : e == 0 ? 0.0 : vg.v[k]));
      CHECK(g.rows() == 0);
      CHECK(g.cols() == c.p.cols());
    }
}

TEMPLATE_LIST_TEST_CASE("contract: all ignored gives the empty value and a zero gradient",
                        "[contract][edge]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v)
    for (bool w : weight_modes<F>()) {
      const F f(v);
      Case<S> c = make_case<S>(4, options_for<F>(9, 3), w);
      c.p.labels.setConstant(fgbg::kIgnore);
      // Ignored rows' side inputs are never read: make them invalid.
      c.p.quality.setConstant(S(7));
      c.p.reg_loss.setConstant(S(-1));
      INFO(describe<F>(v, w));
      if (trains_ignored(f)) continue;  // label −1 trained as background: not empty
      auto a = f.make_aux(c);
      RowArray<S> g = RowArray<S>::Constant(c.p.rows(), c.p.cols(), kSentinel<S>);
      F::fill(a, kSentinel<S>);
      const Values u = f.value(c, c.p.logits, a);
      const Values vg = f.grad(c, c.p.logits, g, a);
      INFO("value_and_grad() " << vg << ", value() " << u);
      CHECK(same(u, vg));
      const double e = empty_value(f, c);
      CHECK(vg.v[0] == e);
      for (int k = 1; k < vg.n; ++k) CHECK(vg.v[k] == (e == 0 ? 0.0 : vg.v[k]));
      CHECK((g == S(0)).all());
      CHECK(F::zero(a));
    }
}

TEMPLATE_LIST_TEST_CASE("contract: no positives", "[contract][edge]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v)
    for (bool w : weight_modes<F>()) {
      const F f(v);
      ProblemOptions o = options_for<F>(40, 4);
      o.positive_fraction = 0;
      o.at_least_one_positive = false;
      Case<S> c = make_case<S>(5, o, w);
      REQUIRE(c.p.positives() == 0);
      c.p.quality.setConstant(S(7));  // unread without positives
      c.p.reg_loss.setConstant(S(-1));
      INFO(describe<F>(v, w));
      auto a = f.make_aux(c);
      RowArray<S> g = RowArray<S>::Constant(c.p.rows(), c.p.cols(), kSentinel<S>);
      F::fill(a, kSentinel<S>);
      const Values u = f.value(c, c.p.logits, a);
      const Values vg = f.grad(c, c.p.logits, g, a);
      INFO("value_and_grad() " << vg << ", value() " << u);
      CHECK(same(u, vg));
      for (int k = 0; k < vg.n; ++k) CHECK(std::isfinite(vg.v[k]));
      CHECK(g.isFinite().all());
      if constexpr (F::kZeroWithoutPositives) {
        for (int k = 0; k < vg.n; ++k) CHECK(vg.v[k] == 0.0);
        CHECK((g == S(0)).all());
        CHECK(F::zero(a));
      }
      if constexpr (F::kNormalizer && !std::is_same<F, GuidedFixture<S>>::value) {
        // Normalised by max(1, #positives) = 1: the sum.
        if (f.loss.config().normalizer.reduction == fgbg::Reduction::num_positives) {
          Case<S> cs = c;
          cs.norm = fgbg::Normalizer::sum();
          auto as = f.make_aux(cs);
          CHECK(same(f.value(cs, cs.p.logits, as), u));
        }
      }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad inputs: each one throws the documented exception and writes nothing.

namespace {

template <typename F>
using Bad = BadInput<typename F::Scalar, typename F::Aux>;

/// The bad inputs every loss rejects (those it has: weights, normaliser), then its own.
template <typename F>
std::vector<Bad<F>> all_bad_inputs(const F& f) {
  using S = typename F::Scalar;
  using Aux = typename F::Aux;
  std::vector<Bad<F>> v;
  auto grad = [&f](Case<S>& c, RowArray<S>& g, Aux& a) { f.grad(c, c.p.logits, g, a); };
  auto value = [&f](Case<S>& c, RowArray<S>&, Aux& a) { f.value(c, c.p.logits, a); };
  auto label = [](Index row, fgbg::Label l) {
    return [row, l](Case<S>& c, Aux&) { c.p.labels[row] = l; };
  };
  auto logit = [](double x) {
    return [x](Case<S>& c, Aux&) {
      const Index i = first_positive(c);
      const fgbg::Label y = c.p.labels[i];
      c.p.logits(i, F::kSoftmax ? y : y - 1) = static_cast<S>(x);
    };
  };
  const double inf = std::numeric_limits<double>::infinity();
  // The suite's bad-input cases have C = 5 classes (4 for the stage-logit fixture).
  const Index C = std::is_same<F, ResObjStageFixture<S>>::value ? 4 : 5;
  const std::string outside = "labels(1) = " + std::to_string(C + 1) + " is outside -1.." +
                              std::to_string(C) + " (-1 ignore, 0 background, 1..C class)";
  v.push_back({"label C+1", grad, false, outside, label(1, static_cast<fgbg::Label>(C + 1))});
  v.push_back({"label -2", grad, false, "is outside -1..", label(2, -2)});
  v.push_back(
      {"value(): label C+1", value, false, outside, label(1, static_cast<fgbg::Label>(C + 1))});
  v.push_back({"labels of the wrong length",
               [&f](Case<S>& c, RowArray<S>& g, Aux& a) {
                 Case<S> c2 = c;
                 c2.p.labels.conservativeResize(c.p.rows() + 1);
                 c2.p.labels[c.p.rows()] = 0;
                 f.grad(c2, c.p.logits, g, a);
               },
               false, "labels must be a vector of 23 entries, got 24 x 1"});
  // Row 0 is the first positive of the suite's bad-input case; its label column is read.
  const std::string at = "logits(0, " + std::to_string(F::kSoftmax ? 1 : 0) + ") is ";
  v.push_back({"NaN logit", grad, true, at + "nan", logit(std::nan(""))});
  v.push_back({"+inf logit", grad, true, at + "inf", logit(inf)});
  v.push_back({"-inf logit", grad, true, at + "-inf", logit(-inf)});
  v.push_back({"value(): NaN logit", value, true, at + "nan", logit(std::nan(""))});
  v.push_back({"value(): +inf logit", value, true, at + "inf", logit(inf)});
  const std::string k = std::to_string(F::kSoftmax                                     ? 6
                                       : std::is_same<F, ResObjStageFixture<S>>::value ? 2
                                                                                       : 5);
  v.push_back({"gradient view of the wrong shape",
               [&f](Case<S>& c, RowArray<S>& g, Aux& a) {
                 f.grad(c, c.p.logits, g.topRows(c.p.rows() - 1), a);
               },
               false, "must be 23 x " + k + ", got 22 x " + k});
  v.push_back({"gradient view with a column too many",
               [&f](Case<S>& c, RowArray<S>&, Aux& a) {
                 RowArray<S> big = RowArray<S>::Constant(c.p.rows(), c.p.cols() + 1, kSentinel<S>);
                 try {
                   f.grad(c, c.p.logits, big.block(0, 0, c.p.rows(), c.p.cols() + 1), a);
                 } catch (...) {
                   if (!all_sentinel(big)) throw std::logic_error("wrong-shape view written");
                   throw;
                 }
               },
               false, "must be 23 x " + k + ", got 23 x "});
  if (F::kExactAlias)
    v.push_back({"gradient = the logits",
                 [&f](Case<S>& c, RowArray<S>&, Aux& a) {
                   const RowArray<S> x0 = c.p.logits;
                   try {
                     f.grad(c, c.p.logits, c.p.logits, a);
                   } catch (...) {
                     if (!same_array(x0, c.p.logits)) throw std::logic_error("logits written");
                     throw;
                   }
                 },
                 false, "must not share memory with"});
  v.push_back({"gradient overlapping the logits, shifted by one column",
               [&f](Case<S>& c, RowArray<S>&, Aux& a) {
                 const Index n = c.p.rows(), k = c.p.cols();
                 RowArray<S> buf(n, k + 1);
                 buf.leftCols(k) = c.p.logits;
                 buf.col(k).setConstant(kSentinel<S>);
                 const RowArray<S> b0 = buf;
                 try {
                   f.grad(c, buf.leftCols(k), buf.rightCols(k), a);
                 } catch (...) {
                   if (!same_array(b0, buf)) throw std::logic_error("logits written");
                   throw;
                 }
               },
               false, "must not share memory"});
  if (F::kWeights) {
    auto weight = [](double x) {
      return [x](Case<S>& c, Aux&) {
        c.use_weights = true;
        c.weights[1] = static_cast<S>(x);
      };
    };
    v.push_back({"negative weight", grad, false, "is negative", weight(-1)});
    v.push_back({"NaN weight", grad, true, "is nan", weight(std::nan(""))});
    v.push_back({"inf weight", grad, true, "is inf", weight(inf)});
    v.push_back({"value(): negative weight", value, false, "is negative", weight(-1)});
    v.push_back(
        {"weights of the wrong length", grad, false, "weights must be", [](Case<S>& c, Aux&) {
           c.use_weights = true;
           c.weights.conservativeResize(c.p.rows() - 1);
         }});
  }
  if (F::kNormalizer) {
    auto norm = [](double a) {
      return [a](Case<S>& c, Aux&) { c.norm = fgbg::Normalizer::avg_factor(a); };
    };
    v.push_back({"avg_factor 0", grad, false, "avg_factor must be finite and > 0, got 0", norm(0)});
    v.push_back({"avg_factor -2", grad, false, "avg_factor must be finite and > 0", norm(-2)});
    v.push_back({"avg_factor NaN", grad, false, "avg_factor must be finite", norm(std::nan(""))});
    v.push_back({"value(): avg_factor 0", value, false, "avg_factor", norm(0)});
  }
  for (auto& b : f.bad_inputs()) v.push_back(b);
  return v;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("contract: bad inputs throw and leave outputs and state untouched",
                        "[contract][errors]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v) {
    const F f(v);
    for (const auto& bad : all_bad_inputs(f)) {
      Case<S> c = make_case<S>(6, options_for<F>(23, 5), false);
      c.p.labels[0] = 1;  // a positive of class 1 in row 0, a background row 1, an ignored row 2
      c.p.labels[1] = 0;
      c.p.labels[2] = -1;
      auto a = f.make_aux(c);
      if (bad.prepare) bad.prepare(c, a);
      RowArray<S> g = RowArray<S>::Constant(c.p.rows(), c.p.cols(), kSentinel<S>);
      F::fill(a, kSentinel<S>);
      const auto before = a;
      INFO(describe<F>(v, false) << ": " << bad.what);
      bool threw = false;
      try {
        bad.call(c, g, a);
      } catch (const std::domain_error& e) {
        threw = true;
        INFO("std::domain_error: " << e.what());
        CHECK(bad.domain);
        CHECK_THAT(e.what(), Catch::StartsWith("fgbg::") && Catch::Contains(bad.message));
      } catch (const std::invalid_argument& e) {
        threw = true;
        INFO("std::invalid_argument: " << e.what());
        CHECK(!bad.domain);
        CHECK_THAT(e.what(), Catch::StartsWith("fgbg::") && Catch::Contains(bad.message));
      } catch (const std::exception& e) {
        threw = true;
        FAIL_CHECK("unexpected exception: " << e.what());
      }
      CHECK(threw);
      CHECK(all_sentinel(g));
      CHECK(F::same(a, before));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layouts: the same data in every kind of storage gives the same bits.

namespace {

template <typename S>
constexpr S kMax = std::numeric_limits<S>::max();

/// Runs `call(x, g)` (the loss on logits x, gradient into g; returns Values and the aux after
/// the call) for x and g in every layout, and compares with the row-major reference bit for bit.
template <typename F, typename Call>
void check_layouts(const RowArray<typename F::Scalar>& x0, Call&& call) {
  using S = typename F::Scalar;
  const Index n = x0.rows(), c = x0.cols();
  RowArray<S> gref(n, c);
  const auto [vref, aref] = call(x0, gref);
  auto compare = [&, &vref = vref, &aref = aref](const auto& result, const auto& g,
                                                 const char* what, int off) {
    INFO(what << " offset " << off << ": " << result.first << " vs " << vref);
    CHECK(same(result.first, vref));
    CHECK(same_array(g, gref));
    CHECK(F::same(result.second, aref));
  };
  using RowMap = Eigen::Map<RowArray<S>>;
  using ColArr = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
  using ColMap = Eigen::Map<ColArr>;
  for (int off = 0; off < 8; ++off) {
    for (int goff = 0; goff < 8; goff += 3) {
      std::vector<S> xb(static_cast<size_t>(n * c + 16)),
          gb(static_cast<size_t>(n * c + 16), kSentinel<S>);
      RowMap x(xb.data() + off, n, c);
      x = x0;
      RowMap g(gb.data() + (off + goff) % 8, n, c);
      compare(call(x, g), g, "row-major Map", off);
      ColMap xc(xb.data() + off, n, c);
      xc = x0;
      ColMap gc(gb.data() + (off + goff) % 8, n, c);
      compare(call(xc, gc), gc, "column-major Map", off);
    }
  }
  {
    ColArr xc = x0, gc(n, c);
    compare(call(xc, gc), gc, "column-major array", 0);
  }
  {
    std::vector<S> xb(static_cast<size_t>(n * (c + 3) + 8)),
        gb(static_cast<size_t>(n * (c + 5) + 8), kSentinel<S>);
    using Strided = Eigen::Map<RowArray<S>, 0, Eigen::OuterStride<>>;
    Strided x(xb.data() + 1, n, c, Eigen::OuterStride<>(c + 3));
    x = x0;
    Strided g(gb.data() + 3, n, c, Eigen::OuterStride<>(c + 5));
    compare(call(x, g), g, "outer-strided Map", 1);
    for (Index i = 0; i < n; ++i)  // the padding of the strided gradient is not written
      for (Index k = c; k < c + 5 && 3 + i * (c + 5) + k < Index(gb.size()); ++k)
        CHECK(same_bits_s<S>(gb[static_cast<size_t>(3 + i * (c + 5) + k)], kSentinel<S>));
    std::vector<S> xb2(static_cast<size_t>(2 * n * c + 8)),
        gb2(static_cast<size_t>(2 * n * c + 8), kSentinel<S>);
    using Inner = Eigen::Map<RowArray<S>, 0, Eigen::Stride<Eigen::Dynamic, 2>>;
    Inner x2(xb2.data() + 1, n, c, Eigen::Stride<Eigen::Dynamic, 2>(2 * c, 2));
    x2 = x0;
    Inner g2(gb2.data(), n, c, Eigen::Stride<Eigen::Dynamic, 2>(2 * c, 2));
    compare(call(x2, g2), g2, "inner-strided Map", 2);
    for (Index k = 1; k < 2 * n * c; k += 2) CHECK(same_bits_s<S>(gb2[size_t(k)], kSentinel<S>));
  }
  {
    RowArray<S> xbig = RowArray<S>::Zero(n + 3, c + 5);
    RowArray<S> gbig = RowArray<S>::Constant(n + 2, c + 3, kSentinel<S>);
    xbig.block(1, 3, n, c) = x0;
    auto gblk = gbig.block(2, 1, n, c);
    compare(call(xbig.block(1, 3, n, c), gblk), gblk, "block", 0);
    RowArray<S> outside = gbig;
    outside.block(2, 1, n, c).setConstant(kSentinel<S>);
    CHECK(all_sentinel(outside));
  }
  {
    const Eigen::Map<const RowArray<S>> xm(x0.data(), n, c);
    RowArray<S> g(n, c);
    compare(call(xm, g), g, "Map of const", 0);
  }
  {
    RowArray<S> g(n, c);
    compare(call(x0 * S(1), g), g, "expression", 0);
  }
  {
    RowArray<S> both(n, 2 * c);  // logits and gradient in disjoint blocks of one buffer
    both.leftCols(c) = x0;
    both.rightCols(c).setConstant(kSentinel<S>);
    auto g = both.rightCols(c);
    compare(call(both.leftCols(c), g), g, "disjoint blocks of one buffer", 0);
    CHECK(same_array(both.leftCols(c), x0));
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("contract: every layout, stride and alignment gives the same bits",
                        "[contract][layout]", FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  // One tile (29 x 13), several tiles whose size is not a multiple of the tile (157 x 37), and
  // logits on a grid of 1/4 (tied scores, which the ranking losses order by their own rules).
  for (const auto& [n, classes, ties] :
       {std::tuple<Index, Index, bool>{29, 13, false}, {157, 37, false}, {31, 6, true}})
    for (int v = 0; v < F::kVariants; ++v)
      for (bool w : weight_modes<F>()) {
        const F f(v);
        Case<S> c = make_case<S>(7, options_for<F>(n, classes), w);
        if (ties) c.p.logits = (c.p.logits * S(4)).round() / S(4);
        c.p.labels[0] = 1;
        c.p.labels[1] = 0;
        c.p.labels[2] = static_cast<fgbg::Label>(std::min<Index>(3, label_classes<F>(c)));
        // Extreme logits where every loss must stay exact (huge, and a saturated positive).
        c.p.logits(0, 0) = kMax<S> / 4;
        c.p.logits(1, 1) = -kMax<S> / 4;
        c.p.logits(2, std::min<Index>(2, c.p.cols() - 1)) = S(40);
        c.weights[3] = 0;  // a zero weight, and a large one
        c.weights[4] = S(9.9);
        c.p.quality[0] = 0;  // a positive of quality 0 (VFL clamps it, RS makes it a negative)
        INFO(describe<F>(v, w) << ", " << n << " x " << classes << (ties ? ", tied" : ""));
        const auto warm = f.make_aux(c);
        check_layouts<F>(c.p.logits, [&](const auto& x, auto&& g) {
          auto a = warm;
          const Values r = f.grad(c, x, g, a);
          return std::make_pair(r, a);
        });
      }
}

// ---------------------------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("contract: steady-state calls allocate nothing", "[contract][alloc]",
                        FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  for (int v = 0; v < F::kVariants; ++v) {
    const F f(v);
    Case<S> c = make_case<S>(8, options_for<F>(1500, 40), F::kWeights);
    INFO(describe<F>(v, F::kWeights));
    auto a = f.make_aux(c);
    RowArray<S> g(c.p.rows(), c.p.cols());
    Case<S> unweighted = c;
    unweighted.use_weights = false;
    f.grad(c, c.p.logits, g, a);  // warm-up: workspaces grow to this problem
    f.value(c, c.p.logits, a);
    long count = 0;
    double sink = 0;
    {
      fgbg_test::NoAllocScope guard;
      for (int r = 0; r < 2; ++r) {
        sink += f.grad(c, c.p.logits, g, a).v[0];
        sink += f.grad(unweighted, c.p.logits, g, a).v[0];
        sink += f.value(c, c.p.logits, a).v[0];
      }
      count = guard.count();
    }
    CHECK(count == 0);
    CHECK(std::isfinite(sink));
  }
}

// The guard of the test above must see what it is meant to catch, however the test executable
// is built (with or without the shared precompiled header of tests/CMakeLists.txt).
TEST_CASE("contract: the allocation guard sees Eigen and operator new allocations",
          "[contract][alloc]") {
  fgbg_test::NoAllocScope guard;
  CHECK_THROWS(RowArray<double>(64, 64));  // Eigen's runtime no-malloc check throws
#if FGBG_TEST_COUNT_NEW
  auto* p = new std::vector<int>(100);
  const long count = guard.count();
  delete p;
  CHECK(count >= 2);  // the vector object and its buffer
#endif
}
