// fgbg/mpi.hpp under mpirun (issue 11, item 4): every rank holds rows of one deterministic random
// problem, reduces its buffers over MPI_COMM_WORLD and must reproduce what one process computes
// on the whole batch (which every rank also computes, to compare its own rows); bad inputs on one
// rank must make every rank throw, and the run must end (ctest's TIMEOUT catches a hang).
//
// Every rank runs every test case in the same order, so the collectives line up. Only CHECK is
// used (never REQUIRE): a failed check must not make one rank skip a collective that the others
// enter.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <fgbg/mpi.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "support/problems.hpp"

namespace {

using fgbg::Index;

int g_rank = 0;
int g_ranks = 1;

/// Uneven cut points of n rows into w shards (shard r is rows [c[r], c[r+1])): cut r at
/// n·r(r+1)/(w(w+1)), so shards grow with the rank; with `align` > 0 every cut is rounded down
/// to a multiple of `align` rows (a tile boundary of the dense engine).
std::vector<Index> cuts(Index n, int w, Index align = 0) {
  std::vector<Index> c;
  for (int r = 0; r <= w; ++r) {
    Index at = n * r * (r + 1) / (w * (w + 1));
    if (align > 0 && r < w) at = at / align * align;
    c.push_back(at);
  }
  return c;
}

Index tile_rows(Index classes) {
  return fgbg::detail::TileGrid(1, classes).tile_rows;
}

double sum_over_ranks(double v) {
  double s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return s;
}

/// True on every rank iff `flag` is true on every rank.
bool all_ranks(bool flag) {
  int in = flag ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out == 1;
}

/// Rank 0's bytes on every rank.
std::vector<std::uint8_t> from_rank0(std::vector<std::uint8_t> bytes) {
  unsigned long long n = bytes.size();
  MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  bytes.resize(static_cast<std::size_t>(n));
  MPI_Bcast(bytes.data(), static_cast<int>(n), MPI_UNSIGNED_CHAR, 0, MPI_COMM_WORLD);
  return bytes;
}

/// Runs f; true if it threw an exception of type E whose message contains `text`.
template <typename E, typename F>
bool throws_with(F&& f, const std::string& text) {
  try {
    f();
  } catch (const E& e) {
    const std::string what = e.what();
    INFO("rank " << g_rank << " threw: " << what);
    CHECK(what.find(text) != std::string::npos);
    return what.find(text) != std::string::npos;
  } catch (const std::exception& e) {
    FAIL_CHECK("rank " << g_rank << " threw another exception: " << e.what());
    return false;
  }
  FAIL_CHECK("rank " << g_rank << " did not throw (expected: " << text << ")");
  return false;
}

template <typename A>
void check_rows(const A& mine, const A& whole_rows, bool aligned, double ulps) {
  using S = typename A::Scalar;
  if (aligned) {
    CHECK((mine == whole_rows).all());
  } else {
    const S bound = static_cast<S>(ulps) * std::numeric_limits<S>::epsilon();
    CHECK(((mine - whole_rows).abs() <= bound * whole_rows.abs()).all());
  }
}

template <typename S>
void ghmc_equivalence(double momentum, bool weighted, bool aligned) {
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 30;
  cfg.momentum = momentum;
  const fgbg::GhmcLoss<S> loss(cfg);
  fgbg::GhmcState whole(30), mine(30);
  fgbg_test::ProblemOptions o;
  o.n = 3001;
  o.classes = 7;
  for (int step = 0; step < 4; ++step) {
    const auto p = fgbg_test::random_problem<S>(1000 + step, o);
    fgbg::RowArray<S> g_whole(p.rows(), p.cols());
    const S v_whole = weighted ? loss.value_and_grad(p.logits, p.labels, g_whole, whole, p.weights)
                               : loss.value_and_grad(p.logits, p.labels, g_whole, whole);
    const auto c = cuts(p.rows(), g_ranks, aligned ? tile_rows(p.cols()) : 0);
    const Index lo = c[g_rank], n = c[g_rank + 1] - c[g_rank];
    const fgbg::RowArray<S> x = p.logits.middleRows(lo, n);
    const fgbg::LabelVector y = p.labels.segment(lo, n);
    const Eigen::Array<S, Eigen::Dynamic, 1> w = p.weights.segment(lo, n);
    fgbg::ReduceBuffer b = weighted ? loss.batch_statistics(x, y, w) : loss.batch_statistics(x, y);
    fgbg::mpi::allreduce(b, MPI_COMM_WORLD);
    CHECK(b.workers() == g_ranks);
    fgbg::RowArray<S> g(n, p.cols());
    const S v =
        weighted ? loss.value_and_grad(x, y, g, mine, w, b) : loss.value_and_grad(x, y, g, mine, b);
    INFO("rank " << g_rank << " of " << g_ranks << ", step " << step << ", momentum " << momentum
                 << ", weighted " << weighted << ", aligned " << aligned);
    // The factors come from exact integer counts: the state is bit-identical to one process,
    // and so is every gradient element on tile-aligned shards (docs/data_parallel.md).
    CHECK(mine == whole);
    check_rows(g, fgbg::RowArray<S>(g_whole.middleRows(lo, n)), aligned, 8);
    const double eps = std::numeric_limits<S>::epsilon();
    const double v_sum = sum_over_ranks(static_cast<double>(v));
    const double v_abs = sum_over_ranks(std::abs(static_cast<double>(v)));
    CHECK(std::abs(v_sum - static_cast<double>(v_whole)) <=
          4 * eps * (v_abs + std::abs(static_cast<double>(v_whole))) + 1e-300);
  }
}

template <typename S>
void efl_equivalence(double decay, double tol) {
  fgbg::EqualizedFocalLossConfig<S> cfg;
  cfg.decay = decay;
  const fgbg::EqualizedFocalLoss<S> loss(cfg);
  fgbg_test::ProblemOptions o;
  o.n = 2500;
  o.classes = 9;
  fgbg::EqualizedFocalState whole(9), mine(9);
  for (int step = 0; step < 4; ++step) {
    const auto p = fgbg_test::random_problem<S>(500 + step, o);
    fgbg::RowArray<S> g_whole;
    const double v_whole = loss.value_and_grad(p.logits, p.labels, g_whole, whole, p.weights);
    const auto c = cuts(p.rows(), g_ranks);
    const Index lo = c[g_rank], n = c[g_rank + 1] - c[g_rank];
    const fgbg::RowArray<S> x = p.logits.middleRows(lo, n);
    const fgbg::LabelVector y = p.labels.segment(lo, n);
    const Eigen::Array<S, Eigen::Dynamic, 1> w = p.weights.segment(lo, n);
    const fgbg::Normalizer a = fgbg::mpi::global_avg_factor(y, 9, MPI_COMM_WORLD);
    CHECK(a.factor == std::max<double>(1.0, static_cast<double>(p.positives())));
    fgbg::RowArray<S> g(n, p.cols());
    double v = 0;
    const fgbg::EqualizedFocalState before = mine;
    fgbg::ReduceBuffer b = fgbg::mpi::compute_and_allreduce(
        [&] {
          fgbg::ReduceBuffer local;
          v = loss.value_and_grad(x, y, g, mine, w, a, local);
          return local;
        },
        MPI_COMM_WORLD);
    CHECK(mine == before);  // the buffer path does not commit
    mine.commit(b);
    INFO("rank " << g_rank << " of " << g_ranks << ", step " << step << ", decay " << decay);
    // Real-valued sums in MPI's order instead of one process's: equal to rounding.
    const fgbg::RowArray<S> rows = g_whole.middleRows(lo, n);
    const double gmax = g_whole.abs().template cast<double>().maxCoeff();
    CHECK((g - rows).abs().template cast<double>().maxCoeff() <= tol * gmax);
    const double v_sum = sum_over_ranks(v);
    CHECK(std::abs(v_sum - v_whole) <= tol * std::abs(v_whole));
    CHECK(mine.updates() == whole.updates());
    CHECK(((mine.pos_grad() - whole.pos_grad()).abs() <= tol * whole.pos_grad().abs()).all());
    CHECK(((mine.neg_grad() - whole.neg_grad()).abs() <= tol * whole.neg_grad().abs()).all());
    // Every rank committed the same reduced buffer: the states agree bit for bit across ranks.
    CHECK(from_rank0(mine.save()) == mine.save());
  }
}

template <typename S>
void focal_equivalence(bool aligned) {
  fgbg_test::ProblemOptions o;
  o.n = 2000;
  o.classes = 6;
  const auto p = fgbg_test::random_problem<S>(31, o);
  const fgbg::SigmoidFocalLoss<S> focal;
  fgbg::RowArray<S> g_whole;
  const double v_whole = focal.value_and_grad(p.logits, p.labels, g_whole);
  const auto c = cuts(p.rows(), g_ranks, aligned ? tile_rows(p.cols()) : 0);
  const Index lo = c[g_rank], n = c[g_rank + 1] - c[g_rank];
  const fgbg::GlobalCounts gc =
      fgbg::mpi::global_counts(p.labels.segment(lo, n), 6, MPI_COMM_WORLD);
  CHECK(gc.positives == p.positives());
  CHECK(gc.valid == (p.labels >= 0).count());
  CHECK(gc.workers == g_ranks);
  fgbg::RowArray<S> g(n, p.cols());
  const double v = focal.value_and_grad(
      p.logits.middleRows(lo, n), p.labels.segment(lo, n), g,
      fgbg::mpi::global_avg_factor(p.labels.segment(lo, n), 6, MPI_COMM_WORLD));
  INFO("rank " << g_rank << " of " << g_ranks << ", aligned " << aligned);
  check_rows(g, fgbg::RowArray<S>(g_whole.middleRows(lo, n)), aligned, 16);
  const double eps = std::numeric_limits<S>::epsilon();
  CHECK(std::abs(sum_over_ranks(v) - v_whole) <= 8 * eps * v_whole);
}

}  // namespace

TEST_CASE("MPI: GHM-C with the all-reduced histogram equals one process", "[mpi]") {
  for (bool aligned : {true, false}) {
    ghmc_equivalence<float>(0.0, false, aligned);
    ghmc_equivalence<float>(0.75, true, aligned);
    ghmc_equivalence<double>(0.75, false, aligned);
    ghmc_equivalence<double>(0.0, true, aligned);
  }
}

TEST_CASE("MPI: EFL statistics all-reduced and committed equal one process", "[mpi]") {
  efl_equivalence<double>(1.0, 1e-11);
  efl_equivalence<double>(0.9, 1e-11);
  efl_equivalence<float>(1.0, 1e-4);
}

TEST_CASE("MPI: focal loss with global_avg_factor equals one process", "[mpi]") {
  for (bool aligned : {true, false}) {
    focal_equivalence<float>(aligned);
    focal_equivalence<double>(aligned);
  }
}

TEST_CASE("MPI: a rank with no positives, or no anchors at all, still takes part", "[mpi]") {
  fgbg_test::ProblemOptions o;
  o.n = 1500;
  o.classes = 5;
  auto p = fgbg_test::random_problem<double>(77, o);
  const Index tile = tile_rows(o.classes);
  for (bool empty_first : {false, true}) {
    // Shards: rank 0's is empty (empty_first) or the last rank's has only background and
    // ignored anchors; cuts at tile boundaries.
    std::vector<Index> c = cuts(p.rows(), g_ranks, tile);
    if (empty_first) c[1] = 0;
    auto q = p;
    if (!empty_first)
      for (Index i = c[g_ranks - 1]; i < q.rows(); ++i)
        if (q.labels[i] > 0) q.labels[i] = 0;
    const Index lo = c[g_rank], n = c[g_rank + 1] - c[g_rank];
    const fgbg::LabelVector y = q.labels.segment(lo, n);
    const fgbg::RowArray<double> x = q.logits.middleRows(lo, n);
    INFO("rank " << g_rank << " of " << g_ranks << " with " << n << " anchors, " << (y > 0).count()
                 << " positives");
    const fgbg::GlobalCounts gc = fgbg::mpi::global_counts(y, 5, MPI_COMM_WORLD);
    CHECK(gc.positives == q.positives());
    CHECK(gc.positives > 0);
    CHECK(gc.valid == (q.labels >= 0).count());
    // Focal with the global normaliser: this rank's rows of the single-process gradient.
    const fgbg::SigmoidFocalLoss<double> focal;
    fgbg::RowArray<double> g_whole, g(n, q.cols());
    focal.value_and_grad(q.logits, q.labels, g_whole);
    focal.value_and_grad(x, y, g, gc.avg_factor());
    CHECK((g == g_whole.middleRows(lo, n)).all());
    // GHM-C: the reduced histogram and the committed state.
    fgbg::GhmcLossConfig cfg;
    cfg.bins = 10;
    cfg.momentum = 0.75;
    const fgbg::GhmcLoss<double> ghm(cfg);
    fgbg::GhmcState whole(10), mine(10);
    fgbg::RowArray<double> h_whole, h(n, q.cols());
    ghm.value_and_grad(q.logits, q.labels, h_whole, whole);
    fgbg::ReduceBuffer b = ghm.batch_statistics(x, y);
    fgbg::mpi::allreduce(b, MPI_COMM_WORLD);
    ghm.value_and_grad(x, y, h, mine, b);
    CHECK(mine == whole);
    CHECK((h == h_whole.middleRows(lo, n)).all());
  }
}

TEST_CASE("MPI: buffers of different sizes throw on every rank, nothing reduced", "[mpi]") {
  // GHM-C with 31 bins on the last rank, 30 elsewhere: a longer buffer.
  fgbg::GhmcLossConfig cfg;
  cfg.bins = g_rank == g_ranks - 1 ? 31 : 30;
  const auto p = fgbg_test::random_problem<float>(3 + static_cast<std::uint64_t>(g_rank));
  fgbg::ReduceBuffer b = fgbg::GhmcLoss<float>(cfg).batch_statistics(p.logits, p.labels);
  const fgbg::ReduceBuffer before = b;
  const bool threw = throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::allreduce(b, MPI_COMM_WORLD); }, "doubles on rank");
  CHECK(b == before);
  CHECK(all_ranks(threw));
  // EFL buffers of another number of classes on rank 0.
  const fgbg::EqualizedFocalLoss<float> efl;
  const auto q = fgbg_test::random_problem<float>(4);
  const Index cols = g_rank == 0 ? q.cols() - 1 : q.cols();
  fgbg::EqualizedFocalState s(cols);
  fgbg::RowArray<float> g;
  fgbg::LabelVector y = q.labels.min(static_cast<fgbg::Label>(cols));
  const bool threw2 = throws_with<std::invalid_argument>(
      [&] {
        fgbg::mpi::compute_and_allreduce(
            [&] {
              fgbg::ReduceBuffer local;
              efl.value_and_grad(q.logits.leftCols(cols), y, g, s, local);
              return local;
            },
            MPI_COMM_WORLD);
      },
      "across the " + std::to_string(g_ranks) + " ranks");
  CHECK(all_ranks(threw2));
}

TEST_CASE("MPI: a header that differs across ranks throws on every rank", "[mpi]") {
  const auto p = fgbg_test::random_problem<double>(8);
  // GHM-C: another momentum on rank 1 (same buffer size, so the sum goes through): the commit
  // step finds "momentum differs across ranks" in the reduced header, on every rank alike.
  fgbg::GhmcLossConfig cfg;
  cfg.bins = 12;
  cfg.momentum = g_rank == 1 ? 0.5 : 0.75;
  const fgbg::GhmcLoss<double> loss(cfg);
  fgbg::ReduceBuffer b = loss.batch_statistics(p.logits, p.labels);
  fgbg::mpi::allreduce(b, MPI_COMM_WORLD);
  fgbg::GhmcState s(12);
  const fgbg::GhmcState before = s;
  fgbg::RowArray<double> g;
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { loss.value_and_grad(p.logits, p.labels, g, s, b); }, "momentum differs across ranks")));
  CHECK(s == before);
  // Another number of bins on rank 0 (the sizes differ): allreduce throws on every rank.
  fgbg::GhmcLossConfig other = cfg;
  other.momentum = 0.75;
  other.bins = g_rank == 0 ? 13 : 12;
  fgbg::ReduceBuffer c = fgbg::GhmcLoss<double>(other).batch_statistics(p.logits, p.labels);
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::allreduce(c, MPI_COMM_WORLD); }, "doubles on rank")));
  // The positive count with classes 6 on the last rank, 5 elsewhere (labels valid for both).
  const Index classes = g_rank == g_ranks - 1 ? 6 : 5;
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::global_counts(p.labels, classes, MPI_COMM_WORLD); },
      "classes differs across ranks")));
}

TEST_CASE("MPI: a compute step that throws on one rank makes every rank throw", "[mpi]") {
  auto p = fgbg_test::random_problem<double>(9);
  const int bad = g_ranks - 1;
  // A label outside -1..C on the last rank: it throws positive_count_buffer's message, the
  // others name that rank.
  if (g_rank == bad) p.labels[3] = 99;
  const std::string other = "threw on rank " + std::to_string(bad);
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::global_counts(p.labels, p.cols(), MPI_COMM_WORLD); },
      g_rank == bad ? "labels(3) = 99 is outside" : other.c_str())));
  // A NaN logit on rank 0 in GHM-C's statistics: std::domain_error there, invalid_argument
  // naming rank 0 elsewhere.
  p = fgbg_test::random_problem<double>(9);
  if (g_rank == 0) p.logits(2, 1) = std::numeric_limits<double>::quiet_NaN();
  const fgbg::GhmcLoss<double> loss;
  const auto run = [&] {
    fgbg::mpi::compute_and_allreduce([&] { return loss.batch_statistics(p.logits, p.labels); },
                                     MPI_COMM_WORLD);
  };
  const bool threw = g_rank == 0 ? throws_with<std::domain_error>(run, "logits(2, 1)")
                                 : throws_with<std::invalid_argument>(run, "threw on rank 0");
  CHECK(all_ranks(threw));
}

TEST_CASE("MPI: malformed buffers and communicators are refused", "[mpi]") {
  const auto p = fgbg_test::random_problem<float>(10);
  // A worker slot that is not a count on one rank (a buffer that is not a ReduceBuffer's).
  fgbg::ReduceBuffer b = fgbg::positive_count_buffer(p.labels, p.cols());
  if (g_rank == g_ranks - 1) b.data()[0] = 0.5;
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::allreduce(b, MPI_COMM_WORLD); }, "worker count")));
  // Empty buffers everywhere (default-constructed: the compute step never ran).
  fgbg::ReduceBuffer empty;
  CHECK(all_ranks(throws_with<std::invalid_argument>(
      [&] { fgbg::mpi::allreduce(empty, MPI_COMM_WORLD); }, "empty on every rank")));
  // MPI_COMM_NULL, and an intercommunicator between the even and the odd ranks.
  fgbg::ReduceBuffer ok = fgbg::positive_count_buffer(p.labels, p.cols());
  CHECK(throws_with<std::invalid_argument>([&] { fgbg::mpi::allreduce(ok, MPI_COMM_NULL); },
                                           "MPI_COMM_NULL"));
  MPI_Comm half = MPI_COMM_NULL, inter = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, g_rank % 2, g_rank, &half);
  MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, g_rank % 2 == 0 ? 1 : 0, 7, &inter);
  CHECK(throws_with<std::invalid_argument>([&] { fgbg::mpi::allreduce(ok, inter); },
                                           "intercommunicator"));
  MPI_Comm_free(&inter);
  // A sub-communicator: the sum is over its ranks only.
  fgbg::ReduceBuffer sub = fgbg::positive_count_buffer(p.labels, p.cols());
  fgbg::mpi::allreduce(sub, half);
  int half_size = 0;
  MPI_Comm_size(half, &half_size);
  const fgbg::GlobalCounts gc = fgbg::reduced_counts(sub, p.cols());
  CHECK(gc.workers == half_size);
  CHECK(gc.positives == half_size * p.positives());
  MPI_Comm_free(&half);
  // An MPI error code becomes std::runtime_error naming the call and MPI's text.
  CHECK(throws_with<std::runtime_error>(
      [] { fgbg::mpi::detail::check_mpi(MPI_ERR_COMM, "fgbg::mpi::allreduce", "MPI_Allreduce"); },
      "fgbg::mpi::allreduce: MPI_Allreduce failed: "));
  fgbg::mpi::detail::check_mpi(MPI_SUCCESS, "x", "y");  // no throw
}

TEST_CASE("MPI harness: a check failing on rank 1 only fails the run", "[.inject]") {
  CHECK(all_ranks(true));
  INFO("injected failure on rank " << g_rank);
  CHECK(g_rank != 1);
  CHECK(all_ranks(true));
}

int main(int argc, char** argv) {
  // Before MPI_Init and after MPI_Finalize every function must refuse with runtime_error.
  const auto refused = [](const char* what) {
    const fgbg::LabelVector y = fgbg::LabelVector::Zero(4);
    try {
      fgbg::mpi::global_counts(y, 3, MPI_COMM_WORLD);
    } catch (const std::runtime_error& e) {
      return std::string(e.what()).find(what) != std::string::npos;
    }
    return false;
  };
  const bool before_init = refused("MPI is not initialised");
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_ranks);
  Catch::Session session;
  int rc = session.applyCommandLine(argc, argv);
  if (rc == 0) {
    session.configData().processName =
        "test_mpi rank " + std::to_string(g_rank) + " of " + std::to_string(g_ranks);
    rc = session.run();
  }
  MPI_Finalize();
  const bool after_finalize = refused("MPI is already finalised");
  if (!before_init || !after_finalize) {
    std::fprintf(stderr, "rank %d: fgbg::mpi did not refuse a call %s\n", g_rank,
                 before_init ? "after MPI_Finalize" : "before MPI_Init");
    rc = rc == 0 ? 1 : rc;
  }
  return rc;
}
