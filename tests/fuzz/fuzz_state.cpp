// Fuzz target: the stateful dense losses, GHM-C (GhmcState) and EFL (EqualizedFocalState), over
// sequences of up to three calls sharing one state; float and double. EFL is checked against a
// long-double oracle built from the state's ratios; GHM-C against the bounds 0 ≤ L ≤ Σ BCE /
// ((1 − μ)·n) (β/tot ≤ 1/((1−μ)·n)) and a gradient bounded by 1/(1 − μ).
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <optional>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "ghmc_efl";

struct Ghm {
  fgbg::GhmcState s;
  bool operator==(const Ghm& o) const {
    return vec_same(s.moving_counts(), o.s.moving_counts()) && s.bin_counts() == o.s.bin_counts() &&
           s.nonempty_bins() == o.s.nonempty_bins() && same_bits(s.tot(), o.s.tot());
  }
};
struct Efl {
  fgbg::EqualizedFocalState s;
  bool operator==(const Efl& o) const {
    return same_array(s.pos_grad(), o.s.pos_grad()) && same_array(s.neg_grad(), o.s.neg_grad()) &&
           same_array(s.ratio(), o.s.ratio()) && s.updates() == o.s.updates();
  }
};

template <typename S>
void check_ghm(const RowA<S>& x, const Labels& l, double mu, int wk, const RowA<S>& w, S value,
               const RowA<S>& grad) {
  FZ_CHECK(all_finite(x), kFam, "GHM-C accepted a non-finite logit");
  LD bound = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    FZ_CHECK(l[i] >= -1 && l[i] <= x.cols(), kFam, "GHM-C accepted a label out of range");
    if (l[i] == -1) continue;
    for (Index j = 0; j < x.cols(); ++j) {
      if (wk && !(w(i, wk == 1 ? 0 : j) > 0)) continue;
      bound += sp(x(i, j)) - (l[i] == j + 1 ? LD(x(i, j)) : 0);
    }
  }
  bound /= (1 - LD(mu));
  if (bound < representable<S>()) FZ_CHECK(std::isfinite(value), kFam, "GHM-C non-finite value");
  FZ_CHECK(!(value < -1e-4L * bound - 1e-20L), kFam,
           "GHM-C value " + std::to_string(double(value)) + " below 0 (bound " +
               std::to_string(double(bound)) + ")");
  // (An inf value is not "above" a bound that is itself beyond the type's range: the exact value
  // may overflow then.)
  FZ_CHECK(!(value > 1.001L * bound + 1e-20L) || (std::isinf(value) && bound >= representable<S>()),
           kFam,
           "GHM-C value " + std::to_string(double(value)) + " above the bound " +
               std::to_string(double(bound)));
  FZ_CHECK(all_finite(grad), kFam, "GHM-C non-finite gradient");
}

template <typename S>
void check_efl(const fgbg::EqualizedFocalLossConfig<S>& cf, const Eigen::ArrayXd& ratio,
               const RowA<S>& x, const Labels& l, int nk, double factor, int wk, const RowA<S>& w,
               S value, const RowA<S>& grad) {
  FZ_CHECK(all_finite(x), kFam, "EFL accepted a non-finite logit");
  const Index n = x.rows(), c = x.cols();
  Index valid = 0, pos = 0;
  for (Index i = 0; i < n; ++i) {
    FZ_CHECK(l[i] >= -1 && l[i] <= c, kFam, "EFL accepted a label out of range");
    valid += l[i] != -1, pos += l[i] > 0;
  }
  const LD a = norm_a(nk, factor, valid * c, pos);
  const LD ap = cf.alpha < 0 ? 1 : LD(cf.alpha), an = cf.alpha < 0 ? 1 : 1 - LD(cf.alpha);
  LD total = 0;
  RowA<LD> g = RowA<LD>::Zero(n, c);
  bool terms_representable = true;
  for (Index i = 0; i < n; ++i) {
    if (l[i] == -1) continue;
    for (Index j = 0; j < c; ++j) {
      const LD gj = LD(cf.gamma_b) + LD(cf.scale) * (1 - LD(ratio[j])), r = gj / LD(cf.gamma_b);
      const LD xx = x(i, j), s = sig(xx);
      LD ell, d;
      if (l[i] == j + 1) {
        const LD mod = ap * r * std::exp(-gj * sp(xx));
        ell = mod * sp(-xx);
        d = mod * (-gj * s * sp(-xx) + s - 1);
      } else {
        const LD mod = an * r * std::exp(-gj * sp(-xx));
        ell = mod * sp(xx);
        d = mod * (s + gj * (1 - s) * sp(xx));
      }
      const LD wv = wk == 0 ? 1 : LD(w(i, wk == 1 ? 0 : j));
      if (element_term_exempt<S>(ell, d, wv)) terms_representable = false;
      total += wv * ell;
      g(i, j) = wv * d / a;
    }
  }
  if (!terms_representable) return check_not_nan<S>(kFam, value, grad);
  check_finite_where_exact<S>(kFam, total / a, value, g, grad);
}

template <typename S>
void run(In& in) {
  const bool efl = in.flag();
  const Index n = in.small(5), c = in.small(4);
  const int steps = 1 + in.small(2);
  const int nk = in.u8() % 4, wk = in.u8() % 3;
  const double factor = in.any<double>();
  context().clear();
  note("efl", efl), note("double", sizeof(S) == 8), note("n", n), note("c", c),
      note("steps", steps);
  note("normalizer", nk), note("factor", factor), note("weights_kind", wk);
  const fgbg::Normalizer norm{static_cast<fgbg::Reduction>(nk), factor};
  if (efl) {
    fgbg::EqualizedFocalLossConfig<S> cf;
    cf.alpha = in.any<S>(), cf.gamma_b = in.any<S>(), cf.scale = in.any<S>();
    cf.decay = in.any<double>();
    const Index sc = in.flag() ? c : in.small(5);
    note("alpha", cf.alpha), note("gamma_b", cf.gamma_b), note("scale", cf.scale);
    note("decay", cf.decay), note("state_classes", sc);
    std::optional<fgbg::EqualizedFocalLoss<S>> loss;
    if (!completes(kFam, [&] { loss.emplace(cf); })) return;
    Efl st{fgbg::EqualizedFocalState(sc)};
    for (int s = 0; s < steps; ++s) {
      const RowA<S> x = decode_matrix<S>(in, n, c);
      const Labels l = decode_labels(in, n, c);
      RowA<S> w(n, wk == 2 ? c : 1);
      for (Index i = 0; i < w.size(); ++i) w.data()[i] = std::fabs(in.mostly_moderate<S>());
      const fgbg::Weights<S> wv = wk == 0   ? fgbg::Weights<S>{}
                                  : wk == 1 ? fgbg::Weights<S>(w.col(0))
                                            : fgbg::Weights<S>(w);
      note_array("x", x), note_array("labels", l), note_array("w", w);
      const Eigen::ArrayXd ratio = st.s.ratio();
      Efl next = st;
      bool advanced = false;
      dense_protocol<S>(
          kFam, in, x, st,
          [&](const auto& xv, auto& g, Efl& e) {
            return loss->value_and_grad(xv, l, g, e.s, wv, norm);
          },
          [&](const auto& xv, const Efl& e) { return loss->value(xv, l, e.s, wv, norm); },
          [&](const std::vector<double>& r, const RowA<S>& g) {
            check_efl<S>(cf, ratio, x, l, nk, factor, wk, w, static_cast<S>(r[0]), g);
            RowA<S> gg;
            loss->value_and_grad(x, l, gg, next.s, wv, norm);
            FZ_CHECK(all_finite(next.s.pos_grad()) && all_finite(next.s.neg_grad()) &&
                         all_finite(next.s.ratio()),
                     kFam, "EFL state statistic not finite");
            advanced = true;
          });
      if (!advanced) return;
      st = next;
    }
  } else {
    fgbg::GhmcLossConfig cf;
    cf.bins = static_cast<int>(in.i64());
    cf.momentum = in.any<double>();
    cf.division = in.flag() ? fgbg::GhmcDivision::bins : fgbg::GhmcDivision::nonempty_bins;
    const int sb = in.flag() ? cf.bins : static_cast<int>(in.i64());
    note("bins", cf.bins), note("momentum", cf.momentum), note("state_bins", sb);
    std::optional<fgbg::GhmcLoss<S>> loss;
    if (!completes(kFam, [&] { loss.emplace(cf); })) return;
    std::optional<Ghm> st0;
    if (!completes(kFam, [&] { st0.emplace(Ghm{fgbg::GhmcState(sb)}); })) return;
    Ghm st = *st0;
    for (int s = 0; s < steps; ++s) {
      const RowA<S> x = decode_matrix<S>(in, n, c);
      const Labels l = decode_labels(in, n, c);
      RowA<S> w(n, wk == 2 ? c : 1);
      for (Index i = 0; i < w.size(); ++i) w.data()[i] = in.mostly_moderate<S>();
      const fgbg::Weights<S> wv = wk == 0   ? fgbg::Weights<S>{}
                                  : wk == 1 ? fgbg::Weights<S>(w.col(0))
                                            : fgbg::Weights<S>(w);
      note_array("x", x), note_array("labels", l), note_array("w", w);
      Ghm next = st;
      bool advanced = false;
      dense_protocol<S>(
          kFam, in, x, st,
          [&](const auto& xv, auto& g, Ghm& e) { return loss->value_and_grad(xv, l, g, e.s, wv); },
          [&](const auto& xv, const Ghm& e) { return loss->value(xv, l, e.s, wv); },
          [&](const std::vector<double>& r, const RowA<S>& g) {
            check_ghm<S>(x, l, cf.momentum, wk, w, static_cast<S>(r[0]), g);
            RowA<S> gg;
            loss->value_and_grad(x, l, gg, next.s, wv);
            advanced = true;
          });
      if (!advanced) return;
      st = next;
    }
  }
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
