/// @file ranking_output.hpp
/// @brief Output helpers of the ranking losses: the pair of values a call returns and the preparation
///        of its optional outputs.
///
/// Holds RankValues, zero_output and prepare_vector_output.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <type_traits>

#include "../core/config.hpp"
#include "../core/dense.hpp"
#include "../core/errors.hpp"

namespace fgbg {
namespace detail {

/// Two values of one ranking call, in double (RS: rank, sort; aLRP: cls, loc).
struct RankValues {
  double first = 0, second = 0;
};

/// Sets every entry of an output to zero (after prepare_output).
template <typename GD>
void zero_output(GD& out) {
  if constexpr (kGiven<GD>) out.derived().setZero();
}

/// Makes a per-anchor output vector hold n entries: a plain array with another size is resized
/// (n × 1, or 1 × n for a row-vector type), a view must already have n entries in one row or
/// column. Checks only (no resize) when `resize` is false.
template <typename OD>
void prepare_vector_output(const char* where, const char* arg, OD& out, Index n, bool resize) {
  if constexpr (kGiven<OD>) {
    const bool ok = (out.size() == n) && (out.rows() == 1 || out.cols() == 1 || n == 0);
    if (ok) return;
    using G = std::decay_t<decltype(out.derived())>;
    constexpr bool kPlain = std::is_base_of<Eigen::PlainObjectBase<G>, G>::value;
    if constexpr (kPlain) {
      if (!resize) return;
      if (G::RowsAtCompileTime == 1) {
        out.derived().resize(1, n);
      } else {
        out.derived().resize(n, 1);
      }
    } else {
      throw_invalid(where, arg, " must be a vector of ", n, " entries, got ", out.rows(), " x ",
                    out.cols());
    }
  }
}

}  // namespace detail
}  // namespace fgbg
