// Demo rows of the ranking losses (AP, aLRP, Rank & Sort): one ranking over every entry of the
// batch (2 images × 120k anchors × 80 classes = 19.2M entries), as the official code does per
// GPU batch. The "gradient" of these losses is their error-driven update (not a derivative).
#pragma once

#include <cstdio>
#include <string>

#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>

#include "../tests/support/ranking_oracle.hpp"
#include "demo_common.hpp"

namespace demo {

namespace ranking_detail {

/// Estimated time of the brute-force O(P·(P + N_rel)) loop over positives (the official
/// algorithm) on the whole batch: the loop is timed on the first `anchors` anchors and its cost
/// per (positive, entry) pair is scaled to P·(P + N_rel) of the full batch.
template <typename LoopFn>
std::string loop_estimate(const Batch& b, Index anchors, double full_pairs, LoopFn&& loop) {
  const auto x = b.logits.topRows(anchors);
  const auto y = b.labels.head(anchors);
  const Eigen::ArrayXf aux = b.iou.head(anchors);
  const auto f = fgbg_oracle::flatten(x, y, &aux, false);
  const double pairs = static_cast<double>(f.ps.size()) * (f.ps.size() + f.ns.size());
  const double ms = time_ms([&] { loop(f, anchors * b.num_classes, anchors); }, 1);
  const double est_s = ms / pairs * full_pairs / 1e3;
  char buf[160];
  std::snprintf(buf, sizeof buf, "O(P*N) loop ~%.0f s (timed %.0f ms on %ld anchors)", est_s, ms,
                static_cast<long>(anchors));
  return buf;
}

}  // namespace ranking_detail

inline void add_ranking_rows(const Batch& b, Table& table) {
  table.section("ranking losses (one ranking over all N x C entries; update, not a derivative)");
  const Index n = b.anchors(), c = b.num_classes;
  const Index sub = std::min<Index>(n, 20000);
  Logits grad(n, c);
  fgbg::RankingWorkspace ws;

  {  // AP loss, δ = 1, interpolated
    const fgbg::APLoss<float> ap;
    double value = 0;
    const double ms = time_ms([&] { value = ap.value_and_grad(b.logits, b.labels, grad, ws); });
    const double P = static_cast<double>(b.positives);
    const double full_pairs = P * (P + static_cast<double>(ws.relevant_negatives));
    std::string note =
        "N_rel=" + std::to_string(ws.relevant_negatives) + "; " +
        ranking_detail::loop_estimate(b, sub, full_pairs, [](const auto& f, Index m, Index) {
          return fgbg_oracle::ap_loss(f, m, 1.0, true).loss;
        });
    table.add({"AP loss d=1", value, "1/n_P (built in)", gradient_shares(b, grad), ms, note});
  }
  {  // aLRP loss, δ = 1, ℓ = 1 − IoU at the positives, λ_SB = 50 (initial)
    const fgbg::ALRPLoss<float> alrp;
    const Eigen::ArrayXf loc = 1.0f - b.iou;
    Eigen::ArrayXf grad_loc(n);
    fgbg::ALRPSelfBalance sb;
    fgbg::ALRPLoss<float>::Value v;
    const double ms =
        time_ms([&] { v = alrp.value_and_grad(b.logits, b.labels, loc, grad, grad_loc, ws); });
    const double P = static_cast<double>(b.positives);
    const double full_pairs = P * (P + static_cast<double>(ws.relevant_negatives));
    char head[120];
    std::snprintf(head, sizeof head, "cls %.4f + 50 x loc %.4f = %.4f; ", v.cls, v.loc,
                  v.total(sb.weight()));
    std::string note = head + ranking_detail::loop_estimate(
                                  b, sub, full_pairs, [](const auto& f, Index m, Index a) {
                                    return fgbg_oracle::alrp_loss(f, m, a, 1.0, 1e-5).loss;
                                  });
    table.add(
        {"aLRP loss (cls) d=1", v.cls, "1/n_P (built in)", gradient_shares(b, grad), ms, note});
  }
  {  // Rank & Sort loss, δ = 0.5, IoU targets
    const fgbg::RankSortLoss<float> rs;
    fgbg::RankSortLoss<float>::Value v;
    const double ms = time_ms([&] { v = rs.value_and_grad(b.logits, b.labels, b.iou, grad, ws); });
    const double P = static_cast<double>(b.positives);
    const double full_pairs = P * (P + static_cast<double>(ws.relevant_negatives));
    char head[96];
    std::snprintf(head, sizeof head, "rank %.4f + sort %.4f; ", v.rank, v.sort);
    std::string note =
        head + ranking_detail::loop_estimate(b, sub, full_pairs, [](const auto& f, Index m, Index) {
          return fgbg_oracle::rs_loss(f, m, 0.5, 1e-10).loss;
        });
    table.add({"RS loss d=0.5", v.total(), "1/n_P (built in)", gradient_shares(b, grad), ms, note});
  }
}

}  // namespace demo
