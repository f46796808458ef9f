// Demo rows of DR loss (distributional ranking): one call pooling the whole batch (the released
// module), one DR loss per image summed (the paper's per-image ranking), and the pooled loss on
// logits re-centred at bias 0 (prior 0.5, how the DR configs initialise the classifier).
#pragma once

#include <cmath>
#include <cstdio>

#include <fgbg/ranking/dr_loss.hpp>

#include "demo_common.hpp"

namespace demo {

inline void add_dr_rows(const Batch& b, Table& table) {
  table.section("distributional ranking (DR loss, no normaliser)");
  const fgbg::DRLoss<float> dr;
  Logits grad(b.anchors(), b.num_classes);

  auto add = [&](const char* name, const Batch& batch, bool per_image, const std::string& note) {
    double value = 0;
    const double ms = time_ms([&] {
      value = per_image
                  ? dr.value_and_grad(batch.logits, batch.labels, grad, fgbg::groups(batch.image))
                  : dr.value_and_grad(batch.logits, batch.labels, grad);
    });
    table.add({name, value, "none", gradient_shares(batch, grad), ms, note});
  };

  char note[160];
  std::snprintf(note, sizeof note, "released: 1 call pools %d images; grad = d(value)", b.images);
  add("DR pooled (batch)", b, false, note);
  std::snprintf(note, sizeof note, "groups = image index; sum of %d per-image losses", b.images);
  add("DR per image (summed)", b, true, note);

  // The batch's logits are drawn around ln(0.01/0.99); DR trains from prior 0.5 (bias 0).
  Batch centred = b;
  centred.logits.array() -= static_cast<float>(std::log(0.01 / 0.99));
  add("DR pooled, prior 0.5", centred, false, "logits shifted to bias 0 (DR configs' prior)");
}

}  // namespace demo
