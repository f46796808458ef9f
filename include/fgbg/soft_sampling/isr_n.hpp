/// @file isr_n.hpp
/// @brief ISR-N of PISA: the Score-HLR sampler of a two-stage (R-CNN) head, which picks the
///        negatives by their score hierarchical local rank after NMS matching and weights them;
///        and `nms_match`, the grouping it relies on.
///
/// Cao, Chen, Loy, Lin, "Prime Sample Attention in Object Detection", CVPR 2020.
/// Matches `ScoreHLRSampler` of mmdetection (`task_modules/samplers/score_hlr_sampler.py`, the
/// authors' release) and mmcv's `nms_match` (hand-checked weights in tests/test_pisa.cpp).
///
/// Per image, over N candidates (proposals, GT boxes prepended by the caller if wanted) with an
/// assignment `assigned` (−1 ignore, 0 negative, ≥ 1 positive: mmdetection's gt_inds or the
/// −1/0/1..C labels, only the sign matters):
///
/// 1. Positives: P = min(|Pos|, ⌊num·pos_fraction⌋) chosen uniformly without replacement
///    (returned ascending). N_exp = num − P, capped at ⌊neg_pos_ub·max(1, P)⌋ if neg_pos_ub ≥ 0
///    (−1: no bound, the only negative accepted; the cap is taken in double, so a huge finite
///    bound such as 1e30 acts as no bound instead of overflowing).
/// 2. Each negative i is scored from its R-CNN logits row (N × (C+1), column 0 background; a
///    no-grad forward of the current head): s_i = max_{c ≥ 1} p_{i,c}, a_i = its class (lowest
///    on ties), ℓ_i = −log p_{i,0} (the background cross-entropy). Valid: s_i > score_thr.
/// 3. N' = min(#neg, N_exp), n_hlr = min(|V|, N'), n_rand = N' − n_hlr.
/// 4. If |V| > 0: the valid negatives' boxes (class a_i's decoded box; `boxes` is N × 4 for a
///    class-agnostic regressor or N × 4C, class a at columns 4(a−1)..4(a−1)+3) are grouped by
///    nms_match(iou_thr); the local rank ρ is the position within the group. They are ordered by
///    (ρ ascending, s descending, index ascending) — exactly the order of mmdetection's
///    importance |V| − ρ + s — and the first n_hlr are taken, then n_rand random invalid
///    negatives. Weights, with U = max(N', |V|): v_j = (U − j)/U for the j-th ranked negative,
///    (U − n_hlr + 1)/U for the random ones; v ← (b + (1 − b)v)^k (k = 0.5, b = 0: a square
///    root); v ← v · Σ_sel ℓ / Σ_sel ℓ·v (the negative loss is unchanged; if Σ ℓ·v = 0 the
///    ratio is 1).
/// 5. Else N' random negatives with weight 1.
///
/// Output: a Sample (hard_sampling/sample.hpp): positives ascending; negatives in rank order then
/// the random ones (ascending), with negative_weights aligned; `sample_weights` turns it into Ω.
///
/// nms_match: boxes sorted by (score descending, index ascending); each box not yet suppressed
/// keeps and suppresses every later unsuppressed box with IoU ≥ iou_thr; a group is the kept box
/// followed by the boxes it suppressed, in score order. IoU is boxes/iou.hpp's (mmdetection's
/// convention: no +1, union clamped to 1e-6), in the box scalar type.
///
/// Choices: the sampler works per image, so mmdetection's check of
/// image 0's weights only does not arise; class-agnostic boxes are accepted; ties are broken by
/// index; the importance order is exact where mmdetection's float32 |V| − ρ + s ties scores
/// closer than ulp(|V|); N' = 0 returns no negatives (mmdetection fails on an empty minimum).
/// Randomness (the positives and the padding) comes from the caller's URBG; with the same seed
/// the result is the same. The RNG is drawn only after every check has passed.
///
/// Cost: O(N + |V| log |V| + K·|V|) for K kept boxes, vectorised IoU over 64-box tiles. The
/// buffers live in a ScoreHlrWorkspace; once it has seen the largest sizes no call allocates
/// (the Sample's vectors too).
///
/// @throws std::invalid_argument for a bad config, shape, assignment value < −1, inverted box;
///         std::domain_error for a non-finite logit or box coordinate that is read. Nothing is
///         written (and the RNG is not advanced) then.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../boxes/iou.hpp"
#include "../core/checks.hpp"
#include "../core/numerics.hpp"
#include "../core/random.hpp"
#include "../hard_sampling/sample.hpp"
#include "../hard_sampling/sampling_common.hpp"
#include "pisa_common.hpp"

namespace fgbg {

/// Groups of nms_match: group g is members[begin[g] .. begin[g+1]) (kept box first).
struct NmsMatchGroups {
  std::vector<Index> members;
  std::vector<Index> begin;  ///< size groups() + 1
  Index groups() const { return begin.empty() ? 0 : static_cast<Index>(begin.size()) - 1; }
  void clear() {
    members.clear();
    begin.clear();
  }
};

/// Reusable buffers of nms_match (and of the Score-HLR sampler).
template <typename Scalar>
struct NmsMatchWorkspace {
  std::vector<Index> order;                    ///< box ids in (score desc, id asc) order
  std::vector<Scalar> sorted;                  ///< boxes in that order, row-major V × 4
  std::vector<detail::BoxTile<Scalar>> tiles;  ///< the same, as 64-box tiles
  std::vector<std::uint64_t> alive;  ///< per tile: bit mask of boxes neither suppressed nor visited
  std::vector<Index> local_rank;     ///< by sorted position: rank within the group
};

namespace detail {

/// Index of the lowest set bit of a non-zero mask.
inline int pisa_lowest_bit(std::uint64_t m) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(m);
#else
  int j = 0;
  while (!(m & 1)) {
    m >>= 1;
    ++j;
  }
  return j;
#endif
}

/// Greedy NMS matching over `ws.sorted` (v boxes, already sorted by score descending). Fills
/// ws.local_rank and, if `groups` is not null, the groups as sorted positions.
template <typename Scalar>
void nms_match_sorted(Index v, double iou_thr, NmsMatchWorkspace<Scalar>& ws,
                      NmsMatchGroups* groups) {
  using Tile = BoxTile<Scalar>;
  const Index ntiles = (v + Tile::kSize - 1) / Tile::kSize;
  if (static_cast<Index>(ws.tiles.size()) < ntiles) ws.tiles.resize(ntiles);
  Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 4, Eigen::RowMajor>> boxes(ws.sorted.data(),
                                                                                   v, 4);
  for (Index t = 0; t < ntiles; ++t)
    ws.tiles[t].load(boxes, t * Tile::kSize, std::min(Tile::kSize, v - t * Tile::kSize));
  ws.local_rank.assign(static_cast<std::size_t>(v), 0);
  // alive[t]: bit j set while box t·kMaskBits + j is neither suppressed nor visited, so each kept
  // box looks only at live boxes after it, and exhausted tiles are skipped.
  constexpr Index kMaskBits = 64;  // the bits of one std::uint64_t mask: one per box of a tile
  static_assert(Tile::kSize == kMaskBits, "one 64-bit mask per tile");
  ws.alive.resize(static_cast<std::size_t>(ntiles));
  for (Index t = 0; t < ntiles; ++t)
    ws.alive[t] =
        ws.tiles[t].n == kMaskBits ? ~std::uint64_t(0) : (std::uint64_t(1) << ws.tiles[t].n) - 1;
  const Scalar thr = static_cast<Scalar>(iou_thr);
  typename Tile::Vec iou;
  for (Index i = 0; i < v; ++i) {
    const std::uint64_t bit = std::uint64_t(1) << (i % kMaskBits);
    if (!(ws.alive[i / kMaskBits] & bit)) continue;  // suppressed
    ws.alive[i / kMaskBits] &= ~bit;                 // visited (kept)
    if (groups) {
      groups->begin.push_back(static_cast<Index>(groups->members.size()));
      groups->members.push_back(i);
    }
    Index rank = 0;
    const Scalar* b = ws.sorted.data() + 4 * i;
    for (Index t = i / kMaskBits; t < ntiles; ++t) {
      if (ws.alive[t] == 0) continue;
      ws.tiles[t].iou_with(b[0], b[1], b[2], b[3], iou);
      std::uint64_t hit = 0;
      for (int j = 0; j < kMaskBits; ++j) hit |= std::uint64_t(iou[j] >= thr) << j;
      hit &= ws.alive[t];
      ws.alive[t] &= ~hit;
      while (hit) {  // in increasing position, i.e. score order
        const int j = pisa_lowest_bit(hit);
        hit &= hit - 1;
        const Index p = t * kMaskBits + j;
        ws.local_rank[p] = ++rank;
        if (groups) groups->members.push_back(p);
      }
    }
  }
  if (groups) groups->begin.push_back(static_cast<Index>(groups->members.size()));
}

/// Sorts ws.order (box ids) by (score desc, id asc) and gathers their boxes into ws.sorted.
template <typename Scalar, typename ScoreAt, typename BoxAt>
void nms_sort_and_gather(NmsMatchWorkspace<Scalar>& ws, const ScoreAt& score,
                         const BoxAt& box_coeff) {
  std::sort(ws.order.begin(), ws.order.end(), [&](Index a, Index b) {
    const double sa = score(a), sb = score(b);
    if (sa != sb) return sa > sb;
    return a < b;
  });
  ws.sorted.resize(4 * ws.order.size());
  for (std::size_t p = 0; p < ws.order.size(); ++p)
    for (int c = 0; c < 4; ++c) ws.sorted[4 * p + c] = box_coeff(ws.order[p], c);
}

}  // namespace detail

/// Groups boxes (V × 4) by greedy NMS matching with their scores (V); see the file comment.
/// `groups` receives box ids. No allocation once `groups` and `ws` have seen the largest V.
/// @throws std::invalid_argument / std::domain_error for bad boxes, scores of the wrong length,
///         non-finite scores or iou_thr outside [0, 1]; nothing is written then.
template <typename BD, typename SD>
void nms_match(const Eigen::DenseBase<BD>& boxes, const Eigen::DenseBase<SD>& scores,
               double iou_thr, NmsMatchGroups& groups, NmsMatchWorkspace<typename BD::Scalar>& ws) {
  using Scalar = typename BD::Scalar;
  constexpr const char* kWhere = "fgbg::nms_match";
  detail::check_boxes(kWhere, "boxes", boxes);
  const Index v = boxes.rows();
  detail::check_vector(kWhere, "scores", scores, v);
  detail::check_finite(kWhere, "scores", scores);
  if (!(iou_thr >= 0.0 && iou_thr <= 1.0))
    detail::throw_invalid(kWhere, "iou_thr must be in [0, 1], got ", iou_thr);
  ws.order.resize(static_cast<std::size_t>(v));
  for (Index i = 0; i < v; ++i) ws.order[i] = i;
  detail::nms_sort_and_gather(
      ws, [&](Index i) { return static_cast<double>(scores.derived().coeff(i)); },
      [&](Index i, int c) { return static_cast<Scalar>(boxes.derived().coeff(i, c)); });
  groups.clear();
  detail::nms_match_sorted(v, iou_thr, ws, &groups);
  for (Index& m : groups.members) m = ws.order[m];
}

/// Configuration of ScoreHlrSampler; defaults are mmdetection's PISA R-CNN ones.
struct ScoreHlrSamplerConfig {
  Index num = 512;             ///< RoIs per image, ≥ 0
  double pos_fraction = 0.25;  ///< upper bound on the positive fraction, in [0, 1]
  double neg_pos_ub = -1;      ///< −1: no bound; else finite ≥ 0, negatives ≤ ub·max(1, P)
  double k = 0.5;              ///< exponent of the weight map, finite and ≥ 0
  double bias = 0;             ///< bias of the weight map, in [0, 1]
  double score_thr = 0.05;     ///< valid negatives have max foreground score > this, in [0, 1)
  double iou_thr = 0.5;        ///< NMS-match IoU threshold, in [0, 1]

  /// The batch fields as a SamplerConfig: the same validation and the same expected counts
  /// (⌊num · pos_fraction⌋ positives, then the negatives' bound) as every other sampler.
  SamplerConfig batch() const { return {num, pos_fraction, neg_pos_ub, true}; }
};

/// Reusable buffers of ScoreHlrSampler (one per thread).
template <typename Scalar>
struct ScoreHlrWorkspace {
  std::vector<Index> pos;      ///< positive candidates
  std::vector<Index> neg;      ///< negative candidates, ascending
  std::vector<double> score;   ///< per negative: s
  std::vector<double> loss;    ///< per negative: ℓ
  std::vector<Label> cls;      ///< per negative: a (1..C)
  std::vector<Index> invalid;  ///< negative candidates with s ≤ score_thr
  std::vector<Index> hlr;      ///< sorted positions in importance order
  NmsMatchWorkspace<Scalar> nms;
};

/// What one ScoreHlrSampler call did.
struct ScoreHlrResult {
  Index positives = 0;           ///< P
  Index expected_negatives = 0;  ///< N'
  Index valid = 0;               ///< |V|
  Index ranked = 0;              ///< n_hlr
  Index random = 0;              ///< negatives drawn at random
  double ratio = 1.0;            ///< loss-preserving ratio applied to the negative weights
};

/// Score-HLR sampler (ISR-N); see the file comment. Scalar is the logits' and boxes' type.
template <typename Scalar>
class ScoreHlrSampler {
 public:
  using Config = ScoreHlrSamplerConfig;
  static constexpr const char* kName = "fgbg::ScoreHlrSampler";

  explicit ScoreHlrSampler(const Config& config = {}) : config_(config) {
    config.batch().validate(kName);
    detail::require_param(std::isfinite(config.k) && config.k >= 0, kName, "k", "finite and >= 0",
                          config.k);
    detail::require_param(config.bias >= 0 && config.bias <= 1, kName, "bias", "in [0, 1]",
                          config.bias);
    detail::require_param(config.score_thr >= 0 && config.score_thr < 1, kName, "score_thr",
                          "in [0, 1)", config.score_thr);
    detail::require_param(config.iou_thr >= 0 && config.iou_thr <= 1, kName, "iou_thr", "in [0, 1]",
                          config.iou_thr);
  }

  const Config& config() const { return config_; }

  /// Samples one image into `out` (cleared first); see the file comment.
  template <typename AD, typename XD, typename BD, typename URBG>
  ScoreHlrResult sample(const Eigen::DenseBase<AD>& assigned, const Eigen::DenseBase<XD>& logits,
                        const Eigen::DenseBase<BD>& boxes, URBG& rng, Sample& out,
                        ScoreHlrWorkspace<Scalar>& ws) const {
    static_assert(std::is_integral<typename AD::Scalar>::value,
                  "fgbg::ScoreHlrSampler: the assignment must be an integer array");
    static_assert(std::is_same<typename XD::Scalar, Scalar>::value &&
                      std::is_same<typename BD::Scalar, Scalar>::value,
                  "fgbg::ScoreHlrSampler: logits and boxes must have the sampler's scalar type");
    // ---- validation and the deterministic part; nothing is written to `out` or `rng` ----
    const Index n = assigned.size();
    detail::check_vector(kName, "assigned", assigned, n);
    const Index c = check_shapes(n, logits, boxes);
    split_candidates(assigned, ws);
    score_negatives(logits, boxes, c, ws);
    const Index n_pos = static_cast<Index>(ws.pos.size());
    ScoreHlrResult r = plan_counts(n_pos, static_cast<Index>(ws.neg.size()),
                                   static_cast<Index>(ws.nms.order.size()));
    const Index n_prime = r.expected_negatives;
    const bool ranked = r.valid > 0 && n_prime > 0;
    if (ranked) rank_valid_negatives(boxes, r.valid, ws);

    // ---- random draws (positives first, as mmdetection), then the output ----
    out.clear();
    draw_positives(n_pos, r.positives, rng, ws, out);
    if (n_prime == 0) return r;
    if (!ranked) {
      draw_unranked_negatives(n_prime, rng, ws, out);
      return r;
    }
    double num = 0.0, den = 0.0;  // Σ_sel ℓ and Σ_sel ℓ·v
    weigh_ranked_negatives(r, n_prime, rng, ws, out, num, den);
    if (!(std::isfinite(num) && std::isfinite(den))) scaled_loss_sums(logits, c, out, num, den);
    r.ratio = apply_loss_ratio(num, den, out);
    return r;
  }

 private:
  /// Checks the shapes of the logits (N × (C+1), C ≥ 1) and boxes (N × 4 or N × 4C); returns C.
  template <typename XD, typename BD>
  static Index check_shapes(Index n, const Eigen::DenseBase<XD>& logits,
                            const Eigen::DenseBase<BD>& boxes) {
    if (logits.rows() != n || logits.cols() < 2)
      detail::throw_invalid(kName, "logits must be ", n,
                            " x (C+1) with C >= 1 (column 0 is background), got ", logits.rows(),
                            " x ", logits.cols());
    const Index c = logits.cols() - 1;
    if (boxes.rows() != n || (boxes.cols() != 4 && boxes.cols() != 4 * c))
      detail::throw_invalid(kName, "boxes must be ", n, " x 4 (class-agnostic) or ", n, " x ",
                            4 * c, " (class-specific), got ", boxes.rows(), " x ", boxes.cols());
    return c;
  }

  /// Checks the assignment values and splits the candidates into ws.pos (> 0) and ws.neg (= 0,
  /// ascending).
  template <typename AD>
  static void split_candidates(const Eigen::DenseBase<AD>& assigned,
                               ScoreHlrWorkspace<Scalar>& ws) {
    ws.pos.clear();
    ws.neg.clear();
    for (Index i = 0; i < assigned.size(); ++i) {
      const long long a = static_cast<long long>(assigned.derived().coeff(i));
      if (a < -1)
        detail::throw_invalid(kName, "assigned(", i, ") = ", a,
                              " must be -1 (ignore), 0 (negative) or >= 1 (positive)");
      if (a > 0) ws.pos.push_back(i);
      if (a == 0) ws.neg.push_back(i);
    }
  }

  /// Scores every negative j from its logits row (s_j, ℓ_j, a_j into ws.score, ws.loss, ws.cls;
  /// the row is checked finite). Valid negatives (s_j > score_thr) go to ws.nms.order as negative
  /// positions, their class-a_j box checked; the others to ws.invalid as candidate ids.
  template <typename XD, typename BD>
  void score_negatives(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<BD>& boxes,
                       Index c, ScoreHlrWorkspace<Scalar>& ws) const {
    const Index n_neg = static_cast<Index>(ws.neg.size());
    ws.score.resize(ws.neg.size());
    ws.loss.resize(ws.neg.size());
    ws.cls.resize(ws.neg.size());
    ws.invalid.clear();
    ws.nms.order.clear();
    for (Index j = 0; j < n_neg; ++j) {
      const Index i = ws.neg[j];
      const auto row = logits.derived().row(i);
      if (!((row.array() * Scalar(0)).sum() == Scalar(0)))  // vectorised finiteness probe
        for (Index col = 0; col <= c; ++col)
          if (!std::isfinite(row.coeff(col)))
            detail::throw_non_finite(kName, "logits", i, col, double(row.coeff(col)));
      const Scalar fg_max = row.tail(c).maxCoeff();
      const Scalar m = std::max(fg_max, row.coeff(0));
      const double lse =
          static_cast<double>(m) + std::log(static_cast<double>((row.array() - m).exp().sum()));
      Index a = 1;
      while (row.coeff(a) != fg_max) ++a;  // first (lowest) class reaching the maximum
      ws.score[j] = std::exp(static_cast<double>(row.coeff(a)) - lse);
      ws.loss[j] = lse - static_cast<double>(row.coeff(0));
      ws.cls[j] = static_cast<Label>(a);
      if (ws.score[j] > config_.score_thr) {
        ws.nms.order.push_back(j);
        const Index off = boxes.cols() == 4 ? 0 : 4 * (a - 1);
        for (int q = 0; q < 4; ++q) {
          const Scalar v = boxes.derived().coeff(i, off + q);
          if (!std::isfinite(v)) detail::throw_non_finite(kName, "boxes", i, off + q, double(v));
        }
        if (boxes.derived().coeff(i, off + 2) < boxes.derived().coeff(i, off) ||
            boxes.derived().coeff(i, off + 3) < boxes.derived().coeff(i, off + 1))
          detail::throw_invalid(kName, "boxes row ", i, " (class ", a,
                                ") is inverted; boxes must be (x1, y1, x2, y2) with x2 >= x1 and "
                                "y2 >= y1");
      } else {
        ws.invalid.push_back(i);
      }
    }
  }

  /// The counts of the call (P, N', |V|, n_hlr, n_rand) from the pool sizes.
  ScoreHlrResult plan_counts(Index n_pos, Index n_neg, Index n_valid) const {
    ScoreHlrResult r;
    // The batch rule of every sampler (SamplerConfig: clamped in double, so num = INT64_MAX or a
    // bound of 1e30 cannot overflow); 0 ≤ P ≤ num.
    const SamplerConfig batch = config_.batch();
    r.positives = std::min(n_pos, batch.expected_positives());
    r.expected_negatives = std::min(n_neg, batch.expected_negatives(r.positives));
    r.valid = n_valid;
    const Index n_prime = r.expected_negatives;
    if (r.valid > 0 && n_prime > 0) {
      r.ranked = std::min(r.valid, n_prime);
      r.random = n_prime - r.ranked;
    } else {
      r.random = n_prime;
    }
    return r;
  }

  /// NMS matching of the `valid` negatives' boxes, then their importance order (local rank
  /// ascending, then sorted position: score descending, index ascending) into ws.hlr.
  template <typename BD>
  void rank_valid_negatives(const Eigen::DenseBase<BD>& boxes, Index valid,
                            ScoreHlrWorkspace<Scalar>& ws) const {
    detail::nms_sort_and_gather(
        ws.nms, [&](Index j) { return ws.score[j]; },
        [&](Index j, int q) {
          const Index off = boxes.cols() == 4 ? 0 : 4 * (ws.cls[j] - 1);
          return boxes.derived().coeff(ws.neg[j], off + q);
        });
    detail::nms_match_sorted(valid, config_.iou_thr, ws.nms, nullptr);
    ws.hlr.resize(static_cast<std::size_t>(valid));
    for (Index p = 0; p < valid; ++p) ws.hlr[p] = p;
    const auto& rank = ws.nms.local_rank;
    std::sort(ws.hlr.begin(), ws.hlr.end(), [&](Index a, Index b) {
      if (rank[a] != rank[b]) return rank[a] < rank[b];
      return a < b;  // sorted position: score desc, index asc
    });
  }

  /// The first draw: `chosen` of the n_pos positives uniformly, into out.positives ascending.
  template <typename URBG>
  static void draw_positives(Index n_pos, Index chosen, URBG& rng, ScoreHlrWorkspace<Scalar>& ws,
                             Sample& out) {
    if (n_pos > chosen) choose_in_place(ws.pos, chosen, rng);
    out.positives.assign(ws.pos.begin(), ws.pos.begin() + chosen);
    std::sort(out.positives.begin(), out.positives.end());
  }

  /// No valid negative: n_prime negatives uniformly, ascending, with weight 1.
  template <typename URBG>
  static void draw_unranked_negatives(Index n_prime, URBG& rng, ScoreHlrWorkspace<Scalar>& ws,
                                      Sample& out) {
    ws.invalid.assign(ws.neg.begin(), ws.neg.end());
    choose_in_place(ws.invalid, n_prime, rng);
    out.negatives.assign(ws.invalid.begin(), ws.invalid.begin() + n_prime);
    std::sort(out.negatives.begin(), out.negatives.end());
    out.negative_weights.assign(static_cast<std::size_t>(n_prime), 1.0);
  }

  /// The r.ranked negatives in importance order with weights v_j, then r.random invalid ones
  /// drawn uniformly (ascending) with the padding weight; adds Σ ℓ to `num` and Σ ℓ·v to `den`.
  template <typename URBG>
  void weigh_ranked_negatives(const ScoreHlrResult& r, Index n_prime, URBG& rng,
                              ScoreHlrWorkspace<Scalar>& ws, Sample& out, double& num,
                              double& den) const {
    const double u = static_cast<double>(std::max(n_prime, r.valid));
    const double b = config_.bias, k = config_.k;
    auto map = [&](double v) {
      const double base = b + (1.0 - b) * v;
      return pow_fast(base, k, [&] { return std::pow(base, k); });
    };
    for (Index j = 0; j < r.ranked; ++j) {
      const Index neg_pos = ws.nms.order[ws.hlr[j]];
      const double w = map((u - static_cast<double>(j)) / u);
      out.negatives.push_back(ws.neg[neg_pos]);
      out.negative_weights.push_back(w);
      num += ws.loss[neg_pos];
      den += ws.loss[neg_pos] * w;
    }
    if (r.random > 0) {
      choose_in_place(ws.invalid, r.random, rng);
      std::sort(ws.invalid.begin(), ws.invalid.begin() + r.random);
      const double w = map((u - static_cast<double>(r.ranked) + 1.0) / u);
      for (Index j = 0; j < r.random; ++j) {
        const Index cand = ws.invalid[j];
        // ℓ of this candidate: find its negative position (neg is ascending).
        const Index neg_pos = static_cast<Index>(
            std::lower_bound(ws.neg.begin(), ws.neg.end(), cand) - ws.neg.begin());
        out.negatives.push_back(cand);
        out.negative_weights.push_back(w);
        num += ws.loss[neg_pos];
        den += ws.loss[neg_pos] * w;
      }
    }
  }

  /// Exponent of the fallback's scaling: ℓ/2 ≤ DBL_MAX and every weight v ≤ 1, so with the
  /// 2^-64 the sums of up to 2^63 (any Index count of) sampled negatives stay below DBL_MAX.
  static constexpr int kFallbackLossExp = 64;

  /// The overflow fallback of the ratio's sums. A double logit row with max − x0 beyond DBL_MAX
  /// has ℓ = inf, or the sums overflow. The ratio is scale-free: `num` and `den` are recomputed
  /// with ℓ · 2^-65 = (lse / 2 − x0 / 2) · 2^-kFallbackLossExp (finite for every finite row; the
  /// rows it is taken for are the sampled negatives).
  template <typename XD>
  static void scaled_loss_sums(const Eigen::DenseBase<XD>& logits, Index c, const Sample& out,
                               double& num, double& den) {
    num = den = 0.0;
    for (std::size_t q = 0; q < out.negatives.size(); ++q) {
      const auto row = logits.derived().row(out.negatives[q]);
      double m = -std::numeric_limits<double>::infinity();
      for (Index col = 0; col <= c; ++col) m = std::max(m, static_cast<double>(row.coeff(col)));
      double sum = 0.0;
      for (Index col = 0; col <= c; ++col) sum += std::exp(static_cast<double>(row.coeff(col)) - m);
      const double half = (0.5 * m + 0.5 * std::log(sum)) - 0.5 * static_cast<double>(row.coeff(0));
      const double l = std::ldexp(half, -kFallbackLossExp);
      num += l;
      den += l * out.negative_weights[q];
    }
  }

  /// Multiplies the negative weights by the loss-preserving ratio num / den (1 when den is 0 or
  /// the ratio is not finite) and returns it.
  static double apply_loss_ratio(double num, double den, Sample& out) {
    const double ratio = num / den;
    const double applied = (den > 0.0 && std::isfinite(ratio)) ? ratio : 1.0;
    for (double& w : out.negative_weights) w *= applied;
    return applied;
  }

  Config config_;
};

}  // namespace fgbg
