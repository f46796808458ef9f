// Boxes: IoU matrix / aligned IoU against hand-computed cases and a naive formula, and the
// max-IoU assigner against hand-computed assignments, a naive re-implementation of mmdet's rule,
// the presets, the zero-IoU guard, GT-as-proposals, errors and allocation.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <catch2/catch.hpp>
#include <fgbg/boxes/iou.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <limits>
#include <random>

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename S>
RowArray<S> boxes(std::initializer_list<std::array<double, 4>> rows) {
  RowArray<S> b(static_cast<Index>(rows.size()), 4);
  Index i = 0;
  for (const auto& r : rows) {
    for (Index k = 0; k < 4; ++k) b(i, k) = static_cast<S>(r[k]);
    ++i;
  }
  return b;
}

// Naive double-precision IoU (mmdet formula).
double naive_iou(const double* a, const double* b) {
  const double iw = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const double ih = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const double inter = iw * ih;
  const double uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return inter / std::max(uni, 1e-6);
}

RowArray<double> random_boxes(std::mt19937_64& rng, Index n, double w = 200, double h = 150) {
  std::uniform_real_distribution<double> ux(0, w), uy(0, h), us(0, 60);
  RowArray<double> b(n, 4);
  for (Index i = 0; i < n; ++i) {
    const double x = ux(rng), y = uy(rng);
    // round to a 0.5 grid so that ties (equal IoUs) actually happen
    b(i, 0) = std::round(2 * x) / 2;
    b(i, 1) = std::round(2 * y) / 2;
    b(i, 2) = b(i, 0) + std::round(2 * us(rng)) / 2;
    b(i, 3) = b(i, 1) + std::round(2 * us(rng)) / 2;
  }
  return b;
}

struct NaiveAssignment {
  std::vector<int> labels, gt;
  std::vector<double> iou;
};

// Straightforward restatement of mmdet's MaxIoUAssigner over an N × G matrix.
NaiveAssignment naive_assign(const RowArray<double>& iou, const fgbg::LabelVector& gl,
                             const fgbg::MaxIouAssignerConfig& c) {
  const Index n = iou.rows(), g = iou.cols();
  NaiveAssignment r;
  r.labels.assign(n, -1);
  r.gt.assign(n, -1);
  r.iou.assign(n, 0.0);
  if (g == 0) {
    std::fill(r.labels.begin(), r.labels.end(), 0);
    return r;
  }
  for (Index i = 0; i < n; ++i) {
    Index arg = 0;
    for (Index j = 1; j < g; ++j)
      if (iou(i, j) > iou(i, arg)) arg = j;
    const double m = iou(i, arg);
    r.iou[i] = m;
    if (m >= c.neg_iou_lo && m < c.neg_iou_thr) r.labels[i] = 0;
    if (m >= c.pos_iou_thr) {
      r.gt[i] = static_cast<int>(arg);
      r.labels[i] = gl[arg];
    }
  }
  if (c.match_low_quality) {
    for (Index j = 0; j < g; ++j) {
      const double best = iou.col(j).maxCoeff();
      if (!(best >= c.min_pos_iou)) continue;
      if (best <= 0 && !c.low_quality_zero_iou) continue;
      for (Index i = 0; i < n; ++i)
        if (iou(i, j) == best) {
          r.gt[i] = static_cast<int>(j);
          r.labels[i] = gl[j];
          if (!c.gt_max_assign_all) break;
        }
    }
  }
  return r;
}

void check_same(const fgbg::Assignment& a, const NaiveAssignment& r) {
  REQUIRE(a.size() == static_cast<Index>(r.labels.size()));
  for (Index i = 0; i < a.size(); ++i) {
    INFO("candidate " << i);
    CHECK(a.labels()[i] == r.labels[i]);
    CHECK(a.gt_index()[i] == r.gt[i]);
    CHECK(a.max_iou()[i] == r.iou[i]);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("iou_matrix: hand-computed cases", "[boxes][iou]", float, double) {
  using S = TestType;
  const auto b = boxes<S>({{0, 0, 10, 10},   // identical to gt 0
                           {10, 0, 20, 10},  // touches gt 0 along x = 10
                           {2, 2, 4, 4},     // nested in gt 0: 4 / 100
                           {5, 5, 15, 15},   // 25 / 175
                           {5, 5, 5, 5},     // degenerate point
                           {0, 0, 10, 0}});  // degenerate segment on gt 0's edge
  const auto g = boxes<S>({{0, 0, 10, 10}, {5, 5, 5, 5}});
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic> out;
  fgbg::iou_matrix(b, g, out);
  REQUIRE(out.rows() == 6);
  REQUIRE(out.cols() == 2);
  const double want[6][2] = {{1, 0}, {0, 0}, {0.04, 0}, {1.0 / 7.0, 0}, {0, 0}, {0, 0}};
  for (Index i = 0; i < 6; ++i)
    for (Index j = 0; j < 2; ++j) CHECK(out(i, j) == Approx(want[i][j]).margin(1e-7));
  // row-major output, Map input
  RowArray<double> out_r(6, 2);
  Eigen::Map<const RowArray<S>> bm(b.data(), 6, 4);
  fgbg::iou_matrix(bm, g, out_r);
  for (Index i = 0; i < 6; ++i)
    for (Index j = 0; j < 2; ++j) CHECK(out_r(i, j) == Approx(want[i][j]).margin(1e-7));
  // aligned IoU of the pairs (row i, gt 0)
  RowArray<S> g0(6, 4);
  g0.rowwise() = g.row(0);
  Eigen::Array<S, Eigen::Dynamic, 1> al;
  fgbg::aligned_iou(b, g0, al);
  for (Index i = 0; i < 6; ++i) CHECK(al[i] == Approx(want[i][0]).margin(1e-7));
}

TEST_CASE("iou_matrix: no GT, no box, and random boxes against the naive formula", "[boxes][iou]") {
  std::mt19937_64 rng(3);
  const RowArray<double> b = random_boxes(rng, 300), g = random_boxes(rng, 7);
  Eigen::ArrayXXd out;
  fgbg::iou_matrix(b, RowArray<double>(0, 4), out);
  CHECK(out.rows() == 300);
  CHECK(out.cols() == 0);
  fgbg::iou_matrix(RowArray<double>(0, 4), g, out);
  CHECK(out.rows() == 0);
  CHECK(out.cols() == 7);
  fgbg::iou_matrix(b, g, out);
  double worst = 0;
  for (Index i = 0; i < 300; ++i)
    for (Index j = 0; j < 7; ++j)
      worst = std::max(worst, std::abs(out(i, j) - naive_iou(&b(i, 0), &g(j, 0))));
  CHECK(worst < 1e-12);
  Eigen::ArrayXf outf;
  RowArray<float> bf = b.cast<float>(), gf = g.cast<float>();
  Eigen::ArrayXXf mf;
  fgbg::iou_matrix(bf, gf, mf);
  CHECK((mf.cast<double>() - out).abs().maxCoeff() < 1e-5);
  // aligned IoU equals the matrix entries for the same pairs
  RowArray<double> rep(300, 4);
  for (Index i = 0; i < 300; ++i) rep.row(i) = g.row(i % 7);
  Eigen::ArrayXd al;
  fgbg::aligned_iou(b, rep, al);
  for (Index i = 0; i < 300; ++i) CHECK(al[i] == out(i, i % 7));
}

TEST_CASE("iou_matrix: bad inputs throw and write nothing", "[boxes][iou][errors]") {
  auto b = boxes<double>({{0, 0, 10, 10}, {1, 1, 2, 2}});
  auto g = boxes<double>({{0, 0, 5, 5}});
  RowArray<double> out = RowArray<double>::Constant(2, 1, 7.0);
  auto untouched = [&] { return (out == 7.0).all(); };
  auto inv = b;
  inv(1, 2) = 0.5;  // x2 < x1
  CHECK_THROWS_WITH(
      fgbg::iou_matrix(inv, g, out),
      Catch::Contains("fgbg::iou_matrix: boxes row 1") && Catch::Contains("is inverted"));
  CHECK(untouched());
  auto nan = g;
  nan(0, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(fgbg::iou_matrix(b, nan, out), std::domain_error);
  CHECK(untouched());
  auto inf = b;
  inf(0, 3) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(fgbg::iou_matrix(inf, g, out), std::domain_error);
  RowArray<double> three(2, 3);
  three.setZero();
  CHECK_THROWS_WITH(fgbg::iou_matrix(three, g, out), Catch::Contains("must have 4 columns"));
  Eigen::Map<RowArray<double>> wrong(out.data(), 1, 2);
  CHECK_THROWS_WITH(fgbg::iou_matrix(b, g, wrong), Catch::Contains("out must be 2 x 1"));
  CHECK(untouched());
  Eigen::ArrayXd al = Eigen::ArrayXd::Constant(2, 7.0);
  CHECK_THROWS_WITH(fgbg::aligned_iou(b, g, al), Catch::Contains("same number of boxes"));
  CHECK((al == 7.0).all());
}

TEST_CASE("MaxIouAssigner: hand-computed assignments for the three presets", "[boxes][assign]") {
  RowArray<double> iou(5, 2);
  iou << 0.6, 0.1,  // clear positive of gt 0
      0.45, 0.2,    // between RetinaNet's 0.4 and 0.5: ignored
      0.3, 0.35,    // best candidate of gt 1: low-quality match
      0.0, 0.0,     // background
      0.2, 0.2;     // tie between GTs: argmax is gt 0
  fgbg::LabelVector gl(2);
  gl << 2, 7;
  fgbg::Assignment a;
  using C = fgbg::MaxIouAssignerConfig;

  fgbg::MaxIouAssigner(C::retinanet()).assign_from_iou(iou, gl, a);
  CHECK((a.labels() == (fgbg::LabelVector(5) << 2, -1, 7, 0, 0).finished()).all());
  CHECK(
      (a.gt_index() == (Eigen::Array<std::int32_t, 5, 1>() << 0, -1, 1, -1, -1).finished()).all());
  CHECK(a.max_iou()[2] == 0.35);  // max IoU is not changed by a low-quality match
  CHECK(a.count_positives() == 2);
  CHECK(a.count_negatives() == 2);

  fgbg::MaxIouAssigner(C::rpn()).assign_from_iou(iou, gl, a);
  // 0.6 < 0.7 but it is gt 0's best (0.6 >= min_pos 0.3) ⇒ positive; 0.45 ignored; 0.2 < 0.3 bg
  CHECK((a.labels() == (fgbg::LabelVector(5) << 2, -1, 7, 0, 0).finished()).all());

  fgbg::MaxIouAssigner(C::rcnn()).assign_from_iou(iou, gl, a);
  CHECK((a.labels() == (fgbg::LabelVector(5) << 2, 0, 0, 0, 0).finished()).all());

  // RPN: a GT whose best IoU is below min_pos_iou gets no low-quality match
  RowArray<double> low(2, 1);
  low << 0.25, 0.1;
  fgbg::MaxIouAssigner(C::rpn()).assign_from_iou(low, fgbg::LabelVector::Constant(1, 1), a);
  CHECK((a.labels() == 0).all());
  fgbg::MaxIouAssigner(C::retinanet()).assign_from_iou(low, fgbg::LabelVector::Constant(1, 1), a);
  CHECK(a.labels()[0] == 1);
  CHECK(a.labels()[1] == 0);
}

TEST_CASE("MaxIouAssigner: ties, overwrite order, gt_max_assign_all", "[boxes][assign]") {
  fgbg::LabelVector gl(2);
  gl << 4, 9;
  fgbg::Assignment a;
  RowArray<double> tie(3, 2);
  tie << 0.3, 0.0, 0.1, 0.0, 0.3, 0.2;
  fgbg::MaxIouAssigner().assign_from_iou(tie, gl, a);
  // gt 0's best (0.3) is reached by candidates 0 and 2: both positive; gt 1's best 0.2 at 2
  // overwrites candidate 2 (GTs are processed in order)
  CHECK((a.labels() == (fgbg::LabelVector(3) << 4, 0, 9).finished()).all());
  CHECK(a.gt_index()[2] == 1);
  fgbg::MaxIouAssignerConfig first = fgbg::MaxIouAssignerConfig::retinanet();
  first.gt_max_assign_all = false;
  RowArray<double> tie2(3, 1);
  tie2 << 0.3, 0.1, 0.3;
  fgbg::MaxIouAssigner(first).assign_from_iou(tie2, gl.head(1), a);
  CHECK((a.labels() == (fgbg::LabelVector(3) << 4, 0, 0).finished()).all());
  fgbg::MaxIouAssigner().assign_from_iou(tie2, gl.head(1), a);
  CHECK((a.labels() == (fgbg::LabelVector(3) << 4, 0, 4).finished()).all());
}

TEST_CASE("MaxIouAssigner: the zero-IoU low-quality quirk is guarded", "[boxes][assign][quirk]") {
  RowArray<double> iou(3, 2);
  iou << 0.6, 0.0, 0.1, 0.0, 0.0, 0.0;  // gt 1 overlaps no candidate
  fgbg::LabelVector gl(2);
  gl << 1, 5;
  fgbg::Assignment a;
  fgbg::MaxIouAssigner().assign_from_iou(iou, gl, a);  // RetinaNet: min_pos_iou = 0
  CHECK((a.labels() == (fgbg::LabelVector(3) << 1, 0, 0).finished()).all());
  fgbg::MaxIouAssignerConfig quirk;
  quirk.low_quality_zero_iou = true;  // the reference: every zero-IoU candidate joins gt 1
  fgbg::MaxIouAssigner(quirk).assign_from_iou(iou, gl, a);
  CHECK((a.labels() == 5).all());
  CHECK((a.gt_index() == 1).all());
  // the fused box path agrees in both modes
  const auto b = boxes<double>({{0, 0, 10, 10}, {50, 50, 60, 60}, {100, 0, 110, 10}});
  const auto g = boxes<double>({{0, 0, 10, 12}, {300, 300, 310, 310}});
  fgbg::MaxIouAssigner().assign(b, g, gl, a);
  CHECK((a.labels() == (fgbg::LabelVector(3) << 1, 0, 0).finished()).all());
  fgbg::MaxIouAssigner(quirk).assign(b, g, gl, a);
  CHECK((a.labels() == 5).all());
  // a degenerate (zero-area) GT overlaps nothing: no low-quality match in the clean mode
  const auto point = boxes<double>({{0, 0, 10, 12}, {55, 55, 55, 55}});
  fgbg::MaxIouAssigner().assign(b, point, gl, a);
  CHECK((a.labels() == (fgbg::LabelVector(3) << 1, 0, 0).finished()).all());
  CHECK(a.max_iou()[1] == 0.0);
}

TEST_CASE("MaxIouAssigner: no GT and no candidate", "[boxes][assign]") {
  fgbg::Assignment a;
  const auto b = boxes<float>({{0, 0, 1, 1}, {2, 2, 3, 3}});
  fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rpn())
      .assign(b, RowArray<float>(0, 4), fgbg::LabelVector(0), a);
  CHECK(a.size() == 2);
  CHECK((a.labels() == 0).all());
  CHECK((a.gt_index() == -1).all());
  CHECK((a.max_iou() == 0).all());
  fgbg::MaxIouAssigner().assign(RowArray<float>(0, 4), b, fgbg::LabelVector::Ones(2), a);
  CHECK(a.size() == 0);
  CHECK(a.num_gts == 2);
}

TEMPLATE_TEST_CASE("MaxIouAssigner: fused box path equals the matrix path and a naive assigner",
                   "[boxes][assign]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    const Index n = 1 + static_cast<Index>(rng() % 400), g = static_cast<Index>(rng() % 9);
    const RowArray<S> b = random_boxes(rng, n).cast<S>(), gt = random_boxes(rng, g).cast<S>();
    fgbg::LabelVector gl(g);
    for (Index j = 0; j < g; ++j) gl[j] = 1 + static_cast<int>(rng() % 80);
    RowArray<S> iou_s;
    fgbg::iou_matrix(b, gt, iou_s);
    const RowArray<double> iou = iou_s.template cast<double>();
    for (auto c : {fgbg::MaxIouAssignerConfig::retinanet(), fgbg::MaxIouAssignerConfig::rpn(),
                   fgbg::MaxIouAssignerConfig::rcnn()}) {
      for (bool all : {true, false}) {
        c.gt_max_assign_all = all;
        fgbg::Assignment fused, matrix;
        fgbg::MaxIouAssigner(c).assign(b, gt, gl, fused);
        fgbg::MaxIouAssigner(c).assign_from_iou(iou_s, gl, matrix);
        INFO("trial " << trial << " n " << n << " g " << g);
        CHECK(fused.label_storage == matrix.label_storage);
        CHECK(fused.gt_storage == matrix.gt_storage);
        CHECK(fused.iou_storage == matrix.iou_storage);
        // thresholds compared in the IoU's scalar type: compare with a naive assigner run on
        // thresholds rounded to S
        auto cs = c;
        cs.pos_iou_thr = static_cast<S>(c.pos_iou_thr);
        cs.neg_iou_thr = static_cast<S>(c.neg_iou_thr);
        cs.min_pos_iou = static_cast<S>(c.min_pos_iou);
        check_same(fused, naive_assign(iou, gl, cs));
      }
    }
  }
}

TEST_CASE("add_gt_as_proposals prepends the GTs", "[boxes][assign]") {
  const auto props = boxes<double>({{0, 0, 10, 10}, {40, 40, 50, 50}});
  const auto g = boxes<double>({{0, 0, 10, 11}, {41, 40, 50, 50}, {80, 80, 90, 90}});
  fgbg::LabelVector gl(3);
  gl << 3, 1, 2;
  fgbg::Assignment a;
  fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rcnn()).assign(props, g, gl, a);
  fgbg::add_gt_as_proposals(a, gl);
  CHECK(a.size() == 5);
  CHECK(a.num_gt_proposals == 3);
  CHECK((a.labels() == (fgbg::LabelVector(5) << 3, 1, 2, 3, 1).finished()).all());
  CHECK((a.gt_index().head(3) == (Eigen::Array<std::int32_t, 3, 1>() << 0, 1, 2).finished()).all());
  CHECK((a.max_iou().head(3) == 1.0).all());
  CHECK_THROWS_WITH(fgbg::add_gt_as_proposals(a, gl), Catch::Contains("already prepended"));
  RowArray<double> all;
  fgbg::with_gt_boxes(props, g, all);
  CHECK(all.rows() == 5);
  CHECK((all.row(0) == g.row(0)).all());
  CHECK((all.row(3) == props.row(0)).all());
  // re-assigning the extended list reproduces the prepended rows (each GT matches itself)
  fgbg::Assignment b;
  fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rcnn()).assign(all, g, gl, b);
  CHECK(b.label_storage == a.label_storage);
  CHECK(b.gt_storage == a.gt_storage);
  // no GT: nothing to prepend
  fgbg::Assignment e;
  fgbg::MaxIouAssigner().assign(props, RowArray<double>(0, 4), fgbg::LabelVector(0), e);
  fgbg::add_gt_as_proposals(e, fgbg::LabelVector(0));
  CHECK(e.size() == 2);
}

TEST_CASE("MaxIouAssigner: bad inputs throw and change nothing", "[boxes][assign][errors]") {
  using C = fgbg::MaxIouAssignerConfig;
  CHECK_THROWS_WITH(fgbg::MaxIouAssigner(C{1.5, 0.4}),
                    "fgbg::MaxIouAssigner: config.pos_iou_thr must be in [0, 1], got 1.5");
  CHECK_THROWS_WITH(fgbg::MaxIouAssigner(C{0.5, 0.6}),
                    Catch::Contains("config.neg_iou_thr must be <= pos_iou_thr"));
  CHECK_THROWS_AS(fgbg::MaxIouAssigner(C{0.5, 0.4, -0.1}), std::invalid_argument);
  CHECK_THROWS_AS(fgbg::MaxIouAssigner(C{0.5, 0.4, 0.0, std::nan("")}), std::invalid_argument);

  const auto b = boxes<double>({{0, 0, 10, 10}, {5, 5, 9, 9}});
  const auto g = boxes<double>({{0, 0, 10, 10}});
  fgbg::Assignment a;
  fgbg::MaxIouAssigner().assign(b, g, fgbg::LabelVector::Constant(1, 3), a);
  const auto before = a.label_storage;
  CHECK_THROWS_WITH(fgbg::MaxIouAssigner().assign(b, g, fgbg::LabelVector::Constant(2, 3), a),
                    Catch::Contains("gt_labels must be a vector of 1 entries"));
  CHECK_THROWS_WITH(fgbg::MaxIouAssigner().assign(b, g, fgbg::LabelVector::Constant(1, 0), a),
                    Catch::Contains("gt_labels(0) = 0 must be a foreground class >= 1"));
  auto inv = g;
  inv(0, 3) = -1;
  CHECK_THROWS_WITH(fgbg::MaxIouAssigner().assign(b, inv, fgbg::LabelVector::Constant(1, 3), a),
                    Catch::Contains("is inverted"));
  RowArray<double> iou(2, 1);
  iou << 0.5, 1.5;
  CHECK_THROWS_WITH(
      fgbg::MaxIouAssigner().assign_from_iou(iou, fgbg::LabelVector::Constant(1, 3), a),
      Catch::Contains("iou(1, 0) = 1.5 is outside [0, 1]"));
  iou(1, 0) = std::nan("");
  CHECK_THROWS_AS(fgbg::MaxIouAssigner().assign_from_iou(iou, fgbg::LabelVector::Constant(1, 3), a),
                  std::domain_error);
  CHECK(a.label_storage == before);
}

TEST_CASE("MaxIouAssigner and iou_matrix allocate nothing in steady state", "[boxes][alloc]") {
  std::mt19937_64 rng(5);
  const RowArray<float> b = random_boxes(rng, 5000).cast<float>(),
                        g = random_boxes(rng, 12).cast<float>();
  fgbg::LabelVector gl = fgbg::LabelVector::Ones(12);
  Eigen::ArrayXXf out(5000, 12);
  fgbg::Assignment a;
  const fgbg::MaxIouAssigner rpn(fgbg::MaxIouAssignerConfig::rpn());
  rpn.assign(b, g, gl, a);  // warm-up: buffers get their capacity
  fgbg::iou_matrix(b, g, out);
  NoAllocScope guard;
  rpn.assign(b, g, gl, a);
  fgbg::iou_matrix(b, g, out);
  rpn.assign_from_iou(out, gl, a);
  CHECK(guard.count() == 0);
}
