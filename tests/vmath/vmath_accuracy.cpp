// The measured error bounds of core/vmath.hpp (docs/performance.md, "Own transcendentals").
//
//   float:  every float of each function's input range, exhaustively, against the double
//           std:: functions (whose own error, < 1 ulp of double, is 2^-29 ulp of float);
//   double: N random inputs per function (default 10^8: uniform and log-uniform halves) plus
//           the edges, against long double (x86: 64-bit mantissa).
//
// Not a ctest (it takes minutes at -O2): build the test tree in Release and run
//   build/<dir>/tests/vmath_accuracy [float|double|all] [N] [STRIDE]
// N: random doubles per function (default 10^8); STRIDE: test every STRIDE-th float only
// (default 1, exhaustive).
// The kernels run over blocks of inputs in plain loops, as in the losses (this file is compiled
// with the build's flags, so the vectorised code is what is measured; test_vmath checks that a
// lane gives the scalar bits).
#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fgbg/core/vmath.hpp>

namespace vm = fgbg::detail::vm;
using LD = long double;

namespace {

constexpr int kChunk = 4096;

// One ulp of the float (double) nearest to ref: the spacing of the type at |ref|, the smallest
// subnormal in the subnormal range.
double ulp_float(double ref) {
  std::uint64_t b;
  const double a = std::fabs(ref);
  std::memcpy(&b, &a, 8);
  const int ex = static_cast<int>(b >> 52) - 1023;  // |ref| ∈ [2^ex, 2^(ex+1)); 0: −1023
  const std::uint64_t u = static_cast<std::uint64_t>(std::max(ex - 23, -149) + 1023) << 52;
  double r;
  std::memcpy(&r, &u, 8);
  return r;
}
LD ulp_double(LD ref) {
  if (ref == 0) return std::ldexp(1.0L, -1074);
  int ex = 0;
  std::frexp(std::fabs(ref), &ex);
  return std::ldexp(1.0L, std::max(ex - 53, -1074));
}

// The worst case of one quantity, split at the smallest normal of the result type.
struct Worst {
  const char* name;
  double normal = 0, subnormal = 0;  // max |err| in ulps where the reference is normal / not
  double normal_at = 0, subnormal_at = 0;
  double scaled = 0, scaled_at = 0;  // max |err| / (1 + amplification), where given
  long count = 0;
  void add(double err_ulp, bool sub, double at, double amp = 0) {
    ++count;
    if (!(err_ulp <= 1e300)) err_ulp = 1e300;  // NaN or inf: the worst possible
    if (sub) {
      if (err_ulp > subnormal) subnormal = err_ulp, subnormal_at = at;
    } else if (err_ulp > normal) {
      normal = err_ulp, normal_at = at;
    }
    const double s = err_ulp / (1 + amp);
    if (s > scaled) scaled = s, scaled_at = at;
  }
  void print(bool with_scaled = false) const {
    std::printf(
        "  %-28s %12ld inputs: max %.3f ulp (normal, at %.9g), %.3f ulp (subnormal, at %.9g)", name,
        count, normal, normal_at, subnormal, subnormal_at);
    if (with_scaled)
      std::printf(", max err/(1+gamma*softplus(-x)) %.3f ulp at %.9g", scaled, scaled_at);
    std::printf("\n");
    std::fflush(stdout);
  }
};

// e^y for the float references, without glibc's slow underflow path where e^y is 0 in double
// (far below the float range) anyway.
double ref_exp(double y) {
  return y < -800 ? 0.0 : std::exp(y);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Every `g_stride`-th float (1: exhaustive, the default; larger for a quick look).
std::uint64_t g_stride = 1;

// Runs `fn(inputs, n)` over every float with bits in [lo, hi] (inclusive), kChunk at a time.
template <typename Fn>
void for_float_bits(std::uint32_t lo, std::uint32_t hi, Fn&& fn) {
  std::vector<float> in(kChunk);
  std::uint64_t b = lo;
  while (b <= hi) {
    int n = 0;
    for (; n < kChunk && b <= hi; ++n, b += g_stride) {
      const auto bits = static_cast<std::uint32_t>(b);
      std::memcpy(&in[static_cast<size_t>(n)], &bits, 4);
    }
    fn(in.data(), n);
  }
}

const float kGammas[] = {0.5f, 1.5f, 2.5f, 3.0f};
constexpr int kNumGammas = 4;

void run_float() {
  if (g_stride == 1)
    std::printf("float, exhaustive (reference: double std::exp / std::log1p)\n");
  else
    std::printf("float, every %llu-th float (reference: double std::exp / std::log1p)\n",
                static_cast<unsigned long long>(g_stride));
  std::vector<float> out(kChunk), sig(kChunk), sign(kChunk), sp(kChunk);
  std::vector<float> pw(static_cast<size_t>(kChunk) * kNumGammas);
  auto t0 = std::chrono::steady_clock::now();
  {
    Worst w{"exp_nonpositive(x), x <= 0"};
    auto block = [&](const float* x, int n) {
      for (int i = 0; i < n; ++i) out[i] = vm::exp_nonpositive(x[i]);
      for (int i = 0; i < n; ++i) {
        const double ref = ref_exp(static_cast<double>(x[i]));
        w.add(std::fabs(out[i] - ref) / ulp_float(ref), ref < FLT_MIN, x[i]);
      }
    };
    for_float_bits(0u, 0u, block);                    // +0
    for_float_bits(0x80000000u, 0xFF800000u, block);  // −0 … −FLT_MAX, −inf
    w.print();
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  {
    Worst w{"log1p_unit(e), e in [0, 1]"};
    for_float_bits(0u, 0x3F800000u, [&](const float* e, int n) {
      for (int i = 0; i < n; ++i) out[i] = vm::log1p_unit(e[i]);
      for (int i = 0; i < n; ++i) {
        const double ref = std::log1p(static_cast<double>(e[i]));
        w.add(std::fabs(out[i] - ref) / ulp_float(ref), ref < FLT_MIN, e[i]);
      }
    });
    w.print();
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  {
    Worst ws{"sigma(x)"}, wn{"1 - sigma(x) = sigma(-x)"}, wsp{"softplus(x)"};
    Worst wp[kNumGammas] = {{"sigma(x)^0.5"}, {"sigma(x)^1.5"}, {"sigma(x)^2.5"}, {"sigma(x)^3"}};
    auto block = [&](const float* x, int n) {
      for (int i = 0; i < n; ++i) {
        const auto l = vm::logistic(x[i]);
        sig[i] = l.sig;
        sign[i] = l.sig_neg;
        sp[i] = vm::softplus(x[i], l);
        for (int g = 0; g < kNumGammas; ++g)
          pw[static_cast<size_t>(g * kChunk + i)] = vm::sigmoid_pow(x[i], l, kGammas[g]);
      }
      for (int i = 0; i < n; ++i) {
        const double xd = x[i], e = ref_exp(-std::fabs(xd)), l1 = std::log1p(e);
        const double s = xd >= 0 ? 1 / (1 + e) : e / (1 + e);
        const double sn = xd >= 0 ? e / (1 + e) : 1 / (1 + e);
        const double spx = std::max(xd, 0.0) + l1, spn = std::max(-xd, 0.0) + l1;
        ws.add(std::fabs(sig[i] - s) / ulp_float(s), s < FLT_MIN, x[i]);
        wn.add(std::fabs(sign[i] - sn) / ulp_float(sn), sn < FLT_MIN, x[i]);
        wsp.add(std::fabs(sp[i] - spx) / ulp_float(spx), spx < FLT_MIN, x[i]);
        for (int g = 0; g < kNumGammas; ++g) {
          const double ref = ref_exp(-static_cast<double>(kGammas[g]) * spn);
          const double got = pw[static_cast<size_t>(g * kChunk + i)];
          wp[g].add(std::fabs(got - ref) / ulp_float(ref), ref < FLT_MIN, x[i], kGammas[g] * spn);
        }
      }
    };
    for_float_bits(0u, 0x7F7FFFFFu, block);           // +0 … FLT_MAX
    for_float_bits(0x80000000u, 0xFF7FFFFFu, block);  // −0 … −FLT_MAX
    ws.print();
    wn.print();
    wsp.print();
    for (const auto& w : wp) w.print(true);
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
}

// N random doubles from `gen` plus `edges`, kChunk at a time.
template <typename Gen, typename Fn>
void for_doubles(long n, const std::vector<double>& edges, Gen&& gen, Fn&& fn) {
  std::vector<double> in(kChunk);
  fn(edges.data(), static_cast<int>(edges.size()));
  for (long done = 0; done < n;) {
    const int m = static_cast<int>(std::min<long>(kChunk, n - done));
    for (int i = 0; i < m; ++i) in[static_cast<size_t>(i)] = gen(done + i);
    fn(in.data(), m);
    done += m;
  }
}

void run_double(long n) {
  std::printf("double, %ld random inputs per function plus the edges (reference: long double)\n",
              n);
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<double> out(kChunk), sig(kChunk), sign(kChunk), sp(kChunk);
  std::vector<double> pw(static_cast<size_t>(kChunk) * kNumGammas);
  const double dmax = DBL_MAX, dmin = DBL_MIN, tiny = 4.9406564584124654e-324;
  auto t0 = std::chrono::steady_clock::now();
  {
    Worst w{"exp_nonpositive(x), x <= 0"};
    // Half uniform on [−746, 0], half −2^u with u uniform on [−60, 10].
    auto gen = [&](long i) {
      return i % 2 ? -746.0 * u01(rng) : -std::exp2(-60.0 + 70.0 * u01(rng));
    };
    const std::vector<double> edges = {
        0.0,    -0.0,    -tiny,   -dmin,   -1e-300,  -0.5,    -0.3465, -0.3466, -1.0,  -708.39,
        -708.4, -709.78, -744.44, -745.13, -745.134, -745.14, -746.0,  -1e300,  -dmax, -HUGE_VAL};
    for_doubles(n, edges, gen, [&](const double* x, int m) {
      for (int i = 0; i < m; ++i) out[i] = vm::exp_nonpositive(x[i]);
      for (int i = 0; i < m; ++i) {
        const LD ref = std::exp(static_cast<LD>(x[i]));
        w.add(static_cast<double>(std::fabs(out[i] - ref) / ulp_double(ref)), ref < dmin, x[i]);
      }
    });
    w.print();
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  {
    Worst w{"log1p_unit(e), e in [0, 1]"};
    auto gen = [&](long i) { return i % 2 ? u01(rng) : std::exp2(-1074.0 * u01(rng)); };
    const std::vector<double> edges = {
        0.0, tiny, dmin, 1e-300, 1e-17, 1.1102230246251565e-16, 1e-8, 0.5, 0.99999999999999989,
        1.0};
    for_doubles(n, edges, gen, [&](const double* e, int m) {
      for (int i = 0; i < m; ++i) out[i] = vm::log1p_unit(e[i]);
      for (int i = 0; i < m; ++i) {
        const LD ref = std::log1p(static_cast<LD>(e[i]));
        w.add(static_cast<double>(std::fabs(out[i] - ref) / ulp_double(ref)), ref < dmin, e[i]);
      }
    });
    w.print();
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
  t0 = std::chrono::steady_clock::now();
  {
    Worst ws{"sigma(x)"}, wn{"1 - sigma(x) = sigma(-x)"}, wsp{"softplus(x)"};
    Worst wp[kNumGammas] = {{"sigma(x)^0.5"}, {"sigma(x)^1.5"}, {"sigma(x)^2.5"}, {"sigma(x)^3"}};
    // Half uniform on [−800, 800], half ±2^u with u uniform on [−40, 11].
    auto gen = [&](long i) {
      const double sgn = u01(rng) < 0.5 ? -1.0 : 1.0;
      return i % 2 ? 1600.0 * (u01(rng) - 0.5) : sgn * std::exp2(-40.0 + 51.0 * u01(rng));
    };
    std::vector<double> edges = {0.0,  tiny,  dmin,  1e-300, 1e-16, 0.5,   1.0,   16.0,  18.0, 36.0,
                                 37.0, 100.0, 708.0, 709.8,  744.0, 745.2, 746.0, 1e300, dmax};
    for (size_t i = 0, k = edges.size(); i < k; ++i) edges.push_back(-edges[i]);
    for_doubles(n, edges, gen, [&](const double* x, int m) {
      for (int i = 0; i < m; ++i) {
        const auto l = vm::logistic(x[i]);
        sig[i] = l.sig;
        sign[i] = l.sig_neg;
        sp[i] = vm::softplus(x[i], l);
        for (int g = 0; g < kNumGammas; ++g)
          pw[static_cast<size_t>(g * kChunk + i)] =
              vm::sigmoid_pow(x[i], l, static_cast<double>(kGammas[g]));
      }
      for (int i = 0; i < m; ++i) {
        const LD xd = x[i], e = std::exp(-std::fabs(xd)), l1 = std::log1p(e);
        const LD s = xd >= 0 ? 1 / (1 + e) : e / (1 + e);
        const LD sn = xd >= 0 ? e / (1 + e) : 1 / (1 + e);
        const LD spx = std::max(xd, LD(0)) + l1, spn = std::max(-xd, LD(0)) + l1;
        ws.add(static_cast<double>(std::fabs(sig[i] - s) / ulp_double(s)), s < dmin, x[i]);
        wn.add(static_cast<double>(std::fabs(sign[i] - sn) / ulp_double(sn)), sn < dmin, x[i]);
        wsp.add(static_cast<double>(std::fabs(sp[i] - spx) / ulp_double(spx)), spx < dmin, x[i]);
        for (int g = 0; g < kNumGammas; ++g) {
          const LD ref = std::exp(-static_cast<LD>(kGammas[g]) * spn);
          const LD got = pw[static_cast<size_t>(g * kChunk + i)];
          wp[g].add(static_cast<double>(std::fabs(got - ref) / ulp_double(ref)), ref < dmin, x[i],
                    static_cast<double>(kGammas[g] * spn));
        }
      }
    });
    ws.print();
    wn.print();
    wsp.print();
    for (const auto& w : wp) w.print(true);
    std::printf("    (%.0f s)\n", seconds_since(t0));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "all";
  const long n = argc > 2 ? std::atol(argv[2]) : 100000000L;
  if (argc > 3) g_stride = std::max(1L, std::atol(argv[3]));
  if (what != "float" && what != "double" && what != "all") {
    std::fprintf(stderr,
                 "usage: vmath_accuracy [float|double|all] [N random doubles] [float stride]\n");
    return 2;
  }
  if (what != "double") run_float();
  if (what != "float") run_double(n);
  return 0;
}
