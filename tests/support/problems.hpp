// Test support: one generator of realistic random detection problems for every loss test.
//
// A problem is what one call of a classification loss sees: N anchors, C foreground classes,
// logits around the prior bias (RetinaNet: σ(b) = 0.01, so most anchors are confident
// negatives), labels −1 / 0 / 1..C with a few percent positives and some ignored anchors,
// per-anchor weights, per-anchor quality / IoU targets in (0, 1], per-positive regression
// losses ≥ 0 and non-decreasing group ids (e.g. the image index of each anchor).
//
// Deterministic from the seed on every platform: the draws come from std::mt19937_64 through
// fixed formulas (no std::*_distribution, whose output the standard leaves unspecified).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#include <fgbg/core/config.hpp>

namespace fgbg_test {

/// Options of random_problem(); the defaults are a small RetinaNet-like call.
struct ProblemOptions {
  fgbg::Index n = 64;                       ///< anchors N
  fgbg::Index classes = 5;                  ///< foreground classes C
  double positive_fraction = 0.05;          ///< probability that an anchor is positive (label 1..C)
  double ignored_fraction = 0.1;            ///< probability that an anchor is ignored (label −1)
  double logit_centre = -4.59511985013459;  ///< mean logit: prior_bias(0.01)
  double logit_spread = 2.0;                ///< standard deviation of the logits
  double positive_lift = 3.0;               ///< added to a positive anchor's logit at its class
  bool softmax = false;                     ///< C+1 columns, column 0 background (softmax heads)
  fgbg::Index groups = 1;                   ///< number of groups (contiguous, non-decreasing ids)
  double min_quality = 0.05;  ///< quality / IoU of positives drawn from [min_quality, 1]
  double min_weight = 0.5;    ///< weights drawn from [min_weight, max_weight]
  double max_weight = 1.5;
  double max_reg_loss = 3.0;          ///< regression losses drawn from [0, max_reg_loss]
  bool at_least_one_positive = true;  ///< force one positive when N > 0 and C > 0
};

/// One random problem (see the file comment). Every per-anchor vector has N entries; quality
/// and reg_loss are drawn for every anchor (the losses read them at positive anchors only).
template <typename Scalar>
struct Problem {
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  fgbg::RowArray<Scalar> logits;  ///< N × C (N × (C+1) with options.softmax)
  fgbg::LabelVector labels;       ///< N, −1 / 0 / 1..C
  Vec weights;                    ///< N, in [min_weight, max_weight]
  Vec quality;                    ///< N, in [min_quality, 1] (IoU / quality targets)
  Vec reg_loss;                   ///< N, in [0, max_reg_loss]
  Eigen::ArrayXi groups;          ///< N, non-decreasing group ids 0..groups−1
  fgbg::Index classes = 0;        ///< C

  fgbg::Index rows() const { return logits.rows(); }
  fgbg::Index cols() const { return logits.cols(); }
  fgbg::Index positives() const { return (labels > 0).count(); }
};

/// Uniform double in [0, 1) from the top 53 bits of one draw.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1p-53;
}

/// Uniform double in [lo, hi).
inline double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * uniform01(rng);
}

/// Uniform integer in [0, bound), bound ≥ 1 (modulo bias below 2^-40 for test sizes).
inline std::int64_t uniform_int(std::mt19937_64& rng, std::int64_t bound) {
  return static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(bound));
}

/// Standard normal by Box–Muller (two uniform draws per value).
inline double normal(std::mt19937_64& rng, double mean = 0.0, double sd = 1.0) {
  const double u1 = 1.0 - uniform01(rng);  // (0, 1]
  const double u2 = uniform01(rng);
  return mean + sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/// A random problem, deterministic from `seed`.
template <typename Scalar>
Problem<Scalar> random_problem(std::uint64_t seed, const ProblemOptions& o = {}) {
  using fgbg::Index;
  std::mt19937_64 rng(seed);
  Problem<Scalar> p;
  const Index n = o.n, c = o.classes, cols = c + (o.softmax ? 1 : 0);
  p.classes = c;
  p.logits.resize(n, cols);
  p.labels.resize(n);
  p.weights.resize(n);
  p.quality.resize(n);
  p.reg_loss.resize(n);
  p.groups.resize(n);
  for (Index i = 0; i < n; ++i) {
    const double u = uniform01(rng);
    fgbg::Label y = 0;
    if (c > 0 && u < o.positive_fraction)
      y = static_cast<fgbg::Label>(1 + uniform_int(rng, c));
    else if (u < o.positive_fraction + o.ignored_fraction)
      y = fgbg::kIgnore;
    p.labels[i] = y;
    for (Index k = 0; k < cols; ++k) {
      double v = normal(rng, o.logit_centre, o.logit_spread);
      const bool label_column = o.softmax ? k == (y > 0 ? y : 0) : k == y - 1;
      if (y > 0 && label_column) v += o.positive_lift;
      p.logits(i, k) = static_cast<Scalar>(v);
    }
    p.weights[i] = static_cast<Scalar>(uniform(rng, o.min_weight, o.max_weight));
    p.quality[i] = static_cast<Scalar>(uniform(rng, o.min_quality, 1.0));
    p.reg_loss[i] = static_cast<Scalar>(uniform(rng, 0.0, o.max_reg_loss));
    p.groups[i] = static_cast<int>(n > 0 ? (i * std::max<Index>(o.groups, 1)) / n : 0);
  }
  if (o.at_least_one_positive && n > 0 && c > 0 && p.positives() == 0) {
    const Index i = static_cast<Index>(uniform_int(rng, n));
    p.labels[i] = static_cast<fgbg::Label>(1 + uniform_int(rng, c));
  }
  return p;
}

}  // namespace fgbg_test
