// Ranking losses (AP, aLRP, Rank & Sort): the sort-based implementation against the brute-force
// O(P·N) loop over positives (the official algorithm, tests/support/ranking_oracle.hpp) and
// against one std::sort of the same number of floats (the yardstick of docs/performance.md).
//
// Problem: a RetinaNet-like N × C = anchors × 80 sigmoid head flattened into P + N entries, P
// positive entries (one per positive anchor), every other entry negative. Scores: positives
// N(0, 1.5), negatives N(−2, 1.5), so nearly every negative is "relevant" (within δ of the
// lowest positive) — the expensive case of early training. Float logits.
//
// Counters: items/s = entries (P + N) per second; bytes/s = logits + labels read and update
// written; max_rel_diff (brute-force rows) = max |fast − loop| / max(1, max |loop|) over the
// update and the values.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>

#include "../tests/support/ranking_oracle.hpp"

namespace {

using fgbg::Index;
using Logits = fgbg::RowArray<float>;
constexpr Index kClasses = 80;

struct Problem {
  Logits x;
  fgbg::LabelVector y;
  Eigen::ArrayXf aux;  // IoU in (0, 1] (RS) and ℓ = 1 − IoU (aLRP)
  Eigen::ArrayXf loc;
  Index entries = 0, positives = 0;
};

const Problem& problem(Index P, Index N) {
  static std::map<std::pair<Index, Index>, std::unique_ptr<Problem>> cache;
  auto& slot = cache[{P, N}];
  if (slot) return *slot;
  slot = std::make_unique<Problem>();
  Problem& pr = *slot;
  const Index anchors = (P + N + kClasses - 1) / kClasses;
  pr.x.resize(anchors, kClasses);
  pr.y = fgbg::LabelVector::Zero(anchors);
  pr.aux.resize(anchors);
  std::mt19937_64 rng(42);
  std::normal_distribution<float> neg(-2.f, 1.5f), pos(0.f, 1.5f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  for (Index a = 0; a < anchors; ++a) {
    for (Index c = 0; c < kClasses; ++c) pr.x(a, c) = neg(rng);
    pr.aux[a] = 0.5f + 0.5f * uni(rng);
  }
  // P positive anchors spread evenly
  for (Index i = 0; i < P; ++i) {
    const Index a = i * anchors / P;
    const int k = static_cast<int>(rng() % kClasses);
    pr.y[a] = k + 1;
    pr.x(a, k) = pos(rng);
  }
  pr.loc = 1.f - pr.aux;
  pr.entries = anchors * kClasses;
  pr.positives = P;
  return pr;
}

void set_counters(benchmark::State& state, const Problem& pr) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * pr.entries);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          (pr.entries * 2 * static_cast<int64_t>(sizeof(float)) +
                           pr.x.rows() * static_cast<int64_t>(sizeof(fgbg::Label))));
}

template <typename V>
double rel_diff(const Logits& g, const std::vector<double>& want, const V& extra) {
  double scale = 1, diff = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  const float* p = g.data();
  for (std::size_t i = 0; i < want.size(); ++i)
    diff = std::max(diff, std::abs(static_cast<double>(p[i]) - want[i]));
  double d = diff / scale;
  for (const auto& e : extra)
    d = std::max(d, std::abs(e.first - e.second) / std::max(1.0, e.second));
  return d;
}

// --- sort-based ------------------------------------------------------------------------------

void BM_AP_Sorted(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  const fgbg::APLoss<float> loss;
  fgbg::RankingWorkspace ws;
  Logits g(pr.x.rows(), pr.x.cols());
  loss.value_and_grad(pr.x, pr.y, g, ws);  // warm-up: workspace and pages of g
  for (auto _ : state) benchmark::DoNotOptimize(loss.value_and_grad(pr.x, pr.y, g, ws));
  set_counters(state, pr);
  state.counters["relevant_neg"] = static_cast<double>(ws.relevant_negatives);
}

void BM_ALRP_Sorted(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  const fgbg::ALRPLoss<float> loss;
  fgbg::RankingWorkspace ws;
  Logits g(pr.x.rows(), pr.x.cols());
  Eigen::ArrayXf gl(pr.x.rows());
  loss.value_and_grad(pr.x, pr.y, pr.loc, g, gl, ws);  // warm-up
  for (auto _ : state)
    benchmark::DoNotOptimize(loss.value_and_grad(pr.x, pr.y, pr.loc, g, gl, ws).cls);
  set_counters(state, pr);
}

void BM_RS_Sorted(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  const fgbg::RankSortLoss<float> loss;
  fgbg::RankingWorkspace ws;
  Logits g(pr.x.rows(), pr.x.cols());
  loss.value_and_grad(pr.x, pr.y, pr.aux, g, ws);  // warm-up
  for (auto _ : state)
    benchmark::DoNotOptimize(loss.value_and_grad(pr.x, pr.y, pr.aux, g, ws).rank);
  set_counters(state, pr);
}

// --- brute-force loop (the official O(P·N) algorithm) -----------------------------------------

void BM_AP_Loop(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  fgbg_oracle::Result r;
  for (auto _ : state) {
    const auto f = fgbg_oracle::flatten(pr.x, pr.y, &pr.aux, false);
    r = fgbg_oracle::ap_loss(f, pr.entries, 1.0, true);
    benchmark::DoNotOptimize(r.loss);
  }
  set_counters(state, pr);
  fgbg::RankingWorkspace ws;
  Logits g;
  const double v = fgbg::APLoss<float>().value_and_grad(pr.x, pr.y, g, ws);
  state.counters["max_rel_diff"] =
      rel_diff(g, r.grad, std::vector<std::pair<double, double>>{{v, r.loss}});
}

void BM_ALRP_Loop(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  fgbg_oracle::Result r;
  for (auto _ : state) {
    const auto f = fgbg_oracle::flatten(pr.x, pr.y, &pr.loc, false);
    r = fgbg_oracle::alrp_loss(f, pr.entries, pr.x.rows(), 1.0, 1e-5);
    benchmark::DoNotOptimize(r.loss);
  }
  set_counters(state, pr);
  fgbg::RankingWorkspace ws;
  Logits g;
  Eigen::ArrayXf gl;
  const auto v = fgbg::ALRPLoss<float>().value_and_grad(pr.x, pr.y, pr.loc, g, gl, ws);
  state.counters["max_rel_diff"] = rel_diff(
      g, r.grad, std::vector<std::pair<double, double>>{{v.cls, r.loss}, {v.loc, r.loss2}});
}

void BM_RS_Loop(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  fgbg_oracle::Result r;
  for (auto _ : state) {
    const auto f = fgbg_oracle::flatten(pr.x, pr.y, &pr.aux, true);
    r = fgbg_oracle::rs_loss(f, pr.entries, 0.5, 1e-10);
    benchmark::DoNotOptimize(r.loss);
  }
  set_counters(state, pr);
  fgbg::RankingWorkspace ws;
  Logits g;
  const auto v = fgbg::RankSortLoss<float>().value_and_grad(pr.x, pr.y, pr.aux, g, ws);
  state.counters["max_rel_diff"] = rel_diff(
      g, r.grad, std::vector<std::pair<double, double>>{{v.rank, r.loss}, {v.sort, r.loss2}});
}

// --- yardstick: one std::sort of P + N floats ------------------------------------------------

void BM_StdSortFloats(benchmark::State& state) {
  const Problem& pr = problem(state.range(0), state.range(1));
  std::vector<float> v(pr.x.data(), pr.x.data() + pr.entries);
  for (auto _ : state) {
    state.PauseTiming();
    std::copy(pr.x.data(), pr.x.data() + pr.entries, v.begin());
    state.ResumeTiming();
    std::sort(v.begin(), v.end());
    benchmark::DoNotOptimize(v.data());
  }
  set_counters(state, pr);
}

void sizes(benchmark::internal::Benchmark* b) {
  b->Args({100, 100000})->Args({1000, 1000000})->Args({5000, 10000000});
  b->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_AP_Sorted)->Apply(sizes);
BENCHMARK(BM_ALRP_Sorted)->Apply(sizes);
BENCHMARK(BM_RS_Sorted)->Apply(sizes);
BENCHMARK(BM_StdSortFloats)->Apply(sizes);
// The loop is O(P·N): run it where it finishes in seconds (P = 5k, N = 10M would take minutes).
BENCHMARK(BM_AP_Loop)
    ->Args({100, 100000})
    ->Args({1000, 1000000})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ALRP_Loop)
    ->Args({100, 100000})
    ->Args({1000, 1000000})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RS_Loop)
    ->Args({100, 100000})
    ->Args({1000, 1000000})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
