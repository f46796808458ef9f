// Demo section of the two-stage pipeline: boxes → max-IoU assignment → hard samplers →
// sample_weights → BCE. A synthetic 1333×800 image with ~10 ground truths, ≈200k RPN anchors
// and 2000 R-CNN proposals (half jittered around the GTs, half random); synthetic logits whose
// background scores rise with the IoU (so higher-IoU negatives are the hard ones).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <fgbg/boxes/iou.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>

namespace demo {
namespace two_stage {

using fgbg::Index;
using Boxes = fgbg::RowArray<float>;

/// FPN-style anchors over 1333×800: strides 4..64, size 8·stride, ratios 0.5 / 1 / 2.
inline Boxes make_anchors() {
  std::vector<float> v;
  for (int stride : {4, 8, 16, 32, 64})
    for (int y = 0; y * stride < 800; ++y)
      for (int x = 0; x * stride < 1333; ++x)
        for (double r : {0.5, 1.0, 2.0}) {
          const double cx = (x + 0.5) * stride, cy = (y + 0.5) * stride, s = 8.0 * stride;
          const double w = s / std::sqrt(r), h = s * std::sqrt(r);
          v.insert(v.end(),
                   {float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)});
        }
  const Index n = static_cast<Index>(v.size() / 4);
  return Eigen::Map<Boxes>(v.data(), n, 4);
}

struct Image {
  Boxes anchors, gts, proposals, rcnn_boxes;  // rcnn_boxes = [gts; proposals]
  fgbg::LabelVector gt_labels;
  fgbg::Assignment rpn, ssd, rcnn;
  fgbg::RowArray<float> rpn_logits, rcnn_logits;  // N × 1 objectness, (G + 2000) × C
  fgbg::LabelVector rpn_targets, ssd_targets;     // objectness labels: −1 / 0 / 1
  Eigen::ArrayXf ssd_loss, rcnn_loss;             // per-candidate BCE (no gradient): SSD, OHEM
  Index num_classes = 80;
};

inline Image make_image(std::uint64_t seed = 11) {
  Image im;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<float> noise(0.f, 1.2f);
  im.anchors = make_anchors();
  const Index g = 10;
  im.gts.resize(g, 4);
  im.gt_labels.resize(g);
  for (Index j = 0; j < g; ++j) {
    const double w = 24 + 360 * u(rng) * u(rng), h = 24 + 280 * u(rng) * u(rng);
    const double x = (1333 - w) * u(rng), y = (800 - h) * u(rng);
    im.gts.row(j) << float(x), float(y), float(x + w), float(y + h);
    im.gt_labels[j] =
        1 + static_cast<int>(u(rng) * im.num_classes) % static_cast<int>(im.num_classes);
  }
  const Index p = 2000;
  im.proposals.resize(p, 4);
  for (Index i = 0; i < p; ++i) {
    if (i % 2 == 0) {
      const Index j = static_cast<Index>(u(rng) * g) % g;
      const double w = im.gts(j, 2) - im.gts(j, 0), h = im.gts(j, 3) - im.gts(j, 1);
      const double x = im.gts(j, 0) + w * 0.6 * (u(rng) - 0.5);
      const double y = im.gts(j, 1) + h * 0.6 * (u(rng) - 0.5);
      im.proposals.row(i) << float(x), float(y), float(x + w * (0.6 + 0.8 * u(rng))),
          float(y + h * (0.6 + 0.8 * u(rng)));
    } else {
      const double w = 16 + 320 * u(rng), h = 16 + 320 * u(rng);
      const double x = (1333 - w) * u(rng), y = (800 - h) * u(rng);
      im.proposals.row(i) << float(x), float(y), float(x + w), float(y + h);
    }
  }
  using C = fgbg::MaxIouAssignerConfig;
  fgbg::MaxIouAssigner(C::rpn()).assign(im.anchors, im.gts, im.gt_labels, im.rpn);
  fgbg::MaxIouAssigner(C{0.5, 0.5, 0.0, 0.0, true})
      .assign(im.anchors, im.gts, im.gt_labels, im.ssd);
  fgbg::MaxIouAssigner(C::rcnn()).assign(im.proposals, im.gts, im.gt_labels, im.rcnn);
  fgbg::add_gt_as_proposals(im.rcnn, im.gt_labels);
  fgbg::with_gt_boxes(im.proposals, im.gts, im.rcnn_boxes);

  // Objectness logits: background scores rise with the IoU (hard negatives near objects).
  const Index n = im.anchors.rows();
  im.rpn_logits.resize(n, 1);
  im.rpn_targets.resize(n);
  im.ssd_targets.resize(n);
  for (Index i = 0; i < n; ++i) {
    const double iou = im.rpn.max_iou()[i];
    const int l = im.rpn.labels()[i];
    im.rpn_targets[i] = l > 0 ? 1 : l;
    im.rpn_logits(i, 0) = float(l > 0 ? 1.0 : -5.0 + 10.0 * iou) + noise(rng);
    im.ssd_targets[i] = std::min(1, int(im.ssd.labels()[i]));
  }
  // The miners rank every candidate by its loss: the per-anchor BCE of the same pass that would
  // give the gradient (fgbg::anchor_losses; ignored candidates are scored as background here).
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  bce.value(im.rpn_logits, im.ssd_targets.cwiseMax(0), fgbg::anchor_losses(im.ssd_loss));
  // R-CNN logits: per class; a negative's nearest-GT class rises with its IoU.
  const Index m = im.rcnn.size(), c = im.num_classes;
  im.rcnn_logits.resize(m, c);
  fgbg::RowArray<float> iou_m;
  fgbg::iou_matrix(im.rcnn_boxes, im.gts, iou_m);
  for (Index i = 0; i < m; ++i) {
    Index best = 0;
    iou_m.row(i).maxCoeff(&best);
    for (Index k = 0; k < c; ++k) im.rcnn_logits(i, k) = -4.5f + noise(rng);
    const double iou = im.rcnn.max_iou()[i];
    const int l = im.rcnn.labels()[i];
    const Index cls = im.gt_labels[best] - 1;
    im.rcnn_logits(i, cls) += float(l > 0 ? 5.0 : 9.0 * iou);
  }
  bce.value(im.rcnn_logits, im.rcnn.labels().cwiseMax(0), fgbg::anchor_losses(im.rcnn_loss));
  return im;
}

struct Report {
  const char* name;
  Index pos = 0, neg = 0;
  int hist[5] = {0, 0, 0, 0, 0};
  double loss = 0, grad_fg = 0, us = 0, avg_factor = 0;
};

// Ω → BCE on the sampled rows, normalised by the mmdet-style avg_factor of the stage.
inline void score(Report& r, const fgbg::Sample& s, const fgbg::Assignment& a,
                  const fgbg::RowArray<float>& logits, const fgbg::LabelVector& targets,
                  fgbg::SampleNormalization norm) {
  r.pos = s.num_positives();
  r.neg = s.num_negatives();
  for (Index i : s.negatives) ++r.hist[std::min(4, static_cast<int>(a.max_iou()[i] * 10))];
  Eigen::ArrayXf w;
  fgbg::sample_weights(s, a.size(), w);
  r.avg_factor = fgbg::sample_avg_factor(norm, s);
  fgbg::RowArray<float> grad(logits.rows(), logits.cols());
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  r.loss = bce.value_and_grad(logits, targets, grad, w, fgbg::Normalizer::avg_factor(r.avg_factor));
  double fg = 0, total = 0;
  for (Index i = 0; i < grad.rows(); ++i) {
    const double gi = grad.row(i).abs().sum();
    total += gi;
    if (targets[i] > 0) fg += gi;
  }
  r.grad_fg = total > 0 ? fg / total : 0;
}

template <typename F>
double time_us(F&& f) {
  double best = 1e300;
  for (int k = 0; k < 3; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return best;
}

inline void print_reports(const std::vector<Report>& rows) {
  std::printf("%-34s %5s %5s %6s  %-29s %9s %7s %9s\n", "sampler", "#pos", "#neg", "fg %",
              "neg IoU [0,.1) .. [.4,.5)", "BCE", "grad fg%", "us/call");
  for (const Report& r : rows) {
    char hist[64];
    std::snprintf(hist, sizeof hist, "%5d %5d %5d %5d %5d", r.hist[0], r.hist[1], r.hist[2],
                  r.hist[3], r.hist[4]);
    const double share = r.pos + r.neg > 0 ? 100.0 * r.pos / double(r.pos + r.neg) : 0.0;
    std::printf("%-34s %5ld %5ld %6.1f  %-29s %9.5f %7.1f %9.1f\n", r.name, long(r.pos),
                long(r.neg), share, hist, r.loss, 100 * r.grad_fg, r.us);
  }
}

}  // namespace two_stage

/// Prints the two-stage section of the demo: assignment, every hard sampler, and the loss each
/// sample produces through sample_weights → SigmoidCrossEntropyLoss<float>.
inline void print_two_stage_section() {
  using namespace two_stage;
  const auto t_start = std::chrono::steady_clock::now();
  Image im = make_image();
  fgbg::Assignment tmp;
  const double assign_us = time_us([&] {
    fgbg::MaxIouAssigner(fgbg::MaxIouAssignerConfig::rpn())
        .assign(im.anchors, im.gts, im.gt_labels, tmp);
  });
  std::printf("## two-stage: assignment and hard samplers (one 1333x800 image, %ld GTs)\n",
              long(im.gts.rows()));
  std::printf(
      "RPN: %ld anchors -> %ld pos / %ld neg / %ld ignored (assign 0.7/0.3, low-quality 0.3: "
      "%.1f ms); R-CNN: %ld proposals + %ld GTs -> %ld pos / %ld neg (0.5/0.5)\n",
      long(im.anchors.rows()), long(im.rpn.count_positives()), long(im.rpn.count_negatives()),
      long(im.rpn.size() - im.rpn.count_positives() - im.rpn.count_negatives()), assign_us / 1000,
      long(im.proposals.rows()), long(im.gts.rows()), long(im.rcnn.count_positives()),
      long(im.rcnn.count_negatives()));
  std::printf(
      "Loss: BCE (sigmoid, objectness for RPN/SSD, 80 classes for R-CNN) weighted by "
      "sample_weights, / mmdet avg_factor (RPN: max(P,1)+max(N,1); R-CNN: #sampled; SSD: "
      "max(P,1)); grad fg%% = share of sum|dL/dx| on positive rows.\n");

  std::mt19937_64 rng(2026);
  fgbg::Sample s;
  std::vector<Report> rows;
  const fgbg::LabelVector rcnn_targets = im.rcnn.labels();
  using N = fgbg::SampleNormalization;
  auto add = [&](const char* name, const fgbg::Assignment& a, const fgbg::RowArray<float>& logits,
                 const fgbg::LabelVector& targets, N norm, auto&& run) {
    Report r;
    r.name = name;
    r.us = time_us(run);
    score(r, s, a, logits, targets, norm);
    rows.push_back(r);
  };

  add("random RPN (256, 0.5)", im.rpn, im.rpn_logits, im.rpn_targets, N::mmdet_rpn,
      [&] { fgbg::RandomSampler(fgbg::SamplerConfig::rpn()).sample(im.rpn, rng, s); });
  add("SSD mining 3:1 (anchors, 0.5/0.5)", im.ssd, im.rpn_logits, im.ssd_targets, N::mmdet_ssd,
      [&] { fgbg::SsdHardNegativeMining().sample(im.ssd_targets, im.ssd_loss, s); });
  add("random R-CNN (512, 0.25)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::RandomSampler().sample(im.rcnn, rng, s); });
  add("OHEM mmdet (512, 0.25, cls loss)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::OhemSampler().sample(im.rcnn.labels(), im.rcnn_loss, s); });
  add("OHEM paper (B=64, NMS 0.7)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::OhemPaperSampler().sample(im.rcnn.labels(), im.rcnn_boxes, im.rcnn_loss, s); });
  add("IoU-balanced (Libra, clean)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::IouBalancedSampler().sample(im.rcnn, rng, s); });
  fgbg::IouBalancedSamplerConfig neg_max;
  neg_max.range_upper = fgbg::IouRangeUpper::neg_max;
  add("IoU-balanced (bins to max neg IoU)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::IouBalancedSampler(neg_max).sample(im.rcnn, rng, s); });
  fgbg::IouBalancedSamplerConfig faithful;
  faithful.mode = fgbg::IouBalanceMode::faithful;
  fgbg::IouBalancedState state = fgbg::IouBalancedSampler(faithful).initial_state();
  add("IoU-balanced (faithful, 2nd+ call)", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::IouBalancedSampler(faithful).sample(im.rcnn, rng, s, &state); });
  add("instance-balanced pos + random neg", im.rcnn, im.rcnn_logits, rcnn_targets, N::sampled,
      [&] { fgbg::InstanceBalancedSampler().sample(im.rcnn, rng, s); });
  print_reports(rows);
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
  std::printf(
      "(neg IoU histogram: counts of sampled negatives per max-IoU bin; section took %.0f "
      "ms)\n",
      total_ms);
}

}  // namespace demo
