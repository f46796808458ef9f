/// @file errors.hpp
/// @brief The error vocabulary of fgbg: every check throws through these helpers, so every
///        message has the same shape: "<where>: <what> <expected>, got <given>".
///
/// - Invalid hyper-parameters, shapes, label values, normalisers: `std::invalid_argument`.
/// - Non-finite inputs (NaN, ±inf): `std::domain_error` naming the first offending element.
/// All checks run before any output or state is written (docs/conventions.md).
#pragma once

#include "requires_cxx17.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fgbg {
namespace detail {

/// Concatenates any streamable values into one string.
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  os.precision(9);
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Throws `std::invalid_argument("<where>: <what>")`.
template <typename... Parts>
[[noreturn]] void throw_invalid(const char* where, Parts&&... what) {
  throw std::invalid_argument(concat(where, ": ", std::forward<Parts>(what)...));
}

/// Validates one hyper-parameter of a config struct. The message names the class, the field, the
/// valid range and the value given, e.g.
/// `fgbg::SigmoidFocalLoss: config.gamma must be >= 0, got -1`.
template <typename T>
void require_param(bool ok, const char* where, const char* field, const char* range, T value) {
  if (!ok) throw_invalid(where, "config.", field, " must be ", range, ", got ", value);
}

/// Validates the (α, γ) pair shared by the focal-type losses: α ≤ 1 (α < 0 disables it) and
/// γ ≥ 0 (γ > 0 when `gamma_positive`), both finite.
template <typename Scalar>
void require_focal_params(const char* where, Scalar alpha, Scalar gamma,
                          bool gamma_positive = false) {
  require_param(alpha <= Scalar(1) && std::isfinite(alpha), where, "alpha",
                "<= 1 (or < 0 to disable)", alpha);
  const bool ok = gamma_positive ? gamma > Scalar(0) : gamma >= Scalar(0);
  require_param(ok && std::isfinite(gamma), where, "gamma",
                gamma_positive ? "finite and > 0" : "finite and >= 0", gamma);
}

/// a + b for two counts a, b >= 0, or throws `std::invalid_argument("<where>: <what> overflows
/// int64 (a + b)")` when the exact sum exceeds INT64_MAX (no signed overflow is ever evaluated).
inline std::int64_t checked_count_sum(const char* where, const char* what, std::int64_t a,
                                      std::int64_t b) {
  if (b > std::numeric_limits<std::int64_t>::max() - a)
    throw_invalid(where, what, " overflows int64 (", a, " + ", b, ")");
  return a + b;
}

/// Throws `std::domain_error` for a non-finite input element.
[[noreturn]] inline void throw_non_finite(const char* where, const char* arg, std::ptrdiff_t row,
                                          std::ptrdiff_t col, double value) {
  throw std::domain_error(concat(where, ": ", arg, "(", row, ", ", col, ") is ", value,
                                 "; every input must be finite"));
}

}  // namespace detail
}  // namespace fgbg
