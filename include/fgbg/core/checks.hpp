/// @file checks.hpp
/// @brief Input checks shared by every method: shapes, label ranges and finiteness.
///
/// Every check runs before a method writes an output or touches its state, so a failed call
/// changes nothing (docs/conventions.md). Label and shape checks are O(1) or one O(N) pass over the
/// labels; the finiteness check is one vectorised O(N·C) read of the logits.
#pragma once

#include "requires_cxx17.hpp"

#include <cmath>
#include <utility>

#include "config.hpp"
#include "dense.hpp"
#include "errors.hpp"

namespace fgbg {

/// Counts gathered by the one pass that validates the labels.
struct LabelStats {
  Index anchors = 0;     ///< N
  Index valid = 0;       ///< anchors whose label is not -1
  Index positives = 0;   ///< anchors with a foreground label 1..C
  Index background = 0;  ///< anchors with label 0
  /// Σ of the soft targets of the positive anchors (losses with one: QFL, VFL, soft-target BCE;
  /// set by their checks), 0 otherwise.
  double target_sum = 0.0;
  Index ignored() const { return anchors - valid; }
};

namespace detail {

/// Throws unless `rows x cols` equals the expected shape.
inline void check_shape(const char* where, const char* arg, Index rows, Index cols, Index want_rows,
                        Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    throw_invalid(where, arg, " must be ", want_rows, " x ", want_cols, ", got ", rows, " x ",
                  cols);
}

/// Throws unless `v` is a vector (one row or one column) of length `n`.
template <typename Derived>
void check_vector(const char* where, const char* arg, const Eigen::DenseBase<Derived>& v, Index n) {
  const bool is_vector = v.cols() == 1 || v.rows() == 1 || v.size() == 0;
  if (!is_vector || v.size() != n)
    throw_invalid(where, arg, " must be a vector of ", n, " entries, got ", v.rows(), " x ",
                  v.cols());
}

/// Validates labels against the convention -1 / 0 / 1..C and counts them.
/// @throws std::invalid_argument for a wrong length or a label outside -1..C.
template <typename Derived>
LabelStats check_labels(const char* where, const Eigen::DenseBase<Derived>& labels, Index n,
                        Index num_classes) {
  static_assert(std::is_integral<typename Derived::Scalar>::value,
                "fgbg: labels must be an integer array (int32: -1 ignore, 0 background, 1..C)");
  check_vector(where, "labels", labels, n);
  LabelStats s;
  s.anchors = n;
  for (Index i = 0; i < n; ++i) {
    const auto l = labels.derived().coeff(i);
    if (l < -1 || l > num_classes)
      throw_invalid(where, "labels(", i, ") = ", static_cast<long long>(l), " is outside -1..",
                    num_classes, " (-1 ignore, 0 background, 1..C class)");
    s.valid += (l != -1);
    s.positives += (l > 0);
    s.background += (l == 0);
  }
  return s;
}

/// Throws `std::domain_error` naming the first (row-major order) non-finite element of `x`.
/// One vectorised pass over the tiles of the dense engine (threaded like the losses, so it does
/// not become the serial part of a threaded call): x·0 is 0 for every finite x and NaN otherwise.
template <typename Derived>
void check_finite(const char* where, const char* arg, const Eigen::DenseBase<Derived>& x) {
  using Scalar = ComputeOf<typename Derived::Scalar>;  // half precision: checked in float
  if (x.size() == 0) return;
  None none;
  const bool finite = tiled_reduce<Scalar>(
      x, none, true,
      [](const Tile& t, const Scalar* xt, Scalar*, Scalar*, bool& ok) {
        using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
        ok = ok && (Eigen::Map<const Vec>(xt, t.size()) * Scalar(0)).sum() == Scalar(0);
      },
      [](bool& all, bool part) { all = all && part; });
  if (finite) return;
  for (Index r = 0; r < x.rows(); ++r)
    for (Index c = 0; c < x.cols(); ++c) {
      const Scalar v = static_cast<Scalar>(x.derived().coeff(r, c));
      if (!std::isfinite(v)) throw_non_finite(where, arg, r, c, static_cast<double>(v));
    }
}

/// Makes `out` the shape `rows x cols`: plain arrays are resized (allocating only when the
/// size changes), views (Map, blocks) must already have the shape.
template <typename Derived>
void prepare_output(const char* where, const char* arg, const Eigen::DenseBase<Derived>& out_,
                    Index rows, Index cols) {
  auto& out = const_cast<Eigen::DenseBase<Derived>&>(out_);
  if (out.rows() == rows && out.cols() == cols) return;
  if constexpr (std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value) {
    out.derived().resize(rows, cols);
  } else {
    throw_invalid(where, arg, " must be ", rows, " x ", cols, ", got ", out.rows(), " x ",
                  out.cols());
  }
}

/// Checks the shape of an output without touching it (see prepare_output).
template <typename Derived>
void check_output(const char* where, const char* arg, const Eigen::DenseBase<Derived>& out,
                  Index rows, Index cols) {
  if (out.rows() == rows && out.cols() == cols) return;
  if constexpr (!std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value)
    throw_invalid(where, arg, " must be ", rows, " x ", cols, ", got ", out.rows(), " x ",
                  out.cols());
}

/// The memory of an array view, in bytes: `outer` lines of `inner` elements of `elem` bytes,
/// element (o, i) at p + o·outer_stride + i·inner_stride. Empty (p == nullptr) for an object
/// without direct access (an expression: nothing to alias) or without elements. The one
/// description of memory behind every aliasing check (gradients, weights, loss outputs).
struct MemView {
  const char* p = nullptr;
  Index outer = 0, inner = 0, outer_stride = 0, inner_stride = 0, elem = 0;

  /// The view of an Eigen object.
  template <typename D>
  static MemView of(const Eigen::DenseBase<D>& a) {
    if constexpr (bool(D::Flags & Eigen::DirectAccessBit)) {
      const D& d = a.derived();
      const Index e = static_cast<Index>(sizeof(typename D::Scalar));
      return strided(d.data(), D::IsRowMajor ? d.rows() : d.cols(),
                     D::IsRowMajor ? d.cols() : d.rows(), d.outerStride() * e, d.innerStride() * e,
                     e);
    } else {
      (void)a;
      return {};
    }
  }
  /// `outer` × `inner` elements with the given strides (bytes).
  static MemView strided(const void* p, Index outer, Index inner, Index outer_stride,
                         Index inner_stride, Index elem) {
    if (!p || outer == 0 || inner == 0) return {};
    return {static_cast<const char*>(p), outer, inner, outer_stride, inner_stride, elem};
  }
  bool empty() const { return p == nullptr; }
  /// One past the last byte.
  const char* end() const {
    return p + (outer - 1) * outer_stride + (inner - 1) * inner_stride + elem;
  }
};

/// Whether two views share a byte. Exact when both are lines of contiguous elements of the same
/// size with the same line stride (e.g. disjoint column blocks of one row-major buffer do not
/// overlap, whatever their orientation); otherwise conservative (the address ranges meet).
inline bool overlaps(const MemView& a, const MemView& b) {
  if (a.empty() || b.empty() || !(a.p < b.end() && b.p < a.end())) return false;
  const Index stride = a.outer_stride;
  const bool exact = a.elem == b.elem && a.inner_stride == a.elem && b.inner_stride == b.elem &&
                     b.outer_stride == stride && stride >= a.inner * a.elem &&
                     stride >= b.inner * b.elem;
  if (!exact) return true;
  // b's byte at line o, offset i is a's at line d_outer + o, offset d_inner + i, wrapping into
  // the next line when d_inner + i ≥ stride.
  const Index d = static_cast<Index>(b.p - a.p);
  Index d_outer = d / stride, d_inner = d % stride;
  if (d_inner < 0) {
    d_inner += stride;
    --d_outer;
  }
  auto lines_meet = [&](Index first) { return first < a.outer && first + b.outer > 0; };
  const bool direct = lines_meet(d_outer) && d_inner < a.inner * a.elem;
  const bool wrapped = d_inner + b.inner * b.elem > stride && lines_meet(d_outer + 1);
  return direct || wrapped;
}

/// Throws if the output `out` shares memory with the input `in` (computing a gradient in place
/// over the logits would read overwritten values); see overlaps() for when the test is exact.
/// Only objects with direct access can alias.
template <typename DIn, typename DOut>
void check_no_alias(const char* where, const Eigen::DenseBase<DIn>& in,
                    const Eigen::DenseBase<DOut>& out, const char* in_name = "logits",
                    const char* out_name = "grad") {
  if (overlaps(MemView::of(in), MemView::of(out)))
    throw_invalid(where, out_name, " must not share memory with the ", in_name);
}

/// Validates a per-anchor group index (e.g. the image of each anchor) for the per-group
/// rankings: an integer vector of n entries, non-decreasing, so that every group is one run of
/// consecutive anchors (the image-major layout of a batch).
template <typename GrD>
void check_groups(const char* where, const Eigen::DenseBase<GrD>& groups, Index n) {
  static_assert(std::is_integral<typename GrD::Scalar>::value,
                "fgbg: groups must be an integer array (one group id per anchor)");
  check_vector(where, "groups", groups, n);
  for (Index a = 1; a < n; ++a)
    if (groups.derived().coeff(a) < groups.derived().coeff(a - 1))
      throw_invalid(where, "groups must be non-decreasing (each group one run of consecutive ",
                    "anchors), but groups(", a,
                    ") = ", static_cast<long long>(groups.derived().coeff(a)), " < groups(", a - 1,
                    ") = ", static_cast<long long>(groups.derived().coeff(a - 1)));
}

/// Validates a per-anchor side input read only at the positive anchors (label ≥ 1): a vector of
/// labels.size() entries whose positive entries are finite (else std::domain_error) and in
/// [lo, hi] (else std::invalid_argument "<arg>(i) = v of a positive anchor must be in <range>").
/// The other entries are never read. Quality targets of QFL/VFL, IoUs of Rank & Sort and
/// localisation errors of aLRP use it.
template <typename TD, typename LD>
void check_positive_values(const char* where, const char* arg, const Eigen::DenseBase<TD>& t,
                           const Eigen::DenseBase<LD>& labels, double lo, double hi,
                           const char* range) {
  static_assert(std::is_floating_point<typename TD::Scalar>::value,
                "fgbg: a side input (quality, IoU, localisation error) must hold float or double");
  check_vector(where, arg, t, labels.size());
  for (Index a = 0; a < labels.size(); ++a) {
    if (labels.derived().coeff(a) <= 0) continue;
    const double v = static_cast<double>(t.derived().coeff(a));
    if (!std::isfinite(v)) throw_non_finite(where, arg, a, 0, v);
    if (v < lo || v > hi)
      throw_invalid(where, arg, "(", a, ") = ", v, " of a positive anchor must be in ", range);
  }
}

}  // namespace detail
}  // namespace fgbg
