/// @file max_iou_assigner.hpp
/// @brief Max-IoU assignment of candidate boxes (anchors, proposals) to ground truths, with the
///        RetinaNet, RPN and R-CNN presets, and GT-as-proposals for the second stage.
///
/// Matches mmdetection's `MaxIoUAssigner` (mmdet/models/task_modules/assigners/max_iou_assigner.py;
/// Faster R-CNN, Ren et al., NeurIPS 2015, §3.1.2 for the RPN rule). Per candidate i, with
/// m_i = max_g IoU(i, g) and a_i = the first g reaching it (ties by GT index ascending):
///
///   1. every candidate starts ignored (label −1);
///   2. negative (label 0) if neg_iou_lo ≤ m_i < neg_iou_thr;
///   3. positive to GT a_i (label = gt_labels[a_i]) if m_i ≥ pos_iou_thr;
///   4. low-quality matches (match_low_quality): for g = 0..G−1 in order, if the best IoU of GT g
///      over all candidates, M_g, is ≥ min_pos_iou, every candidate whose IoU with g equals M_g
///      (gt_max_assign_all; else only the first such candidate) becomes positive to g, overwriting
///      earlier assignments. m_i is not changed.
///   5. No GT: every candidate is negative, m_i = 0. No candidate: empty result.
///
/// Thresholds are compared in the scalar type of the IoU (float boxes: float, like mmdet on
/// float32 tensors, where `iou >= 0.7` compares against 0.7f).
///
/// Quirk guarded (clean by default): in the reference a GT whose best IoU is 0 (a GT no candidate
/// overlaps) passes `M_g ≥ min_pos_iou` when min_pos_iou = 0 — the RetinaNet preset — and then
/// turns *every* candidate with zero IoU to it (usually almost all of them) positive. Here step 4
/// also requires M_g > 0, unless `Config::low_quality_zero_iou` is set to reproduce the reference.
///
/// Not supported: mmdet's `ignore_iof_thr` (ignore boxes): set those labels to −1 yourself.
///
/// Presets (mmdet configs): RetinaNet 0.5 / 0.4 / min_pos 0 with low-quality matches (default),
/// RPN 0.7 / 0.3 / min_pos 0.3 with low-quality matches, R-CNN 0.5 / 0.5 / 0.5 without.
///
/// Shapes: boxes N × 4, gts G × 4 (x1, y1, x2, y2; see iou.hpp), or a precomputed IoU matrix
/// N × G; gt_labels G integers ≥ 1. Output: an Assignment (labels −1 / 0 / 1..C, gt_index −1 or
/// 0..G−1, max_iou), stored in std::vectors so that reuse with enough capacity never allocates.
///
/// @throws std::invalid_argument for a bad config (constructor), shape, GT label < 1, inverted
///         box or IoU outside [0, 1]; std::domain_error for a non-finite coordinate or IoU. The
///         Assignment is not touched then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include "iou.hpp"

namespace fgbg {

/// Result of an assignment over N candidates. The views are Eigen Maps over the vectors.
struct Assignment {
  std::vector<Label> label_storage;      ///< −1 ignore, 0 background, k ≥ 1 class of the GT
  std::vector<std::int32_t> gt_storage;  ///< assigned GT (0-based), −1 for ignored / negatives
  std::vector<double> iou_storage;       ///< IoU with the best GT (0 when there is no GT)
  Index num_gts = 0;                     ///< G of the image
  Index num_gt_proposals = 0;  ///< leading entries that are GT boxes (add_gt_as_proposals)

  Index size() const { return static_cast<Index>(label_storage.size()); }
  Eigen::Map<const LabelVector> labels() const {
    return {label_storage.data(), static_cast<Index>(label_storage.size())};
  }
  Eigen::Map<const Eigen::Array<std::int32_t, Eigen::Dynamic, 1>> gt_index() const {
    return {gt_storage.data(), static_cast<Index>(gt_storage.size())};
  }
  Eigen::Map<const Eigen::ArrayXd> max_iou() const {
    return {iou_storage.data(), static_cast<Index>(iou_storage.size())};
  }
  Index count_positives() const {
    return static_cast<Index>(
        std::count_if(label_storage.begin(), label_storage.end(), [](Label l) { return l > 0; }));
  }
  Index count_negatives() const {
    return static_cast<Index>(std::count(label_storage.begin(), label_storage.end(), Label(0)));
  }

  // Workspace of the fused box path (per-GT best IoU and the candidates reaching it).
  std::vector<double> gt_best_;
  std::vector<std::vector<Index>> gt_argbest_;
};

/// Configuration of MaxIouAssigner. Defaults: the RetinaNet preset.
struct MaxIouAssignerConfig {
  double pos_iou_thr = 0.5;  ///< IoU ≥ this ⇒ positive
  double neg_iou_thr = 0.4;  ///< neg_iou_lo ≤ IoU < this ⇒ negative
  double neg_iou_lo = 0.0;   ///< lower end of the negative range (mmdet's tuple form)
  double min_pos_iou = 0.0;  ///< low-quality matches need the GT's best IoU ≥ this
  bool match_low_quality = true;
  bool gt_max_assign_all = true;      ///< all candidates tied at a GT's best IoU, or the first
  bool low_quality_zero_iou = false;  ///< true: reproduce the reference quirk (see file comment)

  static MaxIouAssignerConfig retinanet() { return {}; }
  static MaxIouAssignerConfig rpn() { return {0.7, 0.3, 0.0, 0.3, true, true, false}; }
  static MaxIouAssignerConfig rcnn() { return {0.5, 0.5, 0.0, 0.5, false, true, false}; }
};

/// Max-IoU assigner; see the file comment.
class MaxIouAssigner {
 public:
  using Config = MaxIouAssignerConfig;
  static constexpr const char* kName = "fgbg::MaxIouAssigner";

  explicit MaxIouAssigner(const Config& config = {}) : config_(config) {
    const Config& c = config_;
    detail::require_param(c.pos_iou_thr >= 0 && c.pos_iou_thr <= 1, kName, "pos_iou_thr",
                          "in [0, 1]", c.pos_iou_thr);
    detail::require_param(c.neg_iou_thr >= 0 && c.neg_iou_thr <= 1, kName, "neg_iou_thr",
                          "in [0, 1]", c.neg_iou_thr);
    detail::require_param(c.neg_iou_lo >= 0 && c.neg_iou_lo <= c.neg_iou_thr, kName, "neg_iou_lo",
                          "in [0, neg_iou_thr]", c.neg_iou_lo);
    detail::require_param(c.min_pos_iou >= 0 && c.min_pos_iou <= 1, kName, "min_pos_iou",
                          "in [0, 1]", c.min_pos_iou);
    detail::require_param(c.neg_iou_thr <= c.pos_iou_thr, kName, "neg_iou_thr", "<= pos_iou_thr",
                          c.neg_iou_thr);
  }

  const Config& config() const { return config_; }

  /// Assigns N candidate boxes to G ground truths; the IoU is computed tile by tile, fused with
  /// the assignment (the N × G matrix is never stored).
  template <typename BD, typename GD, typename LD>
  void assign(const Eigen::DenseBase<BD>& boxes, const Eigen::DenseBase<GD>& gts,
              const Eigen::DenseBase<LD>& gt_labels, Assignment& out) const {
    detail::check_boxes(kName, "boxes", boxes);
    detail::check_boxes(kName, "gts", gts);
    check_gt_labels(gt_labels, gts.rows());
    using Scalar = typename BD::Scalar;
    const Index n = boxes.rows(), g_count = gts.rows();
    const Scalar gmax = detail::max_abs_coordinate(gts);  // direct or scaled IoU (iou.hpp)
    run<Scalar>(
        n, g_count, gt_labels, out,
        [&](const detail::BoxTile<Scalar>& tile, Index, Index,
            typename detail::BoxTile<Scalar>::Vec& col, Index g) {
          const Scalar gx1 = static_cast<Scalar>(gts.derived().coeff(g, 0));
          const Scalar gy1 = static_cast<Scalar>(gts.derived().coeff(g, 1));
          const Scalar gx2 = static_cast<Scalar>(gts.derived().coeff(g, 2));
          const Scalar gy2 = static_cast<Scalar>(gts.derived().coeff(g, 3));
          if (tile.direct_with(gmax))
            tile.iou_direct_with(gx1, gy1, gx2, gy2, col);
          else
            tile.iou_with(gx1, gy1, gx2, gy2, col);
        },
        [&](detail::BoxTile<Scalar>& tile, Index begin, Index count) {
          tile.load(boxes, begin, count);
        });
  }

  /// Assigns from a precomputed N × G IoU matrix (any layout) — e.g. mmdet's `overlaps.T`.
  template <typename ID, typename LD>
  void assign_from_iou(const Eigen::DenseBase<ID>& iou, const Eigen::DenseBase<LD>& gt_labels,
                       Assignment& out) const {
    using Scalar = typename ID::Scalar;
    static_assert(std::is_floating_point<Scalar>::value, "fgbg: the IoU must be float or double");
    detail::check_finite(kName, "iou", iou);
    if (iou.size() > 0 && (iou.minCoeff() < Scalar(0) || iou.maxCoeff() > Scalar(1))) {
      for (Index i = 0; i < iou.rows(); ++i)
        for (Index g = 0; g < iou.cols(); ++g) {
          const Scalar v = iou.derived().coeff(i, g);
          if (v < 0 || v > 1)
            detail::throw_invalid(kName, "iou(", i, ", ", g, ") = ", v, " is outside [0, 1]");
        }
    }
    check_gt_labels(gt_labels, iou.cols());
    const Index n = iou.rows(), g_count = iou.cols();
    run<Scalar>(
        n, g_count, gt_labels, out,
        [&](const detail::BoxTile<Scalar>&, Index begin, Index count,
            typename detail::BoxTile<Scalar>::Vec& col, Index g) {
          for (Index t = 0; t < count; ++t) col[t] = iou.derived().coeff(begin + t, g);
          for (Index t = count; t < detail::BoxTile<Scalar>::kSize; ++t) col[t] = Scalar(0);
        },
        [](detail::BoxTile<Scalar>&, Index, Index) {});
  }

 private:
  /// Start value of every running maximum (a candidate's best IoU, a GT's best IoU): below every
  /// IoU (≥ 0), so the first GT (or tile) always replaces it and ties then keep the first.
  static constexpr double kBelowAnyIou = -1.0;

  template <typename LD>
  static void check_gt_labels(const Eigen::DenseBase<LD>& gt_labels, Index g_count) {
    static_assert(std::is_integral<typename LD::Scalar>::value,
                  "fgbg: gt_labels must be an integer array (classes 1..C)");
    detail::check_vector(kName, "gt_labels", gt_labels, g_count);
    for (Index g = 0; g < g_count; ++g)
      if (gt_labels.derived().coeff(g) < 1)
        detail::throw_invalid(kName, "gt_labels(", g,
                              ") = ", static_cast<long long>(gt_labels.derived().coeff(g)),
                              " must be a foreground class >= 1 (0 is background)");
  }

  template <typename Scalar, typename LD, typename ColFn, typename LoadFn>
  void run(Index n, Index g_count, const Eigen::DenseBase<LD>& gt_labels, Assignment& out,
           ColFn&& column, LoadFn&& load) const {
    using Tile = detail::BoxTile<Scalar>;
    using Vec = typename Tile::Vec;
    out.label_storage.resize(static_cast<std::size_t>(n));
    out.gt_storage.resize(static_cast<std::size_t>(n));
    out.iou_storage.resize(static_cast<std::size_t>(n));
    out.num_gts = g_count;
    out.num_gt_proposals = 0;
    if (g_count == 0) {
      assign_without_gts(out);
      return;
    }
    const bool low_quality = config_.match_low_quality;
    if (low_quality) reset_gt_best(g_count, out);
    const Thresholds<Scalar> thr{static_cast<Scalar>(config_.pos_iou_thr),
                                 static_cast<Scalar>(config_.neg_iou_thr),
                                 static_cast<Scalar>(config_.neg_iou_lo)};
    Tile tile;
    Vec col = Vec::Zero(), best, arg;
    for (Index begin = 0; begin < n; begin += Tile::kSize) {
      const Index count = std::min(Tile::kSize, n - begin);
      load(tile, begin, count);
      best.setConstant(Scalar(kBelowAnyIou));
      arg.setZero();
      for (Index g = 0; g < g_count; ++g) {
        column(tile, begin, count, col, g);
        // Strict '>': ties keep the lower GT index. A plain loop: g++ -O3 if-converts it into
        // vector blends (Eigen 3.4's select() is not vectorised).
        const Scalar gs = static_cast<Scalar>(g);
        for (Index t = 0; t < Tile::kSize; ++t) {
          const bool better = col[t] > best[t];
          best[t] = better ? col[t] : best[t];
          arg[t] = better ? gs : arg[t];
        }
        if (low_quality) track_gt_best<Scalar>(col, begin, count, g, out);
      }
      label_tile(thr, best, arg, begin, count, gt_labels, out);
    }
    if (low_quality) apply_low_quality_matches<Scalar>(gt_labels, g_count, out);
  }

  /// The label thresholds in the IoU's scalar type (see the file comment).
  template <typename Scalar>
  struct Thresholds {
    Scalar pos, neg, neg_lo;
  };

  /// Step 5 of the file comment: no GT, every candidate negative with IoU 0.
  static void assign_without_gts(Assignment& out) {
    std::fill(out.label_storage.begin(), out.label_storage.end(), Label(0));
    std::fill(out.gt_storage.begin(), out.gt_storage.end(), -1);
    std::fill(out.iou_storage.begin(), out.iou_storage.end(), 0.0);
  }

  /// Empties the per-GT best IoU (kBelowAnyIou) and the candidates reaching it, for g_count GTs.
  static void reset_gt_best(Index g_count, Assignment& out) {
    out.gt_best_.assign(static_cast<std::size_t>(g_count), kBelowAnyIou);
    if (out.gt_argbest_.size() < static_cast<std::size_t>(g_count))
      out.gt_argbest_.resize(static_cast<std::size_t>(g_count));
    for (Index g = 0; g < g_count; ++g) out.gt_argbest_[g].clear();
  }

  /// Low-quality bookkeeping for GT g and one tile of IoUs `col` (candidates begin..begin+count):
  /// raises GT g's best IoU and records the candidates reaching it (all of them with
  /// gt_max_assign_all, else the first).
  template <typename Scalar, typename Vec>
  void track_gt_best(const Vec& col, Index begin, Index count, Index g, Assignment& out) const {
    const Config& c = config_;
    const Scalar tile_max = col.maxCoeff();  // padded lanes hold IoU 0
    double& gb = out.gt_best_[g];
    const double tm = static_cast<double>(tile_max);
    if (tm >= gb) {
      auto& list = out.gt_argbest_[g];
      if (tm > gb) {
        gb = tm;
        list.clear();
      }
      // Zero-IoU candidates are recorded only to reproduce the reference quirk.
      const bool record = tm > 0 || c.low_quality_zero_iou;
      if (record && (c.gt_max_assign_all || list.empty()))
        for (Index t = 0; t < count; ++t)
          if (col[t] == tile_max) {
            list.push_back(begin + t);
            if (!c.gt_max_assign_all) break;
          }
    }
  }

  /// Steps 1–3 of the file comment for one tile: from each candidate's best IoU `best` and its
  /// GT `arg`, the label (ignored, negative or the GT's class), GT index and max IoU.
  template <typename Scalar, typename Vec, typename LD>
  static void label_tile(const Thresholds<Scalar>& thr, const Vec& best, const Vec& arg,
                         Index begin, Index count, const Eigen::DenseBase<LD>& gt_labels,
                         Assignment& out) {
    const Scalar pos_thr = thr.pos, neg_thr = thr.neg, neg_lo = thr.neg_lo;
    for (Index t = 0; t < count; ++t) {
      const Index i = begin + t;
      const Scalar m = best[t];
      Label label = kIgnore;
      std::int32_t gi = -1;
      if (m >= neg_lo && m < neg_thr) label = kBackground;
      if (m >= pos_thr) {
        gi = static_cast<std::int32_t>(arg[t]);
        label = static_cast<Label>(gt_labels.derived().coeff(gi));
      }
      out.label_storage[i] = label;
      out.gt_storage[i] = gi;
      out.iou_storage[i] = static_cast<double>(m);
    }
  }

  /// Step 4 of the file comment: for g = 0..G−1 in order, the recorded candidates of a GT whose
  /// best IoU passes min_pos_iou (and is > 0 unless low_quality_zero_iou) become positive to g.
  template <typename Scalar, typename LD>
  void apply_low_quality_matches(const Eigen::DenseBase<LD>& gt_labels, Index g_count,
                                 Assignment& out) const {
    const Scalar min_pos = static_cast<Scalar>(config_.min_pos_iou);
    for (Index g = 0; g < g_count; ++g) {
      const Scalar gb = static_cast<Scalar>(out.gt_best_[g]);
      if (!(gb >= min_pos)) continue;
      if (gb <= Scalar(0) && !config_.low_quality_zero_iou) continue;
      const Label label = static_cast<Label>(gt_labels.derived().coeff(g));
      for (const Index i : out.gt_argbest_[g]) {
        out.gt_storage[i] = static_cast<std::int32_t>(g);
        out.label_storage[i] = label;
      }
    }
  }

  Config config_;
};

/// GT-as-proposals (mmdet `BaseSampler.sample` with add_gt_as_proposals; torchvision, detectron2
/// and maskrcnn-benchmark do the same for the second stage): prepends the G ground truths to the
/// candidate list — entry g gets label gt_labels[g], gt_index g and max IoU 1 — so a sampler's
/// indices refer to `[gts; proposals]`. Does nothing when G = 0. Use with_gt_boxes() to build
/// the matching box list. Default in the references: on for R-CNN, off for the RPN.
/// @throws std::invalid_argument if gt_labels does not have `assignment.num_gts` entries ≥ 1 or
///         GTs were already prepended.
template <typename LD>
void add_gt_as_proposals(Assignment& a, const Eigen::DenseBase<LD>& gt_labels) {
  constexpr const char* kWhere = "fgbg::add_gt_as_proposals";
  detail::check_vector(kWhere, "gt_labels", gt_labels, a.num_gts);
  if (a.num_gt_proposals != 0) detail::throw_invalid(kWhere, "GTs were already prepended");
  for (Index g = 0; g < a.num_gts; ++g)
    if (gt_labels.derived().coeff(g) < 1)
      detail::throw_invalid(kWhere, "gt_labels(", g, ") must be >= 1");
  const Index g_count = a.num_gts;
  if (g_count == 0) return;
  a.label_storage.insert(a.label_storage.begin(), static_cast<std::size_t>(g_count), Label(0));
  a.gt_storage.insert(a.gt_storage.begin(), static_cast<std::size_t>(g_count), 0);
  a.iou_storage.insert(a.iou_storage.begin(), static_cast<std::size_t>(g_count), 1.0);
  for (Index g = 0; g < g_count; ++g) {
    a.label_storage[g] = static_cast<Label>(gt_labels.derived().coeff(g));
    a.gt_storage[g] = static_cast<std::int32_t>(g);
  }
  a.num_gt_proposals = g_count;
}

/// Writes `[gts; proposals]` ((G + N) × 4) into `out` (a plain array is resized), the box list
/// matching add_gt_as_proposals.
template <typename PD, typename GD, typename OD>
void with_gt_boxes(const Eigen::DenseBase<PD>& proposals, const Eigen::DenseBase<GD>& gts,
                   const Eigen::DenseBase<OD>& out_) {
  constexpr const char* kWhere = "fgbg::with_gt_boxes";
  detail::check_boxes(kWhere, "proposals", proposals);
  detail::check_boxes(kWhere, "gts", gts);
  detail::check_output(kWhere, "out", out_, proposals.rows() + gts.rows(), 4);
  detail::prepare_output(kWhere, "out", out_, proposals.rows() + gts.rows(), 4);
  auto& out = detail::writable(out_).derived();
  using S = typename OD::Scalar;
  for (Index g = 0; g < gts.rows(); ++g)
    for (Index k = 0; k < 4; ++k) out.coeffRef(g, k) = static_cast<S>(gts.derived().coeff(g, k));
  for (Index i = 0; i < proposals.rows(); ++i)
    for (Index k = 0; k < 4; ++k)
      out.coeffRef(gts.rows() + i, k) = static_cast<S>(proposals.derived().coeff(i, k));
}

}  // namespace fgbg
