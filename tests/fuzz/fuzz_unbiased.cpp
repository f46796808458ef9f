// Fuzz target: the unbiased family — optimal bias / prior / released threshold over the full
// int64 range (long-double oracle), guided loss (wrapping the sigmoid focal loss), class adaptive
// thresholds (AnchorStatistics, per-class thresholds, candidate selection) and residual
// objectness (state sequences of up to two calls, layouts and aliasing through fuzz_common.hpp).
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/unbiased/class_adaptive_threshold.hpp>
#include <fgbg/unbiased/guided_loss.hpp>
#include <fgbg/unbiased/optimal_bias.hpp>
#include <fgbg/unbiased/residual_objectness.hpp>
#include <optional>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "unbiased";

void bias(In& in) {
  const std::int64_t fg = in.i64(), bg = in.i64(), c = in.i64();
  note("num_fg", fg), note("num_bg", bg), note("num_classes", c);
  const bool valid = fg >= 0 && bg >= 0 && c >= 1 && (LD(fg) + LD(bg)) > 0;
  const LD prior = valid ? LD(fg) / (LD(fg) + LD(bg)) / LD(c) : 0;
  double v = 0;
  if (completes(kFam, [&] { v = fgbg::optimal_sigmoid_prior(fg, bg, c); })) {
    FZ_CHECK(valid, kFam, "optimal_sigmoid_prior accepted invalid counts");
    FZ_CHECK(std::fabs(LD(v) - prior) <= 1e-12L * prior + 1e-300L, kFam,
             "optimal_sigmoid_prior " + std::to_string(v) + " vs exact " +
                 std::to_string(double(prior)));
  }
  if (completes(kFam, [&] { v = fgbg::optimal_sigmoid_bias(fg, bg, c); })) {
    const LD exact = std::log(prior / (1 - prior));
    FZ_CHECK(valid && fg > 0, kFam, "optimal_sigmoid_bias accepted invalid counts");
    if (std::isfinite(exact)) FZ_CHECK(std::isfinite(v), kFam, "optimal_sigmoid_bias not finite");
  }
  if (completes(kFam, [&] { v = fgbg::optimal_softmax_background_bias(fg, bg, c); })) {
    FZ_CHECK(valid && fg > 0 && bg > 0, kFam,
             "optimal_softmax_background_bias accepted invalid counts");
    const LD exact = std::log(LD(c) * LD(bg) / LD(fg));
    FZ_CHECK(std::isfinite(v) && std::fabs(LD(v) - exact) <= 1e-9L * (1 + std::fabs(exact)), kFam,
             "optimal_softmax_background_bias " + std::to_string(v) + " vs exact " +
                 std::to_string(double(exact)));
  }
  if (completes(kFam, [&] { v = fgbg::released_score_threshold(fg, bg, c); })) {
    FZ_CHECK(valid, kFam, "released_score_threshold accepted invalid counts");
    const LD exact = prior * (LD(c) + 1);
    FZ_CHECK(std::fabs(LD(v) - exact) <= 1e-12L * exact + 1e-300L, kFam,
             "released_score_threshold " + std::to_string(v) + " vs exact " +
                 std::to_string(double(exact)));
  }
}

template <typename S>
void guided(In& in, Index n, Index c, const Labels& l) {
  fgbg::GuidedLossConfig gc;
  gc.classification_scale = in.any<double>(), gc.treat_ignored_as_negative = in.flag();
  const double reg = in.any<double>();
  const RowA<S> x = decode_matrix<S>(in, n, c);
  note("scale", gc.classification_scale), note("ignored_as_negative", gc.treat_ignored_as_negative);
  note("reg_loss", reg), note_array("x", x);
  using G = fgbg::GuidedLoss<fgbg::SigmoidFocalLoss<S>>;
  std::optional<G> loss;
  if (!completes(kFam, [&] { loss.emplace(fgbg::SigmoidFocalLoss<S>(), gc); })) return;
  dense_protocol<S>(
      kFam, in, x, NoState{},
      [&](const auto& xv, auto& g, NoState&) {
        const auto r = loss->value_and_grad(xv, l, reg, g);
        return std::vector<double>{r.value, r.weight, r.cls_loss};
      },
      [&](const auto& xv, const NoState&) {
        const auto r = loss->value(xv, l, reg);
        return std::vector<double>{r.value, r.weight, r.cls_loss};
      },
      [&](const std::vector<double>& r, const RowA<S>& g) {
        FZ_CHECK(std::isfinite(reg) && all_finite(x), kFam,
                 "guided loss accepted a non-finite input");
        if (std::fabs(LD(gc.classification_scale) * LD(reg)) < representable<double>())
          FZ_CHECK(std::isfinite(r[0]), kFam, "guided value not finite where s·reg is");
        for (Index i = 0; i < g.size(); ++i)
          FZ_CHECK(!std::isnan(g.data()[i]), kFam, "guided gradient NaN");
      });
}

void thresholds(In& in, Index n, Index c, const Labels& l) {
  const std::int64_t classes = in.flag() ? c : in.i64();
  const double floor = in.any<double>();
  note("classes", classes), note("floor", floor);
  std::optional<fgbg::AnchorStatistics> st;
  if (!completes(kFam, [&] { st.emplace(classes); })) return;
  const fgbg::AnchorStatistics st0 = *st;
  if (!completes(kFam, [&] { st->add(l); })) {
    FZ_CHECK(st->num_fg() == st0.num_fg() && st->num_bg() == st0.num_bg(), kFam,
             "AnchorStatistics changed by a throwing add");
    return;
  }
  Eigen::ArrayXd t = Eigen::ArrayXd::Constant(3, -1.0);
  if (!completes(kFam, [&] { fgbg::per_class_score_thresholds(*st, t, floor); })) return;
  for (Index k = 0; k < t.size(); ++k) FZ_CHECK(std::isfinite(t[k]), kFam, "threshold not finite");
  RowA<double> scores(n, t.size());
  for (Index i = 0; i < scores.size(); ++i) scores.data()[i] = in.u8() / 255.0;
  std::vector<fgbg::ScoredCandidate<double>> out;
  const Index k = fgbg::select_above_thresholds(scores, t, out);
  FZ_CHECK(k == static_cast<Index>(out.size()), kFam, "selected count differs from the output");
  (void)n;
}

struct RoState {
  fgbg::ResidualObjectnessState s;
  bool operator==(const RoState& o) const {
    return same_bits(s.num_pos_ema(), o.s.num_pos_ema()) && s.started() == o.s.started() &&
           s.calls() == o.s.calls();
  }
};

template <typename S>
void residual(In& in, Index n, Index c, const Labels& l) {
  fgbg::ResidualObjectnessConfig rc;
  rc.obj_normalizer_scale = in.any<double>(), rc.cls_normalizer_scale = in.any<double>();
  rc.box_normalizer_scale = in.flag() ? 1.0 : in.any<double>();
  rc.ema_momentum = in.flag() ? in.u8() / 256.0 : in.any<double>();
  rc.ema_initial = in.any<double>();
  rc.ema_updates = in.flag() ? fgbg::EmaUpdates::one_per_call : fgbg::EmaUpdates::three_per_call;
  const Index k = in.small(3);
  note("obj_scale", rc.obj_normalizer_scale), note("cls_scale", rc.cls_normalizer_scale);
  note("momentum", rc.ema_momentum), note("ema_initial", rc.ema_initial), note("stages", k);
  std::optional<fgbg::ResidualObjectnessLoss<S>> loss;
  if (!completes(kFam, [&] { loss.emplace(rc); })) return;
  RoState st;
  for (int step = 0; step < 2; ++step) {
    const RowA<S> so = decode_matrix<S>(in, n, k), z = decode_matrix<S>(in, n, c);
    note_array("stage_logits", so), note_array("class_logits", z);
    auto vg = [&](const auto& zv, auto& g, RoState& s) -> std::vector<double> {
      RowA<S> go = RowA<S>::Constant(n, k, S(-4.5));
      const RowA<S> go0 = go;
      try {
        const auto r = loss->value_and_grad(zv, l, so, g, go, s.s);
        std::vector<double> out{r.loss, r.obj_loss, r.cls_loss, r.obj_normalizer, r.cls_normalizer};
        out.insert(out.end(), go.data(), go.data() + go.size());
        return out;
      } catch (...) {
        FZ_CHECK(same_array(go, go0), kFam, "grad_stages written before a throw");
        throw;
      }
    };
    RoState next = st;
    bool advanced = false;
    dense_protocol<S>(
        kFam, in, z, st, vg,
        [&](const auto& zv, const RoState& s) -> std::vector<double> {
          const auto r = loss->value(zv, l, so, s.s);
          std::vector<double> out{r.loss, r.obj_loss, r.cls_loss, r.obj_normalizer,
                                  r.cls_normalizer};
          RowA<S> g;
          RoState s2 = s;
          const auto full = vg(zv, g, s2);
          out.insert(out.end(), full.begin() + 5, full.end());
          return out;
        },
        [&](const std::vector<double>& r, const RowA<S>& g) {
          FZ_CHECK(all_finite(so) && all_finite(z), kFam,
                   "residual objectness accepted non-finite logits");
          LD bo = 0, bc = 0;
          for (Index i = 0; i < so.size(); ++i) bo += std::fabs(LD(so.data()[i])) + 1;
          for (Index i = 0; i < z.size(); ++i) bc += std::fabs(LD(z.data()[i])) + 1;
          const LD bound = (bo + 1) * (k + 1) / LD(r[3]) + bc / LD(r[4]);
          if (bound < representable<double>() * 1e-3L)
            for (int j = 0; j < 3; ++j)
              FZ_CHECK(std::isfinite(r[j]), kFam, "residual objectness value not finite");
          if ((1 / LD(r[3]) + 1 / LD(r[4])) * (k + 2) < representable<S>() * 1e-3L) {
            FZ_CHECK(all_finite(g), kFam, "residual objectness class gradient not finite");
            for (std::size_t j = 5; j < r.size(); ++j)
              FZ_CHECK(std::isfinite(r[j]), kFam, "residual objectness stage gradient not finite");
          }
          RowA<S> a, b;
          loss->value_and_grad(z, l, so, b, a, next.s);
          advanced = true;
        });
    if (!advanced) return;
    st = next;
  }
}

template <typename S>
void run(In& in) {
  const int method = in.u8() % 4;
  const Index n = in.small(5), c = in.small(3);
  const Labels l = decode_labels(in, n, c);
  context().clear();
  note("method", method), note("double", sizeof(S) == 8), note_array("labels", l);
  if (method == 0) bias(in);
  if (method == 1) guided<S>(in, n, c, l);
  if (method == 2) thresholds(in, n, c, l);
  if (method == 3) residual<S>(in, n, c, l);
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
