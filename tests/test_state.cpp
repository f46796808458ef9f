// State under data parallelism and checkpointing (issue 11, items 3, 4 and 6): the ReduceBuffer
// header check, the blobs, GHM-C's three steps and its single-process equivalence.
#include <catch2/catch.hpp>

#include <fgbg/core/ema_normalizer.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>

#include <numeric>
#include <vector>

#include "support/problems.hpp"

namespace {

using fgbg::Index;

/// Rows [begin, end) of a problem, as the shard of one worker.
template <typename S>
struct Shard {
  fgbg::RowArray<S> logits;
  fgbg::LabelVector labels;
  Eigen::Array<S, Eigen::Dynamic, 1> weights;
};

template <typename S>
Shard<S> shard(const fgbg_test::Problem<S>& p, Index begin, Index end) {
  return {p.logits.middleRows(begin, end - begin), p.labels.segment(begin, end - begin),
          p.weights.segment(begin, end - begin)};
}

/// Uneven cut points of n rows into w shards; with `align` > 0 every cut is rounded down to a
/// multiple of `align` rows (a tile boundary of the dense engine, so that every element sits at
/// the same place of its tile in the shard as in the whole batch).
std::vector<Index> cuts(Index n, int w, Index align = 0) {
  const auto at = [align](Index r) { return align > 0 ? r / align * align : r; };
  std::vector<Index> c{0};
  if (w == 2) c.push_back(at(n * 3 / 10));
  if (w == 3) {
    c.push_back(at(n / 7));
    c.push_back(at(n * 5 / 8));
  }
  c.push_back(n);
  return c;
}

/// Rows of one tile of the dense engine for `classes` columns.
Index tile_rows(Index classes) {
  return fgbg::detail::TileGrid(1, classes).tile_rows;
}

/// The gradient of a sharded run against the whole batch's. With tile-aligned shards every
/// element goes through the same code path with the same per-element factors: bit-identical.
/// Otherwise an element can take the packet path in one run and the scalar path in the other
/// (σ, exp and log1p of each differ by an ulp or two, and clang contracts to FMA in one and not
/// the other), which the loss's derivative amplifies by its condition number: `ulps` bounds it
/// (observed: ≤ 2.8 eps for GHM-C's BCE, ≤ 6.8 eps for focal γ = 2, clang 14 -O0 -march=native;
/// ≤ 1 ulp with g++ 12 -O3).
template <typename A>
void check_sharded_grad(const A& g_dist, const A& g_whole, bool aligned, double ulps) {
  using S = typename A::Scalar;
  if (aligned) {
    CHECK((g_dist == g_whole).all());
  } else {
    const S bound = static_cast<S>(ulps) * std::numeric_limits<S>::epsilon();
    CHECK(((g_dist - g_whole).abs() <= bound * g_whole.abs()).all());
  }
}

template <typename S>
void ghmc_equivalence(int workers, double momentum, bool weighted, bool aligned) {
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 30;
  cfg.momentum = momentum;
  const fgbg::GhmcLoss<S> loss(cfg);
  fgbg::GhmcState whole(30), dist(30);
  fgbg_test::ProblemOptions o;
  o.n = 3001;
  o.classes = 7;
  for (int step = 0; step < 4; ++step) {
    const auto p = fgbg_test::random_problem<S>(1000 + step, o);
    fgbg::RowArray<S> g_whole(p.rows(), p.cols());
    const S v_whole = weighted ? loss.value_and_grad(p.logits, p.labels, g_whole, whole, p.weights)
                               : loss.value_and_grad(p.logits, p.labels, g_whole, whole);
    const auto c = cuts(p.rows(), workers, aligned ? tile_rows(p.cols()) : 0);
    std::vector<Shard<S>> shards;
    for (int r = 0; r < workers; ++r) shards.push_back(shard(p, c[r], c[r + 1]));
    // Step 1: every worker's statistics; step 2: the sum, in rank order.
    std::vector<fgbg::ReduceBuffer> local;
    for (const auto& s : shards)
      local.push_back(weighted ? loss.batch_statistics(s.logits, s.labels, s.weights)
                               : loss.batch_statistics(s.logits, s.labels));
    fgbg::ReduceBuffer reduced = local[0];
    for (int r = 1; r < workers; ++r) reduced += local[r];
    CHECK(reduced.workers() == workers);
    // Step 3: each worker's loss with the reduced statistics; every worker commits the same
    // moving average (one state per worker, here checked equal).
    fgbg::RowArray<S> g_dist(p.rows(), p.cols());
    double v_dist = 0, v_abs = 0;
    std::vector<fgbg::GhmcState> states(workers, dist);
    for (int r = 0; r < workers; ++r) {
      auto g = g_dist.middleRows(c[r], c[r + 1] - c[r]);
      const S v =
          weighted ? loss.value_and_grad(shards[r].logits, shards[r].labels, g, states[r],
                                         shards[r].weights, reduced)
                   : loss.value_and_grad(shards[r].logits, shards[r].labels, g, states[r], reduced);
      // value with the reduced buffer only reads the state and returns the same number.
      const fgbg::GhmcState before = dist;
      CHECK(loss.value(shards[r].logits, shards[r].labels, before, reduced) == v);
      v_dist += static_cast<double>(v);
      v_abs += std::abs(static_cast<double>(v));
    }
    for (int r = 1; r < workers; ++r) CHECK(states[r] == states[0]);
    dist = states[0];
    // Gradients: every element's factor β/tot comes from the same exact integer histogram and
    // the same moving average, so it is bit-identical; only the code path of σ can differ.
    INFO("W = " << workers << " step " << step << " momentum " << momentum << " aligned "
                << aligned);
    check_sharded_grad(g_dist, g_whole, aligned, 8);
    // State: bit-identical (integer counts, identical double arithmetic).
    CHECK(dist == whole);
    // Value: the whole-batch sum and the sum of W shard sums differ only in summation order
    // (and in each shard value's rounding to S); bound 4·eps(S)·Σ|terms| + that of the sum.
    const double eps = std::numeric_limits<S>::epsilon();
    CHECK(std::abs(v_dist - static_cast<double>(v_whole)) <=
          4 * eps * (v_abs + std::abs(static_cast<double>(v_whole))) + 1e-300);
  }
}

}  // namespace

TEST_CASE("ReduceBuffer: the header detects any disagreement across ranks", "[state]") {
  const auto a = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {30, 7}, 3);
  auto b = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {30, 7}, 3);
  const std::vector<const char*> names{"bins", "classes"};
  CHECK(a.check("t", fgbg::StateMethod::ghm_c, 1, a.size(), names) == 1.0);
  fgbg::ReduceBuffer sum = a;
  sum += b;
  sum += b;
  CHECK(sum.check("t", fgbg::StateMethod::ghm_c, 1, a.size(), names) == 3.0);
  CHECK(sum.decode(2) == 30);
  // Three ranks whose bins average to the first rank's (29, 30, 31): the sums alone match,
  // the sums of squares do not.
  auto lo = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {29, 7}, 3);
  auto hi = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {31, 7}, 3);
  fgbg::ReduceBuffer bad = lo;
  bad += a;
  bad += hi;
  CHECK_THROWS_WITH(bad.check("t", fgbg::StateMethod::ghm_c, 1, a.size(), names),
                    Catch::Contains("bins differs across ranks"));
  CHECK_THROWS_WITH(a.check("t", fgbg::StateMethod::equalized_focal, 1, a.size(), names),
                    Catch::Contains("method"));
  CHECK_THROWS_WITH(a.check("t", fgbg::StateMethod::ghm_c, 2, a.size(), names),
                    Catch::Contains("format version"));
  CHECK_THROWS_WITH(a.check("t", fgbg::StateMethod::ghm_c, 1, a.size() + 1, names),
                    Catch::Contains("doubles, expected"));
  fgbg::ReduceBuffer zero = a;
  zero.data()[0] = 0.0;
  CHECK_THROWS_WITH(zero.check("t", fgbg::StateMethod::ghm_c, 1, a.size(), names),
                    Catch::Contains("worker count"));
  // 64-bit fields survive exactly, real hyper-parameters through their bits.
  const auto m = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1,
                                          {fgbg::double_bits(0.75), ~std::uint64_t{0}}, 0);
  CHECK(fgbg::bits_double(m.decode(2)) == 0.75);
  CHECK(m.decode(3) == ~std::uint64_t{0});
  fgbg::ReduceBuffer wrong = a;
  CHECK_THROWS(wrong += m);
  CHECK(wrong == a);
}

TEST_CASE("GhmcState: save / load, snapshot / restore, equality", "[state]") {
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 12;
  cfg.momentum = 0.75;
  const fgbg::GhmcLoss<float> loss(cfg);
  fgbg::GhmcState s(12);
  for (int step = 0; step < 3; ++step) {
    const auto p = fgbg_test::random_problem<float>(7 + step);
    fgbg::RowArray<float> g;
    loss.value_and_grad(p.logits, p.labels, g, s);
  }
  const auto blob = s.save();
  fgbg::GhmcState t(3);
  CHECK(t != s);
  t.load(blob);
  CHECK(t == s);
  CHECK(t.save() == blob);
  fgbg::GhmcState u(12);
  u.restore(s.snapshot());
  CHECK(u == s);
  CHECK(u.snapshot() == s.snapshot());
  // The loaded state continues exactly as the original.
  const auto p = fgbg_test::random_problem<float>(99);
  fgbg::RowArray<float> g1, g2;
  const float v1 = loss.value_and_grad(p.logits, p.labels, g1, s);
  const float v2 = loss.value_and_grad(p.logits, p.labels, g2, t);
  CHECK(v1 == v2);
  CHECK((g1 == g2).all());
  CHECK(s == t);

  SECTION("every bad blob throws and leaves the state untouched") {
    const fgbg::GhmcState before = t;
    for (std::size_t i = 0; i < blob.size(); ++i) {
      auto bad = blob;
      bad[i] ^= 0x10;
      CHECK_THROWS_AS(t.load(bad), std::invalid_argument);
    }
    for (std::size_t n = 0; n < blob.size(); n += 7) {
      std::vector<std::uint8_t> cut(blob.begin(), blob.begin() + static_cast<long>(n));
      CHECK_THROWS_AS(t.load(cut), std::invalid_argument);
    }
    auto longer = blob;
    longer.push_back(0);
    CHECK_THROWS_AS(t.load(longer), std::invalid_argument);
    // Another version or method with a valid checksum: the reader names it.
    fgbg::BlobWriter other(fgbg::StateMethod::equalized_focal, fgbg::GhmcState::kVersion);
    other.u64(1);
    CHECK_THROWS_WITH(t.load(other.finish()), Catch::Contains("method EqualizedFocal"));
    fgbg::BlobWriter v2w(fgbg::StateMethod::ghm_c, fgbg::GhmcState::kVersion + 1);
    v2w.u64(1);
    CHECK_THROWS_WITH(t.load(v2w.finish()), Catch::Contains("version 2"));
    fgbg::GhmcState::Snapshot neg = before.snapshot();
    neg.moving[0] = -1.0;
    CHECK_THROWS_AS(t.restore(neg), std::invalid_argument);
    CHECK(t == before);
  }
}

TEST_CASE("GHM-C: bad reduce buffers throw before anything changes", "[state]") {
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 10;
  cfg.momentum = 0.5;
  const fgbg::GhmcLoss<double> loss(cfg);
  const auto p = fgbg_test::random_problem<double>(5);
  fgbg::GhmcState s(10);
  fgbg::RowArray<double> g = fgbg::RowArray<double>::Constant(p.rows(), p.cols(), 7.0);
  const fgbg::GhmcState before = s;
  const auto good = loss.batch_statistics(p.logits, p.labels);
  auto other_cfg = cfg;
  other_cfg.momentum = 0.75;
  const auto other = fgbg::GhmcLoss<double>(other_cfg).batch_statistics(p.logits, p.labels);
  // A rank with another momentum: its header's sums no longer agree.
  fgbg::ReduceBuffer mixed = good;
  mixed += other;
  CHECK_THROWS_WITH(loss.value_and_grad(p.logits, p.labels, g, s, mixed),
                    Catch::Contains("momentum differs across ranks"));
  // Every rank with the other momentum: consistent, but not this loss's.
  CHECK_THROWS_WITH(loss.value_and_grad(p.logits, p.labels, g, s, other),
                    Catch::Contains("momentum is"));
  auto bins_cfg = cfg;
  bins_cfg.bins = 11;
  const auto wrong_size = fgbg::GhmcLoss<double>(bins_cfg).batch_statistics(p.logits, p.labels);
  CHECK_THROWS_WITH(loss.value_and_grad(p.logits, p.labels, g, s, wrong_size),
                    Catch::Contains("doubles, expected"));
  fgbg::ReduceBuffer bad_count = good;
  bad_count.payload()[0] += 0.5;
  CHECK_THROWS_WITH(loss.value_and_grad(p.logits, p.labels, g, s, bad_count),
                    Catch::Contains("integer"));
  fgbg::ReduceBuffer bad_total = good;
  bad_total.payload()[0] += 1.0;
  CHECK_THROWS_WITH(loss.value_and_grad(p.logits, p.labels, g, s, bad_total),
                    Catch::Contains("sum to"));
  CHECK(s == before);
  CHECK((g == 7.0).all());
  // The local buffer is the reduced buffer of W = 1: bit-identical to the plain call.
  fgbg::GhmcState a(10), b(10);
  fgbg::RowArray<double> ga, gb;
  CHECK(loss.value_and_grad(p.logits, p.labels, ga, a) ==
        loss.value_and_grad(p.logits, p.labels, gb, b, good));
  CHECK((ga == gb).all());
  CHECK(a == b);
}

TEST_CASE("GHM-C: W workers with the reduced histogram equal one process", "[state]") {
  for (int w : {2, 3}) {
    for (bool aligned : {true, false}) {
      ghmc_equivalence<float>(w, 0.0, false, aligned);
      ghmc_equivalence<float>(w, 0.75, true, aligned);
      ghmc_equivalence<double>(w, 0.75, false, aligned);
      ghmc_equivalence<double>(w, 0.0, true, aligned);
    }
  }
}

TEST_CASE("Normalisers: global positive count and detectron2's EMA", "[state]") {
  fgbg_test::ProblemOptions o;
  o.n = 2000;
  o.classes = 6;
  const auto p = fgbg_test::random_problem<double>(31, o);
  const fgbg::SigmoidFocalLoss<double> focal;
  fgbg::RowArray<double> g_whole, g_dist(p.rows(), p.cols());
  const double v_whole = focal.value_and_grad(p.logits, p.labels, g_whole);
  for (int w : {2, 3}) {
    for (bool aligned : {true, false}) {
      const auto c = cuts(p.rows(), w, aligned ? tile_rows(p.cols()) : 0);
      fgbg::ReduceBuffer sum = fgbg::positive_count_buffer(p.labels.segment(0, c[1]), 6);
      for (int r = 1; r < w; ++r)
        sum += fgbg::positive_count_buffer(p.labels.segment(c[r], c[r + 1] - c[r]), 6);
      const fgbg::GlobalCounts gc = fgbg::reduced_counts(sum, 6);
      CHECK(gc.positives == p.positives());
      CHECK(gc.valid == (p.labels >= 0).count());
      CHECK(gc.workers == w);
      double v = 0;
      for (int r = 0; r < w; ++r) {
        auto g = g_dist.middleRows(c[r], c[r + 1] - c[r]);
        v += focal.value_and_grad(p.logits.middleRows(c[r], c[r + 1] - c[r]),
                                  p.labels.segment(c[r], c[r + 1] - c[r]), g, gc.avg_factor());
      }
      const double eps = std::numeric_limits<double>::epsilon();
      INFO("W = " << w << " aligned " << aligned);
      check_sharded_grad(g_dist, g_whole, aligned, 16);
      CHECK(std::abs(v - v_whole) <= 8 * eps * v_whole);
      // Classes that differ across ranks are detected in the reduced header.
      fgbg::ReduceBuffer mixed = fgbg::positive_count_buffer(p.labels.segment(0, c[1]), 6);
      mixed += fgbg::positive_count_buffer(p.labels.segment(c[1], c[2] - c[1]), 7);
      CHECK_THROWS_WITH(fgbg::reduced_counts(mixed, 6), Catch::Contains("classes differs"));
      CHECK_THROWS_WITH(fgbg::reduced_counts(sum, 5), Catch::Contains("classes is 6"));
    }
  }
  // detectron2: v0 = 100, v ← 0.9 v + 0.1 max(P, 1).
  fgbg::EmaNormalizer ema;
  double ref = 100.0;
  for (double pos : {0.0, 3.0, 250.0, 1.0}) {
    ref = ref * 0.9 + std::max(pos, 1.0) * (1 - 0.9);
    CHECK(ema.update(pos) == ref);
  }
  CHECK(ema.normalizer().factor == ref);
  fgbg::EmaNormalizer back;
  CHECK(back != ema);
  back.load(ema.save());
  CHECK(back == ema);
  fgbg::EmaNormalizer snap;
  snap.restore(ema.snapshot());
  CHECK(snap == ema);
  const auto blob = ema.save();
  for (std::size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x01;
    CHECK_THROWS_AS(back.load(bad), std::invalid_argument);
  }
  CHECK_THROWS_AS(back.load(fgbg::GhmcState(4).save()), std::invalid_argument);
  CHECK(back == ema);
  CHECK_THROWS_AS(ema.update(-1.0), std::invalid_argument);
}

namespace {

template <typename S>
void efl_equivalence(int workers, double decay, double tol) {
  fgbg::EqualizedFocalLossConfig<S> cfg;
  cfg.decay = decay;
  const fgbg::EqualizedFocalLoss<S> loss(cfg);
  fgbg_test::ProblemOptions o;
  o.n = 2500;
  o.classes = 9;
  fgbg::EqualizedFocalState whole(9), dist(9);
  for (int step = 0; step < 4; ++step) {
    const auto p = fgbg_test::random_problem<S>(500 + step, o);
    fgbg::RowArray<S> g_whole, g_dist(p.rows(), p.cols());
    const double v_whole = loss.value_and_grad(p.logits, p.labels, g_whole, whole, p.weights);
    const auto c = cuts(p.rows(), workers);
    fgbg::ReduceBuffer counts = fgbg::positive_count_buffer(p.labels.segment(0, c[1]), 9);
    for (int r = 1; r < workers; ++r)
      counts += fgbg::positive_count_buffer(p.labels.segment(c[r], c[r + 1] - c[r]), 9);
    const fgbg::Normalizer a = fgbg::reduced_counts(counts, 9).avg_factor();
    fgbg::ReduceBuffer sum;
    double v = 0;
    for (int r = 0; r < workers; ++r) {
      const auto sh = shard(p, c[r], c[r + 1]);
      auto g = g_dist.middleRows(c[r], c[r + 1] - c[r]);
      fgbg::ReduceBuffer local;
      const fgbg::EqualizedFocalState before = dist;
      v += loss.value_and_grad(sh.logits, sh.labels, g, dist, sh.weights, a, local);
      CHECK(dist == before);  // the buffer path does not commit
      if (r == 0)
        sum = local;
      else
        sum += local;
    }
    dist.commit(sum);
    const double gmax = g_whole.abs().template cast<double>().maxCoeff();
    INFO("W = " << workers << " step " << step);
    // Step 0: same γ_j, the shards differ only by an element's vectorised or scalar path in
    // its tile. Later steps: γ_j from G summed in another order (see the header's bound), so
    // gradients, values and G agree to `tol` relative.
    CHECK((g_dist - g_whole).abs().template cast<double>().maxCoeff() <= tol * gmax);
    CHECK(std::abs(v - v_whole) <= tol * std::abs(v_whole));
    CHECK(dist.updates() == whole.updates());
    CHECK(((dist.pos_grad() - whole.pos_grad()).abs() <= tol * whole.pos_grad().abs()).all());
    CHECK(((dist.neg_grad() - whole.neg_grad()).abs() <= tol * whole.neg_grad().abs()).all());
  }
}

}  // namespace

TEST_CASE("EFL: statistics into a buffer, summed, committed equal one process", "[state]") {
  for (int w : {2, 3}) {
    efl_equivalence<double>(w, 1.0, 1e-11);
    efl_equivalence<double>(w, 0.9, 1e-11);
    efl_equivalence<float>(w, 1.0, 1e-4);
  }
  // W = 1: the local buffer committed is bit-identical to the plain call.
  const fgbg::EqualizedFocalLoss<float> loss;
  const auto p = fgbg_test::random_problem<float>(3);
  fgbg::EqualizedFocalState a(p.cols()), b(p.cols());
  for (int step = 0; step < 3; ++step) {
    fgbg::RowArray<float> ga, gb;
    fgbg::ReduceBuffer buf;
    CHECK(loss.value_and_grad(p.logits, p.labels, ga, a) ==
          loss.value_and_grad(p.logits, p.labels, gb, b, buf));
    b.commit(buf);
    CHECK((ga == gb).all());
    CHECK(a == b);
  }
}

TEST_CASE("EqualizedFocalState: save / load, snapshot / restore, bad blobs and buffers",
          "[state]") {
  const fgbg::EqualizedFocalLoss<double> loss;
  const auto p = fgbg_test::random_problem<double>(11);
  fgbg::EqualizedFocalState s(p.cols());
  fgbg::RowArray<double> g;
  loss.value_and_grad(p.logits, p.labels, g, s);
  loss.value_and_grad(p.logits, p.labels, g, s);
  fgbg::EqualizedFocalState t;
  t.load(s.save());
  CHECK(t == s);
  fgbg::EqualizedFocalState u;
  u.restore(s.snapshot());
  CHECK(u == s);
  const auto blob = s.save();
  for (std::size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x80;
    CHECK_THROWS_AS(t.load(bad), std::invalid_argument);
  }
  std::vector<std::uint8_t> cut(blob.begin(), blob.end() - 9);
  CHECK_THROWS_AS(t.load(cut), std::invalid_argument);
  CHECK_THROWS_WITH(t.load(fgbg::GhmcState(5).save()), Catch::Contains("method GHM-C"));
  CHECK(t == s);
  // Buffers: wrong size, classes or hyper-parameters differing across ranks.
  fgbg::ReduceBuffer buf;
  loss.value_and_grad(p.logits, p.labels, g, s, buf);
  fgbg::EqualizedFocalState other(p.cols() + 1);
  CHECK_THROWS_WITH(other.commit(buf), Catch::Contains("doubles, expected"));
  fgbg::EqualizedFocalLossConfig<double> cfg2;
  cfg2.scale = 4;
  fgbg::ReduceBuffer buf2;
  fgbg::EqualizedFocalState s2 = s;
  fgbg::EqualizedFocalLoss<double>(cfg2).value_and_grad(p.logits, p.labels, g, s2, buf2);
  fgbg::ReduceBuffer mixed = buf;
  mixed += buf2;
  CHECK_THROWS_WITH(s.commit(mixed), Catch::Contains("scale differs across ranks"));
  fgbg::ReduceBuffer neg = buf;
  neg.payload()[0] = -1.0;
  CHECK_THROWS_AS(s.commit(neg), std::invalid_argument);
  CHECK(s == t);
  fgbg::ReduceBuffer short_buf =
      fgbg::ReduceBuffer::make(fgbg::StateMethod::equalized_focal, 1, {0, 0, 0, 0, 0}, 1);
  CHECK_THROWS_AS(s.commit(short_buf), std::invalid_argument);
  CHECK(s == t);
}
