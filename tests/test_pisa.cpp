// PISA: ISR-P, CARL and the Score-HLR sampler (ISR-N) against the reference vectors and the
// spec's hand-checked examples (§11.5–§11.7), central differences, edge cases, errors and
// allocation.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>
#include <fgbg/soft_sampling/isr_p.hpp>
#include <limits>
#include <random>

#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename S>
using Vec = Eigen::Array<S, Eigen::Dynamic, 1>;

Eigen::ArrayXi ints(const json& v) {
  Eigen::ArrayXi out(static_cast<Index>(v.size()));
  for (Index i = 0; i < out.size(); ++i) out[i] = v[i].get<int>();
  return out;
}

// ---------------------------------------------------------------- ISR-P helpers
struct IsrInputs {
  fgbg::LabelVector labels;
  Eigen::ArrayXi gt;
  Eigen::ArrayXd iou, loss, lw;
};

// §11.5: one image, class 0 → label 1 (GTs A = 0, B = 1), class 1 → label 2 (GT C = 2), plus a
// background and an ignored anchor.
IsrInputs spec_isr_example() {
  IsrInputs in;
  in.labels.resize(8);
  in.labels << 1, 1, 1, 1, 1, 2, 0, -1;
  in.gt.resize(8);
  in.gt << 0, 0, 0, 1, 1, 2, -1, -1;
  in.iou.resize(8);
  in.iou << 0.9, 0.7, 0.6, 0.8, 0.5, 0.75, 0, 0;
  in.loss.resize(8);
  in.loss << 0.2, 0.5, 0.9, 0.3, 1.2, 0.4, 0, 0;
  in.lw = Eigen::ArrayXd::Ones(8);
  return in;
}

}  // namespace

// ================================================================= ISR-P

TEMPLATE_TEST_CASE("ISR-P matches the reference vectors", "[isr_p][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("isr_p.json");
  fgbg::IsrPWorkspace ws;
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index k = c["num_classes"];
      const fgbg::IsrP<S> isr({c["params"]["k"].get<S>(), c["params"]["bias"].get<S>()});
      const auto y = labels(c["labels"]);
      const Eigen::ArrayXi gt = ints(c["gt_index"]);
      const Vec<S> iou = vector<S>(c["iou"]), loss = vector<S>(c["cls_loss"]),
                   lw = vector<S>(c["label_weights"]);
      Vec<S> w;
      isr.weights(y, gt, iou, loss, lw, k, w, ws);
      check_array<S>("weights", w, c["expected"]["weights"]);
      // The loss-preserving property.
      double before = 0, after = 0;
      for (Index i = 0; i < y.size(); ++i)
        if (y[i] > 0) {
          before += double(loss[i]) * double(lw[i]);
          after += double(loss[i]) * double(w[i]);
        }
      CHECK(after == Approx(before).epsilon(std::is_same<S, float>::value ? 1e-5 : 1e-12));
    }
  }
}

TEST_CASE("ISR-P: hand-checked example", "[isr_p][spec]") {
  const IsrInputs in = spec_isr_example();
  const fgbg::IsrP<double> isr;
  Eigen::ArrayXd w;
  fgbg::IsrPWorkspace ws;
  const fgbg::IsrPResult r = isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws);
  CHECK(r.positives == 6);
  CHECK(r.max_class_positives == 5);
  CHECK(r.ratio == Approx(3.5 / 1.2).epsilon(1e-12));
  CHECK_FALSE(r.guarded);
  const double expected[] = {2.9166666667, 1.05,         0.1166666667, 1.8666666667,
                             0.4666666667, 2.9166666667, 1.0,          0.0};
  for (Index i = 0; i < 8; ++i) CHECK(w[i] == Approx(expected[i]).margin(1e-9));
  // Class-0 global ranks [0, 2, 4, 1, 3]: before renormalisation w = ((5 − r)/5)².
  const double ranks[] = {0, 2, 4, 1, 3};
  for (Index i = 0; i < 5; ++i)
    CHECK(w[i] / r.ratio == Approx(std::pow((5 - ranks[i]) / 5, 2)).epsilon(1e-12));
}

TEST_CASE("ISR-P: overloads, aliasing, layouts", "[isr_p]") {
  const IsrInputs in = spec_isr_example();
  const fgbg::IsrP<double> isr;
  fgbg::IsrPWorkspace ws;
  Eigen::ArrayXd w_ref;
  isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w_ref, ws);

  SECTION("no label weights = all ones") {
    Eigen::ArrayXd w;
    isr.weights(in.labels, in.gt, in.iou, in.loss, 2, w, ws);
    CHECK((w == w_ref).all());
  }
  SECTION("temporary workspace") {
    Eigen::ArrayXd w;
    isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w);
    CHECK((w == w_ref).all());
  }
  SECTION("in place over the label weights, as mmdetection") {
    Eigen::ArrayXd lw = in.lw;
    isr.weights(in.labels, in.gt, in.iou, in.loss, lw, 2, lw, ws);
    CHECK((lw == w_ref).all());
  }
  SECTION("row vectors, Maps and a block of a larger array") {
    Eigen::Array<double, 1, Eigen::Dynamic> iou_row = in.iou.transpose();
    std::vector<int> gt(in.gt.data(), in.gt.data() + in.gt.size());
    Eigen::Map<const Eigen::ArrayXi> gt_map(gt.data(), 8);
    Eigen::ArrayXd big = Eigen::ArrayXd::Constant(12, 42.0);
    isr.weights(in.labels, gt_map, iou_row, in.loss, in.lw, 2, big.segment(2, 8), ws);
    CHECK((big.segment(2, 8) == w_ref).all());
    CHECK(big[0] == 42.0);
    CHECK(big[11] == 42.0);
  }
  SECTION("anchor order does not matter beyond ties") {
    // Reverse the anchors: same weights per anchor (no ties in this example).
    const Index n = 8;
    IsrInputs rv;
    rv.labels = in.labels.reverse();
    rv.gt = in.gt.reverse();
    rv.iou = in.iou.reverse();
    rv.loss = in.loss.reverse();
    rv.lw = in.lw.reverse();
    Eigen::ArrayXd w;
    isr.weights(rv.labels, rv.gt, rv.iou, rv.loss, rv.lw, 2, w, ws);
    for (Index i = 0; i < n; ++i) CHECK(w[n - 1 - i] == Approx(w_ref[i]).epsilon(1e-14));
  }
}

TEST_CASE("ISR-P: ties follow κ and then the anchor index", "[isr_p][ties]") {
  // One class, GT 0 has IoUs [1.0, 0.5] (ranks 0, 1), GT 1 has [0.0] alone (rank 0) and
  // GT 2 has [0.3, 0.2]: κ(IoU 1 at rank 1)... build the exact tie of the file comment of isr_p.hpp: an IoU of 1 at
  // local rank 1 ties with an IoU of 0 at local rank 0.
  fgbg::LabelVector y(5);
  y << 1, 1, 1, 1, 1;
  Eigen::ArrayXi gt(5);
  gt << 0, 0, 1, 2, 2;
  Eigen::ArrayXd iou(5), loss = Eigen::ArrayXd::Ones(5);
  iou << 1.0, 1.0, 0.0, 0.9, 0.8;
  // local ranks: a0 (GT0, 1.0) 0; a1 (GT0, 1.0) 1 (tie on IoU → index); a2 (GT1) 0; a3 0; a4 1.
  // κ: a0 = 1 + 5, a1 = 1 + 4 = 5, a2 = 0 + 5 = 5, a3 = 0.9 + 5, a4 = 0.8 + 4.
  // order: a0 (6), a3 (5.9), a1 (5, index 1), a2 (5, index 2), a4 (4.8) → ranks 0, 2, 3, 1, 4.
  const fgbg::IsrP<double> isr({1.0, 0.0});
  Eigen::ArrayXd w;
  const auto r = isr.weights(y, gt, iou, loss, 1, w);
  const double ranks[] = {0, 2, 3, 1, 4};
  for (Index i = 0; i < 5; ++i) CHECK(w[i] / r.ratio == Approx((5 - ranks[i]) / 5).epsilon(1e-14));
  // Swapping the anchors of the tied pair swaps their ranks (index decides).
  y << 1, 1, 1, 1, 1;
  gt << 0, 1, 0, 2, 2;
  iou << 1.0, 0.0, 1.0, 0.9, 0.8;
  const auto r2 = isr.weights(y, gt, iou, loss, 1, w);
  // a0 (GT0, rank 0) κ 6; a2 (GT0, rank 1) κ 5; a1 (GT1, rank 0) κ 5 → a1 before a2.
  const double ranks2[] = {0, 2, 3, 1, 4};
  for (Index i = 0; i < 5; ++i)
    CHECK(w[i] / r2.ratio == Approx((5 - ranks2[i]) / 5).epsilon(1e-14));
}

TEMPLATE_TEST_CASE("ISR-P: edge cases", "[isr_p][edge]", float, double) {
  using S = TestType;
  const fgbg::IsrP<S> isr;
  fgbg::IsrPWorkspace ws;
  SECTION("N = 0") {
    fgbg::LabelVector y(0);
    Eigen::ArrayXi gt(0);
    Vec<S> v(0), w;
    const auto r = isr.weights(y, gt, v, v, v, 3, w, ws);
    CHECK(w.size() == 0);
    CHECK(r.positives == 0);
  }
  SECTION("no positives: background keeps lw, ignored 0") {
    fgbg::LabelVector y(4);
    y << 0, -1, 0, 0;
    Eigen::ArrayXi gt = Eigen::ArrayXi::Constant(4, -1);
    Vec<S> v = Vec<S>::Zero(4), lw(4), w;
    lw << S(0.5), S(3), S(1), S(2);
    isr.weights(y, gt, v, v, lw, 3, w, ws);
    CHECK(w[0] == S(0.5));
    CHECK(w[1] == S(0));
    CHECK(w[2] == S(1));
    CHECK(w[3] == S(2));
  }
  SECTION("all ignored") {
    fgbg::LabelVector y = fgbg::LabelVector::Constant(3, -1);
    Eigen::ArrayXi gt = Eigen::ArrayXi::Zero(3);
    Vec<S> v = Vec<S>::Constant(3, S(std::numeric_limits<S>::quiet_NaN())), w;  // never read
    const Vec<S> lw = Vec<S>::Ones(3);
    isr.weights(y, gt, v, v, lw, 2, w, ws);
    CHECK((w == S(0)).all());
  }
  SECTION("zero classification loss: guarded, positives keep lw") {
    fgbg::LabelVector y(3);
    y << 1, 1, 0;
    Eigen::ArrayXi gt(3);
    gt << 0, 0, -1;
    Vec<S> iou(3), loss = Vec<S>::Zero(3), lw(3), w;
    iou << S(0.9), S(0.6), S(0);
    lw << S(1), S(0.5), S(2);
    const auto r = isr.weights(y, gt, iou, loss, lw, 1, w, ws);
    CHECK(r.guarded);
    CHECK(w[0] == S(1));
    CHECK(w[1] == S(0.5));
    CHECK(w[2] == S(2));
    CHECK(w.isFinite().all());
  }
  SECTION("a batch with an image without GTs") {
    // Image 0: the §11.5 example; image 1: only background and ignored anchors. The weights of
    // image 0 are those of the example alone, image 1 keeps its label weights.
    const IsrInputs in = spec_isr_example();
    const Index n0 = 8, n1 = 5;
    fgbg::LabelVector y(n0 + n1);
    y << in.labels, 0, 0, -1, 0, 0;
    Eigen::ArrayXi gt(n0 + n1);
    gt << in.gt, -1, -1, -1, -1, -1;
    Vec<S> iou(n0 + n1), loss(n0 + n1), lw(n0 + n1), w, w0;
    iou << in.iou.cast<S>(), Vec<S>::Zero(n1);
    loss << in.loss.cast<S>(), Vec<S>::Zero(n1);
    lw << in.lw.cast<S>(), Vec<S>::Constant(n1, S(0.25));
    isr.weights(y, gt, iou, loss, lw, 2, w, ws);
    const Vec<S> lw0 = in.lw.cast<S>(), iou0 = in.iou.cast<S>(), loss0 = in.loss.cast<S>();
    isr.weights(in.labels, in.gt, iou0, loss0, lw0, 2, w0, ws);
    CHECK((w.head(n0) == w0).all());
    CHECK(w[n0] == S(0.25));
    CHECK(w[n0 + 2] == S(0));
    CHECK(w[n0 + 4] == S(0.25));
  }
  SECTION("single positive keeps its weight") {
    fgbg::LabelVector y(1);
    y << 2;
    Eigen::ArrayXi gt(1);
    gt << 7;
    Vec<S> iou(1), loss(1), lw(1), w;
    iou << S(0.6);
    loss << S(0.3);
    lw << S(0.8);
    isr.weights(y, gt, iou, loss, lw, 3, w, ws);
    CHECK(w[0] == Approx(0.8));
  }
}

TEST_CASE("ISR-P: bad inputs throw and leave the output untouched", "[isr_p][errors]") {
  IsrInputs in = spec_isr_example();
  const fgbg::IsrP<double> isr;
  fgbg::IsrPWorkspace ws;
  Eigen::ArrayXd w = Eigen::ArrayXd::Constant(8, 7.0);
  SECTION("C < 1") {
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 0, w, ws),
                      Catch::Contains("num_classes must be >= 1, got 0"));
  }
  SECTION("label out of range (C passed explicitly)") {
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 1, w, ws),
                      Catch::Contains("labels(5) = 2 is outside -1..1"));
  }
  SECTION("negative GT id of a positive") {
    in.gt[3] = -1;
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                      Catch::Contains("gt_index(3) = -1 must be >= 0"));
  }
  SECTION("IoU outside [0, 1] or NaN") {
    in.iou[1] = 1.5;
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                      Catch::Contains("iou(1) = 1.5 must be in [0, 1]"));
    in.iou[1] = std::nan("");
    CHECK_THROWS_AS(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                    std::domain_error);
  }
  SECTION("negative loss, negative or infinite label weight") {
    in.loss[0] = -0.1;
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                      Catch::Contains("cls_loss(0) = -0.1 must be >= 0"));
    in.loss[0] = 0.2;
    in.lw[6] = -1;
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                      Catch::Contains("label_weights(6) = -1 must be >= 0"));
    in.lw[6] = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, w, ws),
                    std::domain_error);
  }
  SECTION("wrong lengths and output views") {
    Eigen::ArrayXd short_iou = in.iou.head(7);
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, short_iou, in.loss, in.lw, 2, w, ws),
                      Catch::Contains("iou must be a vector of 8 entries, got 7 x 1"));
    Eigen::ArrayXd big = Eigen::ArrayXd::Constant(10, 7.0);
    CHECK_THROWS_WITH(isr.weights(in.labels, in.gt, in.iou, in.loss, in.lw, 2, big.head(6), ws),
                      Catch::Contains("weights must be a vector of 8 entries"));
    CHECK((big == 7.0).all());
  }
  CHECK((w == 7.0).all());
}

TEST_CASE("ISR-P: invalid hyper-parameters", "[isr_p][errors]") {
  using I = fgbg::IsrP<float>;
  CHECK_THROWS_WITH(I({-1.0f, 0.0f}), "fgbg::IsrP: config.k must be finite and >= 0, got -1");
  CHECK_THROWS_WITH(I({2.0f, 1.5f}), Catch::Contains("config.bias must be in [0, 1], got 1.5"));
  CHECK_THROWS_AS(I({std::numeric_limits<float>::infinity(), 0.0f}), std::invalid_argument);
}

// ================================================================= CARL

TEMPLATE_TEST_CASE("CARL matches the reference vectors", "[carl][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("carl.json");
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const json& p = c["params"];
      const bool sigmoid = p["sigmoid"].get<bool>();
      const Index n = c["num_anchors"], k = c["num_classes"];
      const Index cols = sigmoid ? k : k + 1;
      const fgbg::CarlLoss<S> carl({p["k"].get<S>(), p["bias"].get<S>(), sigmoid});
      const auto x = matrix<S>(c["logits"], cols);
      const auto y = labels(c["labels"]);
      const Vec<S> reg = vector<S>(c["reg_loss"]);
      const fgbg::Normalizer norm = normalizer(c["normalization"]);
      RowArray<S> g(n, cols);
      Vec<S> gr(n), w(n);
      const S v = carl.value_and_grad(x, y, reg, g, gr, norm);
      check_scalar<S>("loss", v, c["expected"]["loss"]);
      check_array<S>("grad", g, c["expected"]["grad"]);
      check_array<S>("grad_reg_loss", gr, c["expected"]["grad_reg_loss"]);
      carl.weights(x, y, w);
      check_array<S>("weights", w, c["expected"]["weights"]);
      check_scalar<S>("value()", carl.value(x, y, reg, norm), c["expected"]["loss"]);
    }
  }
}

TEST_CASE("CARL: hand-checked example", "[carl][spec]") {
  RowArray<double> x(3, 1), g(3, 1);
  x << 2, -1, 0.5;
  fgbg::LabelVector y = fgbg::LabelVector::Ones(3);
  Eigen::ArrayXd reg(3), gr(3), w(3);
  reg << 0.3, 1.0, 0.6;
  const fgbg::CarlLoss<double> carl;
  const double v = carl.value_and_grad(x, y, reg, g, gr, fgbg::Normalizer::avg_factor(10));
  CHECK(v == Approx(0.1643395447).epsilon(1e-9));
  const double dx[] = {-0.0030945928, 0.0105750881, 0.0014591501};
  const double dl[] = {0.1345013937, 0.061724907, 0.1037736993};
  const double ww[] = {1.345013937, 0.6172490695, 1.0377369935};
  carl.weights(x, y, w);
  for (Index i = 0; i < 3; ++i) {
    CHECK(g(i, 0) == Approx(dx[i]).margin(1e-10));
    CHECK(gr[i] == Approx(dl[i]).margin(1e-10));
    CHECK(w[i] == Approx(ww[i]).margin(1e-9));
  }
  CHECK(w.sum() == Approx(3.0).epsilon(1e-14));  // Σŵ = P
}

TEST_CASE("CARL: gradients equal central differences", "[carl][gradcheck]") {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> nd(0.0, 2.0);
  std::uniform_real_distribution<double> ud(0.0, 3.0);
  std::uniform_int_distribution<int> ld(-1, 4);
  const Index n = 12, c = 4;
  fgbg::LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = ld(rng);
  y[0] = 2;
  y[1] = 4;
  Eigen::ArrayXd reg(n);
  for (Index i = 0; i < n; ++i) reg[i] = ud(rng);

  struct Setting {
    double k, b, tol;
  };
  for (const bool sigmoid : {true, false}) {
    // The last setting has b > 0 but b^k below 1e-260: the log-domain path with b > 0; its
    // large k makes central differences coarser.
    for (const Setting st :
         {Setting{1.0, 0.2, 1e-8}, Setting{2.0, 0.0, 1e-8}, Setting{0.7, 0.1, 1e-8},
          Setting{1.0, 0.0, 1e-8}, Setting{200.0, 0.04, 1e-5}}) {
      INFO("sigmoid = " << sigmoid << ", k = " << st.k << ", b = " << st.b);
      const Index cols = sigmoid ? c : c + 1;
      RowArray<double> x(n, cols);
      for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
      const fgbg::CarlLoss<double> carl({st.k, st.b, sigmoid, fgbg::Normalizer::avg_factor(3.5)});
      RowArray<double> g(n, cols);
      Eigen::ArrayXd gr(n);
      carl.value_and_grad(x, y, reg, g, gr);
      const auto num_x =
          numeric_grad([&](const RowArray<double>& xx) { return carl.value(xx, y, reg); }, x);
      CHECK(rel_max_diff(g, num_x) < st.tol);
      RowArray<double> reg_row = reg.transpose();
      const auto num_r = numeric_grad(
          [&](const RowArray<double>& rr) {
            const Eigen::ArrayXd r = rr.transpose();
            return carl.value(x, y, r);
          },
          reg_row);
      CHECK(rel_max_diff(gr.transpose(), num_r) < st.tol);
      // Non-positive rows have zero gradients.
      for (Index i = 0; i < n; ++i)
        if (y[i] <= 0) {
          CHECK((g.row(i) == 0.0).all());
          CHECK(gr[i] == 0.0);
        }
    }
  }
}

TEMPLATE_TEST_CASE("CARL: accumulate mode, layouts", "[carl]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd(0.0, 2.0);
  const Index n = 30, c = 6;
  fgbg::LabelVector y(n);
  Vec<S> reg(n);
  for (Index i = 0; i < n; ++i) {
    y[i] = static_cast<int>(i % (c + 2)) - 1;
    reg[i] = static_cast<S>(std::abs(nd(rng)));
  }
  for (const bool sigmoid : {true, false}) {
    const Index cols = sigmoid ? c : c + 1;
    RowArray<S> x(n, cols);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
    const fgbg::CarlLoss<S> carl({S(1), S(0.2), sigmoid});
    RowArray<S> g(n, cols);
    Vec<S> gr(n);
    const S v = carl.value_and_grad(x, y, reg, g, gr);

    RowArray<S> ga = RowArray<S>::Constant(n, cols, S(0.5));
    Vec<S> gra = Vec<S>::Constant(n, S(-1));
    CHECK(carl.value_and_accumulate_grad(x, y, reg, ga, gra) == v);
    CHECK(rel_max_diff((ga - S(0.5)).template cast<double>(), g.template cast<double>()) < 1e-6);
    CHECK(rel_max_diff((gra + S(1)).template cast<double>(), gr.template cast<double>()) < 1e-6);

    // (A strided row may take Eigen's scalar exp instead of the vectorised one: last-bit
    // differences only.)
    Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> xc = x, gc(n, cols);
    Vec<S> grc(n);
    CHECK(carl.value_and_grad(xc, y, reg, gc, grc) == Approx(v).epsilon(1e-6));
    CHECK(rel_max_diff(gc.template cast<double>(), g.template cast<double>()) < 1e-6);
    RowArray<S> big = RowArray<S>::Constant(n + 2, cols + 1, S(42));
    CHECK(carl.value_and_grad(x * S(1), y, reg, big.block(1, 1, n, cols), grc) ==
          Approx(v).epsilon(1e-6));
    CHECK(rel_max_diff(big.block(1, 1, n, cols).template cast<double>(),
                       g.template cast<double>()) < 1e-6);
    CHECK(big(0, 0) == S(42));
  }
}

TEMPLATE_TEST_CASE("CARL: anchor_losses hold w_i l_i, value and gradients unchanged",
                   "[carl][loss_outputs]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(17);
  std::normal_distribution<double> nd(0.0, 2.0);
  const Index n = 40, c = 5;
  fgbg::LabelVector y(n);
  Vec<S> reg(n);
  for (Index i = 0; i < n; ++i) {
    y[i] = static_cast<int>((i * 7) % (c + 2)) - 1;
    reg[i] = static_cast<S>(std::abs(nd(rng)));
  }
  const double tol = std::is_same<S, double>::value ? 1e-13 : 2e-6;
  for (const bool sigmoid : {true, false}) {
    for (const double b : {0.2, 0.0}) {
      INFO("sigmoid " << sigmoid << ", b = " << b);
      const Index cols = sigmoid ? c : c + 1;
      RowArray<S> x(n, cols);
      for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
      const auto norm = fgbg::Normalizer::avg_factor(6.5);
      const fgbg::CarlLoss<S> carl({S(2), S(b), sigmoid, norm});
      // independent: u_i = (b + (1 − b) s_i)^k, ŵ_i = P u_i / Σu, a_i = ŵ_i ℓ_i
      std::vector<double> u(n, 0.0);
      double su = 0, p = 0;
      for (Index i = 0; i < n; ++i) {
        if (y[i] <= 0) continue;
        double sc;
        if (sigmoid) {
          sc = 1.0 / (1.0 + std::exp(-static_cast<double>(x(i, y[i] - 1))));
        } else {
          double z = 0;
          for (Index j = 0; j < cols; ++j) z += std::exp(static_cast<double>(x(i, j)));
          sc = std::exp(static_cast<double>(x(i, y[i]))) / z;
        }
        u[i] = std::pow(b + (1 - b) * sc, 2.0);
        su += u[i];
        p += 1;
      }
      RowArray<S> g0(n, cols), g1(n, cols);
      Vec<S> gr0(n), gr1(n), a = Vec<S>::Constant(n, S(4)), av;
      const S v0 = carl.value_and_grad(x, y, reg, g0, gr0);
      const S v1 = carl.value_and_grad(x, y, reg, g1, gr1, fgbg::anchor_losses(a));
      CHECK(v1 == v0);
      CHECK((g1 == g0).all());
      CHECK((gr1 == gr0).all());
      CHECK(carl.value(x, y, reg, fgbg::anchor_losses(av)) == v0);
      REQUIRE(a.size() == n);
      CHECK((av == a).all());
      double sum = 0;
      for (Index i = 0; i < n; ++i) {
        const double want = y[i] > 0 ? p * u[i] / su * static_cast<double>(reg[i]) : 0.0;
        CHECK(std::abs(static_cast<double>(a[i]) - want) <= tol * std::max(1.0, want));
        sum += static_cast<double>(a[i]);
      }
      CHECK(std::abs(sum / 6.5 - static_cast<double>(v0)) <= tol * std::max(1.0, sum));
      // the accumulating call overwrites the loss output
      Vec<S> acc = Vec<S>::Constant(n, S(-3));
      RowArray<S> ga = RowArray<S>::Zero(n, cols);
      Vec<S> gra = Vec<S>::Zero(n);
      CHECK(carl.value_and_accumulate_grad(x, y, reg, ga, gra, fgbg::anchor_losses(acc)) == v0);
      CHECK((acc == a).all());
    }
  }
  SECTION("a bad output throws before anything is written") {
    const fgbg::CarlLoss<S> carl;
    RowArray<S> x = RowArray<S>::Constant(n, c, S(0.5)), g = RowArray<S>::Constant(n, c, S(7));
    Vec<S> gr = Vec<S>::Constant(n, S(7));
    std::vector<S> buf(n, S(9));
    Eigen::Map<Vec<S>> short_view(buf.data(), n - 1), on_reg(reg.data(), n), on_gr(gr.data(), n);
    const Vec<S> reg0 = reg;
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, reg, g, gr, fgbg::anchor_losses(short_view)),
                      Catch::Contains("anchor_losses must have 40 entries, got 39"));
    CHECK_THROWS_WITH(carl.value(x, y, reg, fgbg::anchor_losses(on_reg)),
                      Catch::Contains("anchor_losses must not share memory with the reg_loss"));
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, reg, g, gr, fgbg::anchor_losses(on_gr)),
                      Catch::Contains("anchor_losses must not share memory with grad_reg_loss"));
    fgbg::LabelVector bad = y;
    bad[3] = 99;
    Vec<S> a = Vec<S>::Constant(n, S(9));
    CHECK_THROWS_AS(carl.value_and_grad(x, bad, reg, g, gr, fgbg::anchor_losses(a)),
                    std::invalid_argument);
    CHECK((a == S(9)).all());
    CHECK((g == S(7)).all());
    CHECK((gr == S(7)).all());
    CHECK((reg == reg0).all());
    CHECK(std::all_of(buf.begin(), buf.end(), [](S v) { return v == S(9); }));
  }
}

TEMPLATE_TEST_CASE("CARL: edge cases", "[carl][edge]", float, double) {
  using S = TestType;
  for (const bool sigmoid : {true, false}) {
    const fgbg::CarlLoss<S> carl({S(1), S(0.2), sigmoid});
    const Index cols = sigmoid ? 3 : 4;
    SECTION(std::string("N = 0, sigmoid = ") + (sigmoid ? "1" : "0")) {
      RowArray<S> x(0, cols), g(0, cols);
      fgbg::LabelVector y(0);
      Vec<S> r(0), gr(0);
      CHECK(carl.value_and_grad(x, y, r, g, gr) == S(0));
    }
    SECTION(std::string("no positives / all ignored, sigmoid = ") + (sigmoid ? "1" : "0")) {
      RowArray<S> x = RowArray<S>::Constant(4, cols, S(0.3)), g = RowArray<S>::Constant(4, cols, 9);
      Vec<S> r = Vec<S>::Ones(4), gr = Vec<S>::Constant(4, 9);
      fgbg::LabelVector y(4);
      y << 0, -1, 0, 0;
      CHECK(carl.value_and_grad(x, y, r, g, gr) == S(0));
      CHECK((g == S(0)).all());
      CHECK((gr == S(0)).all());
      y.setConstant(-1);
      x(1, 1) = std::numeric_limits<S>::quiet_NaN();  // ignored rows are not read
      CHECK(carl.value_and_grad(x, y, r, g, gr) == S(0));
    }
  }
  SECTION("b = 0 with every score saturated stays finite (the reference gives NaN)") {
    const fgbg::CarlLoss<S> carl({S(1), S(0), true, fgbg::Normalizer::avg_factor(1)});
    RowArray<S> x(3, 1), g(3, 1);
    x << S(-1e4), S(-2e4), S(-1e4);
    fgbg::LabelVector y = fgbg::LabelVector::Ones(3);
    Vec<S> r(3), gr(3), w(3);
    r << S(1), S(2), S(3);
    const S v = carl.value_and_grad(x, y, r, g, gr);
    carl.weights(x, y, w);
    CHECK(std::isfinite(v));
    CHECK(g.isFinite().all());
    // Limit: ŵ ∝ s = e^x, so the two rows at −1e4 share the weight: ŵ = 1.5, 0, 1.5.
    CHECK(w[0] == Approx(1.5));
    CHECK(w[1] == S(0));
    CHECK(v == Approx(6.0));
  }
  SECTION("±1e4 logits") {
    for (const bool sigmoid : {true, false}) {
      const fgbg::CarlLoss<S> carl({S(1), S(0.2), sigmoid});
      const Index cols = sigmoid ? 2 : 3;
      RowArray<S> x = RowArray<S>::Constant(4, cols, S(1e4)), g(4, cols);
      x(1, 0) = S(-1e4);
      x(2, 1) = S(-1e4);
      fgbg::LabelVector y(4);
      y << 1, 2, 1, 2;
      Vec<S> r = Vec<S>::Ones(4), gr(4);
      CHECK(std::isfinite(carl.value_and_grad(x, y, r, g, gr)));
      CHECK(g.isFinite().all());
      CHECK(gr.isFinite().all());
    }
  }
}

TEST_CASE("CARL: bad inputs throw and leave the outputs untouched", "[carl][errors]") {
  const fgbg::CarlLoss<double> carl;
  const fgbg::CarlLoss<double> soft({1.0, 0.2, false});
  RowArray<double> x = RowArray<double>::Constant(3, 2, 0.5);
  RowArray<double> g = RowArray<double>::Constant(3, 2, 7.0);
  Eigen::ArrayXd r = Eigen::ArrayXd::Ones(3), gr = Eigen::ArrayXd::Constant(3, 7.0);
  fgbg::LabelVector y(3);
  y << 1, 0, 2;
  SECTION("labels") {
    CHECK_THROWS_WITH(soft.value_and_grad(x, y, r, g, gr),
                      Catch::Contains("labels(2) = 2 is outside -1..1"));
    y[1] = -3;
    CHECK_THROWS_AS(carl.value_and_grad(x, y, r, g, gr), std::invalid_argument);
  }
  SECTION("softmax head needs two columns") {
    RowArray<double> x1(3, 1), g1(3, 1);
    x1.setZero();
    CHECK_THROWS_WITH(soft.value_and_grad(x1, y, r, g1, gr), Catch::Contains("C+1 >= 2"));
  }
  SECTION("reg_loss") {
    r[2] = -1;
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r, g, gr),
                      Catch::Contains("reg_loss(2) = -1 must be >= 0"));
    r[2] = std::nan("");
    CHECK_THROWS_AS(carl.value_and_grad(x, y, r, g, gr), std::domain_error);
    Eigen::ArrayXd r2 = Eigen::ArrayXd::Ones(2);
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r2, g, gr),
                      Catch::Contains("reg_loss must be a vector of 3 entries"));
  }
  SECTION("non-finite logits that are read") {
    x(2, 1) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r, g, gr), Catch::Contains("logits(2, 1) is inf"));
    x(2, 1) = 0.5;
    x(0, 1) = std::nan("");  // column of another class: sigmoid CARL does not read it
    CHECK_NOTHROW(carl.value(x, y, r));
    y[2] = 1;
    CHECK_THROWS_WITH(soft.value(x, y, r), Catch::Contains("logits(0, 1) is nan"));
    y[2] = 2;
    g.setConstant(7.0);
    gr.setConstant(7.0);
  }
  SECTION("output shapes and normaliser") {
    RowArray<double> big = RowArray<double>::Constant(4, 4, 7.0);
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r, big.block(0, 0, 2, 2), gr),
                      Catch::Contains("grad must be 3 x 2, got 2 x 2"));
    Eigen::ArrayXd gbig = Eigen::ArrayXd::Constant(5, 7.0);
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r, g, gbig.head(2)),
                      Catch::Contains("grad_reg_loss must be a vector of 3 entries"));
    RowArray<double> g_small(2, 2);
    CHECK_THROWS_WITH(carl.value_and_accumulate_grad(x, y, r, g_small, gr),
                      Catch::Contains("grad must be 3 x 2"));
    CHECK_THROWS_WITH(carl.value_and_grad(x, y, r, g, gr, fgbg::Normalizer::avg_factor(0)),
                      Catch::Contains("avg_factor must be finite and > 0"));
    CHECK((big == 7.0).all());
    CHECK((gbig == 7.0).all());
  }
  CHECK((g == 7.0).all());
  CHECK((gr == 7.0).all());
}

TEST_CASE("CARL: outputs sharing memory with the inputs throw, nothing written",
          "[carl][errors][alias]") {
  const fgbg::CarlLoss<double> carl;
  const fgbg::CarlLoss<double> soft({1.0, 0.2, false});
  RowArray<double> x(3, 2);
  x << 0.5, -1.0, 2.0, 0.25, -0.5, 1.5;
  const RowArray<double> x0 = x;
  Eigen::ArrayXd r(3);
  r << 0.5, 1.0, 2.0;
  const Eigen::ArrayXd r0 = r;
  RowArray<double> g = RowArray<double>::Constant(3, 2, 7.0);
  Eigen::ArrayXd gr = Eigen::ArrayXd::Constant(3, 7.0);
  fgbg::LabelVector y(3);
  y << 1, 0, 1;  // valid for the sigmoid (C = 2) and the softmax (C = 1) head
  auto untouched = [&] {
    return (x == x0).all() && (r == r0).all() && (g == 7.0).all() && (gr == 7.0).all();
  };
  for (const auto* loss : {&carl, &soft}) {
    // accumulate path (the reviewer's case) and the writing path
    CHECK_THROWS_WITH(loss->value_and_accumulate_grad(x, y, r, x, gr),
                      Catch::Contains("grad must not share memory with the logits"));
    CHECK(untouched());
    CHECK_THROWS_WITH(loss->value_and_accumulate_grad(x, y, r, g, r),
                      Catch::Contains("grad_reg_loss must not share memory with reg_loss"));
    CHECK(untouched());
    CHECK_THROWS_WITH(loss->value_and_grad(x, y, r, x, gr),
                      Catch::Contains("grad must not share memory with the logits"));
    CHECK(untouched());
    CHECK_THROWS_WITH(loss->value_and_grad(x, y, r, g, r),
                      Catch::Contains("grad_reg_loss must not share memory with reg_loss"));
    CHECK(untouched());
    // a Map over the same memory aliases too
    Eigen::Map<RowArray<double>> xm(x.data(), 3, 2);
    Eigen::Map<Eigen::ArrayXd> rm(r.data(), 3);
    CHECK_THROWS_AS(loss->value_and_accumulate_grad(x, y, r, xm, gr), std::invalid_argument);
    CHECK_THROWS_AS(loss->value_and_accumulate_grad(x, y, r, g, rm), std::invalid_argument);
    CHECK(untouched());
  }
  // Disjoint blocks of one buffer are fine: logits in column block 0, gradient in block 1.
  RowArray<double> both = RowArray<double>::Zero(3, 4);
  both.leftCols(2) = x;
  Eigen::ArrayXd rr(6);
  rr << r, Eigen::ArrayXd::Zero(3);
  const double v = carl.value_and_grad(x, y, r, g, gr);
  CHECK(carl.value_and_accumulate_grad(both.leftCols(2), y, rr.head(3), both.rightCols(2),
                                       rr.tail(3)) == Approx(v).epsilon(1e-12));
  CHECK(rel_max_diff(both.rightCols(2), g) < 1e-12);
  CHECK(rel_max_diff(rr.tail(3), gr) < 1e-12);
}

TEST_CASE("CARL: invalid hyper-parameters", "[carl][errors]") {
  using C = fgbg::CarlLoss<double>;
  CHECK_THROWS_WITH(C({0.0, 0.2}), "fgbg::CarlLoss: config.k must be finite and > 0, got 0");
  CHECK_THROWS_WITH(C({1.0, 1.0}), Catch::Contains("config.bias must be in [0, 1), got 1"));
  CHECK_THROWS_AS(C({1.0, 0.2, true, fgbg::Normalizer::avg_factor(-1)}), std::invalid_argument);
}

// ================================================================= Score-HLR (ISR-N)

namespace {

// Logits of one negative with background loss ℓ (C = 1): x = [0, log((1 − p)/p)], p = e^−ℓ,
// so s = 1 − p and −log p_bg = ℓ.
void negative_row(RowArray<double>& x, Index i, double loss) {
  const double p = std::exp(-loss);
  x(i, 0) = 0.0;
  x(i, 1) = std::log((1 - p) / p);
}

}  // namespace

TEST_CASE("Score-HLR: hand-checked weights", "[isr_n][spec]") {
  // 1 positive, 6 negatives: 4 valid (s > 0.05) with disjoint boxes, 2 invalid; num = 7 so
  // N' = 6, U = max(6, 4) = 6.
  const Index n = 7;
  Eigen::ArrayXi assigned(n);
  assigned << 1, 0, 0, 0, 0, 0, 0;
  const double losses[] = {2.0, 1.5, 1.0, 0.8, 0.05, 0.04};
  RowArray<double> x(n, 2), boxes(n, 4);
  x.row(0) << -3, 3;
  boxes.row(0) << 0, 0, 1, 1;
  for (Index j = 0; j < 6; ++j) {
    negative_row(x, j + 1, losses[j]);
    boxes.row(j + 1) << 10.0 * j, 0, 10.0 * j + 5, 5;  // disjoint: one group each
  }
  fgbg::ScoreHlrSampler<double> sampler({7, 0.25});
  fgbg::ScoreHlrWorkspace<double> ws;
  fgbg::Sample s;
  std::mt19937_64 rng(1);
  const auto r = sampler.sample(assigned, x, boxes, rng, s, ws);
  CHECK(r.positives == 1);
  CHECK(r.expected_negatives == 6);
  CHECK(r.valid == 4);
  CHECK(r.ranked == 4);
  CHECK(r.random == 2);
  REQUIRE(s.positives.size() == 1);
  CHECK(s.positives[0] == 0);
  REQUIRE(s.negatives.size() == 6);
  const Index order[] = {1, 2, 3, 4, 5, 6};
  const double expected[] = {1.1193887242, 1.0218574248, 0.9139770661,
                             0.7915273577, 0.7915273577, 0.7915273577};
  for (Index j = 0; j < 6; ++j) {
    CHECK(s.negatives[j] == order[j]);
    CHECK(s.negative_weights[j] == Approx(expected[j]).margin(1e-9));
  }
  // Loss preserved.
  double before = 0, after = 0;
  for (Index j = 0; j < 6; ++j) {
    before += losses[j];
    after += losses[j] * s.negative_weights[j];
  }
  CHECK(after == Approx(before).epsilon(1e-12));
  // Ω bridge.
  Eigen::ArrayXd omega;
  fgbg::sample_weights(s, n, omega);
  CHECK(omega[0] == 1.0);
  CHECK(omega[1] == Approx(expected[0]));
}

TEST_CASE("Score-HLR: NMS groups decide the hierarchical rank", "[isr_n]") {
  // Negatives (C = 2): a (s .9, class 1) and b (s .8, class 1) overlap (IoU 0.81), c (s .7,
  // class 2) is elsewhere. Groups {a, b}, {c}: order a, c (rank 0), then b (rank 1).
  const Index n = 4;
  Eigen::ArrayXi assigned(n);
  assigned << 0, 0, 0, -1;
  RowArray<double> x(n, 3);
  auto row = [&](Index i, double s, int cls) {
    x.row(i).setConstant(std::log(1 - s) - std::log(2.0));  // rest split between bg and other
    x(i, cls) = std::log(s);
  };
  row(0, 0.9, 1);
  row(1, 0.8, 1);
  row(2, 0.7, 2);
  x.row(3).setZero();
  // Class-specific boxes: 8 columns, class 1 at 0..3, class 2 at 4..7.
  RowArray<double> boxes = RowArray<double>::Zero(n, 8);
  boxes.row(0) << 0, 0, 10, 10, 100, 100, 101, 101;
  boxes.row(1) << 0, 0, 9, 9, 0, 0, 10, 10;            // class 1 box overlaps a; class 2 box unused
  boxes.row(2) << 100, 100, 101, 101, 50, 50, 60, 60;  // class 2 box is used
  fgbg::ScoreHlrSampler<double> sampler({4, 0.25});
  fgbg::ScoreHlrWorkspace<double> ws;
  fgbg::Sample s;
  std::mt19937_64 rng(3);
  const auto r = sampler.sample(assigned, x, boxes, rng, s, ws);
  CHECK(r.valid == 3);
  CHECK(r.expected_negatives == 3);
  REQUIRE(s.negatives.size() == 3);
  CHECK(s.negatives[0] == 0);
  CHECK(s.negatives[1] == 2);
  CHECK(s.negatives[2] == 1);
  // Weights sqrt((3 − j)/3), renormalised by Σℓ / Σℓv.
  double num = 0, den = 0;
  for (Index j = 0; j < 3; ++j) {
    const Index i = s.negatives[j];
    const double lse = std::log(x.row(i).exp().sum());
    const double l = lse - x(i, 0);
    num += l;
    den += l * std::sqrt((3.0 - j) / 3.0);
  }
  for (Index j = 0; j < 3; ++j)
    CHECK(s.negative_weights[j] == Approx(std::sqrt((3.0 - j) / 3.0) * num / den).epsilon(1e-12));
  // With class-agnostic boxes (class 1's columns for all), c joins a's group? No: c's agnostic
  // box (100,100,101,101) is disjoint from a → same order; b still rank 1.
  RowArray<double> agnostic = boxes.leftCols(4);
  sampler.sample(assigned, x, agnostic, rng, s, ws);
  CHECK(s.negatives[2] == 1);
}

TEST_CASE("nms_match groups", "[isr_n][nms]") {
  RowArray<float> boxes(5, 4);
  boxes << 0, 0, 10, 10,  //
      1, 1, 10, 10,       // IoU with 0: 81/100
      20, 20, 30, 30,     //
      0, 0, 10, 10,       // identical to 0
      21, 21, 30, 30;     // IoU with 2: 0.81
  Eigen::ArrayXf scores(5);
  scores << 0.5f, 0.9f, 0.3f, 0.9f, 0.4f;
  fgbg::NmsMatchGroups g;
  fgbg::NmsMatchWorkspace<float> ws;
  fgbg::nms_match(boxes, scores, 0.5, g, ws);
  // order by (score desc, index asc): 1, 3, 0, 4, 2. 1 keeps {3, 0}; 4 keeps {2}.
  REQUIRE(g.groups() == 2);
  CHECK(std::vector<Index>(g.members.begin(), g.members.end()) ==
        std::vector<Index>{1, 3, 0, 4, 2});
  CHECK(g.begin[1] == 3);
  // Threshold above every IoU: each box alone.
  fgbg::nms_match(boxes, scores, 0.95, g, ws);
  CHECK(g.groups() == 4);  // 0 and 3 are identical (IoU 1)
  fgbg::nms_match(boxes.topRows(0), scores.head(0), 0.5, g, ws);
  CHECK(g.groups() == 0);
  CHECK_THROWS_AS(fgbg::nms_match(boxes, scores, 1.5, g, ws), std::invalid_argument);
}

TEST_CASE("nms_match equals a brute-force greedy scan", "[isr_n][nms]") {
  std::mt19937_64 gen(21);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  for (const Index v : {1, 63, 64, 65, 300, 700}) {
    for (const double thr : {0.0, 0.3, 0.5, 0.7}) {
      RowArray<double> boxes(v, 4);
      Eigen::ArrayXd scores(v);
      for (Index i = 0; i < v; ++i) {
        const double cx = 200 * ud(gen), cy = 200 * ud(gen), w = 5 + 40 * ud(gen);
        boxes.row(i) << cx, cy, cx + w, cy + w * (0.5 + ud(gen));
        scores[i] = std::floor(ud(gen) * 20) / 20;  // many ties
      }
      fgbg::NmsMatchGroups g;
      fgbg::NmsMatchWorkspace<double> ws;
      fgbg::nms_match(boxes, scores, thr, g, ws);
      // Brute force: stable order by score, then the greedy scan with the pairwise IoU.
      std::vector<Index> order(v);
      for (Index i = 0; i < v; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](Index a, Index b) { return scores[a] > scores[b]; });
      std::vector<Index> members, begin;
      std::vector<char> sup(v, 0);
      for (Index i = 0; i < v; ++i) {
        if (sup[i]) continue;
        begin.push_back(static_cast<Index>(members.size()));
        members.push_back(order[i]);
        for (Index j = i + 1; j < v; ++j) {
          if (sup[j]) continue;
          RowArray<double> a = boxes.row(order[i]), b = boxes.row(order[j]);
          Eigen::ArrayXd iou;
          fgbg::aligned_iou(a, b, iou);
          if (iou[0] >= thr) {
            sup[j] = 1;
            members.push_back(order[j]);
          }
        }
      }
      begin.push_back(static_cast<Index>(members.size()));
      INFO("V = " << v << ", thr = " << thr);
      CHECK(g.members == members);
      CHECK(g.begin == begin);
    }
  }
}

TEST_CASE("Score-HLR: random paths, bounds, determinism", "[isr_n]") {
  std::mt19937_64 gen(9);
  std::normal_distribution<double> nd(0.0, 2.0);
  const Index n = 300, c = 5;
  Eigen::ArrayXi assigned(n);
  RowArray<double> x(n, c + 1), boxes(n, 4 * c);
  for (Index i = 0; i < n; ++i) {
    assigned[i] = i % 10 == 0 ? 1 + static_cast<int>(i % 3) : (i % 17 == 0 ? -1 : 0);
    for (Index k = 0; k <= c; ++k) x(i, k) = nd(gen);
    x(i, 0) += 2.0;  // mostly background
    for (Index k = 0; k < c; ++k) {
      const double cx = 50 + 10 * nd(gen), cy = 50 + 10 * nd(gen), w = 5 + std::abs(nd(gen));
      boxes.block(i, 4 * k, 1, 4) << cx - w, cy - w, cx + w, cy + w;
    }
  }
  fgbg::ScoreHlrWorkspace<double> ws;
  fgbg::Sample s1, s2;
  SECTION("same seed, same sample; invariants") {
    const fgbg::ScoreHlrSampler<double> sampler({64, 0.25});
    std::mt19937_64 r1(42), r2(42);
    const auto a = sampler.sample(assigned, x, boxes, r1, s1, ws);
    sampler.sample(assigned, x, boxes, r2, s2, ws);
    CHECK(s1.positives == s2.positives);
    CHECK(s1.negatives == s2.negatives);
    CHECK(s1.negative_weights == s2.negative_weights);
    CHECK(a.positives == 16);
    CHECK(static_cast<Index>(s1.negatives.size()) == 48);
    for (Index i : s1.positives) CHECK(assigned[i] > 0);
    for (Index i : s1.negatives) CHECK(assigned[i] == 0);
    std::vector<Index> sorted = s1.negatives;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    // Ranked weights are non-increasing.
    for (Index j = 1; j < a.ranked; ++j)
      CHECK(s1.negative_weights[j] <= s1.negative_weights[j - 1]);
  }
  SECTION("no valid negatives: random negatives with weight 1") {
    const fgbg::ScoreHlrSampler<double> sampler({64, 0.25, -1, 0.5, 0, 0.999});
    std::mt19937_64 r(1);
    const auto a = sampler.sample(assigned, x, boxes, r, s1, ws);
    CHECK(a.valid == 0);
    CHECK(a.random == 48);
    CHECK(s1.negatives.size() == 48);
    for (double w : s1.negative_weights) CHECK(w == 1.0);
    CHECK(std::is_sorted(s1.negatives.begin(), s1.negatives.end()));
  }
  SECTION("a huge finite neg_pos_ub acts as no bound (no integer overflow)") {
    for (std::uint64_t seed = 0; seed < 5; ++seed) {
      std::mt19937_64 ra(seed), rb(seed);
      const auto a =
          fgbg::ScoreHlrSampler<double>({64, 0.25, 1e30}).sample(assigned, x, boxes, ra, s1, ws);
      const auto b =
          fgbg::ScoreHlrSampler<double>({64, 0.25, -1}).sample(assigned, x, boxes, rb, s2, ws);
      CHECK(a.expected_negatives == 48);
      CHECK(a.expected_negatives == b.expected_negatives);
      CHECK(s1.positives == s2.positives);
      CHECK(s1.negatives == s2.negatives);
      CHECK(s1.negative_weights == s2.negative_weights);
    }
  }
  SECTION("neg_pos_ub and N' = 0") {
    std::mt19937_64 r(1);
    const auto a =
        fgbg::ScoreHlrSampler<double>({512, 0.25, 2.0}).sample(assigned, x, boxes, r, s1, ws);
    CHECK(a.expected_negatives == 2 * a.positives);
    const auto b = fgbg::ScoreHlrSampler<double>({30, 1.0}).sample(assigned, x, boxes, r, s1, ws);
    CHECK(b.positives == 30);
    CHECK(s1.negatives.empty());
    CHECK(s1.negative_weights.empty());
  }
  SECTION("no negatives / N = 0") {
    std::mt19937_64 r(1);
    const fgbg::ScoreHlrSampler<double> sampler;
    Eigen::ArrayXi all_pos = Eigen::ArrayXi::Ones(n);
    sampler.sample(all_pos, x, boxes, r, s1, ws);
    CHECK(s1.positives.size() == 128);
    CHECK(s1.negatives.empty());
    Eigen::ArrayXi none(0);
    RowArray<double> x0(0, c + 1), b0(0, 4);
    sampler.sample(none, x0, b0, r, s1, ws);
    CHECK(s1.size() == 0);
  }
  SECTION("bad inputs throw, leave the sample and the RNG untouched") {
    const fgbg::ScoreHlrSampler<double> sampler({64, 0.25});
    std::mt19937_64 r(5), r_copy(5);
    s1.positives = {77};
    Eigen::ArrayXi bad = assigned;
    bad[3] = -2;
    CHECK_THROWS_WITH(sampler.sample(bad, x, boxes, r, s1, ws),
                      Catch::Contains("assigned(3) = -2"));
    RowArray<double> xb = x;
    xb(1, 2) = std::nan("");
    CHECK_THROWS_AS(sampler.sample(assigned, xb, boxes, r, s1, ws), std::domain_error);
    RowArray<double> b3 = boxes.leftCols(3);
    CHECK_THROWS_WITH(sampler.sample(assigned, x, b3, r, s1, ws),
                      Catch::Contains("boxes must be 300 x 4 (class-agnostic) or 300 x 20"));
    RowArray<double> binv = boxes, xv = x;
    xv(1, 1) = 10;  // candidate 1 becomes a valid negative, so its class-1 box is read
    std::swap(binv(1, 0), binv(1, 2));
    CHECK_THROWS_WITH(sampler.sample(assigned, xv, binv, r, s1, ws), Catch::Contains("inverted"));
    CHECK(s1.positives == std::vector<Index>{77});
    CHECK(r() == r_copy());
  }
  SECTION("invalid hyper-parameters") {
    using H = fgbg::ScoreHlrSampler<double>;
    CHECK_THROWS_WITH(H({-1}), "fgbg::ScoreHlrSampler: config.num must be >= 0, got -1");
    CHECK_THROWS_WITH(H({512, 1.5}), Catch::Contains("config.pos_fraction must be in [0, 1]"));
    CHECK_THROWS_AS(H({512, 0.25, -1, 0.5, 0, 1.0}), std::invalid_argument);
    // neg_pos_ub: exactly −1 means no bound (mmdetection), as in SamplerConfig
    CHECK_THROWS_WITH(H({512, 0.25, -2}),
                      "fgbg::ScoreHlrSampler: config.neg_pos_ub must be -1 "
                      "(no bound) or finite >= 0, got -2");
    CHECK_THROWS_AS(H({512, 0.25, -0.5}), std::invalid_argument);
    CHECK_THROWS_AS(H({512, 0.25, std::numeric_limits<double>::infinity()}), std::invalid_argument);
    CHECK_NOTHROW(H({512, 0.25, -1}));
    CHECK_NOTHROW(H({512, 0.25, 0}));
    CHECK_THROWS_WITH(fgbg::RandomSampler({512, 0.25, -2}),
                      Catch::Contains("config.neg_pos_ub must be -1 (no bound) or finite >= 0"));
    CHECK_THROWS_AS(H({512, 0.25, -1, 0.5, 0, 0.05, 2.0}), std::invalid_argument);
  }
}

// ================================================================= allocation

TEST_CASE("PISA allocates nothing in steady state", "[isr_p][carl][isr_n][alloc]") {
  std::mt19937_64 gen(1);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  const Index n = 5000, c = 20;
  fgbg::LabelVector y = fgbg::LabelVector::Zero(n);
  Eigen::ArrayXi gt = Eigen::ArrayXi::Constant(n, -1);
  Eigen::ArrayXf iou = Eigen::ArrayXf::Zero(n), loss = Eigen::ArrayXf::Zero(n);
  Eigen::ArrayXf lw = Eigen::ArrayXf::Ones(n), w(n), reg(n), gr(n);
  for (Index i = 0; i < n; i += 25) {
    y[i] = 1 + static_cast<int>(i % c);
    gt[i] = static_cast<int>(i % 7);
    iou[i] = ud(gen);
    loss[i] = ud(gen);
  }
  y[3] = -1;
  for (Index i = 0; i < n; ++i) reg[i] = ud(gen);
  RowArray<float> xs = RowArray<float>::Constant(n, c, -2.0f), gs(n, c);
  RowArray<float> xm = RowArray<float>::Constant(n, c + 1, 0.5f), gm(n, c + 1);
  const fgbg::IsrP<float> isr;
  const fgbg::CarlLoss<float> carl_s;
  const fgbg::CarlLoss<float> carl_m({1.0f, 0.2f, false});
  fgbg::IsrPWorkspace ws;

  Eigen::ArrayXi assigned(2000);
  RowArray<float> rx(2000, 6), rb(2000, 4);
  for (Index i = 0; i < 2000; ++i) {
    assigned[i] = i % 20 == 0 ? 1 : 0;
    for (Index k = 0; k < 6; ++k) rx(i, k) = 3 * ud(gen) - (k == 0 ? 0.0f : 1.0f);
    const float cx = 400 * ud(gen), cy = 400 * ud(gen), h = 10 + 40 * ud(gen);
    rb.row(i) << cx, cy, cx + h, cy + h;
  }
  const fgbg::ScoreHlrSampler<float> hlr;
  fgbg::ScoreHlrWorkspace<float> hws;
  fgbg::Sample sample;
  std::mt19937_64 rng(4);
  isr.weights(y, gt, iou, loss, lw, c, w, ws);  // warm-up
  hlr.sample(assigned, rx, rb, rng, sample, hws);

  NoAllocScope guard;
  isr.weights(y, gt, iou, loss, lw, c, w, ws);
  isr.weights(y, gt, iou, loss, c, w, ws);
  carl_s.value_and_grad(xs, y, reg, gs, gr);
  carl_s.value_and_accumulate_grad(xs, y, reg, gs, gr);
  carl_m.value_and_grad(xm, y, reg, gm, gr);
  carl_m.value(xm, y, reg);
  carl_s.weights(xs, y, w);
  hlr.sample(assigned, rx, rb, rng, sample, hws);
  CHECK(guard.count() == 0);
}
