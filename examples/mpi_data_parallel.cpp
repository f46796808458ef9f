// Data parallelism over MPI (docs/data_parallel.md): every rank holds one image of a RetinaNet-like
// batch (30k anchors x 80 classes; the last rank's image has no ground truth at all) and computes
//   - the focal loss with the normaliser of the whole batch (fgbg::mpi::global_avg_factor), and
//   - GHM-C with the histogram all-reduced over the ranks (fgbg::mpi::compute_and_allreduce),
// for three steps. Rank 0 then rebuilds the whole batch and checks that the sum of the ranks'
// values equals one process's and that GHM-C's moving average is the same. Run with e.g.
//   mpiexec -n 3 --oversubscribe build/examples/fgbg_mpi_data_parallel
#include <fgbg/mpi.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>

#include <cmath>
#include <cstdio>
#include <random>

namespace {

constexpr fgbg::Index kAnchors = 30000, kClasses = 80;

struct Image {
  fgbg::RowArray<float> logits;
  fgbg::LabelVector labels;
};

/// Image `id` of step `step`: ~0.1% positive anchors (none for an image without ground truth),
/// ~7% ignored, logits around the prior bias with 2% hard background entries.
Image make_image(int id, int step, bool has_objects) {
  std::mt19937_64 rng(1000u * static_cast<unsigned>(step) + static_cast<unsigned>(id));
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::normal_distribution<float> easy(-4.6f, 0.8f), hard(0.3f, 1.2f), fg(0.5f, 1.5f);
  Image im{fgbg::RowArray<float>(kAnchors, kClasses), fgbg::LabelVector(kAnchors)};
  for (fgbg::Index i = 0; i < kAnchors; ++i) {
    const float u = uni(rng);
    im.labels[i] = has_objects && u < 0.001f ? 1 + static_cast<int>(i % kClasses)
                   : u < 0.07f               ? -1
                                             : 0;
    for (fgbg::Index k = 0; k < kClasses; ++k)
      im.logits(i, k) = uni(rng) < 0.02f ? hard(rng) : easy(rng);
    if (im.labels[i] > 0) im.logits(i, im.labels[i] - 1) = fg(rng);
  }
  return im;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const fgbg::SigmoidFocalLoss<float> focal;  // α = 0.25, γ = 2
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 10;
  cfg.momentum = 0.75;
  const fgbg::GhmcLoss<float> ghm(cfg);
  fgbg::GhmcState state(cfg.bins), reference_state(cfg.bins);
  int failures = 0;
  try {
    for (int step = 0; step < 3; ++step) {
      // This rank's shard. Every call below is a collective: every rank makes it, every step,
      // also the rank whose image has no positives.
      const Image im = make_image(rank, step, rank != ranks - 1 || ranks == 1);
      fgbg::RowArray<float> grad(kAnchors, kClasses);
      const fgbg::GlobalCounts counts =
          fgbg::mpi::global_counts(im.labels, kClasses, MPI_COMM_WORLD);
      const double v_focal = focal.value_and_grad(im.logits, im.labels, grad, counts.avg_factor());
      const fgbg::ReduceBuffer hist = fgbg::mpi::compute_and_allreduce(
          [&] { return ghm.batch_statistics(im.logits, im.labels); }, MPI_COMM_WORLD);
      const double v_ghm = ghm.value_and_grad(im.logits, im.labels, grad, state, hist);
      double local[2] = {v_focal, v_ghm}, sum[2] = {0, 0};
      MPI_Reduce(local, sum, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
      if (rank != 0) continue;
      // Rank 0: one process on the whole batch, for comparison.
      fgbg::RowArray<float> x(kAnchors * ranks, kClasses), g;
      fgbg::LabelVector y(kAnchors * ranks);
      for (int r = 0; r < ranks; ++r) {
        const Image o = make_image(r, step, r != ranks - 1 || ranks == 1);
        x.middleRows(r * kAnchors, kAnchors) = o.logits;
        y.segment(r * kAnchors, kAnchors) = o.labels;
      }
      const double ref_focal = focal.value_and_grad(x, y, g);  // sum / max(1, #positives)
      const double ref_ghm = ghm.value_and_grad(x, y, g, reference_state);
      const double d_focal = std::abs(sum[0] - ref_focal) / ref_focal;
      const double d_ghm = std::abs(sum[1] - ref_ghm) / ref_ghm;
      const bool same_state = state == reference_state;
      std::printf(
          "step %d, %d ranks, %lld positives in the batch: focal sum over ranks %.7f, one process "
          "%.7f (rel. diff %.1e); GHM-C %.7f vs %.7f (%.1e), moving average %s\n",
          step, ranks, static_cast<long long>(counts.positives), sum[0], ref_focal, d_focal, sum[1],
          ref_ghm, d_ghm, same_state ? "bit-identical" : "DIFFERS");
      // The values differ only in summation order (float shards summed in double).
      if (!(d_focal <= 1e-6 && d_ghm <= 1e-6 && same_state)) ++failures;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  if (rank == 0) std::printf(failures ? "MISMATCH\n" : "sum over ranks matches one process\n");
  MPI_Finalize();
  return failures ? 1 : 0;
}
