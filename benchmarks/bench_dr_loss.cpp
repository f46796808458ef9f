// DR loss value_and_grad on RetinaNet-sized float batches (N × 80), next to fused BCE (the
// yardstick: DR should stay within 2× of it) and a naive DR written as a chain of materialised
// Eigen expressions (what a direct translation of the released PyTorch module costs).
//
// Counters: items/s = logits per second; bytes/s = the bytes a fused pass must move
// (logits read + gradient written, 8 B per float element, plus 4 B of label per anchor).
#include <benchmark/benchmark.h>

#include <fgbg/ranking/dr_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <map>
#include <random>

namespace {

using fgbg::Index;
constexpr Index kClasses = 80;

struct Data {
  fgbg::RowArray<float> x;
  fgbg::LabelVector y;
  Eigen::ArrayXi image;
};

/// N anchors × 80 classes around the DR prior 0.5 (bias 0) with a few hard entries; ~1%
/// positive anchors, ~7% ignored, 2 images.
const Data& data(Index n) {
  static std::map<Index, Data> cache;
  Data& d = cache[n];
  if (d.x.rows() == n) return d;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> easy(-3.f, 1.f), hard(0.5f, 1.5f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  d.x.resize(n, kClasses);
  d.y.resize(n);
  d.image.resize(n);
  for (Index i = 0; i < n; ++i) {
    const float r = u(rng);
    d.y[i] = r < 0.01f ? 1 + static_cast<int>(u(rng) * kClasses) % kClasses : (r < 0.08f ? -1 : 0);
    d.image[i] = static_cast<int>(2 * i / n);
    for (Index k = 0; k < kClasses; ++k) d.x(i, k) = u(rng) < 0.02f ? hard(rng) : easy(rng);
  }
  return d;
}

void counters(benchmark::State& state, Index n) {
  const double elems = static_cast<double>(n) * kClasses;
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * elems));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (elems * 8 + n * 4)));
}

void BM_DR_fused(benchmark::State& state) {
  const Index n = state.range(0);
  const Data& d = data(n);
  fgbg::RowArray<float> g(n, kClasses);
  const fgbg::DRLoss<float> dr;
  dr.value_and_grad(d.x, d.y, g);  // untimed: first touch of the gradient's pages
  for (auto _ : state) benchmark::DoNotOptimize(dr.value_and_grad(d.x, d.y, g));
  counters(state, n);
}

void BM_DR_fused_per_image(benchmark::State& state) {
  const Index n = state.range(0);
  const Data& d = data(n);
  fgbg::RowArray<float> g(n, kClasses);
  const fgbg::DRLoss<float> dr;
  dr.value_and_grad(d.x, d.y, g, fgbg::groups(d.image));  // untimed warm-up
  for (auto _ : state)
    benchmark::DoNotOptimize(dr.value_and_grad(d.x, d.y, g, fgbg::groups(d.image)));
  counters(state, n);
}

void BM_DR_value_only(benchmark::State& state) {
  const Index n = state.range(0);
  const Data& d = data(n);
  const fgbg::DRLoss<float> dr;
  for (auto _ : state) benchmark::DoNotOptimize(dr.value(d.x, d.y));
  counters(state, n);
}

void BM_BCE_fused(benchmark::State& state) {
  const Index n = state.range(0);
  const Data& d = data(n);
  fgbg::RowArray<float> g(n, kClasses);
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  bce.value_and_grad(d.x, d.y, g);  // untimed warm-up
  for (auto _ : state) benchmark::DoNotOptimize(bce.value_and_grad(d.x, d.y, g));
  counters(state, n);
}

/// The released module translated line by line into materialised Eigen arrays.
float naive_dr(const fgbg::RowArray<float>& x, const fgbg::LabelVector& y,
               fgbg::RowArray<float>& grad) {
  using A = fgbg::RowArray<float>;
  const Index n = x.rows(), c = x.cols();
  const float ln = 0.1f / std::log(3.5f), lp = 1.f, L = 6.f, tau = 4.f, margin = 0.5f;
  const A cls = Eigen::Array<float, 1, Eigen::Dynamic>::LinSpaced(c, 1.f, float(c)).replicate(n, 1);
  const A lab = y.cast<float>().replicate(1, c);
  const A pos = (lab == cls).cast<float>();
  const A neg = ((lab >= 0.f) && (lab != cls)).cast<float>();
  const A p = 1.f / (1.f + (-x).exp());
  const float mn = (neg > 0.f).select(p, -1.f).maxCoeff();
  const float mp = (pos > 0.f).select(-p, -2.f).maxCoeff();
  const A wn = neg * ((p - mn) / ln).exp();
  const A wp = pos * ((-p - mp) / lp).exp();
  const double s0n = wn.cast<double>().sum(), s0p = wp.cast<double>().sum();
  const double dn = s0n > 0 ? (wn * p).cast<double>().sum() / s0n : 0.0;
  const double dp = s0p > 0 ? (wp * p).cast<double>().sum() / s0p : 1.0;
  const double lu = L * (dn - dp + margin);
  const float a = static_cast<float>(tau / (1 + std::exp(-lu)));
  const A qn = wn / float(s0n > 0 ? s0n : 1), qp = wp / float(s0p > 0 ? s0p : 1);
  const A dgn = qn * (1.f + (p - float(dn)) / ln);
  const A dgp = qp * (1.f - (p - float(dp)) / lp);
  grad = a * (dgn - dgp) * p * (1.f - p);
  return static_cast<float>(tau / L * std::log1p(std::exp(lu)));
}

void BM_DR_naive_eigen(benchmark::State& state) {
  const Index n = state.range(0);
  const Data& d = data(n);
  fgbg::RowArray<float> g(n, kClasses);
  naive_dr(d.x, d.y, g);  // untimed warm-up (its temporaries are still allocated per call)
  for (auto _ : state) benchmark::DoNotOptimize(naive_dr(d.x, d.y, g));
  counters(state, n);
}

}  // namespace

// Same sizes grouped together so the ratios read off one run. The naive chain materialises about
// a dozen N × 80 arrays, so it stops at 100k anchors.
BENCHMARK(BM_BCE_fused)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DR_fused)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DR_fused_per_image)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DR_value_only)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DR_naive_eigen)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
