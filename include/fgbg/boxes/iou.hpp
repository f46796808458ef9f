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
/// Range: every finite box is accepted and gets the IoU of exact arithmetic (to a few ulps, or
/// 0 below the scalar's range). A tile of 64 boxes whose coordinates all have |v| ≤ 2^62 (float)
/// or 2^510 (double) is computed by the vectorised direct formula (areas cannot overflow there);
/// a pair with a larger coordinate is computed in double with each axis scaled by its own power
/// of two (detail::box_iou_scaled), so a float box (0, 0, 1e20, 1e20) has self-IoU 1, not
/// inf / inf = NaN, a box thin in x and huge in y keeps its width, and the assigner accepts the
/// matrix it computes. The check costs one comparison per tile and GT.
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
#include <limits>
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

/// Largest |coordinate| for which the direct IoU formula cannot overflow in Scalar: with every
/// |coordinate| ≤ B = 2^((max_exponent − 4) / 2) (float 2^62 ≈ 4.6e18, double 2^510), widths are
/// ≤ 2B, areas ≤ 4B² and the sum of two areas ≤ 8B² < the largest finite value.
template <typename Scalar>
Scalar iou_direct_limit() {
  static const Scalar b =
      std::ldexp(Scalar(1), (std::numeric_limits<Scalar>::max_exponent - 4) / 2);
  return b;
}

/// Power-of-two exponent that brings a magnitude m down to at most 2^509 (0 if it already is).
inline int iou_axis_shift(double m) {
  constexpr int kTarget = (std::numeric_limits<double>::max_exponent - 4) / 2 - 1;  // 509
  return m > 0.0 ? std::max(0, static_cast<int>(std::ilogb(m)) - kTarget + 1) : 0;
}

/// IoU of one pair of boxes with some |coordinate| beyond iou_direct_limit(), in double. The IoU
/// is a ratio of areas, so it does not change when the x coordinates are scaled by 2^-sx and the
/// y coordinates by 2^-sy (the eps of the union scales by 2^-(sx+sy)); each axis gets its own
/// shift, from its own largest |coordinate|, so a box that is thin in x and huge in y keeps its
/// width. Float boxes need no shift (their areas fit in double). A width that underflows after
/// its axis' shift is below 2^-1477 of the widest box's width at that axis (which, holding the
/// largest coordinate, is at least one ulp of it), and the exact IoU, at most the ratio of the
/// two widths, is then below double's range too. Slow (ldexp per coordinate); only huge boxes
/// take it.
template <typename Scalar>
Scalar box_iou_scaled(Scalar ax1, Scalar ay1, Scalar ax2, Scalar ay2, Scalar bx1, Scalar by1,
                      Scalar bx2, Scalar by2) {
  using std::abs;
  const int sx = iou_axis_shift(
      std::max({abs(double(ax1)), abs(double(ax2)), abs(double(bx1)), abs(double(bx2))}));
  const int sy = iou_axis_shift(
      std::max({abs(double(ay1)), abs(double(ay2)), abs(double(by1)), abs(double(by2))}));
  auto x = [sx](Scalar v) { return std::ldexp(static_cast<double>(v), -sx); };
  auto y = [sy](Scalar v) { return std::ldexp(static_cast<double>(v), -sy); };
  const double iw = std::max(std::min(x(ax2), x(bx2)) - std::max(x(ax1), x(bx1)), 0.0);
  const double ih = std::max(std::min(y(ay2), y(by2)) - std::max(y(ay1), y(by1)), 0.0);
  const double inter = iw * ih;
  const double uni =
      (x(ax2) - x(ax1)) * (y(ay2) - y(ay1)) + (x(bx2) - x(bx1)) * (y(by2) - y(by1)) - inter;
  const double den = std::max(uni, std::ldexp(kIouEps, -(sx + sy)));
  return den > 0.0 ? static_cast<Scalar>(inter / den) : Scalar(0);
}

/// IoU of two boxes given by their coordinates (same formula as the matrix, and the same
/// direct-or-scaled choice).
template <typename Scalar>
Scalar box_iou(Scalar ax1, Scalar ay1, Scalar ax2, Scalar ay2, Scalar bx1, Scalar by1, Scalar bx2,
               Scalar by2) {
  using std::abs;
  const Scalar lim = iou_direct_limit<Scalar>();
  if (!(std::max({abs(ax1), abs(ay1), abs(ax2), abs(ay2), abs(bx1), abs(by1), abs(bx2),
                  abs(by2)}) <= lim))
    return box_iou_scaled(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
  const Scalar iw = std::max(std::min(ax2, bx2) - std::max(ax1, bx1), Scalar(0));
  const Scalar ih = std::max(std::min(ay2, by2) - std::max(ay1, by1), Scalar(0));
  const Scalar inter = iw * ih;
  const Scalar uni = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter;
  return inter / std::max(uni, static_cast<Scalar>(kIouEps));
}

/// max |coordinate| over a box array (0 for no boxes), in the boxes' scalar type.
template <typename Derived>
typename Derived::Scalar max_abs_coordinate(const Eigen::DenseBase<Derived>& b) {
  using S = typename Derived::Scalar;
  return b.size() == 0 ? S(0) : static_cast<S>(b.derived().array().abs().maxCoeff());
}

/// A tile of candidate boxes in structure-of-arrays form.
template <typename Scalar>
struct BoxTile {
  static constexpr Index kSize = 64;
  using Vec = Eigen::Array<Scalar, kSize, 1>;
  Vec x1, y1, x2, y2, area;
  Index n = 0;
  Scalar amax = 0;  ///< max |coordinate| of the tile (decides the direct or the scaled IoU)

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
    amax = x1.abs().max(y1.abs()).max(x2.abs().max(y2.abs())).maxCoeff();
  }

  /// The slow path of iou_with, kept out of line so that the hot loop stays small.
#if defined(__GNUC__) || defined(__clang__)
  __attribute__((noinline))
#endif
  void
  iou_scaled_with(Scalar gx1, Scalar gy1, Scalar gx2, Scalar gy2, Vec& out) const {
    for (Index t = 0; t < kSize; ++t)
      out[t] = box_iou_scaled(x1[t], y1[t], x2[t], y2[t], gx1, gy1, gx2, gy2);
  }

  /// True if the direct formula is safe for every pair of this tile with a box whose largest
  /// |coordinate| is gmax (one comparison per tile and GT on the hot path).
  bool direct_with(Scalar gmax) const {
    const Scalar lim = iou_direct_limit<Scalar>();
    return amax <= lim && gmax <= lim;
  }

  /// IoU of every box of the tile with one box g, into `out` (kSize entries, first n valid;
  /// the padding gives 0).
  void iou_with(Scalar gx1, Scalar gy1, Scalar gx2, Scalar gy2, Vec& out) const {
    using std::abs;
    if (!direct_with(std::max({abs(gx1), abs(gy1), abs(gx2), abs(gy2)}))) {
      iou_scaled_with(gx1, gy1, gx2, gy2, out);
      return;
    }
    iou_direct_with(gx1, gy1, gx2, gy2, out);
  }

  /// iou_with by the direct formula; only when direct_with(max |g coordinate|) holds (callers
  /// check once per tile against the largest coordinate of all GTs, off the per-GT loop).
  void iou_direct_with(Scalar gx1, Scalar gy1, Scalar gx2, Scalar gy2, Vec& out) const {
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
  const Scalar gmax = max_abs_coordinate(gts);
  for (Index begin = 0; begin < n; begin += BoxTile<Scalar>::kSize) {
    const Index count = std::min(BoxTile<Scalar>::kSize, n - begin);
    tile.load(boxes, begin, count);
    const bool direct = tile.direct_with(gmax);  // once per tile, off the per-GT loop
    for (Index g = 0; g < g_count; ++g) {
      const Scalar gx1 = static_cast<Scalar>(gts.derived().coeff(g, 0));
      const Scalar gy1 = static_cast<Scalar>(gts.derived().coeff(g, 1));
      const Scalar gx2 = static_cast<Scalar>(gts.derived().coeff(g, 2));
      const Scalar gy2 = static_cast<Scalar>(gts.derived().coeff(g, 3));
      if (direct)
        tile.iou_direct_with(gx1, gy1, gx2, gy2, col);
      else
        tile.iou_with(gx1, gy1, gx2, gy2, col);
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
  auto& out = detail::writable(out_);
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
  auto& out = detail::writable(out_).derived();
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
    if (!ta.direct_with(tb.amax))  // huge boxes somewhere in the tile: see box_iou_scaled
      for (Index t = 0; t < count; ++t)
        r[t] = detail::box_iou(ta.x1[t], ta.y1[t], ta.x2[t], ta.y2[t], tb.x1[t], tb.y1[t], tb.x2[t],
                               tb.y2[t]);
    for (Index t = 0; t < count; ++t) out.coeffRef(begin + t) = static_cast<OutScalar>(r[t]);
  }
}

}  // namespace fgbg
