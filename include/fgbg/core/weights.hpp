/// @file weights.hpp
/// @brief Ω, the optional sample weights of the survey's Eq. (1): none, one per anchor (N) or one
///        per element (N × C). Samplers produce them (hard_sampling/), losses consume them.
///
/// A Weights is a non-owning strided view over any Eigen object with direct access (Array,
/// Matrix, Map, Block; row- or column-major), so a framework's weight tensor is used in place.
/// Weights must be finite and ≥ 0; they are constants for the gradient. A weight multiplies the
/// element's loss and gradient; ignored anchors (label -1) stay at zero whatever their weight.
#pragma once

#include "requires_cxx17.hpp"

#include <cmath>
#include <type_traits>

#include "checks.hpp"

namespace fgbg {

/// Non-owning view of optional per-anchor or per-element weights; see the file comment.
template <typename Scalar>
class Weights {
 public:
  enum class Kind { none, per_anchor, per_element };

  /// No weights: every Ω_i = 1.
  Weights() = default;

  /// Views `w`: a vector of N entries (per anchor) or an N × C array (per element). The kind is
  /// decided when a loss binds it to its logits (an N × 1 array with C = 1 is both, and means
  /// the same either way).
  template <typename Derived>
  Weights(const Eigen::DenseBase<Derived>& w)  // NOLINT(google-explicit-constructor): a view
      : data_(w.derived().data()), rows_(w.rows()), cols_(w.cols()), given_(true) {
    static_assert(std::is_same<typename Derived::Scalar, Scalar>::value,
                  "fgbg::Weights: the weights must have the loss's scalar type");
    static_assert(bool(Derived::Flags & Eigen::DirectAccessBit),
                  "fgbg::Weights: weights must be an array, matrix, Map or block with direct "
                  "access; evaluate an expression into an array first");
    if (Derived::IsRowMajor) {
      row_stride_ = w.derived().outerStride();
      col_stride_ = w.derived().innerStride();
    } else {
      row_stride_ = w.derived().innerStride();
      col_stride_ = w.derived().outerStride();
    }
  }

  Kind kind() const { return kind_; }
  bool given() const { return given_; }

  /// Decides the kind for logits of shape n × c and validates shape and values.
  /// @throws std::invalid_argument for a wrong shape, a negative weight;
  ///         std::domain_error for a non-finite weight.
  void bind(const char* where, Index n, Index c) {
    kind_ = Kind::none;
    if (!given_) return;
    if (rows_ == n && cols_ == c) {
      kind_ = Kind::per_element;
    } else if ((cols_ == 1 && rows_ == n) || (rows_ == 1 && cols_ == n)) {
      kind_ = Kind::per_anchor;
      if (rows_ == 1) row_stride_ = col_stride_;
    } else {
      detail::throw_invalid(where, "weights must be a vector of ", n, " entries or ", n, " x ", c,
                            ", got ", rows_, " x ", cols_);
    }
    const Index nr = kind_ == Kind::per_anchor ? n : rows_;
    const Index nc = kind_ == Kind::per_anchor ? 1 : cols_;
    for (Index r = 0; r < nr; ++r)
      for (Index k = 0; k < nc; ++k) {
        const Scalar v = at(r, k);
        if (!std::isfinite(v)) detail::throw_non_finite(where, "weights", r, k, double(v));
        if (v < Scalar(0))
          detail::throw_invalid(where, "weights(", r, ", ", k, ") = ", v, " is negative");
      }
  }

  /// The memory of the viewed weights (empty when none), with the smaller stride inner.
  detail::MemView view() const {
    if (!given_) return {};
    const Index e = static_cast<Index>(sizeof(Scalar));
    return row_stride_ < col_stride_
               ? detail::MemView::strided(data_, cols_, rows_, col_stride_ * e, row_stride_ * e, e)
               : detail::MemView::strided(data_, rows_, cols_, row_stride_ * e, col_stride_ * e, e);
  }

  /// Throws if the viewed weights share memory with `out` (the gradient): the drivers read the
  /// weights after writing gradient tiles (detail::overlaps).
  template <typename Derived>
  void check_no_alias(const char* where, const Eigen::DenseBase<Derived>& out) const {
    if (detail::overlaps(view(), detail::MemView::of(out)))
      detail::throw_invalid(where, "weights must not share memory with grad");
  }

  /// Weight of anchor r (per-anchor kind).
  Scalar anchor(Index r) const { return data_[r * row_stride_]; }
  /// Weight of element (r, c) (per-element kind).
  Scalar at(Index r, Index c) const { return data_[r * row_stride_ + c * col_stride_]; }
  /// Stride between consecutive columns of one row (1 for row-major contiguous weights).
  Index col_stride() const { return col_stride_; }

 private:
  const Scalar* data_ = nullptr;
  Index rows_ = 0, cols_ = 0, row_stride_ = 0, col_stride_ = 0;
  bool given_ = false;
  Kind kind_ = Kind::none;
};

}  // namespace fgbg
