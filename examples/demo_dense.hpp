// Demo rows of the dense soft-sampling losses (foundation issue).
#pragma once

#include "demo_common.hpp"

namespace demo {

template <typename Loss>
void add_dense_row(const Batch& b, Table& table, const char* name, const Loss& loss,
                   const char* normaliser, const std::string& note = "") {
  Logits grad(b.anchors(), b.num_classes);
  double value = 0;
  const double ms = time_ms([&] { value = loss.value_and_grad(b.logits, b.labels, grad); });
  table.add({name, value, normaliser, gradient_shares(b, grad), ms, note});
}

inline void add_dense_rows(const Batch& b, Table& table) {
  table.section("soft sampling (dense, sigmoid head)");
  add_dense_row(b, table, "BCE", fgbg::SigmoidCrossEntropyLoss<float>(), "mean");
  add_dense_row(b, table, "BCE (sum / #pos)",
                fgbg::SigmoidCrossEntropyLoss<float>({fgbg::Normalizer::num_positives()}),
                "num_positives");
  add_dense_row(b, table, "focal a=.25 g=2", fgbg::SigmoidFocalLoss<float>(), "num_positives");
}

}  // namespace demo
