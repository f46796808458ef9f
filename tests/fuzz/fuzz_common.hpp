// Shared decoding, layout and checking code of the fgbg fuzz targets (tests/fuzz/fuzz_*.cpp).
//
// Every target implements LLVMFuzzerTestOneInput over an `In` reader: the bytes decide the
// method, the scalar type, the shapes, every hyper-parameter (raw bit patterns over the full type
// range, or a table of edge values), the labels, the logits and the layouts. The promise checked
// (docs/conventions.md): only std::invalid_argument / std::domain_error are thrown; a throw leaves
// outputs and state as they were; on success the value and gradient are finite whenever the exact
// result is (long-double oracle where one exists), value() equals value_and_grad(), and the bits
// do not depend on the layout of the inputs and outputs. A broken promise prints what broke and
// aborts, so libFuzzer records the input and the replay test fails.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace fz {

using Index = Eigen::Index;
template <typename S>
using RowA = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename S>
using ColA = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using Labels = Eigen::Array<std::int32_t, Eigen::Dynamic, 1>;

/// The decoded case, for the violation report (targets append with note()).
inline std::string& context() {
  static std::string s;
  return s;
}
template <typename T>
void note(const char* name, const T& v) {
  char buf[64];
  if constexpr (std::is_floating_point<T>::value)
    std::snprintf(buf, sizeof buf, "%.17Lg", static_cast<long double>(v));
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  context() += std::string(name) + "=" + buf + " ";
}
template <typename A>
void note_array(const char* name, const A& a) {
  context() += std::string(name) + "=[";
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%s%.9Lg", j ? " " : "",
                    static_cast<long double>(a.coeff(i, j)));
      context() += buf;
    }
    context() += i + 1 < a.rows() ? "; " : "";
  }
  context() += "] ";
}

[[noreturn]] inline void fail(const char* family, const std::string& what) {
  std::fprintf(stderr, "fgbg fuzz violation [%s]: %s\n  case: %s\n", family, what.c_str(),
               context().c_str());
  std::fflush(stderr);
  std::abort();
}
#define FZ_CHECK(cond, family, what)                                     \
  do {                                                                   \
    if (!(cond)) ::fz::fail(family, std::string(what) + " (" #cond ")"); \
  } while (0)

/// Byte reader: past the end every read is 0, so every input decodes to something.
class In {
 public:
  In(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  std::uint8_t u8() { return i_ < n_ ? p_[i_++] : 0; }
  std::uint64_t bits(int bytes) {
    std::uint64_t v = 0;
    for (int b = 0; b < bytes; ++b) v |= static_cast<std::uint64_t>(u8()) << (8 * b);
    return v;
  }
  bool flag() { return u8() & 1; }
  /// 0..max inclusive (max < 256).
  Index small(Index max) { return static_cast<Index>(u8() % (max + 1)); }

  /// A scalar over the full range: raw bits, an edge value, or a moderate value.
  template <typename S>
  S any() {
    const std::uint8_t sel = u8();
    if (sel < 64) return raw<S>();
    if (sel < 160) return edge<S>(sel);
    return moderate<S>();
  }
  /// Mostly moderate values (logits, weights), sometimes edges or raw bits.
  template <typename S>
  S mostly_moderate() {
    const std::uint8_t sel = u8();
    if (sel < 16) return raw<S>();
    if (sel < 64) return edge<S>(sel);
    return moderate<S>();
  }
  template <typename S>
  S raw() {
    if constexpr (std::is_same<S, float>::value) {
      const auto b = static_cast<std::uint32_t>(bits(4));
      float f;
      std::memcpy(&f, &b, 4);
      return f;
    } else {
      const std::uint64_t b = bits(8);
      double d;
      std::memcpy(&d, &b, 8);
      return d;
    }
  }
  template <typename S>
  S edge(std::uint8_t sel) {
    using L = std::numeric_limits<S>;
    const S table[] = {S(0),
                       S(-0.0),
                       S(1),
                       S(-1),
                       S(0.5),
                       S(2),
                       L::denorm_min(),
                       L::min(),
                       -L::min(),
                       L::max(),
                       -L::max(),
                       L::infinity(),
                       -L::infinity(),
                       L::quiet_NaN(),
                       L::epsilon(),
                       L::max() / 4,
                       -L::max() / 4,
                       S(17),
                       S(-17),
                       S(100),
                       S(-100),
                       S(1e-15),
                       S(1e4),
                       S(-1e4),
                       S(30),
                       S(-30),
                       S(0.25),
                       S(0.75),
                       S(1e30),
                       S(-1e30),
                       S(5),
                       S(1e-37),
                       S(0.999),
                       S(88.7),
                       S(-88.7),
                       S(710),
                       S(-710),
                       S(1.0000001),
                       S(3)};
    (void)sel;
    return table[u8() % (sizeof(table) / sizeof(table[0]))];
  }
  template <typename S>
  S moderate() {
    const auto b = static_cast<std::int16_t>(bits(2));
    return static_cast<S>(b) / S(2048);  // about ±16 in steps of 1/2048
  }
  /// int64 over its full range: raw, edges, or small.
  std::int64_t i64() {
    const std::uint8_t sel = u8();
    if (sel < 48) return static_cast<std::int64_t>(bits(8));
    if (sel < 128) {
      const std::int64_t table[] = {0,
                                    1,
                                    -1,
                                    2,
                                    std::numeric_limits<std::int64_t>::max(),
                                    std::numeric_limits<std::int64_t>::min(),
                                    std::int64_t(1) << 61,
                                    std::int64_t(1) << 62,
                                    std::int64_t(1) << 40,
                                    std::int64_t(1) << 31,
                                    std::numeric_limits<std::int32_t>::max(),
                                    std::numeric_limits<std::int32_t>::min(),
                                    512,
                                    256,
                                    257,
                                    -2};
      return table[u8() % 16];
    }
    return static_cast<std::int64_t>(u8() % 40);
  }
  /// int32 label-ish value around 0..c, sometimes out of range.
  std::int32_t label(Index c) {
    const std::uint8_t sel = u8();
    if (sel < 8) {
      const std::int32_t t[] = {-2, std::numeric_limits<std::int32_t>::min(),
                                std::numeric_limits<std::int32_t>::max(), static_cast<int>(c) + 1};
      return t[sel % 4];
    }
    return static_cast<std::int32_t>(sel % (c + 2)) - 1;
  }
  bool empty() const { return i_ >= n_; }

 private:
  const std::uint8_t* p_;
  std::size_t n_, i_ = 0;
};

/// Runs f; returns true if it completed, false if it threw one of the two documented types;
/// anything else thrown is a violation.
template <typename F>
bool completes(const char* family, F&& f) {
  try {
    f();
    return true;
  } catch (const std::invalid_argument&) {
    return false;
  } catch (const std::domain_error&) {
    return false;
  } catch (const std::exception& e) {
    fail(family, std::string("undocumented exception type: ") + e.what());
  } catch (...) {
    fail(family, "non-std exception");
  }
}

template <typename S>
bool same_bits(S a, S b) {
  return std::memcmp(&a, &b, sizeof(S)) == 0 || (std::isnan(a) && std::isnan(b));
}
template <typename A, typename B>
bool same_array(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j)
      if (!same_bits(a.coeff(i, j), b.coeff(i, j))) return false;
  return true;
}
template <typename A>
bool all_finite(const A& a) {
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j)
      if (!std::isfinite(a.coeff(i, j))) return false;
  return true;
}
template <typename S>
bool vec_same(const std::vector<S>& a, const std::vector<S>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

/// Threshold below which an exact result counts as representable with margin for rounding.
template <typename S>
long double representable() {
  return static_cast<long double>(std::numeric_limits<S>::max()) * 0.5L;
}

template <typename S>
RowA<S> decode_matrix(In& in, Index rows, Index cols) {
  RowA<S> x(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) x(i, j) = in.mostly_moderate<S>();
  return x;
}
inline Labels decode_labels(In& in, Index n, Index c) {
  Labels l(n);
  for (Index i = 0; i < n; ++i) l[i] = in.label(c);
  return l;
}

/// One layout variant of a call: the logits in layout `v` (see visit_layout) and a gradient output
/// of shape rows × cols in a layout paired with it, prefilled with a sentinel. f(xview, gview) is
/// called once; the gradient is returned row-major in `grad` and every element of its storage in
/// `raw` (to check a throwing call left it alone, compare raw with raw_before).
///   v = 0: row-major logits, unaligned row-major gradient Map with an outer stride
///   v = 1: column-major logits, a resizable row-major Array of another shape
///   v = 2: strided row-major Map logits, block of a larger column-major Array
///   v = 3: block of a column-major Array, unaligned strided row-major Map
///   v = 4: column-major Map with inner and outer strides, a column-major Array of the shape
template <typename S>
S sentinel() {
  return S(-12345.25);
}
template <typename S>
struct VariantOut {
  RowA<S> grad;
  std::vector<S> raw, raw_before;
};
template <typename S, typename F>
void visit_variant(int v, const RowA<S>& x, VariantOut<S>& o, F&& f) {
  const Index r = x.rows(), c = x.cols();
  auto strided = [&](auto&& xv) {
    std::vector<S> buf(static_cast<std::size_t>(r * (c + 2) + 1), sentinel<S>());
    o.raw_before = buf;
    Eigen::Map<RowA<S>, Eigen::Unaligned, Eigen::OuterStride<>> g(buf.data() + 1, r, c,
                                                                  Eigen::OuterStride<>(c + 2));
    try {
      f(xv, g);
    } catch (...) {
      o.raw = buf;
      throw;
    }
    o.grad = g, o.raw = buf;
  };
  auto col_block = [&](auto&& xv) {
    ColA<S> big = ColA<S>::Constant(r + 2, c + 3, sentinel<S>());
    o.raw_before.assign(big.data(), big.data() + big.size());
    auto g = big.block(1, 2, r, c);
    try {
      f(xv, g);
    } catch (...) {
      o.raw.assign(big.data(), big.data() + big.size());
      throw;
    }
    o.grad = g;
    o.raw.assign(big.data(), big.data() + big.size());
  };
  auto plain = [&](auto&& xv, auto& g) {
    o.raw_before.assign(g.data(), g.data() + g.size());
    try {
      f(xv, g);
    } catch (...) {
      o.raw.assign(g.data(), g.data() + g.size());
      throw;
    }
    o.grad = g;
    o.raw.assign(g.data(), g.data() + g.size());
  };
  switch (v % 5) {
    case 0:
      strided(x);
      break;
    case 1: {
      const ColA<S> y = x;
      RowA<S> g = RowA<S>::Constant(r + 1, c + 2, sentinel<S>());
      plain(y, g);
      break;
    }
    case 2: {
      std::vector<S> buf(static_cast<std::size_t>(r * (c + 3) + 1), S(7));
      Eigen::Map<RowA<S>, Eigen::Unaligned, Eigen::OuterStride<>> m(buf.data() + 1, r, c,
                                                                    Eigen::OuterStride<>(c + 3));
      m = x;
      col_block(static_cast<const decltype(m)&>(m));
      break;
    }
    case 3: {
      ColA<S> big = ColA<S>::Constant(r + 3, c + 2, S(-3));
      big.block(1, 2, r, c) = x;
      const ColA<S>& cb = big;
      strided(cb.block(1, 2, r, c));
      break;
    }
    default: {
      std::vector<S> buf(static_cast<std::size_t>(2 * (r + 1) * (c + 1) + 2), S(5));
      using St = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
      Eigen::Map<ColA<S>, Eigen::Unaligned, St> m(buf.data() + 1, r, c, St(2 * (r + 1), 2));
      m = x;
      ColA<S> g = ColA<S>::Constant(r, c, sentinel<S>());
      plain(static_cast<const decltype(m)&>(m), g);
      break;
    }
  }
}

/// The logits of x in layout `kind` (0 row-major Array, 1 column-major Array, 2 unaligned
/// strided row-major Map, 3 block of a column-major Array, 4 column-major Map with inner and
/// outer strides); f(view) is called once.
template <typename S, typename F>
void visit_layout(int kind, const RowA<S>& x, F&& f) {
  const Index r = x.rows(), c = x.cols();
  switch (kind % 5) {
    case 0:
      f(x);
      break;
    case 1: {
      const ColA<S> y = x;
      f(y);
      break;
    }
    case 2: {
      std::vector<S> buf(static_cast<std::size_t>(r * (c + 3) + 1), S(7));
      Eigen::Map<RowA<S>, Eigen::Unaligned, Eigen::OuterStride<>> m(buf.data() + 1, r, c,
                                                                    Eigen::OuterStride<>(c + 3));
      m = x;
      f(static_cast<const decltype(m)&>(m));
      break;
    }
    case 3: {
      ColA<S> big = ColA<S>::Constant(r + 3, c + 2, S(-3));
      big.block(1, 2, r, c) = x;
      const ColA<S>& cb = big;
      f(cb.block(1, 2, r, c));
      break;
    }
    default: {
      std::vector<S> buf(static_cast<std::size_t>(2 * (r + 1) * (c + 1) + 2), S(5));
      using St = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
      Eigen::Map<ColA<S>, Eigen::Unaligned, St> m(buf.data() + 1, r, c, St(2 * (r + 1), 2));
      m = x;
      f(static_cast<const decltype(m)&>(m));
      break;
    }
  }
}

/// A result as a vector of doubles, for bit comparison (overloads for each value type).
inline std::vector<double> as_vec(float v) {
  return {static_cast<double>(v)};
}
inline std::vector<double> as_vec(double v) {
  return {v};
}
inline std::vector<double> as_vec(std::vector<double> v) {
  return v;
}

struct NoState {
  bool operator==(const NoState&) const { return true; }
};

/// The dense protocol for one call with logits x (N × C) and a gradient of the same shape.
///   vg(xview, gview, state) → result of value_and_grad (a scalar or a vector of doubles)
///   v(xview, const state)   → result of value
///   check(result, grad)     → the oracle, called when the reference call succeeds
/// The reference is row-major logits and an exact row-major gradient: a throw must leave the
/// gradient and the state alone; on success value() must give the same bits. Then the layout
/// variant `visit_variant(byte)` must throw exactly when the reference did and otherwise give the
/// same bits (value, gradient, state); and a gradient Map overlapping the logits must throw
/// without writing or give the reference's bits.
template <typename S, typename State, typename VG, typename V, typename Check>
void dense_protocol(const char* fam, In& in, const RowA<S>& x, const State& state0, VG&& vg, V&& v,
                    Check&& check) {
  const int variant = in.u8(), alias = in.u8();
  const Index r = x.rows(), c = x.cols();
  State st = state0;
  RowA<S> g0 = RowA<S>::Constant(r, c, sentinel<S>());
  const RowA<S> g0_before = g0;
  std::vector<double> res;
  const bool ok = completes(fam, [&] { res = as_vec(vg(x, g0, st)); });
  if (!ok) {
    FZ_CHECK(same_array(g0, g0_before), fam, "gradient written before a throw");
    FZ_CHECK(st == state0, fam, "state changed by a throwing call");
  } else {
    check(res, static_cast<const RowA<S>&>(g0));
    std::vector<double> rv;
    const bool vok = completes(fam, [&] { rv = as_vec(v(x, state0)); });
    FZ_CHECK(vok, fam, "value() threw where value_and_grad() did not");
    FZ_CHECK(vec_same(rv, res), fam, "value() differs from value_and_grad()");
  }
  {
    State st2 = state0;
    std::vector<double> res2;
    VariantOut<S> o;
    const bool ok2 = completes(fam, [&] {
      visit_variant<S>(variant, x, o,
                       [&](const auto& xv, auto& g) { res2 = as_vec(vg(xv, g, st2)); });
    });
    FZ_CHECK(ok2 == ok, fam, "throws in one layout and not in another");
    if (ok) {
      FZ_CHECK(vec_same(res2, res), fam, "value depends on the layout");
      FZ_CHECK(same_array(o.grad, g0), fam, "gradient depends on the layout");
      FZ_CHECK(st2 == st, fam, "state depends on the layout");
    } else {
      FZ_CHECK(vec_same(o.raw, o.raw_before), fam, "gradient written before a throw (layout)");
      FZ_CHECK(st2 == state0, fam, "state changed by a throwing call (layout)");
    }
  }
  if ((alias & 3) == 0 && x.size() > 0) {
    const Index shift = static_cast<Index>(alias >> 2) % (x.size() + 1);
    std::vector<S> buf(static_cast<std::size_t>(x.size() + shift));
    Eigen::Map<RowA<S>> xm(buf.data(), r, c);
    xm = x;
    Eigen::Map<RowA<S>> gm(buf.data() + shift, r, c);
    const std::vector<S> before = buf;
    State st3 = state0;
    std::vector<double> res3;
    const bool ok3 = completes(fam, [&] { res3 = as_vec(vg(xm, gm, st3)); });
    // shift == size: no overlap, only another (mis)alignment of the gradient buffer.
    const std::string what = shift == x.size()
                                 ? "gradient buffer shifted by " + std::to_string(shift) +
                                       " elements (no overlap) gives a different "
                                 : "gradient Map overlapping the logits (shift " +
                                       std::to_string(shift) + ") accepted with a different ";
    if (ok3) {
      FZ_CHECK(ok, fam, what + "outcome: it succeeded where the plain call threw");
      FZ_CHECK(vec_same(res3, res), fam, what + "value");
      FZ_CHECK(same_array(RowA<S>(gm), g0), fam, what + "gradient");
    } else {
      FZ_CHECK(vec_same(buf, before), fam, "aliased call wrote before throwing");
      FZ_CHECK(st3 == state0, fam, "state changed by a throwing aliased call");
    }
  }
}

}  // namespace fz

/// The libFuzzer entry point of a target whose `template <typename S> void run(fz::In&)` covers
/// both scalars: the first flag picks double or float.
#define FZ_ENTRY_FLOAT_OR_DOUBLE(run)                                                 \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
    fz::In in(data, size);                                                            \
    if (in.flag())                                                                    \
      run<double>(in);                                                                \
    else                                                                              \
      run<float>(in);                                                                 \
    return 0;                                                                         \
  }
