// State under data parallelism and checkpointing (issue 11, items 3, 4 and 6): the ReduceBuffer
// header check, the blobs, the three steps of GHM-C, EFL, residual objectness and
// AnchorStatistics and their single-process equivalence, IouBalancedState's checkpoint, and the
// buffer paths' steady state without allocation.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <catch2/catch.hpp>

#include <fgbg/core/ema_normalizer.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/unbiased/optimal_bias.hpp>
#include <fgbg/unbiased/residual_objectness.hpp>

#include <limits>
#include <numeric>
#include <random>
#include <sstream>
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

// ---------------------------------------------------------------------------------------------
// Shared checks of every blob: each flipped byte, each truncation and an extension is refused
// with std::invalid_argument and leaves the object as it was.

namespace {

template <typename T>
void check_blob_rejections(T& obj, const std::vector<std::uint8_t>& blob) {
  const T before = obj;
  long refused = 0;
  for (std::size_t i = 0; i < blob.size(); ++i) {
    for (const std::uint8_t mask : {std::uint8_t(0x01), std::uint8_t(0x80)}) {
      auto bad = blob;
      bad[i] ^= mask;
      try {
        obj.load(bad);
      } catch (const std::invalid_argument& e) {
        ++refused;
        CHECK_THAT(e.what(), Catch::StartsWith("fgbg::"));
      }
    }
  }
  CHECK(refused == 2 * static_cast<long>(blob.size()));
  for (std::size_t n = 0; n < blob.size(); ++n) {
    std::vector<std::uint8_t> cut(blob.begin(), blob.begin() + static_cast<long>(n));
    CHECK_THROWS_AS(obj.load(cut), std::invalid_argument);
  }
  for (const std::size_t extra : {std::size_t(1), std::size_t(8)}) {
    auto longer = blob;
    longer.insert(longer.end(), extra, std::uint8_t(0));
    CHECK_THROWS_AS(obj.load(longer), std::invalid_argument);
  }
  CHECK(obj == before);
}

/// A blob of `method`'s format with a valid checksum and the payload `write` puts in: contents
/// that only the object's own validation can refuse.
template <typename F>
std::vector<std::uint8_t> hand_blob(fgbg::StateMethod method, std::uint32_t version, F write) {
  fgbg::BlobWriter w(method, version);
  write(w);
  return w.finish();
}

}  // namespace

TEST_CASE("ReduceBuffer: size_for, assign in place", "[state]") {
  CHECK(fgbg::ReduceBuffer::size_for(2, 3) ==
        fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {30, 7}, 3).size());
  fgbg::ReduceBuffer b = fgbg::ReduceBuffer::make(fgbg::StateMethod::ghm_c, 1, {30, 7}, 9);
  b.payload()[0] = 5;
  const double* storage = b.data();
  b.assign(fgbg::StateMethod::equalized_focal, 2, {4}, 3);  // smaller: the same storage
  CHECK(b.data() == storage);
  CHECK(b == fgbg::ReduceBuffer::make(fgbg::StateMethod::equalized_focal, 2, {4}, 3));
  CHECK(b.payload()[0] == 0.0);
  const std::array<std::uint64_t, 1> f{4};
  fgbg::ReduceBuffer c;
  c.assign(fgbg::StateMethod::equalized_focal, 2, f, 3);
  CHECK(c == b);
  const std::array<const char*, 1> names{"classes"};
  CHECK(c.check("t", fgbg::StateMethod::equalized_focal, 2, c.size(), names) == 1.0);
  CHECK_THROWS_WITH(c.check("t", fgbg::StateMethod::equalized_focal, 2, c.size() - 1, names),
                    Catch::Contains("doubles, expected"));
}

TEST_CASE("EmaNormalizer: load validates its contents as restore does", "[state]") {
  fgbg::EmaNormalizer ema;
  ema.update(5.0);
  ema.update(12.0);
  const fgbg::EmaNormalizer before = ema;
  auto blob_of = [](double value, double momentum, double initial, std::int64_t updates) {
    return hand_blob(fgbg::StateMethod::ema_normalizer, fgbg::EmaNormalizer::kVersion,
                     [&](fgbg::BlobWriter& w) {
                       w.f64(value);
                       w.f64(momentum);
                       w.f64(initial);
                       w.i64(updates);
                     });
  };
  // The hand-written format is the one save() writes: a valid one loads.
  fgbg::EmaNormalizer other;
  other.load(blob_of(ema.value(), 0.9, 100.0, 2));
  CHECK(other == ema);
  CHECK(blob_of(ema.value(), 0.9, 100.0, 2) == ema.save());
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  struct Bad {
    double value, momentum, initial;
    std::int64_t updates;
    const char* field;
  };
  for (const Bad& b : {Bad{50, 1.0, 100, 1, "momentum"}, Bad{50, -0.1, 100, 1, "momentum"},
                       Bad{50, nan, 100, 1, "momentum"}, Bad{nan, 0.9, 100, 1, "value"},
                       Bad{0.5, 0.9, 100, 1, "value"}, Bad{inf, 0.9, 100, 1, "value"},
                       Bad{50, 0.9, 0.5, 1, "initial"}, Bad{50, 0.9, nan, 1, "initial"},
                       Bad{50, 0.9, 100, -1, "updates"}}) {
    INFO(b.field);
    CHECK_THROWS_WITH(
        ema.load(blob_of(b.value, b.momentum, b.initial, b.updates)),
        Catch::StartsWith("fgbg::EmaNormalizer: config.") && Catch::Contains(b.field));
    CHECK_THROWS_AS(ema.restore({b.value, b.momentum, b.initial, b.updates}),
                    std::invalid_argument);
    CHECK(ema == before);
  }
  check_blob_rejections(ema, ema.save());
  CHECK_THROWS_WITH(ema.load(fgbg::IouBalancedState().save()),
                    Catch::Contains("method IouBalanced"));
  CHECK(ema == before);
}

// ---------------------------------------------------------------------------------------------
// Residual objectness

namespace {

/// A residual-objectness batch: class logits N × C with labels, stage logits N × 2.
template <typename S>
struct ResObjBatch {
  fgbg::RowArray<S> z, s;
  fgbg::LabelVector y;
  Index rows() const { return z.rows(); }
};

template <typename S>
ResObjBatch<S> resobj_batch(std::uint64_t seed, Index n, Index c) {
  fgbg_test::ProblemOptions o;
  o.n = n;
  o.classes = c;
  o.positive_fraction = 0.08;
  const auto p = fgbg_test::random_problem<S>(seed, o);
  fgbg_test::ProblemOptions os = o;
  os.classes = 2;
  os.logit_centre = -6.9;  // the release's prior_bias(0.001) per stage
  os.logit_spread = 1.5;
  return {p.logits, fgbg_test::random_problem<S>(seed + 77, os).logits, p.labels};
}

template <typename S>
void resobj_equivalence(int workers, fgbg::EmaUpdates updates, bool aligned) {
  fgbg::ResidualObjectnessConfig cfg;
  cfg.ema_updates = updates;
  const fgbg::ResidualObjectnessLoss<S> loss(cfg);
  constexpr Index kC = 4;
  // 2048 rows per objectness tile (N × 1): 20000 rows give three tile-aligned uneven shards.
  const Index align = aligned ? tile_rows(1) : 0;
  fgbg::ResidualObjectnessState whole, dist;
  for (int step = 0; step < 4; ++step) {
    const auto b = resobj_batch<S>(300 + static_cast<std::uint64_t>(step), 20000, kC);
    fgbg::RowArray<S> gz_whole, gs_whole;
    const auto r_whole = loss.value_and_grad(b.z, b.y, b.s, gz_whole, gs_whole, whole);
    const auto c = cuts(b.rows(), workers, align);
    auto rows = [&](const auto& a, int r) { return a.middleRows(c[r], c[r + 1] - c[r]); };
    // Step 1 on every worker, step 2 in rank order.
    fgbg::ReduceBuffer reduced = loss.batch_statistics(rows(b.y, 0), kC);
    for (int r = 1; r < workers; ++r) reduced += loss.batch_statistics(rows(b.y, r), kC);
    CHECK(reduced.workers() == workers);
    // Step 3: every worker's call with the reduced counts commits its own copy of the state.
    fgbg::RowArray<S> gz(b.rows(), kC), gs(b.rows(), 2);
    std::vector<fgbg::ResidualObjectnessState> states(workers, dist);
    double obj = 0, cls = 0, obj_abs = 0, cls_abs = 0;
    Index positives = 0;
    for (int r = 0; r < workers; ++r) {
      auto gzr = gz.middleRows(c[r], c[r + 1] - c[r]);
      auto gsr = gs.middleRows(c[r], c[r + 1] - c[r]);
      const fgbg::ResidualObjectnessState before = states[r];
      const auto v = loss.value(rows(b.z, r), rows(b.y, r), rows(b.s, r), before, reduced);
      const auto res = loss.value_and_grad(rows(b.z, r), rows(b.y, r), rows(b.s, r), gzr, gsr,
                                           states[r], reduced);
      // value() with the reduced buffer reads the state only and reports the same numbers.
      CHECK(v.loss == res.loss);
      CHECK(v.obj_normalizer == res.obj_normalizer);
      // Normalisers from the exact global count: bit-identical to one process.
      CHECK(res.obj_normalizer == r_whole.obj_normalizer);
      CHECK(res.cls_normalizer == r_whole.cls_normalizer);
      CHECK(res.box_normalizer == r_whole.box_normalizer);
      obj += res.obj_loss;
      cls += res.cls_loss;
      obj_abs += std::abs(res.obj_loss);
      cls_abs += std::abs(res.cls_loss);
      positives += res.num_positives;  // this worker's count
    }
    CHECK(positives == r_whole.num_positives);
    for (int r = 1; r < workers; ++r) CHECK(states[r] == states[0]);
    dist = states[0];
    INFO("W = " << workers << " step " << step << " aligned " << aligned);
    // The committed E: the same m and the same arithmetic, bit for bit.
    CHECK(dist == whole);
    CHECK(dist.calls() == step + 1);
    // Class logits: each positive row is its own pass, whatever the shards: bit-identical.
    CHECK((gz == gz_whole).all());
    // Stage logits: the objectness tiles (2048 rows) match on aligned cuts; otherwise an
    // element's σ can take the vectorised path in one run and the scalar one in the other.
    check_sharded_grad(gs, gs_whole, aligned, 8);
    // Values (every term ≥ 0, so Σ|terms| is the value). L_cls: every positive row's sum is the
    // same in both runs; only the double sum over rows is regrouped: n terms summed in any order
    // are within (n − 1)·2^−53·Σ of the exact sum, so two orders differ by ≤ n·eps·Σ, n = P + W.
    // L_obj, aligned cuts: the same runs of 256 in the scalar type, regrouped in double, n =
    // N/256 + W runs. Unaligned: runs of ≤ 256 terms summed in S are cut elsewhere (≤ 255·u_S·Σ
    // each way, so ≤ 256·eps_S·Σ apart) and an element can take the other code path (≤ 8·eps_S
    // relative, as the gradient): 264·eps_S·Σ plus the double part.
    const double eps_d = std::numeric_limits<double>::epsilon();
    const double eps_s = std::numeric_limits<S>::epsilon();
    const double runs = static_cast<double>(b.rows()) / 256 + workers + 1;
    const double obj_bound =
        (runs * eps_d + (aligned ? 0.0 : 264 * eps_s)) * (obj_abs + r_whole.obj_loss) / 2;
    const double cls_bound = (static_cast<double>(r_whole.num_positives) + workers) * eps_d *
                             (cls_abs + r_whole.cls_loss) / 2;
    CHECK(std::abs(obj - r_whole.obj_loss) <= obj_bound);
    CHECK(std::abs(cls - r_whole.cls_loss) <= cls_bound);
  }
}

}  // namespace

TEST_CASE("Residual objectness: W workers with the reduced count equal one process", "[state]") {
  for (int w : {2, 3}) {
    for (bool aligned : {true, false}) {
      resobj_equivalence<float>(w, fgbg::EmaUpdates::three_per_call, aligned);
      resobj_equivalence<double>(w, fgbg::EmaUpdates::three_per_call, aligned);
      resobj_equivalence<double>(w, fgbg::EmaUpdates::one_per_call, aligned);
    }
  }
  // The cuts of the aligned runs are tile boundaries and leave no shard empty.
  for (int w : {2, 3}) {
    const auto c = cuts(20000, w, tile_rows(1));
    for (int r = 0; r < w; ++r) CHECK(c[r + 1] > c[r]);
    for (int r = 1; r < w; ++r) CHECK(c[r] % 2048 == 0);
  }
}

TEST_CASE("Residual objectness: a local buffer is the reduced buffer of W = 1", "[state]") {
  const fgbg::ResidualObjectnessLoss<float> loss;
  fgbg::ResidualObjectnessState a, b;
  for (int step = 0; step < 3; ++step) {
    const auto batch = resobj_batch<float>(40 + static_cast<std::uint64_t>(step), 3000, 6);
    fgbg::RowArray<float> gza, gsa, gzb, gsb;
    const fgbg::ReduceBuffer local = loss.batch_statistics(batch.y, 6);
    CHECK(local.workers() == 1.0);
    const auto ra = loss.value_and_grad(batch.z, batch.y, batch.s, gza, gsa, a);
    const auto rb = loss.value_and_grad(batch.z, batch.y, batch.s, gzb, gsb, b, local);
    CHECK(ra.loss == rb.loss);
    CHECK(ra.obj_loss == rb.obj_loss);
    CHECK(ra.cls_loss == rb.cls_loss);
    CHECK(ra.obj_normalizer == rb.obj_normalizer);
    CHECK(ra.cls_normalizer == rb.cls_normalizer);
    CHECK(ra.box_normalizer == rb.box_normalizer);
    CHECK(ra.num_positives == rb.num_positives);
    CHECK(ra.num_valid == rb.num_valid);
    CHECK((gza == gzb).all());
    CHECK((gsa == gsb).all());
    CHECK(a == b);
  }
  CHECK(a.calls() == 3);
}

TEST_CASE("Residual objectness: bad reduce buffers throw before anything changes", "[state]") {
  const fgbg::ResidualObjectnessLoss<double> loss;
  const auto batch = resobj_batch<double>(9, 500, 4);
  fgbg::ResidualObjectnessState st;
  fgbg::RowArray<double> gz0, gs0;
  loss.value_and_grad(batch.z, batch.y, batch.s, gz0, gs0, st);  // a started state
  const fgbg::ResidualObjectnessState before = st;
  fgbg::RowArray<double> gz = fgbg::RowArray<double>::Constant(500, 4, 7.0);
  fgbg::RowArray<double> gs = fgbg::RowArray<double>::Constant(500, 2, 7.0);
  const fgbg::ReduceBuffer good = loss.batch_statistics(batch.y, 4);
  auto call = [&](const fgbg::ReduceBuffer& b) {
    return loss.value_and_grad(batch.z, batch.y, batch.s, gz, gs, st, b);
  };
  auto value = [&](const fgbg::ReduceBuffer& b) {
    return loss.value(batch.z, batch.y, batch.s, st, b);
  };
  fgbg::ResidualObjectnessConfig other_cfg;
  other_cfg.ema_momentum = 0.8;
  const fgbg::ReduceBuffer other =
      fgbg::ResidualObjectnessLoss<double>(other_cfg).batch_statistics(batch.y, 4);
  fgbg::ReduceBuffer mixed = good;
  mixed += other;
  CHECK_THROWS_WITH(call(mixed), Catch::StartsWith("fgbg::ResidualObjectnessLoss: ") &&
                                     Catch::Contains("ema_momentum differs across ranks"));
  CHECK_THROWS_WITH(value(mixed), Catch::Contains("ema_momentum differs across ranks"));
  CHECK_THROWS_WITH(call(other), Catch::Contains("ema_momentum is"));
  fgbg::ResidualObjectnessConfig scale_cfg;
  scale_cfg.cls_normalizer_scale = 11;
  CHECK_THROWS_WITH(
      call(fgbg::ResidualObjectnessLoss<double>(scale_cfg).batch_statistics(batch.y, 4)),
      Catch::Contains("cls_normalizer_scale is"));
  fgbg::ResidualObjectnessConfig one_cfg;
  one_cfg.ema_updates = fgbg::EmaUpdates::one_per_call;
  CHECK_THROWS_WITH(
      call(fgbg::ResidualObjectnessLoss<double>(one_cfg).batch_statistics(batch.y, 4)),
      Catch::Contains("ema_updates is"));
  CHECK_THROWS_WITH(call(loss.batch_statistics(batch.y, 5)), Catch::Contains("classes is 5"));
  fgbg::ReduceBuffer classes_mixed = good;
  classes_mixed += loss.batch_statistics(batch.y, 5);
  CHECK_THROWS_WITH(call(classes_mixed), Catch::Contains("classes differs across ranks"));
  CHECK_THROWS_WITH(call(fgbg::positive_count_buffer(batch.y, 4)),
                    Catch::Contains("doubles, expected"));
  CHECK_THROWS_WITH(call(fgbg::ReduceBuffer()), Catch::Contains("doubles, expected"));
  fgbg::ReduceBuffer half = good;
  half.payload()[0] += 0.5;
  CHECK_THROWS_WITH(call(half), Catch::Contains("integer"));
  fgbg::ReduceBuffer nan = good;
  nan.payload()[1] = std::nan("");
  CHECK_THROWS_WITH(call(nan), Catch::Contains("integer"));
  fgbg::ReduceBuffer too_many = good;
  too_many.payload()[0] = too_many.payload()[1] + 1;
  CHECK_THROWS_WITH(call(too_many), Catch::Contains("exceeds the valid"));
  fgbg::ReduceBuffer few = good;
  few.payload()[0] -= 1;
  CHECK_THROWS_WITH(call(few), Catch::Contains("below this call's"));
  fgbg::ReduceBuffer zero_workers = good;
  zero_workers.data()[0] = 0;
  CHECK_THROWS_WITH(call(zero_workers), Catch::Contains("worker count"));
  CHECK_THROWS_WITH(loss.batch_statistics(batch.y, 3), Catch::Contains("is outside -1..3"));
  CHECK_THROWS_WITH(loss.batch_statistics(batch.y, -1), Catch::Contains("classes must be >= 0"));
  // batch_statistics into a buffer: a refused call leaves it as it was.
  fgbg::ReduceBuffer out = good;
  CHECK_THROWS_AS(loss.batch_statistics(batch.y, 2, out), std::invalid_argument);
  CHECK(out == good);
  CHECK(st == before);
  CHECK((gz == 7.0).all());
  CHECK((gs == 7.0).all());
  // A valid reduced buffer still works afterwards.
  call(good);
  CHECK(st.calls() == before.calls() + 1);
}

TEST_CASE("ResidualObjectnessState: save / load, snapshot / restore, bad blobs", "[state]") {
  const fgbg::ResidualObjectnessLoss<double> loss;
  fgbg::ResidualObjectnessState s;
  CHECK(!s.started());
  CHECK(s.calls() == 0);
  CHECK(s.num_pos_ema() == 0.0);
  for (int step = 0; step < 3; ++step) {
    const auto b = resobj_batch<double>(60 + static_cast<std::uint64_t>(step), 700, 5);
    fgbg::RowArray<double> gz, gs;
    loss.value_and_grad(b.z, b.y, b.s, gz, gs, s);
  }
  CHECK(s.calls() == 3);
  const auto blob = s.save();
  fgbg::ResidualObjectnessState t;
  CHECK(t != s);
  t.load(blob);
  CHECK(t == s);
  CHECK(t.save() == blob);
  CHECK(t.num_pos_ema() == s.num_pos_ema());
  fgbg::ResidualObjectnessState u;
  u.restore(s.snapshot());
  CHECK(u == s);
  CHECK(u.snapshot() == s.snapshot());
  // The loaded state continues exactly as the original.
  const auto b = resobj_batch<double>(99, 700, 5);
  fgbg::RowArray<double> gz1, gs1, gz2, gs2;
  const auto r1 = loss.value_and_grad(b.z, b.y, b.s, gz1, gs1, s);
  const auto r2 = loss.value_and_grad(b.z, b.y, b.s, gz2, gs2, t);
  CHECK(r1.loss == r2.loss);
  CHECK(r1.obj_normalizer == r2.obj_normalizer);
  CHECK((gz1 == gz2).all());
  CHECK((gs1 == gs2).all());
  CHECK(s == t);
  // A fresh state round-trips too.
  fgbg::ResidualObjectnessState fresh, f2 = s;
  f2.load(fresh.save());
  CHECK(f2 == fresh);
  s.reset();
  CHECK(s == fresh);

  check_blob_rejections(t, t.save());
  const fgbg::ResidualObjectnessState keep = t;
  CHECK_THROWS_WITH(t.load(fgbg::EmaNormalizer().save()), Catch::Contains("method EmaNormalizer"));
  CHECK_THROWS_WITH(t.load(hand_blob(fgbg::StateMethod::residual_objectness, 2,
                                     [](fgbg::BlobWriter& w) { w.f64(1); })),
                    Catch::Contains("version 2"));
  // Contents with a valid checksum that restore() refuses.
  auto blob_of = [](double ema, std::uint32_t started, std::int64_t calls) {
    return hand_blob(fgbg::StateMethod::residual_objectness,
                     fgbg::ResidualObjectnessState::kVersion, [&](fgbg::BlobWriter& w) {
                       w.f64(ema);
                       w.u32(started);
                       w.i64(calls);
                     });
  };
  CHECK(blob_of(keep.num_pos_ema(), 1, keep.calls()) == keep.save());
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(t.load(blob_of(50, 2, 1)), Catch::Contains("started flag is 2"));
  CHECK_THROWS_WITH(t.load(blob_of(nan, 1, 1)), Catch::Contains("finite and > 0"));
  CHECK_THROWS_WITH(t.load(blob_of(50, 1, -1)), Catch::Contains("calls must be >= 0"));
  CHECK(t == keep);
  struct Bad {
    fgbg::ResidualObjectnessState::Snapshot s;
    const char* message;
  };
  for (const Bad& bad :
       {Bad{{50, true, -3}, "calls must be >= 0"},
        Bad{{50, true, 0}, "started must equal calls > 0"},
        Bad{{50, false, 2}, "started must equal calls > 0"},
        Bad{{0, false, 0}, ""},  // valid: the fresh state
        Bad{{nan, true, 1}, "finite and > 0"}, Bad{{inf, true, 1}, "finite and > 0"},
        Bad{{-1, true, 1}, "finite and > 0"}, Bad{{0, true, 1}, "finite and > 0"},
        Bad{{3, false, 0}, "must be 0 before the first call"}}) {
    fgbg::ResidualObjectnessState v = keep;
    if (*bad.message == '\0') {
      v.restore(bad.s);
      CHECK(v == fresh);
      continue;
    }
    INFO(bad.message);
    CHECK_THROWS_WITH(v.restore(bad.s), Catch::StartsWith("fgbg::ResidualObjectnessState: ") &&
                                            Catch::Contains(bad.message));
    CHECK(v == keep);
  }
  // The call count cannot overflow: the call refuses, the state stays; value() still reads it.
  fgbg::ResidualObjectnessState last;
  last.restore({50.0, true, std::numeric_limits<std::int64_t>::max()});
  const fgbg::ResidualObjectnessState last_before = last;
  fgbg::RowArray<double> gz3, gs3;
  CHECK_THROWS_WITH(loss.value_and_grad(b.z, b.y, b.s, gz3, gs3, last),
                    Catch::Contains("would overflow"));
  CHECK(last == last_before);
  const double m = std::max<double>(1, static_cast<double>(r1.num_positives));
  CHECK(loss.value(b.z, b.y, b.s, last).obj_normalizer ==
        Approx(20 * (0.9 * 50.0 + 0.1 * m)).epsilon(1e-14));
}

// ---------------------------------------------------------------------------------------------
// AnchorStatistics

TEST_CASE("AnchorStatistics: W workers' reduced counts equal one process", "[state]") {
  constexpr Index kC = 7;
  for (int w : {2, 3}) {
    fgbg::AnchorStatistics whole(kC), from_ends(kC);
    std::vector<fgbg::AnchorStatistics> ranks(w, fgbg::AnchorStatistics(kC));
    std::vector<fgbg::AnchorStatistics> local(w, fgbg::AnchorStatistics(kC));
    for (int step = 0; step < 4; ++step) {
      fgbg_test::ProblemOptions o;
      o.n = 3001 + step;
      o.classes = kC;
      o.positive_fraction = 0.2;
      const auto p = fgbg_test::random_problem<float>(70 + static_cast<std::uint64_t>(step), o);
      whole.add(p.labels);
      const auto c = cuts(p.rows(), w);
      auto shard_labels = [&](int r) { return p.labels.segment(c[r], c[r + 1] - c[r]); };
      fgbg::ReduceBuffer sum = ranks[0].batch_statistics(shard_labels(0));
      for (int r = 1; r < w; ++r) sum += ranks[r].batch_statistics(shard_labels(r));
      for (int r = 0; r < w; ++r) ranks[r].commit(sum);
      for (int r = 0; r < w; ++r) local[r].add(shard_labels(r));  // a sharded pass, reduced below
      INFO("W = " << w << " step " << step);
      for (int r = 0; r < w; ++r) CHECK(ranks[r] == whole);
    }
    // A data set counted per worker with add(), reduced once at the end into a fresh object.
    fgbg::ReduceBuffer ends = local[0].counts_buffer();
    for (int r = 1; r < w; ++r) ends += local[r].counts_buffer();
    from_ends.commit(ends);
    CHECK(from_ends == whole);
    CHECK(from_ends.sigmoid_bias() == whole.sigmoid_bias());
    fgbg::AnchorStatistics merged = local[0];
    for (int r = 1; r < w; ++r) merged.merge(local[r]);
    CHECK(merged == whole);
  }
  // W = 1: commit(batch_statistics(labels)) is add(labels).
  const auto p = fgbg_test::random_problem<double>(5);
  fgbg::AnchorStatistics a(p.cols()), b(p.cols());
  for (int step = 0; step < 3; ++step) {
    a.add(p.labels);
    b.commit(b.batch_statistics(p.labels));
    CHECK(a == b);
  }
  CHECK(a.num_fg() == 3 * p.positives());
}

TEST_CASE("AnchorStatistics: save / load, snapshot / restore, bad blobs and buffers", "[state]") {
  const auto p = fgbg_test::random_problem<double>(17);
  fgbg::AnchorStatistics s(p.cols());
  s.add(p.labels);
  s.add(p.labels.head(20));
  const auto blob = s.save();
  fgbg::AnchorStatistics t(2);
  CHECK(t != s);
  t.load(blob);  // another C: the blob's
  CHECK(t == s);
  CHECK(t.num_classes() == p.cols());
  CHECK(t.save() == blob);
  fgbg::AnchorStatistics u(1);
  u.restore(s.snapshot());
  CHECK(u == s);
  CHECK(u.snapshot() == s.snapshot());
  // The loaded statistics continue exactly.
  s.add(p.labels);
  t.add(p.labels);
  CHECK(s == t);
  CHECK(s.sigmoid_bias() == t.sigmoid_bias());

  check_blob_rejections(t, t.save());
  const fgbg::AnchorStatistics keep = t;
  CHECK_THROWS_WITH(t.load(fgbg::GhmcState(3).save()), Catch::Contains("method GHM-C"));
  auto blob_of = [](std::uint64_t c, std::int64_t fg, std::int64_t bg, std::int64_t ig,
                    std::vector<std::int64_t> per_class) {
    return hand_blob(fgbg::StateMethod::anchor_statistics, fgbg::AnchorStatistics::kVersion,
                     [&](fgbg::BlobWriter& w) {
                       w.u64(c);
                       w.i64(fg);
                       w.i64(bg);
                       w.i64(ig);
                       for (auto v : per_class) w.i64(v);
                     });
  };
  fgbg::AnchorStatistics tiny(1);
  tiny.restore({{2}, 2, 3, 4});
  CHECK(blob_of(1, 2, 3, 4, {2}) == tiny.save());  // the format save() writes
  CHECK_THROWS_WITH(t.load(blob_of(2, 5, 1, 0, {2, 2})), Catch::Contains("sum to 4, num_fg is 5"));
  CHECK_THROWS_WITH(t.load(blob_of(2, 4, -1, 0, {2, 2})), Catch::Contains("must be >= 0"));
  CHECK_THROWS_WITH(t.load(blob_of(2, 4, 1, 0, {5, -1})), Catch::Contains("class 2 must be >= 0"));
  CHECK_THROWS_WITH(t.load(blob_of(0, 0, 1, 0, {})), Catch::Contains("blob of 0 classes"));
  CHECK_THROWS_WITH(t.load(blob_of(3, 4, 1, 0, {2, 2})), Catch::Contains("payload bytes"));
  CHECK_THROWS_WITH(t.load(blob_of(std::uint64_t(1) << 40, 0, 1, 0, {})),
                    Catch::Contains("payload bytes"));
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  CHECK_THROWS_WITH(t.load(blob_of(2, 0, 0, 0, {big, big})), Catch::Contains("overflows int64"));
  CHECK(t == keep);
  for (const fgbg::AnchorStatistics::Snapshot& bad :
       {fgbg::AnchorStatistics::Snapshot{{}, 0, 1, 0},
        fgbg::AnchorStatistics::Snapshot{{1}, 2, 1, 0},
        fgbg::AnchorStatistics::Snapshot{{1}, 1, 1, -4}}) {
    CHECK_THROWS_WITH(t.restore(bad), Catch::StartsWith("fgbg::AnchorStatistics: snapshot"));
    CHECK(t == keep);
  }

  // Buffers: another C, C differing across ranks, inexact or inconsistent counts, overflow.
  const Index c = keep.num_classes();
  const fgbg::ReduceBuffer good = t.batch_statistics(p.labels);
  fgbg::AnchorStatistics wider(c + 1);
  CHECK_THROWS_WITH(wider.commit(good), Catch::Contains("doubles, expected"));
  fgbg::ReduceBuffer mixed = good;
  fgbg::ReduceBuffer other_c = wider.batch_statistics(p.labels);
  CHECK_THROWS_AS(mixed += other_c, std::invalid_argument);  // sizes differ: nothing added
  CHECK(mixed == good);
  // Same size, another C on one rank: the header check sees it.
  fgbg::ReduceBuffer forged = good;
  forged.data()[1 + 2 * fgbg::ReduceBuffer::kSlotsPerField] += 1;  // C's lowest chunk, c only
  CHECK_THROWS_WITH(t.commit(forged), Catch::Contains("classes differs across ranks"));
  fgbg::ReduceBuffer half = good;
  half.payload()[1] += 0.5;
  CHECK_THROWS_WITH(t.commit(half), Catch::Contains("integer"));
  fgbg::ReduceBuffer inconsistent = good;
  inconsistent.payload()[3] += 1;  // class 1 one more than the foreground total
  CHECK_THROWS_WITH(t.commit(inconsistent), Catch::Contains("per-class counts sum to"));
  CHECK_THROWS_WITH(t.commit(fgbg::positive_count_buffer(p.labels, c)),
                    Catch::Contains("doubles, expected"));
  CHECK(t == keep);
  fgbg::AnchorStatistics full(c);
  std::vector<std::int64_t> per(static_cast<std::size_t>(c), 0);
  per[0] = big;
  full.restore({per, big, 0, 0});
  const fgbg::AnchorStatistics full_before = full;
  CHECK_THROWS_WITH(full.commit(good), Catch::Contains("overflows int64"));
  CHECK(full == full_before);
  fgbg::LabelVector bad_labels = p.labels;
  bad_labels[0] = static_cast<fgbg::Label>(c + 1);
  fgbg::ReduceBuffer out = good;
  CHECK_THROWS_AS(t.batch_statistics(bad_labels, out), std::invalid_argument);
  CHECK(out == good);
  // counts_buffer refuses counts that double cannot hold exactly.
  CHECK_THROWS_WITH(full.counts_buffer(), Catch::Contains("not exact in double"));
  t.commit(good);
  CHECK(t != keep);
}

// ---------------------------------------------------------------------------------------------
// IoU-balanced sampling: a per-rank state, checkpointed, never reduced

TEST_CASE("IouBalancedState: save / load, snapshot / restore; a resumed run draws the same",
          "[state]") {
  fgbg::IouBalancedSamplerConfig cfg;
  cfg.mode = fgbg::IouBalanceMode::faithful;
  const fgbg::IouBalancedSampler sampler(cfg);
  std::mt19937_64 data_rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  const Index n = 400;
  fgbg::LabelVector labels = fgbg::LabelVector::Zero(n);
  Eigen::ArrayXd iou(n);
  for (Index i = 0; i < n; ++i) {
    iou[i] = u(data_rng) < 0.3 ? 0.0 : 0.5 * u(data_rng);
    if (i % 10 == 0) labels[i] = 1;
  }
  fgbg::IouBalancedState state = sampler.initial_state();
  CHECK(state.floor_thr() == -1);
  CHECK(state == fgbg::IouBalancedState());
  std::mt19937_64 rng(11);
  fgbg::Sample first;
  sampler.sample_negatives(labels, iou, 40, rng, first, &state);
  CHECK(state.floor_thr() == 0);  // mmdet's flip, kept by the checkpoint below
  // Checkpoint: the state's blob and the generator's text.
  const auto blob = state.save();
  std::stringstream rng_text;
  rng_text << rng;
  fgbg::Sample a, b;
  sampler.sample_negatives(labels, iou, 40, rng, a, &state);
  fgbg::IouBalancedState resumed;
  CHECK(resumed != state);
  resumed.load(blob);
  CHECK(resumed == state);
  CHECK(resumed.save() == blob);
  std::mt19937_64 rng2;
  rng_text >> rng2;
  sampler.sample_negatives(labels, iou, 40, rng2, b, &resumed);
  CHECK(a.negatives == b.negatives);
  CHECK(resumed == state);
  fgbg::IouBalancedState snap;
  snap.restore(state.snapshot());
  CHECK(snap == state);
  CHECK(snap.snapshot() == state.snapshot());

  check_blob_rejections(resumed, blob);
  const fgbg::IouBalancedState keep = resumed;
  CHECK_THROWS_WITH(resumed.load(fgbg::EmaNormalizer().save()),
                    Catch::Contains("method EmaNormalizer"));
  auto blob_of = [](double thr) {
    return hand_blob(fgbg::StateMethod::iou_balanced, fgbg::IouBalancedState::kVersion,
                     [&](fgbg::BlobWriter& w) { w.f64(thr); });
  };
  CHECK(blob_of(0.0) == keep.save());
  for (const double bad :
       {-0.5, 1.5, -2.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    INFO(bad);
    CHECK_THROWS_WITH(
        resumed.load(blob_of(bad)),
        Catch::StartsWith("fgbg::IouBalancedState: floor_thr must be -1 or in [0, 1]"));
    CHECK_THROWS_AS(resumed.restore({bad}), std::invalid_argument);
    CHECK_THROWS_AS(fgbg::IouBalancedState(bad), std::invalid_argument);
    CHECK(resumed == keep);
  }
  resumed.restore({0.3});
  CHECK(resumed.floor_thr() == 0.3);
  // No reduce buffer: the state is per rank (see iou_balanced_sampler.hpp); its method tag only
  // marks blobs.
  CHECK(std::string(fgbg::state_method_name(7)) == "IouBalanced");
}

// ---------------------------------------------------------------------------------------------
// The buffer paths allocate nothing in steady state (EFL, reviewer's note; and the others).

TEST_CASE("State buffer paths allocate nothing in steady state", "[state][alloc]") {
  fgbg_test::ProblemOptions o;
  o.n = 1500;
  o.classes = 9;
  const auto p = fgbg_test::random_problem<float>(8, o);
  fgbg::RowArray<float> g(p.rows(), p.cols());
  const fgbg::Normalizer norm = fgbg::Normalizer::avg_factor(37.0);
  // EFL: value_and_grad(…, buffer) then commit, with the buffer of the previous step.
  const fgbg::EqualizedFocalLoss<float> efl;
  fgbg::EqualizedFocalState efl_state(p.cols());
  fgbg::ReduceBuffer efl_buf;
  efl.value_and_grad(p.logits, p.labels, g, efl_state, p.weights, norm, efl_buf);  // warm-up
  efl_state.commit(efl_buf);
  // GHM-C: the reduced histogram's call (the statistics are computed once, outside).
  fgbg::GhmcLossConfig gcfg;
  gcfg.bins = 30;
  gcfg.momentum = 0.75;
  const fgbg::GhmcLoss<float> ghmc(gcfg);
  fgbg::GhmcState ghmc_state(30);
  const fgbg::ReduceBuffer ghmc_buf = ghmc.batch_statistics(p.logits, p.labels);
  ghmc.value_and_grad(p.logits, p.labels, g, ghmc_state, ghmc_buf);
  // Residual objectness: batch_statistics into the reused buffer, then the call.
  const fgbg::ResidualObjectnessLoss<float> resobj;
  fgbg::ResidualObjectnessState ro_state;
  const auto rb = resobj_batch<float>(8, 1500, 9);
  fgbg::RowArray<float> gz(1500, 9), gs(1500, 2);
  fgbg::ReduceBuffer ro_buf;
  resobj.batch_statistics(rb.y, 9, ro_buf);
  resobj.value_and_grad(rb.z, rb.y, rb.s, gz, gs, ro_state, ro_buf);
  // AnchorStatistics: batch_statistics into the reused buffer, commit.
  fgbg::AnchorStatistics stats(p.cols());
  fgbg::ReduceBuffer st_buf;
  stats.batch_statistics(p.labels, st_buf);
  stats.commit(st_buf);
  double sink = 0;
  long count = 0;
  {
    fgbg_test::NoAllocScope guard;
    for (int r = 0; r < 2; ++r) {
      sink += efl.value_and_grad(p.logits, p.labels, g, efl_state, p.weights, norm, efl_buf);
      efl_state.commit(efl_buf);
      sink += ghmc.value_and_grad(p.logits, p.labels, g, ghmc_state, ghmc_buf);
      resobj.batch_statistics(rb.y, 9, ro_buf);
      sink += resobj.value_and_grad(rb.z, rb.y, rb.s, gz, gs, ro_state, ro_buf).loss;
      stats.batch_statistics(p.labels, st_buf);
      stats.commit(st_buf);
    }
    count = guard.count();
  }
  CHECK(count == 0);
  CHECK(std::isfinite(sink));
  CHECK(efl_state.updates() == 3);
  CHECK(ro_state.calls() == 3);
  CHECK(stats.num_fg() == 3 * p.positives());
}

TEST_CASE("GhmcState, EqualizedFocalState: load refuses valid-checksum blobs of bad contents",
          "[state]") {
  fgbg::GhmcState g(2);
  const fgbg::GhmcState g0 = g;
  auto ghm_blob = [](double s0, std::int64_t r0, std::int64_t n, double tot) {
    return hand_blob(fgbg::StateMethod::ghm_c, fgbg::GhmcState::kVersion, [&](fgbg::BlobWriter& w) {
      w.u64(2);
      w.f64(s0);
      w.f64(0.0);
      w.i64(r0);
      w.i64(0);
      w.i64(n);
      w.f64(tot);
    });
  };
  CHECK(ghm_blob(0.0, 0, 0, 0.0) == g.save());  // the format save() writes
  CHECK_THROWS_WITH(g.load(ghm_blob(-1.0, 0, 0, 0.0)), Catch::Contains("must be finite and >= 0"));
  CHECK_THROWS_WITH(g.load(ghm_blob(std::nan(""), 0, 0, 0.0)), Catch::Contains("bin 0"));
  CHECK_THROWS_WITH(g.load(ghm_blob(0.0, -2, 0, 0.0)), Catch::Contains("bin 0"));
  CHECK_THROWS_WITH(g.load(ghm_blob(0.0, 0, 3, 0.0)), Catch::Contains("n must be in 0..bins"));
  CHECK_THROWS_WITH(g.load(ghm_blob(0.0, 0, 0, -1.0)), Catch::Contains("tot finite and >= 0"));
  CHECK(g == g0);
  fgbg::EqualizedFocalState e(1);
  const fgbg::EqualizedFocalState e0 = e;
  auto efl_blob = [](double pos, double neg, double ratio, std::int64_t updates) {
    return hand_blob(fgbg::StateMethod::equalized_focal, fgbg::EqualizedFocalState::kVersion,
                     [&](fgbg::BlobWriter& w) {
                       w.u64(1);
                       w.f64(pos);
                       w.f64(neg);
                       w.f64(ratio);
                       w.i64(updates);
                     });
  };
  CHECK(efl_blob(0.0, 0.0, 1.0, 0) == e.save());
  CHECK_THROWS_WITH(e.load(efl_blob(-1.0, 0.0, 1.0, 0)), Catch::Contains("class 0 has G+ = -1"));
  CHECK_THROWS_WITH(e.load(efl_blob(0.0, std::numeric_limits<double>::infinity(), 1.0, 0)),
                    Catch::Contains("class 0"));
  CHECK_THROWS_WITH(e.load(efl_blob(0.0, 0.0, 1.5, 0)), Catch::Contains("g in [0, 1]"));
  CHECK_THROWS_WITH(e.load(efl_blob(0.0, 0.0, 1.0, -1)), Catch::Contains("updates must be >= 0"));
  CHECK(e == e0);
}
