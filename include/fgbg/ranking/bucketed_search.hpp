/// @file bucketed_search.hpp
/// @brief Searches of a sorted array of doubles for the window of a query point: a branch-free binary
///        search and BucketedSearch, the O(1)-expected bucket-grid search the negatives use.
///
/// Holds find_window (both bounds by one binary search), bound_in (one bound inside a known
/// range) and BucketedSearch (a uniform bucket grid over the array, with a small View that hot
/// loops copy into registers). NegativeGrid (negative_grid.hpp) builds one over its keys.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "window_sums.hpp"

namespace fgbg {
namespace detail {

/// First index k of the sorted v[0..n) with v[k] > x (strict: upper bound) and first with
/// v[k] ≥ y (lower bound), found together with a branch-free binary search.
inline Window find_window(const double* v, std::uint32_t n, double x, double y) {
  if (n == 0) return {};
  const double* bx = v;
  const double* by = v;
  std::uint32_t len = n;
  while (len > 1) {
    const std::uint32_t half = len / 2;
    bx = (bx[half - 1] <= x) ? bx + half : bx;
    by = (by[half - 1] < y) ? by + half : by;
    len -= half;
  }
  Window w;
  w.lo = static_cast<std::uint32_t>(bx - v) + (*bx <= x ? 1u : 0u);
  w.hi = static_cast<std::uint32_t>(by - v) + (*by < y ? 1u : 0u);
  return w;
}

/// First index k in [begin, end) with v[k] > x (kStrict) or v[k] ≥ x (!kStrict), given that the
/// answer lies in [begin, end]. Branch-free binary search.
template <bool kStrict>
inline std::uint32_t bound_in(const double* v, std::uint32_t begin, std::uint32_t end, double x) {
  std::uint32_t len = end - begin;
  if (len == 0) return begin;
  const double* b = v + begin;
  while (len > 1) {
    const std::uint32_t half = len / 2;
    b = (kStrict ? b[half - 1] <= x : b[half - 1] < x) ? b + half : b;
    len -= half;
  }
  return static_cast<std::uint32_t>(b - v) + ((kStrict ? *b <= x : *b < x) ? 1u : 0u);
}

/// O(1)-expected window search over a sorted array: a uniform bucket grid over [v_0, v_{n−1}]
/// (8n buckets) maps a query to the index range of its bucket, then the answer is found inside
/// that range only: by a branch-free count of 2 elements when the range is that short (the
/// common case), else by a branch-free binary search. Exact: the bucket function is monotone,
/// so every element of an earlier bucket is < the query and every element of a later bucket is
/// > it (which is also why counting past the range's end is harmless; the array is padded with
/// +inf). The worst case (all elements in one bucket) is the plain O(log n) search.
class BucketedSearch {
 public:
  /// A bucket range of at most kScan elements is settled by counting kScan elements, branch-free,
  /// instead of a search; with about one element per bucket (kBucketsPerElement) almost every
  /// range is that short. The copy carries kScan +inf sentinels so the count may run past the end.
  static constexpr std::uint32_t kScan = 2;
  /// Buckets per element: a query's bucket then holds about one element on average, so the
  /// kScan-element count settles almost every search.
  static constexpr std::uint32_t kBucketsPerElement = 8;
  /// Cap on the bucket count (2^26 32-bit starts: 256 MiB), reached at 2^23 elements; beyond
  /// that the buckets hold more elements each and more searches take the binary part.
  static constexpr std::uint32_t kMaxBuckets = 1u << 26;

  /// Indexes the sorted v[0..n) and copies it (with kScan +inf sentinels).
  void build(const double* v, std::uint32_t n) {
    v_.resize(static_cast<std::size_t>(n) + kScan);
    std::copy(v, v + n, v_.begin());
    std::fill(v_.begin() + n, v_.end(), std::numeric_limits<double>::infinity());
    n_ = n;
    m_ = 1;
    inv_w_ = 0;
    v0_ = n ? v[0] : 0.0;
    if (n > 1) {
      const double range = v[n - 1] - v[0];
      const std::uint32_t m =
          n > kMaxBuckets / kBucketsPerElement ? kMaxBuckets : kBucketsPerElement * n;
      const double inv = static_cast<double>(m) / range;
      if (range > 0 && std::isfinite(inv) && inv > 0) {
        m_ = m;
        inv_w_ = inv;
      }
    }
    max_b_ = static_cast<double>(m_ - 1);
    start_.assign(static_cast<std::size_t>(m_) + 1, 0);
    for (std::uint32_t k = 0; k < n; ++k) ++start_[bucket(v[k]) + 1];
    for (std::uint32_t b = 0; b < m_; ++b) start_[b + 1] += start_[b];
  }

  void reserve(std::size_t n) {
    start_.reserve(kBucketsPerElement * n + 2);
    v_.reserve(n + kScan);
  }

  /// The search as a small value (raw pointers and scalars). Hot loops copy it into a local so
  /// that the compiler keeps it in registers instead of reloading members after every store.
  struct View {
    const double* v;
    const std::uint32_t* start;
    double v0, inv_w, max_b;
    bool one_bucket;

    /// lo = first v > x, hi = first v ≥ y.
    Window window(double x, double y) const { return {bound<true>(x), bound<false>(y)}; }

    std::uint32_t bucket(double y) const {
      if (one_bucket) return 0;
      double t = (y - v0) * inv_w;
      t = t < 0 ? 0 : (t > max_b ? max_b : t);  // also maps ±inf into range
      return static_cast<std::uint32_t>(t);
    }

    template <bool kStrict>
    std::uint32_t bound(double x) const {
      const std::uint32_t b = bucket(x);
      const std::uint32_t begin = start[b], end = start[b + 1];
      if (end - begin <= kScan) {
        std::uint32_t c = 0;
        for (std::uint32_t t = 0; t < kScan; ++t)
          c += (kStrict ? v[begin + t] <= x : v[begin + t] < x) ? 1u : 0u;
        return begin + c;
      }
      return bound_in<kStrict>(v, begin, end, x);
    }
  };

  View view() const { return {v_.data(), start_.data(), v0_, inv_w_, max_b_, m_ == 1}; }

  /// lo = first v > x, hi = first v ≥ y.
  Window window(double x, double y) const { return view().window(x, y); }

 private:
  std::uint32_t bucket(double y) const { return view().bucket(y); }

  std::vector<double> v_;
  std::uint32_t n_ = 0, m_ = 1;
  double v0_ = 0, inv_w_ = 0, max_b_ = 0;
  std::vector<std::uint32_t> start_;
};

}  // namespace detail
}  // namespace fgbg
