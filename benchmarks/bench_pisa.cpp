// PISA (ISR-P, CARL, Score-HLR / ISR-N), float, one thread, at the sizes detectors use:
//   RetinaNet   N = 120k anchors, C = 80, ~200 positives over 15 GTs, ~7% ignored;
//   R-CNN       N = 512 sampled RoIs (128 positives), C = 80 (softmax head: 81 columns);
//   Score-HLR   2000 proposals per image, C = 80, class-specific boxes (2000 × 320).
// Baselines in the same binary:
//   isr_p_naive        the reference's algorithm as written (per-class and per-GT masks over the
//                      positives, stable argsort of argsort, fresh buffers every call);
//   carl_*_naive       the reference's dataflow: σ / softmax of the whole N × C score matrix
//                      materialised, then gathered, and a freshly allocated dense gradient;
//   nms_match_naive    the full V × V IoU matrix (fgbg::iou_matrix) followed by the greedy scan.
// Counters: items/s = anchors (RoIs, proposals) per second; bytes/s = bytes of the inputs read.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <fgbg/boxes/iou.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>
#include <fgbg/soft_sampling/isr_p.hpp>
#include <numeric>
#include <random>
#include <set>

namespace {

using fgbg::Index;
using Mat = fgbg::RowArray<float>;
using VecF = Eigen::ArrayXf;
constexpr Index kClasses = 80;

// ------------------------------------------------------------------ data
struct Head {
  Index n = 0, cols = 0;
  Mat x, g;
  fgbg::LabelVector y;
  Eigen::ArrayXi gt;
  VecF iou, loss, lw, w, reg, greg;
};

/// n anchors, `pos` positives over `gts` GTs, `ignored` fraction; sigmoid (C) or softmax (C+1).
Head make_head(Index n, Index pos, int gts, double ignored, bool softmax) {
  Head h;
  h.n = n;
  h.cols = softmax ? kClasses + 1 : kClasses;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(softmax ? 0.0f : -4.6f, 1.5f);
  std::uniform_real_distribution<float> u(0, 1);
  h.x.resize(n, h.cols);
  for (Index i = 0; i < h.x.size(); ++i) h.x.data()[i] = nd(rng);
  h.g = Mat::Zero(n, h.cols);
  h.y = fgbg::LabelVector::Zero(n);
  h.gt = Eigen::ArrayXi::Constant(n, -1);
  h.iou = VecF::Zero(n);
  h.loss = VecF::Zero(n);
  h.reg = VecF::Zero(n);
  h.lw = VecF::Ones(n);
  h.w.resize(n);
  h.greg.resize(n);
  std::vector<int> gt_class(gts);
  for (int& c : gt_class) c = 1 + static_cast<int>(u(rng) * kClasses) % kClasses;
  for (Index i = 0; i < n; ++i)
    if (u(rng) < ignored) h.y[i] = -1;
  for (Index k = 0; k < pos; ++k) {
    const Index i = (k * 7919 + 13) % n;  // spread over the anchors
    const int g = static_cast<int>(k % gts);
    h.y[i] = gt_class[g];
    h.gt[i] = g;
    h.iou[i] = 0.5f + 0.5f * u(rng);
    h.loss[i] = 2.0f * u(rng);
    h.reg[i] = 4.0f * u(rng);
  }
  return h;
}

Head& retina(bool softmax = false) {
  static Head s = make_head(120000, 200, 15, 0.07, false);
  static Head m = make_head(120000, 200, 15, 0.07, true);
  return softmax ? m : s;
}
Head& rcnn() {
  static Head h = make_head(512, 128, 12, 0.0, true);
  return h;
}
Head& rcnn_sigmoid() {
  static Head h = make_head(512, 128, 12, 0.0, false);
  return h;
}

void counters(benchmark::State& st, Index items, double bytes_per_item) {
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * items));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * items * bytes_per_item));
}

// ------------------------------------------------------------------ ISR-P
void run_isr_p(benchmark::State& st, Head& h) {
  const fgbg::IsrP<float> isr;
  fgbg::IsrPWorkspace ws;
  for (auto _ : st) {
    benchmark::DoNotOptimize(isr.weights(h.y, h.gt, h.iou, h.loss, h.lw, kClasses, h.w, ws));
    benchmark::ClobberMemory();
  }
  counters(st, h.n, 4 * 5);  // labels, gt, iou, loss, lw
}

/// The reference algorithm as written, with its masks, argsorts and fresh buffers.
std::vector<float> naive_isr_p(const Head& h, double k, double bias) {
  std::vector<Index> pos;
  for (Index i = 0; i < h.n; ++i)
    if (h.y[i] > 0) pos.push_back(i);
  std::vector<float> out(h.n);
  for (Index i = 0; i < h.n; ++i) out[i] = h.y[i] < 0 ? 0.0f : h.lw[i];
  if (pos.empty()) return out;
  std::vector<double> ious(pos.size()), w(pos.size());
  std::vector<int> counts(kClasses + 1, 0);
  for (std::size_t p = 0; p < pos.size(); ++p) {
    ious[p] = h.iou[pos[p]];
    w[p] = h.lw[pos[p]];
    ++counts[h.y[pos[p]]];
  }
  const double n_max = *std::max_element(counts.begin(), counts.end());
  auto rank_desc = [](const std::vector<double>& v) {  // argsort of a stable descending argsort
    std::vector<Index> idx(v.size()), rank(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](Index a, Index b) { return v[a] > v[b]; });
    for (std::size_t r = 0; r < idx.size(); ++r) rank[idx[r]] = static_cast<Index>(r);
    return rank;
  };
  std::set<int> labels;
  for (Index p : pos) labels.insert(h.y[p]);
  for (int label : labels) {
    std::vector<std::size_t> l_inds;
    for (std::size_t p = 0; p < pos.size(); ++p)
      if (h.y[pos[p]] == label) l_inds.push_back(p);
    std::set<int> gts;
    for (std::size_t p : l_inds) gts.insert(h.gt[pos[p]]);
    for (int t : gts) {
      std::vector<std::size_t> t_inds;
      for (std::size_t p : l_inds)
        if (h.gt[pos[p]] == t) t_inds.push_back(p);
      std::vector<double> t_ious;
      for (std::size_t p : t_inds) t_ious.push_back(ious[p]);
      const auto r = rank_desc(t_ious);
      for (std::size_t q = 0; q < t_inds.size(); ++q) ious[t_inds[q]] += n_max - double(r[q]);
    }
    std::vector<double> l_ious;
    for (std::size_t p : l_inds) l_ious.push_back(ious[p]);
    const auto r = rank_desc(l_ious);
    for (std::size_t q = 0; q < l_inds.size(); ++q) w[l_inds[q]] *= (n_max - double(r[q])) / n_max;
  }
  double num = 0, den = 0;
  for (std::size_t p = 0; p < pos.size(); ++p) {
    w[p] = std::pow(bias + (1 - bias) * w[p], k);
    num += h.loss[pos[p]] * h.lw[pos[p]];
    den += h.loss[pos[p]] * w[p];
  }
  for (std::size_t p = 0; p < pos.size(); ++p) out[pos[p]] = static_cast<float>(w[p] * num / den);
  return out;
}

void run_isr_p_naive(benchmark::State& st, Head& h) {
  {  // the baseline must agree with the library
    fgbg::IsrPWorkspace ws;
    fgbg::IsrP<float>().weights(h.y, h.gt, h.iou, h.loss, h.lw, kClasses, h.w, ws);
    const auto w = naive_isr_p(h, 2.0, 0.0);
    for (Index i = 0; i < h.n; ++i)
      if (std::abs(w[i] - h.w[i]) > 1e-5f * std::max(1.0f, std::abs(w[i])))
        return st.SkipWithError("naive ISR-P disagrees with fgbg::IsrP");
  }
  for (auto _ : st) {
    auto w = naive_isr_p(h, 2.0, 0.0);
    benchmark::DoNotOptimize(w.data());
    benchmark::ClobberMemory();
  }
  counters(st, h.n, 4 * 5);
}

void BM_isr_p_retina(benchmark::State& st) {
  run_isr_p(st, retina());
}
void BM_isr_p_retina_naive(benchmark::State& st) {
  run_isr_p_naive(st, retina());
}
void BM_isr_p_rcnn(benchmark::State& st) {
  run_isr_p(st, rcnn());
}
void BM_isr_p_rcnn_naive(benchmark::State& st) {
  run_isr_p_naive(st, rcnn());
}

// ------------------------------------------------------------------ CARL
void run_carl(benchmark::State& st, Head& h, bool softmax, bool accumulate) {
  const fgbg::CarlLoss<float> carl({1.0f, 0.2f, !softmax});
  for (auto _ : st) {
    if (accumulate)
      benchmark::DoNotOptimize(carl.value_and_accumulate_grad(h.x, h.y, h.reg, h.g, h.greg));
    else
      benchmark::DoNotOptimize(carl.value_and_grad(h.x, h.y, h.reg, h.g, h.greg));
    benchmark::ClobberMemory();
  }
  counters(st, h.n, 4.0 * h.cols);
}

/// The reference's dataflow: full score matrix, gather, scatter into a fresh dense gradient.
float naive_carl(const Head& h, bool softmax, Mat& grad_out) {
  const double b = 0.2, k = 1.0;
  Mat p(h.n, h.cols);
  if (softmax) {
    for (Index i = 0; i < h.n; ++i) {
      const float m = h.x.row(i).maxCoeff();
      p.row(i) = (h.x.row(i) - m).exp();
      p.row(i) /= p.row(i).sum();
    }
  } else {
    p = 1.0f / (1.0f + (-h.x).exp());
  }
  std::vector<Index> pos;
  for (Index i = 0; i < h.n; ++i)
    if (h.y[i] > 0) pos.push_back(i);
  const Index col_off = softmax ? 0 : -1;
  std::vector<double> s(pos.size()), u(pos.size());
  double su = 0, sul = 0;
  for (std::size_t q = 0; q < pos.size(); ++q) {
    s[q] = p(pos[q], h.y[pos[q]] + col_off);
    u[q] = std::pow(b + (1 - b) * s[q], k);
    su += u[q];
    sul += u[q] * h.reg[pos[q]];
  }
  const double np = static_cast<double>(pos.size()), a = std::max(1.0, np);
  const double lbar = sul / su;
  Mat g = Mat::Zero(h.n, h.cols);
  for (std::size_t q = 0; q < pos.size(); ++q) {
    const Index i = pos[q], c = h.y[i] + col_off;
    const double w = np * u[q] / su;
    const double gs = w / a * (h.reg[i] - lbar) * k * (1 - b) / (b + (1 - b) * s[q]);
    if (softmax) {
      g.row(i) = -static_cast<float>(gs * s[q]) * p.row(i);
      g(i, c) += static_cast<float>(gs * s[q]);
    } else {
      g(i, c) = static_cast<float>(gs * s[q] * (1 - s[q]));
    }
  }
  grad_out.swap(g);
  return static_cast<float>(np * lbar / a);
}

void run_carl_naive(benchmark::State& st, Head& h, bool softmax) {
  Mat g;
  {  // the baseline must agree with the library
    const float v =
        fgbg::CarlLoss<float>({1.0f, 0.2f, !softmax}).value_and_grad(h.x, h.y, h.reg, h.g, h.greg);
    const float vn = naive_carl(h, softmax, g);
    if (std::abs(v - vn) > 1e-5f * std::abs(v) || ((g - h.g).abs() > 1e-6f).any())
      return st.SkipWithError("naive CARL disagrees with fgbg::CarlLoss");
  }
  for (auto _ : st) {
    benchmark::DoNotOptimize(naive_carl(h, softmax, g));
    benchmark::ClobberMemory();
  }
  counters(st, h.n, 4.0 * h.cols);
}

void BM_carl_sigmoid_retina(benchmark::State& st) {
  run_carl(st, retina(), false, false);
}
void BM_carl_sigmoid_retina_accumulate(benchmark::State& st) {
  run_carl(st, retina(), false, true);
}
void BM_carl_sigmoid_retina_naive(benchmark::State& st) {
  run_carl_naive(st, retina(), false);
}
void BM_carl_sigmoid_rcnn(benchmark::State& st) {
  run_carl(st, rcnn_sigmoid(), false, false);
}
void BM_carl_sigmoid_rcnn_naive(benchmark::State& st) {
  run_carl_naive(st, rcnn_sigmoid(), false);
}
void BM_carl_softmax_rcnn(benchmark::State& st) {
  run_carl(st, rcnn(), true, false);
}
void BM_carl_softmax_rcnn_accumulate(benchmark::State& st) {
  run_carl(st, rcnn(), true, true);
}
void BM_carl_softmax_rcnn_naive(benchmark::State& st) {
  run_carl_naive(st, rcnn(), true);
}

// ------------------------------------------------------------------ Score-HLR
struct Proposals {
  Index n = 2000;
  Eigen::ArrayXi assigned;
  Mat x, boxes;  // n × 81 logits, n × 320 class-specific boxes
};

const Proposals& proposals() {
  static Proposals p = [] {
    Proposals q;
    std::mt19937_64 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0, 1);
    q.assigned.resize(q.n);
    q.x.resize(q.n, kClasses + 1);
    q.boxes.resize(q.n, 4 * kClasses);
    const int objects = 25;
    std::vector<float> ox(objects), oy(objects), os(objects);
    for (int o = 0; o < objects; ++o) {
      ox[o] = 1200 * u(rng);
      oy[o] = 700 * u(rng);
      os[o] = 20 + 200 * u(rng);
    }
    for (Index i = 0; i < q.n; ++i) {
      q.assigned[i] = u(rng) < 0.06f ? 1 : 0;
      for (Index c = 0; c <= kClasses; ++c) q.x(i, c) = nd(rng);
      q.x(i, 0) += 2.0f + 3.0f * u(rng);  // background-dominated; ~35% valid (s > 0.05)
      const int o = static_cast<int>(u(rng) * objects) % objects;
      for (Index c = 0; c < kClasses; ++c) {
        const float cx = ox[o] + 0.3f * os[o] * nd(rng), cy = oy[o] + 0.3f * os[o] * nd(rng);
        const float w = os[o] * (0.7f + 0.6f * u(rng)), h = os[o] * (0.7f + 0.6f * u(rng));
        q.boxes.block(i, 4 * c, 1, 4) << cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2;
      }
    }
    return q;
  }();
  return p;
}

void BM_score_hlr_2000(benchmark::State& st) {
  const Proposals& p = proposals();
  const fgbg::ScoreHlrSampler<float> sampler;
  fgbg::ScoreHlrWorkspace<float> ws;
  fgbg::Sample sample;
  std::mt19937_64 rng(1);
  fgbg::ScoreHlrResult r;
  for (auto _ : st) {
    r = sampler.sample(p.assigned, p.x, p.boxes, rng, sample, ws);
    benchmark::DoNotOptimize(sample.negatives.data());
    benchmark::ClobberMemory();
  }
  st.counters["valid"] = static_cast<double>(r.valid);
  counters(st, p.n, 4.0 * (kClasses + 1) + 16);
}

/// The valid negatives' boxes and scores of the Score-HLR run, for the nms_match benchmarks.
struct ValidBoxes {
  Mat boxes;
  VecF scores;
};
const ValidBoxes& valid_boxes() {
  static ValidBoxes v = [] {
    const Proposals& p = proposals();
    std::vector<Index> rows;
    std::vector<float> sc;
    std::vector<Index> cls;
    for (Index i = 0; i < p.n; ++i) {
      if (p.assigned[i] != 0) continue;
      Index a = 1;
      for (Index c = 2; c <= kClasses; ++c)
        if (p.x(i, c) > p.x(i, a)) a = c;
      const float m = p.x.row(i).maxCoeff();
      const float s = std::exp(p.x(i, a) - m) / (p.x.row(i) - m).exp().sum();
      if (s > 0.05f) {
        rows.push_back(i);
        sc.push_back(s);
        cls.push_back(a);
      }
    }
    ValidBoxes out;
    out.boxes.resize(static_cast<Index>(rows.size()), 4);
    out.scores.resize(static_cast<Index>(rows.size()));
    for (std::size_t j = 0; j < rows.size(); ++j) {
      out.boxes.row(j) = p.boxes.block(rows[j], 4 * (cls[j] - 1), 1, 4);
      out.scores[j] = sc[j];
    }
    return out;
  }();
  return v;
}

void BM_nms_match(benchmark::State& st) {
  const ValidBoxes& v = valid_boxes();
  fgbg::NmsMatchGroups g;
  fgbg::NmsMatchWorkspace<float> ws;
  for (auto _ : st) {
    fgbg::nms_match(v.boxes, v.scores, 0.5, g, ws);
    benchmark::DoNotOptimize(g.members.data());
    benchmark::ClobberMemory();
  }
  st.counters["boxes"] = static_cast<double>(v.boxes.rows());
  st.counters["groups"] = static_cast<double>(g.groups());
  counters(st, v.boxes.rows(), 20);
}

void BM_nms_match_naive(benchmark::State& st) {
  const ValidBoxes& v = valid_boxes();
  const Index n = v.boxes.rows();
  for (auto _ : st) {
    std::vector<Index> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](Index a, Index b) { return v.scores[a] > v.scores[b]; });
    Mat sorted(n, 4);
    for (Index i = 0; i < n; ++i) sorted.row(i) = v.boxes.row(order[i]);
    Mat iou(n, n);
    fgbg::iou_matrix(sorted, sorted, iou);
    std::vector<char> sup(n, 0);
    std::vector<std::vector<Index>> groups;
    for (Index i = 0; i < n; ++i) {
      if (sup[i]) continue;
      groups.push_back({order[i]});
      for (Index j = i + 1; j < n; ++j)
        if (!sup[j] && iou(i, j) >= 0.5f) {
          sup[j] = 1;
          groups.back().push_back(order[j]);
        }
    }
    benchmark::DoNotOptimize(groups.data());
    benchmark::ClobberMemory();
  }
  counters(st, n, 20);
}

}  // namespace

BENCHMARK(BM_isr_p_retina)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_isr_p_retina_naive)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_isr_p_rcnn)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_isr_p_rcnn_naive)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_sigmoid_retina)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_sigmoid_retina_accumulate)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_sigmoid_retina_naive)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_sigmoid_rcnn)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_sigmoid_rcnn_naive)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_softmax_rcnn)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_softmax_rcnn_accumulate)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_carl_softmax_rcnn_naive)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_score_hlr_2000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_nms_match)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_nms_match_naive)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
