/// @file numerics.hpp
/// @brief Stable numerics in the logit domain, scalar and vectorised (Eigen array) forms.
///
/// Every form goes through e = exp(-|x|) ∈ (0, 1], so nothing overflows and no log of a rounded
/// probability is taken:
///   softplus(x)    = log(1 + e^x)  = max(x, 0) + log1p(e)
///   log σ(x)       = -softplus(-x)
///   log(1 - σ(x))  = -softplus(x)
///   σ(x)           = 1/(1+e) for x ≥ 0, e/(1+e) otherwise
/// Finite for every finite x, float and double.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "config.hpp"

namespace fgbg {

/// softplus(x) = log(1 + exp(x)), stable for every finite x.
template <typename Scalar>
Scalar softplus(Scalar x) {
  return std::max(x, Scalar(0)) + std::log1p(std::exp(-std::abs(x)));
}

/// log σ(x) = -softplus(-x).
template <typename Scalar>
Scalar log_sigmoid(Scalar x) {
  return -softplus(-x);
}

/// The logistic function σ(x) = 1 / (1 + exp(-x)), stable for every finite x.
template <typename Scalar>
Scalar sigmoid(Scalar x) {
  const Scalar e = std::exp(-std::abs(x));
  const Scalar inv = Scalar(1) / (Scalar(1) + e);
  return x >= Scalar(0) ? inv : e * inv;
}

namespace detail {

/// The type a scalar per-positive formula with a cancellation (σ(x) − t for a soft target t) is
/// evaluated in: double for float, long double for double (as wide as double where the platform
/// has no wider type). Used once per positive anchor, never per element.
template <typename Scalar>
using Wide = std::conditional_t<std::is_same<Scalar, float>::value, double, long double>;

/// σ(x) − t for a target t ∈ [0, 1] without the cancellation of the plain difference when
/// σ(x) ≈ t: with u = logit(t), σ(x) − σ(u) = σ(x)·(1 − t)·(−expm1(u − x)), whose relative error
/// is that of u − x (t = 0 and t = 1 are exact: σ(x) and −σ(−x)). Scalar, once per positive.
template <typename W>
W sigmoid_minus(W x, W t) {
  if (t == W(0)) return sigmoid(x);
  if (t == W(1)) return -sigmoid(-x);
  const W u = std::log(t) - std::log1p(-t);
  // Far from t (|u − x| ≥ 1) the plain difference does not cancel (and expm1 may overflow).
  if (!(std::abs(u - x) < W(1))) return sigmoid(x) - t;
  return -sigmoid(x) * (W(1) - t) * std::expm1(u - x);
}

/// σ(x) from x and e = exp(−|x|): 1/(1+e) for x ≥ 0, e/(1+e) otherwise. A functor with a packet
/// path, because Eigen 3.4's `select` is evaluated one coefficient at a time (it made every
/// transcendental inside it scalar).
template <typename Scalar>
struct SigmoidFromOp {
  EIGEN_STRONG_INLINE Scalar operator()(const Scalar& x, const Scalar& e) const {
    const Scalar r = Scalar(1) / (Scalar(1) + e);
    return x >= Scalar(0) ? r : e * r;
  }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& x, const Packet& e) const {
    namespace ei = Eigen::internal;
    const Packet one = ei::pset1<Packet>(Scalar(1));
    const Packet r = ei::pdiv(one, ei::padd(one, e));
    return ei::pselect(ei::pcmp_le(ei::pzero(x), x), r, ei::pmul(e, r));
  }
};

}  // namespace detail
}  // namespace fgbg

namespace Eigen {
namespace internal {
template <typename Scalar>
struct functor_traits<fgbg::detail::SigmoidFromOp<Scalar>> {
  enum { Cost = 4 * NumTraits<Scalar>::MulCost, PacketAccess = packet_traits<Scalar>::HasDiv };
};
}  // namespace internal
}  // namespace Eigen

namespace fgbg {

/// Vectorised forms over any Eigen array expression (evaluated lazily; materialise shared parts).
namespace detail {

/// Streaming softmax sums over keys k_i with inverse temperature β, relative to the running
/// maximum M of the keys: s0 = Σ exp(β(k_i − M)) and s1 = Σ exp(β(k_i − M))·v_i, both rescaled
/// by e^{β(M_old − M)} whenever M grows, so no term overflows whatever β and the keys. With
/// `kOffsets` the v_i are the offsets k_i − M themselves (they move with M; s1/s0 is then the
/// mean key's offset: DR loss); without, a value given with each key (CARL's Σ u·ℓ). The result
/// depends only on the order of the calls.
template <bool kOffsets>
struct StreamingExpSums {
  double max = -std::numeric_limits<double>::infinity();
  double s0 = 0.0, s1 = 0.0;
  bool any = false;

  /// Moves the reference point up to m (no-op if m ≤ max), rescaling the sums by
  /// f = e^{β(M − m)}; with offsets every k − M also becomes (k − M) + (M − m).
  void raise_to(double m, double beta) {
    if (!(m > max)) return;
    if (any) {
      const double f = std::exp(beta * (max - m));
      if constexpr (kOffsets)
        s1 = f * s1 + f * (max - m) * s0;  // DR's keys are probabilities: M − m is in [−2, 0]
      else
        s1 *= f;
      s0 *= f;
    }
    max = m;
  }
  /// Adds one entry with key k and value v (ignored with offsets).
  void add(double k, double v, double beta) {
    raise_to(k, beta);
    const double w = std::exp(beta * (k - max));
    s0 += w;
    if constexpr (kOffsets)
      s1 += w * (k - max);
    else
      s1 += w * v;
    any = true;
  }
  /// Adds another partial sum (in order: the result depends only on the order of the calls).
  void merge(const StreamingExpSums& o, double beta) {
    if (!o.any) return;
    raise_to(o.max, beta);
    const double f = std::exp(beta * (o.max - max));
    s0 += o.s0 * f;
    if constexpr (kOffsets)
      s1 += o.s1 * f + f * (o.max - max) * o.s0;
    else
      s1 += o.s1 * f;
    any = true;
  }
  /// s1 / s0: with offsets, the mean key's offset (≤ 0), the mean key being max + offset().
  double offset() const { return s1 / s0; }
};

}  // namespace detail

namespace array {

/// exp(-|x|), the one transcendental every other form starts from, as exp(−|x|/2)²: Eigen's
/// vectorised exp clamps its argument at −88.72 (float) / −709.44 (double) and returns about
/// FLT_MIN/4 (DBL_MIN/2) below it instead of the correctly rounded subnormal or 0, an absolute
/// error that a large Ω/A turned into a wrong gradient (σ(−200) ≈ 3e-39 in float). Squaring the
/// half-argument exp is exact to ~2.5 ulp in the normal range, correctly rounded down to the
/// smallest subnormal, and 0 beyond (the clamp then yields ≈ 3e-39² = 0); it costs two
/// multiplications per element.
template <typename Derived>
auto exp_neg_abs(const Eigen::ArrayBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  return (x.abs() * Scalar(-0.5)).exp().square();
}

/// exp(y) for y ≤ 0 element-wise, with the same half-argument squaring as exp_neg_abs.
template <typename Derived>
auto exp_nonpositive(const Eigen::ArrayBase<Derived>& y) {
  using Scalar = typename Derived::Scalar;
  return (y * Scalar(0.5)).exp().square();
}

/// softplus(x) given x and e = exp(-|x|).
template <typename DX, typename DE>
auto softplus_from(const Eigen::ArrayBase<DX>& x, const Eigen::ArrayBase<DE>& e) {
  using Scalar = typename DX::Scalar;
  return x.max(Scalar(0)) + e.log1p();
}

/// σ(x) given x and e = exp(-|x|).
template <typename DX, typename DE>
auto sigmoid_from(const Eigen::ArrayBase<DX>& x, const Eigen::ArrayBase<DE>& e) {
  return x.derived().binaryExpr(e.derived(), detail::SigmoidFromOp<typename DX::Scalar>());
}

/// softplus(x) element-wise.
template <typename Derived>
auto softplus(const Eigen::ArrayBase<Derived>& x) {
  return softplus_from(x, exp_neg_abs(x));
}

/// log σ(x) element-wise.
template <typename Derived>
auto log_sigmoid(const Eigen::ArrayBase<Derived>& x) {
  return -softplus(-x);
}

/// σ(x) element-wise.
template <typename Derived>
auto sigmoid(const Eigen::ArrayBase<Derived>& x) {
  return sigmoid_from(x, exp_neg_abs(x));
}

}  // namespace array

/// p^γ with the fast paths of the exponents detectors use (γ = 2 above all, 1 and 0), exact
/// products, and `general()` for every other γ (exp(γ·log p) from a log the caller holds, or
/// std::pow). The one scalar power of fgbg: every p^γ, (1 − p_t)^γ, base^k goes through it.
template <typename T, typename General>
T pow_fast(T p, T gamma, General&& general) {
  if (gamma == T(2)) return p * p;
  if (gamma == T(1)) return p;
  if (gamma == T(0)) return T(1);
  return general();
}

/// p^γ = pow_fast with exp(γ·log p) in general; `log_p` is log p (formed directly by the caller,
/// e.g. −softplus(−x) for σ(x), so that p may underflow while p^γ does not). Finite for γ ≥ 0.
template <typename T>
T pow_gamma(T p, T log_p, T gamma) {
  return pow_fast(p, gamma, [&] { return std::exp(gamma * log_p); });
}

}  // namespace fgbg
