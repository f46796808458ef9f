// Fuzz target: dense sigmoid losses (BCE, sigmoid focal, FL*, QFL, VFL, soft-target BCE, focal
// and BCE with N × C float targets), float and double, every normaliser (target_sum included),
// checked against the long-double oracle of fuzz_oracle.hpp.
#include <fgbg/soft_sampling/dense_target_focal_loss.hpp>
#include <fgbg/soft_sampling/focal_loss_star.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/soft_sampling/soft_target_cross_entropy.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>
#include <optional>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "sigmoid";

template <typename S>
struct Case {
  int method;
  S alpha, gamma, beta, min_q;
  bool iou_weighted;
  int nk;
  double factor;
  RowA<S> x;
  Labels l;
  Eigen::Array<S, Eigen::Dynamic, 1> q;
  int wk;
  RowA<S> w;  // N × 1 (per anchor) or N × C
  RowA<S> t;  // N × C float targets (methods 6 and 7)
};

template <typename S>
void oracle(const Case<S>& k, S value, const RowA<S>& grad) {
  const Index n = k.x.rows(), c = k.x.cols();
  Index valid = 0, pos = 0;
  for (Index i = 0; i < n; ++i) {
    FZ_CHECK(k.l[i] >= -1 && k.l[i] <= c, kFam, "label out of range accepted");
    valid += k.l[i] != -1;
    pos += k.l[i] > 0;
  }
  FZ_CHECK(all_finite(k.x), kFam, "non-finite logit accepted");
  if (k.wk) {
    FZ_CHECK(all_finite(k.w), kFam, "non-finite weight accepted");
    FZ_CHECK((k.w >= S(0)).all(), kFam, "negative weight accepted");
  }
  const bool quality = k.method >= 3;
  const bool dense = k.method >= 6;
  if (dense)
    FZ_CHECK(all_finite(k.t) && (k.t >= S(0)).all() && (k.t <= S(1)).all(), kFam,
             "target outside [0, 1] accepted");
  // target_sum (nk 4): only the losses with a soft target take it; the others throw before this.
  FZ_CHECK(k.nk != 4 || quality, kFam, "target_sum accepted by a loss without soft targets");
  LD tsum = 0;
  for (Index i = 0; i < n; ++i) {
    if (!dense && k.l[i] > 0) tsum += k.q[i];
    if (dense && k.l[i] != -1)
      for (Index j = 0; j < c; ++j) tsum += k.t(i, j);
  }
  const LD a = k.nk == 4 ? std::max<LD>(1, tsum) : norm_a(k.nk, k.factor, valid * c, pos);
  LD total = 0;
  RowA<LD> g = RowA<LD>::Zero(n, c);
  bool terms_representable = true;
  for (Index i = 0; i < n; ++i) {
    if (k.l[i] == -1) continue;
    if (quality && !dense && k.l[i] > 0) {
      FZ_CHECK(std::isfinite(k.q[i]) && k.q[i] >= S(0) && k.q[i] <= S(1), kFam,
               "quality outside [0, 1] accepted");
    }
    for (Index j = 0; j < c; ++j) {
      const bool hot = k.l[i] == j + 1;
      const LD x = k.x(i, j);
      LD ell = 0, d = 0;
      const LD t = hot ? 1 : 0;
      const LD at = k.alpha < 0 ? 1 : (hot ? LD(k.alpha) : 1 - LD(k.alpha));
      const LD gm = k.gamma;
      switch (k.method) {
        case 0:  // BCE
          ell = sp(x) - t * x;
          d = sig(x) - t;
          break;
        case 1: {  // focal
          const LD z = (2 * t - 1) * x, pt = sig(z);
          const LD mod = std::exp(-gm * sp(z));
          ell = at * mod * sp(-z);
          // pt − 1 as −σ(−z): in long double 1 − σ(z) rounds to 0 once z > 45.
          d = (2 * t - 1) * at * mod * (gm * pt * -sp(-z) - sig(-z));
          break;
        }
        case 2: {  // FL*
          const LD z = (2 * t - 1) * x;
          ell = at * sp(-gm * z) / gm;
          d = -(2 * t - 1) * at * sig(-gm * z);
          break;
        }
        case 3: {  // QFL
          // |σ − t| and σ(1 − σ) without cancellation: near |σ − t| = 1, 1 − σ(x) rounds to 0
          // even in long double (x > 45), which would drop the whole modulator-slope term.
          const LD tq = hot ? LD(k.q[i]) : 0, s = sig(x), q = sig(-x), dd = s - tq, b = k.beta;
          const LD bce = (1 - tq) * sp(x) + tq * sp(-x);
          const LD ad = std::fabs(dd), u = dd > 0 ? tq + q : (1 - tq) + s;  // |σ − t| = 1 − u
          const LD log_ad = ad > LD(0.5) ? std::log1p(-u) : std::log(ad);
          const LD mod = ad == 0 ? 0 : std::exp(b * log_ad);
          const LD sg = dd > 0 ? 1 : (dd < 0 ? -1 : 0);
          ell = mod * bce;
          d = (sg == 0 ? 0 : b * std::exp((b - 1) * log_ad) * sg * s * q * bce) + mod * dd;
          break;
        }
        case 5:    // soft-target BCE
        case 7: {  // dense-target BCE
          const LD tq = k.method == 7 ? LD(k.t(i, j)) : hot ? LD(k.q[i]) : 0;
          ell = (1 - tq) * sp(x) + tq * sp(-x);
          d = sig(x) - tq;
          break;
        }
        case 6: {  // dense-target focal
          const LD td = k.t(i, j), s = sig(x), sn = sig(-x);
          const LD atd = k.alpha < 0 ? 1 : LD(k.alpha) * td + (1 - LD(k.alpha)) * (1 - td);
          const LD q = (1 - td) * s + td * sn, ce = (1 - td) * sp(x) + td * sp(-x);
          const LD mod = gm == 0 ? 1 : q == 0 ? 0 : std::exp(gm * std::log(q));
          const LD dmod =
              gm == 0 || q == 0 ? 0 : gm * std::exp((gm - 1) * std::log(q)) * s * sn * (1 - 2 * td);
          ell = atd * ce * mod;
          d = atd * ((s - td) * mod + ce * dmod);
          break;
        }
        default: {  // VFL
          const LD s = sig(x);
          if (hot) {
            const LD qq = std::max<LD>(k.q[i], k.min_q);
            const LD bce = (1 - qq) * sp(x) + qq * sp(-x);
            ell = k.iou_weighted ? qq * bce : bce;
            d = k.iou_weighted ? qq * (s - qq) : s - qq;
          } else {
            const LD sg = std::exp(-gm * sp(-x));
            ell = LD(k.alpha) * sg * sp(x);
            d = LD(k.alpha) * sg * (s + gm * (1 - s) * sp(x));
          }
        }
      }
      const LD wv = k.wk == 0 ? 1 : (k.wk == 1 ? LD(k.w(i, 0)) : LD(k.w(i, j)));
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
  Case<S> k;
  k.method = in.u8() % 8;
  const Index n = in.small(5), c = in.small(4);
  k.alpha = in.any<S>();
  k.gamma = in.any<S>();
  k.beta = in.any<S>();
  k.min_q = in.any<S>();
  k.iou_weighted = in.flag();
  k.nk = in.u8() % 5;
  k.factor = in.any<double>();
  k.x = decode_matrix<S>(in, n, c);
  k.l = decode_labels(in, n, c);
  k.q.resize(n);
  for (Index i = 0; i < n; ++i) k.q[i] = in.flag() ? S(in.u8()) / S(255) : in.any<S>();
  k.wk = in.u8() % 3;
  k.w.resize(n, k.wk == 2 ? c : 1);
  for (Index i = 0; i < k.w.size(); ++i)
    k.w.data()[i] = in.flag() ? std::fabs(in.mostly_moderate<S>()) : in.any<S>();
  k.t.resize(k.method >= 6 ? n : 0, c);
  for (Index i = 0; i < k.t.size(); ++i)
    k.t.data()[i] = in.flag() ? S(in.u8() % 3 == 0 ? 0 : in.u8()) / S(255) : in.any<S>();
  context().clear();
  note("method", k.method), note("double", sizeof(S) == 8), note("alpha", k.alpha),
      note("gamma", k.gamma);
  note("beta", k.beta), note("min_quality", k.min_q), note("iou_weighted", k.iou_weighted);
  note("normalizer", k.nk), note("factor", k.factor), note_array("x", k.x),
      note_array("labels", k.l);
  note_array("quality", k.q), note("weights_kind", k.wk), note_array("w", k.w);
  note_array("targets", k.t);
  const fgbg::Normalizer norm{static_cast<fgbg::Reduction>(k.nk), k.factor};
  const fgbg::Weights<S> w = k.wk == 0   ? fgbg::Weights<S>{}
                             : k.wk == 1 ? fgbg::Weights<S>(k.w.col(0))
                                         : fgbg::Weights<S>(k.w);
  auto go = [&](const auto& loss, auto&& vg, auto&& v) {
    dense_protocol<S>(kFam, in, k.x, NoState{}, vg, v,
                      [&](const std::vector<double>& r, const RowA<S>& g) {
                        oracle<S>(k, static_cast<S>(r[0]), g);
                      });
    (void)loss;
  };
  auto plain = [&](const auto& loss) {
    go(
        loss,
        [&](const auto& x, auto& g, NoState&) { return loss.value_and_grad(x, k.l, g, w, norm); },
        [&](const auto& x, const NoState&) { return loss.value(x, k.l, w, norm); });
  };
  auto qual = [&](const auto& loss) {
    go(
        loss,
        [&](const auto& x, auto& g, NoState&) {
          return loss.value_and_grad(x, k.l, k.q, g, w, norm);
        },
        [&](const auto& x, const NoState&) { return loss.value(x, k.l, k.q, w, norm); });
  };
  auto dense = [&](const auto& loss) {
    go(
        loss,
        [&](const auto& x, auto& g, NoState&) {
          return loss.value_and_grad(x, k.l, k.t, g, w, norm);
        },
        [&](const auto& x, const NoState&) { return loss.value(x, k.l, k.t, w, norm); });
  };
  const fgbg::Normalizer cfg_norm = fgbg::Normalizer::sum();
  switch (k.method) {
    case 0: {
      std::optional<fgbg::SigmoidCrossEntropyLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::SigmoidCrossEntropyLossConfig{cfg_norm}); }))
        plain(*loss);
      break;
    }
    case 1: {
      std::optional<fgbg::SigmoidFocalLoss<S>> loss;
      if (completes(kFam, [&] {
            loss.emplace(fgbg::SigmoidFocalLossConfig<S>{k.alpha, k.gamma, cfg_norm});
          }))
        plain(*loss);
      break;
    }
    case 2: {
      std::optional<fgbg::FocalLossStar<S>> loss;
      if (completes(kFam, [&] {
            loss.emplace(fgbg::FocalLossStarConfig<S>{k.alpha, k.gamma, cfg_norm});
          }))
        plain(*loss);
      break;
    }
    case 3: {
      std::optional<fgbg::QualityFocalLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::QualityFocalLossConfig<S>{k.beta, cfg_norm}); }))
        qual(*loss);
      break;
    }
    case 5: {
      std::optional<fgbg::SoftTargetCrossEntropyLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::SoftTargetCrossEntropyLossConfig{cfg_norm}); }))
        qual(*loss);
      break;
    }
    case 6: {
      std::optional<fgbg::DenseTargetFocalLoss<S>> loss;
      if (completes(kFam, [&] {
            loss.emplace(fgbg::DenseTargetFocalLossConfig<S>{k.alpha, k.gamma, cfg_norm});
          }))
        dense(*loss);
      break;
    }
    case 7: {
      std::optional<fgbg::DenseTargetCrossEntropyLoss<S>> loss;
      if (completes(kFam, [&] { loss.emplace(fgbg::DenseTargetCrossEntropyLossConfig{cfg_norm}); }))
        dense(*loss);
      break;
    }
    default: {
      std::optional<fgbg::VarifocalLoss<S>> loss;
      if (completes(kFam, [&] {
            loss.emplace(
                fgbg::VarifocalLossConfig<S>{k.alpha, k.gamma, k.iou_weighted, k.min_q, cfg_norm});
          }))
        qual(*loss);
    }
  }
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
