// Long-double reimplementations of the dense sigmoid and softmax losses (the formulas of each
// header's file comment), used by fuzz_sigmoid.cpp and fuzz_softmax.cpp to decide whether the
// exact value and gradient are representable.
#pragma once

#include <algorithm>
#include <cmath>

#include "fuzz_common.hpp"

namespace fz {

using LD = long double;
inline LD sp(LD x) {
  return std::max(x, LD(0)) + std::log1p(std::exp(-std::fabs(x)));
}
inline LD sig(LD x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

/// Normaliser A in long double; kind 0 sum, 1 mean, 2 avg_factor, 3 num_positives.
inline LD norm_a(int kind, double factor, Index valid_elems, Index positives) {
  switch (kind) {
    case 0:
      return 1;
    case 1:
      return std::max<LD>(1, valid_elems);
    case 2:
      return factor;
    default:
      return std::max<LD>(1, positives);
  }
}

/// Checks the library's value and gradient against the oracle's: each must be finite where the
/// exact one is representable in S.
template <typename S>
void check_finite_where_exact(const char* fam, LD exact_value, S value, const RowA<LD>& exact_grad,
                              const RowA<S>& grad) {
  if (std::fabs(exact_value) < representable<S>())
    FZ_CHECK(std::isfinite(value), fam,
             "non-finite value " + std::to_string(double(value)) + " where the exact value is " +
                 std::to_string(double(exact_value)));
  for (Index i = 0; i < grad.rows(); ++i)
    for (Index j = 0; j < grad.cols(); ++j)
      if (std::fabs(exact_grad(i, j)) < representable<S>())
        FZ_CHECK(std::isfinite(grad(i, j)), fam,
                 "non-finite gradient (" + std::to_string(i) + ", " + std::to_string(j) +
                     ") = " + std::to_string(double(grad(i, j))) + " where the exact one is " +
                     std::to_string(double(exact_grad(i, j))));
}

/// The documented exemption (docs/conventions.md, "The promise"): an element term (loss ℓ or
/// gradient d, before its weight w and the normaliser) beyond the scalar type's range may make
/// the result ±inf however small w is. Returns whether (ℓ, d, w) falls under it; weight 0 never
/// does (it masks the element).
template <typename S>
bool element_term_exempt(LD ell, LD d, LD w) {
  return w != 0 && !(std::fabs(ell) < representable<S>() && std::fabs(d) < representable<S>());
}

/// Checks a result under the exemption: ±inf is allowed, NaN is not.
template <typename S>
void check_not_nan(const char* fam, S value, const RowA<S>& grad) {
  FZ_CHECK(!std::isnan(value), fam, "NaN value where an element term overflows");
  for (Index i = 0; i < grad.rows(); ++i)
    for (Index j = 0; j < grad.cols(); ++j)
      FZ_CHECK(!std::isnan(grad(i, j)), fam, "NaN gradient where an element term overflows");
}

}  // namespace fz
