/// @file instance_balanced_sampler.hpp
/// @brief Instance-balanced positive sampling (Libra R-CNN, Pang et al., CVPR 2019): positives
///        spread evenly over the ground-truth instances they are assigned to.
///
/// Matches mmdetection's `InstanceBalancedPosSampler` (Libra R-CNN). With Pos the positives,
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
/// grouped by (GT, index) in the Sample's scratch — a counting sort, O(P), when the ids are
/// compact (max < 2P + 64), else a comparison sort, O(P log P) — so no memory is proportional
/// to the id values and changing ids do not allocate once warm. Caller-owned URBG; same seed ⇒
/// same sample; output ascending.
///
/// @throws std::invalid_argument for a bad config, a label < −1, a gt_index of the wrong length
///         or < 0 on a positive. The Sample is not touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

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

/// GT ids count as compact when max id < kCompactIdFactor · P + kCompactIdSlack: the counting
/// sort's buffers then have O(P) entries (max id + 2). The factor admits ids up to twice the
/// positives (GTs without positives in between); the slack lets an image with few positives but
/// GT ids up to a few dozen (an Assignment's 0..G−1) take the counting path too.
inline constexpr Index kCompactIdFactor = 2;
inline constexpr Index kCompactIdSlack = 64;

/// Groups the positives by GT: by_gt = the positives, groups ascending by GT id, members ascending
/// by index; group k is by_gt[group_start[k] .. group_start[k + 1]) (possibly empty). Ids of
/// positives are ≥ 0 (checked), so as unsigned 64-bit keys they keep their order. Memory never
/// depends on the id values:
///  - compact ids (max id < kCompactIdFactor · P + kCompactIdSlack, e.g. an Assignment's
///    0..G−1): a stable counting sort, O(P), over a buffer bounded by a function of P (reserved
///    up front, so it never grows with the ids once warm);
///  - anything else (e.g. batch-unique ids like 2·10⁹): std::sort of (id, index) pairs,
///    O(P log P).
/// `work` is a scratch list (the counting sort's running positions).
template <typename GD>
void group_by_gt(const Eigen::DenseBase<GD>& gt_index, const std::vector<Index>& positives,
                 SampleScratch& s, std::vector<Index>& by_gt, std::vector<Index>& group_start,
                 std::vector<Index>& work) {
  const Index n_pos = static_cast<Index>(positives.size());
  const std::uint64_t compact =
      static_cast<std::uint64_t>(kCompactIdFactor * n_pos + kCompactIdSlack);
  auto id_of = [&](Index i) { return static_cast<std::uint64_t>(gt_index.derived().coeff(i)); };
  std::uint64_t max_gt = 0;
  for (const Index i : positives) max_gt = std::max(max_gt, id_of(i));
  // Capacity for both paths, so that a warm Sample never allocates whichever path a call takes.
  group_start.reserve(static_cast<std::size_t>(compact + 1));
  work.reserve(static_cast<std::size_t>(compact + 1));
  s.grouped.reserve(positives.size());
  by_gt.resize(positives.size());
  if (max_gt < compact) {
    group_start.assign(static_cast<std::size_t>(max_gt + 2), 0);
    for (const Index i : positives) ++group_start[static_cast<std::size_t>(id_of(i)) + 1];
    for (std::size_t k = 1; k < group_start.size(); ++k)
      group_start[k] += group_start[k - 1];               // start of each id
    work.assign(group_start.begin(), group_start.end());  // running positions
    for (const Index i : positives) by_gt[static_cast<std::size_t>(work[id_of(i)]++)] = i;
  } else {
    auto& g = s.grouped;
    g.clear();
    for (const Index i : positives) g.emplace_back(id_of(i), i);
    std::sort(g.begin(), g.end());
    group_start.clear();
    for (std::size_t k = 0; k < g.size(); ++k) {
      if (k == 0 || g[k].first != g[k - 1].first) group_start.push_back(static_cast<Index>(k));
      by_gt[k] = g[k].second;
    }
    group_start.push_back(n_pos);
  }
}

/// From every non-empty group of by_gt: all its positives if at most q = round(p_exp / |G|) + 1
/// (half to even), else q at random; appended to `out`. `work` holds one group's draw.
template <typename URBG>
void take_per_gt(const std::vector<Index>& by_gt, const std::vector<Index>& group_start,
                 Index p_exp, URBG& rng, std::vector<Index>& work, std::vector<Index>& out) {
  Index groups = 0;
  for (std::size_t k = 0; k + 1 < group_start.size(); ++k)
    groups += (group_start[k + 1] > group_start[k]);
  const Index q =
      static_cast<Index>(std::nearbyint(static_cast<double>(p_exp) / static_cast<double>(groups))) +
      1;
  for (std::size_t k = 0; k + 1 < group_start.size(); ++k) {
    const Index begin = group_start[k], end = group_start[k + 1];
    if (end == begin) continue;
    work.assign(by_gt.begin() + begin, by_gt.begin() + end);
    choose_k(work, q, rng, false);
    out.insert(out.end(), work.begin(), work.end());
  }
}

/// Brings the per-GT draw `out` to p_exp: fills from Pos \ taken (clean) or from all of Pos
/// (faithful, the reference's set difference removes nothing), or keeps p_exp at random; then
/// sorts and deduplicates.
template <typename URBG>
void fill_or_trim_positives(const std::vector<Index>& positives, Index p_exp,
                            InstanceBalanceMode mode, URBG& rng, std::vector<Index>& work,
                            std::vector<Index>& out) {
  const Index taken = static_cast<Index>(out.size());
  if (taken < p_exp) {
    const Index extra = p_exp - taken;
    if (mode == InstanceBalanceMode::clean) {
      std::sort(out.begin(), out.end());
      work.clear();  // Pos \ taken, ascending (both lists ascending)
      std::set_difference(positives.begin(), positives.end(), out.begin(), out.end(),
                          std::back_inserter(work));
    } else {
      work = positives;  // the reference's difference removes nothing
    }
    choose_k(work, extra, rng, false);
    out.insert(out.end(), work.begin(), work.end());
  } else if (taken > p_exp) {
    choose_k(out, p_exp, rng, false);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

/// Instance-balanced choice of at most p_exp positives into `out` (ascending). Inputs checked.
template <typename LD, typename GD, typename URBG>
void instance_balanced_positives(const Eigen::DenseBase<LD>& labels,
                                 const Eigen::DenseBase<GD>& gt_index, Index p_exp,
                                 InstanceBalanceMode mode, URBG& rng, SampleScratch& s,
                                 std::vector<Index>& out) {
  // The scratch buffers by role: the positives, the positives grouped by GT, the starts of the
  // groups in by_gt, and a working list (running positions, then one draw).
  auto &positives = s.a, &by_gt = s.b, &work = s.c, &group_start = s.d;
  collect(
      labels, [](auto l) { return l > 0; }, positives);
  out.clear();
  if (static_cast<Index>(positives.size()) <= p_exp) {
    out = positives;
    return;
  }
  group_by_gt(gt_index, positives, s, by_gt, group_start, work);
  take_per_gt(by_gt, group_start, p_exp, rng, work, out);
  fill_or_trim_positives(positives, p_exp, mode, rng, work, out);
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
    const Index p_exp = config_.batch.expected_positives();  // in [0, num]
    out.clear();
    detail::instance_balanced_positives(labels, gt_index, p_exp, config_.mode, rng, out.scratch,
                                        out.positives);
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
