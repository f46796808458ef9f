/// @file ranking_primitives.hpp
/// @brief The sort-based machinery shared by AP loss, aLRP loss and Rank & Sort loss
///        (spec ranking-and-unbiased §5.1–§5.2), written once.
///
/// All three losses need, for every positive i, sums of the form Σ_k w_k H_δ(s_k − s_i) over a
/// set, and the transposed sums Σ_i c_i H_δ(s_j − s_i) for every other entry j, where
///
///   H_δ(x) = clamp(x / (2δ) + 1/2, 0, 1)      (0 for x ≤ −δ, 1 for x ≥ δ, H_δ(0) = 1/2).
///
/// H_δ is piecewise linear with breakpoints at ±δ, so over a set sorted ascending, v_0 ≤ … ≤
/// v_{n−1}, with prefix sums W[m] = Σ_{k<m} w_k and V[m] = Σ_{k<m} w_k v_k, and the window
///
///   lo = first k with v_k > t − δ,   hi = first k with v_k ≥ t + δ,
///
///   Up(t)   = Σ_k w_k H_δ(v_k − t)
///           = (W[n] − W[hi]) + ((V[hi] − V[lo]) − (t − δ)(W[hi] − W[lo]))/(2δ)
///   Down(u) = Σ_k c_k H_δ(u − v_k)
///           = C[lo] + ((u + δ)(C[hi] − C[lo]) − (CV[hi] − CV[lo]))/(2δ)
///
/// (Primitive A and Primitive B of the spec, written here in the form actually evaluated: the
/// window is lo = first k with v_k − t > −δ, hi = first k with v_k − t ≥ δ, differences as
/// computed in double, and a window element counts ½ (1 ± (v_k − t)/δ), its offset sum taken
/// relative to a chain reference; see Numerics below). Elements exactly at t − δ get H = 0 and
/// elements exactly at t + δ get H = 1: clamp semantics.
///
/// How the pieces are laid out here (see docs/ranking.md):
///  - Only the positives are sorted, by (score, flattened index) ascending (std::sort on a total
///    order: deterministic, no allocation). P is small next to N.
///  - Positive–positive sums use prefix arrays over the sorted positives (positive_prefix,
///    up_sum, prefix_sums).
///  - Positive–negative sums Σ_j H_δ(s_j − s_i) ("how many negatives are above positive i") are
///    computed without sorting the negatives. A negative's window [a_j, b_j) in the sorted
///    positives (H = 1 against [0, a_j), H = (s_j − s_i + δ)/(2δ) against [a_j, b_j)) changes
///    only at the 2P thresholds s_i ± δ, so every relevant negative finds its slot among those
///    thresholds with one search (NegativeGrid over a BucketedSearch: O(1) expected, O(log P)
///    worst case) and adds itself to a histogram of counts and offset sums per slot
///    (scatter_negatives). Prefix sums over the 2P + 1 slots then yield F_i for all i, and the
///    slot gives that negative's window, hence its update Down_c(s_j), later
///    (write_updates). Cost O(P log P + N log P), memory O(P + N_rel).
///  - Negatives with s_j ≤ min_P s − δ ("irrelevant") have H = 0 against every positive; they
///    are skipped after one comparison and get an update of exactly 0.
///  - Rank & Sort's IoU-conditioned sums use a Fenwick tree over the positives' score ranks
///    (RankFenwick) with the same window formula.
///
/// Numerics (issue 9; docs/ranking.md §4): H's argument is always the computed difference
/// s_j − s_i (windows and keys are exact thresholds of those predicates, so δ below an ulp of
/// the scores still gives ties ½). Every window lies in one chain of the sorted positives
/// (consecutive scores within 2δ) and its sums are taken relative to the chain's first score,
/// in double-double (prefix sums, Fenwick nodes, per-slot sums of the negatives' offsets from
/// the slot's smallest double): no cancellation against outliers, and the same result for any
/// order of the anchors (to ~2^-100 before the final rounding). Scores and δ are scaled by a
/// power of 2 when they exceed 2^900 so that nothing overflows; δ ≥ 1e-250 keeps 1/δ normal.
/// ε gates use exact integer counts: a sum whose integer count of contributing elements is 0
/// is exactly 0.
///
/// The RankingWorkspace holds every buffer; it grows to the largest problem seen and then a call
/// allocates nothing.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/checks.hpp"
#include "../core/config.hpp"
#include "../core/errors.hpp"

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

/// One slot t of the negative histogram (see NegativeGrid and scatter_negatives).
struct ScatterCell {
  std::int64_t count = 0;  ///< relevant negatives in slot t
  DD sum;                  ///< Σ of their offsets s − key[t − 1] (double-double)
};

/// Precomputed update of a negative in slot t: Down_c(s) = base + slope · min((s − ref)/δ, 4).
struct SlotUpdate {
  double base = 0, slope = 0, ref = 0;
};

/// One positive entry of the flattened N × C ranking.
struct RankedPositive {
  double score;  ///< logit (as double)
  Index flat;    ///< anchor-major flattened index n·C + c (the tie-break key)
  Index anchor;  ///< n
  double aux;    ///< per-positive side input: aLRP localisation error ℓ, RS target IoU y
};

/// Half-open index window [lo, hi) of a sorted set for a query point (see the file comment).
struct Window {
  std::uint32_t lo = 0, hi = 0;
};

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

/// The 2P thresholds at which a negative's window in the sorted positives changes. For a
/// negative of (scaled) score s, its window [lo, hi) in the sorted positives u is
///
///   lo = #{k : s − u_k ≥ δ}    (H_δ(s − u_k) = 1 for k < lo),
///   hi = #{k : s − u_k > −δ}   (H_δ(s − u_k) > 0 for k < hi),
///
/// with the differences as computed in double (monotone in s, so each predicate holds for s
/// above a threshold). Both are counts of thresholds passed, so they are read off one merged,
/// sorted array of keys with the single predicate key < s: key_k is the largest double for which
/// the predicate fails (found from u_k ± δ by nextafter steps or a bisection), so key < s ⇔
/// predicate, exactly, for every δ (also below half an ulp of u_k, where u_k ± δ round to u_k: a
/// negative tied with u_k then gets ½). One search per negative gives its slot t = #{keys < s} ∈
/// [0, 2P]; slot 0 is "H = 0 against every positive" (irrelevant), and window(t) is a table lookup.
/// A tie group of keys is passed all at once, so the table is exact.
class NegativeGrid {
 public:
  /// Builds the keys, the slot → window table and each positive's two key positions.
  void build(const double* u, std::uint32_t p, double delta) {
    keys_.resize(2 * static_cast<std::size_t>(p));
    windows_.resize(2 * static_cast<std::size_t>(p) + 1);
    pos_lo_.resize(p);
    pos_hi_.resize(p);
    constexpr double kInf = std::numeric_limits<double>::infinity();
    // largest double c with !pred(c), pred monotone (false at -DBL_MAX, true at DBL_MAX),
    // starting from the estimate c: a few nextafter steps, else a bisection over the doubles
    const auto threshold = [&](double c, auto pred) {
      for (int i = 0; i < 4; ++i) {
        if (pred(c)) {
          c = std::nextafter(c, -kInf);
        } else if (!pred(std::nextafter(c, kInf))) {
          c = std::nextafter(c, kInf);
        } else {
          return c;
        }
      }
      std::int64_t lo = ordinal(-std::numeric_limits<double>::max());  // pred false
      std::int64_t hi = ordinal(std::numeric_limits<double>::max());   // pred true
      const auto gap = [](std::int64_t l, std::int64_t h) {            // h − l without overflow
        return static_cast<std::uint64_t>(h) - static_cast<std::uint64_t>(l);
      };
      while (gap(lo, hi) > 1) {
        const std::int64_t mid = lo + static_cast<std::int64_t>(gap(lo, hi) / 2);
        if (pred(from_ordinal(mid))) {
          hi = mid;
        } else {
          lo = mid;
        }
      }
      return from_ordinal(lo);
    };
    const auto key_lo = [&](std::uint32_t k) {
      const double uk = u[k];
      return threshold(uk + delta, [&](double c) { return c - uk >= delta; });
    };
    const auto key_hi = [&](std::uint32_t k) {
      const double uk = u[k];
      return threshold(uk - delta, [&](double c) { return c - uk > -delta; });
    };
    std::uint32_t a = 0, b = 0;
    double next_lo = p ? key_lo(0) : 0.0, next_hi = p ? key_hi(0) : 0.0;
    windows_[0] = Window{0, 0};
    for (std::uint32_t t = 0; t < 2 * p; ++t) {
      // merge: take the hi key while it is ≤ the next lo key
      if (b < p && (a == p || next_hi <= next_lo)) {
        keys_[t] = next_hi;
        pos_hi_[b++] = t;
        if (b < p) next_hi = key_hi(b);
      } else {
        keys_[t] = next_lo;
        pos_lo_[a++] = t;
        if (a < p) next_lo = key_lo(a);
      }
      windows_[t + 1] = Window{a, b};
    }
    search_.build(keys_.data(), 2 * p);
    // the smallest double of each slot (its negatives s satisfy keys[t − 1] < s ≤ keys[t])
    slot_ref_.resize(2 * static_cast<std::size_t>(p) + 1);
    slot_ref_[0] = -kInf;
    for (std::size_t t = 1; t <= 2 * static_cast<std::size_t>(p); ++t)
      slot_ref_[t] = std::nextafter(keys_[t - 1], kInf);
  }

  /// The doubles in order as integers (−0 and +0 both map to 0).
  static std::int64_t ordinal(double d) {
    std::int64_t b;
    std::memcpy(&b, &d, sizeof b);
    return b < 0 ? -(b & std::numeric_limits<std::int64_t>::max()) : b;
  }
  static double from_ordinal(std::int64_t o) {
    const std::int64_t b = o < 0 ? ((-o) | std::numeric_limits<std::int64_t>::min()) : o;
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  }

  void reserve(std::size_t p) {
    keys_.reserve(2 * p);
    slot_ref_.reserve(2 * p + 1);
    windows_.reserve(2 * p + 1);
    pos_lo_.reserve(p);
    pos_hi_.reserve(p);
    search_.reserve(2 * p);
  }

  std::size_t capacity_bytes() const {
    return keys_.capacity() * sizeof(double) + windows_.capacity() * sizeof(Window) +
           (pos_lo_.capacity() + pos_hi_.capacity()) * sizeof(std::uint32_t);
  }

  BucketedSearch::View search() const { return search_.view(); }
  const double* keys() const { return keys_.data(); }
  const Window* windows() const { return windows_.data(); }
  /// The smallest double of slot t ≥ 1 (the reference of its negatives' offsets: s − ref ≥ 0,
  /// and every H of the slot's window is in [0, 1] there).
  const double* slot_refs() const { return slot_ref_.data(); }
  /// Position in the keys of positive k's lo key (u_k + δ) and hi key (u_k − δ).
  std::uint32_t pos_lo(std::uint32_t k) const { return pos_lo_[k]; }
  std::uint32_t pos_hi(std::uint32_t k) const { return pos_hi_[k]; }

 private:
  std::vector<double> keys_, slot_ref_;
  std::vector<Window> windows_;
  std::vector<std::uint32_t> pos_lo_, pos_hi_;
  BucketedSearch search_;
};

/// Window of t in a sorted set v[0..n) at ±δ, by the differences themselves (monotone in v_k,
/// so a binary search applies): lo = first k with v_k − t > −δ, hi = first k with v_k − t ≥ δ.
/// Unlike comparing v_k with t ± δ, this never loses an element tied with t when δ is below half
/// an ulp of t (t ± δ would round to t).
inline Window window_at(const double* v, std::uint32_t n, double t, double delta) {
  std::uint32_t lo = 0, len = n;
  while (len > 0) {  // first k with v_k − t > −δ
    const std::uint32_t half = len / 2;
    if (!(v[lo + half] - t > -delta)) {
      lo += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  std::uint32_t hi = lo;
  len = n - lo;
  while (len > 0) {  // first k ≥ lo with v_k − t ≥ δ
    const std::uint32_t half = len / 2;
    if (!(v[hi + half] - t >= delta)) {
      hi += half + 1;
      len -= half + 1;
    } else {
      len = half;
    }
  }
  return {lo, hi};
}

/// Chain references of the sorted positives u[0..n): ref[k] = u of the first element of k's
/// chain, a maximal run in which consecutive scores differ by at most 2δ (a little more, so
/// that rounding can only merge chains, never split one). Every window (of a positive or of a
/// negative) lies inside one chain, so window sums of w·(u − ref) never mix far-apart scores:
/// the cancellation of a window sum is relative to the chain's spread, not to the outliers.
inline void chain_refs(const double* u, std::uint32_t n, double delta, double* ref) {
  const double gap = delta * (1 + 0x1p-40);
  for (std::uint32_t k = 0; k < n; ++k)
    ref[k] = (k > 0 && !(0.5 * (u[k] - u[k - 1]) > gap)) ? ref[k - 1] : u[k];
}

/// Prefix sums W[m] = Σ_{k<m} w_k and V[m] = Σ_{k<m} w_k (u_k − ref_k) in double-double
/// (w = nullptr: unit weights).
inline void prefix_sums(const double* w, const double* u, const double* ref, std::uint32_t n, DD* W,
                        DD* V) {
  DD sw, sv;
  W[0] = V[0] = DD{};
  for (std::uint32_t k = 0; k < n; ++k) {
    const double wk = w ? w[k] : 1.0;
    sw = dd_add(sw, wk);
    sv = dd_add(sv, dd_mul(two_sum(u[k], -ref[k]), wk));
    W[k + 1] = sw;
    V[k + 1] = sv;
  }
}

/// Σ_{k∈[lo,hi)} w_k (u_k − t) = V_w − W_w (t − ref) for a window inside one chain of
/// reference ref (W_w, V_w: the window's weight and offset sums).
inline double window_offset_sum(DD Ww, DD Vw, double t, double ref) {
  return dd_value(dd_sub(Vw, dd_mul(Ww, two_sum(t, -ref))));
}

/// Up(t) = Σ_k w_k H_δ(u_k − t) from the prefix sums and the window of t (Primitive A): the
/// elements above the window count 1, those in it ½ (1 + (u_k − t)/δ).
/// `self` (default 0) is a weight inside the window at t itself (H = ½) to leave out: it is taken
/// from the window's weight sum in double-double, before rounding, so a huge own weight does not
/// swamp the others' (aLRP's Σ_{k≠i} H ℓ_k with ℓ_i = 1.8e55 lost a 0.11 beside it).
inline double up_sum(const DD* W, const DD* V, const double* ref, std::uint32_t n, Window w,
                     double t, double delta, double self = 0.0) {
  const double full = dd_value(dd_sub(W[n], W[w.hi]));
  if (w.lo == w.hi) return full;
  const DD Ww = dd_sub(W[w.hi], W[w.lo]);
  const double off = window_offset_sum(Ww, dd_sub(V[w.hi], V[w.lo]), t, ref[w.lo]);
  const double others = self == 0.0 ? dd_value(Ww) : dd_value(dd_sub(Ww, DD{self, 0.0}));
  return full + 0.5 * (others + off / delta);
}

/// Down(t) = Σ_k c_k H_δ(t − u_k) (Primitive B): the elements below the window count 1, those
/// in it ½ (1 + (t − u_k)/δ).
inline double down_sum(const DD* C, const DD* CV, const double* ref, Window w, double t,
                       double delta) {
  const double below = dd_value(C[w.lo]);
  if (w.lo == w.hi) return below;
  const DD Cw = dd_sub(C[w.hi], C[w.lo]);
  const double off = window_offset_sum(Cw, dd_sub(CV[w.hi], CV[w.lo]), t, ref[w.lo]);
  return below + 0.5 * (dd_value(Cw) - off / delta);
}

/// Fenwick tree (binary indexed tree) over the n score ranks of the sorted positives, holding
/// up to four weighted sums per node (double-double) plus an exact integer count. Used by Rank &
/// Sort loss for the IoU-conditioned window sums of RS loss. Value weights are given relative
/// to the element's chain reference (w · (u − ref), see chain_refs), so that a window sum never
/// cancels against far-away scores.
class RankFenwick {
 public:
  static constexpr int kSums = 4;

  /// Empties the tree for n positions (no allocation once the capacity suffices).
  void reset(std::uint32_t n) {
    n_ = n;
    sums_.assign(static_cast<std::size_t>(n + 1) * kSums, DD{});
    counts_.assign(n + 1, 0);
    total_count_ = 0;
    for (DD& t : totals_) t = DD{};
  }

  /// Reserves room for n positions.
  void reserve(std::size_t n) {
    sums_.reserve((n + 1) * kSums);
    counts_.reserve(n + 1);
  }

  /// Adds (w0..w3) and one to the count at position pos (0-based).
  void add(std::uint32_t pos, const DD (&w)[kSums]) {
    for (int s = 0; s < kSums; ++s) totals_[s] = dd_add(totals_[s], w[s]);
    ++total_count_;
    for (std::uint32_t i = pos + 1; i <= n_; i += i & (~i + 1)) {
      DD* node = &sums_[static_cast<std::size_t>(i) * kSums];
      for (int s = 0; s < kSums; ++s) node[s] = dd_add(node[s], w[s]);
      ++counts_[i];
    }
  }

  /// Sums over positions [0, m): out[s] for each weight, returns the count.
  std::int64_t prefix(std::uint32_t m, DD (&out)[kSums]) const {
    for (DD& o : out) o = DD{};
    std::int64_t c = 0;
    for (std::uint32_t i = m; i > 0; i -= i & (~i + 1)) {
      const DD* node = &sums_[static_cast<std::size_t>(i) * kSums];
      for (int s = 0; s < kSums; ++s) out[s] = dd_add(out[s], node[s]);
      c += counts_[i];
    }
    return c;
  }

  std::int64_t total_count() const { return total_count_; }

  /// Window sums at a query point for the weight pair (count weight `sw`, offset weight `sv`):
  /// Up (Σ w H(v − t)) and the number of inserted elements with v − t > −δ. `ref` is the chain
  /// reference of the window (ref[w.lo]; unused for an empty window).
  struct UpResult {
    double up = 0;
    std::int64_t count = 0;
  };
  UpResult up(Window w, int sw, int sv, double t, double ref, double delta) const {
    DD lo[kSums], hi[kSums];
    const std::int64_t clo = prefix(w.lo, lo);
    const std::int64_t chi = prefix(w.hi, hi);
    UpResult r;
    r.count = total_count_ - clo;
    if (r.count == 0) return r;  // exact zero when nothing is in range
    if (total_count_ != chi) r.up = dd_value(dd_sub(totals_[sw], hi[sw]));
    if (chi != clo) {
      const DD Ww = dd_sub(hi[sw], lo[sw]);
      const double off = window_offset_sum(Ww, dd_sub(hi[sv], lo[sv]), t, ref);
      r.up += 0.5 * (dd_value(Ww) + off / delta);
    }
    return r;
  }

  /// Down (Σ c H(t − v)) for the weight pair (c in `sc`, c·(v − ref) in `scv`).
  double down(Window w, int sc, int scv, double t, double ref, double delta) const {
    DD lo[kSums], hi[kSums];
    const std::int64_t clo = prefix(w.lo, lo);
    const std::int64_t chi = prefix(w.hi, hi);
    double r = clo > 0 ? dd_value(lo[sc]) : 0.0;
    if (chi != clo) {
      const DD Cw = dd_sub(hi[sc], lo[sc]);
      const double off = window_offset_sum(Cw, dd_sub(hi[scv], lo[scv]), t, ref);
      r += 0.5 * (dd_value(Cw) - off / delta);
    }
    return r;
  }

 private:
  std::uint32_t n_ = 0;
  std::vector<DD> sums_;
  std::vector<std::int64_t> counts_;
  DD totals_[kSums] = {};
  std::int64_t total_count_ = 0;
};

}  // namespace detail

/// Reusable buffers of the ranking losses (AP, aLRP, Rank & Sort). Pass the same workspace to
/// every call: it grows to the largest problem seen (O(P) for the positives plus 4 to 8 bytes
/// per relevant negative entry: that buffer grows geometrically) and after that a call
/// allocates nothing. A workspace may be shared
/// by different losses and scalar types, but not by two calls running at the same time.
///
/// Members are implementation details of fgbg's ranking losses.
class RankingWorkspace {
 public:
  RankingWorkspace() = default;

  /// Pre-sizes the buffers for up to `positives` positive entries and `relevant_negatives`
  /// relevant negative entries, so that even the first call does not allocate.
  void reserve(Index positives, Index relevant_negatives) {
    const std::size_t p = static_cast<std::size_t>(std::max<Index>(positives, 0)) + 1;
    pos.reserve(p);
    u.reserve(p);
    ref.reserve(p);
    win.reserve(p);
    for (auto* v : {&F, &weight, &rank, &sort_error, &sort_gap, &sort_share, &g, &c})
      v->reserve(p + 1);
    for (auto* v : {&W, &V, &X, &XV, &weight_sum, &weight_offset_sum}) v->reserve(p + 1);
    count.reserve(p + 1);
    order.reserve(p);
    fenwick.reserve(p);
    grid.reserve(p);
    cells.reserve(2 * p + 1);
    slot_sums.reserve(2 * p + 1);
    slot_updates.reserve(2 * p + 1);
    neg_slots.reserve(static_cast<std::size_t>(std::max<Index>(relevant_negatives, 0)));
  }

  /// Bytes currently reserved (for diagnostics).
  std::size_t capacity_bytes() const {
    std::size_t b = pos.capacity() * sizeof(detail::RankedPositive) +
                    win.capacity() * sizeof(detail::Window) +
                    neg_slots.capacity() * sizeof(std::uint32_t) +
                    order.capacity() * sizeof(std::uint32_t) + grid.capacity_bytes();
    for (auto* v : {&u, &ref, &F, &weight, &rank, &sort_error, &sort_gap, &sort_share, &g, &c})
      b += v->capacity() * sizeof(double);
    for (auto* v : {&W, &V, &X, &XV, &weight_sum, &weight_offset_sum, &slot_sums})
      b += v->capacity() * sizeof(detail::DD);
    b += count.capacity() * sizeof(std::int64_t) + cells.capacity() * sizeof(detail::ScatterCell) +
         slot_updates.capacity() * sizeof(detail::SlotUpdate);
    return b;
  }

  // --- implementation details -----------------------------------------------------------
  std::vector<detail::RankedPositive> pos;       ///< positives sorted by (score, flat index)
  std::vector<double> u;                         ///< their scores, times `scale`
  std::vector<double> ref;                       ///< chain reference of each positive (chain_refs)
  std::vector<detail::Window> win;               ///< window of each positive in u
  std::vector<double> F;                         ///< Σ_{j∈N} H(s_j − s_i) per positive
  std::vector<std::int64_t> count;               ///< #negatives with H > 0 per positive
  std::vector<double> weight;                    ///< per-positive weight (aLRP ℓ, RS 1 − IoU)
  std::vector<detail::DD> weight_sum;            ///< prefix sums of `weight`
  std::vector<detail::DD> weight_offset_sum;     ///< prefix sums of weight · (u − ref)
  std::vector<double> rank;                      ///< aLRP: R_i = R⁺_i + F_i
  std::vector<double> sort_error;                ///< RS: current sorting error c_i
  std::vector<double> sort_gap;                  ///< RS: e_i = c_i − target sorting error
  std::vector<double> sort_share;                ///< RS: d_i = e_i / D_i, sent per unit of H
  std::vector<double> g, c;                      ///< per-positive update and distribution weight
  std::vector<detail::DD> W, V, X, XV;           ///< prefix sums over the sorted positives
  std::vector<detail::ScatterCell> cells;        ///< histogram of the negatives over the slots
  std::vector<detail::DD> slot_sums;             ///< prefix over slots of the chain-relative sums
  std::vector<detail::SlotUpdate> slot_updates;  ///< a negative's update per slot
  std::vector<std::uint32_t> neg_slots;          ///< slot of each relevant negative
  std::vector<std::uint32_t> order;              ///< permutations of the positives
  detail::RankFenwick fenwick;                   ///< Rank & Sort's IoU-conditioned sums
  detail::NegativeGrid grid;                     ///< the negatives' window thresholds
  double scale = 1;                              ///< power of 2 applied to scores and δ
  double delta = 1;                              ///< δ · scale
  Index relevant_negatives = 0;                  ///< N_rel of the last call
};

namespace detail {

/// Resizes a vector without shrinking its capacity (allocates only to grow).
template <typename T>
void grow(std::vector<T>& v, std::size_t n) {
  v.resize(n);
}

/// Checks that P fits the 32-bit windows (always true for any realistic batch).
inline void check_positive_count(const char* where, std::size_t p) {
  // the negatives' grid holds 2P keys and 2P + 1 slots, indexed in 32 bits
  if (p > static_cast<std::size_t>(std::numeric_limits<std::uint32_t>::max() / 2 - 1))
    throw_invalid(where, "too many positive entries (", p, "); at most 2^31 - 2 are supported");
}

/// Collects the positive entries of an N × C sigmoid layout: entry (n, labels[n] − 1) for every
/// anchor with a foreground label for which `is_pos(n)` holds. `aux(n)` gives the side input.
/// Sorts them by (score, flat index), chooses the scale (a power of 2, exact: 1 unless the
/// largest |positive score| or δ exceeds 2^900, then the largest becomes < 2^900, so that no
/// difference or sum can overflow), computes the chain references and each positive's own
/// window. ws.delta is δ · scale. Call only after every check has passed.
template <typename XD, typename LD, typename IsPos, typename Aux>
void gather_positives(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                      const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, const Aux& aux,
                      double delta) {
  const Index n = x.rows(), C = x.cols();
  ws.pos.clear();
  double big = delta;
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab <= 0 || !is_pos(a)) continue;
    const Index col = static_cast<Index>(lab) - 1;
    const double sc = static_cast<double>(x.derived().coeff(a, col));
    big = std::max(big, std::abs(sc));
    ws.pos.push_back({sc, a * C + col, a, aux(a)});
  }
  std::sort(ws.pos.begin(), ws.pos.end(), [](const RankedPositive& l, const RankedPositive& r) {
    return l.score < r.score || (l.score == r.score && l.flat < r.flat);
  });
  ws.scale = big > 0x1p900 ? std::ldexp(1.0, 899 - std::ilogb(big)) : 1.0;
  ws.delta = delta * ws.scale;
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  grow(ws.u, p);
  grow(ws.ref, p);
  grow(ws.win, p);
  for (std::uint32_t k = 0; k < p; ++k) ws.u[k] = ws.pos[k].score * ws.scale;
  chain_refs(ws.u.data(), p, ws.delta, ws.ref.data());
  for (std::uint32_t k = 0; k < p; ++k) ws.win[k] = window_at(ws.u.data(), p, ws.u[k], ws.delta);
}

/// Prefix sums of unit weights (W) and of the chain-relative scores (V) over the sorted
/// positives.
inline void positive_prefix(RankingWorkspace& ws) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  grow(ws.W, p + 1);
  grow(ws.V, p + 1);
  prefix_sums(nullptr, ws.u.data(), ws.ref.data(), p, ws.W.data(), ws.V.data());
}

/// Σ_{k∈P} H_δ(s_k − s_i) for the sorted positive i (self term ½ included).
inline double positives_above(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.W.data(), ws.V.data(), ws.ref.data(), p, ws.win[i], ws.u[i], ws.delta);
}

/// Σ_k w_k H_δ(s_k − s_i) for the sorted positive i with the weighted prefix sums ws.weight_sum and
/// ws.weight_offset_sum (prefix_sums with weights ws.weight); i's own term w_i/2 included.
inline double weighted_above(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.weight_sum.data(), ws.weight_offset_sum.data(), ws.ref.data(), p, ws.win[i],
                ws.u[i], ws.delta);
}

/// Σ_{k≠i} w_k H_δ(s_k − s_i) for the sorted positive i with the weighted prefix sums
/// ws.weight_sum, ws.weight_offset_sum (prefix_sums with weights ws.weight); i's own term w_i/2 is
/// left out inside the sum.
inline double weighted_above_others(const RankingWorkspace& ws, std::uint32_t i) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  return up_sum(ws.weight_sum.data(), ws.weight_offset_sum.data(), ws.ref.data(), p, ws.win[i],
                ws.u[i], ws.delta, ws.weight[i]);
}

/// Computes F_i = Σ_{j∈N} H_δ(s_j − s_i) and the integer count of negatives with H > 0 for every
/// sorted positive i (ws.F, ws.count). Every relevant negative j finds its slot t_j in the
/// NegativeGrid (one search) and is counted in a histogram of count and offset sum per slot
/// (offsets s_j − r_t from the slot's smallest double r_t, in double-double: the same multiset of
/// negatives gives the same sums in any order, to about 2^-100). With prefix sums N(t) and
/// chain-relative offset sums S(t) over the slots and a = pos_lo(k), b = pos_hi(k), for positive k
///
///   count_k = N_rel − N(b)          (negatives with s_j − u_k > −δ: H > 0)
///   full_k  = N_rel − N(a)          (negatives with s_j − u_k ≥ δ: H = 1)
///   F_k     = full_k + ½ (cw + (S(a) − S(b) − cw·(u_k − ref_k))/δ),  cw = count_k − full_k.
///
/// With `keep_slots` the slots are stored (ws.neg_slots, in anchor-major order) for
/// write_updates. Negatives are the entries (n, c) with label ≥ 0 other than the
/// positive entry of their anchor.
template <typename XD, typename LD, typename IsPos>
void scatter_negatives(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                       const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, bool keep_slots) {
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  ws.relevant_negatives = 0;
  if (p == 0) return;
  const double delta = ws.delta;
  const double* u = ws.u.data();
  ws.grid.build(u, p, delta);
  ws.cells.assign(2 * static_cast<std::size_t>(p) + 1, ScatterCell{});
  // locals, so that the hot loop keeps them in registers
  const double scale = ws.scale, first_key = ws.grid.keys()[0];
  const double* const slot_ref = ws.grid.slot_refs();
  const BucketedSearch::View search = ws.grid.search();
  ScatterCell* const cell = ws.cells.data();
  const Index n = x.rows(), C = x.cols();
  // The slot of negative j is added to the histogram and returned (false: irrelevant).
  const auto visit = [&](Index a, Index col, std::uint32_t& t) {
    const double s = static_cast<double>(x.derived().coeff(a, col)) * scale;
    if (!(first_key < s)) return false;  // H = 0 against every positive: irrelevant
    t = search.template bound<false>(s);
    ++cell[t].count;
    cell[t].sum = dd_add(cell[t].sum, s - slot_ref[t]);  // t ≥ 1: s ≥ slot_ref[t]
    return true;
  };
  // The slots buffer: its size is the room available (all of its capacity; reserve() sizes it);
  // it grows only when a slot would not fit, so a call after reserve(P, N_rel) never allocates.
  auto& slots = ws.neg_slots;
  if (keep_slots && slots.size() < slots.capacity()) slots.resize(slots.capacity());
  const std::size_t total = static_cast<std::size_t>(n * C);
  Index relevant = 0;
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab < 0) continue;
    const Index pc = (lab > 0 && is_pos(a)) ? static_cast<Index>(lab) - 1 : -1;
    Index row = 0;  // relevant negatives of this anchor
    std::uint32_t t = 0;
    if (!keep_slots) {
      for (Index col = 0; col < C; ++col) row += (col != pc && visit(a, col, t)) ? 1 : 0;
    } else if (slots.size() >= static_cast<std::size_t>(relevant + C)) {  // room for the row
      std::uint32_t* out = slots.data() + relevant;
      for (Index col = 0; col < C; ++col)
        if (col != pc && visit(a, col, t)) out[row++] = t;
    } else {  // near the end of the buffer: check every slot, grow geometrically if needed
      for (Index col = 0; col < C; ++col) {
        if (col == pc || !visit(a, col, t)) continue;
        const std::size_t used = static_cast<std::size_t>(relevant + row);
        if (used == slots.size()) slots.resize(std::min(std::max(2 * used, used + 1), total));
        slots[used] = t;
        ++row;
      }
    }
    relevant += row;
  }
  ws.relevant_negatives = relevant;
  grow(ws.F, p);
  grow(ws.count, p);
  // prefix sums over the slots: counts in place; S(t) = Σ_{t' ≤ t} (offset sum + count·(key −
  // ref)) over the slots inside a window (the others are never part of a window's difference)
  const std::size_t slots_n = 2 * static_cast<std::size_t>(p) + 1;
  grow(ws.slot_sums, slots_n);
  DD* const S = ws.slot_sums.data();
  const Window* const window = ws.grid.windows();
  S[0] = DD{};
  for (std::size_t t = 1; t < slots_n; ++t) {
    DD contrib;
    const Window w = window[t];
    if (w.lo < w.hi && cell[t].count > 0) {
      const DD shift =
          dd_mul(two_sum(slot_ref[t], -ws.ref[w.lo]), static_cast<double>(cell[t].count));
      contrib = dd_add(cell[t].sum, shift);
    }
    S[t] = dd_add(S[t - 1], contrib);
    cell[t].count += cell[t - 1].count;
  }
  for (std::uint32_t k = 0; k < p; ++k) {
    const std::uint32_t ta = ws.grid.pos_lo(k), tb = ws.grid.pos_hi(k);
    const std::int64_t full = relevant - cell[ta].count, count = relevant - cell[tb].count;
    const std::int64_t cw = count - full;
    double f = static_cast<double>(full);
    if (cw > 0) {
      const double off =
          window_offset_sum(DD{static_cast<double>(cw), 0}, dd_sub(S[ta], S[tb]), u[k], ws.ref[k]);
      f += 0.5 * (static_cast<double>(cw) + off / delta);
    }
    ws.count[k] = count;
    ws.F[k] = count == 0 ? 0.0 : f;
  }
}

/// Largest weight exponent a window sum may meet: weights are at most 2^kMaxWeightExp after
/// scale_down_weights, score offsets at most a few 2^901 after gather_positives' scaling, and up
/// to 2^32 terms are summed, so every window sum stays below 2^975.
inline constexpr int kMaxWeightExp = 40;

/// Scales the n weights w by 2^-m so that the largest is at most 2^kMaxWeightExp and returns m
/// (0, and nothing changed, when the largest already is). Exact except for weights that fall
/// below the normal range: those are below 2^(m − 1022) ≤ 2^-550 of their original size relative
/// to the largest, far below the sums' rounding.
inline int scale_down_weights(double* w, std::uint32_t n) {
  double wmax = 0.0;
  for (std::uint32_t k = 0; k < n; ++k) wmax = std::max(wmax, w[k]);
  const int m = wmax > std::ldexp(1.0, kMaxWeightExp) ? std::ilogb(wmax) - kMaxWeightExp : 0;
  if (m > 0)
    for (std::uint32_t k = 0; k < n; ++k) w[k] = std::ldexp(w[k], -m);
  return m;
}

/// Writes the update of every entry: 0 for ignored entries and irrelevant negatives;
/// scale · Σ_i c_i H_δ(s_j − s_i) for a relevant negative j, with c from ws.c over the sorted
/// positives; ws.g[k] (final, normalisation included) for the sorted positive k. Requires
/// scatter_negatives(…, keep_slots = true) on the same inputs. Each slot's update is
/// precomputed (in double-double) as Down(r_t) at the slot's smallest double r_t plus a slope: a
/// negative's update is then one multiply-add from its slot, with both terms ≥ 0 (no
/// cancellation, whatever the slot's width in units of δ).
template <typename XD, typename LD, typename GD, typename IsPos>
void write_updates(RankingWorkspace& ws, const Eigen::DenseBase<XD>& x,
                   const Eigen::DenseBase<LD>& labels, const IsPos& is_pos, double scale,
                   GD& grad) {
  using GS = typename GD::Scalar;
  const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
  const Index n = x.rows(), C = x.cols();
  if (p == 0) {
    grad.derived().setZero();
    return;
  }
  const double delta = ws.delta, inv_delta = 1.0 / ws.delta, sscale = ws.scale;
  // The weights c (aLRP: E_i/F_i, up to (max ℓ + 1)·2^111) are multiplied by score offsets of up
  // to a few δ (≤ 2^902 after gather_positives' scaling) in the window sums, which overflowed
  // (NaN updates for δ = 4.4e262 with ℓ = 1.8e55) although every update is at most max E. They
  // are scaled by 2^-m (scale_down_weights) so that no sum can overflow, and each slot's base and
  // slope by 2^m: the bits are unchanged when m = 0, i.e. whenever max c ≤ 2^kMaxWeightExp.
  const int m = scale_down_weights(ws.c.data(), p);
  grow(ws.X, p + 1);
  grow(ws.XV, p + 1);
  prefix_sums(ws.c.data(), ws.u.data(), ws.ref.data(), p, ws.X.data(), ws.XV.data());
  const std::size_t slots_n = 2 * static_cast<std::size_t>(p) + 1;
  grow(ws.slot_updates, slots_n);
  SlotUpdate* const su = ws.slot_updates.data();
  const Window* const window = ws.grid.windows();
  const double* const slot_ref = ws.grid.slot_refs();
  su[0] = SlotUpdate{};
  for (std::size_t t = 1; t < slots_n; ++t) {
    const Window w = window[t];
    SlotUpdate& out = su[t];
    out.ref = slot_ref[t];
    out.base = std::ldexp(
        scale * down_sum(ws.X.data(), ws.XV.data(), ws.ref.data(), w, out.ref, delta), m);
    out.slope =
        w.lo < w.hi ? std::ldexp(scale * 0.5 * dd_value(dd_sub(ws.X[w.hi], ws.X[w.lo])), m) : 0.0;
  }
  const double first_key = ws.grid.keys()[0];
  const std::uint32_t* slot = ws.neg_slots.data();
  for (Index a = 0; a < n; ++a) {
    const auto lab = labels.derived().coeff(a);
    if (lab < 0) {
      for (Index col = 0; col < C; ++col) grad.coeffRef(a, col) = GS(0);
      continue;
    }
    const Index pc = (lab > 0 && is_pos(a)) ? static_cast<Index>(lab) - 1 : -1;
    for (Index col = 0; col < C; ++col) {
      GS out = GS(0);
      const double s = static_cast<double>(x.derived().coeff(a, col)) * sscale;
      if (col != pc && first_key < s) {
        const SlotUpdate& q = su[*slot++];
        out = static_cast<GS>(q.base + q.slope * std::min((s - q.ref) * inv_delta, 4.0));
      }
      grad.coeffRef(a, col) = out;
    }
  }
  for (std::uint32_t k = 0; k < p; ++k) {
    const Index flat = ws.pos[k].flat;
    grad.coeffRef(flat / C, flat % C) = static_cast<GS>(ws.g[k]);
  }
}

/// Two values of one ranking call, in double (RS: rank, sort; aLRP: cls, loc).
struct RankValues {
  double first = 0, second = 0;
};

/// The checks every ranking call starts with, in order: label range and length, the update's
/// shape and that it shares no memory with the logits (if wanted), finite logits, and a positive
/// count that fits the 32-bit windows. Nothing is written. Returns the label counts.
template <typename Scalar, typename XD, typename LD, typename GD>
LabelStats check_ranking_call(const char* where, const Eigen::DenseBase<XD>& x,
                              const Eigen::DenseBase<LD>& labels, const GD& grad) {
  static_assert(std::is_same<typename XD::Scalar, Scalar>::value,
                "fgbg: the logits must have the loss's scalar type");
  const LabelStats s = check_labels(where, labels, x.rows(), x.cols());
  if constexpr (kGiven<GD>) {
    static_assert(std::is_same<typename GD::Scalar, Scalar>::value,
                  "fgbg: the gradient must have the loss's scalar type");
    check_output(where, "grad", grad, x.rows(), x.cols());
    // The update is written while the logits are still read (sorted positives, negatives'
    // slots): a gradient over the logits' memory would read its own writes.
    check_no_alias(where, x.derived(), grad.derived());
  }
  check_finite(where, "logits", x);
  check_positive_count(where, static_cast<std::size_t>(s.positives));
  return s;
}

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

/// Calls f(first, count) for every run of equal group id, in order.
template <typename GrD, typename F>
void for_each_group(const Eigen::DenseBase<GrD>& groups, F&& f) {
  const Index n = groups.size();
  Index first = 0;
  for (Index a = 1; a <= n; ++a) {
    if (a == n || groups.derived().coeff(a) != groups.derived().coeff(first)) {
      f(first, a - first);
      first = a;
    }
  }
}

/// Number of groups with at least one anchor for which has_positive(anchor) holds.
template <typename GrD, typename HasPos>
Index count_groups_with_positives(const Eigen::DenseBase<GrD>& groups, const HasPos& has_positive) {
  Index count = 0;
  for_each_group(groups, [&](Index first, Index len) {
    for (Index a = first; a < first + len; ++a)
      if (has_positive(a)) {
        ++count;
        return;
      }
  });
  return count;
}

/// Smallest δ the ranking losses accept. Below it 1/δ (after the scores are scaled down by up to
/// 2^-124 so that no sum overflows, see gather_positives) would leave the normal range; every δ
/// in [kMinDelta, DBL_MAX] is computed for every finite score.
inline constexpr double kMinDelta = 1e-250;

/// Validates a ranking-loss δ (finite and ≥ kMinDelta).
inline void check_delta(const char* where, double delta) {
  require_param(std::isfinite(delta) && delta >= kMinDelta, where, "delta", "finite and >= 1e-250",
                delta);
}

/// Validates an ε gate (finite, ≥ 0).
inline void check_eps(const char* where, double eps) {
  require_param(std::isfinite(eps) && eps >= 0, where, "eps", "finite and >= 0", eps);
}

/// Checks the per-anchor side input (aLRP ℓ, RS IoU) of a ranking loss at the anchors with a
/// foreground label: check_positive_values, with the loss's scalar type.
template <typename Scalar, typename TD, typename LD>
void check_positive_side_input(const char* where, const char* arg, const Eigen::DenseBase<TD>& t,
                               const Eigen::DenseBase<LD>& labels, double lo, double hi,
                               const char* range) {
  static_assert(std::is_same<typename TD::Scalar, Scalar>::value,
                "fgbg: the side input must have the loss's scalar type");
  check_positive_values(where, arg, t, labels, lo, hi, range);
}

}  // namespace detail
}  // namespace fgbg
