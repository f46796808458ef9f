// The shared core: random draws from any URBG, normaliser validation, aliasing checks.
#include <catch2/catch.hpp>
#include <fgbg/fgbg.hpp>
#include <random>
#include <vector>

using fgbg::Index;
using fgbg::RowArray;

TEST_CASE("random: 32-bit engines are concatenated high word first", "[core][random]") {
  std::mt19937 a(5), b(5);
  for (int i = 0; i < 100; ++i) {
    const std::uint64_t hi = b(), lo = b();
    CHECK(fgbg::detail::random_bits(a) == ((hi << 32) | lo));
  }
  std::mt19937_64 c(9), d(9);
  for (int i = 0; i < 100; ++i) CHECK(fgbg::detail::random_bits(c) == d());
}

TEMPLATE_TEST_CASE("random: uniform_below is uniform for any URBG", "[core][random]",
                   std::minstd_rand, std::ranlux24, std::mt19937, std::mt19937_64) {
  TestType rng(123);
  const int bound = 7, draws = 70000;
  std::vector<int> count(bound, 0);
  bool in_range = true;
  for (int i = 0; i < draws; ++i) {
    const auto v = fgbg::detail::uniform_below(rng, bound);
    in_range = in_range && v < std::uint64_t(bound);
    ++count[v % bound];
  }
  REQUIRE(in_range);
  double chi2 = 0;
  const double expected = double(draws) / bound;
  for (int c : count) chi2 += (c - expected) * (c - expected) / expected;
  CHECK(chi2 < 22.5);  // 6 degrees of freedom, p ≈ 0.001
  // Same seed, same draws.
  TestType r1(77), r2(77);
  for (int i = 0; i < 50; ++i)
    CHECK(fgbg::detail::uniform_below(r1, 1000003) == fgbg::detail::uniform_below(r2, 1000003));
}

TEST_CASE("random: choose_in_place picks k distinct entries", "[core][random]") {
  std::minstd_rand rng(1);
  std::vector<int> pool(50);
  for (int i = 0; i < 50; ++i) pool[i] = i;
  CHECK(fgbg::choose_in_place(pool, 20, rng) == 20);
  std::vector<int> first(pool.begin(), pool.begin() + 20);
  std::sort(first.begin(), first.end());
  CHECK(std::adjacent_find(first.begin(), first.end()) == first.end());
  CHECK(fgbg::choose_in_place(pool, 80, rng) == 50);
  CHECK_THROWS_AS(fgbg::choose_in_place(pool, -1, rng), std::invalid_argument);
}

TEST_CASE("normaliser: avg_factor must be finite, positive and invertible in float",
          "[core][normalizer]") {
  CHECK_NOTHROW(fgbg::Normalizer::avg_factor(1e-30).validate("t"));
  CHECK_THROWS_WITH(fgbg::Normalizer::avg_factor(3e-39).validate("t"),
                    Catch::Contains("avg_factor must be >= 1e-37"));
  CHECK_THROWS_AS(fgbg::Normalizer::avg_factor(std::nan("")).validate("t"), std::invalid_argument);
  CHECK_THROWS_AS(fgbg::Normalizer::avg_factor(INFINITY).validate("t"), std::invalid_argument);
  // A tiny but accepted factor gives finite float gradients.
  RowArray<float> x = RowArray<float>::Constant(2, 2, 0.5f), g(2, 2);
  fgbg::LabelVector y(2);
  y << 1, 0;
  const float v =
      fgbg::SigmoidFocalLoss<float>().value_and_grad(x, y, g, fgbg::Normalizer::avg_factor(1e-30));
  CHECK(std::isfinite(v));
  CHECK(g.isFinite().all());
}

TEST_CASE("aliasing: weights sharing memory with the gradient are refused", "[core][alias]") {
  RowArray<float> buf = RowArray<float>::Constant(3, 3, 0.5f);
  RowArray<float> x = RowArray<float>::Constant(3, 2, 0.2f);
  fgbg::LabelVector y(3);
  y << 1, 0, 2;
  // Column 1 of buf holds the weights, columns 0-1 the gradient: they share column 1.
  CHECK_THROWS_WITH(fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(
                        x, y, buf.leftCols(2), fgbg::Weights<float>(buf.col(1))),
                    Catch::Contains("weights must not share memory with grad"));
  CHECK((buf == 0.5f).all());
  // Column 2 holds the weights: interleaved in memory with the gradient's columns 0-1 but
  // sharing no byte (the overlap test is exact for lines of one stride), so the call is the
  // call on separate arrays.
  Eigen::ArrayXf w = Eigen::ArrayXf::Constant(3, 0.5f);
  RowArray<float> g(3, 2);
  const float v = fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(x, y, g, w);
  CHECK(fgbg::SigmoidCrossEntropyLoss<float>().value_and_grad(
            x, y, buf.leftCols(2), fgbg::Weights<float>(buf.col(2))) == v);
  CHECK((buf.leftCols(2) == g).all());
  CHECK((buf.col(2) == 0.5f).all());
}
