// Ranking losses (AP, aLRP, Rank & Sort): reference vectors, the spec's hand-checked vectors, a
// brute-force O(P·N) oracle on random problems with ties, balance identities, layouts, edge
// cases, errors and allocation-freedom.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>
#include <limits>
#include <random>

#include "support/ranking_oracle.hpp"
#include "support/reference.hpp"

using namespace fgbg_test;
using fgbg::Index;
using fgbg::RowArray;

namespace {

template <typename Scalar>
using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

/// Flattened row-major copy of an N × C array as a std::vector<double>.
template <typename D>
std::vector<double> flat(const Eigen::DenseBase<D>& g) {
  std::vector<double> out;
  for (Index r = 0; r < g.rows(); ++r)
    for (Index c = 0; c < g.cols(); ++c) out.push_back(static_cast<double>(g.derived()(r, c)));
  return out;
}

/// max |a − b| / max(1, max |b|) for two vectors.
template <typename A>
double rel_diff(const A& a, const std::vector<double>& b) {
  double scale = 1, diff = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  for (std::size_t i = 0; i < b.size(); ++i)
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  return diff / scale;
}

double rel_scalar(double a, double b) {
  return std::abs(a - b) / std::max(1.0, std::abs(b));
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Reference vectors (tests/data/*.json)
// ------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("AP loss matches the reference vectors", "[ap][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("ap_loss.json");
  fgbg::RankingWorkspace ws;
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const fgbg::APLoss<S> loss(
          {c["params"]["delta"].get<double>(), c["params"]["interpolate"].get<bool>()});
      RowArray<S> g(n, k);
      const S v = loss.value_and_grad(x, y, g, ws);
      check_scalar<S>("loss", v, c["expected"]["loss"]);
      if (n > 0) check_array<S>("grad", g, c["expected"]["grad"]);
      check_scalar<S>("value()", loss.value(x, y, ws), c["expected"]["loss"]);
    }
  }
}

TEMPLATE_TEST_CASE("aLRP loss matches the reference vectors", "[alrp][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("alrp_loss.json");
  fgbg::RankingWorkspace ws;
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const auto l = vector<S>(c["loc_error"]);
      const fgbg::ALRPLoss<S> loss(
          {c["params"]["delta"].get<double>(), c["params"]["eps"].get<double>()});
      RowArray<S> g(n, k);
      Vec<S> gl, rank;
      const auto v = loss.value_and_grad(x, y, l, g, gl, rank, ws);
      const json& e = c["expected"];
      check_scalar<S>("cls", v.cls, e["loss"]);
      check_scalar<S>("loc", v.loc, e["loc_loss"]);
      if (n > 0) {
        check_array<S>("grad", g, e["grad"]);
        check_array<S>("rank", rank, e["rank"]);
        check_array<S>("grad_loc_error", gl, e["grad_loc_error"]);
      }
      const auto v2 = loss.value(x, y, l, ws);
      check_scalar<S>("value().cls", v2.cls, e["loss"]);
      check_scalar<S>("value().loc", v2.loc, e["loc_loss"]);
    }
  }
}

TEMPLATE_TEST_CASE("RS loss matches the reference vectors", "[rs][reference]", float, double) {
  using S = TestType;
  const json ref = load_reference("rs_loss.json");
  fgbg::RankingWorkspace ws;
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"], k = c["num_classes"];
      const auto x = matrix<S>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const auto iou = vector<S>(c["iou"]);
      const fgbg::RankSortLoss<S> loss(
          {c["params"]["delta"].get<double>(), c["params"]["eps"].get<double>()});
      RowArray<S> g(n, k);
      const auto v = loss.value_and_grad(x, y, iou, g, ws);
      const json& e = c["expected"];
      check_scalar<S>("loss_rank", v.rank, e["loss_rank"]);
      check_scalar<S>("loss_sort", v.sort, e["loss_sort"]);
      check_scalar<S>("loss", v.total(), e["loss"]);
      if (n > 0) check_array<S>("grad", g, e["grad"]);
      const auto v2 = loss.value(x, y, iou, ws);
      check_scalar<S>("value().rank", v2.rank, e["loss_rank"]);
      check_scalar<S>("value().sort", v2.sort, e["loss_sort"]);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Spec §10.2 hand-checked vectors
// ------------------------------------------------------------------------------------------

namespace {
struct SpecInput {
  RowArray<double> x;
  fgbg::LabelVector y;
  SpecInput() : x(8, 1), y(8) {
    x << 2.0, 0.3, -0.4, 1.2, 0.0, -1.5, 0.25, 0.9;
    y << 1, 1, 1, 0, 0, 0, -1, 0;
  }
};

void check_vec(const RowArray<double>& g, std::initializer_list<double> want) {
  Index i = 0;
  for (double w : want) {
    INFO("entry " << i);
    CHECK(g(i, 0) == Approx(w).margin(1e-11));
    ++i;
  }
}
}  // namespace

TEST_CASE("ranking losses: hand-checked vectors", "[ap][alrp][rs][spec]") {
  const SpecInput in;
  RowArray<double> g;
  SECTION("AP, δ = 1, interpolated") {
    const double v = fgbg::APLoss<double>().value_and_grad(in.x, in.y, g);
    CHECK(v == Approx(0.354627354627).margin(1e-11));
    check_vec(g, {-0.030303030303, -0.162162162162, -0.162162162162, 0.163722163722, 0.069069069069,
                  0, 0, 0.121836121836});
  }
  SECTION("aLRP, δ = 1, ε = 1e-5") {
    Vec<double> l(8), gl, rank;
    l << 0.2, 0.6, 1.1, 0, 0, 0, 0, 0;
    fgbg::RankingWorkspace ws;
    const auto v = fgbg::ALRPLoss<double>().value_and_grad(in.x, in.y, l, g, gl, rank, ws);
    CHECK(v.cls == Approx(0.357171074818).margin(1e-11));
    CHECK(v.loc == Approx(0.237465272759).margin(1e-11));
    check_vec(g, {-0.030303030303, -0.193333333333, -0.204804804805, 0.193616979173, 0.085319764209,
                  0, 0, 0.149504425060});
    CHECK(rank[0] == Approx(1.1).margin(1e-12));
    CHECK(rank[1] == Approx(4.25).margin(1e-12));
    CHECK(rank[2] == Approx(5.55).margin(1e-12));
  }
  SECTION("RS, δ = 0.5, sorted and mis-sorted IoUs") {
    Vec<double> iou(8);
    iou << 0.9, 0.8, 0.6, 0, 0, 0, 0, 0;
    auto v = fgbg::RankSortLoss<double>().value_and_grad(in.x, in.y, iou, g);
    CHECK(v.rank == Approx(0.377210543877).margin(1e-11));
    CHECK(v.sort == Approx(0.0).margin(1e-12));
    check_vec(g, {0, -0.198198198198, -0.179012345679, 0.151818485152, 0.073573573574, 0, 0,
                  0.151818485152});
    iou << 0.6, 0.8, 0.9, 0, 0, 0, 0, 0;
    v = fgbg::RankSortLoss<double>().value_and_grad(in.x, in.y, iou, g);
    CHECK(v.rank == Approx(0.377210543877).margin(1e-11));
    CHECK(v.sort == Approx(0.097777777778).margin(1e-11));
    check_vec(g, {0.071111111111, -0.215975975976, -0.232345679012, 0.151818485152, 0.073573573574,
                  0, 0, 0.151818485152});
  }
}

// ------------------------------------------------------------------------------------------
// Brute-force oracle on random problems
// ------------------------------------------------------------------------------------------

namespace {

struct RandomCase {
  RowArray<double> x;
  fgbg::LabelVector y;
  Vec<double> aux;  // ℓ for aLRP, IoU for RS
  double delta;
};

RandomCase random_case(std::mt19937_64& rng, int kind) {
  std::uniform_int_distribution<int> nd(0, 60), cd(1, 5);
  std::uniform_real_distribution<double> uni(0, 1);
  const double deltas[] = {0.25, 0.5, 1.0, 2.0};
  RandomCase rc;
  const Index n = nd(rng), c = cd(rng);
  rc.delta = deltas[rng() % 4];
  rc.x.resize(n, c);
  rc.y.resize(n);
  rc.aux.resize(n);
  const bool grid = (rng() % 3) != 0;  // two thirds on a 0.25 grid: many exact ties
  const double pos_rate = 0.1 + 0.5 * uni(rng), ign_rate = 0.25 * uni(rng);
  for (Index a = 0; a < n; ++a) {
    for (Index k = 0; k < c; ++k) {
      const double v = 6 * uni(rng) - 3;
      rc.x(a, k) = grid ? std::round(v * 4) / 4 : v;
    }
    const double u = uni(rng);
    rc.y[a] = u < ign_rate ? -1 : (u < ign_rate + pos_rate ? 1 + static_cast<int>(rng() % c) : 0);
    if (kind == 1) {
      rc.aux[a] = grid ? std::round(uni(rng) * 8) / 4 : 2 * uni(rng);  // ℓ ∈ [0, 2] with ties
    } else {
      // IoU with ties on a 0.1 grid, some exactly 0 (→ negatives), some exactly 1
      const double t = uni(rng);
      rc.aux[a] = t < 0.1 ? 0.0 : (t < 0.7 ? std::round(uni(rng) * 10) / 10 : uni(rng));
    }
  }
  return rc;
}

}  // namespace

TEST_CASE("ranking losses equal the brute-force O(P·N) loop on random problems with ties",
          "[ap][alrp][rs][oracle]") {
  std::mt19937_64 rng(20261123);
  fgbg::RankingWorkspace ws;  // shared across cases and losses on purpose
  const double tol = 1e-12;
  int cases = 0, with_positives = 0;
  for (int it = 0; it < 400; ++it) {
    for (int kind = 0; kind < 3; ++kind) {
      const RandomCase rc = random_case(rng, kind);
      const Index n = rc.x.rows(), c = rc.x.cols();
      INFO("iteration " << it << ", kind " << kind << ", N = " << n << ", C = " << c
                        << ", delta = " << rc.delta);
      RowArray<double> g(n, c);
      if (kind == 0) {
        for (bool interp : {true, false}) {
          const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, false);
          const auto want = fgbg_oracle::ap_loss(f, n * c, rc.delta, interp);
          const double v =
              fgbg::APLoss<double>({rc.delta, interp}).value_and_grad(rc.x, rc.y, g, ws);
          CHECK(rel_scalar(v, want.loss) <= tol);
          CHECK(rel_diff(flat(g), want.grad) <= tol);
          with_positives += !f.ps.empty();
        }
      } else if (kind == 1) {
        const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, false);
        const auto want = fgbg_oracle::alrp_loss(f, n * c, n, rc.delta, 1e-5);
        Vec<double> gl, rank;
        const auto v = fgbg::ALRPLoss<double>({rc.delta, 1e-5})
                           .value_and_grad(rc.x, rc.y, rc.aux, g, gl, rank, ws);
        CHECK(rel_scalar(v.cls, want.loss) <= tol);
        CHECK(rel_scalar(v.loc, want.loss2) <= tol);
        CHECK(rel_diff(flat(g), want.grad) <= tol);
        CHECK(rel_diff(gl, want.grad_aux) <= tol);
        CHECK(rel_diff(rank, want.rank) <= tol);
        with_positives += !f.ps.empty();
      } else {
        const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, true);
        const auto want = fgbg_oracle::rs_loss(f, n * c, rc.delta, 1e-10);
        const auto v =
            fgbg::RankSortLoss<double>({rc.delta, 1e-10}).value_and_grad(rc.x, rc.y, rc.aux, g, ws);
        CHECK(rel_scalar(v.rank, want.loss) <= tol);
        CHECK(rel_scalar(v.sort, want.loss2) <= tol);
        CHECK(rel_diff(flat(g), want.grad) <= tol);
        with_positives += !f.ps.empty();
      }
      ++cases;
    }
  }
  CHECK(cases == 1200);
  CHECK(with_positives > 1000);
}

TEST_CASE("ranking losses: float logits give the double result rounded", "[ap][alrp][rs][float]") {
  std::mt19937_64 rng(5);
  fgbg::RankingWorkspace ws;
  for (int it = 0; it < 50; ++it) {
    const RandomCase rc = random_case(rng, 2);
    const RowArray<float> xf = rc.x.cast<float>();
    const RowArray<double> xd = xf.cast<double>();
    const Vec<float> iouf = rc.aux.cast<float>();
    const Vec<double> ioud = iouf.cast<double>();
    RowArray<float> gf;
    RowArray<double> gd;
    const auto vf = fgbg::RankSortLoss<float>().value_and_grad(xf, rc.y, iouf, gf, ws);
    const auto vd = fgbg::RankSortLoss<double>().value_and_grad(xd, rc.y, ioud, gd, ws);
    CHECK(vf.rank == static_cast<float>(vd.rank));
    CHECK(vf.sort == static_cast<float>(vd.sort));
    CHECK((gf == gd.cast<float>()).all());
    const float af = fgbg::APLoss<float>().value_and_grad(xf, rc.y, gf, ws);
    const double ad = fgbg::APLoss<double>().value_and_grad(xd, rc.y, gd, ws);
    CHECK(af == static_cast<float>(ad));
    CHECK((gf == gd.cast<float>()).all());
  }
}

// ------------------------------------------------------------------------------------------
// Identities (the papers' Theorem 2 of aLRP and its AP and RS analogues)
// ------------------------------------------------------------------------------------------

TEST_CASE("ranking losses: balance identities", "[ap][alrp][rs][identity]") {
  std::mt19937_64 rng(99);
  fgbg::RankingWorkspace ws;
  int checked = 0;
  for (int it = 0; it < 200; ++it) {
    for (int kind = 0; kind < 3; ++kind) {
      const RandomCase rc = random_case(rng, kind);
      const Index n = rc.x.rows(), c = rc.x.cols();
      RowArray<double> g(n, c);
      const bool rs = kind == 2;
      const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, rs);
      if (f.ps.empty()) continue;
      double sum_p = 0, sum_n = 0, scale = 1;
      if (kind == 0) {
        fgbg::APLoss<double>({rc.delta, true}).value_and_grad(rc.x, rc.y, g, ws);
      } else if (kind == 1) {
        Vec<double> gl;
        fgbg::ALRPLoss<double>({rc.delta, 1e-5}).value_and_grad(rc.x, rc.y, rc.aux, g, gl, ws);
      } else {
        fgbg::RankSortLoss<double>({rc.delta, 1e-10}).value_and_grad(rc.x, rc.y, rc.aux, g, ws);
      }
      const auto gv = flat(g);
      for (std::size_t i = 0; i < f.pi.size(); ++i) sum_p += gv[f.pi[i]];
      for (std::size_t j = 0; j < f.ni.size(); ++j) sum_n += gv[f.ni[j]];
      for (double v : gv) scale = std::max(scale, std::abs(v));
      INFO("iteration " << it << ", kind " << kind);
      if (!rs) {
        CHECK(std::abs(sum_n + sum_p) <= 1e-12 * scale * gv.size());
        CHECK(sum_p <= 0);
      } else {
        // Σ_N u = Σ_i r_i 1[F_i > ε] / n_P, from the oracle's per-positive terms
        const std::size_t P = f.ps.size();
        double want = 0;
        for (std::size_t i = 0; i < P; ++i) {
          double rp = 0, F = 0;
          for (std::size_t k = 0; k < P; ++k) rp += fgbg_oracle::H(f.ps[k] - f.ps[i], rc.delta);
          for (double s : f.ns) F += fgbg_oracle::H(s - f.ps[i], rc.delta);
          if (F > 1e-10) want += F / (rp + F);
        }
        CHECK(std::abs(sum_n - want / P) <= 1e-12 * std::max(1.0, want));
      }
      // ignored anchors get exactly zero
      for (Index a = 0; a < n; ++a)
        if (rc.y[a] < 0) CHECK((g.row(a) == 0).all());
      ++checked;
    }
  }
  CHECK(checked > 400);
}

// ------------------------------------------------------------------------------------------
// Layouts
// ------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("ranking losses: edge cases", "[ap][alrp][rs][edge]", float, double) {
  using S = TestType;
  fgbg::RankingWorkspace ws;
  const fgbg::APLoss<S> ap;
  const fgbg::ALRPLoss<S> alrp;
  const fgbg::RankSortLoss<S> rs;
  SECTION("N = 0") {
    RowArray<S> x(0, 4), g;
    fgbg::LabelVector y(0);
    Vec<S> aux(0), gl;
    CHECK(ap.value_and_grad(x, y, g, ws) == 0);
    CHECK(g.rows() == 0);
    CHECK(alrp.value_and_grad(x, y, aux, g, gl, ws).cls == 0);
    CHECK(rs.value_and_grad(x, y, aux, g, ws).total() == 0);
  }
  SECTION("no positives, all ignored, all positives with IoU 0") {
    RowArray<S> x = RowArray<S>::Random(6, 3) * S(4);
    RowArray<S> g = RowArray<S>::Constant(6, 3, S(5));
    Vec<S> aux = Vec<S>::Zero(6), gl = Vec<S>::Constant(6, S(5));
    for (int mode = 0; mode < 3; ++mode) {
      fgbg::LabelVector y = fgbg::LabelVector::Constant(6, mode == 0 ? 0 : (mode == 1 ? -1 : 2));
      CHECK(ap.value_and_grad(x, y, g, ws) == (mode == 2 ? ap.value(x, y, ws) : S(0)));
      if (mode < 2) CHECK((g == 0).all());
      g.setConstant(S(5));
      if (mode < 2) {
        const auto v = alrp.value_and_grad(x, y, aux, g, gl, ws);
        CHECK(v.cls == 0);
        CHECK(v.loc == 0);
        CHECK((g == 0).all());
        CHECK((gl == 0).all());
      }
      g.setConstant(S(5));
      const auto r = rs.value_and_grad(x, y, aux, g, ws);  // IoU 0: positives become negatives
      CHECK(r.rank == 0);
      CHECK(r.sort == 0);
      CHECK((g == 0).all());
    }
  }
  SECTION("no negatives: zero loss and update") {
    RowArray<S> x(3, 1), g;
    x << S(1), S(-2), S(0.5);
    fgbg::LabelVector y(3);
    y << 1, 1, 1;
    Vec<S> aux = Vec<S>::Constant(3, S(0.7)), gl;
    CHECK(ap.value_and_grad(x, y, g, ws) == 0);
    CHECK((g == 0).all());
    CHECK(alrp.value_and_grad(x, y, aux, g, gl, ws).cls == 0);
    CHECK((g == 0).all());
    CHECK(rs.value_and_grad(x, y, aux, g, ws).rank == 0);
    CHECK((g == 0).all());
  }
  SECTION("logits of ±1e4 give finite values equal to the oracle") {
    RowArray<S> x(6, 2);
    x << S(1e4), S(-1e4), S(0), S(1e4), S(-1e4), S(3), S(-1e4), S(1e4), S(2), S(-3), S(-1e4),
        S(-1e4);
    fgbg::LabelVector y(6);
    y << 1, 2, 1, 0, 2, 1;
    Vec<S> aux(6);
    aux << S(0.9), S(0.5), S(0.7), S(0), S(0.3), S(0.6);
    RowArray<S> g;
    Vec<S> gl;
    const RowArray<double> xd = x.template cast<double>();
    const Vec<double> auxd = aux.template cast<double>();
    const double v = ap.value_and_grad(x, y, g, ws);
    const auto want =
        fgbg_oracle::ap_loss(fgbg_oracle::flatten(xd, y, &auxd, false), 12, 1.0, true);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(rel_scalar(v, want.loss) <= 1e-6);
    CHECK(rel_diff(flat(g), want.grad) <= 1e-6);
    const auto va = alrp.value_and_grad(x, y, aux, g, gl, ws);
    CHECK(std::isfinite(static_cast<double>(va.cls)));
    CHECK(g.allFinite());
    const auto vr = rs.value_and_grad(x, y, aux, g, ws);
    const auto wr = fgbg_oracle::rs_loss(fgbg_oracle::flatten(xd, y, &auxd, true), 12, 0.5, 1e-10);
    CHECK(rel_scalar(vr.rank, wr.loss) <= 1e-6);
    CHECK(rel_diff(flat(g), wr.grad) <= 1e-6);
  }
  SECTION("negatives far below every positive get exactly zero") {
    RowArray<S> x(4, 1), g;
    x << S(1), S(-5), S(0.2), S(0);
    fgbg::LabelVector y(4);
    y << 1, 0, 0, 0;
    ap.value_and_grad(x, y, g, ws);
    CHECK(g(1, 0) == 0);
    CHECK(g(3, 0) == 0);  // exactly at s_min − δ: H = 0
    CHECK(g(2, 0) > 0);
  }
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

TEST_CASE("ranking losses: bad inputs throw and leave outputs and state untouched",
          "[ap][alrp][rs][errors]") {
  RowArray<double> x(4, 2);
  x << 1, 2, 3, 4, 5, 6, 7, 8;
  fgbg::LabelVector y(4);
  y << 1, 0, 2, -1;
  Vec<double> aux(4);
  aux << 0.5, 0, 0.8, 0;
  RowArray<double> g = RowArray<double>::Constant(4, 2, 42.0);
  Vec<double> gl = Vec<double>::Constant(4, 42.0), rank = Vec<double>::Constant(4, 42.0);
  fgbg::RankingWorkspace ws;
  const fgbg::APLoss<double> ap;
  const fgbg::ALRPLoss<double> alrp;
  const fgbg::RankSortLoss<double> rs;
  const auto untouched = [&] {
    CHECK((g == 42.0).all());
    CHECK((gl == 42.0).all());
    CHECK((rank == 42.0).all());
  };

  SECTION("labels out of range or of the wrong length") {
    fgbg::LabelVector bad = y;
    bad[1] = 3;
    CHECK_THROWS_AS(ap.value_and_grad(x, bad, g, ws), std::invalid_argument);
    CHECK_THROWS_AS(alrp.value_and_grad(x, bad, aux, g, gl, rank, ws), std::invalid_argument);
    CHECK_THROWS_AS(rs.value_and_grad(x, bad, aux, g, ws), std::invalid_argument);
    bad[1] = -2;
    CHECK_THROWS_AS(ap.value_and_grad(x, bad, g, ws), std::invalid_argument);
    fgbg::LabelVector shorter = y.head(3);
    CHECK_THROWS_AS(ap.value_and_grad(x, shorter, g, ws), std::invalid_argument);
    untouched();
  }
  SECTION("output views of the wrong shape") {
    RowArray<double> big = RowArray<double>::Constant(5, 2, 42.0);
    CHECK_THROWS_AS(ap.value_and_grad(x, y, big.block(0, 0, 3, 2), ws), std::invalid_argument);
    CHECK_THROWS_AS(rs.value_and_grad(x, y, aux, big.block(0, 0, 4, 1), ws), std::invalid_argument);
    CHECK_THROWS_AS(alrp.value_and_grad(x, y, aux, g, gl.head(3), ws), std::invalid_argument);
    CHECK_THROWS_AS(alrp.value_and_grad(x, y, aux, big.block(0, 0, 3, 2), gl, ws),
                    std::invalid_argument);
    CHECK((big == 42.0).all());
    untouched();
  }
  SECTION("side inputs") {
    CHECK_THROWS_AS(rs.value_and_grad(x, y, Vec<double>(aux.head(3)), g, ws),
                    std::invalid_argument);
    Vec<double> bad = aux;
    bad[2] = 1.5;
    CHECK_THROWS_AS(rs.value_and_grad(x, y, bad, g, ws), std::invalid_argument);
    bad[2] = -0.1;
    CHECK_THROWS_AS(rs.value_and_grad(x, y, bad, g, ws), std::invalid_argument);
    CHECK_THROWS_AS(alrp.value_and_grad(x, y, bad, g, gl, rank, ws), std::invalid_argument);
    bad[2] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(rs.value_and_grad(x, y, bad, g, ws), std::domain_error);
    CHECK_THROWS_AS(alrp.value_and_grad(x, y, bad, g, gl, rank, ws), std::domain_error);
    bad = aux;
    bad[3] = std::numeric_limits<double>::quiet_NaN();  // ignored anchor: not read
    CHECK_NOTHROW(rs.value(x, y, bad, ws));
    untouched();
  }
  SECTION("non-finite logits") {
    RowArray<double> xb = x;
    xb(2, 1) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(ap.value_and_grad(xb, y, g, ws), std::domain_error);
    CHECK_THROWS_AS(alrp.value_and_grad(xb, y, aux, g, gl, rank, ws), std::domain_error);
    CHECK_THROWS_AS(rs.value_and_grad(xb, y, aux, g, ws), std::domain_error);
    xb(2, 1) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(ap.value(xb, y, ws), std::domain_error);
    untouched();
  }
  SECTION("bad hyper-parameters") {
    for (double d : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
      CHECK_THROWS_AS(fgbg::APLoss<double>({d, true}), std::invalid_argument);
      CHECK_THROWS_AS(fgbg::ALRPLoss<double>({d, 1e-5}), std::invalid_argument);
      CHECK_THROWS_AS(fgbg::RankSortLoss<float>({d, 1e-10}), std::invalid_argument);
    }
    CHECK_THROWS_AS(fgbg::ALRPLoss<double>({1.0, -1e-5}), std::invalid_argument);
    CHECK_THROWS_AS(fgbg::RankSortLoss<double>({0.5, std::nan("")}), std::invalid_argument);
    CHECK_THROWS_WITH(fgbg::APLoss<double>({-1.0, true}),
                      Catch::Contains("fgbg::APLoss") && Catch::Contains("delta"));
    CHECK_THROWS_AS(fgbg::ALRPSelfBalance({0.0, 10}), std::invalid_argument);
    CHECK_THROWS_AS(fgbg::ALRPSelfBalance({50.0, 0}), std::invalid_argument);
  }
  SECTION("self-balance state is untouched by a bad update") {
    fgbg::ALRPSelfBalance sb({50.0, 2});
    sb.update(0.5, 0.25);
    CHECK_THROWS_AS(sb.update(std::nan(""), 0.1), std::invalid_argument);
    CHECK_THROWS_AS(sb.update(0.1, -1), std::invalid_argument);
    CHECK(sb.recorded() == 1);
    CHECK(sb.weight() == 50.0);
  }
}

TEST_CASE("aLRP self-balance follows the official head", "[alrp][state]") {
  fgbg::ALRPSelfBalance sb({50.0, 3});
  CHECK(sb.update(0.6, 0.2) == 50.0);
  CHECK(sb.update(0.5, 0.3) == 50.0);
  // period reached: (mean loc + mean cls) / mean loc = (0.25 + 0.5) / 0.25 = 3
  CHECK(sb.update(0.4, 0.25) == Approx(3.0).epsilon(1e-15));
  CHECK(sb.recorded() == 0);
  CHECK(sb.update(1.0, 1.0) == Approx(3.0).epsilon(1e-15));
  fgbg::ALRPLossValue<double> v{0.4, 0.1};
  CHECK(v.total(sb.weight()) == Approx(0.7));
  sb.reset();
  CHECK(sb.weight() == 50.0);
  CHECK(sb.recorded() == 0);
  fgbg::ALRPSelfBalance zero({50.0, 1});
  CHECK(zero.update(0.3, 0.0) == 50.0);  // mean loc 0: weight kept
}

// ------------------------------------------------------------------------------------------
// Allocation
// ------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("ranking losses allocate nothing in steady state", "[ap][alrp][rs][alloc]",
                   float, double) {
  using S = TestType;
  std::mt19937_64 rng(11);
  const Index n = 3000, c = 20;
  RowArray<S> x(n, c), g(n, c);
  fgbg::LabelVector y(n);
  Vec<S> aux(n), gl(n), rank(n);
  std::normal_distribution<double> nd(0, 2);
  for (Index a = 0; a < n; ++a) {
    for (Index k = 0; k < c; ++k) x(a, k) = static_cast<S>(std::round(nd(rng) * 4) / 4);
    y[a] = (rng() % 10 == 0) ? 1 + static_cast<int>(rng() % c) : ((rng() % 10 == 0) ? -1 : 0);
    aux[a] = static_cast<S>((rng() % 11) / 10.0);
  }
  const fgbg::APLoss<S> ap;
  const fgbg::ALRPLoss<S> alrp;
  const fgbg::RankSortLoss<S> rs;
  fgbg::RankingWorkspace ws;
  // warm-up: the workspace grows to this problem
  ap.value_and_grad(x, y, g, ws);
  alrp.value_and_grad(x, y, aux, g, gl, rank, ws);
  rs.value_and_grad(x, y, aux, g, ws);
  const std::size_t bytes = ws.capacity_bytes();
  long count = 0;
  {
    NoAllocScope guard;
    for (int r = 0; r < 2; ++r) {
      ap.value_and_grad(x, y, g, ws);
      ap.value(x, y, ws);
      alrp.value_and_grad(x, y, aux, g, gl, rank, ws);
      alrp.value(x, y, aux, ws);
      rs.value_and_grad(x, y, aux, g, ws);
      rs.value(x, y, aux, ws);
    }
    count = guard.count();
  }
  CHECK(count == 0);
  CHECK(ws.capacity_bytes() == bytes);
  // reserve() makes even the first call allocation-free
  fgbg::RankingWorkspace fresh;
  fresh.reserve(n, n * c);
  {
    NoAllocScope guard;
    rs.value_and_grad(x, y, aux, g, fresh);
    count = guard.count();
  }
  CHECK(count == 0);
  // ... also when it is given the exact counts (P and N_rel of this problem)
  rs.value_and_grad(x, y, aux, g, ws);
  Index p = 0;
  for (Index a = 0; a < n; ++a) p += (y[a] > 0 && aux[a] > S(0)) ? 1 : 0;
  fgbg::RankingWorkspace exact;
  exact.reserve(p, ws.relevant_negatives);
  {
    NoAllocScope guard;
    rs.value_and_grad(x, y, aux, g, exact);
    count = guard.count();
  }
  CHECK(count == 0);
  // ... and when the relevant negatives are far fewer than the entries of one anchor
  RowArray<S> x1 = RowArray<S>::Constant(1, 80, S(-100)), g1(1, 80);
  x1(0, 0) = S(0);
  for (Index k = 1; k <= 10; ++k) x1(0, k) = S(0.1);
  fgbg::LabelVector y1 = fgbg::LabelVector::Constant(1, 1);
  Vec<S> iou1 = Vec<S>::Constant(1, S(1));
  fgbg::RankingWorkspace small;
  small.reserve(1, 10);
  {
    NoAllocScope guard;
    rs.value_and_grad(x1, y1, iou1, g1, small);
    count = guard.count();
  }
  CHECK(count == 0);
  CHECK(small.relevant_negatives == 10);
}

// ------------------------------------------------------------------------------------------
// Primitives
// ------------------------------------------------------------------------------------------

TEST_CASE("ranking primitives: bucketed window search equals std::upper_bound / lower_bound",
          "[primitives]") {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> uni(-3, 3);
  fgbg::detail::BucketedSearch bs;
  long mismatches = 0, checked = 0;
  for (int it = 0; it < 300; ++it) {
    const std::uint32_t n = static_cast<std::uint32_t>(rng() % 200);
    std::vector<double> v(n);
    const int mode = it % 3;  // 0: continuous, 1: 0.25 grid (ties), 2: clustered + outlier
    for (double& e : v)
      e = mode == 0 ? uni(rng) : (mode == 1 ? std::round(uni(rng) * 4) / 4 : 1e-9 * uni(rng));
    if (mode == 2 && n > 0) v[0] = -1e4;
    std::sort(v.begin(), v.end());
    bs.build(v.data(), n);
    std::vector<double> queries = {-1e300, 1e300, -1e4, 0.0, 1e-12};
    for (double e : v) {
      queries.push_back(e);
      queries.push_back(std::nextafter(e, 1e300));
      queries.push_back(std::nextafter(e, -1e300));
    }
    for (int q = 0; q < 50; ++q) queries.push_back(uni(rng));
    for (double q : queries) {
      const auto w = bs.window(q, q);
      const auto lo = std::upper_bound(v.begin(), v.end(), q) - v.begin();
      const auto hi = std::lower_bound(v.begin(), v.end(), q) - v.begin();
      const auto w2 = fgbg::detail::find_window(v.data(), n, q, q);
      const bool ok = static_cast<long>(w.lo) == lo && static_cast<long>(w.hi) == hi &&
                      static_cast<long>(w2.lo) == lo && static_cast<long>(w2.hi) == hi;
      if (!ok) {
        INFO("n = " << n << ", mode = " << mode << ", q = " << q);
        CHECK(ok);
        ++mismatches;
      }
      ++checked;
    }
  }
  CHECK(mismatches == 0);
  CHECK(checked > 50000);
}

TEST_CASE("ranking primitives: a negative's slot gives its window by the definitions",
          "[primitives]") {
  // lo = #{k : s − u_k ≥ δ} (H = 1), hi = #{k : s − u_k > −δ} (H > 0), differences rounded as
  // written (the definition of H's argument everywhere in the ranking losses)
  std::mt19937_64 rng(19);
  std::uniform_real_distribution<double> uni(-3, 3);
  fgbg::detail::NegativeGrid grid;
  long mismatches = 0, checked = 0;
  for (int it = 0; it < 300; ++it) {
    const std::uint32_t p = 1 + static_cast<std::uint32_t>(rng() % 150);
    const double delta = std::vector<double>{0.25, 0.5, 1.0, 2.0, 1e-3}[it % 5];
    std::vector<double> u(p);
    const int mode = (it / 5) % 3;  // 0: continuous, 1: 0.25 grid (ties), 2: clustered
    for (double& e : u)
      e = mode == 0 ? uni(rng) : (mode == 1 ? std::round(uni(rng) * 4) / 4 : 1e-9 * uni(rng));
    std::sort(u.begin(), u.end());
    grid.build(u.data(), p, delta);
    const auto search = grid.search();
    std::vector<double> queries = {-1e300, 1e300, 0.0};
    for (double e : u)
      for (double t : {e - delta, e + delta, e})
        for (double q : {t, std::nextafter(t, 1e300), std::nextafter(t, -1e300)})
          queries.push_back(q);
    for (int q = 0; q < 50; ++q) queries.push_back(uni(rng));
    for (double s : queries) {
      long lo = 0, hi = 0;
      for (double e : u) {
        lo += (s - e >= delta) ? 1 : 0;
        hi += (s - e > -delta) ? 1 : 0;
      }
      const std::uint32_t slot = search.bound<false>(s);
      const auto w = grid.windows()[slot];
      const bool ok = static_cast<long>(w.lo) == lo && static_cast<long>(w.hi) == hi &&
                      (slot == 0) == (hi == 0);
      if (!ok) {
        INFO("p = " << p << ", mode = " << mode << ", delta = " << delta << ", s = " << s);
        CHECK(ok);
        ++mismatches;
      }
      ++checked;
    }
    // each positive's key positions: the slot just past its key is where its count changes
    for (std::uint32_t k = 0; k < p; ++k) {
      const double key = grid.keys()[grid.pos_hi(k)];  // the last s with s − u_k ≤ −δ
      CHECK(!(key - u[k] > -delta));
      CHECK(std::nextafter(key, 1e300) - u[k] > -delta);
      CHECK(grid.windows()[grid.pos_lo(k) + 1].lo > k);
      CHECK(grid.windows()[grid.pos_hi(k) + 1].hi > k);
    }
  }
  CHECK(mismatches == 0);
  CHECK(checked > 50000);
  // δ below half an ulp of the scores: u ± δ round to u, but the differences do not: a tie gets
  // H = ½ (issue 9; it used to get 0), the next double above gets 1, and a window never inverts
  const std::vector<double> big = {0.0, 1e9, 1e9, 3e9};
  grid.build(big.data(), 4, 1e-8);
  for (std::uint32_t t = 0; t <= 8; ++t) CHECK(grid.windows()[t].lo <= grid.windows()[t].hi);
  const auto tie = grid.windows()[grid.search().bound<false>(1e9)];
  CHECK(tie.lo == 1);
  CHECK(tie.hi == 3);
  const auto above = grid.windows()[grid.search().bound<false>(std::nextafter(1e9, 1e300))];
  CHECK(above.lo == 3);
  CHECK(above.hi == 3);
}

// ------------------------------------------------------------------------------------------
// Per-group rankings
// ------------------------------------------------------------------------------------------

namespace {

/// A random Rank & Sort case of at least 12 anchors (room for several groups), in scalar S, with
/// its IoUs and the localisation errors 1 − IoU.
template <typename S>
struct GroupCase {
  RandomCase rc;
  RowArray<S> x;
  Vec<S> iou, loc;
  explicit GroupCase(std::mt19937_64& rng) {
    do rc = random_case(rng, 2);
    while (rc.x.rows() < 12);
    x = rc.x.cast<S>();
    iou = rc.aux.cast<S>();
    loc = (S(1) - iou).max(S(0));
  }
};

}  // namespace

TEMPLATE_TEST_CASE("ranking losses: per-group rankings equal separate calls, averaged",
                   "[ap][alrp][rs][groups]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(23);
  fgbg::RankingWorkspace ws;
  for (int it = 0; it < 40; ++it) {
    const GroupCase<S> gc(rng);
    const RandomCase& rc = gc.rc;
    const RowArray<S>& x = gc.x;
    const Vec<S>&iou = gc.iou, &loc = gc.loc;
    const Index n = rc.x.rows(), c = rc.x.cols();
    // 3–4 groups (images) of consecutive anchors; one group may be without positives
    Eigen::ArrayXi groups(n);
    const Index cut1 = n / 3, cut2 = n / 2, cut3 = n - 2;
    for (Index a = 0; a < n; ++a) groups[a] = a < cut1 ? 0 : (a < cut2 ? 1 : (a < cut3 ? 5 : 7));
    fgbg::LabelVector y = rc.y;
    if (it % 2 == 0)
      for (Index a = cut2; a < cut3; ++a) y[a] = std::min(y[a], 0);  // group 5: no positives
    const Index bounds[] = {0, cut1, cut2, cut3, n};
    INFO("iteration " << it << ", N = " << n);

    const fgbg::APLoss<S> ap({rc.delta, true});
    const fgbg::ALRPLoss<S> alrp({rc.delta, 1e-5});
    const fgbg::RankSortLoss<S> rs({rc.delta, 1e-10});
    RowArray<S> g(n, c), want_g(n, c), gb;
    Vec<S> gl(n), rank(n), want_gl(n), want_rank(n), glb, rankb;

    // expected: one call per group, averaged over the groups with positives
    double ap_sum = 0, cls_sum = 0, loc_sum = 0, rank_sum = 0, sort_sum = 0;
    int ap_groups = 0, rs_groups = 0;
    RowArray<double> ap_g(n, c), alrp_g(n, c), rs_g(n, c);
    Vec<double> alrp_gl(n), alrp_rank(n);
    for (int k = 0; k < 4; ++k) {
      const Index f = bounds[k], len = bounds[k + 1] - bounds[k];
      const RowArray<S> xb = x.middleRows(f, len);
      const fgbg::LabelVector yb = y.segment(f, len);
      const Vec<S> iob = iou.segment(f, len), lob = loc.segment(f, len);
      const bool has_pos = (yb > 0).any();
      bool has_rs_pos = false;
      for (Index a = 0; a < len; ++a) has_rs_pos |= yb[a] > 0 && iob[a] > 0;
      ap_groups += has_pos;
      rs_groups += has_rs_pos;
      ap_sum += ap.value_and_grad(xb, yb, gb, ws);
      ap_g.middleRows(f, len) = gb.template cast<double>();
      const auto va = alrp.value_and_grad(xb, yb, lob, gb, glb, rankb, ws);
      cls_sum += va.cls;
      loc_sum += va.loc;
      alrp_g.middleRows(f, len) = gb.template cast<double>();
      alrp_gl.segment(f, len) = glb.template cast<double>();
      alrp_rank.segment(f, len) = rankb.template cast<double>();
      const auto vr = rs.value_and_grad(xb, yb, iob, gb, ws);
      rank_sum += vr.rank;
      sort_sum += vr.sort;
      rs_g.middleRows(f, len) = gb.template cast<double>();
    }
    const double tol = std::is_same<S, double>::value ? 1e-12 : 1e-5;
    const auto close_arr = [&](const auto& got, const auto& want, double div) {
      const double scale = std::max(1.0, want.abs().maxCoeff() / div);
      return ((got.template cast<double>() - want / div).abs() <= tol * scale).all();
    };
    const double dap = std::max(1, ap_groups), drs = std::max(1, rs_groups);
    const S v = ap.value_and_grad(x, y, g, fgbg::groups(groups), ws);
    CHECK(std::abs(v - ap_sum / dap) <= tol);
    CHECK(close_arr(g, ap_g, dap));
    const auto va = alrp.value_and_grad(x, y, loc, g, gl, rank, fgbg::groups(groups), ws);
    CHECK(std::abs(va.cls - cls_sum / dap) <= tol);
    CHECK(std::abs(va.loc - loc_sum / dap) <= tol);
    CHECK(close_arr(g, alrp_g, dap));
    CHECK(close_arr(gl, alrp_gl, dap));
    CHECK(close_arr(rank, alrp_rank, 1.0));
    const auto vr = rs.value_and_grad(x, y, iou, g, fgbg::groups(groups), ws);
    CHECK(std::abs(vr.rank - rank_sum / drs) <= tol);
    CHECK(std::abs(vr.sort - sort_sum / drs) <= tol);
    CHECK(close_arr(g, rs_g, drs));
  }
}

TEST_CASE("ranking losses: per-group errors leave outputs untouched", "[groups][errors]") {
  RowArray<double> x(4, 2);
  x << 1, 2, 3, 4, 5, 6, 7, 8;
  fgbg::LabelVector y(4);
  y << 1, 0, 2, -1;
  Vec<double> iou(4);
  iou << 0.5, 0, 0.8, 0;
  Eigen::ArrayXi groups(4);
  groups << 0, 1, 0, 1;  // not one run per group
  RowArray<double> g = RowArray<double>::Constant(4, 2, 42.0);
  Vec<double> gl = Vec<double>::Constant(4, 42.0), rank = Vec<double>::Constant(4, 42.0);
  fgbg::RankingWorkspace ws;
  CHECK_THROWS_AS(fgbg::APLoss<double>().value_and_grad(x, y, g, fgbg::groups(groups), ws),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      fgbg::RankSortLoss<double>().value_and_grad(x, y, iou, g, fgbg::groups(groups), ws),
      std::invalid_argument);
  CHECK_THROWS_AS(
      fgbg::ALRPLoss<double>().value_and_grad(x, y, iou, g, gl, rank, fgbg::groups(groups), ws),
      std::invalid_argument);
  Eigen::ArrayXi short_groups = Eigen::ArrayXi::Zero(3);
  CHECK_THROWS_AS(fgbg::APLoss<double>().value_and_grad(x, y, g, fgbg::groups(short_groups), ws),
                  std::invalid_argument);
  x(3, 1) = std::nan("");
  groups << 0, 0, 1, 1;
  CHECK_THROWS_AS(fgbg::APLoss<double>().value_and_grad(x, y, g, fgbg::groups(groups), ws),
                  std::domain_error);
  CHECK((g == 42.0).all());
  CHECK((gl == 42.0).all());
  CHECK((rank == 42.0).all());
}

// ------------------------------------------------------------------------------------------
// Per-anchor losses (fgbg::anchor_losses): each positive's own loss
// ------------------------------------------------------------------------------------------

namespace {

/// The oracle's per-positive losses as an N-vector (0 at every non-positive anchor).
std::vector<double> anchor_vector(const std::vector<double>& pos_loss,
                                  const std::vector<Index>& anchors, Index n) {
  std::vector<double> a(static_cast<std::size_t>(n), 0.0);
  for (std::size_t i = 0; i < pos_loss.size(); ++i) a[anchors[i]] = pos_loss[i];
  return a;
}

}  // namespace

TEST_CASE("ranking losses: anchor_losses hold each positive's own loss, value and update unchanged",
          "[ap][alrp][rs][loss_outputs]") {
  std::mt19937_64 rng(20261203);
  fgbg::RankingWorkspace ws;
  const double tol = 1e-12;
  int with_positives = 0;
  for (int it = 0; it < 150; ++it) {
    for (int kind = 0; kind < 3; ++kind) {
      const RandomCase rc = random_case(rng, kind);
      const Index n = rc.x.rows(), c = rc.x.cols();
      INFO("iteration " << it << ", kind " << kind << ", N = " << n << ", C = " << c);
      RowArray<double> g0(n, c), g1(n, c);
      Vec<double> a = Vec<double>::Constant(n, 7.0), av;  // stale entries must be overwritten
      std::vector<double> want;
      double mean_want = 0;
      if (kind == 0) {
        const fgbg::APLoss<double> loss({rc.delta, true});
        const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, false);
        const auto o = fgbg_oracle::ap_loss(f, n * c, rc.delta, true);
        want = anchor_vector(o.pos_loss, f.panchor, n);
        const double v0 = loss.value_and_grad(rc.x, rc.y, g0, ws);
        const double v1 = loss.value_and_grad(rc.x, rc.y, g1, ws, fgbg::anchor_losses(a));
        CHECK(v1 == v0);
        CHECK((g1 == g0).all());
        CHECK(loss.value(rc.x, rc.y, fgbg::anchor_losses(av)) == v0);
        mean_want = v0;
        with_positives += !f.ps.empty();
      } else if (kind == 1) {
        const fgbg::ALRPLoss<double> loss({rc.delta, 1e-5});
        const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, false);
        const auto o = fgbg_oracle::alrp_loss(f, n * c, n, rc.delta, 1e-5);
        want = anchor_vector(o.pos_loss, f.panchor, n);
        Vec<double> gl0, gl1, r0, r1;
        const auto v0 = loss.value_and_grad(rc.x, rc.y, rc.aux, g0, gl0, r0, ws);
        const auto v1 =
            loss.value_and_grad(rc.x, rc.y, rc.aux, g1, gl1, r1, ws, fgbg::anchor_losses(a));
        CHECK(v1.cls == v0.cls);
        CHECK(v1.loc == v0.loc);
        CHECK((g1 == g0).all());
        CHECK((gl1 == gl0).all());
        CHECK((r1 == r0).all());
        CHECK(loss.value(rc.x, rc.y, rc.aux, fgbg::anchor_losses(av)).cls == v0.cls);
        mean_want = v0.cls;
        with_positives += !f.ps.empty();
      } else {
        const fgbg::RankSortLoss<double> loss({rc.delta, 1e-10});
        const auto f = fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, true);
        const auto o = fgbg_oracle::rs_loss(f, n * c, rc.delta, 1e-10);
        want = anchor_vector(o.pos_loss, f.panchor, n);
        const auto v0 = loss.value_and_grad(rc.x, rc.y, rc.aux, g0, ws);
        const auto v1 = loss.value_and_grad(rc.x, rc.y, rc.aux, g1, ws, fgbg::anchor_losses(a));
        CHECK(v1.rank == v0.rank);
        CHECK(v1.sort == v0.sort);
        CHECK((g1 == g0).all());
        CHECK(loss.value(rc.x, rc.y, rc.aux, fgbg::anchor_losses(av)).total() == v0.total());
        mean_want = v0.total();
        with_positives += !f.ps.empty();
      }
      REQUIRE(a.size() == n);
      REQUIRE(av.size() == n);
      CHECK(rel_diff(a, want) <= tol);
      CHECK((av == a).all());
      // the value is the mean over the positives (RS: those with IoU > 0)
      const double np =
          kind == 2 ? static_cast<double>(fgbg_oracle::flatten(rc.x, rc.y, &rc.aux, true).ps.size())
                    : static_cast<double>((rc.y > 0).count());
      CHECK(rel_scalar(np > 0 ? a.sum() / np : 0.0, mean_want) <= tol);
    }
  }
  CHECK(with_positives > 300);
}

TEMPLATE_TEST_CASE("ranking losses: per-group anchor_losses equal the groups' own calls",
                   "[ap][alrp][rs][loss_outputs][groups]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(31);
  fgbg::RankingWorkspace ws;
  for (int it = 0; it < 30; ++it) {
    const GroupCase<S> gc(rng);
    const RandomCase& rc = gc.rc;
    const RowArray<S>& x = gc.x;
    const Vec<S>&iou = gc.iou, &loc = gc.loc;
    const Index n = rc.x.rows();
    Eigen::ArrayXi groups(n);
    const Index cut = n / 2;
    for (Index k = 0; k < n; ++k) groups[k] = k < cut ? 3 : 4;
    fgbg::LabelVector y = rc.y;
    if (it % 3 == 0)
      for (Index k = 0; k < cut; ++k) y[k] = std::min(y[k], 0);  // first group: no positives
    INFO("iteration " << it << ", N = " << n);
    const fgbg::APLoss<S> ap({rc.delta, true});
    const fgbg::ALRPLoss<S> alrp({rc.delta, 1e-5});
    const fgbg::RankSortLoss<S> rs({rc.delta, 1e-10});
    RowArray<S> g;
    Vec<S> gl, r, got, part, want_ap(n), want_alrp(n), want_rs(n);
    for (Index f : {Index(0), cut}) {
      const Index len = f == 0 ? cut : n - cut;
      const RowArray<S> xb = x.middleRows(f, len);
      const fgbg::LabelVector yb = y.segment(f, len);
      const Vec<S> iob = iou.segment(f, len), lob = loc.segment(f, len);
      ap.value(xb, yb, ws, fgbg::anchor_losses(part));
      want_ap.segment(f, len) = part;
      alrp.value(xb, yb, lob, ws, fgbg::anchor_losses(part));
      want_alrp.segment(f, len) = part;
      rs.value(xb, yb, iob, ws, fgbg::anchor_losses(part));
      want_rs.segment(f, len) = part;
    }
    got.setConstant(n, S(5));
    ap.value_and_grad(x, y, g, fgbg::groups(groups), ws, fgbg::anchor_losses(got));
    CHECK((got == want_ap).all());
    got.setConstant(n, S(5));
    alrp.value_and_grad(x, y, loc, g, gl, r, fgbg::groups(groups), ws, fgbg::anchor_losses(got));
    CHECK((got == want_alrp).all());
    got.setConstant(n, S(5));
    rs.value(x, y, iou, fgbg::groups(groups), ws, fgbg::anchor_losses(got));
    CHECK((got == want_rs).all());
  }
}

TEST_CASE("ranking losses: a bad anchor_losses output throws before anything is written",
          "[ap][alrp][rs][loss_outputs][errors]") {
  RowArray<double> x(4, 2);
  x << 1, 2, 3, 4, 5, 6, 7, 8;
  fgbg::LabelVector y(4);
  y << 1, 0, 2, -1;
  Vec<double> iou(4);
  iou << 0.5, 0, 0.7, 0;
  const fgbg::APLoss<double> ap;
  const fgbg::RankSortLoss<double> rs;
  const fgbg::ALRPLoss<double> alrp;
  RowArray<double> g = RowArray<double>::Constant(4, 2, 3.0);
  Vec<double> gl = Vec<double>::Constant(4, 3.0), r = gl;
  std::vector<double> buf(5, 9.0);
  Eigen::Map<Vec<double>> wrong(buf.data(), 3);  // a view of the wrong length
  const auto untouched = [&] {
    CHECK((g == 3.0).all());
    CHECK((gl == 3.0).all());
    CHECK(std::all_of(buf.begin(), buf.end(), [](double v) { return v == 9.0; }));
  };
  CHECK_THROWS_AS(ap.value_and_grad(x, y, g, fgbg::anchor_losses(wrong)), std::invalid_argument);
  CHECK_THROWS_AS(rs.value(x, y, iou, fgbg::anchor_losses(wrong)), std::invalid_argument);
  CHECK_THROWS_AS(alrp.value_and_grad(x, y, iou, g, gl, r, fgbg::anchor_losses(wrong)),
                  std::invalid_argument);
  untouched();
  // sharing memory with the logits, the gradient, an input or an output
  Eigen::Map<Vec<double>> on_x(x.data(), 4), on_g(g.data(), 4), on_iou(iou.data(), 4),
      on_gl(gl.data(), 4);
  const RowArray<double> x0 = x;
  const Vec<double> iou0 = iou;
  CHECK_THROWS_WITH(ap.value(x, y, fgbg::anchor_losses(on_x)),
                    Catch::Contains("anchor_losses must not share memory with the logits"));
  CHECK_THROWS_WITH(ap.value_and_grad(x, y, g, fgbg::anchor_losses(on_g)),
                    Catch::Contains("anchor_losses must not share memory with an output"));
  CHECK_THROWS_WITH(rs.value_and_grad(x, y, iou, g, fgbg::anchor_losses(on_iou)),
                    Catch::Contains("anchor_losses must not share memory with an input"));
  CHECK_THROWS_WITH(alrp.value_and_grad(x, y, iou, g, gl, r, fgbg::anchor_losses(on_gl)),
                    Catch::Contains("anchor_losses must not share memory with an output"));
  // a bad label is found before the output is touched, with and without groups
  fgbg::LabelVector bad = y;
  bad[1] = 9;
  Vec<double> a = Vec<double>::Constant(4, 9.0);
  Eigen::ArrayXi groups(4);
  groups << 0, 0, 1, 1;
  CHECK_THROWS_AS(ap.value_and_grad(x, bad, g, fgbg::anchor_losses(a)), std::invalid_argument);
  CHECK_THROWS_AS(ap.value_and_grad(x, bad, g, fgbg::groups(groups), fgbg::anchor_losses(a)),
                  std::invalid_argument);
  CHECK((a == 9.0).all());
  CHECK((x == x0).all());
  CHECK((iou == iou0).all());
  g.setConstant(3.0);
  untouched();
  // no positives: zeros
  fgbg::LabelVector none(4);
  none << 0, 0, -1, 0;
  CHECK(ap.value(x, none, fgbg::anchor_losses(a)) == 0.0);
  CHECK((a == 0.0).all());
  a.setConstant(9.0);
  CHECK(rs.value(x, none, iou, fgbg::groups(groups), fgbg::anchor_losses(a)).total() == 0.0);
  CHECK((a == 0.0).all());
}
