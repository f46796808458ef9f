// The demo's shared pieces: a RetinaNet-sized synthetic batch, the gradient-share breakdown and
// the table every section adds its rows to.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <fgbg/fgbg.hpp>

#include "demo_svg.hpp"

namespace demo {

using fgbg::Index;
using Logits = fgbg::RowArray<float>;

/// Background entries with σ(x) at or above this count as hard in the gradient breakdown.
inline constexpr float kHardProbability = 0.1f;

/// A training batch of a RetinaNet-like head: `images` × `anchors_per_image` anchors, C classes,
/// about 0.1% positive anchors, ~7% ignored (IoU in [0.4, 0.5)), logits drawn around the prior
/// bias with a few percent of hard background entries.
struct Batch {
  int images = 2;
  Index anchors_per_image = 120000;
  Index num_classes = 80;
  Logits logits;
  fgbg::LabelVector labels;
  Eigen::ArrayXf iou;    ///< IoU of each anchor with its best ground truth
  Eigen::ArrayXi image;  ///< image index of each anchor
  Index positives = 0, ignored = 0;

  Index anchors() const { return images * anchors_per_image; }
};

inline Batch make_batch(std::uint64_t seed = 2026) {
  Batch b;
  const Index n = b.anchors(), c = b.num_classes;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::normal_distribution<float> easy(-4.59512f, 0.8f), hard(0.3f, 1.2f), fg(0.5f, 1.5f);
  b.logits.resize(n, c);
  b.labels.resize(n);
  b.iou.resize(n);
  b.image.resize(n);
  for (Index i = 0; i < n; ++i) {
    b.image[i] = static_cast<int>(i / b.anchors_per_image);
    const float u = uni(rng);
    int label = 0;
    float iou = 0.4f * uni(rng);
    if (u < 0.001f) {
      label = 1 + static_cast<int>(uni(rng) * c) % c;
      iou = 0.5f + 0.45f * uni(rng);
    } else if (u < 0.07f) {
      label = -1;
      iou = 0.4f + 0.1f * uni(rng);
    }
    b.labels[i] = label;
    b.iou[i] = iou;
    for (Index k = 0; k < c; ++k) b.logits(i, k) = uni(rng) < 0.02f ? hard(rng) : easy(rng);
    if (label > 0) b.logits(i, label - 1) = fg(rng);
    b.positives += label > 0;
    b.ignored += label < 0;
  }
  return b;
}

/// How the gradient magnitude Σ|∂L/∂x| splits between foreground entries (the labelled class of a
/// positive anchor), easy background entries (σ(x) < kHardProbability) and hard ones.
struct Shares {
  double fg = 0, easy_bg = 0, hard_bg = 0;
};

inline Shares gradient_shares(const Batch& b, const Logits& grad) {
  Shares s;
  for (Index i = 0; i < b.anchors(); ++i) {
    const int l = b.labels[i];
    if (l < 0) continue;
    for (Index k = 0; k < b.num_classes; ++k) {
      const double g = std::abs(static_cast<double>(grad(i, k)));
      if (l == k + 1) {
        s.fg += g;
      } else if (1.f / (1.f + std::exp(-b.logits(i, k))) >= kHardProbability) {
        s.hard_bg += g;
      } else {
        s.easy_bg += g;
      }
    }
  }
  const double total = s.fg + s.easy_bg + s.hard_bg;
  if (total > 0) {
    s.fg /= total;
    s.easy_bg /= total;
    s.hard_bg /= total;
  }
  return s;
}

/// Best wall time of `reps` runs of f, in milliseconds.
template <typename F>
double time_ms(F&& f, int reps = 3) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

struct Row {
  std::string method;
  double value = 0;
  std::string normaliser;
  Shares shares;
  double ms = 0;
  std::string note;
};

class Table {
 public:
  void section(const std::string& title) { rows_.push_back({"## " + title, 0, "", {}, -1, ""}); }
  void add(Row r) { rows_.push_back(std::move(r)); }
  void print() const {
    std::printf("%-28s %12s %-18s %7s %8s %8s %10s  %s\n", "method", "value", "normaliser", "fg %",
                "easy bg%", "hard bg%", "ms/call", "note");
    for (const Row& r : rows_) {
      if (r.ms < 0) {
        std::printf("%s\n", r.method.c_str());
        continue;
      }
      std::printf("%-28s %12.6g %-18s %7.2f %8.2f %8.2f %10.2f  %s\n", r.method.c_str(), r.value,
                  r.normaliser.c_str(), 100 * r.shares.fg, 100 * r.shares.easy_bg,
                  100 * r.shares.hard_bg, r.ms, r.note.c_str());
    }
  }

  /// The rows as lines of the gradient-share chart (demo_svg.hpp).
  std::vector<ChartLine> chart_lines() const {
    std::vector<ChartLine> lines;
    for (const Row& r : rows_) {
      if (r.ms < 0)
        lines.push_back({r.method.substr(r.method.rfind("## ", 0) == 0 ? 3 : 0), true});
      else
        lines.push_back({r.method, false, r.shares.fg, r.shares.easy_bg, r.shares.hard_bg});
    }
    return lines;
  }

 private:
  std::vector<Row> rows_;
};

}  // namespace demo
