/// @file config.hpp
/// @brief Version, index type and build switches of fgbg.
#pragma once

#include "requires_cxx17.hpp"

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>

#define FGBG_VERSION_MAJOR 0
#define FGBG_VERSION_MINOR 1
#define FGBG_VERSION_PATCH 0

#if defined(FGBG_USE_OPENMP) && defined(_OPENMP)
#include <omp.h>
#define FGBG_OPENMP_ENABLED 1
#else
#define FGBG_OPENMP_ENABLED 0
#endif

namespace fgbg {

/// Index type of every size and position (Eigen's, signed).
using Index = Eigen::Index;
/// Label type: -1 ignore, 0 background, k in 1..C foreground class k (docs/conventions.md).
using Label = std::int32_t;

/// Label value of an ignored anchor.
inline constexpr Label kIgnore = -1;
/// Label value of a background anchor.
inline constexpr Label kBackground = 0;

/// Most classes a per-class state object (EqualizedFocalState, AnchorStatistics) may hold:
/// 2^24 = 16,777,216, far above the largest detection vocabularies (LVIS 1,203, ImageNet-21k
/// 21,841), and small enough that the allocation cannot exhaust a machine by itself (EFL's five
/// per-class arrays of doubles take 640 MiB at the bound; 2^31 classes asked for 80 GiB).
inline constexpr std::int64_t kMaxStateClasses = std::int64_t(1) << 24;

/// Row-major dynamic array: the memory layout of a `[N, C]` PyTorch tensor.
template <typename Scalar>
using RowArray = Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Dynamic column vector of labels.
using LabelVector = Eigen::Array<Label, Eigen::Dynamic, 1>;

namespace detail {
template <typename T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<Eigen::half> {
  using type = float;
};
template <>
struct ComputeType<Eigen::bfloat16> {
  using type = float;
};
}  // namespace detail

/// The type a loss computes in for logits stored as T: float for Eigen::half and
/// Eigen::bfloat16 (what a mixed-precision step hands over), T itself otherwise.
template <typename T>
using ComputeOf = typename detail::ComputeType<T>::type;

/// Whether logits and gradients stored as `Stored` may be passed to a loss of scalar type
/// `Scalar`: the same type, or a half-precision type (Eigen::half, Eigen::bfloat16) for a float
/// loss. Half-precision arrays are read and written in their type and computed in float: each
/// tile is converted into a float buffer, and the gradient is rounded once, when it is stored.
template <typename Stored, typename Scalar>
inline constexpr bool kStorableAs = std::is_same<Stored, Scalar>::value ||
                                    (std::is_same<Scalar, float>::value &&
                                     !std::is_same<ComputeOf<Stored>, Stored>::value);

/// Number of threads fgbg's parallel loops may use (1 unless built with FGBG_USE_OPENMP).
inline int max_threads() {
#if FGBG_OPENMP_ENABLED
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fgbg
