// Threads: every loss gives bit-identical values, gradients, side outputs and states for 1 and 2
// threads (the dense engine and DR loss run their passes on threads; the others must not care).
// This executable is always built with OpenMP (tests/CMakeLists.txt), whatever FGBG_USE_OPENMP
// says; the losses are the fixtures of the contract suite (support/contract.hpp).
#include <catch2/catch.hpp>
#include <fgbg/fgbg.hpp>
#include <tuple>
#include <vector>

#include "support/contract.hpp"

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
#else
TEST_CASE("threads test needs OpenMP", "[threads]") {
  WARN("built without OpenMP");
}
#endif
