// Benchmarks of the quality-aware and equalized focal losses (QFL, VFL, EFL) and of focal loss
// with N × C float targets (DenseTargetFocalLoss): value_and_grad at
// 100k anchors × 80 classes, float, one thread, against fgbg::SigmoidFocalLoss<float> (the fused
// focal kernel they should stay within 1.5× of) and a naive QFL written as a chain of
// materialised Eigen expressions. Counters: items/s = logits per second; bytes/s = logits read +
// gradient written (8 bytes per element in float) + labels and qualities.
//
// Run: bench_quality --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include <fgbg/soft_sampling/dense_target_focal_loss.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>

namespace {

using fgbg::Index;
using Logits = fgbg::RowArray<float>;

/// A RetinaNet-like head: logits around the prior bias, 2% hard background entries, 0.1%
/// positive anchors with IoU in [0.5, 0.95], ~7% ignored.
struct Data {
  Logits x, g;
  fgbg::LabelVector y;
  Eigen::ArrayXf q;
  Data(Index n, Index c) : x(n, c), g(n, c), y(n), q(n) {
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<float> uni(0.f, 1.f);
    std::normal_distribution<float> easy(-4.59512f, 0.8f), hard(0.3f, 1.2f), fg(0.5f, 1.5f);
    for (Index i = 0; i < n; ++i) {
      const float u = uni(rng);
      y[i] = u < 0.001f ? 1 + static_cast<int>(uni(rng) * c) % c : (u < 0.07f ? -1 : 0);
      q[i] = y[i] > 0 ? 0.5f + 0.45f * uni(rng) : 0.f;
      for (Index k = 0; k < c; ++k) x(i, k) = uni(rng) < 0.02f ? hard(rng) : easy(rng);
      if (y[i] > 0) x(i, y[i] - 1) = fg(rng);
    }
  }
};

const Data& data(Index n, Index c) {
  static Data d(n, c);
  return d;
}

void counters(benchmark::State& st, const Data& d) {
  const auto elems = static_cast<int64_t>(d.x.size());
  st.SetItemsProcessed(st.iterations() * elems);
  st.SetBytesProcessed(st.iterations() * (elems * 8 + d.x.rows() * 8));
}

void BM_SigmoidFocal(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::SigmoidFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, d.g));
  counters(st, d);
}

/// Focal loss on fp16 logits with an fp16 gradient (a mixed-precision step): each tile converted
/// to float and back; half the bytes of the float call.
void BM_SigmoidFocalHalf(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::RowArray<Eigen::half> xh = d.x.template cast<Eigen::half>();
  fgbg::RowArray<Eigen::half> gh(xh.rows(), xh.cols());
  const fgbg::SigmoidFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(xh, d.y, gh));
  counters(st, d);
}

/// The same with bfloat16 logits and gradient.
void BM_SigmoidFocalBfloat16(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::RowArray<Eigen::bfloat16> xh = d.x.template cast<Eigen::bfloat16>();
  fgbg::RowArray<Eigen::bfloat16> gh(xh.rows(), xh.cols());
  const fgbg::SigmoidFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(xh, d.y, gh));
  counters(st, d);
}

/// The focal kernel with a non-integer γ (one more exp per element than γ = 2): the floor for
/// EFL, whose per-class γ_j are non-integer once the statistics have moved.
void BM_SigmoidFocalGamma25(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::SigmoidFocalLoss<float> loss({0.25f, 2.5f});
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, d.g));
  counters(st, d);
}

void BM_QualityFocal(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::QualityFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, d.q, d.g));
  counters(st, d);
}

void BM_Varifocal(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::VarifocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, d.q, d.g));
  counters(st, d);
}

/// EFL in training: non-integer per-class γ_j (state warmed up by 3 calls), statistics updated
/// by every call (included in the time).
void BM_EqualizedFocal(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::EqualizedFocalLoss<float> loss;
  fgbg::EqualizedFocalState state(80);
  for (int i = 0; i < 3; ++i) loss.value_and_grad(d.x, d.y, d.g, state);
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, d.g, state));
  counters(st, d);
}

/// EFL value only with the same state (no statistics update): the kernel alone.
void BM_EqualizedFocalValueOnly(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const fgbg::EqualizedFocalLoss<float> loss;
  fgbg::EqualizedFocalState state(80);
  for (int i = 0; i < 3; ++i) loss.value_and_grad(d.x, d.y, d.g, state);
  for (auto _ : st) benchmark::DoNotOptimize(loss.value(d.x, d.y, state));
  counters(st, d);
}

/// torchvision's sigmoid_focal_loss with float targets [N, C]: each positive's quality at its
/// class column, 0 elsewhere (DenseTargetFocalLoss; the targets are read as a second N × C
/// array).
void BM_DenseTargetFocal(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  Logits t = Logits::Zero(d.x.rows(), d.x.cols());
  for (Index i = 0; i < d.x.rows(); ++i)
    if (d.y[i] > 0) t(i, d.y[i] - 1) = d.q[i];
  const fgbg::DenseTargetFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, t, d.g));
  counters(st, d);
}

/// The worst case of the dense-target path: every target soft (label smoothing 0.1), so every
/// element takes the scalar soft-target formula (in double) instead of the vectorised t = 0 one.
void BM_DenseTargetFocalAllSoft(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  Logits t = Logits::Constant(d.x.rows(), d.x.cols(), 0.1f / 80.f);
  for (Index i = 0; i < d.x.rows(); ++i)
    if (d.y[i] > 0) t(i, d.y[i] - 1) += 0.9f;
  const fgbg::DenseTargetFocalLoss<float> loss;
  for (auto _ : st) benchmark::DoNotOptimize(loss.value_and_grad(d.x, d.y, t, d.g));
  counters(st, d);
}

/// Naive baseline: QFL as materialised Eigen expressions over the whole N × C array (target
/// matrix, σ, softplus, d, BCE, loss, gradient), as a straightforward port would write it.
void BM_QualityFocalNaive(benchmark::State& st) {
  Data d = data(st.range(0), 80);
  const Index n = d.x.rows(), c = d.x.cols();
  for (auto _ : st) {
    Logits t = Logits::Zero(n, c), valid = Logits::Ones(n, c);
    double npos = 0;
    for (Index i = 0; i < n; ++i) {
      if (d.y[i] > 0) t(i, d.y[i] - 1) = d.q[i], npos += 1;
      if (d.y[i] < 0) valid.row(i).setZero();
    }
    Logits p = 1.f / (1.f + (-d.x).exp());
    Logits sp = d.x.max(0.f) + (-d.x.abs()).exp().log1p();
    Logits diff = p - t;
    Logits bce = sp - t * d.x;
    Logits l = diff.square() * bce * valid;
    const float norm = static_cast<float>(std::max(1.0, npos));
    d.g = diff * (2.f * p * (1.f - p) * bce + diff.square()) * valid / norm;
    benchmark::DoNotOptimize(l.template cast<double>().sum() / norm);
  }
  counters(st, d);
}

}  // namespace

BENCHMARK(BM_SigmoidFocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SigmoidFocalHalf)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SigmoidFocalBfloat16)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SigmoidFocalGamma25)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_QualityFocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Varifocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EqualizedFocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EqualizedFocalValueOnly)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseTargetFocal)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseTargetFocalAllSoft)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_QualityFocalNaive)->Arg(100000)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
