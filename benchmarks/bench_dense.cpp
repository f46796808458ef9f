// Dense soft-sampling losses (BCE, sigmoid focal, GHM-C), float, value_and_grad over N anchors ×
// 80 classes, next to three yardsticks measured in the same run:
//   naive    the torchvision focal-loss formula (and its autograd backward) written as a chain of
//            Eigen expressions, each materialised into its own array;
//   floor    one vectorised pass computing only exp(−|x|) and log1p of it per element;
//   copy     a STREAM-style copy of the same bytes (read the logits, write the gradient).
//   outputs  focal loss with its per-anchor (N) or per-element (N × C) losses written in the same
//            pass (fgbg::anchor_losses / element_losses): the cost over BM_focal is the price of
//            mmdetection's reduction='none' next to the gradient.
// Counters: items/s = logits per second, bytes/s = logits read + gradient written.
// Threads: the *_threads benchmarks need the library built with -DFGBG_USE_OPENMP=ON.
#include <benchmark/benchmark.h>

#include <fgbg/fgbg.hpp>
#include <map>
#include <random>

namespace {

using fgbg::Index;
using Mat = fgbg::RowArray<float>;
using Arr = Eigen::ArrayXXf;
constexpr Index kClasses = 80;

struct Batch {
  Mat x, g;
  fgbg::LabelVector y;
};

const Batch& batch(Index n) {
  static std::map<Index, Batch> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  Batch b;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(-4.6f, 1.5f);
  std::uniform_real_distribution<float> u(0, 1);
  b.x.resize(n, kClasses);
  b.g.resize(n, kClasses);
  b.g.setZero();
  for (Index i = 0; i < b.x.size(); ++i) b.x.data()[i] = nd(rng);
  b.y.resize(n);
  for (Index i = 0; i < n; ++i) {
    const float r = u(rng);
    b.y[i] = r < 0.001f ? 1 + static_cast<int>(i % kClasses) : (r < 0.07f ? -1 : 0);
  }
  return cache.emplace(n, std::move(b)).first->second;
}

void set_counters(benchmark::State& st, Index n) {
  const double elems = static_cast<double>(n) * kClasses;
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * elems));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * elems * 2 * sizeof(float)));
  st.counters["ns/elem"] = benchmark::Counter(
      elems * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void set_threads(benchmark::State& st) {
#if FGBG_OPENMP_ENABLED
  omp_set_num_threads(static_cast<int>(st.range(1)));
#else
  if (st.range(1) != 1) st.SkipWithError("built without FGBG_USE_OPENMP");
#endif
}

template <typename Loss>
void run_loss(benchmark::State& st, const Loss& loss) {
  set_threads(st);
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  for (auto _ : st) {
    benchmark::DoNotOptimize(loss.value_and_grad(b.x, b.y, b.g));
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}

void BM_bce(benchmark::State& st) {
  run_loss(st, fgbg::SigmoidCrossEntropyLoss<float>());
}
void BM_focal(benchmark::State& st) {
  run_loss(st, fgbg::SigmoidFocalLoss<float>());
}
void BM_focal_anchor_losses(benchmark::State& st) {
  set_threads(st);
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  const fgbg::SigmoidFocalLoss<float> loss;
  Eigen::ArrayXf a(n);
  for (auto _ : st) {
    benchmark::DoNotOptimize(loss.value_and_grad(b.x, b.y, b.g, fgbg::anchor_losses(a)));
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}
void BM_focal_element_losses(benchmark::State& st) {
  set_threads(st);
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  const fgbg::SigmoidFocalLoss<float> loss;
  Mat e(n, kClasses);
  for (auto _ : st) {
    benchmark::DoNotOptimize(loss.value_and_grad(b.x, b.y, b.g, fgbg::element_losses(e)));
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}
void BM_ghm_c(benchmark::State& st) {
  set_threads(st);
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  const fgbg::GhmcLoss<float> loss({30, 0.75});
  fgbg::GhmcState state(30);
  for (auto _ : st) {
    benchmark::DoNotOptimize(loss.value_and_grad(b.x, b.y, b.g, state));
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}

// torchvision's sigmoid_focal_loss (+ its backward) as materialised Eigen expressions.
void BM_focal_naive(benchmark::State& st) {
  const Index n = st.range(0);
  const Batch& b = batch(n);
  const float alpha = 0.25f;
  Arr x = b.x;  // the naive code works on its own (column-major) arrays
  Arr t = Arr::Zero(n, kClasses), valid = Arr::Zero(n, kClasses);
  for (Index i = 0; i < n; ++i) {
    if (b.y[i] > 0) t(i, b.y[i] - 1) = 1;
    if (b.y[i] >= 0) valid.row(i).setOnes();
  }
  Arr g(n, kClasses);
  for (auto _ : st) {
    Arr p = 1.0f / (1.0f + (-x).exp());
    Arr ce = x.max(0.0f) - x * t + (-x.abs()).exp().log1p();
    Arr p_t = p * t + (1.0f - p) * (1.0f - t);
    Arr one_m = 1.0f - p_t;
    Arr mod = one_m.square();
    Arr loss = ce * mod;
    Arr a_t = alpha * t + (1.0f - alpha) * (1.0f - t);
    loss = a_t * loss * valid;
    const double value = loss.cast<double>().sum();
    // backward (autograd's elementwise chain)
    Arr dce = p - t;
    Arr dpt = (2.0f * t - 1.0f) * p * (1.0f - p);
    Arr dmod = -2.0f * one_m * dpt;
    g = a_t * valid * (dce * mod + ce * dmod);
    benchmark::DoNotOptimize(value);
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}

// The transcendental floor: exp(−|x|) and log1p of it, one pass, one output.
void BM_floor_exp_log1p(benchmark::State& st) {
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  for (auto _ : st) {
    for (Index r0 = 0; r0 < n; r0 += 25) {
      const Index rows = std::min<Index>(25, n - r0);
      auto xs = b.x.middleRows(r0, rows);
      b.g.middleRows(r0, rows) = (-xs.abs()).exp().log1p();
    }
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}

void BM_stream_copy(benchmark::State& st) {
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  for (auto _ : st) {
    b.g = b.x;
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}

void sizes(benchmark::internal::Benchmark* bm) {
  for (Index n : {10000, 100000, 1000000}) bm->Args({n, 1});
  bm->ArgNames({"anchors", "threads"});
  bm->Unit(benchmark::kMillisecond);
}
void sizes_threads(benchmark::internal::Benchmark* bm) {
  for (Index n : {10000, 100000, 1000000})
    for (int t : {1, 2}) bm->Args({n, t});
  bm->ArgNames({"anchors", "threads"});
  bm->Unit(benchmark::kMillisecond);
  bm->UseRealTime();
}

}  // namespace

BENCHMARK(BM_stream_copy)->Apply(sizes);
BENCHMARK(BM_floor_exp_log1p)->Apply(sizes);
BENCHMARK(BM_bce)->Apply(sizes_threads);
BENCHMARK(BM_focal)->Apply(sizes_threads);
BENCHMARK(BM_focal_anchor_losses)->Apply(sizes_threads);
BENCHMARK(BM_focal_element_losses)->Apply(sizes_threads);
BENCHMARK(BM_ghm_c)->Apply(sizes_threads);
BENCHMARK(BM_focal_naive)
    ->Args({10000, 1})
    ->Args({100000, 1})
    ->ArgNames({"anchors", "threads"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
