// Hard samplers: batch-rule invariants on many random assignments, determinism, uniformity
// (chi-square), OHEM top-k with index ties (mmdet and paper modes), SSD mining, IoU-balanced bins
// (the faithful state of mmdetection), instance balance, sample_weights / normalisers, errors, no
// allocation.
#include "support/no_alloc.hpp"
// (no_alloc.hpp must come first)
#include <catch2/catch.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <limits>
#include <map>
#include <random>
#include <set>

using namespace fgbg_test;
using fgbg::Index;
using fgbg::LabelVector;
using fgbg::RowArray;
using fgbg::Sample;

namespace {

// Random labels with random shares of positives / negatives / ignored.
LabelVector random_labels(std::mt19937_64& rng, Index n) {
  std::uniform_real_distribution<double> u(0, 1);
  const double p_pos = u(rng) * u(rng), p_ign = 0.3 * u(rng);
  LabelVector l(n);
  for (Index i = 0; i < n; ++i) {
    const double r = u(rng);
    l[i] = r < p_pos ? 1 + static_cast<int>(rng() % 5) : (r < p_pos + p_ign ? -1 : 0);
  }
  return l;
}

// Checks the invariants every sampler of the batch rule must satisfy; returns #pool sizes.
void check_batch_invariants(const Sample& s, const LabelVector& l, const fgbg::SamplerConfig& c,
                            bool exact_counts) {
  Index pos_pool = (l > 0).count(), neg_pool = (l == 0).count();
  std::set<Index> seen;
  for (Index i : s.positives) {
    REQUIRE(i >= 0);
    REQUIRE(i < l.size());
    CHECK(l[i] > 0);
    CHECK(seen.insert(i).second);
  }
  for (Index i : s.negatives) {
    REQUIRE(i >= 0);
    REQUIRE(i < l.size());
    CHECK(l[i] == 0);
    CHECK(seen.insert(i).second);
  }
  CHECK(std::is_sorted(s.positives.begin(), s.positives.end()));
  CHECK(std::is_sorted(s.negatives.begin(), s.negatives.end()));
  const Index p = s.num_positives(), q = s.num_negatives();
  CHECK(p <= static_cast<Index>(std::floor(c.num * c.pos_fraction)));
  CHECK(p + q <= c.num);
  if (c.neg_pos_ub >= 0) CHECK(q <= static_cast<Index>(c.neg_pos_ub * std::max<Index>(1, p)));
  if (exact_counts) {
    CHECK(p == std::min(pos_pool, c.expected_positives()));
    CHECK(q == std::min(neg_pool, c.expected_negatives(p)));
  }
}

std::vector<fgbg::SamplerConfig> configs() {
  auto libra_rpn = fgbg::SamplerConfig::rpn();
  libra_rpn.neg_pos_ub = 5;
  return {fgbg::SamplerConfig::rpn(), fgbg::SamplerConfig::rcnn(), libra_rpn,
          fgbg::SamplerConfig{64, 1.0, 2.5, true}, fgbg::SamplerConfig{10, 0.0, -1, true}};
}

// Brute force: the k indices of `pool` first in (loss desc, index asc) order, ascending.
std::vector<Index> brute_top_k(const std::vector<Index>& pool, const Eigen::ArrayXd& loss,
                               Index k) {
  std::vector<Index> v = pool;
  std::sort(v.begin(), v.end(),
            [&](Index a, Index b) { return loss[a] > loss[b] || (loss[a] == loss[b] && a < b); });
  v.resize(std::min<std::size_t>(v.size(), static_cast<std::size_t>(k)));
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<Index> where(const LabelVector& l, bool positive) {
  std::vector<Index> v;
  for (Index i = 0; i < l.size(); ++i)
    if (positive ? l[i] > 0 : l[i] == 0) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("RandomSampler: batch invariants on many random assignments", "[sampling][random]") {
  std::mt19937_64 data_rng(1), rng(2);
  Sample s;
  for (int trial = 0; trial < 300; ++trial) {
    const Index n = static_cast<Index>(data_rng() % 3000);
    const LabelVector l = random_labels(data_rng, n);
    for (const auto& c : configs()) {
      fgbg::RandomSampler(c).sample(l, rng, s);
      check_batch_invariants(s, l, c, true);
    }
  }
}

TEST_CASE("RandomSampler: presets, fill with negatives, neg_pos_ub, determinism",
          "[sampling][random]") {
  CHECK(fgbg::SamplerConfig::rpn().num == 256);
  CHECK(fgbg::SamplerConfig::rpn().pos_fraction == 0.5);
  CHECK(fgbg::SamplerConfig::rcnn().num == 512);
  CHECK(fgbg::SamplerConfig::rcnn().pos_fraction == 0.25);
  LabelVector l = LabelVector::Zero(5000);
  for (Index i = 0; i < 10; ++i) l[i * 7] = 3;
  for (Index i = 4000; i < 4100; ++i) l[i] = -1;
  std::mt19937_64 rng(7);
  Sample s;
  fgbg::RandomSampler(fgbg::SamplerConfig::rpn()).sample(l, rng, s);
  CHECK(s.num_positives() == 10);
  CHECK(s.num_negatives() == 246);  // too few positives: filled with negatives
  auto ub = fgbg::SamplerConfig::rpn();
  ub.neg_pos_ub = 5;
  fgbg::RandomSampler(ub).sample(l, rng, s);
  CHECK(s.num_negatives() == 50);
  fgbg::RandomSampler(ub).sample(LabelVector::Zero(100), rng, s);
  CHECK(s.num_positives() == 0);
  CHECK(s.num_negatives() == 5);  // max(1, P) with no positive
  fgbg::RandomSampler().sample(LabelVector::Constant(30, -1), rng, s);
  CHECK(s.size() == 0);
  fgbg::RandomSampler().sample(LabelVector(0), rng, s);
  CHECK(s.size() == 0);

  Sample a, b;
  std::mt19937_64 r1(99), r2(99), r3(100);
  fgbg::RandomSampler(fgbg::SamplerConfig::rpn()).sample(l, r1, a);
  fgbg::RandomSampler(fgbg::SamplerConfig::rpn()).sample(l, r2, b);
  CHECK(a.positives == b.positives);
  CHECK(a.negatives == b.negatives);
  fgbg::RandomSampler(fgbg::SamplerConfig::rpn()).sample(l, r3, b);
  CHECK(a.negatives != b.negatives);
  // unsorted mode: same set, draw order
  auto unsorted = fgbg::SamplerConfig::rpn();
  unsorted.sorted = false;
  std::mt19937_64 r4(99);
  fgbg::RandomSampler(unsorted).sample(l, r4, b);
  CHECK(std::set<Index>(a.negatives.begin(), a.negatives.end()) ==
        std::set<Index>(b.negatives.begin(), b.negatives.end()));
  CHECK(!std::is_sorted(b.negatives.begin(), b.negatives.end()));
  // 32-bit generators work too
  std::mt19937 r32(5);
  fgbg::RandomSampler().sample(l, r32, b);
  CHECK(b.num_negatives() == 502);
}

TEST_CASE("RandomSampler: selection is uniform (chi-square)", "[sampling][random][stats]") {
  // 20 positives, 5 kept per draw: each should be kept with probability 1/4.
  LabelVector l = LabelVector::Zero(60);
  for (Index i = 0; i < 20; ++i) l[3 * i] = 1;
  const fgbg::RandomSampler sampler({10, 0.5, -1, true});
  std::mt19937_64 rng(2024);
  Sample s;
  std::vector<double> pos_count(60, 0.0), neg_count(60, 0.0);
  const int draws = 20000;
  for (int t = 0; t < draws; ++t) {
    sampler.sample(l, rng, s);
    REQUIRE(s.num_positives() == 5);
    REQUIRE(s.num_negatives() == 5);
    for (Index i : s.positives) pos_count[i] += 1;
    for (Index i : s.negatives) neg_count[i] += 1;
  }
  double chi_pos = 0, chi_neg = 0;
  const double e_pos = draws * 5.0 / 20.0, e_neg = draws * 5.0 / 40.0;
  for (Index i = 0; i < 60; ++i) {
    if (l[i] > 0)
      chi_pos += (pos_count[i] - e_pos) * (pos_count[i] - e_pos) / e_pos;
    else
      chi_neg += (neg_count[i] - e_neg) * (neg_count[i] - e_neg) / e_neg;
  }
  // 19 and 39 degrees of freedom; 99.99th percentiles ≈ 51.1 and 80.8 (Wilson–Hilferty)
  CHECK(chi_pos < 51.1);
  CHECK(chi_neg < 80.8);
}

TEST_CASE("Samplers: bad configs and inputs throw and change nothing", "[sampling][errors]") {
  CHECK_THROWS_WITH(fgbg::RandomSampler({256, 1.5}),
                    "fgbg::RandomSampler: config.pos_fraction must be in [0, 1], got 1.5");
  CHECK_THROWS_WITH(fgbg::RandomSampler({256, -0.1}),
                    Catch::Contains("config.pos_fraction must be in [0, 1]"));
  CHECK_THROWS_AS(fgbg::RandomSampler({256, std::nan("")}), std::invalid_argument);
  CHECK_THROWS_WITH(fgbg::RandomSampler({-1, 0.5}),
                    "fgbg::RandomSampler: config.num must be >= 0, got -1");
  CHECK_THROWS_WITH(fgbg::OhemSampler({256, 0.5, -2}),
                    Catch::Contains("config.neg_pos_ub must be -1 (no bound) or finite >= 0"));
  CHECK_THROWS_WITH(fgbg::RandomSampler({256, 0.5, -0.5}),
                    "fgbg::RandomSampler: config.neg_pos_ub must be -1 (no bound) or finite >= 0, "
                    "got -0.5");
  CHECK_THROWS_AS(fgbg::RandomSampler({256, 0.5, std::numeric_limits<double>::infinity()}),
                  std::invalid_argument);
  CHECK_NOTHROW(fgbg::RandomSampler({256, 0.5, -1}));
  CHECK_NOTHROW(fgbg::RandomSampler({256, 0.5, 0}));
  CHECK_THROWS_AS(fgbg::OhemPaperSampler({-5}), std::invalid_argument);
  CHECK_THROWS_AS(fgbg::OhemPaperSampler({64, true, 1.5}), std::invalid_argument);
  CHECK_THROWS_AS(fgbg::SsdHardNegativeMining({-1.0}), std::invalid_argument);
  fgbg::IouBalancedSamplerConfig ib;
  ib.floor_fraction = 1.2;
  CHECK_THROWS_WITH(fgbg::IouBalancedSampler(ib),
                    Catch::Contains("config.floor_fraction must be in [0, 1]"));
  ib = {};
  ib.num_bins = 0;
  CHECK_THROWS_AS(fgbg::IouBalancedSampler(ib), std::invalid_argument);
  ib = {};
  ib.floor_thr = -0.5;
  CHECK_THROWS_AS(fgbg::IouBalancedSampler(ib), std::invalid_argument);
  fgbg::InstanceBalancedSamplerConfig inst;
  inst.batch.pos_fraction = 2;
  CHECK_THROWS_AS(fgbg::InstanceBalancedSampler(inst), std::invalid_argument);

  LabelVector l(5);
  l << 0, 1, -2, 0, 1;
  Sample s;
  s.positives = {42};
  s.negatives = {43};
  std::mt19937_64 rng(1);
  auto untouched = [&] {
    return s.positives == std::vector<Index>{42} && s.negatives == std::vector<Index>{43};
  };
  CHECK_THROWS_WITH(fgbg::RandomSampler().sample(l, rng, s),
                    Catch::Contains("labels(2) = -2 is below -1"));
  CHECK(untouched());
  l[2] = 0;
  Eigen::ArrayXd loss = Eigen::ArrayXd::Ones(4);
  CHECK_THROWS_WITH(fgbg::OhemSampler().sample(l, loss, s),
                    Catch::Contains("losses must be a vector of 5 entries"));
  CHECK_THROWS_AS(fgbg::SsdHardNegativeMining().sample(l, loss, s), std::invalid_argument);
  loss = Eigen::ArrayXd::Ones(5);
  loss[3] = std::nan("");
  CHECK_THROWS_AS(fgbg::OhemSampler().sample(l, loss, s), std::domain_error);
  CHECK_THROWS_AS(fgbg::SsdHardNegativeMining().sample(l, loss, s), std::domain_error);
  CHECK(untouched());
  RowArray<double> boxes = RowArray<double>::Zero(4, 4);
  loss[3] = 1;
  CHECK_THROWS_WITH(fgbg::OhemPaperSampler().sample(l, boxes, loss, s),
                    Catch::Contains("boxes must have one row per label"));
  Eigen::Array<std::int32_t, Eigen::Dynamic, 1> gi = Eigen::Array<std::int32_t, -1, 1>::Zero(5);
  gi[4] = -1;
  CHECK_THROWS_WITH(fgbg::InstanceBalancedSampler().sample(l, gi, rng, s),
                    Catch::Contains("gt_index(4) = -1 must be >= 0 for a positive"));
  Eigen::ArrayXd iou = Eigen::ArrayXd::Constant(5, 0.2);
  iou[0] = 1.5;
  gi[4] = 0;
  CHECK_THROWS_WITH(fgbg::IouBalancedSampler().sample(l, gi, iou, rng, s),
                    Catch::Contains("max_iou(0) = 1.5 is outside [0, 1]"));
  iou[0] = 0.1;
  fgbg::IouBalancedSamplerConfig faithful;
  faithful.mode = fgbg::IouBalanceMode::faithful;
  CHECK_THROWS_WITH(fgbg::IouBalancedSampler(faithful).sample(l, gi, iou, rng, s),
                    Catch::Contains("needs an IouBalancedState"));
  CHECK_THROWS_WITH(fgbg::IouBalancedSampler().sample_negatives(l, iou, -3, rng, s),
                    Catch::Contains("n_exp must be >= 0, got -3"));
  CHECK(untouched());
}

TEST_CASE("OhemSampler (mmdet): exactly the top losses with index ties", "[sampling][ohem]") {
  std::mt19937_64 data_rng(31);
  Sample s;
  for (int trial = 0; trial < 200; ++trial) {
    const Index n = static_cast<Index>(data_rng() % 2500);
    const LabelVector l = random_labels(data_rng, n);
    Eigen::ArrayXd loss(n);
    // few distinct values: many ties
    for (Index i = 0; i < n; ++i) loss[i] = static_cast<double>(data_rng() % 6) * 0.25;
    for (const auto& c : configs()) {
      fgbg::OhemSampler(c).sample(l, loss, s);
      check_batch_invariants(s, l, c, true);
      const auto pos = where(l, true), neg = where(l, false);
      CHECK(s.positives == brute_top_k(pos, loss, c.expected_positives()));
      CHECK(s.negatives == brute_top_k(neg, loss, c.expected_negatives(s.num_positives())));
    }
  }
}

TEST_CASE("OhemSampler (mmdet): the callback runs only on pools over their quota",
          "[sampling][ohem]") {
  LabelVector l = LabelVector::Zero(1000);
  for (Index i = 0; i < 40; ++i) l[i * 20] = 2;  // 40 positives < 128 = 512 · 0.25
  int calls = 0;
  std::size_t last_size = 0;
  auto loss_fn = [&](const std::vector<Index>& idx, std::vector<double>& out) {
    ++calls;
    last_size = idx.size();
    for (std::size_t k = 0; k < idx.size(); ++k) out[k] = std::sin(0.37 * idx[k]);
  };
  Sample s;
  fgbg::OhemSampler().sample_with(l, loss_fn, s);
  CHECK(calls == 1);  // positives all taken without a loss; negatives mined
  CHECK(last_size == 960);
  CHECK(s.num_positives() == 40);
  CHECK(s.num_negatives() == 472);
  Eigen::ArrayXd loss(1000);
  for (Index i = 0; i < 1000; ++i) loss[i] = std::sin(0.37 * i);
  Sample v;
  fgbg::OhemSampler().sample(l, loss, v);
  CHECK(v.negatives == s.negatives);
  auto bad = [](const std::vector<Index>&, std::vector<double>& out) {
    out[0] = std::numeric_limits<double>::infinity();
  };
  CHECK_THROWS_AS(fgbg::OhemSampler().sample_with(l, bad, s), std::domain_error);
  CHECK(s.negatives == v.negatives);  // unchanged
}

namespace {
// Naive paper-mode OHEM: full sort by (loss desc, index asc), greedy same-label NMS, first num.
std::vector<Index> naive_paper(const LabelVector& l, const RowArray<double>& b,
                               const Eigen::ArrayXd& loss, Index num, double thr) {
  std::vector<Index> order;
  for (Index i = 0; i < l.size(); ++i)
    if (l[i] >= 0) order.push_back(i);
  std::sort(order.begin(), order.end(),
            [&](Index x, Index y) { return loss[x] > loss[y] || (loss[x] == loss[y] && x < y); });
  std::vector<Index> kept;
  for (Index i : order) {
    if (static_cast<Index>(kept.size()) >= num) break;
    bool ok = true;
    for (Index k : kept)
      if (l[k] == l[i] && fgbg::detail::box_iou<double>(b(i, 0), b(i, 1), b(i, 2), b(i, 3), b(k, 0),
                                                        b(k, 1), b(k, 2), b(k, 3)) > thr)
        ok = false;
    if (ok) kept.push_back(i);
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}
}  // namespace

TEST_CASE("OhemPaperSampler: NMS per label, then the top-B survivors", "[sampling][ohem]") {
  RowArray<double> b(5, 4);
  b << 0, 0, 10, 10,   // loss 5
      1, 0, 11, 10,    // IoU 90/110 with row 0, same label: suppressed
      0, 0, 10, 10,    // same box as row 0, other label: kept
      50, 50, 60, 60,  // far away
      0, 0, 10, 10;    // ignored
  LabelVector l(5);
  l << 0, 0, 3, 0, -1;
  Eigen::ArrayXd loss(5);
  loss << 5, 4, 1, 3, 100;
  Sample s;
  fgbg::OhemPaperSampler({3}).sample(l, b, loss, s);
  CHECK(s.positives == std::vector<Index>{2});
  CHECK(s.negatives == (std::vector<Index>{0, 3}));
  fgbg::OhemPaperSampler({2}).sample(l, b, loss, s);
  CHECK(s.positives.empty());
  CHECK(s.negatives == (std::vector<Index>{0, 3}));
  fgbg::OhemPaperSampler({2, false}).sample(l, b, loss, s);  // no NMS: 0 and 1
  CHECK(s.negatives == (std::vector<Index>{0, 1}));

  // random crowded scenes (several NMS chunks) against the naive version
  std::mt19937_64 rng(77);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 30; ++trial) {
    const Index n = 1 + static_cast<Index>(rng() % 2000);
    RowArray<double> bx(n, 4);
    LabelVector lab(n);
    Eigen::ArrayXd ls(n);
    for (Index i = 0; i < n; ++i) {
      const double x = 40 * u(rng), y = 40 * u(rng);
      bx.row(i) << x, y, x + 10 + 5 * u(rng), y + 10 + 5 * u(rng);
      lab[i] = static_cast<int>(rng() % 4) - 1;
      ls[i] = std::floor(8 * u(rng));  // ties
    }
    for (Index num : {1, 16, 64, 600}) {
      fgbg::OhemPaperSampler(fgbg::OhemPaperSamplerConfig{num}).sample(lab, bx, ls, s);
      std::vector<Index> all = s.positives;
      all.insert(all.end(), s.negatives.begin(), s.negatives.end());
      std::sort(all.begin(), all.end());
      CHECK(all == naive_paper(lab, bx, ls, num, 0.7));
      for (Index i : s.positives) CHECK(lab[i] > 0);
      for (Index i : s.negatives) CHECK(lab[i] == 0);
    }
  }
}

TEST_CASE("SsdHardNegativeMining: 3:1, clamped, never a positive twice", "[sampling][ssd]") {
  LabelVector l(10);
  l << 1, 0, 0, 2, 0, -1, 0, 0, 1, 0;
  Eigen::ArrayXd loss(10);
  loss << 9, 1, 5, 9, 5, 99, 0.5, 7, 9, 2;
  Sample s;
  fgbg::SsdHardNegativeMining().sample(l, loss, s);
  CHECK(s.positives == (std::vector<Index>{0, 3, 8}));
  // k = min(9, 6) = 6: every negative, no positive, never the ignored anchor
  CHECK(s.negatives == (std::vector<Index>{1, 2, 4, 6, 7, 9}));
  l << 1, 0, 0, 0, 0, -1, 0, 0, 0, 0;
  fgbg::SsdHardNegativeMining().sample(l, loss, s);
  // k = 3: the tie 9 at indices 3 and 8, then 7 at index 7
  CHECK(s.negatives == (std::vector<Index>{3, 7, 8}));
  fgbg::SsdHardNegativeMining({3.0, false}).sample(l, loss, s);
  CHECK(s.negatives == (std::vector<Index>{3, 8, 7}));    // (loss desc, index asc)
  fgbg::SsdHardNegativeMining({5.0}).sample(l, loss, s);  // k = 5: both of the tie
  CHECK(s.negatives == (std::vector<Index>{2, 3, 4, 7, 8}));
  fgbg::SsdHardNegativeMining({4.0}).sample(l, loss, s);  // k = 4: of the tie 5 at 2 and 4, index 2
  CHECK(s.negatives == (std::vector<Index>{2, 3, 7, 8}));
  l.setZero();
  fgbg::SsdHardNegativeMining().sample(l, loss, s);
  CHECK(s.size() == 0);  // no positive: no negative either (mmdet)

  std::mt19937_64 rng(8);
  for (int trial = 0; trial < 200; ++trial) {
    const Index n = static_cast<Index>(rng() % 3000);
    const LabelVector lab = random_labels(rng, n);
    Eigen::ArrayXd ls(n);
    for (Index i = 0; i < n; ++i) ls[i] = static_cast<double>(rng() % 10);
    fgbg::SsdHardNegativeMining().sample(lab, ls, s);
    const auto pos = where(lab, true), neg = where(lab, false);
    CHECK(s.positives == pos);
    const Index k = std::min<Index>(3 * static_cast<Index>(pos.size()), neg.size());
    CHECK(s.negatives == brute_top_k(neg, ls, k));
    std::set<Index> both(s.positives.begin(), s.positives.end());
    for (Index i : s.negatives) CHECK(both.insert(i).second);
  }
}

TEST_CASE("IouBalancedSampler: count-level check", "[sampling][iou_balanced][spec]") {
  // 20 negatives with IoU in (0, 0.1], 2 with IoU in [0.34, 0.5), a positive GT row (IoU 1).
  LabelVector l = LabelVector::Zero(23);
  Eigen::ArrayXd iou(23);
  for (Index i = 0; i < 20; ++i) iou[i] = 0.005 * (i + 1);
  iou[20] = 0.34;
  iou[21] = 0.49;
  iou[22] = 1.0;
  l[22] = 1;
  const fgbg::IouBalancedSampler sampler;  // clean, τ = −1, K = 3, m = global max = 1
  std::mt19937_64 rng(4);
  Sample s;
  double high_random = 0;
  const int draws = 4000;
  for (int t = 0; t < draws; ++t) {
    sampler.sample_negatives(l, iou, 9, rng, s);
    REQUIRE(s.num_negatives() == 9);
    Index high = 0;
    for (Index i : s.negatives) high += iou[i] >= 0.34;
    CHECK(high == 2);  // 3 + 2 + 0 from the bins, 4 random low-IoU fills
    fgbg::RandomSampler({9, 0.0}).sample(l, rng, s);
    for (Index i : s.negatives) high_random += iou[i] >= 0.34;
  }
  CHECK(high_random / draws == Approx(9.0 * 2 / 22).epsilon(0.05));  // ≈ 0.82
}

TEST_CASE("IouBalancedSampler: per-bin quotas and range_upper", "[sampling][iou_balanced]") {
  // 300 negatives in [0, 1/3), 50 in [1/3, 2/3), 30 in [2/3, 1) — m = max = 0.99
  const Index n = 380;
  LabelVector l = LabelVector::Zero(n);
  Eigen::ArrayXd iou(n);
  for (Index i = 0; i < 300; ++i) iou[i] = 0.3 * i / 300.0;
  for (Index i = 0; i < 50; ++i) iou[300 + i] = 0.34 + 0.3 * i / 50.0;
  for (Index i = 0; i < 30; ++i) iou[350 + i] = 0.67 + 0.32 * i / 30.0;
  std::mt19937_64 rng(12);
  Sample s;
  const fgbg::IouBalancedSampler sampler;
  for (int t = 0; t < 200; ++t) {
    sampler.sample_negatives(l, iou, 60, rng, s);
    REQUIRE(s.num_negatives() == 60);
    Index bins[3] = {0, 0, 0};
    for (Index i : s.negatives) ++bins[std::min<Index>(2, static_cast<Index>(iou[i] * 3 / 0.99))];
    CHECK(bins[0] == 20);
    CHECK(bins[1] == 20);
    CHECK(bins[2] == 20);
    CHECK(std::set<Index>(s.negatives.begin(), s.negatives.end()).size() == 60);
  }
  // fixed upper 0.5 with K = 2: bins [0, .25), [.25, .5); everything above 0.5 only via fill
  fgbg::IouBalancedSamplerConfig c;
  c.num_bins = 2;
  c.range_upper = fgbg::IouRangeUpper::fixed;
  c.fixed_upper = 0.5;
  for (int t = 0; t < 50; ++t) {
    fgbg::IouBalancedSampler(c).sample_negatives(l, iou, 40, rng, s);
    Index lo = 0, mid = 0;
    for (Index i : s.negatives) {
      lo += iou[i] < 0.25;
      mid += iou[i] >= 0.25 && iou[i] < 0.5;
    }
    CHECK(lo == 20);
    CHECK(mid == 20);
  }
  // K = 1: plain random choice among the negatives
  c = {};
  c.num_bins = 1;
  fgbg::IouBalancedSampler(c).sample_negatives(l, iou, 40, rng, s);
  CHECK(s.num_negatives() == 40);
}

TEST_CASE("IouBalancedSampler: faithful stateful floor_thr vs clean", "[sampling][iou_balanced]") {
  // 100 negatives with IoU 0, 10 with IoU 0.2, and a GT row (IoU 1) so that m = 1.
  const Index n = 111;
  LabelVector l = LabelVector::Zero(n);
  Eigen::ArrayXd iou = Eigen::ArrayXd::Zero(n);
  for (Index i = 100; i < 110; ++i) iou[i] = 0.2;
  l[110] = 1;
  iou[110] = 1;
  fgbg::IouBalancedSamplerConfig fc;
  fc.mode = fgbg::IouBalanceMode::faithful;
  const fgbg::IouBalancedSampler faithful(fc), clean;
  fgbg::IouBalancedState state = faithful.initial_state();
  CHECK(state.floor_thr() == -1);
  Sample a, b;
  std::mt19937_64 r1(5), r2(5);
  faithful.sample_negatives(l, iou, 30, r1, a, &state);
  CHECK(state.floor_thr() == 0);  // mmdet's permanent reset
  clean.sample_negatives(l, iou, 30, r2, b);
  CHECK(a.negatives == b.negatives);  // the first faithful call is the clean behaviour
  // later faithful calls: IoU = 0 negatives are only the floor set, so all ten IoU-0.2
  // negatives are always taken; the clean mode keeps binning everything
  double clean_high = 0;
  for (int t = 0; t < 200; ++t) {
    faithful.sample_negatives(l, iou, 30, r1, a, &state);
    Index high = 0;
    for (Index i : a.negatives) high += iou[i] > 0;
    CHECK(high == 10);
    clean.sample_negatives(l, iou, 30, r2, b);
    for (Index i : b.negatives) clean_high += iou[i] > 0;
  }
  CHECK(clean_high / 200 < 5);  // ≈ 30·10/110 ≈ 2.7
  // no sampling needed (|Neg| ≤ N_exp): the state is not reset (as in mmdet)
  fgbg::IouBalancedState fresh = faithful.initial_state();
  faithful.sample_negatives(l, iou, 500, r1, a, &fresh);
  CHECK(fresh.floor_thr() == -1);
  CHECK(a.num_negatives() == 110);
}

TEST_CASE("IouBalancedSampler: full Libra sample from an assignment", "[sampling][iou_balanced]") {
  std::mt19937_64 data_rng(3), rng(4);
  Sample s;
  const fgbg::IouBalancedSampler sampler;
  for (int trial = 0; trial < 100; ++trial) {
    const Index n = static_cast<Index>(data_rng() % 3000);
    fgbg::Assignment a;
    a.num_gts = 6;
    std::uniform_real_distribution<double> u(0, 1);
    for (Index i = 0; i < n; ++i) {
      const double x = u(data_rng);
      const int label = x > 0.95 ? 1 + static_cast<int>(data_rng() % 3) : (x > 0.9 ? -1 : 0);
      a.label_storage.push_back(label);
      a.gt_storage.push_back(label > 0 ? static_cast<int>(data_rng() % 6) : -1);
      a.iou_storage.push_back(label > 0 ? 0.5 + 0.5 * u(data_rng) : 0.5 * u(data_rng));
    }
    sampler.sample(a, rng, s);
    const LabelVector l = a.labels();
    check_batch_invariants(s, l, sampler.config().batch, true);
  }
}

TEST_CASE("InstanceBalancedSampler: balance over GTs, correct set difference",
          "[sampling][instance_balanced]") {
  // GT 0: 100 positives, GT 1: 5, GT 2: 5; 200 negatives. P_exp = 32, q = round(32/3)+1 = 12.
  const Index n = 310;
  LabelVector l = LabelVector::Zero(n);
  Eigen::Array<std::int32_t, Eigen::Dynamic, 1> gi =
      Eigen::Array<std::int32_t, -1, 1>::Constant(n, -1);
  for (Index i = 0; i < 110; ++i) {
    l[i] = 1;
    gi[i] = i < 100 ? 0 : (i < 105 ? 1 : 2);
  }
  fgbg::InstanceBalancedSamplerConfig c;
  c.batch = {128, 0.25};
  const fgbg::InstanceBalancedSampler clean(c);
  c.mode = fgbg::InstanceBalanceMode::faithful;
  const fgbg::InstanceBalancedSampler faithful(c);
  std::mt19937_64 rng(21);
  Sample s;
  int short_faithful = 0;
  for (int t = 0; t < 300; ++t) {
    clean.sample(l, gi, rng, s);
    check_batch_invariants(s, l, c.batch, true);
    REQUIRE(s.num_positives() == 32);
    Index from_small = 0;
    for (Index i : s.positives) from_small += i >= 100;
    CHECK(from_small == 10);  // GTs 1 and 2 fully represented
    faithful.sample(l, gi, rng, s);
    CHECK(s.num_positives() <= 32);
    short_faithful += s.num_positives() < 32;
  }
  CHECK(short_faithful > 0);  // the reference's duplicate fill, reproduced
  // Python's round is half-to-even: P_exp = 2 over 4 GTs ⇒ q = round(0.5) + 1 = 1, so the two
  // positives always come from two different GTs
  LabelVector l4 = LabelVector::Zero(40);
  Eigen::Array<std::int32_t, Eigen::Dynamic, 1> g4 =
      Eigen::Array<std::int32_t, -1, 1>::Constant(40, -1);
  for (Index i = 0; i < 12; ++i) {
    l4[i] = 1;
    g4[i] = static_cast<std::int32_t>(i / 3);
  }
  fgbg::InstanceBalancedSamplerConfig c4;
  c4.batch = {8, 0.25};
  for (int t = 0; t < 100; ++t) {
    fgbg::InstanceBalancedSampler(c4).sample(l4, g4, rng, s);
    REQUIRE(s.num_positives() == 2);
    CHECK(g4[s.positives[0]] != g4[s.positives[1]]);
  }
  // same seed ⇒ same sample
  Sample x, y;
  std::mt19937_64 ra(9), rb(9);
  clean.sample(l, gi, ra, x);
  clean.sample(l, gi, rb, y);
  CHECK(x.positives == y.positives);
  CHECK(x.negatives == y.negatives);
}

TEST_CASE("All samplers: same seed, same sample; invariants on assignments from boxes",
          "[sampling]") {
  std::mt19937_64 data_rng(17);
  std::uniform_real_distribution<double> u(0, 1);
  const Index n = 2000, g = 8;
  RowArray<double> props(n, 4), gts(g, 4);
  for (Index j = 0; j < g; ++j) {
    const double x = 700 * u(data_rng), y = 500 * u(data_rng);
    gts.row(j) << x, y, x + 20 + 200 * u(data_rng), y + 20 + 200 * u(data_rng);
  }
  for (Index i = 0; i < n; ++i) {
    const Index j = i % g;
    const double w = gts(j, 2) - gts(j, 0), h = gts(j, 3) - gts(j, 1);
    const double x = gts(j, 0) + w * (u(data_rng) - 0.5), y = gts(j, 1) + h * (u(data_rng) - 0.5);
    props.row(i) << x, y, x + w * (0.5 + u(data_rng)), y + h * (0.5 + u(data_rng));
  }
  LabelVector gl(g);
  gl << 1, 2, 3, 4, 5, 6, 7, 8;
  fgbg::Assignment a;
  fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rcnn()).assign(props, gts, gl, a);
  fgbg::add_gt_as_proposals(a, gl);
  const LabelVector l = a.labels();
  Eigen::ArrayXd loss(a.size());
  for (Index i = 0; i < a.size(); ++i) loss[i] = u(data_rng);
  RowArray<double> all;
  fgbg::with_gt_boxes(props, gts, all);

  auto run_all = [&](std::uint64_t seed, std::vector<Sample>& out) {
    std::mt19937_64 rng(seed);
    out.assign(6, Sample{});
    fgbg::RandomSampler().sample(a, rng, out[0]);
    fgbg::OhemSampler().sample(l, loss, out[1]);
    fgbg::OhemPaperSampler().sample(l, all, loss, out[2]);
    fgbg::SsdHardNegativeMining().sample(l, loss, out[3]);
    fgbg::IouBalancedSampler().sample(a, rng, out[4]);
    fgbg::InstanceBalancedSampler().sample(a, rng, out[5]);
  };
  std::vector<Sample> x, y;
  run_all(123, x);
  run_all(123, y);
  for (std::size_t k = 0; k < x.size(); ++k) {
    INFO("sampler " << k);
    CHECK(x[k].positives == y[k].positives);
    CHECK(x[k].negatives == y[k].negatives);
  }
  for (std::size_t k : {0u, 1u, 4u, 5u}) {
    check_batch_invariants(x[k], l, fgbg::SamplerConfig::rcnn(), true);
    CHECK(x[k].num_positives() >= 8);  // GT-as-proposals: every GT is a positive
  }
}

TEST_CASE("sample_weights and sample_avg_factor", "[sampling][weights]") {
  Sample s;
  s.positives = {1, 4};
  s.negatives = {0, 3};
  Eigen::ArrayXf w;
  fgbg::sample_weights(s, 6, w);
  CHECK((w == (Eigen::ArrayXf(6) << 1, 1, 0, 1, 1, 0).finished()).all());
  s.negative_weights = {0.5, 2.0};
  Eigen::ArrayXd wd(6);
  fgbg::sample_weights(s, 6, wd);
  CHECK((wd == (Eigen::ArrayXd(6) << 0.5, 1, 0, 2, 1, 0).finished()).all());
  Eigen::ArrayXd keep = Eigen::ArrayXd::Constant(6, 7.0);
  Eigen::Map<Eigen::ArrayXd> km(keep.data(), 6);
  s.negatives = {0, 9};
  CHECK_THROWS_WITH(fgbg::sample_weights(s, 6, km), Catch::Contains("negative index 9"));
  CHECK((keep == 7.0).all());
  s.negatives = {0, 4};
  CHECK_THROWS_WITH(fgbg::sample_weights(s, 6, km), Catch::Contains("index 4 is sampled twice"));
  CHECK((keep == 7.0).all());  // design §4: nothing written before a throw (was: zeroed)
  Eigen::Map<Eigen::ArrayXd> short_map(keep.data(), 5);
  s.negatives = {0, 3};
  keep.setConstant(7.0);
  CHECK_THROWS_AS(fgbg::sample_weights(s, 6, short_map), std::invalid_argument);
  CHECK((keep == 7.0).all());

  std::vector<Sample> batch(2);
  batch[0].positives = {1, 2, 3};
  batch[0].negatives = {4, 5};
  batch[1].negatives = {0, 1, 2, 3};  // an image without positives
  using K = fgbg::SampleNormalization;
  CHECK(fgbg::sample_avg_factor(K::mmdet_rpn, batch.begin(), batch.end()) == (3 + 2) + (1 + 4));
  CHECK(fgbg::sample_avg_factor(K::sampled, batch.begin(), batch.end()) == 9);
  CHECK(fgbg::sample_avg_factor(K::detectron2_rpn, batch.begin(), batch.end(), 256) == 512);
  CHECK(fgbg::sample_avg_factor(K::mmdet_ssd, batch.begin(), batch.end()) == 3 + 1);
  CHECK(fgbg::sample_avg_factor(K::torchvision_ssd, batch.begin(), batch.end()) == 3);
  CHECK(fgbg::sample_avg_factor(K::sampled, Sample{}) == 1);
  CHECK(fgbg::sample_avg_factor(K::mmdet_rpn, Sample{}) == 2);
  CHECK_THROWS_AS(fgbg::sample_avg_factor(K::detectron2_rpn, Sample{}), std::invalid_argument);
}

TEST_CASE("sample_weights: every error is found before the first write", "[sampling][weights]") {
  Eigen::ArrayXd keep = Eigen::ArrayXd::Constant(8, 7.0);
  Eigen::Map<Eigen::ArrayXd> km(keep.data(), 8);
  Sample s;
  auto throws_untouched = [&](const char* what) {
    CHECK_THROWS_WITH(fgbg::sample_weights(s, 8, km), Catch::Contains(what));
    CHECK((keep == 7.0).all());
  };
  // ascending lists (merge check): across the two lists, and the last entries
  s.positives = {1, 4};
  s.negatives = {0, 2, 3, 4};
  throws_untouched("index 4 is sampled twice");
  s.negatives = {0, 1};
  throws_untouched("index 1 is sampled twice");
  // not strictly ascending (mark check): within one list, across lists, rank order
  s.positives = {2, 2};
  s.negatives = {};
  throws_untouched("index 2 is sampled twice");
  s.positives = {5, 1};
  s.negatives = {7, 3, 1};
  throws_untouched("index 1 is sampled twice");
  s.positives = {1, 5};
  s.negatives = {7, 3, 6, 3};
  s.negative_weights = {0.5, 0.25, 2.0, 1.0};
  throws_untouched("index 3 is sampled twice");
  // range errors still win, and are also found before writing
  s.negatives = {7, 3, 6, 8};
  throws_untouched("negative index 8 is outside [0, 8)");
  // unsorted but valid (ISR-N's rank order): correct Ω
  s.negatives = {7, 3, 6, 0};
  fgbg::sample_weights(s, 8, km);
  CHECK((keep == (Eigen::ArrayXd(8) << 1.0, 1, 0, 0.25, 0, 1, 2.0, 0.5).finished()).all());
  // the same with a plain array that has to be resized, after a failed call
  Eigen::ArrayXf w;
  s.negatives = {7, 7, 6, 0};
  CHECK_THROWS_AS(fgbg::sample_weights(s, 8, w), std::invalid_argument);
  CHECK(w.size() == 0);
}

TEST_CASE("InstanceBalancedSampler: huge GT ids cost no memory and sample as dense ids",
          "[sampling][instance_balanced]") {
  // Reviewer: gt_index = {0, 2e9} made the counting sort allocate ~16 GB.
  const Index n = 120;
  LabelVector l = LabelVector::Zero(n);
  Eigen::Array<std::int64_t, Eigen::Dynamic, 1> dense =
      Eigen::Array<std::int64_t, -1, 1>::Constant(n, -1);
  for (Index i = 0; i < 60; ++i) {
    l[i] = 1 + static_cast<int>(i % 3);
    dense[i] = i < 50 ? 0 : (i < 55 ? 1 : 2);
  }
  Eigen::Array<std::int64_t, Eigen::Dynamic, 1> huge = dense;
  const std::int64_t big[] = {0, 2000000000, 4000000000000000000};
  for (Index i = 0; i < 60; ++i) huge[i] = big[dense[i]];
  Eigen::Array<std::int32_t, Eigen::Dynamic, 1> ids32(n);
  for (Index i = 0; i < n; ++i) ids32[i] = dense[i] < 0 ? -1 : (dense[i] == 0 ? 0 : 2000000000);
  fgbg::InstanceBalancedSamplerConfig c;
  c.batch = {64, 0.25};  // P_exp = 16 < 60 positives: the grouping runs
  for (const auto mode : {fgbg::InstanceBalanceMode::clean, fgbg::InstanceBalanceMode::faithful}) {
    c.mode = mode;
    const fgbg::InstanceBalancedSampler inst(c);
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
      Sample a, b;
      std::mt19937_64 ra(seed), rb(seed);
      inst.sample(l, dense, ra, a);
      inst.sample(l, huge, rb, b);  // same groups in the same order ⇒ same draws
      CHECK(a.positives == b.positives);
      CHECK(a.negatives == b.negatives);
    }
  }
  c.mode = fgbg::InstanceBalanceMode::clean;
  Sample s;
  std::mt19937_64 rng(4);
  fgbg::InstanceBalancedSampler(c).sample(l, ids32, rng, s);  // the reviewer's {0, 2e9}
  CHECK(s.num_positives() == 16);
  Index from_second = 0;
  for (Index i : s.positives) from_second += ids32[i] == 2000000000;
  // q = round(16 / 2) + 1 = 9 per GT (18 taken), then 16 of those 18 kept at random
  CHECK(from_second >= 7);
  CHECK(from_second <= 9);

  // Ever larger ids allocate nothing once the Sample is warm.
  const fgbg::InstanceBalancedSampler inst(c);
  inst.sample(l, huge, rng, s);
  inst.sample(l, huge, rng, s);
  NoAllocScope guard;
  for (std::int64_t k = 1; k <= 50; ++k) {
    for (Index i = 0; i < 60; ++i) huge[i] = dense[i] * 100003 * k + k;  // sorting path
    inst.sample(l, huge, rng, s);
    for (Index i = 0; i < 60; ++i) huge[i] = dense[i] * k + k;  // compact ids, growing max
    inst.sample(l, huge, rng, s);
  }
  CHECK(guard.count() == 0);
}

TEST_CASE("Huge finite neg_pos_ub / neg_pos_ratio act as no bound (no integer overflow)",
          "[sampling][random][ssd]") {
  CHECK(fgbg::SamplerConfig{512, 0.25, 1e30}.expected_negatives(3) == 509);
  CHECK(fgbg::SamplerConfig{512, 0.25, 1e30}.expected_negatives(0) == 512);
  CHECK(fgbg::SamplerConfig{512, 0.25, 1.7976931348623157e308}.expected_negatives(7) == 505);
  CHECK(fgbg::SamplerConfig{512, 0.25, 2.5}.expected_negatives(3) == 7);
  std::mt19937_64 data_rng(77);
  const fgbg::RandomSampler bounded_huge({4, .25, 1e30}), unbounded({4, .25, -1});
  const fgbg::SsdHardNegativeMining ssd_huge({1e30}), ssd_all({1e9});
  for (int trial = 0; trial < 50; ++trial) {
    const Index n = 1 + static_cast<Index>(data_rng() % 200);
    const LabelVector l = random_labels(data_rng, n);
    Sample a, b;
    std::mt19937_64 ra(trial), rb(trial);
    bounded_huge.sample(l, ra, a);
    unbounded.sample(l, rb, b);
    CHECK(a.positives == b.positives);
    CHECK(a.negatives == b.negatives);
    CHECK(a.num_negatives() == std::min<Index>(4 - a.num_positives(), (l == 0).count()));
    Eigen::ArrayXd loss(n);
    for (Index i = 0; i < n; ++i) loss[i] = static_cast<double>(data_rng() % 10);
    ssd_huge.sample(l, loss, a);
    ssd_all.sample(l, loss, b);
    CHECK(a.positives == b.positives);
    CHECK(a.negatives == b.negatives);
    // any positive ⇒ every negative (k clamped to |Neg|), none ⇒ none
    CHECK(a.num_negatives() == ((l > 0).any() ? (l == 0).count() : 0));
  }
}

TEST_CASE("Samplers allocate nothing once the Sample has capacity", "[sampling][alloc]") {
  std::mt19937_64 data_rng(1);
  const Index n = 20000;
  const LabelVector l = random_labels(data_rng, n);
  Eigen::ArrayXd loss(n), iou(n);
  std::uniform_real_distribution<double> u(0, 1);
  for (Index i = 0; i < n; ++i) {
    loss[i] = u(data_rng);
    iou[i] = l[i] > 0 ? 0.5 + 0.5 * u(data_rng) : 0.5 * u(data_rng);
  }
  Eigen::Array<std::int32_t, Eigen::Dynamic, 1> gi(n);
  for (Index i = 0; i < n; ++i) gi[i] = l[i] > 0 ? static_cast<int>(data_rng() % 7) : -1;
  RowArray<double> boxes(n, 4);
  for (Index i = 0; i < n; ++i) {
    const double x = 500 * u(data_rng), y = 500 * u(data_rng);
    boxes.row(i) << x, y, x + 30, y + 30;
  }
  const fgbg::RandomSampler rnd(fgbg::SamplerConfig::rpn());
  const fgbg::OhemSampler ohem;
  const fgbg::OhemPaperSampler paper;
  const fgbg::SsdHardNegativeMining ssd;
  fgbg::IouBalancedSamplerConfig fc;
  fc.mode = fgbg::IouBalanceMode::faithful;
  const fgbg::IouBalancedSampler libra, libra_faithful(fc);
  const fgbg::InstanceBalancedSampler inst;
  fgbg::IouBalancedState state = libra_faithful.initial_state();
  std::mt19937_64 rng(3);
  Sample s;
  Eigen::ArrayXf w(n);
  auto loss_fn = [&](const std::vector<Index>& idx, std::vector<double>& out) {
    for (std::size_t k = 0; k < idx.size(); ++k) out[k] = loss[idx[k]];
  };
  Sample unsorted;  // rank-order negatives take the mark path of the duplicate check
  unsorted.positives = {5, 2};
  unsorted.negatives = {n - 1, 0, 7};
  auto all = [&] {
    rnd.sample(l, rng, s);
    fgbg::sample_weights(s, n, w);
    fgbg::sample_weights(unsorted, n, w);
    ohem.sample(l, loss, s);
    ohem.sample_with(l, loss_fn, s);
    paper.sample(l, boxes, loss, s);
    ssd.sample(l, loss, s);
    libra.sample(l, gi, iou, rng, s);
    libra_faithful.sample(l, gi, iou, rng, s, &state);
    inst.sample(l, gi, rng, s);
  };
  all();
  all();  // warm-up: capacities reached
  NoAllocScope guard;
  for (int k = 0; k < 3; ++k) all();
  CHECK(guard.count() == 0);
}

TEST_CASE("top-k selection equals a full sort on (key desc, index asc), ties and extremes",
          "[sampling][top_k]") {
  // The radix selection of detail::top_k (pools of kRadixSelectMin entries and more) against a
  // full sort: every kind of key it must order, and every k.
  std::mt19937_64 rng(20261203);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  const double big = std::numeric_limits<double>::max(), tiny = 5e-324;
  int cases = 0, radix = 0;
  for (int it = 0; it < 120; ++it) {
    const int kind = it % 6;
    const Index m = it % 7 == 0 ? 100 + it : 2048 + static_cast<Index>(uni(rng) * 20000);
    std::vector<std::pair<double, Index>> keyed;
    for (Index i = 0; i < m; ++i) {
      double v;
      switch (kind) {
        case 0:  // a loss-like spread
          v = -std::log(uni(rng) + 1e-300) * 0.3;
          break;
        case 1:  // heavy ties on a grid, with both zeros
          v = std::round(uni(rng) * 8) / 4 - 0.5;
          if (v == 0 && (i % 2)) v = -0.0;
          break;
        case 2:  // one key
          v = 0.75;
          break;
        case 3:  // the extremes of double, subnormals, negatives
        {
          const double pick[] = {big, -big, tiny, -tiny, 0.0, -0.0, 1.0, -1.0, 1e300, -1e-300};
          v = pick[static_cast<std::size_t>(uni(rng) * 10) % 10];
          break;
        }
        case 4:  // two keys a ulp apart
          v = (i % 3) ? 1.0 : std::nextafter(1.0, 2.0);
          break;
        default:  // a huge range: ±1e±300 log-uniform
          v = (uni(rng) < 0.5 ? -1 : 1) * std::pow(10.0, 600 * uni(rng) - 300);
      }
      keyed.emplace_back(v, (i * 7919) % m);  // indices a permutation of 0..m−1, not in order
    }
    auto sorted = keyed;
    std::sort(sorted.begin(), sorted.end(), fgbg::detail::key_desc_index_asc);
    for (const Index k : {Index(0), Index(1), Index(2), m / 3, m / 2 + 1, m - 1, m, m + 5}) {
      auto got = keyed;
      fgbg::detail::top_k(got, k);
      const Index want_n = std::min(k, m);
      REQUIRE(static_cast<Index>(got.size()) == want_n);
      std::sort(got.begin(), got.end(), fgbg::detail::key_desc_index_asc);
      INFO("iteration " << it << ", kind " << kind << ", m = " << m << ", k = " << k);
      bool same = true;
      for (Index j = 0; j < want_n; ++j)
        same = same && got[j].second == sorted[j].second &&
               (got[j].first == sorted[j].first);  // −0 and +0 compare equal
      CHECK(same);
      ++cases;
      radix += m >= fgbg::detail::kRadixSelectMin && k > 0 && k < m;
    }
  }
  CHECK(cases == 120 * 8);
  CHECK(radix > 500);
  // sortable_key orders the doubles as < does, −0 and +0 alike
  const double vals[] = {-big, -1.0, -tiny, -0.0, 0.0, tiny, 1.0, big};
  for (double a : vals)
    for (double b : vals) {
      CHECK((a < b) == (fgbg::detail::sortable_key(a) < fgbg::detail::sortable_key(b)));
      CHECK((a == b) == (fgbg::detail::sortable_key(a) == fgbg::detail::sortable_key(b)));
    }
}
