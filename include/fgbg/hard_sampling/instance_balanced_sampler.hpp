/// @file instance_balanced_sampler.hpp
/// @brief Instance-balanced positive sampling (Libra R-CNN, Pang et al., CVPR 2019): positives
///        spread evenly over the ground-truth instances they are assigned to.
///
/// Matches mmdetection's `InstanceBalancedPosSampler` (spec §4.5). With Pos the positives,
/// P_exp = ⌊num · pos_fraction⌋ and G the distinct GTs among positives (ascending):
///
///   if |Pos| ≤ P_exp: take all;
///   q = round(P_exp / |G|) + 1  (Python's round: half to even);
///   for each GT g: take all its positives if ≤ q, else q uniformly at random;
///   if fewer than P_exp: fill uniformly from Pos \ taken; if more: keep P_exp of them at random.
///
/// Clean mode (default) computes Pos \ taken properly. The reference computes that difference
/// on Python sets of 0-d tensors, which hash by identity, so nothing is removed; the fill can
/// re-pick taken positives and `unique()` then drops them, leaving occasionally fewer than P_exp
/// positives. `Mode::faithful` reproduces that (fill drawn from all of Pos, then deduplicated).
///
/// InstanceBalancedSampler = these positives + random negatives (the batch rule of
/// sampling_common.hpp). Libra R-CNN pairs them with IoU-balanced negatives: IouBalancedSampler.
/// Inputs: labels (−1 / 0 / ≥ 1) and the assigned GT index per candidate (≥ 0 for positives),
/// e.g. an Assignment. GT ids may be any values ≥ 0 (e.g. batch-unique ids): positives are
/// grouped by sorting them by (GT, index) in the Sample's scratch, O(P log P), with no memory
/// proportional to the id values. Caller-owned URBG; same seed ⇒ same sample; output ascending.
///
/// @throws std::invalid_argument for a bad config, a label < −1, a gt_index of the wrong length
///         or < 0 on a positive. The Sample is not touched then.
#pragma once

#include "../boxes/max_iou_assigner.hpp"
#include "sampling_common.hpp"

namespace fgbg {

/// How InstanceBalancedPosSampler computes the fill pool.
enum class InstanceBalanceMode {
  clean,     ///< fill from Pos \ taken (correct set difference), exactly P_exp positives
  faithful,  ///< mmdet: fill from all of Pos, then deduplicate (may give fewer than P_exp)
};

namespace detail {

template <typename LD, typename GD>
void check_gt_index(const char* where, const Eigen::DenseBase<LD>& labels,
                    const Eigen::DenseBase<GD>& gt_index) {
  static_assert(std::is_integral<typename GD::Scalar>::value,
                "fgbg: gt_index must be an integer array");
  check_vector(where, "gt_index", gt_index, labels.size());
  for (Index i = 0; i < labels.size(); ++i)
    if (labels.derived().coeff(i) > 0 && gt_index.derived().coeff(i) < 0)
      throw_invalid(where, "gt_index(", i,
                    ") = ", static_cast<long long>(gt_index.derived().coeff(i)),
                    " must be >= 0 for a positive (label ", labels.derived().coeff(i), ")");
}

/// Instance-balanced choice of at most p_exp positives into `out` (ascending). Inputs checked.
template <typename LD, typename GD, typename URBG>
void instance_balanced_positives(const Eigen::DenseBase<LD>& labels,
                                 const Eigen::DenseBase<GD>& gt_index, Index p_exp,
                                 InstanceBalanceMode mode, URBG& rng, SampleScratch& s,
                                 std::vector<Index>& out) {
  collect(
      labels, [](auto l) { return l > 0; }, s.a);
  out.clear();
  if (static_cast<Index>(s.a.size()) <= p_exp) {
    out = s.a;
    return;
  }
  // Group positives by GT: sort them by (GT, index) in scratch, O(P log P). Groups come out
  // ascending by GT, members ascending by index; no memory depends on the GT id values.
  auto gt = [&](Index i) { return gt_index.derived().coeff(i); };
  s.b.assign(s.a.begin(), s.a.end());
  std::sort(s.b.begin(), s.b.end(),
            [&](Index x, Index y) { return gt(x) < gt(y) || (gt(x) == gt(y) && x < y); });
  const Index np = static_cast<Index>(s.b.size());
  Index groups = 0;
  for (Index k = 0; k < np; ++k) groups += (k == 0 || gt(s.b[k]) != gt(s.b[k - 1]));
  const Index q =
      static_cast<Index>(std::nearbyint(static_cast<double>(p_exp) / static_cast<double>(groups))) +
      1;
  for (Index begin = 0; begin < np;) {
    Index end = begin + 1;
    while (end < np && gt(s.b[end]) == gt(s.b[begin])) ++end;
    s.c.assign(s.b.begin() + begin, s.b.begin() + end);
    choose_k(s.c, q, rng, false);
    out.insert(out.end(), s.c.begin(), s.c.end());
    begin = end;
  }
  const Index taken = static_cast<Index>(out.size());
  if (taken < p_exp) {
    const Index extra = p_exp - taken;
    if (mode == InstanceBalanceMode::clean) {
      std::sort(out.begin(), out.end());
      s.c.clear();  // Pos \ taken, ascending (both lists ascending)
      std::set_difference(s.a.begin(), s.a.end(), out.begin(), out.end(), std::back_inserter(s.c));
    } else {
      s.c = s.a;  // the reference's difference removes nothing
    }
    choose_k(s.c, extra, rng, false);
    out.insert(out.end(), s.c.begin(), s.c.end());
  } else if (taken > p_exp) {
    choose_k(out, p_exp, rng, false);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

}  // namespace detail

/// Configuration of InstanceBalancedSampler: the batch rule (R-CNN preset) and the mode.
struct InstanceBalancedSamplerConfig {
  SamplerConfig batch = SamplerConfig::rcnn();
  InstanceBalanceMode mode = InstanceBalanceMode::clean;
};

/// Instance-balanced positives + random negatives; see the file comment.
class InstanceBalancedSampler {
 public:
  using Config = InstanceBalancedSamplerConfig;
  static constexpr const char* kName = "fgbg::InstanceBalancedSampler";

  explicit InstanceBalancedSampler(const Config& config = {}) : config_(config) {
    config_.batch.validate(kName);
  }

  const Config& config() const { return config_; }

  /// Samples from labels (N) and assigned GT indices (N, ≥ 0 on positives).
  template <typename LD, typename GD, typename URBG>
  void sample(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<GD>& gt_index, URBG& rng,
              Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    detail::check_gt_index(kName, labels, gt_index);
    out.clear();
    detail::instance_balanced_positives(labels, gt_index, config_.batch.expected_positives(),
                                        config_.mode, rng, out.scratch, out.positives);
    const Index n_exp = config_.batch.expected_negatives(out.num_positives());
    detail::collect(
        labels, [](auto l) { return l == 0; }, out.negatives);
    detail::choose_k(out.negatives, n_exp, rng, true);
  }

  /// Samples from an assignment.
  template <typename URBG>
  void sample(const Assignment& a, URBG& rng, Sample& out) const {
    sample(a.labels(), a.gt_index(), rng, out);
  }

 private:
  Config config_;
};

}  // namespace fgbg
