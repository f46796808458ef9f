/// @file rank_sort_loss.hpp
/// @brief Rank & Sort (RS) loss: the ranking and sorting errors and their single error-driven
///        update, in O(P log P + N log P) with prefix sums and a Fenwick tree (kemaloksuz/RankSortLoss).
///
/// Oksuz, Cam, Akbas, Kalkan, "Rank & Sort Loss for Object Detection and Instance
/// Segmentation", ICCV 2021. Matches RankSort in kemaloksuz/RankSortLoss
/// (mmdet/models/losses/ranking_losses.py) on double inputs to rounding.
///
/// Entries and flattening as AP loss (ap_loss.hpp): logits N × C, labels N (−1 / 0 / 1..C), one
/// ranking over all entries of the call. `iou` holds one continuous target y_n ∈ [0, 1] per
/// anchor (read only at anchors with a foreground label: the IoU of the predicted box with its
/// ground truth). Positives P = {(n, labels[n]−1) : y_n > 0}; a foreground anchor whose IoU is
/// exactly 0 is a NEGATIVE at its class (as in the official code). With H_δ as in AP loss and
/// H_δ(0) = ½ for each i ∈ P:
///
///   R⁺_i = Σ_{k∈P} H_δ(s_k − s_i)  (self included: ½ + Σ_{k≠i}),  F_i = Σ_{j∈N} H_δ(s_j − s_i)
///   r_i  = F_i/(R⁺_i + F_i)                                             (ranking error)
///   c_i  = Σ_{k∈P} H_δ(s_k − s_i)(1 − y_k) / R⁺_i                       (current sorting error)
///   c*_i = Σ_{k∈P, y_k ≥ y_i} H_δ(s_k − s_i)(1 − y_k) / Σ_{k∈P, y_k ≥ y_i} H_δ(s_k − s_i)
///   e_i  = c_i − c*_i ≥ 0,  D_i = Σ_{k∈P, y_k < y_i} H_δ(s_k − s_i)       (sorting error, mass)
///   loss_rank = (1/n_P) Σ r_i,  loss_sort = (1/n_P) Σ e_i
///   update (all / n_P): if F_i > ε: u_i −= r_i, u_j += r_i H_δ(s_j − s_i)/F_i (j ∈ N);
///                       if D_i > ε: u_i −= e_i, u_k += e_i H_δ(s_k − s_i)/D_i (k ∈ P, y_k < y_i)
///   Σ_N u = Σ_i r_i 1[F_i > ε] / n_P.
///
/// IMPORTANT: the array written into `grad` is the single error-driven update of the paper (the
/// official backward multiplies it by the upstream gradient of loss_rank only). It is NOT the
/// derivative of loss_rank + loss_sort.
///
/// Defaults: δ = 0.5, ε = 1e-10. The official δ = 0 hard-step variant is not offered (δ must be
/// > 0). Normalisation: 1/n_P built in. No positives: everything 0 (the ATSS head; the official
/// RPN/RoI heads log the constant 1 instead). IoU ties count as correctly sorted (≥). The ε gates
/// use exact integer counts, so F_i and D_i are exactly 0 when nothing is within reach.
///
/// All arithmetic is in double. Workspace: pass a RankingWorkspace for allocation-free calls.
///
/// @throws std::invalid_argument for δ not finite and ≥ 1e-250 (the computable range) or ε not
/// finite and ≥ 0, labels of
///         the wrong length or outside −1..C, `iou` not of length N or outside [0, 1] at a
///         foreground anchor, a `grad` view of the wrong shape; std::domain_error for a
///         non-finite logit or IoU (at a foreground anchor). Nothing is written when a call throws.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "ranking_loss.hpp"

namespace fgbg {

/// Configuration of RankSortLoss; defaults are the official ones.
struct RankSortLossConfig {
  double delta = 0.5;  ///< half-width δ of the smoothed step, finite and ≥ 1e-250
  double eps = 1e-10;  ///< gates of the ranking (F_i) and sorting (D_i) updates, ≥ 0
};

/// The two values of RS loss for one call.
template <typename Scalar>
struct RankSortLossValue {
  Scalar rank = 0;  ///< loss_rank = mean ranking error
  Scalar sort = 0;  ///< loss_sort = mean sorting error
  Scalar total() const { return rank + sort; }
};

/// The call signature of RankSortLoss: the ranking losses', with the IoUs as input.
struct RankSortSignature : RankingSignature {
  static constexpr int inputs = 1;
};

/// Rank & Sort loss; see the file comment. Call (ranking_loss.hpp): `value(logits, labels, iou
/// [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])` gives loss_rank and loss_sort;
/// `value_and_grad(logits, labels, iou, grad [, fgbg::groups(ids)] [, workspace] [, anchor_losses(a)])` also writes
/// the error-driven update (NOT a derivative, see the file comment) into `grad` (N × C; a plain
/// array is resized, a view must have the shape). Per group, the positives are the anchors with
/// IoU > 0.
template <typename Scalar>
class RankSortLoss : public RankingLoss<RankSortLoss<Scalar>, Scalar, RankSortSignature> {
 public:
  using Config = RankSortLossConfig;
  using Value = RankSortLossValue<Scalar>;
  static constexpr const char* kName = "fgbg::RankSortLoss";

  explicit RankSortLoss(const Config& config = {}) : config_(config) {
    detail::check_delta(kName, config.delta);
    detail::check_eps(kName, config.eps);
  }

  const Config& config() const { return config_; }

  /// @name The pieces RankingLoss drives (see ranking_loss.hpp)
  /// @{
  template <typename XD, typename LD, typename In, typename Out>
  void check(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, const In& in,
             const Out& out) const {
    detail::check_ranking_call<Scalar>(kName, x, labels, std::get<0>(out));
    detail::check_positive_side_input<Scalar>(kName, "iou", std::get<0>(in), labels, 0.0, 1.0,
                                              "[0, 1]");
  }
  template <typename XD, typename Out>
  void prepare(const Eigen::DenseBase<XD>& x, Out& out) const {
    detail::prepare_ranking_grad(kName, x, out);
  }
  template <typename LD, typename In>
  bool is_positive(const Eigen::DenseBase<LD>& labels, const In& in, Index a) const {
    return labels.derived().coeff(a) > 0 && std::get<0>(in).derived().coeff(a) > Scalar(0);
  }
  Value make(const detail::RankValues& v) const {
    Value out;
    out.rank = static_cast<Scalar>(v.first);
    out.sort = static_cast<Scalar>(v.second);
    return out;
  }

  template <typename XD, typename LD, typename In, typename Out>
  detail::RankValues rank(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
                          const In& in, Out& out, RankingWorkspace& ws, double scale) const {
    const auto& iou = std::get<0>(in);
    auto& grad = std::get<0>(out);
    constexpr bool kGrad = detail::kGiven<detail::Bare<decltype(grad)>>;
    check(x, labels, in, out);
    prepare(x, out);
    detail::RankValues values;
    const double delta = config_.delta;
    const auto is_pos = [&](Index a) { return iou.derived().coeff(a) > Scalar(0); };
    detail::gather_positives(
        ws, x, labels, is_pos, [&](Index a) { return static_cast<double>(iou.derived().coeff(a)); },
        delta);
    const std::uint32_t p = static_cast<std::uint32_t>(ws.pos.size());
    if (p == 0) {
      detail::zero_output(grad);
      return values;
    }
    detail::positive_prefix(ws);
    detail::scatter_negatives(ws, x, labels, is_pos, kGrad);
    const double np = static_cast<double>(p);
    values.first = ranking_part(ws, p) / np;
    order_by_iou(ws, p);
    sorting_gaps(ws, p);
    values.second = sorting_shares(ws, p) / np;
    if constexpr (kGrad) {
      sorting_updates(ws, p);
      for (std::uint32_t k = 0; k < p; ++k) ws.g[k] = ws.g[k] * scale / np;
      detail::write_updates(ws, x, labels, is_pos, scale / np, grad);
    }
    return values;
  }
  /// @}

 private:
  /// The ranking part: for every sorted positive k its ranking error r = F / (R⁺ + F), the
  /// current sorting error c_k (sort_error) and the ranking part of its update (g, and the
  /// distribution weight c to the negatives). Returns Σ r. Grows every buffer the phases use.
  double ranking_part(RankingWorkspace& ws, std::uint32_t p) const {
    const double eps = config_.eps;
    for (auto* v :
         {&ws.weight, &ws.sort_error, &ws.sort_gap, &ws.sort_share, &ws.g, &ws.c, &ws.pos_loss})
      detail::grow(*v, p);
    detail::grow(ws.weight_sum, p + 1);
    detail::grow(ws.weight_offset_sum, p + 1);
    // weight = 1 − y, prefix sums weight_sum (Σ(1−y)) and weight_offset_sum (Σ(1−y)·(u − ref))
    // over the sorted positives
    for (std::uint32_t k = 0; k < p; ++k) ws.weight[k] = 1.0 - ws.pos[k].aux;
    detail::prefix_sums(ws.weight.data(), ws.u.data(), ws.ref.data(), p, ws.weight_sum.data(),
                        ws.weight_offset_sum.data());
    double sum_rank = 0;
    for (std::uint32_t k = 0; k < p; ++k) {
      const double rp = detail::positives_above(ws, k);  // self ½ included
      const double F = ws.F[k];
      const double r = F / (rp + F);
      sum_rank += r;
      ws.pos_loss[k] = r;  // the sorting error is added by sorting_shares
      const double q = detail::weighted_above(ws, k);
      ws.sort_error[k] = q / rp;        // current sorting error c_i
      ws.g[k] = F > eps ? -r : 0.0;     // ranking part of the update
      ws.c[k] = F > eps ? r / F : 0.0;  // distribution weight to the negatives
    }
    return sum_rank;
  }

  /// ws.order: the positives by IoU descending (ties: score rank ascending).
  static void order_by_iou(RankingWorkspace& ws, std::uint32_t p) {
    detail::grow(ws.order, p);
    for (std::uint32_t k = 0; k < p; ++k) ws.order[k] = k;
    std::sort(ws.order.begin(), ws.order.end(), [&](std::uint32_t l, std::uint32_t r) {
      return ws.pos[l].aux > ws.pos[r].aux || (ws.pos[l].aux == ws.pos[r].aux && l < r);
    });
  }

  /// One past the last position of the run of equal IoU that starts at position t of ws.order.
  static std::uint32_t iou_run_end(const RankingWorkspace& ws, std::uint32_t t, std::uint32_t p) {
    std::uint32_t e = t + 1;
    while (e < p && ws.pos[ws.order[e]].aux == ws.pos[ws.order[t]].aux) ++e;
    return e;
  }

  /// Pass 1 (IoU descending, each run of equal IoU inserted before it is queried): T_i and U_i
  /// over {k : y_k ≥ y_i}, and the sorting gap e_i = c_i − U_i / T_i into sort_gap.
  static void sorting_gaps(RankingWorkspace& ws, std::uint32_t p) {
    const double* u = ws.u.data();
    const double* ref = ws.ref.data();
    const double sdelta = ws.delta;  // δ · scale, the δ of the scaled scores u
    auto& fen = ws.fenwick;
    fen.reset(p);
    for (std::uint32_t t = 0; t < p;) {
      const std::uint32_t e = iou_run_end(ws, t, p);
      for (std::uint32_t q = t; q < e; ++q) {
        const std::uint32_t k = ws.order[q];
        const detail::DD off = detail::two_sum(u[k], -ref[k]);
        const detail::DD w[4] = {
            {1.0, 0.0}, off, {ws.weight[k], 0.0}, detail::dd_mul(off, ws.weight[k])};
        fen.add(k, w);
      }
      for (std::uint32_t q = t; q < e; ++q) {
        const std::uint32_t k = ws.order[q];
        const double r0 = ref[ws.win[k].lo];
        const double T = fen.up(ws.win[k], 0, 1, u[k], r0, sdelta).up;
        const double U = fen.up(ws.win[k], 2, 3, u[k], r0, sdelta).up;
        ws.sort_gap[k] = ws.sort_error[k] - U / T;
      }
      t = e;
    }
  }

  /// Pass 2 (IoU ascending, each run queried before it is inserted): D_i over {k : y_k < y_i},
  /// the share d_i = e_i / D_i into sort_share, and the sorting part −e_i of the update.
  /// Returns Σ e_i.
  double sorting_shares(RankingWorkspace& ws, std::uint32_t p) const {
    const double eps = config_.eps;
    const double* u = ws.u.data();
    const double* ref = ws.ref.data();
    const double sdelta = ws.delta;
    auto& fen = ws.fenwick;
    fen.reset(p);
    double sum_sort = 0;
    for (std::uint32_t t = p; t > 0;) {
      std::uint32_t b = t - 1;
      while (b > 0 && ws.pos[ws.order[b - 1]].aux == ws.pos[ws.order[t - 1]].aux) --b;
      for (std::uint32_t q = b; q < t; ++q) {
        const std::uint32_t k = ws.order[q];
        // D.up is 0 when D.count is 0
        const auto D = fen.up(ws.win[k], 0, 1, u[k], ref[ws.win[k].lo], sdelta);
        const double e_k = ws.sort_gap[k];
        sum_sort += e_k;
        ws.pos_loss[k] += e_k;
        if (D.up > eps) {
          ws.g[k] -= e_k;
          ws.sort_share[k] = e_k / D.up;
        } else {
          ws.sort_share[k] = 0.0;
        }
      }
      for (std::uint32_t q = b; q < t; ++q) {
        const std::uint32_t k = ws.order[q];
        const detail::DD w[4] = {{1.0, 0.0}, detail::two_sum(u[k], -ref[k]), {}, {}};
        fen.add(k, w);
      }
      t = b;
    }
    return sum_sort;
  }

  /// Pass 3 (IoU descending, each run queried before it is inserted): positive k receives
  /// Σ_{i: y_i > y_k} d_i H(s_k − s_i) in its update.
  static void sorting_updates(RankingWorkspace& ws, std::uint32_t p) {
    const double* u = ws.u.data();
    const double* ref = ws.ref.data();
    const double sdelta = ws.delta;
    auto& fen = ws.fenwick;
    fen.reset(p);
    for (std::uint32_t t = 0; t < p;) {
      const std::uint32_t e = iou_run_end(ws, t, p);
      for (std::uint32_t q = t; q < e; ++q) {
        const std::uint32_t k = ws.order[q];
        ws.g[k] += fen.down(ws.win[k], 0, 1, u[k], ref[ws.win[k].lo], sdelta);
      }
      for (std::uint32_t q = t; q < e; ++q) {
        const std::uint32_t k = ws.order[q];
        const detail::DD w[4] = {{ws.sort_share[k], 0.0},
                                 detail::dd_mul(detail::two_sum(u[k], -ref[k]), ws.sort_share[k]),
                                 {},
                                 {}};
        fen.add(k, w);
      }
      t = e;
    }
  }

  Config config_;
};

}  // namespace fgbg
