// Benchmarks of unbiased learning: the sampling-free guided wrapper around fused BCE against the
// fused focal loss (target: within 1.5x of it) and the bare BCE it wraps, residual objectness,
// and naive baselines written as chains of materialised Eigen expressions, all in one binary.
// items/s counts logit elements (N x C); bytes/s counts logits read + gradient written + labels.
#include <benchmark/benchmark.h>

#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/unbiased/guided_loss.hpp>
#include <fgbg/unbiased/residual_objectness.hpp>
#include <map>
#include <memory>
#include <random>

namespace {

using fgbg::Index;
using Logits = fgbg::RowArray<float>;

constexpr Index kClasses = 80;

/// RetinaNet-like batch: logits around the prior, ~0.1% positives, ~7% ignored.
struct Data {
  Logits x, stages, grad, grad_stages;
  fgbg::LabelVector y;
  explicit Data(Index n)
      : x(n, kClasses), stages(n, 2), grad(n, kClasses), grad_stages(n, 2), y(n) {
    std::mt19937_64 rng(123);
    std::normal_distribution<float> nd(-4.6f, 1.0f);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    grad.setZero();  // touch the pages once, outside the timed loop
    grad_stages.setZero();
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
    for (Index i = 0; i < stages.size(); ++i) stages.data()[i] = nd(rng) - 2.3f;
    for (Index i = 0; i < n; ++i) {
      const float r = u(rng);
      y[i] = r < 0.001f ? 1 + static_cast<int>(u(rng) * kClasses) % kClasses : (r < 0.07f ? -1 : 0);
    }
  }
};

/// One lazily built batch per size, shared by every benchmark of that size.
Data& data(Index n) {
  static std::map<Index, std::unique_ptr<Data>> cache;
  auto& slot = cache[n];
  if (!slot) slot = std::make_unique<Data>(n);
  return *slot;
}

void set_counters(benchmark::State& state, Index n, Index c) {
  const double elems = static_cast<double>(n) * static_cast<double>(c);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * elems));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (elems * 8.0 + n * 4.0)));
}

void BM_GuidedBce(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  const fgbg::GuidedLoss<fgbg::SigmoidCrossEntropyLoss<float>> guided;
  for (auto _ : state) {
    const auto r = guided.value_and_grad(d.x, d.y, 0.5, d.grad);
    benchmark::DoNotOptimize(r.value);
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

void BM_GuidedBceQuirk(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  const fgbg::GuidedLoss<fgbg::SigmoidCrossEntropyLoss<float>> guided(
      fgbg::SigmoidCrossEntropyLoss<float>(), {1.0, true});
  for (auto _ : state) {
    const auto r = guided.value_and_grad(d.x, d.y, 0.5, d.grad);
    benchmark::DoNotOptimize(r.value);
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

void BM_FusedBce(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  for (auto _ : state) {
    benchmark::DoNotOptimize(bce.value_and_grad(d.x, d.y, d.grad));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

void BM_FusedFocal(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  const fgbg::SigmoidFocalLoss<float> focal;
  for (auto _ : state) {
    benchmark::DoNotOptimize(focal.value_and_grad(d.x, d.y, d.grad));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

/// Naive guided BCE: one-hot targets, mask, loss and gradient as materialised whole-array
/// expressions, then the ratio and a scale (what a straightforward port would write).
void BM_NaiveGuidedBce(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  for (auto _ : state) {
    Logits t = Logits::Zero(n, kClasses), mask(n, kClasses);
    for (Index i = 0; i < n; ++i) {
      if (d.y[i] > 0) t(i, d.y[i] - 1) = 1.f;
      mask.row(i).setConstant(d.y[i] >= 0 ? 1.f : 0.f);
    }
    Logits p = 1.f / (1.f + (-d.x).exp());
    Logits loss = (d.x.max(0.f) - d.x * t + (-d.x.abs()).exp().log1p()) * mask;
    const double cls = loss.cast<double>().sum() / std::max(1.0, double(mask.sum()));
    const float w = static_cast<float>(0.5 / cls);
    d.grad = (p - t) * mask * (w / std::max(1.f, mask.sum()));
    benchmark::DoNotOptimize(d.grad.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

void BM_ResidualObjectness(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  const fgbg::ResidualObjectnessLoss<float> loss;
  fgbg::ResidualObjectnessState st;
  for (auto _ : state) {
    const auto r = loss.value_and_grad(d.x, d.y, d.stages, d.grad, d.grad_stages, st);
    benchmark::DoNotOptimize(r.loss);
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

/// Naive residual objectness: materialised masks and full-array BCE over every class logit,
/// masked to the positive rows afterwards.
void BM_NaiveResidualObjectness(benchmark::State& state) {
  const Index n = state.range(0);
  Data& d = data(n);
  for (auto _ : state) {
    Eigen::ArrayXf o = d.stages.col(0) + d.stages.col(1);
    Eigen::ArrayXf valid = (d.y >= 0).cast<float>(), pos = (d.y > 0).cast<float>();
    Eigen::ArrayXf po = 1.f / (1.f + (-o).exp());
    const double lobj =
        ((o.max(0.f) - o * pos + (-o.abs()).exp().log1p()) * valid).cast<double>().sum() / 2000.0;
    Eigen::ArrayXf go = (po - pos) * valid / 2000.f;
    d.grad_stages.col(0) = go;
    d.grad_stages.col(1) = go;
    Logits t = Logits::Zero(n, kClasses), mask(n, kClasses);
    for (Index i = 0; i < n; ++i) {
      if (d.y[i] > 0) t(i, d.y[i] - 1) = 1.f;
      mask.row(i).setConstant(pos[i]);
    }
    Logits loss = (d.x.max(0.f) - d.x * t + (-d.x.abs()).exp().log1p()) * mask;
    d.grad = (1.f / (1.f + (-d.x).exp()) - t) * mask / 1000.f;
    benchmark::DoNotOptimize(lobj + loss.cast<double>().sum());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, kClasses);
}

}  // namespace

BENCHMARK(BM_FusedFocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedBce)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GuidedBce)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GuidedBceQuirk)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NaiveGuidedBce)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResidualObjectness)
    ->Arg(10000)
    ->Arg(100000)
    ->Arg(1000000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NaiveResidualObjectness)->Arg(100000)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
