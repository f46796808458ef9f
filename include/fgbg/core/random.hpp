/// @file random.hpp
/// @brief Randomness shared by the samplers: k of n without replacement from a caller-owned
///        uniform random bit generator (same seed, same result).
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "config.hpp"
#include "errors.hpp"

namespace fgbg {
namespace detail {

/// The next `bits` uniform random bits from any URBG. Engines whose range is a power of two
/// (std::mt19937, std::mt19937_64, ranlux24/48, …) give their values as they are; other ranges
/// (std::minstd_rand) are cut to the largest power of two by rejection, so every bit is fair.
template <typename URBG>
std::uint64_t random_bits(URBG& rng) {
  using R = typename URBG::result_type;
  constexpr std::uint64_t span = std::uint64_t(URBG::max()) - std::uint64_t(URBG::min());
  static_assert(span > 0, "fgbg: the random generator must produce more than one value");
  // w = ⌊log2(span + 1)⌋ usable bits per draw.
  constexpr int w = [] {
    int b = 0;
    while (b < 64 && (b == 63 ? span >= (std::uint64_t(1) << 63)
                              : ((std::uint64_t(1) << (b + 1)) - 1) <= span))
      ++b;
    return b;
  }();
  constexpr std::uint64_t mask = w == 64 ? ~std::uint64_t(0) : (std::uint64_t(1) << w) - 1;
  std::uint64_t out = 0;
  int have = 0;
  while (have < 64) {
    std::uint64_t v;
    do {
      v = std::uint64_t(R(rng())) - std::uint64_t(URBG::min());
    } while (v > mask);
    out = have == 0 ? v : (w >= 64 ? v : (out << w) | v);
    have += w;
  }
  return out;
}

/// Uniform integer in [0, bound) from any URBG, by rejection of the low remainder range and a
/// modulo, so the sequence is the same with every standard library
/// (std::uniform_int_distribution is not specified bit for bit).
template <typename URBG>
std::uint64_t uniform_below(URBG& rng, std::uint64_t bound) {
  const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  std::uint64_t r = random_bits(rng);
  while (r < threshold) r = random_bits(rng);
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
