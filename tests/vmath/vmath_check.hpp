// Sampled error checks of core/vmath.hpp against std:: references, shared by test_vmath.cpp and
// tests/simd/vmath_paths.cpp (compiled for each instruction set). The bounds are the maxima the
// exhaustive / 10^8-sample tool (tests/vmath/vmath_accuracy.cpp) measured, rounded up; a sample
// can only find less. Each check runs the kernels over blocks of inputs in a plain loop, so the
// vectorised code of the build is what is checked.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fgbg/fgbg.hpp>  // (not core/vmath.hpp alone: GCC 12 re-reads it after the tests' PCH)

namespace vmath_check {

namespace vm = fgbg::detail::vm;

/// Bounds in ulps (normal results; subnormal results: ulps of the smallest subnormal).
struct Bounds {
  double exp, exp_sub, log1p, sig, softplus, softplus_sub;
  double pow_scaled;  ///< σ^γ: |err| ≤ pow_scaled · (1 + γ·softplus(−x)) ulp
};
// Measured maxima (docs/performance.md; the larger of g++ -O2 and g++ -O2 -march=native):
// float exp 1.061 / 0.750, log1p 1.978, σ 2.825, softplus 2.797 / 0.750, σ^γ 3.005;
// double exp 0.977 / 0.763, log1p 1.959, σ 2.800, softplus 2.735 / 0.763, σ^γ 2.948 over 10^8
// random inputs (a sample is not exhaustive: the double bounds keep a small margin).
inline constexpr Bounds kFloat = {1.07, 0.76, 1.98, 2.83, 2.8, 0.76, 3.01};
inline constexpr Bounds kDouble = {1.0, 0.8, 2.0, 2.85, 2.8, 0.8, 3.0};

inline double ulp_of(double ref, bool is_float) {
  const int mant = is_float ? 24 : 53, lowest = is_float ? -149 : -1074;
  if (ref == 0) return std::ldexp(1.0, lowest);
  int ex = 0;
  std::frexp(std::fabs(ref), &ex);
  return std::ldexp(1.0, std::max(ex - mant, lowest));
}
inline long double ulp_of(long double ref) {
  if (ref == 0) return std::ldexp(1.0L, -1074);
  int ex = 0;
  std::frexp(std::fabs(ref), &ex);
  return std::ldexp(1.0L, std::max(ex - 53, -1074));
}

/// Collects the failures of one run.
struct Report {
  std::vector<std::string> failures;
  long checked = 0;
  void check(bool ok, const char* what, double at, double err) {
    ++checked;
    if (ok || failures.size() >= 20) return;
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s at %.17g: error %.3f ulp", what, at, err);
    failures.emplace_back(buf);
  }
};

/// Every `stride`-th float through exp_neg_abs, log1p_unit and the logistic parts (σ, 1 − σ,
/// softplus, σ^γ for γ ∈ {0.5, 2.5}).
inline void check_float(Report& rep, std::uint32_t stride, const Bounds& b = kFloat) {
  constexpr int kN = 4096;
  std::vector<float> in(kN), ins(kN), o1(kN), o2(kN), o3(kN), o4(kN), o5(kN), o6(kN), o7(kN);
  auto ref_exp = [](double y) { return y < -800 ? 0.0 : std::exp(y); };
  auto err = [](double got, double ref) { return std::fabs(got - ref) / ulp_of(ref, true); };
  std::uint64_t bits = 0;
  while (bits <= 0xFFFFFFFFu) {
    int n = 0;
    for (; n < kN && bits <= 0xFFFFFFFFu; ++n, bits += stride) {
      const auto u = static_cast<std::uint32_t>(bits);
      std::memcpy(&in[static_cast<size_t>(n)], &u, 4);
      if (!std::isfinite(in[static_cast<size_t>(n)])) in[static_cast<size_t>(n)] = 0.5f;
    }
    for (int i = 0; i < n; ++i) {
      o1[i] = vm::exp_neg_abs(in[i]);
      const float a = std::fabs(in[i]);
      ins[i] = a <= 1 ? a : 1 / a;
      o2[i] = vm::log1p_unit(ins[i]);
      const vm::Logistic<float> l = vm::logistic(in[i]);
      o3[i] = l.sig;
      o4[i] = l.sig_neg;
      o5[i] = vm::softplus(in[i], l);
      o6[i] = vm::sigmoid_pow(in[i], l, 0.5f);
      o7[i] = vm::sigmoid_pow(in[i], l, 2.5f);
    }
    for (int i = 0; i < n; ++i) {
      const double x = in[i], ax = std::fabs(x), e = ref_exp(-ax), l1 = std::log1p(e);
      const double r1 = e;
      rep.check(err(o1[i], r1) <= (r1 < FLT_MIN ? b.exp_sub : b.exp), "float exp_neg_abs", x,
                err(o1[i], r1));
      const double ein = ins[i];
      const double r2 = std::log1p(ein);
      rep.check(err(o2[i], r2) <= (r2 < FLT_MIN ? 0.0 : b.log1p), "float log1p_unit", ein,
                err(o2[i], r2));
      const double s = x >= 0 ? 1 / (1 + e) : e / (1 + e), sn = x >= 0 ? e / (1 + e) : 1 / (1 + e);
      rep.check(err(o3[i], s) <= (s < FLT_MIN ? b.exp_sub : b.sig), "float sigma", x,
                err(o3[i], s));
      rep.check(err(o4[i], sn) <= (sn < FLT_MIN ? b.exp_sub : b.sig), "float 1 - sigma", x,
                err(o4[i], sn));
      const double sp = std::max(x, 0.0) + l1, spn = std::max(-x, 0.0) + l1;
      rep.check(err(o5[i], sp) <= (sp < FLT_MIN ? b.softplus_sub : b.softplus), "float softplus", x,
                err(o5[i], sp));
      for (const double g : {0.5, 2.5}) {
        const double ref = ref_exp(-g * spn), got = g == 0.5 ? o6[i] : o7[i];
        rep.check(err(got, ref) <= b.pow_scaled * (1 + g * spn), "float sigma^gamma", x,
                  err(got, ref));
      }
    }
  }
}

/// n random doubles (uniform and log-uniform) plus the edges, against long double.
inline void check_double(Report& rep, long n, const Bounds& b = kDouble) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<double> xs = {0.0,     -0.0,   4.9406564584124654e-324,
                            DBL_MIN, 1e-300, 0.5,
                            1.0,     18.0,   37.0,
                            708.0,   709.8,  745.1,
                            746.0,   1e300,  DBL_MAX};
  for (size_t i = 0, k = xs.size(); i < k; ++i) xs.push_back(-xs[i]);
  for (long i = 0; i < n; ++i) {
    const double sgn = u01(rng) < 0.5 ? -1.0 : 1.0;
    xs.push_back(i % 2 ? 1600.0 * (u01(rng) - 0.5) : sgn * std::exp2(-40.0 + 51.0 * u01(rng)));
  }
  const size_t m = xs.size();
  std::vector<double> ins(m), o1(m), o2(m), o3(m), o4(m), o5(m), o6(m);
  for (size_t i = 0; i < m; ++i) {
    o1[i] = vm::exp_neg_abs(xs[i]);
    const double a = std::fabs(xs[i]);
    ins[i] = a <= 1 ? a : 1 / a;
    o2[i] = vm::log1p_unit(ins[i]);
    const vm::Logistic<double> l = vm::logistic(xs[i]);
    o3[i] = l.sig;
    o4[i] = l.sig_neg;
    o5[i] = vm::softplus(xs[i], l);
    o6[i] = vm::sigmoid_pow(xs[i], l, 2.5);
  }
  using LD = long double;
  auto err = [](double got, LD ref) {
    return static_cast<double>(std::fabs(got - ref) / ulp_of(ref));
  };
  for (size_t i = 0; i < m; ++i) {
    const LD x = xs[i], ax = std::fabs(x), e = std::exp(-ax), l1 = std::log1p(e);
    rep.check(err(o1[i], e) <= (e < DBL_MIN ? b.exp_sub : b.exp), "double exp_neg_abs", xs[i],
              err(o1[i], e));
    const LD ein = ins[i], r2 = std::log1p(ein);
    rep.check(err(o2[i], r2) <= (r2 < DBL_MIN ? 0.5 : b.log1p), "double log1p_unit",
              static_cast<double>(ein), err(o2[i], r2));
    const LD s = x >= 0 ? 1 / (1 + e) : e / (1 + e), sn = x >= 0 ? e / (1 + e) : 1 / (1 + e);
    rep.check(err(o3[i], s) <= (s < DBL_MIN ? b.exp_sub : b.sig), "double sigma", xs[i],
              err(o3[i], s));
    rep.check(err(o4[i], sn) <= (sn < DBL_MIN ? b.exp_sub : b.sig), "double 1 - sigma", xs[i],
              err(o4[i], sn));
    const LD sp = std::max(x, LD(0)) + l1, spn = std::max(-x, LD(0)) + l1;
    rep.check(err(o5[i], sp) <= (sp < DBL_MIN ? b.softplus_sub : b.softplus), "double softplus",
              xs[i], err(o5[i], sp));
    const LD p = std::exp(-2.5L * spn);
    rep.check(err(o6[i], p) <= b.pow_scaled * static_cast<double>(1 + 2.5L * spn),
              "double sigma^2.5", xs[i], err(o6[i], p));
  }
}

}  // namespace vmath_check
