/// @file pisa_common.hpp
/// @brief Internals shared by the PISA headers (isr_p.hpp, isr_n.hpp, carl.hpp): per-anchor
///        vector checks and output preparation. Nothing here is public API.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
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
  auto& out = detail::writable(out_).derived();
  const bool is_vector = out.cols() == 1 || out.rows() == 1;
  if (!(is_vector && out.size() == n)) {
    if constexpr (std::is_base_of<Eigen::PlainObjectBase<Derived>, Derived>::value)
      out.resize(n, 1);
  }
  return out;
}

/// detail::check_no_alias (same overlap test) with the argument names in the message: throws if
/// the output `out_arg` shares memory with the input `in_arg`.
template <typename DIn, typename DOut>
void pisa_check_no_alias(const char* where, const char* in_arg, const char* out_arg,
                         const Eigen::DenseBase<DIn>& in, const Eigen::DenseBase<DOut>& out) {
  try {
    check_no_alias(where, in, out);
  } catch (const std::invalid_argument&) {
    throw_invalid(where, out_arg, " must not share memory with ", in_arg);
  }
}

/// Validates one per-anchor input value: finite (else std::domain_error) and >= lo (and <= hi
/// when hi >= lo), else std::invalid_argument naming `what` (the role of the anchor).
inline void pisa_check_value(const char* where, const char* arg, Index i, double v, double lo,
                             double hi, const char* range, const char* what) {
  if (!std::isfinite(v)) throw_non_finite(where, arg, i, 0, v);
  if (v < lo || (hi >= lo && v > hi))
    throw_invalid(where, arg, "(", i, ") = ", v, " must be ", range, " for ", what);
}

/// Scans a label vector (already checked to be a vector) in blocks of 64: blocks holding only
/// −1 and 0 are settled by one vectorised max/sum; in the others `f(i, l)` is called for every
/// label other than −1 and 0 (positives, and out-of-range values for `f` to reject). Returns the
/// number of −1 labels. Detector batches have ~0.1% positives, so almost every block is skipped.
template <typename LD, typename F>
Index pisa_scan_labels(const Eigen::DenseBase<LD>& labels, F&& f) {
  constexpr Index kBlock = 64;
  const Index n = labels.size();
  Index ignored = 0;
  for (Index b = 0; b < n; b += kBlock) {
    const Index len = std::min(kBlock, n - b);
    // l + 1 as unsigned is ≤ 1 exactly for l ∈ {−1, 0}; a branch-free loop the compiler
    // vectorises.
    std::uint64_t worst = 0;
    std::int64_t sum = 0;
    for (Index i = b; i < b + len; ++i) {
      const std::int64_t l = static_cast<std::int64_t>(labels.derived().coeff(i));
      worst = std::max(worst, static_cast<std::uint64_t>(l + 1));
      sum += l;
    }
    if (worst <= 1) {
      ignored -= static_cast<Index>(sum);
      continue;
    }
    for (Index i = b; i < b + len; ++i) {
      const auto l = labels.derived().coeff(i);
      if (l == -1)
        ++ignored;
      else if (l != 0)
        f(i, l);
    }
  }
  return ignored;
}

/// Throws the label-range error of detail::check_labels (same message) for labels(i) = l.
[[noreturn]] inline void pisa_bad_label(const char* where, Index i, long long l,
                                        Index num_classes) {
  throw_invalid(where, "labels(", i, ") = ", l, " is outside -1..", num_classes,
                " (-1 ignore, 0 background, 1..C class)");
}

/// Validates a whole vector of weights: finite (std::domain_error naming the first bad entry)
/// and >= 0 (std::invalid_argument). One vectorised pass when everything is fine.
template <typename Derived>
void pisa_check_nonnegative(const char* where, const char* arg,
                            const Eigen::DenseBase<Derived>& v) {
  if (v.size() == 0) return;
  using S = typename Derived::Scalar;
  // The probe is NaN unless every entry is finite; only then is the (vectorised) min exact.
  const bool ok = (v.derived().array() * S(0)).sum() == S(0) && v.derived().minCoeff() >= S(0);
  if (ok) return;
  for (Index i = 0; i < v.size(); ++i)
    pisa_check_value(where, arg, i, static_cast<double>(v.derived().coeff(i)), 0.0, -1.0, ">= 0",
                     "every anchor");
}

}  // namespace detail
}  // namespace fgbg
