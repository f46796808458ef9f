// Fuzz target: the ranking losses AP, aLRP and RS (error-driven updates, all arithmetic in
// double), float and double. Checks: values in their ranges ([0, 1]; aLRP loc in [0, max ℓ]),
// finite updates, the promise on throws, layouts and aliasing (fuzz_common.hpp), and permutation
// stability: the anchors in another order give the same values (1e-14 relative in double, 2 ulp in
// float) and the same updates permuted, whenever all scores are distinct.
#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>
#include <numeric>
#include <optional>

#include "fuzz_common.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "ranking";

template <typename S>
bool close(double a, double b) {
  const double tol = sizeof(S) == 4 ? 2.5e-7 : 1e-14;
  return a == b || std::fabs(a - b) <= tol * std::max(std::fabs(a), std::fabs(b)) + 1e-300;
}

template <typename S>
void run(In& in) {
  const int method = in.u8() % 3;
  const Index n = in.small(6), c = in.small(3);
  const double delta = in.any<double>(), eps = in.any<double>();
  const bool interp = in.flag();
  RowA<S> x = decode_matrix<S>(in, n, c);
  const Labels l = decode_labels(in, n, c);
  Eigen::Array<S, Eigen::Dynamic, 1> aux(n);  // IoU (RS) or localisation error (aLRP)
  for (Index i = 0; i < n; ++i)
    aux[i] = in.flag() ? S(in.u8()) / S(255)
                       : (method == 1 ? std::fabs(in.mostly_moderate<S>()) : in.any<S>());
  context().clear();
  note("method", method), note("double", sizeof(S) == 8), note("delta", delta), note("eps", eps);
  note("interpolate", interp), note_array("x", x), note_array("labels", l), note_array("aux", aux);

  // f(xv, lv, av, g) → vector of results (values, then aLRP's loc gradient), may throw.
  auto call = [&](const auto& loss, const auto& xv, const auto& lv, const auto& av,
                  auto& g) -> std::vector<double> {
    using L = std::decay_t<decltype(loss)>;
    if constexpr (std::is_same<L, fgbg::APLoss<S>>::value) {
      (void)av;
      return {static_cast<double>(loss.value_and_grad(xv, lv, g))};
    } else if constexpr (std::is_same<L, fgbg::RankSortLoss<S>>::value) {
      const auto v = loss.value_and_grad(xv, lv, av, g);
      return {double(v.rank), double(v.sort)};
    } else {
      Eigen::Array<S, Eigen::Dynamic, 1> gl =
          Eigen::Array<S, Eigen::Dynamic, 1>::Constant(lv.size(), S(-3.5));
      const auto before = gl;
      try {
        const auto v = loss.value_and_grad(xv, lv, av, g, gl);
        std::vector<double> r{double(v.cls), double(v.loc)};
        for (Index i = 0; i < gl.size(); ++i) r.push_back(gl[i]);
        return r;
      } catch (...) {
        FZ_CHECK(same_array(gl, before), kFam, "grad_loc_error written before a throw");
        throw;
      }
    }
  };
  auto value_only = [&](const auto& loss, const auto& xv) -> std::vector<double> {
    using L = std::decay_t<decltype(loss)>;
    fgbg::RankingWorkspace ws;
    if constexpr (std::is_same<L, fgbg::APLoss<S>>::value) {
      return {static_cast<double>(loss.value(xv, l))};
    } else if constexpr (std::is_same<L, fgbg::RankSortLoss<S>>::value) {
      const auto v = loss.value(xv, l, aux, ws);
      return {double(v.rank), double(v.sort)};
    } else {
      const auto v = loss.value(xv, l, aux, ws);
      return {double(v.cls), double(v.loc)};
    }
  };
  auto go = [&](const auto& loss) {
    dense_protocol<S>(
        kFam, in, x, NoState{},
        [&](const auto& xv, auto& g, NoState&) { return call(loss, xv, l, aux, g); },
        [&](const auto& xv, const NoState&) {
          std::vector<double> r = value_only(loss, xv), full;
          if (method == 1) {  // value() has no loc gradient: take it from a value_and_grad call
            RowA<S> g;
            full = call(loss, xv, l, aux, g);
            r.insert(r.end(), full.begin() + 2, full.end());
          }
          return r;
        },
        [&](const std::vector<double>& r, const RowA<S>& g) {
          FZ_CHECK(all_finite(x), kFam, "non-finite logit accepted");
          for (double v : r)
            FZ_CHECK(std::isfinite(v), kFam, "non-finite value " + std::to_string(v));
          FZ_CHECK(all_finite(g), kFam, "non-finite update");
          const int nv = method == 0 ? 1 : 2;
          for (int k = 0; k < nv; ++k) {
            if (method == 1 && k == 1) continue;
            FZ_CHECK(r[k] >= -1e-6 && r[k] <= 1 + 1e-6, kFam,
                     "value " + std::to_string(r[k]) + " outside [0, 1]");
          }
          if (method == 1) {
            double mx = 0;
            for (Index i = 0; i < n; ++i)
              if (l[i] > 0) mx = std::max(mx, double(aux[i]));
            FZ_CHECK(r[1] >= 0 && r[1] <= mx * (1 + 1e-6) + 1e-300, kFam,
                     "aLRP loc " + std::to_string(r[1]) + " outside [0, max loc error]");
          }
          // Permutation stability when every score is distinct.
          std::vector<S> s(x.data(), x.data() + x.size());
          std::sort(s.begin(), s.end());
          if (std::adjacent_find(s.begin(), s.end()) != s.end() || n < 2) return;
          std::vector<Index> perm(n);
          std::iota(perm.begin(), perm.end(), Index(0));
          for (Index i = n - 1; i > 0; --i) std::swap(perm[i], perm[in.u8() % (i + 1)]);
          RowA<S> xp(n, c), gp;
          Labels lp(n);
          Eigen::Array<S, Eigen::Dynamic, 1> ap(n);
          for (Index i = 0; i < n; ++i)
            xp.row(i) = x.row(perm[i]), lp[i] = l[perm[i]], ap[i] = aux[perm[i]];
          const std::vector<double> rp = call(loss, xp, lp, ap, gp);
          const double gmax = g.size() ? double(g.abs().maxCoeff()) : 0.0;
          for (int k = 0; k < nv; ++k)
            FZ_CHECK(close<S>(r[k], rp[k]), kFam,
                     "value depends on the anchor order: " + std::to_string(r[k]) + " vs " +
                         std::to_string(rp[k]));
          for (Index i = 0; i < n; ++i)
            for (Index j = 0; j < c; ++j)
              FZ_CHECK(close<S>(gmax + g(perm[i], j), gmax + gp(i, j)), kFam,
                       "update depends on the anchor order");
        });
  };
  switch (method) {
    case 0: {
      std::optional<fgbg::APLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::APLossConfig{delta, interp}); })) go(*loss);
      break;
    }
    case 1: {
      std::optional<fgbg::ALRPLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::ALRPLossConfig{delta, eps}); })) go(*loss);
      break;
    }
    default: {
      std::optional<fgbg::RankSortLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::RankSortLossConfig{delta, eps}); })) go(*loss);
    }
  }
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
