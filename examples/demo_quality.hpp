// Demo rows of the quality-aware and equalized focal losses: QFL and VFL with each positive's
// IoU as its quality target, EFL with a fresh state (= focal loss) and after a few updates of
// its per-class gradient statistics.
#pragma once

#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>

#include "demo_common.hpp"

namespace demo {

template <typename Loss>
void add_quality_row(const Batch& b, Table& table, const char* name, const Loss& loss,
                     const std::string& note) {
  Logits grad(b.anchors(), b.num_classes);
  double value = 0;
  const double ms = time_ms([&] { value = loss.value_and_grad(b.logits, b.labels, b.iou, grad); });
  table.add({name, value, "num_positives", gradient_shares(b, grad), ms, note});
}

inline void add_quality_rows(const Batch& b, Table& table) {
  table.section("quality-aware and equalized focal losses (dense, sigmoid head)");
  add_quality_row(b, table, "QFL b=2", fgbg::QualityFocalLoss<float>(), "target = IoU");
  add_quality_row(b, table, "VFL a=.75 g=2", fgbg::VarifocalLoss<float>(), "q = IoU, iou_weighted");

  const fgbg::EqualizedFocalLoss<float> efl;
  Logits grad(b.anchors(), b.num_classes);
  fgbg::EqualizedFocalState state(b.num_classes);
  double value = 0;
  // Fresh statistics: every γ_j = γ_b, so EFL equals the focal loss. The timed call also
  // updates the statistics, so time a copy of the state.
  const fgbg::EqualizedFocalState fresh = state;
  const double ms = time_ms([&] {
    state = fresh;
    value = efl.value_and_grad(b.logits, b.labels, grad, state);
  });
  table.add({"EFL (fresh state)", value, "num_positives", gradient_shares(b, grad), ms,
             "g_j = 1: equals focal"});
  // Four more iterations on the same batch: rare classes get γ_j up to γ_b + s = 10.
  for (int i = 0; i < 4; ++i) efl.value_and_grad(b.logits, b.labels, grad, state);
  const fgbg::EqualizedFocalState warm = state;
  value = efl.value_and_grad(b.logits, b.labels, grad, state);
  double gmin = 1e300, gmax = 0;
  for (Index j = 0; j < b.num_classes; ++j) {
    gmin = std::min(gmin, static_cast<double>(efl.gamma(warm, j)));
    gmax = std::max(gmax, static_cast<double>(efl.gamma(warm, j)));
  }
  const double ms_warm = time_ms([&] {
    state = warm;
    efl.value_and_grad(b.logits, b.labels, grad, state);
  });
  char note[96];
  std::snprintf(note, sizeof note, "after 5 updates: gamma_j in [%.2f, %.2f]", gmin, gmax);
  table.add({"EFL (5 updates)", value, "num_positives", gradient_shares(b, grad), ms_warm, note});
}

}  // namespace demo
