// Demo rows of the dense soft-sampling losses (foundation issue): BCE, focal loss, FL*, GHM-C on
// the sigmoid head, and cross-entropy and focal loss on a softmax head.
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

/// Shares of a softmax head's gradient over its C class columns (column 0, background, is left
/// out so that the split is comparable with the sigmoid rows).
inline Shares softmax_class_shares(const Batch& b, const Logits& grad) {
  const Logits cls = grad.rightCols(b.num_classes);
  return gradient_shares(b, cls);
}

inline void add_dense_rows(const Batch& b, Table& table) {
  table.section("soft sampling: sigmoid head (one-hot targets)");
  add_dense_row(b, table, "BCE", fgbg::SigmoidCrossEntropyLoss<float>(), "mean");
  add_dense_row(b, table, "BCE (sum / #pos)",
                fgbg::SigmoidCrossEntropyLoss<float>({fgbg::Normalizer::num_positives()}),
                "num_positives", "the RetinaNet normaliser without focusing");
  add_dense_row(b, table, "focal a=.25 g=2", fgbg::SigmoidFocalLoss<float>(), "num_positives");
  add_dense_row(b, table, "FL* g=2", fgbg::FocalLossStar<float>({-1.f, 2.f}), "num_positives");
  {
    // torchvision's sigmoid_focal_loss with float targets [N, C]: each positive's IoU at its
    // class column (a soft target), 0 elsewhere.
    Logits targets = Logits::Zero(b.anchors(), b.num_classes);
    for (Index i = 0; i < b.anchors(); ++i)
      if (b.labels[i] > 0) targets(i, b.labels[i] - 1) = b.iou[i];
    const fgbg::DenseTargetFocalLoss<float> focal;
    Logits grad(b.anchors(), b.num_classes);
    double value = 0;
    const double ms =
        time_ms([&] { value = focal.value_and_grad(b.logits, b.labels, targets, grad); });
    table.add({"focal, smoothed targets", value, "num_positives", gradient_shares(b, grad), ms,
               "torchvision, t [N, C] = IoU at the class"});
  }
  {
    const fgbg::GhmcLoss<float> ghm({30, 0.75});
    fgbg::GhmcState state(30);
    Logits grad(b.anchors(), b.num_classes);
    double value = 0;
    const double ms = time_ms([&] {
      state.reset();
      value = ghm.value_and_grad(b.logits, b.labels, grad, state);
    });
    table.add({"GHM-C M=30 mu=.75", value, "GHM tot", gradient_shares(b, grad), ms,
               "first call of a fresh state; " + std::to_string(state.nonempty_bins()) +
                   " non-empty bins"});
  }

  table.section("soft sampling: softmax head (column 0 = background)");
  Logits soft(b.anchors(), b.num_classes + 1);
  soft.col(0).setConstant(0.f);
  soft.rightCols(b.num_classes) = b.logits;
  Logits grad(b.anchors(), b.num_classes + 1);
  double value = 0;
  const fgbg::SoftmaxCrossEntropyLoss<float> ce;
  double ms = time_ms([&] { value = ce.value_and_grad(soft, b.labels, grad); });
  table.add({"softmax CE", value, "mean", softmax_class_shares(b, grad), ms,
             "shares over class columns"});
  const fgbg::SoftmaxFocalLoss<float> sfl;
  ms = time_ms([&] { value = sfl.value_and_grad(soft, b.labels, grad); });
  table.add({"softmax focal a=.25 g=2", value, "num_positives", softmax_class_shares(b, grad), ms,
             "Detectron alpha semantics"});
}

}  // namespace demo
