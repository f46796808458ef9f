// A downstream program of the installed MPI component: one process (MPI_Init without mpiexec)
// counts the positives of its labels through fgbg::mpi::global_counts.
#include <mpi.h>

#include <cstdio>
#include <fgbg/mpi.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  fgbg::LabelVector y(5);
  y << 1, 0, -1, 2, 0;
  const fgbg::GlobalCounts c = fgbg::mpi::global_counts(y, 2, MPI_COMM_WORLD);
  std::printf("positives %lld, valid %lld, workers %g\n", static_cast<long long>(c.positives),
              static_cast<long long>(c.valid), c.workers);
  MPI_Finalize();
  return c.positives == 2 && c.valid == 4 && c.workers == 1.0 ? 0 : 1;
}
