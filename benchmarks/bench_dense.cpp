// Dense soft-sampling losses (BCE, sigmoid focal, GHM-C), float, value_and_grad over N anchors ×
// 80 classes, next to three yardsticks measured in the same run:
//   naive    the torchvision focal-loss formula (and its autograd backward) written as a chain of
//            Eigen expressions, each materialised into its own array;
//   hand     the same focal (γ = 2, α = .25) and BCE formulas as one hand-fused loop per anchor
//            row, in registers, with their own exp and log1p (written for this file, sharing
//            nothing with the library): the yardstick of issue 12 ("within 1.1× of it");
//   floor    one vectorised pass computing only exp(−|x|) and log1p of it per element;
//   copy     a STREAM-style copy of the same bytes (read the logits, write the gradient).
//   outputs  focal loss with its per-anchor (N) or per-element (N × C) losses written in the same
//            pass (fgbg::anchor_losses / element_losses): the cost over BM_focal is the price of
//            mmdetection's reduction='none' next to the gradient.
// Counters: items/s = logits per second, bytes/s = logits read + gradient written.
// Threads: the *_threads benchmarks need the library built with -DFGBG_USE_OPENMP=ON.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstring>
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

// The hand-fused yardstick: focal loss (γ = 2, α = .25, normaliser max(1, #positives)) or BCE
// (mean over the non-ignored elements), value and gradient, one loop per row of logits. Its own
// transcendentals, kept short: e^−|x| = 2^n · 2^f (n = round(−|x| log2 e), f ∈ [−½, ½], Taylor
// polynomial of degree 6 for 2^f, |x| clamped at 87, no subnormal results), and log1p(e) =
// 2 atanh(s), s = e/(2+e), from the odd Taylor series to s^13, with one division per element
// shared by 1/(1+e) and e/(2+e). Selects on the sign bit (integer masks vectorise everywhere).
// The positive element of a row is patched with std:: scalar functions. About 1e-6 relative
// from fgbg's value (checked by the benchmark).
namespace hand {

inline std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float flt(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Parts {
  float sig, sig_neg, softplus;
};

inline Parts parts(float x) {
  const std::uint32_t bx = bits(x);
  std::uint32_t a = bx & 0x7fffffffu;
  a = a < 0x42ae0000u ? a : 0x42ae0000u;  // min(|x|, 87)
  const float t = flt(a) * -1.44269504f;  // log2 e^−|x|
  const float sh = t + 12582912.0f;       // 1.5·2^23: round to integer
  const float n = sh - 12582912.0f;
  const float f = t - n;
  const float p2 =
      1.0f + f * (0.693147181f +
                  f * (0.240226507f +
                       f * (0.0555041087f +
                            f * (0.00961812911f + f * (0.00133335581f + f * 0.000154035304f)))));
  const float e = p2 * flt((bits(sh) - 0x4B400000u + 127u) << 23);
  const float u = 1.0f + e, v = 2.0f + e, d = 1.0f / (u * v);
  const float r = v * d, er = e * r, s = e * u * d, z = s * s;
  const float l1p =
      2.0f * s *
      (1.0f + z * (0.333333343f +
                   z * (0.2f + z * (0.142857149f + z * (0.111111112f + z * (0.0909090936f +
                                                                            z * 0.0769230798f))))));
  const std::uint32_t pos = (bx >> 31) - 1u;  // all ones for x ≥ +0
  const float relu = flt(bx & pos);
  return {flt((bits(r) & pos) | (bits(er) & ~pos)), flt((bits(er) & pos) | (bits(r) & ~pos)),
          relu + l1p};
}

template <bool kFocal>
double value_and_grad(const Mat& x, const fgbg::LabelVector& y, Mat& g) {
  const Index n = x.rows(), c = x.cols();
  Index positives = 0, valid = 0;
  for (Index i = 0; i < n; ++i) {
    positives += y[i] > 0;
    valid += y[i] >= 0;
  }
  const double norm = kFocal ? std::max<double>(1, positives) : static_cast<double>(valid * c);
  const float inv = static_cast<float>(1.0 / norm);
  constexpr int kLanes = 16;
  alignas(64) float row_loss[1024];  // the benchmark has 80 columns
  if (c > 1024) return std::nan("");
  double total = 0;
  for (Index i = 0; i < n; ++i) {
    const float* xr = x.data() + i * c;
    float* gr = g.data() + i * c;
    if (y[i] < 0) {
      std::fill(gr, gr + c, 0.0f);
      continue;
    }
    for (Index j = 0; j < c; ++j) {
      const Parts p = parts(xr[j]);
      if (kFocal) {
        const float w = 0.75f * p.sig * p.sig;
        row_loss[j] = w * p.softplus;
        gr[j] = w * (p.sig + 2.0f * p.sig_neg * p.softplus) * inv;
      } else {
        row_loss[j] = p.softplus;
        gr[j] = p.sig * inv;
      }
    }
    if (y[i] > 0) {  // the positive element, scalar
      const Index j = y[i] - 1;
      const double xv = xr[j], sp_neg = std::log1p(std::exp(-std::fabs(xv))) + std::max(-xv, 0.0);
      const double sn = 1 / (1 + std::exp(xv));  // 1 − σ
      if (kFocal) {
        row_loss[j] = static_cast<float>(0.25 * sn * sn * sp_neg);
        gr[j] = static_cast<float>(0.25 * sn * sn * (-2 * (1 - sn) * sp_neg - sn) / norm);
      } else {
        row_loss[j] = static_cast<float>(sp_neg);
        gr[j] = static_cast<float>(-sn / norm);
      }
    }
    float lanes[kLanes] = {};
    Index j = 0;
    for (; j + kLanes <= c; j += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += row_loss[j + l];
    double row = 0;
    for (; j < c; ++j) row += row_loss[j];
    for (int l = 0; l < kLanes; ++l) row += lanes[l];
    total += row;
  }
  return total / norm;
}

}  // namespace hand

template <bool kFocal>
void run_hand(benchmark::State& st) {
  const Index n = st.range(0);
  Batch& b = const_cast<Batch&>(batch(n));
  Mat ref(n, kClasses);
  const double want = kFocal ? fgbg::SigmoidFocalLoss<float>().value_and_grad(b.x, b.y, ref)
                             : fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(b.x, b.y, ref);
  const double got = hand::value_and_grad<kFocal>(b.x, b.y, b.g);
  const double gerr = ((b.g - ref).abs() / (ref.abs() + 1e-30f)).maxCoeff();
  if (!(std::abs(got - want) <= 1e-5 * std::abs(want)) || !(gerr < 1e-4)) {
    st.SkipWithError("the hand-fused kernel disagrees with fgbg");
    return;
  }
  for (auto _ : st) {
    benchmark::DoNotOptimize(hand::value_and_grad<kFocal>(b.x, b.y, b.g));
    benchmark::ClobberMemory();
  }
  set_counters(st, n);
}
void BM_focal_hand(benchmark::State& st) {
  run_hand<true>(st);
}
void BM_bce_hand(benchmark::State& st) {
  run_hand<false>(st);
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
BENCHMARK(BM_bce_hand)->Apply(sizes);
BENCHMARK(BM_focal_hand)->Apply(sizes);
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
