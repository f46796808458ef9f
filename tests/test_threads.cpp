// Threads: the dense engine gives bit-identical values and gradients for 1 and 2 threads. This
// executable is always built with OpenMP (tests/CMakeLists.txt), whatever FGBG_USE_OPENMP says.
#include <catch2/catch.hpp>
#include <fgbg/fgbg.hpp>
#include <random>

using fgbg::Index;
using fgbg::RowArray;

#if FGBG_OPENMP_ENABLED
namespace {
template <typename S>
struct Big {
  RowArray<S> x, xs;
  fgbg::LabelVector y;
  Big() {
    const Index n = 4001, c = 80;  // > kParallelMinElems and not a multiple of the tile
    std::mt19937_64 rng(3);
    std::normal_distribution<double> nd(-3.0, 2.5);
    x.resize(n, c);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(nd(rng));
    xs.resize(n, c + 1);
    xs.col(0).setZero();
    xs.rightCols(c) = x;
    y.resize(n);
    for (Index i = 0; i < n; ++i) y[i] = static_cast<int>((i * 7) % (c + 2)) - 1;
  }
};

template <typename F>
void same_for_1_and_2_threads(F&& call) {
  omp_set_num_threads(1);
  const auto [v1, g1] = call();
  omp_set_num_threads(2);
  const auto [v2, g2] = call();
  CHECK(v1 == v2);
  CHECK((g1 == g2).all());
}
}  // namespace

TEMPLATE_TEST_CASE("dense losses are bit-identical for 1 and 2 threads", "[threads]", float,
                   double) {
  using S = TestType;
  const Big<S> b;
  REQUIRE(fgbg::max_threads() >= 1);
  auto sig = [&](const auto& loss) {
    return [&] {
      RowArray<S> g(b.x.rows(), b.x.cols());
      const S v = loss.value_and_grad(b.x, b.y, g);
      return std::make_pair(v, g);
    };
  };
  same_for_1_and_2_threads(sig(fgbg::SigmoidCrossEntropyLoss<S>()));
  same_for_1_and_2_threads(sig(fgbg::SigmoidFocalLoss<S>()));
  same_for_1_and_2_threads(sig(fgbg::FocalLossStar<S>()));
  same_for_1_and_2_threads([&] {
    RowArray<S> g(b.x.rows(), b.x.cols());
    fgbg::GhmcState state(30);
    const S v = fgbg::GhmcLoss<S>({30, 0.75}).value_and_grad(b.x, b.y, g, state);
    return std::make_pair(v, g);
  });
  same_for_1_and_2_threads([&] {
    RowArray<S> g(b.xs.rows(), b.xs.cols());
    const S v = fgbg::SoftmaxFocalLoss<S>().value_and_grad(b.xs, b.y, g);
    return std::make_pair(v, g);
  });
  omp_set_num_threads(2);
}
#else
TEST_CASE("threads test needs OpenMP", "[threads]") {
  WARN("built without OpenMP");
}
#endif
