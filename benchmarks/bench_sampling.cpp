// Boxes, assignment and hard samplers on RPN-sized (≈200k anchors over 1333×800, 50 GTs) and
// R-CNN-sized (2000 proposals + GTs) inputs, against the cost of one fused sigmoid BCE
// value_and_grad over 200k × 80 (the target: every sampler cheaper than that), with naive
// baselines in the same binary: a scalar double-loop IoU matrix, and OHEM's top-k by full sort.
//
// Counters: items/s = candidates (or IoU pairs) per second; ns_per_pair for the IoU matrix.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <fgbg/boxes/iou.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <random>

namespace {

using fgbg::Index;
using fgbg::RowArray;

// Anchors of an FPN RPN over 1333×800: strides 8..128, scale 8·stride, ratios 0.5/1/2 (plus
// stride 4 on the first 1/3 of the image to reach ≈200k), truncated to `n`.
RowArray<float> make_anchors(Index n) {
  RowArray<float> a(n, 4);
  Index k = 0;
  const double ratios[3] = {0.5, 1.0, 2.0};
  for (int stride : {4, 8, 16, 32, 64, 128}) {
    for (int y = 0; y * stride < 800 && k < n; ++y)
      for (int x = 0; x * stride < 1333 && k < n; ++x)
        for (double r : ratios) {
          if (k >= n) break;
          const double cx = (x + 0.5) * stride, cy = (y + 0.5) * stride, s = 8.0 * stride;
          const double w = s / std::sqrt(r), h = s * std::sqrt(r);
          a.row(k++) << float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2);
        }
  }
  for (; k < n; ++k) a.row(k) = a.row(k % 1000);
  return a;
}

RowArray<float> make_gts(Index g, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  RowArray<float> b(g, 4);
  for (Index j = 0; j < g; ++j) {
    const double w = 16 + 400 * u(rng) * u(rng), h = 16 + 300 * u(rng) * u(rng);
    const double x = (1333 - w) * u(rng), y = (800 - h) * u(rng);
    b.row(j) << float(x), float(y), float(x + w), float(y + h);
  }
  return b;
}

RowArray<float> make_proposals(const RowArray<float>& gts, Index n, std::uint64_t seed = 8) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  RowArray<float> p(n, 4);
  for (Index i = 0; i < n; ++i) {
    if (i % 2 == 0) {  // jittered around a GT
      const Index j = i / 2 % gts.rows();
      const double w = gts(j, 2) - gts(j, 0), h = gts(j, 3) - gts(j, 1);
      const double x = gts(j, 0) + 0.4 * w * (u(rng) - 0.5),
                   y = gts(j, 1) + 0.4 * h * (u(rng) - 0.5);
      p.row(i) << float(x), float(y), float(x + w * (0.7 + 0.6 * u(rng))),
          float(y + h * (0.7 + 0.6 * u(rng)));
    } else {  // random
      const double w = 20 + 300 * u(rng), h = 20 + 300 * u(rng);
      const double x = (1333 - w) * u(rng), y = (800 - h) * u(rng);
      p.row(i) << float(x), float(y), float(x + w), float(y + h);
    }
  }
  return p;
}

struct Scene {
  RowArray<float> anchors, gts, proposals, rcnn_boxes;
  fgbg::LabelVector gt_labels;
  fgbg::Assignment rpn, rcnn;
  Eigen::ArrayXd rpn_loss, rcnn_loss;
  Scene() {
    anchors = make_anchors(200000);
    gts = make_gts(50);
    gt_labels.resize(50);
    for (Index j = 0; j < 50; ++j) gt_labels[j] = 1 + static_cast<int>(j * 7 % 80);
    proposals = make_proposals(gts, 2000);
    fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rpn()).assign(anchors, gts, gt_labels, rpn);
    fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rcnn())
        .assign(proposals, gts, gt_labels, rcnn);
    fgbg::add_gt_as_proposals(rcnn, gt_labels);
    fgbg::with_gt_boxes(proposals, gts, rcnn_boxes);
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(0, 1);
    rpn_loss.resize(rpn.size());
    for (Index i = 0; i < rpn.size(); ++i) rpn_loss[i] = -std::log(1e-6 + u(rng));
    rcnn_loss.resize(rcnn.size());
    for (Index i = 0; i < rcnn.size(); ++i) rcnn_loss[i] = -std::log(1e-6 + u(rng));
  }
};

const Scene& scene() {
  static const Scene s;
  return s;
}

void BM_IouMatrix(benchmark::State& st) {
  const auto& s = scene();
  const Index g = st.range(0);
  const RowArray<float> gts = s.gts.topRows(g);
  Eigen::ArrayXXf out(s.anchors.rows(), g);  // column-major: one contiguous column per GT
  fgbg::iou_matrix(s.anchors, gts, out);     // warm-up: first touch of the output's pages
  for (auto _ : st) {
    fgbg::iou_matrix(s.anchors, gts, out);
    benchmark::DoNotOptimize(out.data());
  }
  const double pairs = double(s.anchors.rows()) * g;
  st.SetItemsProcessed(st.iterations() * static_cast<int64_t>(pairs));
  st.SetBytesProcessed(st.iterations() * static_cast<int64_t>(pairs * 4 + s.anchors.size() * 4));
  st.counters["ns_per_pair"] = benchmark::Counter(
      pairs * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_IouMatrix)->Arg(50)->Unit(benchmark::kMillisecond);

// Naive baseline: scalar loop per pair, N × G row-major output.
void BM_IouMatrixNaive(benchmark::State& st) {
  const auto& s = scene();
  const Index g = st.range(0), n = s.anchors.rows();
  RowArray<float> out = RowArray<float>::Zero(n, g);
  for (auto _ : st) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < g; ++j) {
        const double ax1 = s.anchors(i, 0), ay1 = s.anchors(i, 1), ax2 = s.anchors(i, 2),
                     ay2 = s.anchors(i, 3);
        const double bx1 = s.gts(j, 0), by1 = s.gts(j, 1), bx2 = s.gts(j, 2), by2 = s.gts(j, 3);
        const double iw = std::max(0.0, std::min(ax2, bx2) - std::max(ax1, bx1));
        const double ih = std::max(0.0, std::min(ay2, by2) - std::max(ay1, by1));
        const double inter = iw * ih;
        out(i, j) = float(
            inter / std::max((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter, 1e-6));
      }
    benchmark::DoNotOptimize(out.data());
  }
  const double pairs = double(n) * g;
  st.SetItemsProcessed(st.iterations() * static_cast<int64_t>(pairs));
  st.counters["ns_per_pair"] = benchmark::Counter(
      pairs * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_IouMatrixNaive)->Arg(50)->Unit(benchmark::kMillisecond);

void BM_AssignFused(benchmark::State& st) {
  const auto& s = scene();
  const fgbg::MaxIouAssigner rpn(fgbg::MaxIouAssignerConfig::rpn());
  fgbg::Assignment a;
  for (auto _ : st) {
    rpn.assign(s.anchors, s.gts, s.gt_labels, a);
    benchmark::DoNotOptimize(a.label_storage.data());
  }
  st.SetItemsProcessed(st.iterations() * s.anchors.rows());
  st.counters["ns_per_pair"] = benchmark::Counter(
      double(s.anchors.rows()) * s.gts.rows() * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_AssignFused)->Unit(benchmark::kMillisecond);

void BM_AssignFromMatrix(benchmark::State& st) {
  const auto& s = scene();
  const fgbg::MaxIouAssigner rpn(fgbg::MaxIouAssignerConfig::rpn());
  Eigen::ArrayXXf iou;
  fgbg::iou_matrix(s.anchors, s.gts, iou);
  fgbg::Assignment a;
  for (auto _ : st) {
    rpn.assign_from_iou(iou, s.gt_labels, a);
    benchmark::DoNotOptimize(a.label_storage.data());
  }
  st.SetItemsProcessed(st.iterations() * s.anchors.rows());
}
BENCHMARK(BM_AssignFromMatrix)->Unit(benchmark::kMillisecond);

// ---- samplers: arg 0 = RPN-sized (200k anchors), 1 = R-CNN-sized (2050 proposals) --------------

const fgbg::Assignment& pick(int which) {
  return which == 0 ? scene().rpn : scene().rcnn;
}
const Eigen::ArrayXd& pick_loss(int which) {
  return which == 0 ? scene().rpn_loss : scene().rcnn_loss;
}
fgbg::SamplerConfig pick_config(int which) {
  return which == 0 ? fgbg::SamplerConfig::rpn() : fgbg::SamplerConfig::rcnn();
}

template <typename F>
void run_sampler(benchmark::State& st, F&& f) {
  const auto& a = pick(static_cast<int>(st.range(0)));
  fgbg::Sample s;
  std::mt19937_64 rng(1);
  f(a, rng, s);  // warm-up: capacities
  for (auto _ : st) {
    f(a, rng, s);
    benchmark::DoNotOptimize(s.negatives.data());
  }
  st.SetItemsProcessed(st.iterations() * a.size());
  st.counters["sampled"] = double(s.size());
}

void BM_RandomSampler(benchmark::State& st) {
  const fgbg::RandomSampler sampler(pick_config(static_cast<int>(st.range(0))));
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64& rng, fgbg::Sample& s) {
    sampler.sample(a, rng, s);
  });
}
BENCHMARK(BM_RandomSampler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_OhemSampler(benchmark::State& st) {
  const int which = static_cast<int>(st.range(0));
  const fgbg::OhemSampler sampler(pick_config(which));
  const auto& loss = pick_loss(which);
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64&, fgbg::Sample& s) {
    sampler.sample(a.labels(), loss, s);
  });
}
BENCHMARK(BM_OhemSampler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_OhemPaperSampler(benchmark::State& st) {
  const int which = static_cast<int>(st.range(0));
  const fgbg::OhemPaperSampler sampler;
  const auto& loss = pick_loss(which);
  const RowArray<float>& boxes = which == 0 ? scene().anchors : scene().rcnn_boxes;
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64&, fgbg::Sample& s) {
    sampler.sample(a.labels(), boxes, loss, s);
  });
}
BENCHMARK(BM_OhemPaperSampler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_SsdMining(benchmark::State& st) {
  const int which = static_cast<int>(st.range(0));
  const fgbg::SsdHardNegativeMining sampler;
  const auto& loss = pick_loss(which);
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64&, fgbg::Sample& s) {
    sampler.sample(a.labels(), loss, s);
  });
}
BENCHMARK(BM_SsdMining)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_IouBalancedSampler(benchmark::State& st) {
  fgbg::IouBalancedSamplerConfig c;
  c.batch = pick_config(static_cast<int>(st.range(0)));
  const fgbg::IouBalancedSampler sampler(c);
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64& rng, fgbg::Sample& s) {
    sampler.sample(a, rng, s);
  });
}
BENCHMARK(BM_IouBalancedSampler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_InstanceBalancedSampler(benchmark::State& st) {
  fgbg::InstanceBalancedSamplerConfig c;
  c.batch = pick_config(static_cast<int>(st.range(0)));
  const fgbg::InstanceBalancedSampler sampler(c);
  run_sampler(st, [&](const fgbg::Assignment& a, std::mt19937_64& rng, fgbg::Sample& s) {
    sampler.sample(a, rng, s);
  });
}
BENCHMARK(BM_InstanceBalancedSampler)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// ---- OHEM selection: radix selection (fgbg), nth_element and a full sort on the 200k pool ----

/// Builds the (loss, index) pairs of the 200k RPN pool and keeps the k = range(0) first in
/// (loss desc, index asc) order with `select(keyed, k)`, every iteration.
template <typename Select>
void run_top_k(benchmark::State& st, Select&& select) {
  const auto& loss = scene().rpn_loss;
  const Index k = st.range(0);
  std::vector<std::pair<double, Index>> keyed;
  keyed.reserve(loss.size());
  for (auto _ : st) {
    keyed.clear();
    for (Index i = 0; i < loss.size(); ++i) keyed.emplace_back(loss[i], i);
    select(keyed, k);
    benchmark::DoNotOptimize(keyed.data());
  }
  st.SetItemsProcessed(st.iterations() * loss.size());
}

void BM_TopKSelect(benchmark::State& st) {
  run_top_k(st, [](auto& keyed, Index k) { fgbg::detail::top_k(keyed, k); });
}
BENCHMARK(BM_TopKSelect)->Arg(128)->Arg(4096)->Unit(benchmark::kMicrosecond);

// The previous selection (std::nth_element on the pairs), kept as the yardstick of the radix
// selection of detail::top_k.
void BM_TopKNthElement(benchmark::State& st) {
  run_top_k(st, [](auto& keyed, Index k) {
    std::nth_element(keyed.begin(), keyed.begin() + (k - 1), keyed.end(),
                     fgbg::detail::key_desc_index_asc);
    keyed.resize(static_cast<std::size_t>(k));
  });
}
BENCHMARK(BM_TopKNthElement)->Arg(128)->Arg(4096)->Unit(benchmark::kMicrosecond);

void BM_TopKFullSort(benchmark::State& st) {
  run_top_k(st, [](auto& keyed, Index k) {
    std::sort(keyed.begin(), keyed.end(), fgbg::detail::key_desc_index_asc);
    keyed.resize(static_cast<std::size_t>(k));
  });
}
BENCHMARK(BM_TopKFullSort)->Arg(128)->Arg(4096)->Unit(benchmark::kMicrosecond);

// ---- the yardstick: one fused BCE value_and_grad over 200k × 80 -------------------------------

void BM_FusedBce200kx80(benchmark::State& st) {
  const Index n = 200000, c = 80;
  RowArray<float> x(n, c), g(n, c);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(-4.6f, 1.0f);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  fgbg::LabelVector y = fgbg::LabelVector::Zero(n);
  for (Index i = 0; i < n; i += 500) y[i] = 1 + static_cast<int>(i % 80);
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  bce.value_and_grad(x, y, g);  // warm-up: first touch of the gradient's pages
  for (auto _ : st) benchmark::DoNotOptimize(bce.value_and_grad(x, y, g));
  st.SetItemsProcessed(st.iterations() * n * c);
  st.SetBytesProcessed(st.iterations() * n * c * 8);
}
BENCHMARK(BM_FusedBce200kx80)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
