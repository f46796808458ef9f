/// @file dense.hpp
/// @brief The dense per-element engine: cache-sized tiles, optional OpenMP threads, and an
///        ordered reduction whose result is bit-identical for every thread count.
///
/// An N × C input (any Eigen expression, row- or column-major) is cut into tiles of about
/// kTileElems elements (whole rows when C is small). A kernel sees one tile at a time as a
/// contiguous row-major block: row-major inputs with contiguous rows are read in place, anything
/// else is gathered into a stack buffer first; the gradient is written in place the same way.
/// Tiles are grouped into at most kMaxChunks chunks whose bounds depend only on (N, C); each chunk
/// sums its tiles in order into a double, and the chunk sums are added in order. Threads take
/// whole chunks, so the result does not depend on how many there are.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "config.hpp"

namespace fgbg {
namespace detail {

/// Elements per tile: 8 KiB of floats, small enough for L1 with the kernel's scratch buffers.
inline constexpr Index kTileElems = 2048;
/// Scratch buffers of kTileElems elements available to a kernel.
inline constexpr Index kScratchBuffers = 4;
/// Upper bound on the number of chunks of the ordered reduction.
inline constexpr Index kMaxChunks = 64;
/// Below this many elements the loop stays on one thread.
inline constexpr Index kParallelMinElems = 1 << 16;

/// A rectangle of the input: rows [row0, row0 + rows), columns [col0, col0 + cols).
struct Tile {
  Index row0, rows, col0, cols;
  Index size() const { return rows * cols; }
};

/// How an n × c array is cut into tiles. With `whole_rows` a tile always spans every column
/// (softmax rows); the caller then guarantees c ≤ kTileElems.
struct TileGrid {
  Index n, c, tile_rows, tile_cols, tiles_r, tiles_c;
  TileGrid(Index n_, Index c_) : n(n_), c(c_) {
    tile_cols = std::max<Index>(1, std::min(c, kTileElems));
    tile_rows = std::max<Index>(1, kTileElems / tile_cols);
    tiles_r = (n + tile_rows - 1) / tile_rows;
    tiles_c = c == 0 ? 0 : (c + tile_cols - 1) / tile_cols;
  }
  Index count() const { return tiles_r * tiles_c; }
  Tile tile(Index k) const {
    const Index tr = k / tiles_c, tc = k % tiles_c;
    const Index r0 = tr * tile_rows, c0 = tc * tile_cols;
    return {r0, std::min(tile_rows, n - r0), c0, std::min(tile_cols, c - c0)};
  }
};

/// Whether the memory of a `Derived` can be read or written as `Scalar` in place (same type and
/// direct access).
template <typename Derived, typename Scalar>
inline constexpr bool kInPlace = std::is_same<typename Derived::Scalar, Scalar>::value &&
                                 (Derived::Flags & Eigen::DirectAccessBit) != 0;

/// Pointer to tile `t` of `x` as contiguous row-major memory: in place when the layout allows,
/// else gathered into `buf` (converted to Scalar when `x` holds a half-precision type).
template <typename Derived, typename Scalar>
const Scalar* load_tile(const Eigen::DenseBase<Derived>& x, const Tile& t, Scalar* buf) {
  static_assert(kStorableAs<typename Derived::Scalar, Scalar>,
                "fgbg: an input tile must hold the loss's scalar type (or half precision for a "
                "float loss)");
  if constexpr (kInPlace<Derived, Scalar>) {
    const Derived& d = x.derived();
    if (d.innerStride() == 1) {
      if (Derived::IsRowMajor && (t.rows == 1 || d.outerStride() == t.cols))
        return d.data() + t.row0 * d.outerStride() + t.col0;
      if (!Derived::IsRowMajor && t.cols == 1) return d.data() + t.col0 * d.outerStride() + t.row0;
    }
  }
  Eigen::Map<RowArray<Scalar>>(buf, t.rows, t.cols) =
      x.derived().block(t.row0, t.col0, t.rows, t.cols).template cast<Scalar>();
  return buf;
}

/// Pointer where a kernel writes tile `t` of the output `g`: in place when the layout allows,
/// else `buf` (then store_tile copies it out).
template <typename Derived, typename Scalar>
Scalar* output_tile(Eigen::DenseBase<Derived>& g, const Tile& t, Scalar* buf) {
  if constexpr (kInPlace<Derived, Scalar> && bool(Derived::Flags & Eigen::LvalueBit)) {
    Derived& d = g.derived();
    if (d.innerStride() == 1) {
      if (Derived::IsRowMajor && (t.rows == 1 || d.outerStride() == t.cols))
        return d.data() + t.row0 * d.outerStride() + t.col0;
      if (!Derived::IsRowMajor && t.cols == 1) return d.data() + t.col0 * d.outerStride() + t.row0;
    }
  }
  return buf;
}

/// Copies `buf` into tile `t` of `g` when output_tile did not return a pointer into `g`
/// (rounding each value once to a half-precision `g`).
template <typename Derived, typename Scalar>
void store_tile(Eigen::DenseBase<Derived>& g, const Tile& t, const Scalar* written,
                const Scalar* buf) {
  static_assert(kStorableAs<typename Derived::Scalar, Scalar>,
                "fgbg: an output tile must hold the loss's scalar type (or half precision for a "
                "float loss)");
  if (written == buf)
    g.derived().block(t.row0, t.col0, t.rows, t.cols) =
        Eigen::Map<const RowArray<Scalar>>(buf, t.rows, t.cols)
            .template cast<typename Derived::Scalar>();
}

/// The logits of a call with their layout erased at the tile boundary: all a kernel needs is each
/// tile as contiguous row-major memory, so the driver code behind it is compiled once per loss
/// and scalar type instead of once per caller layout (row- or column-major array, Map, strided
/// Map, block, expression). One indirect call per tile (thousands of elements).
template <typename Scalar>
struct ErasedInput {
  const void* obj;
  Index n, c;
  const Scalar* (*load_fn)(const void*, const Tile&, Scalar*);
  template <typename XD>
  explicit ErasedInput(const Eigen::DenseBase<XD>& x)
      : obj(&x.derived()),
        n(x.rows()),
        c(x.cols()),
        load_fn([](const void* o, const Tile& t, Scalar* buf) {
          return load_tile(*static_cast<const XD*>(o), t, buf);
        }) {}
  Index rows() const { return n; }
  Index cols() const { return c; }
  Index size() const { return n * c; }
};

/// The gradient output of a call with its layout erased (see ErasedInput).
template <typename Scalar>
struct ErasedOutput {
  void* obj = nullptr;
  Scalar* (*out_fn)(void*, const Tile&, Scalar*) = nullptr;
  void (*store_fn)(void*, const Tile&, const Scalar*, const Scalar*) = nullptr;
  ErasedOutput() = default;  ///< no output (LossSink without per-element losses)
  template <typename GD>
  explicit ErasedOutput(Eigen::DenseBase<GD>& g)
      : obj(&g.derived()),
        out_fn([](void* o, const Tile& t, Scalar* buf) {
          return output_tile(*static_cast<GD*>(o), t, buf);
        }),
        store_fn([](void* o, const Tile& t, const Scalar* written, const Scalar* buf) {
          store_tile(*static_cast<GD*>(o), t, written, buf);
        }) {}
};

/// Tile `t` of erased logits (load_tile for ErasedInput).
template <typename Scalar>
const Scalar* load_tile(const ErasedInput<Scalar>& x, const Tile& t, Scalar* buf) {
  return x.load_fn(x.obj, t, buf);
}
/// output_tile for ErasedOutput.
template <typename Scalar>
Scalar* output_tile(ErasedOutput<Scalar>& g, const Tile& t, Scalar* buf) {
  return g.out_fn(g.obj, t, buf);
}
/// store_tile for ErasedOutput.
template <typename Scalar>
void store_tile(ErasedOutput<Scalar>& g, const Tile& t, const Scalar* written, const Scalar* buf) {
  g.store_fn(g.obj, t, written, buf);
}

/// The labels of a call with their type erased (see ErasedInput): `gather(row0, rows, out)`
/// copies labels row0 .. row0 + rows − 1 into `out` as Label (they are checked to lie in
/// −1..C first, so they fit).
struct ErasedLabels {
  const void* obj;
  void (*gather_fn)(const void*, Index, Index, Label*);
  template <typename LD>
  explicit ErasedLabels(const Eigen::DenseBase<LD>& labels)
      : obj(&labels.derived()), gather_fn([](const void* o, Index row0, Index rows, Label* out) {
          const LD& l = *static_cast<const LD*>(o);
          for (Index r = 0; r < rows; ++r) out[r] = static_cast<Label>(l.coeff(row0 + r));
        }) {}
  void gather(Index row0, Index rows, Label* out) const { gather_fn(obj, row0, rows, out); }
};

/// The one "nothing here" tag: an output that is not wanted (no gradient in a value-only call,
/// no rank) or an input that is not given (no groups, unit label weights).
struct None {};

/// Whether an argument of type T is given, i.e. is not the None tag.
template <typename T>
inline constexpr bool kGiven = !std::is_same<T, None>::value;

/// The caller's output `out` (a gradient, weights, ranks, scores) as a writable object. Outputs
/// are taken by const reference so that temporaries (a Map, a block) bind to them; this checks at
/// compile time that the object really is writable, with fgbg's message instead of Eigen's
/// THIS_EXPRESSION_IS_NOT_A_LVALUE deep inside a kernel.
template <typename D>
Eigen::DenseBase<D>& writable(const Eigen::DenseBase<D>& out) {
  static_assert(bool(D::Flags & Eigen::LvalueBit),
                "fgbg: an output (gradient, weights, ranks, scores) must be writable: an Array, "
                "a Map over mutable memory or a block of one, not a const Map or an expression");
  return const_cast<Eigen::DenseBase<D>&>(out);
}

/// Cuts the tiles of `grid` into at most kMaxChunks chunks whose bounds depend only on the shape,
/// and runs `chunk(k, first_tile, last_tile)` for each, on OpenMP threads when the input has at
/// least kParallelMinElems elements (`size`). The one chunked loop of the engine. A chunk holds
/// whole rows of tiles, so the column tiles of a row wider than kTileElems run in one chunk, in
/// order (a per-row result, e.g. a per-anchor loss, is then summed over them without a race).
template <typename ChunkFn>
Index for_each_chunk(const TileGrid& grid, Index size, ChunkFn&& chunk) {
  if (grid.count() == 0) return 0;
  const Index rows = grid.tiles_r, per_row = grid.tiles_c;
  const Index chunks = std::min(rows, kMaxChunks);
  const bool parallel = chunks > 1 && size >= kParallelMinElems;
  (void)parallel;
#if FGBG_OPENMP_ENABLED
#pragma omp parallel for schedule(static) if (parallel)
#endif
  for (Index k = 0; k < chunks; ++k)
    chunk(k, k * rows / chunks * per_row, (k + 1) * rows / chunks * per_row);
  return chunks;
}

/// Runs `kernel(tile, x, g, scratch, acc)` over every tile of `x` (an Eigen object or an
/// ErasedInput; and of `grad`, an Eigen object or an ErasedOutput, unless it is None, in which
/// case `g` is nullptr). Each chunk (for_each_chunk) folds its tiles, in order, into its own
/// `Acc` (copied from `init`); the chunk results are then merged in chunk order with
/// `merge(total, chunk)`. `scratch` holds kScratchBuffers × kTileElems elements. The kernel must
/// not throw. Chunk bounds depend only on the shape, so the result is the same for any number of
/// threads.
template <typename Scalar, typename Acc, typename X, typename GradOut, typename Kernel,
          typename Merge>
Acc tiled_reduce(const X& x, GradOut& grad, const Acc& init, Kernel&& kernel, Merge&& merge) {
  const TileGrid grid(x.rows(), x.cols());
  Acc total = init;
  Acc partial[kMaxChunks];
  const Index chunks = for_each_chunk(grid, x.size(), [&](Index k, Index first, Index last) {
    alignas(64) Scalar xbuf[kTileElems];
    alignas(64) Scalar gbuf[kTileElems];
    alignas(64) Scalar scratch[kScratchBuffers * kTileElems];
    Acc acc = init;
    for (Index i = first; i < last; ++i) {
      const Tile t = grid.tile(i);
      const Scalar* xt = load_tile(x, t, xbuf);
      if constexpr (!kGiven<GradOut>) {
        kernel(t, xt, static_cast<Scalar*>(nullptr), scratch, acc);
      } else {
        Scalar* gt = output_tile(grad, t, gbuf);
        kernel(t, xt, gt, scratch, acc);
        store_tile(grad, t, gt, gbuf);
      }
    }
    partial[k] = acc;
  });
  for (Index k = 0; k < chunks; ++k) merge(total, partial[k]);
  return total;
}

/// The gradient-only traversal: runs `kernel(tile, x, g, scratch)` over every tile of `x`, which
/// writes that tile of `grad` (N × C, already of the right shape) and returns nothing; tiles are
/// independent and run in the chunks of tiled_reduce. The kernel always writes into an aligned
/// stack buffer that is then copied out, so its bits do not depend on the caller's alignment
/// (Eigen peels an unaligned head with scalar code, whose exp may differ from the packet exp in
/// the last bit), and `grad` may be the logits themselves (each tile is read before it is
/// written). The kernel must not throw.
template <typename Scalar, typename XD, typename GD, typename Kernel>
void tiled_write(const Eigen::DenseBase<XD>& x, Eigen::DenseBase<GD>& grad, Kernel&& kernel) {
  const TileGrid grid(x.rows(), x.cols());
  for_each_chunk(grid, x.size(), [&](Index, Index first, Index last) {
    alignas(64) Scalar xbuf[kTileElems];
    alignas(64) Scalar gbuf[kTileElems];
    alignas(64) Scalar scratch[kScratchBuffers * kTileElems];
    for (Index i = first; i < last; ++i) {
      const Tile t = grid.tile(i);
      kernel(t, load_tile(x, t, xbuf), gbuf, scratch);
      store_tile(grad, t, gbuf, gbuf);
    }
  });
}

/// tiled_reduce for the common case: `kernel(tile, x, g, scratch) -> double`, summed in order.
template <typename Scalar, typename X, typename GradOut, typename Kernel>
double tiled_sum(const X& x, GradOut& grad, Kernel&& kernel) {
  return tiled_reduce<Scalar>(
      x, grad, 0.0,
      [&](const Tile& t, const Scalar* xt, Scalar* gt, Scalar* scratch, double& acc) {
        acc += kernel(t, xt, gt, scratch);
      },
      [](double& total, double part) { total += part; });
}

/// a · w / A in double, exact to a few ulps whenever the result is a normal double, whatever the
/// intermediate products: the plain expression first, and when it overflows or leaves the normal
/// range (rare) the same product on the frexp mantissas with the exponents added separately.
inline double scale_ratio(double a, double w, double norm) {
  const double p = a * w / norm;
  const double ap = std::abs(p);
  if (ap <= std::numeric_limits<double>::max() &&
      (ap >= std::numeric_limits<double>::min() || a == 0.0 || w == 0.0))
    return p;
  int ea = 0, ew = 0, en = 0;
  const double ma = std::frexp(a, &ea), mw = std::frexp(w, &ew), mn = std::frexp(norm, &en);
  return std::ldexp(ma * mw / mn, ea + ew - en);
}

/// The factor w / A by which a gradient block is multiplied, with the path to use: `fast` when
/// w / A is 0 or a normal number of the scalar type (then g · factor, one rounding more than the
/// exact g·w/A); otherwise every element goes through apply(), which multiplies g by the
/// mantissa of w / A in double and adds its exponent with ldexp, so nothing overflows or
/// underflows before the final rounding. Computed once per row or per call, never per element.
template <typename Scalar>
struct GradFactor {
  Scalar factor = Scalar(1);
  bool fast = true;
  double mant = 1.0;  ///< w / A = mant · 2^exp on the slow path
  int exp = 0;
  GradFactor() = default;
  GradFactor(double w, double norm) : GradFactor(w, norm, 1.0, 1.0) {}
  /// The factor (w · a) / (norm · b), with the same choice of path; no product is formed before
  /// the mantissas are split off on the slow path, so w · a beyond DBL_MAX (a weight near DBL_MAX
  /// times a softmax row's gradient scale) still gives the exact, finite gradient.
  GradFactor(double w, double norm, double a, double b) {
    constexpr double kMin = std::numeric_limits<double>::min();
    constexpr double kMax = std::numeric_limits<double>::max();
    // A zero weight or scale gives a zero factor even when w / norm overflows (inf · 0 = NaN).
    const double t = w / norm, u = a / b, f = w == 0.0 || a == 0.0 ? 0.0 : t * u;
    const double af = std::abs(f);
    auto normal = [](double v) { return std::abs(v) >= kMin && std::abs(v) <= kMax; };
    fast =
        w == 0.0 || a == 0.0 ||
        (normal(t) && normal(u) && af >= static_cast<double>(std::numeric_limits<Scalar>::min()) &&
         af <= static_cast<double>(std::numeric_limits<Scalar>::max()));
    factor = fast ? static_cast<Scalar>(f) : Scalar(0);
    if (!fast) {
      int ew = 0, en = 0, ea = 0, eb = 0;
      const double mw = std::frexp(w, &ew), mn = std::frexp(norm, &en);
      const double ma = std::frexp(a, &ea), mb = std::frexp(b, &eb);
      mant = (mw * ma) / (mn * mb);
      exp = ew + ea - en - eb;
    }
  }
  /// g · w / A for one element on the slow path.
  Scalar apply(Scalar g) const {
    return static_cast<Scalar>(std::ldexp(static_cast<double>(g) * mant, exp));
  }
  /// g · w / A for one element, either path.
  Scalar operator()(Scalar g) const { return fast ? g * factor : apply(g); }
};

/// Multiplies n contiguous gradient values by w / A (see GradFactor). A zero weight gives exact
/// zeros, also where an element gradient was not representable (0 · inf would be NaN).
template <typename Scalar>
void scale_gradient(Scalar* g, Index n, const GradFactor<Scalar>& f) {
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  if (f.fast) {
    if (f.factor == Scalar(0))
      Eigen::Map<Vec>(g, n).setZero();
    else if (f.factor != Scalar(1))
      Eigen::Map<Vec>(g, n) *= f.factor;
  } else {
    for (Index i = 0; i < n; ++i) g[i] = f.apply(g[i]);
  }
}

/// dst = src · w / A over n contiguous values (see GradFactor).
template <typename Scalar>
void scale_into(Scalar* dst, const Scalar* src, Index n, const GradFactor<Scalar>& f) {
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  if (f.fast) {
    Eigen::Map<Vec>(dst, n) = Eigen::Map<const Vec>(src, n) * f.factor;
  } else {
    for (Index i = 0; i < n; ++i) dst[i] = f.apply(src[i]);
  }
}

/// v · w / A for per-element weights, one multiplication chain per element: float values go
/// through double (v·w is exact there, and nothing overflows double), double values use the
/// precomputed 1/A when w/A is a normal double and scale_ratio otherwise. A zero weight gives 0,
/// also for an element term that was not representable (0 · inf would be NaN): a weight of 0
/// masks the element, as it does in every reference for finite terms.
struct ElementScale {
  double norm, inv;
  explicit ElementScale(double norm_) : norm(norm_), inv(1.0 / norm_) {}
  template <typename Scalar>
  double operator()(Scalar v, double w) const {
    if (w == 0.0) return 0.0;
    if constexpr (std::is_same<Scalar, float>::value) {
      return static_cast<double>(v) * w * inv;
    } else {
      const double f = w * inv;
      if (f >= std::numeric_limits<double>::min() && f <= std::numeric_limits<double>::max())
        return v * f;
      return scale_ratio(v, w, norm);
    }
  }
};

/// Σ_i v_i · w / A over n contiguous finite values v_i ≥ 0 (element losses), accumulated in
/// double: runs of 256 are summed in the scalar type (vectorised; each SIMD lane adds at most 64
/// values), and a run whose sum overflows is summed again element by element in double (float)
/// or in double scaled by 2^-64 (double), a branch taken once per run and only when the scalar
/// sum is not finite. Every run is multiplied by w / A through scale_ratio before it is added,
/// (through `scale`, an ElementScale for A), so the partial sums never exceed the result: the total
/// is finite whenever Σ v_i w / A is, for any w ≥ 0 and A > 0 (a plain `cast<double>().sum()` is
/// not vectorised by Eigen and cost 1.3 ns per element here). With `unnormalised`, the same run
/// sums also add Σ_i v_i · w (A = 1) to it, so a caller wanting both sums the runs once.
template <typename Scalar>
double weighted_sum(const Scalar* v, Index n, double w, const ElementScale& scale,
                    double* unnormalised = nullptr) {
  using Vec = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  constexpr Index kRun = 256;
  const ElementScale unit(1.0);
  double total = 0.0;
  for (Index i = 0; i < n; i += kRun) {
    const Index len = std::min(kRun, n - i);
    const Scalar s = Eigen::Map<const Vec>(v + i, len).sum();
    double run = static_cast<double>(s), up = 1.0;  // the run's sum is run · up
    if (!std::isfinite(s)) {
      run = 0.0;
      if constexpr (std::is_same<Scalar, float>::value) {
        for (Index j = 0; j < len; ++j) run += static_cast<double>(v[i + j]);
      } else {
        for (Index j = 0; j < len; ++j) run += v[i + j] * 0x1p-64;
        up = 0x1p64;
      }
    }
    total += scale(run, w) * up;
    if (unnormalised) *unnormalised += unit(run, w) * up;
  }
  return total;
}

/// Σ_i v_i / A (weighted_sum with w = 1).
template <typename Scalar>
double sum_normalised(const Scalar* v, Index n, const ElementScale& scale) {
  return weighted_sum(v, n, 1.0, scale);
}

/// Σ_i v_i accumulated in double (weighted_sum with w = A = 1; kept for callers outside the
/// dense drivers). Finite unless the exact sum overflows double.
template <typename Scalar>
double sum_as_double(const Scalar* v, Index n) {
  return weighted_sum(v, n, 1.0, ElementScale(1.0));
}

}  // namespace detail
}  // namespace fgbg
