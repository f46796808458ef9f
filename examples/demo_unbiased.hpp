// Demo rows of unbiased learning: the sampling-free mechanism (optimal bias from the batch's own
// assignment, guided BCE) and residual objectness.
#pragma once

#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/unbiased/class_adaptive_threshold.hpp>
#include <fgbg/unbiased/guided_loss.hpp>
#include <fgbg/unbiased/optimal_bias.hpp>
#include <fgbg/unbiased/residual_objectness.hpp>

#include "demo_common.hpp"

namespace demo {

inline void add_unbiased_rows(const Batch& b, Table& table) {
  table.section("unbiased learning (sampling-free, residual objectness)");

  // Optimal bias from this batch's own assignment (the release counts a whole training set).
  fgbg::AnchorStatistics stats(b.num_classes);
  stats.add(b.labels);
  const double bias = stats.sigmoid_bias();
  std::printf(
      "sampling-free optimal bias from the demo batch's labels: N_fg = %lld, N_bg = %lld, C = "
      "%ld -> prior %.4g, bias %.4f (released score threshold prior*(C+1) = %.4g)\n",
      static_cast<long long>(stats.num_fg()), static_cast<long long>(stats.num_bg()),
      static_cast<long>(b.num_classes), stats.sigmoid_prior(), bias,
      fgbg::released_score_threshold(stats));

  // The batch's logits are drawn around ln(0.01/0.99); re-centre them at the optimal bias.
  Batch centred = b;
  centred.logits += static_cast<float>(bias - std::log(0.01 / 0.99));

  constexpr double kRegLoss = 0.5;  // synthetic L_reg: the demo has no box regression
  const fgbg::SigmoidCrossEntropyLoss<float> bce_sum({fgbg::Normalizer::sum()});
  for (const bool quirk : {false, true}) {
    const fgbg::GuidedLoss<fgbg::SigmoidCrossEntropyLoss<float>> guided(bce_sum, {1.0, quirk});
    Logits grad(b.anchors(), b.num_classes);
    fgbg::GuidedLossResult r;
    const double ms =
        time_ms([&] { r = guided.value_and_grad(centred.logits, b.labels, kRegLoss, grad); });
    char note[200];
    std::snprintf(note, sizeof note,
                  "logits re-centred at b=%.2f; synthetic L_reg=%.1f; w=%.3g, L_cls=%.4g%s", bias,
                  kRegLoss, r.weight, r.cls_loss,
                  quirk ? "; ignored rows trained as bg (not in shares)" : "");
    table.add({quirk ? "sampling-free (quirk)" : "sampling-free guided BCE", r.value, "guided",
               gradient_shares(centred, grad), ms, note});
  }

  // Residual objectness: synthetic 2-stage objectness logits (positives around +1 per stage,
  // background around -4 with 2% hard ones around -0.5); class logits are the batch's.
  const Index n = b.anchors();
  Logits stages(n, 2);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> pos(1.f, 1.f), easy(-4.f, 1.f), hard(-0.5f, 1.f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  for (Index i = 0; i < n; ++i) {
    const bool is_hard = uni(rng) < 0.02f;
    for (Index k = 0; k < 2; ++k)
      stages(i, k) = b.labels[i] > 0 ? pos(rng) : (is_hard ? hard(rng) : easy(rng));
  }
  const fgbg::ResidualObjectnessLoss<float> resobj;
  Logits grad_stages(n, 2), grad_cls(n, b.num_classes);
  fgbg::ResidualObjectnessResult r;
  const double ms = time_ms([&] {
    fgbg::ResidualObjectnessState state;  // a fresh EMA each call: E = 100 -> three updates
    r = resobj.value_and_grad(b.logits, b.labels, stages, grad_cls, grad_stages, state);
  });
  char note[200];
  std::snprintf(note, sizeof note,
                "synthetic 2-stage objectness; L_obj=%.4g L_cls=%.4g; shares of the class grad "
                "(positive rows only)",
                r.obj_loss, r.cls_loss);
  table.add({"ResObj (K=2)", r.loss, "EMA(#pos)x{20,10}", gradient_shares(b, grad_cls), ms, note});
}

}  // namespace demo
