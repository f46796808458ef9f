// Test support: the body of the brute-force O(P·N) references of AP loss, aLRP loss and Rank &
// Sort loss (ranking_oracle.hpp), written once over a real type `Real`. Included by
// ranking_oracle.hpp (double, namespace fgbg_oracle) and ranking_oracle_ld.hpp (long double,
// namespace fgbg_oracle_ld), each of which defines FGBG_ORACLE_NAMESPACE and FGBG_ORACLE_REAL
// first. No include guard: it is meant to be included once per instantiation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include <Eigen/Core>
#include <fgbg/core/config.hpp>

namespace FGBG_ORACLE_NAMESPACE {

using Real = FGBG_ORACLE_REAL;

using fgbg::Index;

/// The flattened problem: positive and negative entries of an N × C sigmoid layout.
struct Flat {
  std::vector<Real> ps, ns;    // scores
  std::vector<Index> pi, ni;   // flat indices
  std::vector<Real> paux;      // ℓ or IoU per positive
  std::vector<Index> panchor;  // anchor of each positive
};

inline Real H(Real x, Real delta) {
  return std::min<Real>(1, std::max<Real>(0, x / (2 * delta) + Real(0.5)));
}

/// `rs` = true: a positive anchor whose aux is exactly 0 becomes a negative (Rank & Sort).
template <typename XD, typename LD, typename AD>
Flat flatten(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels,
             const Eigen::DenseBase<AD>* aux, bool rs) {
  Flat f;
  const Index n = x.rows(), C = x.cols();
  for (Index a = 0; a < n; ++a) {
    const int lab = static_cast<int>(labels.derived().coeff(a));
    if (lab < 0) continue;
    const Real av = aux ? static_cast<Real>(aux->derived().coeff(a)) : 0.0;
    const bool pos_anchor = lab > 0 && (!rs || av > 0);
    for (Index c = 0; c < C; ++c) {
      const Real s = static_cast<Real>(x.derived().coeff(a, c));
      if (pos_anchor && c == lab - 1) {
        f.ps.push_back(s);
        f.pi.push_back(a * C + c);
        f.paux.push_back(av);
        f.panchor.push_back(a);
      } else {
        f.ns.push_back(s);
        f.ni.push_back(a * C + c);
      }
    }
  }
  return f;
}

struct Result {
  Real loss = 0, loss2 = 0;    // AP: value; aLRP: cls, loc; RS: rank, sort
  std::vector<Real> grad;      // flat N·C
  std::vector<Real> rank;      // aLRP: per anchor
  std::vector<Real> grad_aux;  // aLRP: ∂loc/∂ℓ per anchor
  std::vector<Real>
      pos_loss;  // each positive's own loss (of f.panchor[i]), mean = loss (RS: +loss2)
};

/// AP loss (interpolated or not), as cccorn/AP-loss computes it.
inline Result ap_loss(const Flat& f, Index size, Real delta, bool interpolate) {
  Result r;
  r.grad.assign(size, 0.0);
  const std::size_t P = f.ps.size(), N = f.ns.size();
  r.pos_loss.assign(P, 0.0);
  if (P == 0) return r;
  std::vector<std::size_t> order(P);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return f.ps[a] < f.ps[b]; });
  Real max_prec = 0, sum_hat = 0;
  for (std::size_t i : order) {
    Real A = 0.5, B = 0;
    for (std::size_t k = 0; k < P; ++k) A += H(f.ps[k] - f.ps[i], delta);
    for (std::size_t j = 0; j < N; ++j) B += H(f.ns[j] - f.ps[i], delta);
    const Real prec = A / (A + B);
    Real w = 1, hat = prec;
    if (interpolate) {
      if (max_prec <= prec) {
        max_prec = prec;
      } else {
        w = (1 - max_prec) / (1 - prec);
      }
      hat = max_prec;
    }
    sum_hat += hat;
    r.pos_loss[i] = 1 - hat;
    r.grad[f.pi[i]] = -(1 - hat) / P;
    for (std::size_t j = 0; j < N; ++j)
      r.grad[f.ni[j]] += w * H(f.ns[j] - f.ps[i], delta) / (A + B) / P;
  }
  r.loss = 1 - sum_hat / P;
  return r;
}

/// aLRP loss: classification (§3.2) and localisation (§3.3), ties of the loc order by flat index.
inline Result alrp_loss(const Flat& f, Index size, Index anchors, Real delta, Real eps) {
  Result r;
  r.grad.assign(size, 0.0);
  r.rank.assign(anchors, 0.0);
  r.grad_aux.assign(anchors, 0.0);
  const std::size_t P = f.ps.size(), N = f.ns.size();
  r.pos_loss.assign(P, 0.0);
  if (P == 0) return r;
  std::vector<Real> R(P);
  Real sum_ratio = 0;
  for (std::size_t i = 0; i < P; ++i) {
    Real rp = 1, F = 0, S = 0;
    for (std::size_t k = 0; k < P; ++k) {
      if (k == i) continue;
      const Real h = H(f.ps[k] - f.ps[i], delta);
      rp += h;
      S += h * f.paux[k];
    }
    for (std::size_t j = 0; j < N; ++j) F += H(f.ns[j] - f.ps[i], delta);
    R[i] = rp + F;
    sum_ratio += rp / R[i];
    r.pos_loss[i] = F / R[i];
    if (F > eps) {
      const Real E = (S + F) / R[i];
      r.grad[f.pi[i]] = -E / P;
      for (std::size_t j = 0; j < N; ++j)
        r.grad[f.ni[j]] += E * H(f.ns[j] - f.ps[i], delta) / F / P;
    }
    r.rank[f.panchor[i]] = R[i];
  }
  r.loss = 1 - sum_ratio / P;
  // localisation: descending score, ties by increasing flat index
  std::vector<std::size_t> order(P);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return f.ps[a] > f.ps[b] || (f.ps[a] == f.ps[b] && f.pi[a] < f.pi[b]);
  });
  Real cum = 0, loc = 0;
  for (std::size_t t = 0; t < P; ++t) {
    cum += f.paux[order[t]];
    loc += cum / R[order[t]];
  }
  r.loss2 = loc / P;
  for (std::size_t t = 0; t < P; ++t) {
    Real s = 0;
    for (std::size_t q = t; q < P; ++q) s += 1 / R[order[q]];
    r.grad_aux[f.panchor[order[t]]] = s / P;
  }
  return r;
}

/// Rank & Sort loss, §4.2 (δ > 0).
inline Result rs_loss(const Flat& f, Index size, Real delta, Real eps) {
  Result r;
  r.grad.assign(size, 0.0);
  const std::size_t P = f.ps.size(), N = f.ns.size();
  r.pos_loss.assign(P, 0.0);
  if (P == 0) return r;
  std::vector<Real> fg_grad(P, 0.0), bg_grad(N, 0.0);
  Real sum_rank = 0, sum_sort = 0;
  for (std::size_t i = 0; i < P; ++i) {
    std::vector<Real> fr(P), br(N);
    Real rank_pos = 0, fp = 0;
    for (std::size_t k = 0; k < P; ++k) rank_pos += (fr[k] = H(f.ps[k] - f.ps[i], delta));
    for (std::size_t j = 0; j < N; ++j) fp += (br[j] = H(f.ns[j] - f.ps[i], delta));
    const Real rank = rank_pos + fp;
    const Real rerr = fp / rank;
    Real cur = 0, tgt_rank = 0, tgt = 0, denom = 0;
    for (std::size_t k = 0; k < P; ++k) {
      cur += fr[k] * (1 - f.paux[k]);
      if (f.paux[k] >= f.paux[i]) {
        tgt_rank += fr[k];
        tgt += fr[k] * (1 - f.paux[k]);
      } else {
        denom += fr[k];
      }
    }
    const Real serr = cur / rank_pos - tgt / tgt_rank;
    sum_rank += rerr;
    sum_sort += serr;
    r.pos_loss[i] = rerr + serr;
    if (fp > eps) {
      fg_grad[i] -= rerr;
      for (std::size_t j = 0; j < N; ++j) bg_grad[j] += br[j] * (rerr / fp);
    }
    if (denom > eps) {
      fg_grad[i] -= serr;
      for (std::size_t k = 0; k < P; ++k)
        if (f.paux[k] < f.paux[i]) fg_grad[k] += fr[k] * (serr / denom);
    }
  }
  for (std::size_t i = 0; i < P; ++i) r.grad[f.pi[i]] = fg_grad[i] / P;
  for (std::size_t j = 0; j < N; ++j) r.grad[f.ni[j]] = bg_grad[j] / P;
  r.loss = sum_rank / P;
  r.loss2 = sum_sort / P;
  return r;
}

}  // namespace FGBG_ORACLE_NAMESPACE
