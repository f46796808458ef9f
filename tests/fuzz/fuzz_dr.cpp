// Fuzz target: DR loss (pooled and per group), float and double, checked against a long-double
// reimplementation of the file comment's formulas; resizable gradients of another shape and
// gradients aliasing the logits included (fuzz_common.hpp).
#include <fgbg/ranking/dr_loss.hpp>
#include <optional>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "dr";

template <typename S>
LD dr_group(const fgbg::DRLossConfig<S>& cf, const RowA<S>& x, const Labels& l, Index b, Index e,
            RowA<LD>& g) {
  // The softmaxes over keys k (p for negatives, −p for positives) relative to their maxima M:
  // t = (k − M)/λ, q = e^t / Σ e^t, and the gradient factor 1 ± (p − D)/λ = 1 + t − Σ q·t,
  // formed from offsets (p − D divided by a tiny λ would amplify the rounding of D).
  const LD lp = cf.pos_lambda, ln = cf.neg_lambda, L = cf.L, tau = cf.tau, gm = cf.margin;
  auto key = [&](Index i, Index j) { return l[i] == j + 1 ? -sig(x(i, j)) : sig(x(i, j)); };
  LD mn = -INFINITY, mp = -INFINITY;
  for (Index i = b; i < e; ++i)
    for (Index j = 0; j < x.cols(); ++j) {
      if (l[i] == -1) continue;
      LD& m = l[i] == j + 1 ? mp : mn;
      m = std::max(m, key(i, j));
    }
  auto t_of = [&](Index i, Index j) {
    return l[i] == j + 1 ? (key(i, j) - mp) / lp : (key(i, j) - mn) / ln;
  };
  LD s0n = 0, stn = 0, s0p = 0, stp = 0;
  for (Index i = b; i < e; ++i)
    for (Index j = 0; j < x.cols(); ++j) {
      if (l[i] == -1) continue;
      const LD t = t_of(i, j), w = std::exp(t);
      (l[i] == j + 1 ? s0p : s0n) += w;
      (l[i] == j + 1 ? stp : stn) += w * t;
    }
  const LD mtn = s0n > 0 ? stn / s0n : 0, mtp = s0p > 0 ? stp / s0p : 0;  // Σ q·t
  const LD dn = s0n > 0 ? mn + ln * mtn : 0, dp = s0p > 0 ? -(mp + lp * mtp) : 1;
  const LD u = dn - dp + gm;
  const LD A = tau * sig(L * u);
  for (Index i = b; i < e; ++i)
    for (Index j = 0; j < x.cols(); ++j) {
      if (l[i] == -1) continue;
      const LD p = sig(x(i, j)), dsig = p * (1 - p), t = t_of(i, j);
      if (l[i] == j + 1)
        g(i, j) = -A * (std::exp(t) / s0p) * (1 + t - mtp) * dsig;
      else
        g(i, j) = A * (std::exp(t) / s0n) * (1 + t - mtn) * dsig;
    }
  return (tau / L) * sp(L * u);
}

template <typename S>
void run(In& in) {
  fgbg::DRLossConfig<S> cf;
  cf.pos_lambda = in.any<S>(), cf.neg_lambda = in.any<S>(), cf.L = in.any<S>();
  cf.tau = in.any<S>(), cf.margin = in.any<S>();
  const Index n = in.small(6), c = in.small(3);
  const RowA<S> x = decode_matrix<S>(in, n, c);
  const Labels l = decode_labels(in, n, c);
  const int gk = in.u8() % 2;  // 0 pooled, 1 groups (weights do not compile for DR)
  Labels groups(n);
  std::int32_t gid = 0;
  for (Index i = 0; i < n; ++i)
    groups[i] = gid += static_cast<std::int32_t>(in.u8() % 3) - (in.u8() == 0);
  context().clear();
  note("double", sizeof(S) == 8), note("pos_lambda", cf.pos_lambda),
      note("neg_lambda", cf.neg_lambda);
  note("L", cf.L), note("tau", cf.tau), note("margin", cf.margin), note("groups_kind", gk);
  note_array("x", x), note_array("labels", l), note_array("groups", groups);
  std::optional<fgbg::DRLoss<S>> loss;
  if (!completes(kFam, [&] { loss.emplace(cf); })) return;
  dense_protocol<S>(
      kFam, in, x, NoState{},
      [&](const auto& xv, auto& g, NoState&) {
        if (gk == 1) return loss->value_and_grad(xv, l, g, fgbg::groups(groups));
        return loss->value_and_grad(xv, l, g);
      },
      [&](const auto& xv, const NoState&) {
        if (gk == 1) return loss->value(xv, l, fgbg::groups(groups));
        return loss->value(xv, l);
      },
      [&](const std::vector<double>& r, const RowA<S>& g) {
        FZ_CHECK(all_finite(x), kFam, "non-finite logit accepted");
        for (Index i = 0; i < n; ++i)
          FZ_CHECK(l[i] >= -1 && l[i] <= c, kFam, "label out of range accepted");
        RowA<LD> ge = RowA<LD>::Zero(n, c);
        LD total = 0;
        if (gk == 1) {
          for (Index b = 0; b < n;) {
            Index e = b + 1;
            while (e < n && groups[e] == groups[b]) ++e;
            if (b > 0) FZ_CHECK(groups[b] > groups[b - 1], kFam, "decreasing groups accepted");
            total += dr_group<S>(cf, x, l, b, e, ge);
            b = e;
          }
        } else {
          total = dr_group<S>(cf, x, l, 0, n, ge);
        }
        check_finite_where_exact<S>(kFam, total, static_cast<S>(r[0]), ge, g);
      });
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
