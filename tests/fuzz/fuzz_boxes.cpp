// Fuzz target: IoU (iou_matrix, aligned_iou) and the max-IoU assigner (assign, assign_from_iou),
// float and double. Checks: IoU in [0, 1] for every accepted input, the self-IoU of a box whose
// exact area is representable and ≥ 1e-3 is 1 (to 1e-3), layout independence, nothing written by
// a throwing call, and assign(boxes) == assign_from_iou(iou_matrix(boxes)).
#include <fgbg/boxes/iou.hpp>
#include <fgbg/boxes/max_iou_assigner.hpp>
#include <optional>

#include "fuzz_common.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "boxes";

template <typename S>
RowA<S> decode_boxes(In& in, Index n) {
  RowA<S> b(n, 4);
  for (Index i = 0; i < n; ++i) {
    const int kind = in.u8() % 4;
    if (kind == 0) {  // anything
      for (int k = 0; k < 4; ++k) b(i, k) = in.any<S>();
    } else {  // (x1, y1) and a non-negative extent, scaled
      const S scale = kind == 1 ? S(1) : kind == 2 ? S(1e3) : std::fabs(in.any<S>());
      b(i, 0) = in.mostly_moderate<S>() * scale, b(i, 1) = in.mostly_moderate<S>() * scale;
      b(i, 2) = b(i, 0) + std::fabs(in.mostly_moderate<S>()) * scale;
      b(i, 3) = b(i, 1) + std::fabs(in.mostly_moderate<S>()) * scale;
    }
  }
  return b;
}

bool same_assignment(const fgbg::Assignment& a, const fgbg::Assignment& b) {
  return a.label_storage == b.label_storage && a.gt_storage == b.gt_storage &&
         vec_same(a.iou_storage, b.iou_storage) && a.num_gts == b.num_gts &&
         a.num_gt_proposals == b.num_gt_proposals;
}

template <typename S>
void run(In& in) {
  const Index n = in.small(5), g = in.small(4);
  const RowA<S> boxes = decode_boxes<S>(in, n), gts = decode_boxes<S>(in, g);
  Labels gl(g);
  for (Index i = 0; i < g; ++i) gl[i] = in.label(3);
  fgbg::MaxIouAssignerConfig cf;
  cf.pos_iou_thr = in.flag() ? in.any<double>() : in.u8() / 255.0;
  cf.neg_iou_thr = in.flag() ? in.any<double>() : in.u8() / 255.0;
  cf.neg_iou_lo = in.flag() ? in.any<double>() : 0.0;
  cf.min_pos_iou = in.flag() ? in.any<double>() : in.u8() / 255.0;
  cf.match_low_quality = in.flag(), cf.gt_max_assign_all = in.flag(),
  cf.low_quality_zero_iou = in.flag();
  const int lx = in.u8();
  context().clear();
  note("double", sizeof(S) == 8), note_array("boxes", boxes), note_array("gts", gts),
      note_array("gt_labels", gl);
  note("pos_iou_thr", cf.pos_iou_thr), note("neg_iou_thr", cf.neg_iou_thr),
      note("neg_iou_lo", cf.neg_iou_lo);
  note("min_pos_iou", cf.min_pos_iou), note("low_quality", cf.match_low_quality);
  note("assign_all", cf.gt_max_assign_all), note("zero_iou_quirk", cf.low_quality_zero_iou);

  // IoU matrix: reference layout, then another layout of the boxes and a block output.
  RowA<S> iou;
  const bool ok = completes(kFam, [&] { fgbg::iou_matrix(boxes, gts, iou); });
  if (ok) {
    FZ_CHECK(all_finite(boxes) && all_finite(gts), kFam, "non-finite box accepted");
    for (Index i = 0; i < iou.size(); ++i)
      FZ_CHECK(iou.data()[i] >= 0 && iou.data()[i] <= 1, kFam,
               "IoU " + std::to_string(double(iou.data()[i])) + " outside [0, 1]");
  }
  ColA<S> big = ColA<S>::Constant(n + 2, g + 1, S(9));
  const ColA<S> big0 = big;
  bool ok2 = true;
  visit_layout<S>(lx, boxes, [&](const auto& bv) {
    ok2 = completes(kFam, [&] {
      auto blk = big.block(1, 1, n, g);
      fgbg::iou_matrix(bv, gts, blk);
    });
  });
  FZ_CHECK(ok2 == ok, kFam, "iou_matrix throws in one layout only");
  if (ok)
    FZ_CHECK(same_array(RowA<S>(big.block(1, 1, n, g)), iou), kFam, "IoU depends on the layout");
  else
    FZ_CHECK(same_array(big, big0), kFam, "iou_matrix wrote before throwing");

  // Self IoU through aligned_iou.
  Eigen::Array<S, Eigen::Dynamic, 1> self = Eigen::Array<S, Eigen::Dynamic, 1>::Constant(n, S(-1));
  const auto self0 = self;
  if (completes(kFam, [&] { fgbg::aligned_iou(boxes, boxes, self); })) {
    for (Index i = 0; i < n; ++i) {
      const long double area = (static_cast<long double>(boxes(i, 2)) - boxes(i, 0)) *
                               (static_cast<long double>(boxes(i, 3)) - boxes(i, 1));
      FZ_CHECK(self[i] >= 0 && self[i] <= 1, kFam, "aligned IoU outside [0, 1]");
      if (area >= 1e-3L && area < representable<S>())
        FZ_CHECK(self[i] > S(0.999), kFam,
                 "self-IoU " + std::to_string(double(self[i])) + " of box " + std::to_string(i));
    }
  } else {
    FZ_CHECK(same_array(self, self0), kFam, "aligned_iou wrote before throwing");
  }

  // Assigner.
  std::optional<fgbg::MaxIouAssigner> as;
  if (!completes(kFam, [&] { as.emplace(cf); })) return;
  fgbg::Assignment a, from;
  a.label_storage.assign(2, 7), from.label_storage.assign(3, 7);
  const fgbg::Assignment a0 = a, from0 = from;
  const bool aok = completes(kFam, [&] { as->assign(boxes, gts, gl, a); });
  if (!aok) {
    FZ_CHECK(same_assignment(a, a0), kFam, "assign wrote before throwing");
    return;
  }
  FZ_CHECK(ok, kFam, "assign accepted boxes iou_matrix rejects");
  for (Index i = 0; i < a.size(); ++i) {
    FZ_CHECK(a.label_storage[i] >= -1, kFam, "assigned label below -1");
    FZ_CHECK(a.gt_storage[i] >= -1 && a.gt_storage[i] < g, kFam, "assigned GT out of range");
    FZ_CHECK(a.iou_storage[i] >= 0 && a.iou_storage[i] <= 1, kFam, "assigned IoU outside [0, 1]");
  }
  const bool fok = completes(kFam, [&] { as->assign_from_iou(iou, gl, from); });
  FZ_CHECK(fok, kFam, "assign_from_iou rejects the library's own IoU matrix");
  FZ_CHECK(same_assignment(a, from), kFam, "assign and assign_from_iou(iou_matrix) differ");
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
