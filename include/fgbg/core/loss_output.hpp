/// @file loss_output.hpp
/// @brief Per-element and per-anchor losses as an extra output of a dense loss call, written in
///        the same pass as the value and the gradient.
///
/// @code
///   loss.value(x, labels, fgbg::anchor_losses(l));               // l: N, e.g. for OHEM
///   loss.value_and_grad(x, labels, grad, w, fgbg::element_losses(e));  // e: N × C
/// @endcode
///
/// The trailing argument comes last in a call (after the normaliser and the reduce buffer; see
/// core/loss_base.hpp). What is written is mmdetection's `reduction='none'`: the weighted,
/// unnormalised loss of each element,
///
///   element_losses(i, j) = Ω_ij · ℓ_ij      anchor_losses(i) = Σ_j Ω_ij · ℓ_ij
///
/// with Ω the call's weights (1 without), 0 for ignored anchors (label −1), and no normaliser:
/// the value of the call is Σ element_losses / A up to rounding (A the call's normaliser). A
/// softmax head has one loss per anchor, so it takes anchor_losses only. Element values are
/// formed in double and rounded once to the scalar type; an anchor's sum is accumulated in double
/// and rounded once (rows wider than 2048 classes: once per 2048 columns). Passing an output
/// changes neither the value nor the gradient, bit for bit.
///
/// Shapes: element_losses N × C (the logits' shape), anchor_losses a vector of N entries; a plain
/// array is resized, a view (Map, block) must have the shape. The output must have the loss's
/// scalar type and must not share memory with the logits, the gradient or the weights.
///
/// @throws std::invalid_argument for a wrong shape or shared memory, before anything is written;
///         a read-only output (a const Map, an expression) does not compile.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "checks.hpp"
#include "dense.hpp"
#include "errors.hpp"

namespace fgbg {

/// Which per-element or per-anchor loss outputs a loss can write (its Signature's `losses`).
enum class LossOutputs {
  none,    ///< neither
  anchor,  ///< anchor_losses only (softmax heads: one loss per anchor)
  both     ///< element_losses and anchor_losses (sigmoid heads)
};

/// An N × C array marked as the per-element loss output of a call; make one with
/// fgbg::element_losses(out).
template <typename D>
struct ElementLosses {
  Eigen::DenseBase<D>& out;
};

/// A vector of N entries marked as the per-anchor loss output of a call; make one with
/// fgbg::anchor_losses(out).
template <typename D>
struct AnchorLosses {
  Eigen::DenseBase<D>& out;
};

/// Marks `out` (N × C, writable) as the call's per-element losses Ω_ij ℓ_ij (see the file comment).
template <typename D>
ElementLosses<D> element_losses(const Eigen::DenseBase<D>& out) {
  static_assert(std::is_floating_point<typename D::Scalar>::value,
                "fgbg::element_losses: the output must be a floating-point array");
  return {detail::writable(out)};
}

/// Marks `out` (a vector of N entries, writable) as the call's per-anchor losses Σ_j Ω_ij ℓ_ij.
template <typename D>
AnchorLosses<D> anchor_losses(const Eigen::DenseBase<D>& out) {
  static_assert(std::is_floating_point<typename D::Scalar>::value,
                "fgbg::anchor_losses: the output must be a floating-point array");
  static_assert(D::IsVectorAtCompileTime,
                "fgbg::anchor_losses: the output must be a vector type (ArrayXf, a Map of one, a "
                "column block .col(k)); per-element losses go to fgbg::element_losses");
  return {detail::writable(out)};
}

namespace detail {

template <typename T>
struct IsElementLosses : std::false_type {};
template <typename D>
struct IsElementLosses<ElementLosses<D>> : std::true_type {};
template <typename T>
struct IsAnchorLosses : std::false_type {};
template <typename D>
struct IsAnchorLosses<AnchorLosses<D>> : std::true_type {};

/// The loss output of a call with its type erased (like the gradient's ErasedOutput), so the
/// drivers are compiled once whatever the caller passes. `kind` none: no output.
template <typename Scalar>
struct LossSink {
  enum class Kind { none, element, anchor };
  Kind kind = Kind::none;
  void* obj = nullptr;
  Index rows = 0, cols = 0;      ///< the output's current shape
  bool resizable = false;        ///< a plain array (resized by prepare), else a view
  MemView view;                  ///< its memory (for the aliasing checks)
  ErasedOutput<Scalar> element;  ///< kind == element
  /// kind == anchor: rows row0 .. row0 + n − 1 set to v (add: v added to them).
  void (*anchor_fn)(void*, Index row0, Index n, const double* v, bool add) = nullptr;
  void (*resize_fn)(void*, Index rows, Index cols) = nullptr;

  LossSink() = default;
  template <typename D>
  explicit LossSink(const ElementLosses<D>& e)
      : kind(Kind::element),
        obj(&e.out.derived()),
        rows(e.out.rows()),
        cols(e.out.cols()),
        resizable(std::is_base_of<Eigen::PlainObjectBase<D>, D>::value),
        view(MemView::of(e.out)),
        element(e.out),
        resize_fn(
            [](void* o, Index r, Index c) { prepare_output("", "", *static_cast<D*>(o), r, c); }) {}
  template <typename D>
  explicit LossSink(const AnchorLosses<D>& a)
      : kind(Kind::anchor),
        obj(&a.out.derived()),
        rows(a.out.size()),
        cols(1),
        resizable(std::is_base_of<Eigen::PlainObjectBase<D>, D>::value),
        view(MemView::of(a.out)),
        anchor_fn([](void* o, Index row0, Index n, const double* v, bool add) {
          D& d = *static_cast<D*>(o);
          for (Index r = 0; r < n; ++r) {
            const double old = add ? static_cast<double>(d.coeff(row0 + r)) : 0.0;
            d.coeffRef(row0 + r) = static_cast<Scalar>(old + v[r]);
          }
        }),
        resize_fn([](void* o, Index r, Index) {
          D& d = *static_cast<D*>(o);
          if constexpr (std::is_base_of<Eigen::PlainObjectBase<D>, D>::value)
            if (d.size() != r) d.resize(r);
        }) {}

  bool given() const { return kind != Kind::none; }

  /// Checks the shape for N × C logits (anchor: N entries) and that the output shares no memory
  /// with the views in `others` (the logits, the gradient, the weights, with their names). Writes
  /// nothing.
  void check(const char* where, Index n, Index c,
             std::initializer_list<std::pair<MemView, const char*>> others) const {
    if (kind == Kind::none) return;
    const char* name = kind == Kind::element ? "element_losses" : "anchor_losses";
    if (!resizable) {
      if (kind == Kind::element && (rows != n || cols != c))
        throw_invalid(where, name, " must be ", n, " x ", c, ", got ", rows, " x ", cols);
      if (kind == Kind::anchor && rows != n)
        throw_invalid(where, name, " must have ", n, " entries, got ", rows);
    }
    for (const auto& o : others)
      if (overlaps(view, o.first))
        throw_invalid(where, name, " must not share memory with the ", o.second);
  }

  /// Throws if the output shares memory with `v` (called `what` in the message). Writes nothing.
  void check_apart(const char* where, const MemView& v, const char* what) const {
    if (kind == Kind::none || !overlaps(view, v)) return;
    throw_invalid(where, kind == Kind::element ? "element_losses" : "anchor_losses",
                  " must not share memory with ", what);
  }

  /// Gives a plain array its shape (after every check).
  void prepare(Index n, Index c) {
    if (kind != Kind::none) resize_fn(obj, n, c);
  }

  /// Sets anchors row0 .. row0 + n − 1 to 0 (kind anchor).
  void zero_anchors(Index row0, Index n) const {
    static constexpr double kZeros[256] = {};
    for (Index r = 0; r < n; r += 256)
      anchor_fn(obj, row0 + r, std::min<Index>(256, n - r), kZeros, false);
  }

  /// Sets anchor `row` to v, rounded once to the scalar type (kind anchor).
  void set_anchor(Index row, double v) const { anchor_fn(obj, row, 1, &v, false); }
};

}  // namespace detail
}  // namespace fgbg
