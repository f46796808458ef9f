// Demo rows of PISA (ISR-P reweighting of the positives, CARL) on the dense batch.
#pragma once

#include <string>

#include "demo_common.hpp"

namespace demo {

inline void add_pisa_rows(const Batch& b, Table& table) {
  table.section("PISA on the sigmoid head (ISR-P weights, CARL)");
  const Index n = b.anchors(), c = b.num_classes;
  // Synthetic matching: each positive belongs to one of 10 ground truths of its image.
  Eigen::ArrayXi gt_index = Eigen::ArrayXi::Constant(n, -1);
  for (Index i = 0; i < n; ++i)
    if (b.labels[i] > 0) gt_index[i] = b.image[i] * 10 + static_cast<int>((i / 977) % 10);
  // Detached per-positive classification loss: the focal loss of each positive row.
  const fgbg::SigmoidFocalLoss<float> focal;
  const fgbg::SigmoidFocalLoss<float> focal_sum({0.25f, 2.f, fgbg::Normalizer::sum()});
  Eigen::ArrayXf cls_loss = Eigen::ArrayXf::Zero(n);
  for (Index i = 0; i < n; ++i)
    if (b.labels[i] > 0)
      cls_loss[i] = focal_sum.value(b.logits.middleRows(i, 1), b.labels.segment(i, 1));
  const Eigen::ArrayXf iou = b.iou;
  const fgbg::IsrP<float> isr;
  fgbg::IsrPWorkspace ws;
  Eigen::ArrayXf w(n);
  Logits grad(n, c);
  double value = 0;
  double ms = time_ms([&] {
    isr.weights(b.labels, gt_index, iou, cls_loss, c, w, ws);
    value = focal.value_and_grad(b.logits, b.labels, grad, w);
  });
  table.add({"focal + ISR-P (k=2, b=0)", value, "num_positives", gradient_shares(b, grad), ms,
             "IoU-HLR weights on positives; synthetic GT ids, IoU = assignment IoU"});

  // CARL on top: a synthetic per-positive regression loss (4 coordinates, smooth-L1 scale).
  Eigen::ArrayXf reg = Eigen::ArrayXf::Zero(n), grad_reg(n);
  for (Index i = 0; i < n; ++i)
    if (b.labels[i] > 0) reg[i] = 4.f * (1.f - b.iou[i]);
  const fgbg::CarlLoss<float> carl;
  double carl_value = 0;
  ms = time_ms([&] {
    isr.weights(b.labels, gt_index, iou, cls_loss, c, w, ws);
    value = focal.value_and_grad(b.logits, b.labels, grad, w);
    carl_value = carl.value_and_accumulate_grad(b.logits, b.labels, reg, grad, grad_reg);
  });
  table.add({"focal + ISR-P + CARL", value + carl_value, "num_positives", gradient_shares(b, grad),
             ms, "CARL " + std::to_string(carl_value) + " (k=1, b=.2) on synthetic 4(1-IoU)"});
}

}  // namespace demo
