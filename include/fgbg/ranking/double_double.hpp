/// @file double_double.hpp
/// @brief Double-double arithmetic (about 106 significant bits) in which the ranking losses
///        accumulate their prefix, window and slot sums.
///
/// Holds DD (the unevaluated sum hi + lo) and its error-free building blocks: two_sum,
/// dd_renorm, dd_add, dd_neg, dd_sub, dd_mul, dd_value. Used by window_sums.hpp,
/// fenwick_tree.hpp and the negatives' histogram (negative_grid.hpp, negative_scatter.hpp).
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>

namespace fgbg {
namespace detail {

/// A double-double: the unevaluated sum hi + lo (|lo| ≤ ulp(hi)/2 after renormalisation), about
/// 106 significant bits. The ranking sums are accumulated in it, so that a window sum obtained as
/// a difference of prefix sums keeps its relative accuracy, and a sum over the same terms in
/// another order rounds to the same double (order independence to about 2^-100 relative).
struct DD {
  double hi = 0, lo = 0;
};

/// Exact a + b = s + e (Knuth's TwoSum).
inline DD two_sum(double a, double b) {
  const double s = a + b;
  const double bb = s - a;
  return {s, (a - (s - bb)) + (b - bb)};
}

inline DD dd_renorm(double hi, double lo) {
  const double s = hi + lo;
  return {s, lo - (s - hi)};
}

inline DD dd_add(DD x, double y) {
  const DD s = two_sum(x.hi, y);
  return dd_renorm(s.hi, s.lo + x.lo);
}

inline DD dd_add(DD x, DD y) {
  const DD s = two_sum(x.hi, y.hi);
  return dd_renorm(s.hi, s.lo + (x.lo + y.lo));
}

inline DD dd_neg(DD x) {
  return {-x.hi, -x.lo};
}
inline DD dd_sub(DD x, DD y) {
  return dd_add(x, dd_neg(y));
}

/// x · y to about 2^-104 relative (the high product exact through an FMA).
inline DD dd_mul(DD x, DD y) {
  const double p = x.hi * y.hi;
  const double e = std::fma(x.hi, y.hi, -p);
  return dd_renorm(p, e + (x.hi * y.lo + x.lo * y.hi));
}

inline DD dd_mul(DD x, double y) {
  return dd_mul(x, DD{y, 0});
}

/// The double nearest to hi + lo.
inline double dd_value(DD x) {
  return x.hi + x.lo;
}

}  // namespace detail
}  // namespace fgbg
