// Threads: every loss gives bit-identical values, gradients, side outputs and states for 1 and 2
// threads (the dense engine and DR loss run their passes on threads; the others must not care).
// This executable is always built with OpenMP (tests/CMakeLists.txt), whatever FGBG_USE_OPENMP
// says; the losses are the fixtures of the contract suite (support/contract.hpp).
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fgbg/fgbg.hpp>
#include <limits>
#include <tuple>
#include <vector>

// Every malloc, calloc and realloc of the process, counted (operator new, Eigen's aligned
// allocator and libgomp's team structures all go through them): the allocation guard of the
// other tests sees only operator new and Eigen. Not under AddressSanitizer, which owns malloc.
#if defined(__SANITIZE_ADDRESS__)
#define FGBG_TEST_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FGBG_TEST_COUNT_MALLOC 0
#endif
#endif
#ifndef FGBG_TEST_COUNT_MALLOC
#define FGBG_TEST_COUNT_MALLOC 1
#endif
#if FGBG_TEST_COUNT_MALLOC
namespace {
std::atomic<long> g_mallocs{0};
}
extern "C" void* __libc_malloc(std::size_t);
extern "C" void* __libc_calloc(std::size_t, std::size_t);
extern "C" void* __libc_realloc(void*, std::size_t);
extern "C" void* malloc(std::size_t n) noexcept {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
extern "C" void* calloc(std::size_t a, std::size_t b) noexcept {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(a, b);
}
extern "C" void* realloc(void* p, std::size_t n) noexcept {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, n);
}
#endif

#include "support/contract.hpp"
#include "support/problems.hpp"

#if FGBG_OPENMP_ENABLED
namespace {
using namespace fgbg_test::contract;

/// Values, gradient and aux (state, side outputs) of one call with `threads` threads.
template <typename F>
auto call_with_threads(const F& f, const Case<typename F::Scalar>& c, const typename F::Aux& warm,
                       int threads) {
  omp_set_num_threads(threads);
  auto a = warm;
  RowArray<typename F::Scalar> g(c.p.rows(), c.p.cols());
  const Values v = f.grad(c, c.p.logits, g, a);
  return std::make_tuple(v, g, a);
}
}  // namespace

// Every loss of the contract suite (support/contract.hpp), on a problem above
// kParallelMinElems whose size is not a multiple of the tile.
TEMPLATE_LIST_TEST_CASE("every loss is bit-identical for 1 and 2 threads", "[threads][contract]",
                        FixtureList) {
  using F = TestType;
  using S = typename F::Scalar;
  REQUIRE(fgbg::max_threads() >= 1);
  const Index n = 1001, classes = 80;
  REQUIRE(n * classes > fgbg::detail::kParallelMinElems);
  for (int v = 0; v < F::kVariants; ++v)
    for (bool w : F::kWeights ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      const F f(v);
      const Case<S> c = make_case<S>(3, options_for<F>(n, classes), w);
      const auto warm = f.make_aux(c);
      INFO(F::kName << " variant " << v << (w ? " weights" : ""));
      const auto [v1, g1, a1] = call_with_threads(f, c, warm, 1);
      const auto [v2, g2, a2] = call_with_threads(f, c, warm, 2);
      INFO(v1 << " vs " << v2);
      CHECK(same(v1, v2));
      CHECK(same_array(g1, g2));
      CHECK(F::same(a1, a2));
    }
  omp_set_num_threads(2);
}

// No allocation per call in steady state, counted at the malloc level, with 1 and 2 threads:
// the engine's parallel regions reuse libgomp's thread pool, and a region that would run one
// thread allocates nothing either (issue 12: the operator-new guard could not see libgomp).
TEMPLATE_LIST_TEST_CASE("every loss allocates nothing per call at the malloc level",
                        "[threads][alloc][contract]", FixtureList) {
#if FGBG_TEST_COUNT_MALLOC
  using F = TestType;
  using S = typename F::Scalar;
  const Index n = 1001, classes = 80;
  for (int v = 0; v < F::kVariants; ++v) {
    const F f(v);
    const Case<S> c = make_case<S>(4, options_for<F>(n, classes), F::kWeights);
    auto a = f.make_aux(c);
    RowArray<S> g(c.p.rows(), c.p.cols());
    long counts[2] = {0, 0};
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      f.grad(c, c.p.logits, g, a);  // warm: workspaces, the thread pool
      f.grad(c, c.p.logits, g, a);
      const long before = g_mallocs.load();
      for (int r = 0; r < 3; ++r) {
        f.grad(c, c.p.logits, g, a);
        f.value(c, c.p.logits, a);
      }
      counts[threads - 1] = g_mallocs.load() - before;
    }
    INFO(F::kName << " variant " << v);
    CHECK(counts[0] == 0);
    CHECK(counts[1] == 0);
  }
  // The counter sees what it must: a vector's buffer is one malloc.
  const long before = g_mallocs.load();
  std::vector<double> probe(100);
  CHECK(g_mallocs.load() - before == 1);
  CHECK(probe.size() == 100);
  omp_set_num_threads(2);
#else
  WARN("not measured under AddressSanitizer (it owns malloc)");
#endif
}

// Per-anchor losses of rows wider than one tile are summed over the row's column tiles: the
// engine's chunks hold whole tile rows, so this is race-free and thread-independent.
TEMPLATE_TEST_CASE("per-anchor and per-element losses are bit-identical for 1 and 2 threads",
                   "[threads][loss_outputs]", float, double) {
  using S = TestType;
  for (Index classes : {Index(80), Index(5000)}) {
    fgbg_test::ProblemOptions o;
    o.n = classes == 80 ? 1001 : 41;
    o.classes = classes;
    const auto p = fgbg_test::random_problem<S>(5, o);
    REQUIRE(p.logits.size() > fgbg::detail::kParallelMinElems);
    const fgbg::SigmoidFocalLoss<S> focal;
    std::vector<Eigen::Array<S, Eigen::Dynamic, 1>> a(2);
    std::vector<RowArray<S>> e(2), g(2);
    std::vector<double> v(2);
    for (int t = 0; t < 2; ++t) {
      omp_set_num_threads(t + 1);
      v[t] = focal.value_and_grad(p.logits, p.labels, g[t], p.weights, fgbg::anchor_losses(a[t]));
      CHECK(focal.value(p.logits, p.labels, p.weights, fgbg::element_losses(e[t])) == v[t]);
    }
    INFO("C = " << classes);
    CHECK(v[0] == v[1]);
    CHECK((a[0] == a[1]).all());
    CHECK((e[0] == e[1]).all());
    CHECK((g[0] == g[1]).all());
    // The anchor sums are the sums of the element losses (to the rounding of each run).
    for (Index i = 0; i < p.rows(); ++i)
      CHECK(std::abs(double(a[0][i]) - e[0].row(i).template cast<double>().sum()) <=
            1024 * std::numeric_limits<S>::epsilon() * std::abs(double(a[0][i])) + 1e-300);
  }
  omp_set_num_threads(2);
}
#else
TEST_CASE("threads test needs OpenMP", "[threads]") {
  WARN("built without OpenMP");
}
#endif
