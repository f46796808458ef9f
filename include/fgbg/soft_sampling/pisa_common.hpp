/// @file pisa_common.hpp
/// @brief Internals shared by the PISA headers (isr_p.hpp, isr_n.hpp, carl.hpp): per-anchor
///        vector checks and output preparation. Nothing here is public API.
#pragma once

#include <cmath>
#include <type_traits>

#include "../core/checks.hpp"

namespace fgbg {
namespace detail {

/// Throws unless `v` is a vector of `n` entries (one row or one column; any size-0 array for n =
/// 0).
template <typename Derived>
void pisa_check_input_vector(const char* where, const char* arg, const Eigen::DenseBase<Derived>& v,
                             Index n) {
  check_vector(where, arg, v, n);
}

/// Checks a per-anchor output vector before anything is written: a plain array of the wrong size
/// is accepted (it is resized by pisa_prepare_vector), a view (Map, block) must already hold `n`
/// entries.
template <typename Derived>
void pisa_check_output_vector(const char* where, const char* arg,
                              const Eigen::DenseBase<Derived>& out, Index n) {
  const bool is_vector = out.cols() == 1 || out.rows() == 1;
  if (is_vector && out.size() == n) return;
  if constexpr (!std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value)
    throw_invalid(where, arg, " must be a vector of ", n, " entries, got ", out.rows(), " x ",
                  out.cols());
}

/// Gives a checked output vector its size (allocating only if a plain array had another size)
/// and returns it writable.
template <typename Derived>
Derived& pisa_prepare_vector(const Eigen::DenseBase<Derived>& out_, Index n) {
  auto& out = const_cast<Eigen::DenseBase<Derived>&>(out_).derived();
  const bool is_vector = out.cols() == 1 || out.rows() == 1;
  if (!(is_vector && out.size() == n)) {
    if constexpr (std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value)
      out.resize(n, 1);
  }
  return out;
}

/// Validates one per-anchor input value: finite (else std::domain_error) and >= lo (and <= hi
/// when hi >= lo), else std::invalid_argument naming `what` (the role of the anchor).
inline void pisa_check_value(const char* where, const char* arg, Index i, double v, double lo,
                             double hi, const char* range, const char* what) {
  if (!std::isfinite(v)) throw_non_finite(where, arg, i, 0, v);
  if (v < lo || (hi >= lo && v > hi))
    throw_invalid(where, arg, "(", i, ") = ", v, " must be ", range, " for ", what);
}

}  // namespace detail
}  // namespace fgbg
