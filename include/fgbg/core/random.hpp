/// @file random.hpp
/// @brief Randomness shared by the samplers: k of n without replacement from a caller-owned
///        uniform random bit generator (design.md §1: same seed, same result).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "config.hpp"
#include "errors.hpp"

namespace fgbg {
namespace detail {

/// Uniform integer in [0, bound) from any URBG of 32 or 64 bits, by rejection of the low
/// remainder range and a modulo, so the sequence is the same on every standard library
/// (std::uniform_int_distribution is not specified bit-for-bit).
template <typename URBG>
std::uint64_t uniform_below(URBG& rng, std::uint64_t bound) {
  static_assert(URBG::min() == 0, "fgbg: the random generator must produce values from 0");
  constexpr std::uint64_t range = std::uint64_t(URBG::max() - URBG::min());
  static_assert(range == ~std::uint64_t(0) || range == 0xffffffffULL,
                "fgbg: URBGs of 32 or 64 bits are supported");
  auto draw64 = [&rng]() -> std::uint64_t {
    if constexpr (range == ~std::uint64_t(0)) {
      return static_cast<std::uint64_t>(rng());
    } else {
      const std::uint64_t hi = static_cast<std::uint64_t>(rng());
      return (hi << 32) | static_cast<std::uint64_t>(rng());
    }
  };
  const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  std::uint64_t r = draw64();
  while (r < threshold) r = draw64();
  return r % bound;
}

}  // namespace detail

/// Chooses min(k, pool.size()) entries of `pool` uniformly without replacement by a partial
/// Fisher–Yates shuffle; the chosen entries end up in pool[0, k) (in draw order) and `pool` is
/// otherwise permuted. Returns the number chosen. No allocation.
template <typename T, typename URBG>
Index choose_in_place(std::vector<T>& pool, Index k, URBG& rng) {
  const Index n = static_cast<Index>(pool.size());
  if (k < 0) detail::throw_invalid("fgbg::choose_in_place", "k must be >= 0, got ", k);
  k = std::min(k, n);
  for (Index i = 0; i < k; ++i) {
    const Index j = i + static_cast<Index>(detail::uniform_below(rng, std::uint64_t(n - i)));
    std::swap(pool[i], pool[j]);
  }
  return k;
}

}  // namespace fgbg
