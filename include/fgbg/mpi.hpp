/// @file mpi.hpp
/// @brief Optional MPI binding of the reduce step (docs/data_parallel.md): the SUM all-reduce of
///        a ReduceBuffer over a communicator, and the global positive count and normaliser.
///
/// Needs <mpi.h> and an MPI library (link `fgbg::mpi`, which CMake defines when MPI is found;
/// see the README). fgbg.hpp does not include this header.
///
/// **Every function here is a collective.** Like MPI_Allreduce, which each of them calls, it
/// must be called by every rank of the communicator, in the same order, every step,
/// unconditionally: also on a rank whose shard has no positives, no ground truth or no anchors
/// at all (an empty shard is a valid contribution). An all-reduce in a branch that only some
/// ranks take leaves the others waiting forever (open-mmlab/mmdetection#4724).
///
/// **Failures are symmetric.** Before the reduce every function runs one small all-reduce (four
/// integers: the cost of one more small collective per call) of the buffer sizes and of a
/// failure flag, so that every input error it can detect makes every
/// rank throw, instead of one rank throwing and the others hanging in the next collective or
/// summing buffers of different lengths: buffers of different sizes on different ranks, a
/// buffer whose worker slot is not a count, and (compute_and_allreduce, global_counts) a compute
/// step that threw on some rank. The verdicts of the commit step (the header check of
/// ReduceBuffer::check: a hyper-parameter that differs across ranks) are the same on every rank
/// because every rank holds the same reduced buffer.
///
/// **MPI errors.** MPI's default error handler on a communicator, MPI_ERRORS_ARE_FATAL, aborts
/// the job on an error and no call returns. With MPI_ERRORS_RETURN set on `comm`
/// (MPI_Comm_set_errhandler), an MPI error code becomes std::runtime_error naming the MPI call
/// and MPI's error string.
#pragma once

#include "core/requires_cxx17.hpp"

#include <mpi.h>

#include <climits>
#include <cmath>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/config.hpp"
#include "core/ema_normalizer.hpp"
#include "core/errors.hpp"
#include "core/reduction.hpp"
#include "core/state_io.hpp"

namespace fgbg {
namespace mpi {
namespace detail {

/// Throws std::runtime_error("<where>: <call> failed: <MPI's error string> (error code <rc>)")
/// unless rc is MPI_SUCCESS.
inline void check_mpi(int rc, const char* where, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS || len < 0) len = 0;
  throw std::runtime_error(fgbg::detail::concat(
      where, ": ", call, " failed: ", std::string(text, static_cast<std::size_t>(len)),
      " (error code ", rc, ")"));
}

/// Local checks that need no communication (the same verdict on every rank of a valid
/// communicator): MPI initialised and not finalised, an intra-communicator.
inline void check_comm(const char* where, MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  check_mpi(MPI_Initialized(&initialized), where, "MPI_Initialized");
  check_mpi(MPI_Finalized(&finalized), where, "MPI_Finalized");
  if (!initialized || finalized)
    throw std::runtime_error(fgbg::detail::concat(
        where, ": MPI is ", finalized ? "already finalised" : "not initialised",
        " (call between MPI_Init and MPI_Finalize)"));
  if (comm == MPI_COMM_NULL)
    fgbg::detail::throw_invalid(where, "the communicator is MPI_COMM_NULL");
  int inter = 0;
  check_mpi(MPI_Comm_test_inter(comm, &inter), where, "MPI_Comm_test_inter");
  if (inter)
    fgbg::detail::throw_invalid(where, "an intercommunicator was given; the reduce needs an ",
                                "intra-communicator (e.g. MPI_Intercomm_merge)");
}

/// The collective core of allreduce: one MPI_Allreduce (MAX) of {size, −size, bad worker slot,
/// failing rank} so that every rank takes the same decision, then the SUM in place. `failure`
/// is the exception of this rank's compute step (null when it succeeded): that rank rethrows
/// it, every other rank throws std::invalid_argument naming the rank.
inline void allreduce_or_throw(const char* where, ReduceBuffer& buf, MPI_Comm comm,
                               std::exception_ptr failure) {
  check_comm(where, comm);
  int rank = 0, ranks = 0;
  check_mpi(MPI_Comm_rank(comm, &rank), where, "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &ranks), where, "MPI_Comm_size");
  const long long n = static_cast<long long>(buf.size());
  const double w = buf.workers();
  const bool bad_slot =
      n > 0 && !(w >= 1.0 && w <= ReduceBuffer::kMaxWorkers && w == std::floor(w));
  long long mine[4] = {n, -n, bad_slot ? 1 : 0, failure ? rank : -1};
  long long all[4] = {0, 0, 0, 0};
  check_mpi(MPI_Allreduce(mine, all, 4, MPI_LONG_LONG, MPI_MAX, comm), where,
            "MPI_Allreduce (MAX of the buffer sizes)");
  if (failure) std::rethrow_exception(failure);
  if (all[3] >= 0)
    fgbg::detail::throw_invalid(where, "the compute step threw on rank ", all[3], " of ", ranks,
                                " (see that rank's message); nothing was reduced");
  const long long largest = all[0], smallest = -all[1];
  if (smallest != largest)
    fgbg::detail::throw_invalid(where, "reduce buffer has ", n, " doubles on rank ", rank,
                                ", between ", smallest, " and ", largest, " across the ", ranks,
                                " ranks (every rank must pass the buffer of the same method, ",
                                "shape and hyper-parameters); nothing was reduced");
  if (n == 0)
    fgbg::detail::throw_invalid(where, "reduce buffer is empty on every rank (fill it with the ",
                                "compute step first)");
  if (all[2] != 0)
    fgbg::detail::throw_invalid(where, "a reduce buffer's worker count is not an integer in ",
                                "1..2^20 on some rank (this rank's: ", w, "); nothing was reduced");
  if (n > INT_MAX)
    fgbg::detail::throw_invalid(where, "reduce buffer has ", n, " doubles, more than one ",
                                "MPI_Allreduce takes (", INT_MAX, ")");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(n), MPI_DOUBLE, MPI_SUM, comm),
            where, "MPI_Allreduce (SUM of the buffer)");
}

}  // namespace detail

/// Step 2 of data parallelism over MPI: sums `buf` element-wise over every rank of `comm`, in
/// place (MPI_Allreduce with MPI_IN_PLACE, MPI_DOUBLE, MPI_SUM), so that every rank then holds
/// the same reduced buffer; pass it to the commit step (GhmcLoss::value_and_grad,
/// EqualizedFocalState::commit, reduced_counts).
///
/// A collective: every rank of `comm` must call it, every step, unconditionally (see the file
/// comment). A buffer may be reduced in stages (within a node, then across nodes), but reducing
/// the same buffer twice over the same ranks multiplies every slot by W, which no check can tell
/// from a valid sum.
///
/// @param buf  this rank's buffer from the compute step (batch_statistics, value_and_grad(…,
///             buffer), positive_count_buffer); the same length on every rank.
/// @param comm an intra-communicator (MPI initialised, not finalised).
/// @throws std::invalid_argument on every rank, before anything is summed (buf unchanged): the
///         buffers' sizes differ across ranks (the message gives this rank's size and the range),
///         every buffer is empty, a worker slot is not an integer in 1..2^20 on some rank, or the
///         buffer exceeds INT_MAX doubles; on the calling rank: comm is MPI_COMM_NULL or an
///         intercommunicator.
/// @throws std::runtime_error MPI not initialised or already finalised, or an MPI call returned
///         an error (only with MPI_ERRORS_RETURN on comm), naming the call.
inline void allreduce(ReduceBuffer& buf, MPI_Comm comm) {
  detail::allreduce_or_throw("fgbg::mpi::allreduce", buf, comm, nullptr);
}

/// Steps 1 and 2 in one collective: runs `compute()` (which returns this rank's ReduceBuffer)
/// and all-reduces its result; returns the reduced buffer. If `compute()` throws on some ranks
/// (a bad label, a NaN logit on one shard), every rank still takes part in the size exchange and
/// then throws: a failing rank its own exception, every other rank std::invalid_argument naming
/// a failing rank (the highest). Otherwise it throws as allreduce.
///
/// For example, EFL: `auto b = fgbg::mpi::compute_and_allreduce([&] { fgbg::ReduceBuffer l;
/// v = loss.value_and_grad(x, y, g, state, a, l); return l; }, comm); state.commit(b);`
template <typename Compute>
ReduceBuffer compute_and_allreduce(Compute&& compute, MPI_Comm comm) {
  ReduceBuffer buf;
  std::exception_ptr failure;
  try {
    buf = std::forward<Compute>(compute)();
  } catch (...) {
    failure = std::current_exception();
  }
  detail::allreduce_or_throw("fgbg::mpi::compute_and_allreduce", buf, comm, failure);
  return buf;
}

/// The positive and valid anchor counts of the whole batch over every rank of `comm`:
/// positive_count_buffer(labels, classes), allreduce, reduced_counts. A collective (see the file
/// comment): call it on every rank, every step, also when this rank's shard has no positives.
///
/// @param labels  this rank's labels (N_r, −1 ignore, 0 background, 1..C; N_r may be 0).
/// @param classes C, the same on every rank.
/// @throws std::invalid_argument on every rank: a label outside −1..C on some rank (that rank
///         throws positive_count_buffer's message, the others name it), classes that differ
///         across ranks (reduced_counts: "classes differs across ranks"); the errors of
///         allreduce otherwise.
/// @throws std::runtime_error as allreduce.
template <typename LD>
GlobalCounts global_counts(const Eigen::DenseBase<LD>& labels, Index classes, MPI_Comm comm) {
  ReduceBuffer buf;
  std::exception_ptr failure;
  try {
    buf = positive_count_buffer(labels, classes);
  } catch (...) {
    failure = std::current_exception();
  }
  detail::allreduce_or_throw("fgbg::mpi::global_counts", buf, comm, failure);
  return reduced_counts(buf, classes);
}

/// RetinaNet's normaliser of one process on the whole batch, on every rank:
/// Normalizer::avg_factor(max(1, P)) with P the positive count summed over `comm`, i.e.
/// `global_counts(labels, classes, comm).avg_factor()`. Passed to a loss on each shard, it makes
/// each rank's gradient the rows of the single-process gradient with Normalizer::num_positives().
/// A collective; throws as global_counts.
template <typename LD>
Normalizer global_avg_factor(const Eigen::DenseBase<LD>& labels, Index classes, MPI_Comm comm) {
  return global_counts(labels, classes, comm).avg_factor();
}

}  // namespace mpi
}  // namespace fgbg
