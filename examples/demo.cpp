// fgbg demo: every implemented loss on a RetinaNet-sized batch (2 images × 120k anchors × 80
// classes, ~0.1% positive anchors), printing how each method splits the gradient between
// foreground, easy background and hard background, and what a call costs.
#include <cstdio>

#include "demo_common.hpp"
#include "demo_dense.hpp"
#if __has_include("demo_pisa.hpp")
#include "demo_pisa.hpp"
#define FGBG_DEMO_PISA 1
#endif
#if __has_include("demo_ranking.hpp")
#include "demo_ranking.hpp"
#define FGBG_DEMO_RANKING 1
#endif
#if __has_include("demo_dr.hpp")
#include "demo_dr.hpp"
#define FGBG_DEMO_DR 1
#endif
#if __has_include("demo_unbiased.hpp")
#include "demo_unbiased.hpp"
#define FGBG_DEMO_UNBIASED 1
#endif
#if __has_include("demo_quality.hpp")
#include "demo_quality.hpp"
#define FGBG_DEMO_QUALITY 1
#endif
#if __has_include("demo_two_stage.hpp")
#include "demo_two_stage.hpp"
#define FGBG_DEMO_TWO_STAGE 1
#endif

int main() {
  const demo::Batch batch = demo::make_batch();
  std::printf(
      "fgbg demo: %d images x %ld anchors x %ld classes = %.1fM logits; %ld positive anchors "
      "(%.2f%%), %ld ignored\n",
      batch.images, static_cast<long>(batch.anchors_per_image),
      static_cast<long>(batch.num_classes), batch.logits.size() / 1e6,
      static_cast<long>(batch.positives), 100.0 * batch.positives / batch.anchors(),
      static_cast<long>(batch.ignored));
  std::printf(
      "Gradient shares: fraction of sum |dL/dx| on foreground entries, easy background "
      "(sigmoid < %.2f) and hard background; time is the best of 3 value_and_grad calls, one "
      "thread, SIMD: %s.\n\n",
      demo::kHardProbability, Eigen::SimdInstructionSetsInUse());
  demo::Table table;
  demo::add_dense_rows(batch, table);
#ifdef FGBG_DEMO_PISA
  demo::add_pisa_rows(batch, table);
#endif
#ifdef FGBG_DEMO_RANKING
  demo::add_ranking_rows(batch, table);
#endif
#ifdef FGBG_DEMO_DR
  demo::add_dr_rows(batch, table);
#endif
#ifdef FGBG_DEMO_UNBIASED
  demo::add_unbiased_rows(batch, table);
#endif
#ifdef FGBG_DEMO_QUALITY
  demo::add_quality_rows(batch, table);
#endif
  table.print();
#ifdef FGBG_DEMO_TWO_STAGE
  std::printf("\n");
  demo::print_two_stage_section();
#endif
  return 0;
}
