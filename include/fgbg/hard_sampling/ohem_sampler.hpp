/// @file ohem_sampler.hpp
/// @brief Online hard example mining (Shrivastava, Gupta, Girshick, CVPR 2016), in the two forms
///        in use: mmdetection's `OHEMSampler` and the paper's (repo abhi2610/ohem).
///
/// **mmdetection mode** (OhemSampler; mmdet `OHEMSampler`): the batch rule of RandomSampler
/// (sampling_common.hpp: num, pos_fraction, neg_pos_ub), but inside the positive pool and inside
/// the negative pool the candidates with the *largest* loss are kept instead of random ones. The
/// loss is the per-candidate classification loss of the current head (mmdet: CE of the RoI head,
/// no box term, computed without gradient), supplied by the caller as values (N entries) or by a
/// callback evaluated only on pools larger than their quota (as mmdet runs the head only then):
///
///   loss_fn(const std::vector<Index>& indices, std::vector<double>& losses)  // sized for you
///
/// **Paper mode** (OhemPaperSampler; Shrivastava et al., CVPR 2016): every non-ignored RoI is a candidate (no
/// foreground fraction, bg_lo = 0); its loss ℓ_i = classification + box loss (supplied by the
/// caller); greedy NMS at IoU > 0.7 among RoIs of the same label, in (ℓ desc, index asc) order;
/// the first `num` survivors are kept (paper: 2 images × 64 = 128 RoIs per mini-batch, so
/// num = 64 per image). The IoU is fgbg's (mmdet convention, no +1), whereas the Caffe original
/// used the legacy +1 pixel convention. Positives of the result are the kept RoIs with label ≥ 1.
///
/// Both modes are deterministic (no RNG): top-k is selected in O(N) with std::nth_element on
/// (loss desc, index asc); the paper mode sorts lazily, in chunks, only as far as NMS needs.
/// Output indices are ascending (mmdet `unique()`) unless `sorted = false`, which gives
/// (loss desc, index asc) order. No allocation once the Sample's buffers have capacity.
///
/// @throws std::invalid_argument for a bad config, a label < −1, a loss vector of the wrong
///         length; std::domain_error for a non-finite loss (also from the callback) or box.
///         The Sample's result vectors are not touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <limits>

#include "../boxes/iou.hpp"
#include "../boxes/max_iou_assigner.hpp"
#include "sampling_common.hpp"

namespace fgbg {

namespace detail {

/// Fills `keyed` with (loss, index) for every index of `pool`, evaluating `loss_fn`.
template <typename LossFn>
void evaluate_losses(const char* where, const std::vector<Index>& pool, LossFn& loss_fn,
                     std::vector<double>& losses, std::vector<std::pair<double, Index>>& keyed) {
  losses.assign(pool.size(), 0.0);
  loss_fn(static_cast<const std::vector<Index>&>(pool), losses);
  if (losses.size() != pool.size())
    throw_invalid(where, "the loss callback must keep the losses vector at ", pool.size(),
                  " entries, got ", losses.size());
  keyed.clear();
  for (std::size_t k = 0; k < pool.size(); ++k) {
    if (!std::isfinite(losses[k]))
      throw std::domain_error(concat(where, ": the loss of candidate ", pool[k], " is ", losses[k],
                                     "; every loss must be finite"));
    keyed.emplace_back(losses[k], pool[k]);
  }
}

/// Callback reading losses from an Eigen vector.
template <typename D>
struct ValuesLoss {
  const D& values;
  void operator()(const std::vector<Index>& idx, std::vector<double>& out) const {
    for (std::size_t k = 0; k < idx.size(); ++k) out[k] = static_cast<double>(values.coeff(idx[k]));
  }
};

}  // namespace detail

/// Configuration of OhemSampler (mmdetection mode): the batch rule; R-CNN preset by default.
using OhemSamplerConfig = SamplerConfig;

/// OHEM, mmdetection mode; see the file comment.
class OhemSampler {
 public:
  using Config = OhemSamplerConfig;
  static constexpr const char* kName = "fgbg::OhemSampler";

  explicit OhemSampler(const Config& config = {}) : config_(config) { config_.validate(kName); }

  const Config& config() const { return config_; }

  /// Mines with per-candidate losses given as values (N entries; only pool members are read, but
  /// all must be finite).
  template <typename LD, typename VD>
  void sample(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<VD>& losses,
              Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    detail::check_values(kName, "losses", losses, labels.size());
    detail::ValuesLoss<VD> fn{losses.derived()};
    run(labels, fn, out);
  }

  /// Mines with a loss callback `loss_fn(indices, losses)` (see the file comment).
  template <typename LD, typename LossFn>
  void sample_with(const Eigen::DenseBase<LD>& labels, LossFn&& loss_fn, Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    run(labels, loss_fn, out);
  }

 private:
  template <typename LD, typename LossFn>
  void run(const Eigen::DenseBase<LD>& labels, LossFn& loss_fn, Sample& out) const {
    auto& s = out.scratch;
    // The scratch buffers by role: the candidates of each side and the kept hardest ones.
    auto &pos_pool = s.a, &neg_pool = s.b, &pos_kept = s.c, &neg_kept = s.d;
    // Everything that can throw (the callback) runs before the result vectors are written.
    detail::collect(
        labels, [](auto l) { return l > 0; }, pos_pool);
    const Index p_exp = config_.expected_positives();
    const bool mine_pos = static_cast<Index>(pos_pool.size()) > p_exp;
    if (mine_pos) {
      detail::evaluate_losses(kName, pos_pool, loss_fn, s.losses, s.keyed);
      detail::top_k(s.keyed, p_exp);
      detail::keyed_to_indices(s.keyed, pos_kept, config_.sorted);
    } else {
      pos_kept = pos_pool;
    }
    const Index n_exp = config_.expected_negatives(static_cast<Index>(pos_kept.size()));
    detail::collect(
        labels, [](auto l) { return l == 0; }, neg_pool);
    if (static_cast<Index>(neg_pool.size()) > n_exp) {
      detail::evaluate_losses(kName, neg_pool, loss_fn, s.losses, s.keyed);
      detail::top_k(s.keyed, n_exp);
      detail::keyed_to_indices(s.keyed, neg_kept, config_.sorted);
    } else {
      neg_kept = neg_pool;
    }
    out.clear();
    out.positives = pos_kept;
    out.negatives = neg_kept;
  }

  Config config_;
};

/// Configuration of OhemPaperSampler.
struct OhemPaperSamplerConfig {
  Index num = 64;           ///< RoIs kept per image (paper: 128 per 2-image mini-batch)
  bool use_nms = true;      ///< OHEM_USE_NMS
  double nms_thresh = 0.7;  ///< OHEM_NMS_THRESH: suppress IoU > this (same label)
  bool sorted = true;       ///< indices ascending; false: (loss desc, index asc)
};

/// OHEM, paper mode (abhi2610/ohem); see the file comment.
class OhemPaperSampler {
 public:
  using Config = OhemPaperSamplerConfig;
  static constexpr const char* kName = "fgbg::OhemPaperSampler";

  explicit OhemPaperSampler(const Config& config = {}) : config_(config) {
    detail::require_param(config_.num >= 0, kName, "num", ">= 0", config_.num);
    detail::require_param(config_.nms_thresh >= 0 && config_.nms_thresh <= 1, kName, "nms_thresh",
                          "in [0, 1]", config_.nms_thresh);
  }

  const Config& config() const { return config_; }

  /// Mines among the RoIs `boxes` (N × 4) with labels (N) and losses ℓ_i = cls + box (N).
  template <typename LD, typename BD, typename VD>
  void sample(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<BD>& boxes,
              const Eigen::DenseBase<VD>& losses, Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    detail::check_values(kName, "losses", losses, labels.size());
    detail::ValuesLoss<VD> fn{losses.derived()};
    run(labels, boxes, fn, out);
  }

  /// As sample(), with a callback `loss_fn(indices, losses)` evaluated on all non-ignored RoIs.
  template <typename LD, typename BD, typename LossFn>
  void sample_with(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<BD>& boxes,
                   LossFn&& loss_fn, Sample& out) const {
    detail::check_sampler_labels(kName, labels);
    run(labels, boxes, loss_fn, out);
  }

 private:
  template <typename LD, typename BD, typename LossFn>
  void run(const Eigen::DenseBase<LD>& labels, const Eigen::DenseBase<BD>& boxes, LossFn& loss_fn,
           Sample& out) const {
    detail::check_boxes(kName, "boxes", boxes);
    if (boxes.rows() != labels.size())
      detail::throw_invalid(kName, "boxes must have one row per label (", labels.size(), "), got ",
                            boxes.rows());
    auto& s = out.scratch;
    auto &pool = s.a, &kept = s.c;  // every valid candidate; the kept ones, loss descending
    detail::collect(
        labels, [](auto l) { return l >= 0; }, pool);
    detail::evaluate_losses(kName, pool, loss_fn, s.losses, s.keyed);
    using Scalar = typename BD::Scalar;
    const auto& b = boxes.derived();
    const Scalar thr = static_cast<Scalar>(config_.nms_thresh);
    const Index m = static_cast<Index>(s.keyed.size());
    const Index want = config_.num;
    kept.clear();  // kept, in (loss desc, index asc) order
    // First chunk: kChunkFactor · num + kChunkSlack candidates (NMS at 0.7 rarely removes more
    // than three of four, so one nth_element + sort usually suffices; the slack covers a tiny
    // num), doubled while more survivors are needed. Compared by division first: with a huge
    // num (≥ 2^61) the product would overflow; every chunk is then the whole pool.
    constexpr Index kChunkFactor = 4, kChunkSlack = 64;
    constexpr Index kMax = std::numeric_limits<Index>::max();
    Index done = 0;
    Index chunk = want <= (kMax - kChunkSlack) / kChunkFactor
                      ? std::min(m, kChunkFactor * want + kChunkSlack)
                      : m;
    while (done < m && static_cast<Index>(kept.size()) < want) {
      const auto first = s.keyed.begin() + done;
      const auto mid = first + std::min(chunk, m - done);
      if (mid != s.keyed.end())
        std::nth_element(first, mid - 1, s.keyed.end(), detail::key_desc_index_asc);
      std::sort(first, mid, detail::key_desc_index_asc);
      for (auto it = first; it != mid && static_cast<Index>(kept.size()) < want; ++it) {
        const Index i = it->second;
        bool keep = true;
        if (config_.use_nms) {
          const auto li = labels.derived().coeff(i);
          for (const Index k : kept) {
            if (labels.derived().coeff(k) != li) continue;
            const Scalar iou =
                detail::box_iou<Scalar>(b.coeff(i, 0), b.coeff(i, 1), b.coeff(i, 2), b.coeff(i, 3),
                                        b.coeff(k, 0), b.coeff(k, 1), b.coeff(k, 2), b.coeff(k, 3));
            if (iou > thr) {
              keep = false;
              break;
            }
          }
        }
        if (keep) kept.push_back(i);
      }
      done = mid - s.keyed.begin();
      chunk = std::min(m, 2 * chunk);  // chunk ≤ m ≤ the pool's size: no overflow
    }
    out.clear();
    for (const Index i : kept)
      (labels.derived().coeff(i) > 0 ? out.positives : out.negatives).push_back(i);
    if (config_.sorted) {
      std::sort(out.positives.begin(), out.positives.end());
      std::sort(out.negatives.begin(), out.negatives.end());
    }
  }

  Config config_;
};

}  // namespace fgbg
