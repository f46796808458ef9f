/// @file iou.hpp
/// @brief Intersection over union between axis-aligned boxes: the N × G matrix between N
///        candidate boxes (anchors, proposals) and G ground truths, and the aligned IoU of N pairs.
///
/// Boxes are rows `(x1, y1, x2, y2)` with x2 ≥ x1 and y2 ≥ y1, in any Eigen dense layout (the
/// natural one is a row-major `N × 4` array, the memory of a `[N, 4]` PyTorch tensor).
///
/// Convention (mmdetection's `bbox_overlaps`, mode 'iou', the one every mmdet assigner uses;
/// torchvision's `box_iou` and detectron2's `pairwise_iou` agree except for the union clamp):
///
///   area(b)   = (x2 − x1) · (y2 − y1)                       (no "+1": continuous coordinates)
///   inter     = max(0, min(x2, x2') − max(x1, x1')) · max(0, min(y2, y2') − max(y1, y1'))
///   IoU(b,b') = inter / max(area(b) + area(b') − inter, eps),   eps = 1e-6
///
/// The eps clamp makes the IoU of two zero-area boxes 0 (not NaN); for boxes of positive area the
/// clamp never binds. Touching boxes (shared edge) have IoU 0. Arithmetic is done in the box
/// scalar type (float boxes: float arithmetic, like mmdet on float32 tensors).
///
/// Cost: the matrix is computed over tiles of 64 candidates held in local structure-of-arrays
/// buffers, one vectorised pass per GT over each tile; no allocation.
///
/// @throws std::invalid_argument if a box array does not have 4 columns, a box is inverted
///         (x2 < x1 or y2 < y1), or the output has the wrong shape;
///         std::domain_error if a coordinate is NaN or infinite. Nothing is written then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../core/checks.hpp"

namespace fgbg {

/// eps of mmdetection's `bbox_overlaps`: the union is clamped to at least this value.
inline constexpr double kIouEps = 1e-6;

namespace detail {

/// Validates an `n × 4` box array: finite coordinates, x2 ≥ x1, y2 ≥ y1.
template <typename Derived>
void check_boxes(const char* where, const char* arg, const Eigen::DenseBase<Derived>& boxes) {
  static_assert(std::is_floating_point<typename Derived::Scalar>::value,
                "fgbg: boxes must be a float or double array");
  if (boxes.cols() != 4)
    throw_invalid(where, arg, " must have 4 columns (x1, y1, x2, y2), got ", boxes.rows(), " x ",
                  boxes.cols());
  check_finite(where, arg, boxes);
  const auto& b = boxes.derived();
  for (Index i = 0; i < b.rows(); ++i) {
    if (b.coeff(i, 2) < b.coeff(i, 0) || b.coeff(i, 3) < b.coeff(i, 1))
      throw_invalid(where, arg, " row ", i, " = (", b.coeff(i, 0), ", ", b.coeff(i, 1), ", ",
                    b.coeff(i, 2), ", ", b.coeff(i, 3), ") is inverted; boxes must be (x1, y1, ",
                    "x2, y2) with x2 >= x1 and y2 >= y1");
  }
}

/// IoU of two boxes given by their coordinates (same formula as the matrix).
template <typename Scalar>
Scalar box_iou(Scalar ax1, Scalar ay1, Scalar ax2, Scalar ay2, Scalar bx1, Scalar by1, Scalar bx2,
               Scalar by2) {
  const Scalar iw = std::max(std::min(ax2, bx2) - std::max(ax1, bx1), Scalar(0));
  const Scalar ih = std::max(std::min(ay2, by2) - std::max(ay1, by1), Scalar(0));
  const Scalar inter = iw * ih;
  const Scalar uni = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter;
  return inter / std::max(uni, static_cast<Scalar>(kIouEps));
}

/// A tile of candidate boxes in structure-of-arrays form.
template <typename Scalar>
struct BoxTile {
  static constexpr Index kSize = 64;
  using Vec = Eigen::Array<Scalar, kSize, 1>;
  Vec x1, y1, x2, y2, area;
  Index n = 0;

  template <typename Derived>
  void load(const Eigen::DenseBase<Derived>& b, Index begin, Index count) {
    n = count;
    for (Index t = 0; t < count; ++t) {
      x1[t] = static_cast<Scalar>(b.derived().coeff(begin + t, 0));
      y1[t] = static_cast<Scalar>(b.derived().coeff(begin + t, 1));
      x2[t] = static_cast<Scalar>(b.derived().coeff(begin + t, 2));
      y2[t] = static_cast<Scalar>(b.derived().coeff(begin + t, 3));
    }
    for (Index t = count; t < kSize; ++t) x1[t] = y1[t] = x2[t] = y2[t] = Scalar(0);
    area = (x2 - x1) * (y2 - y1);
  }

  /// IoU of every box of the tile with one box g, into `out` (kSize entries, first n valid).
  void iou_with(Scalar gx1, Scalar gy1, Scalar gx2, Scalar gy2, Vec& out) const {
    const Scalar garea = (gx2 - gx1) * (gy2 - gy1);
    const Vec iw = (x2.min(gx2) - x1.max(gx1)).max(Scalar(0));
    const Vec ih = (y2.min(gy2) - y1.max(gy1)).max(Scalar(0));
    const Vec inter = iw * ih;
    out = inter / (area + garea - inter).max(static_cast<Scalar>(kIouEps));
  }
};

/// IoU matrix without input checks (callers have validated): out(i, g) = IoU(boxes_i, gts_g).
template <typename BD, typename GD, typename OD>
void iou_matrix_unchecked(const Eigen::DenseBase<BD>& boxes, const Eigen::DenseBase<GD>& gts,
                          Eigen::DenseBase<OD>& out) {
  using Scalar = typename BD::Scalar;
  using OutScalar = typename OD::Scalar;
  const Index n = boxes.rows(), g_count = gts.rows();
  BoxTile<Scalar> tile;
  typename BoxTile<Scalar>::Vec col;
  for (Index begin = 0; begin < n; begin += BoxTile<Scalar>::kSize) {
    const Index count = std::min(BoxTile<Scalar>::kSize, n - begin);
    tile.load(boxes, begin, count);
    for (Index g = 0; g < g_count; ++g) {
      tile.iou_with(static_cast<Scalar>(gts.derived().coeff(g, 0)),
                    static_cast<Scalar>(gts.derived().coeff(g, 1)),
                    static_cast<Scalar>(gts.derived().coeff(g, 2)),
                    static_cast<Scalar>(gts.derived().coeff(g, 3)), col);
      out.derived().block(begin, g, count, 1) = col.head(count).template cast<OutScalar>();
    }
  }
}

}  // namespace detail

/// Writes the `N × G` IoU matrix `out(i, g) = IoU(boxes.row(i), gts.row(g))` (see the file
/// comment for the convention). `boxes` is N × 4, `gts` is G × 4 (G may be 0), `out` any writable
/// Eigen array of N × G (a plain array is resized; a Map or block must have the shape).
/// @throws std::invalid_argument / std::domain_error as in the file comment; nothing is written.
template <typename BD, typename GD, typename OD>
void iou_matrix(const Eigen::DenseBase<BD>& boxes, const Eigen::DenseBase<GD>& gts,
                const Eigen::DenseBase<OD>& out_) {
  constexpr const char* kWhere = "fgbg::iou_matrix";
  detail::check_boxes(kWhere, "boxes", boxes);
  detail::check_boxes(kWhere, "gts", gts);
  detail::check_output(kWhere, "out", out_, boxes.rows(), gts.rows());
  detail::prepare_output(kWhere, "out", out_, boxes.rows(), gts.rows());
  auto& out = const_cast<Eigen::DenseBase<OD>&>(out_);
  detail::iou_matrix_unchecked(boxes, gts, out);
}

/// Writes the aligned IoU of N pairs: `out(i) = IoU(a.row(i), b.row(i))`. `a`, `b` are N × 4,
/// `out` a writable vector of N entries (a plain array is resized).
/// @throws std::invalid_argument / std::domain_error as in the file comment, or if `a` and `b`
///         have different numbers of rows; nothing is written.
template <typename AD, typename BD, typename OD>
void aligned_iou(const Eigen::DenseBase<AD>& a, const Eigen::DenseBase<BD>& b,
                 const Eigen::DenseBase<OD>& out_) {
  constexpr const char* kWhere = "fgbg::aligned_iou";
  detail::check_boxes(kWhere, "a", a);
  detail::check_boxes(kWhere, "b", b);
  if (a.rows() != b.rows())
    detail::throw_invalid(kWhere, "a and b must have the same number of boxes, got ", a.rows(),
                          " and ", b.rows());
  const Index n = a.rows();
  const bool is_vector = out_.cols() == 1 || out_.rows() == 1;
  if (!(is_vector && out_.size() == n)) {
    if constexpr (std::is_base_of<Eigen::PlainObjectBase<OD>, OD>::value) {
      detail::prepare_output(kWhere, "out", out_, n, 1);
    } else {
      detail::throw_invalid(kWhere, "out must be a vector of ", n, " entries, got ", out_.rows(),
                            " x ", out_.cols());
    }
  }
  auto& out = const_cast<Eigen::DenseBase<OD>&>(out_).derived();
  using Scalar = typename AD::Scalar;
  using OutScalar = typename OD::Scalar;
  detail::BoxTile<Scalar> ta, tb;
  typename detail::BoxTile<Scalar>::Vec r;
  for (Index begin = 0; begin < n; begin += detail::BoxTile<Scalar>::kSize) {
    const Index count = std::min(detail::BoxTile<Scalar>::kSize, n - begin);
    ta.load(a, begin, count);
    tb.load(b, begin, count);
    const auto iw = (ta.x2.min(tb.x2) - ta.x1.max(tb.x1)).max(Scalar(0));
    const auto ih = (ta.y2.min(tb.y2) - ta.y1.max(tb.y1)).max(Scalar(0));
    const typename detail::BoxTile<Scalar>::Vec inter = iw * ih;
    r = inter / (ta.area + tb.area - inter).max(static_cast<Scalar>(kIouEps));
    for (Index t = 0; t < count; ++t) out.coeffRef(begin + t) = static_cast<OutScalar>(r[t]);
  }
}

}  // namespace fgbg
