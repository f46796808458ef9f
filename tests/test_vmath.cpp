// core/vmath.hpp: sampled error bounds (the exhaustive float / 10^8 double measurements are the
// tool tests/vmath/vmath_accuracy.cpp), the edges, and that the block kernels give the same bits
// for every offset, length and alignment (what the layout and thread promises rest on) and the
// same bits as the scalar code of one element.
#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fgbg/fgbg.hpp>
#include <limits>
#include <random>
#include <vector>

#include "vmath/vmath_check.hpp"

namespace vm = fgbg::detail::vm;

namespace {

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// One element of modulated_negatives / BCE negatives as scalar code (never vectorised: one call
// per element through a function that is not inlined).
template <typename T>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
void scalar_focal(T x, T a, T gamma, T& loss, T& grad) {
  const vm::Logistic<T> p = vm::logistic(x);
  const T sp = vm::softplus(x, p);
  const T m = gamma == T(2) ? a * (p.sig * p.sig) : a * vm::sigmoid_pow(x, p, gamma);
  loss = m * sp;
  grad = m * (p.sig + gamma * p.sig_neg * sp);
}

template <typename T>
std::vector<T> logits(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<T> nd(T(-4.6), T(3));
  std::vector<T> x(n);
  for (auto& v : x) v = nd(rng);
  const T mx = std::numeric_limits<T>::max();
  // extremes sprinkled in: ±max, the underflow ranges, ±0
  const T specials[] = {mx, -mx, T(0), -T(0), T(-90), T(-103.9), T(-200), T(-745), T(90), T(20)};
  for (size_t i = 0; i < n; i += 37) x[i] = specials[(i / 37) % 10];
  return x;
}

template <typename T>
void check_blocks_same_bits() {
  const size_t n = 2048 + 64;
  const std::vector<T> x0 = logits<T>(n, 5);
  for (const T gamma : {T(2), T(2.5), T(1), T(0)}) {
    // reference: aligned, whole tile
    std::vector<T> l0(n), g0(n), scratch(4 * 2048);
    fgbg::detail::modulated_negatives(x0.data(), l0.data(), g0.data(), scratch.data(),
                                      static_cast<fgbg::Index>(n), T(0.75), gamma);
    // every element equals the scalar code's bits
    if (gamma == T(2) || gamma == T(2.5)) {
      size_t diff = 0;
      for (size_t i = 0; i < n; ++i) {
        T l = 0, g = 0;
        scalar_focal(x0[i], T(0.75), gamma, l, g);
        diff += !same_bits(l, l0[i]) || !same_bits(g, g0[i]);
      }
      CHECK(diff == 0);
    }
    // any offset into a buffer (alignment) and any length (the padded tail)
    for (size_t off = 0; off < 17; ++off) {
      for (size_t len :
           {size_t(1), size_t(5), size_t(63), size_t(64), size_t(65), size_t(200), size_t(2000)}) {
        std::vector<T> xb(len + off + 1), lb(len + off + 1, T(42)), gb(len + off + 1, T(42));
        std::copy(x0.begin(), x0.begin() + static_cast<std::ptrdiff_t>(len), xb.begin() + off);
        fgbg::detail::modulated_negatives(xb.data() + off, lb.data() + off, gb.data() + off,
                                          scratch.data(), static_cast<fgbg::Index>(len), T(0.75),
                                          gamma);
        size_t diff = 0;
        for (size_t i = 0; i < len; ++i)
          diff += !same_bits(lb[off + i], l0[i]) || !same_bits(gb[off + i], g0[i]);
        CHECK(diff == 0);
        CHECK(lb[off + len] == T(42));  // nothing written past the end
        CHECK(gb[off + len] == T(42));
        // value only: the same losses
        std::vector<T> lv(len);
        fgbg::detail::modulated_negatives(xb.data() + off, lv.data(), static_cast<T*>(nullptr),
                                          scratch.data(), static_cast<fgbg::Index>(len), T(0.75),
                                          gamma);
        diff = 0;
        for (size_t i = 0; i < len; ++i) diff += !same_bits(lv[i], l0[i]);
        CHECK(diff == 0);
      }
    }
  }
  // BCE negatives: softplus and σ, same bits at every offset
  const fgbg::SigmoidCrossEntropyLoss<T> bce;
  std::vector<T> l0(n), g0(n), scratch(4 * 2048);
  bce.negatives({0, 1, 0, static_cast<fgbg::Index>(n)}, x0.data(), l0.data(), g0.data(),
                scratch.data());
  for (size_t i = 0; i < n; ++i) {
    const vm::Logistic<T> p = vm::logistic(x0[i]);
    CHECK(l0[i] == vm::softplus(x0[i], p));
    CHECK(g0[i] == p.sig);
  }
  for (size_t off = 1; off < 9; ++off) {
    const size_t len = 777;
    std::vector<T> xb(len + off), lb(len + off), gb(len + off);
    std::copy(x0.begin(), x0.begin() + len, xb.begin() + off);
    bce.negatives({0, 1, 0, static_cast<fgbg::Index>(len)}, xb.data() + off, lb.data() + off,
                  gb.data() + off, scratch.data());
    size_t diff = 0;
    for (size_t i = 0; i < len; ++i)
      diff += !same_bits(lb[off + i], l0[i]) || !same_bits(gb[off + i], g0[i]);
    CHECK(diff == 0);
  }
}

template <typename T>
void check_edges() {
  const T mx = std::numeric_limits<T>::max(), inf = std::numeric_limits<T>::infinity();
  CHECK(vm::exp_neg_abs(T(0)) == T(1));
  CHECK(vm::exp_neg_abs(-T(0)) == T(1));
  CHECK(vm::exp_neg_abs(mx) == T(0));
  CHECK(vm::exp_neg_abs(-mx) == T(0));
  CHECK(vm::exp_neg_abs(inf) == T(0));
  CHECK(vm::exp_neg_abs(-inf) == T(0));
  CHECK(vm::exp_nonpositive(T(-1)) == Approx(std::exp(-1.0)).epsilon(1e-6));
  CHECK(vm::log1p_unit(T(0)) == T(0));
  CHECK(vm::log1p_unit(T(1)) == Approx(std::log(2.0)).epsilon(1e-6));
  const T dn = std::numeric_limits<T>::denorm_min();
  CHECK(vm::log1p_unit(dn) == dn);
  for (const T x : {mx, -mx, T(1e30), -T(1e30)}) {
    const vm::Logistic<T> p = vm::logistic(x);
    CHECK(p.e == T(0));
    CHECK(p.log1p_e == T(0));
    CHECK(p.sig == (x > 0 ? T(1) : T(0)));
    CHECK(p.sig_neg == (x > 0 ? T(0) : T(1)));
    CHECK(vm::softplus(x, p) == (x > 0 ? x : T(0)));
    CHECK(vm::softplus_neg(x, p) == (x > 0 ? T(0) : -x));
    CHECK(vm::sigmoid_pow(x, p, T(2.5)) == (x > 0 ? T(1) : T(0)));
    CHECK(vm::sigmoid_pow(x, p, mx) == (x > 0 ? T(1) : T(0)));  // γ·softplus(−x) = inf → 0
    CHECK(vm::sigmoid_pow(x, p, T(0)) == T(1));
  }
  const vm::Logistic<T> z = vm::logistic(T(0));
  CHECK(z.sig == T(0.5));
  CHECK(z.sig_neg == T(0.5));
  CHECK(vm::relu(-T(0)) == T(0));
  CHECK(!std::signbit(vm::relu(-T(0))));
  // the focal t = 0 formula at ±max: finite, exact
  T loss[2], grad[2], scratch[1];
  const T xs[2] = {mx, -mx};
  for (const T gamma : {T(2), T(2.5)}) {
    fgbg::detail::modulated_negatives(xs, loss, grad, scratch, 2, T(0.75), gamma);
    CHECK(loss[0] == T(0.75) * mx);
    CHECK(grad[0] == T(0.75));
    CHECK(loss[1] == T(0));
    CHECK(grad[1] == T(0));
  }
}

void check_report(const vmath_check::Report& rep) {
  for (const auto& f : rep.failures) UNSCOPED_INFO(f);
  CHECK(rep.failures.empty());
  CHECK(rep.checked > 0);
}

}  // namespace

TEST_CASE("vmath: float error bounds on a sample of every 8191st float", "[vmath]") {
  vmath_check::Report rep;
  vmath_check::check_float(rep, 8191);
  check_report(rep);
}

TEST_CASE("vmath: double error bounds on 2e5 random inputs and the edges", "[vmath]") {
  vmath_check::Report rep;
  vmath_check::check_double(rep, 200000);
  check_report(rep);
}

TEST_CASE("vmath: edges", "[vmath]") {
  check_edges<float>();
  check_edges<double>();
}

TEST_CASE("vmath: block kernels give the same bits for every offset and length", "[vmath]") {
  check_blocks_same_bits<float>();
  check_blocks_same_bits<double>();
}
