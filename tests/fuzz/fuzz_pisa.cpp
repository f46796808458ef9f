// Fuzz target: PISA — ISR-P (positive re-weighting), ISR-N (the Score-HLR sampler) and CARL —
// float and double, every parameter over its full range. Checks: the documented exception types;
// nothing written by a throwing call; ISR-P weights finite and ≥ 0 and the positive loss kept
// (Σℓ·w = Σℓ·lw over positives, to 1e-6 relative, when that sum is representable); a valid
// Score-HLR sample, same seed same sample; CARL finite value and gradients when every input is
// finite and Σ ℓ is representable, value() == value_and_grad(), layout independence and aliasing
// (fuzz_common.hpp).
#include <fgbg/hard_sampling/sample.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>
#include <fgbg/soft_sampling/isr_p.hpp>
#include <optional>
#include <random>
#include <set>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "pisa";
template <typename S>
using Vec = Eigen::Array<S, Eigen::Dynamic, 1>;

template <typename S>
void isr_p(In& in, Index n, Index c, const Labels& l) {
  fgbg::IsrPConfig<S> cf;
  cf.k = in.any<S>(), cf.bias = in.flag() ? S(in.u8()) / S(255) : in.any<S>();
  Eigen::Array<std::int64_t, Eigen::Dynamic, 1> gt(n);
  Vec<S> iou(n), cls(n), lw(n);
  for (Index i = 0; i < n; ++i) {
    gt[i] = in.flag() ? in.small(2) : in.i64();
    iou[i] = in.flag() ? S(in.u8()) / S(255) : in.any<S>();
    cls[i] = in.flag() ? std::fabs(in.mostly_moderate<S>()) : in.any<S>();
    lw[i] = in.flag() ? std::fabs(in.mostly_moderate<S>()) : in.any<S>();
  }
  const bool with_lw = in.flag();
  const Index classes = in.flag() ? c : static_cast<Index>(in.i64());
  note("k", cf.k), note("bias", cf.bias), note("num_classes", classes), note("with_lw", with_lw);
  note_array("gt", gt), note_array("iou", iou), note_array("cls_loss", cls), note_array("lw", lw);
  std::optional<fgbg::IsrP<S>> isr;
  if (!completes(kFam, [&] { isr.emplace(cf); })) return;
  Vec<S> out = Vec<S>::Constant(n, S(-9));
  const Vec<S> out0 = out;
  fgbg::IsrPResult r;
  const bool ok = completes(kFam, [&] {
    r = with_lw ? isr->weights(l, gt, iou, cls, lw, classes, out)
                : isr->weights(l, gt, iou, cls, classes, out);
  });
  if (!ok) {
    FZ_CHECK(same_array(out, out0), kFam, "ISR-P wrote before throwing");
    return;
  }
  LD kept = 0, before = 0, loss_max = 0;
  Index positives = 0;
  for (Index i = 0; i < n; ++i) {
    FZ_CHECK(std::isfinite(out[i]) && out[i] >= 0, kFam,
             "ISR-P weight " + std::to_string(double(out[i])) + " at " + std::to_string(i));
    const LD base = with_lw ? LD(lw[i]) : 1;
    if (l[i] > 0) {
      kept += LD(cls[i]) * LD(out[i]), before += LD(cls[i]) * base;
      loss_max = std::max(loss_max, LD(cls[i])), ++positives;
    }
  }
  // Weights are computed in double and rounded to S, where an exact weight below the normal
  // range underflows (the exact ones may be 1e-610: Σℓ·lw = 7e-302 over Σℓ·w = 1.8e308). Such a
  // weight moves Σℓ·w by less than ℓ_max·min(S), so check where P·ℓ_max·min(S) is far below
  // the positive loss.
  const LD underflow =
      LD(positives) * std::max<LD>(loss_max, 1) * LD(std::numeric_limits<S>::min());
  if (before > underflow * 1e6L && before < representable<S>() && !r.guarded)
    FZ_CHECK(std::fabs(kept - before) <= 1e-5L * before, kFam,
             "ISR-P changed the positive loss: " + std::to_string(double(kept)) + " vs " +
                 std::to_string(double(before)));
}

template <typename S>
void isr_n(In& in, Index n, Index c, const Labels& l) {
  fgbg::ScoreHlrSamplerConfig cf;
  cf.num = in.i64(), cf.pos_fraction = in.flag() ? in.u8() / 255.0 : in.any<double>();
  cf.neg_pos_ub = in.flag() ? -1.0 : in.any<double>();
  cf.k = in.any<double>(), cf.bias = in.flag() ? in.u8() / 255.0 : in.any<double>();
  cf.score_thr = in.flag() ? in.u8() / 512.0 : in.any<double>();
  cf.iou_thr = in.flag() ? in.u8() / 255.0 : in.any<double>();
  const RowA<S> x = decode_matrix<S>(in, n, c + 1);
  RowA<S> boxes(n, 4);
  for (Index i = 0; i < n; ++i) {
    boxes(i, 0) = S(in.small(8)), boxes(i, 1) = S(in.small(8));
    boxes(i, 2) = boxes(i, 0) + S(in.small(8)), boxes(i, 3) = boxes(i, 1) + S(in.small(8));
  }
  const std::uint64_t seed = in.bits(8);
  note("num", cf.num), note("pos_fraction", cf.pos_fraction), note("neg_pos_ub", cf.neg_pos_ub);
  note("k", cf.k), note("bias", cf.bias), note("score_thr", cf.score_thr),
      note("iou_thr", cf.iou_thr);
  note_array("x", x), note_array("boxes", boxes);
  std::optional<fgbg::ScoreHlrSampler<S>> smp;
  if (!completes(kFam, [&] { smp.emplace(cf); })) return;
  fgbg::Sample s;
  s.positives = {5}, s.negatives = {2, 1};
  const fgbg::Sample s0 = s;
  fgbg::ScoreHlrWorkspace<S> ws;
  std::mt19937_64 rng(seed);
  if (!completes(kFam, [&] { smp->sample(l, x, boxes, rng, s, ws); })) {
    FZ_CHECK(s.positives == s0.positives && s.negatives == s0.negatives &&
                 s.negative_weights == s0.negative_weights,
             kFam, "Score-HLR sample written before a throw");
    return;
  }
  std::set<Index> seen;
  for (Index i : s.positives)
    FZ_CHECK(i >= 0 && i < n && l[i] > 0 && seen.insert(i).second, kFam, "bad Score-HLR positive");
  for (Index i : s.negatives)
    FZ_CHECK(i >= 0 && i < n && l[i] == 0 && seen.insert(i).second, kFam, "bad Score-HLR negative");
  FZ_CHECK(s.size() <= cf.num, kFam, "more than num sampled");
  for (double w : s.negative_weights)
    FZ_CHECK(std::isfinite(w) && w >= 0, kFam, "bad Score-HLR weight");
  fgbg::Sample t;
  std::mt19937_64 rng2(seed);
  smp->sample(l, x, boxes, rng2, t, ws);
  FZ_CHECK(t.positives == s.positives && t.negatives == s.negatives &&
               vec_same(t.negative_weights, s.negative_weights),
           kFam, "Score-HLR: same seed, different sample");
}

template <typename S>
void carl(In& in, Index n, Index c, const Labels& l) {
  fgbg::CarlLossConfig<S> cf;
  cf.k = in.any<S>(), cf.bias = in.flag() ? S(in.u8()) / S(256) : in.any<S>(),
  cf.sigmoid = in.flag();
  const int nk = in.u8() % 4;
  const double factor = in.any<double>();
  const fgbg::Normalizer norm{static_cast<fgbg::Reduction>(nk), factor};
  const Index cols = cf.sigmoid ? c : c + 1;
  const RowA<S> x = decode_matrix<S>(in, n, cols);
  Vec<S> reg(n);
  for (Index i = 0; i < n; ++i)
    reg[i] = in.flag() ? std::fabs(in.mostly_moderate<S>()) : in.any<S>();
  note("k", cf.k), note("bias", cf.bias), note("sigmoid", cf.sigmoid), note("normalizer", nk);
  note("factor", factor), note_array("x", x), note_array("reg", reg);
  std::optional<fgbg::CarlLoss<S>> loss;
  if (!completes(kFam, [&] { loss.emplace(cf); })) return;
  auto vg = [&](const auto& xv, auto& g, NoState&) -> std::vector<double> {
    Vec<S> gr = Vec<S>::Constant(n, S(-2.5));
    const Vec<S> gr0 = gr;
    try {
      std::vector<double> r{double(loss->value_and_grad(xv, l, reg, g, gr, norm))};
      for (Index i = 0; i < n; ++i) r.push_back(gr[i]);
      return r;
    } catch (...) {
      FZ_CHECK(same_array(gr, gr0), kFam, "CARL grad_reg_loss written before a throw");
      throw;
    }
  };
  dense_protocol<S>(
      kFam, in, x, NoState{}, vg,
      [&](const auto& xv, const NoState& st) {
        std::vector<double> r{double(loss->value(xv, l, reg, norm))};
        RowA<S> g;
        NoState s2 = st;
        const auto full = vg(xv, g, s2);
        r.insert(r.end(), full.begin() + 1, full.end());
        return r;
      },
      [&](const std::vector<double>& r, const RowA<S>& g) {
        // CARL reads the logits of positive rows only: the class entry of a sigmoid head, the
        // whole row of a softmax head (carl.hpp); only those must be checked.
        for (Index i = 0; i < n; ++i)
          if (l[i] > 0)
            FZ_CHECK(cf.sigmoid ? bool(std::isfinite(x(i, l[i] - 1))) : all_finite(x.row(i)), kFam,
                     "CARL accepted a non-finite logit it reads");
        LD sum = 0;
        Index pos = 0;
        for (Index i = 0; i < n; ++i)
          if (l[i] > 0) sum += std::fabs(LD(reg[i])), ++pos;
        // ŵ ≤ P, so |L| ≤ P Σℓ / A; gradients are bounded by P·max ℓ / A times O(k).
        const LD bound = sum * std::max<Index>(pos, 1) * std::max<LD>(1, std::fabs(LD(cf.k))) /
                         norm_a(nk, factor, n, pos);
        if (bound < representable<S>() * 1e-2L) {
          for (double v : r)
            FZ_CHECK(std::isfinite(v), kFam, "CARL non-finite value or reg gradient");
          FZ_CHECK(all_finite(g), kFam, "CARL non-finite gradient");
        }
      });
}

template <typename S>
void run(In& in) {
  const int method = in.u8() % 3;
  const Index n = in.small(6), c = in.small(3);
  const Labels l = decode_labels(in, n, c);
  context().clear();
  note("method", method), note("double", sizeof(S) == 8), note("n", n), note("c", c),
      note_array("labels", l);
  if (method == 0) isr_p<S>(in, n, c, l);
  if (method == 1) isr_n<S>(in, n, c, l);
  if (method == 2) carl<S>(in, n, c, l);
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
