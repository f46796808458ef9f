// fgbg demo: every implemented loss on a RetinaNet-sized batch (2 images × 120k anchors × 80
// classes, ~0.1% positive anchors), printing how each method splits the gradient between
// foreground, easy background and hard background, and what a call costs.
//
//   fgbg_demo                    print the table
//   fgbg_demo --plot FILE.svg    also write the gradient-share chart as a self-contained SVG
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

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

int main(int argc, char** argv) {
  std::string plot;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--plot") == 0 && i + 1 < argc) {
      plot = argv[++i];
    } else {
      const bool help = std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0;
      std::fprintf(help ? stdout : stderr, "%susage: %s [--plot FILE.svg]\n",
                   help ? "" : "fgbg_demo: unknown or incomplete argument\n", argv[0]);
      return help ? 0 : 2;
    }
  }
  std::ofstream svg;
  if (!plot.empty()) {  // opened first, so a bad path fails before the minute of work
    svg.open(plot);
    if (!svg) {
      std::fprintf(stderr, "fgbg_demo: cannot write %s\n", plot.c_str());
      return 1;
    }
  }
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
  if (svg.is_open()) {
    demo::write_share_chart(svg,
                            "fgbg: where each method puts the gradient (share of sum |dL/dx|), " +
                                std::to_string(batch.anchors()) + " anchors x " +
                                std::to_string(batch.num_classes) + " classes",
                            table.chart_lines());
    svg.close();
    if (!svg) {
      std::fprintf(stderr, "fgbg_demo: writing %s failed\n", plot.c_str());
      return 1;
    }
    std::printf("\nwrote the gradient-share chart to %s\n", plot.c_str());
  }
#ifdef FGBG_DEMO_TWO_STAGE
  std::printf("\n");
  demo::print_two_stage_section();
#endif
  return 0;
}
