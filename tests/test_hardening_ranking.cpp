// Issue 9 regressions of the ranking family: DR loss memory safety and aliasing (§1), AP, aLRP and
// Rank & Sort at the edges of δ and of the scores (§4), and their independence of the order of
// the anchors (§4). The oracle is the long-double O(P·N) loop (support/ranking_oracle_ld.hpp).
#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/dr_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "support/ranking_oracle_ld.hpp"

using fgbg::Index;
using fgbg::LabelVector;
using fgbg::RowArray;

namespace {

LabelVector labels_of(std::initializer_list<int> v) {
  LabelVector y(static_cast<Index>(v.size()));
  Index i = 0;
  for (int l : v) y[i++] = static_cast<fgbg::Label>(l);
  return y;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// §1 DR loss
// ---------------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("DR loss: a plain gradient of another shape is resized before it is written",
                   "[dr][hardening][memory]", float, double) {
  using S = TestType;
  RowArray<S> x(4, 2);
  x << S(0.3), S(-1.2), S(2.0), S(0.7), S(-0.4), S(1.5), S(0.9), S(-2.2);
  const LabelVector y = labels_of({1, 0, 2, -1});
  const fgbg::DRLoss<S> dr;
  RowArray<S> want(4, 2);  // a fresh buffer of the right shape: the reference
  const S v_want = dr.value_and_grad(x, y, want);
  for (Index r : {Index(1), Index(0), Index(7), Index(4)}) {
    for (Index c : {Index(1), Index(2), Index(0)}) {
      RowArray<S> g(r, c);
      g.setConstant(S(123));
      const S v = dr.value_and_grad(x, y, g);
      CHECK(v == v_want);
      REQUIRE(g.rows() == 4);
      REQUIRE(g.cols() == 2);
      for (Index i = 0; i < 4; ++i)
        for (Index j = 0; j < 2; ++j) CHECK(g(i, j) == want(i, j));
    }
  }
  // a non-finite logit with a wrongly shaped plain gradient: throws, gradient untouched
  RowArray<S> bad = x;
  bad(2, 1) = std::numeric_limits<S>::quiet_NaN();
  RowArray<S> g(1, 1);
  g(0, 0) = S(7);
  CHECK_THROWS_WITH(dr.value_and_grad(bad, y, g), Catch::Contains("logits(2, 1) is nan"));
  CHECK(g.rows() == 1);
  CHECK(g.cols() == 1);
  CHECK(g(0, 0) == S(7));
}

TEMPLATE_TEST_CASE("DR loss: a gradient sharing memory with the logits is rejected",
                   "[dr][hardening][alias]", float, double) {
  using S = TestType;
  using Map = Eigen::Map<RowArray<S>>;
  std::vector<S> buf(9 + 8);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = S(0.25) * S(static_cast<int>(i % 7) - 3);
  const std::vector<S> before = buf;
  const LabelVector y = labels_of({1, 0, 2, -1});
  const fgbg::DRLoss<S> dr;
  Map x(buf.data(), 4, 2);
  for (std::ptrdiff_t off : {1, 7, -3}) {
    if (off < 0) {
      Map xs(buf.data() + 3, 4, 2), gs(buf.data() + 3 + off, 4, 2);
      CHECK_THROWS_WITH(
          dr.value_and_grad(xs, y, gs),
          Catch::Contains("fgbg::DRLoss: grad must not share memory with the logits"));
    } else {
      Map g(buf.data() + off, 4, 2);
      CHECK_THROWS_WITH(
          dr.value_and_grad(x, y, g),
          Catch::Contains("fgbg::DRLoss: grad must not share memory with the logits"));
    }
    CHECK(buf == before);  // nothing written
  }
  // the other layout over the same buffer overlaps element by element: rejected
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>> gc(buf.data(), 4, 2);
  CHECK_THROWS_WITH(dr.value_and_grad(x, y, gc),
                    Catch::Contains("grad must not share memory with the logits"));
  CHECK(buf == before);
  // grouped overload too
  Eigen::Array<int, Eigen::Dynamic, 1> groups(4);
  groups << 0, 0, 1, 1;
  Map g1(buf.data() + 1, 4, 2);
  CHECK_THROWS_WITH(dr.value_and_grad(x, y, g1, groups),
                    Catch::Contains("grad must not share memory with the logits"));
  CHECK(buf == before);
  // a disjoint Map right after the logits is fine
  Map g8(buf.data() + 8, 4, 2);
  RowArray<S> want(4, 2);
  const RowArray<S> xc = x;
  const S v_want = dr.value_and_grad(xc, y, want);
  CHECK(dr.value_and_grad(x, y, g8) == v_want);
  CHECK((RowArray<S>(g8) == want).all());
  // the exact in-place gradient (same elements, same layout) stays supported (docs/dr_loss.md)
  buf = before;
  Map inplace(buf.data(), 4, 2);
  CHECK(dr.value_and_grad(inplace, y, inplace) == v_want);
  CHECK((RowArray<S>(inplace) == want).all());
}
