// The compiled half of the `fgbg` Python package: one translation unit binding fgbg's losses for
// tensors described by the Python side (python/fgbg/_tensors.py).
//
// Python hands every array over as a view: (address, rows, cols, row stride, column stride), in
// elements, of memory that the calling tensor keeps alive for the duration of the call. The views
// become Eigen::Maps with run-time strides, so a contiguous tensor is read in place and a strided
// one (a transposed or sliced view) is read where it lies; the gradient and the per-element or
// per-anchor losses are written into contiguous tensors that Python allocated. Each loss runs its
// fused value_and_grad once, with the GIL released. fgbg's std::invalid_argument becomes
// ValueError (pybind11's translation), its std::domain_error (a NaN or inf input) becomes
// fgbg.NonFiniteError, a subclass of ValueError; nothing is written when a call throws.
//
// The state of GHM-C and EFL lives on the Python side as the C++ state's save() blob (a uint8
// tensor registered as a module buffer): each call loads it, runs, and returns the new blob.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/core/core.hpp>
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/dr_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/dense_target_focal_loss.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/focal_loss_star.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>
#include <fgbg/soft_sampling/isr_p.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/soft_sampling/soft_target_cross_entropy.hpp>
#include <fgbg/soft_sampling/softmax_cross_entropy.hpp>
#include <fgbg/soft_sampling/softmax_focal_loss.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>
#include <fgbg/unbiased/class_adaptive_threshold.hpp>
#include <fgbg/unbiased/guided_loss.hpp>
#include <fgbg/unbiased/optimal_bias.hpp>
#include <fgbg/unbiased/residual_objectness.hpp>

namespace py = pybind11;

namespace {

using fgbg::Index;

/// (address, rows, cols, row stride, column stride), strides in elements.
using View = std::tuple<std::uintptr_t, Index, Index, Index, Index>;

template <typename S>
using In2 = Eigen::Map<const fgbg::RowArray<S>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
template <typename S>
using InVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;
using LabelMap =
    Eigen::Map<const Eigen::Array<fgbg::Label, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;
template <typename S>
using Out2 = Eigen::Map<fgbg::RowArray<S>>;
template <typename S>
using OutVec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;

template <typename S>
In2<S> in2(const View& v) {
  const auto& [p, r, c, rs, cs] = v;
  return In2<S>(reinterpret_cast<const S*>(p), r, c,
                Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(rs, cs));
}
template <typename S>
InVec<S> in_vec(const View& v) {
  const auto& [p, r, c, rs, cs] = v;
  (void)c;
  (void)cs;
  return InVec<S>(reinterpret_cast<const S*>(p), r, Eigen::InnerStride<>(rs));
}
LabelMap labels_of(const View& v) {
  const auto& [p, r, c, rs, cs] = v;
  (void)c;
  (void)cs;
  return LabelMap(reinterpret_cast<const fgbg::Label*>(p), r, Eigen::InnerStride<>(rs));
}
template <typename S>
Out2<S> out2(const View& v) {
  const auto& [p, r, c, rs, cs] = v;
  (void)rs;
  (void)cs;
  return Out2<S>(reinterpret_cast<S*>(p), r, c);
}

/// The normaliser named by Python: kind 0 sum, 1 mean, 2 avg_factor, 3 num_positives,
/// 4 target_sum.
fgbg::Normalizer normalizer_of(int kind, double factor) {
  switch (kind) {
    case 0:
      return fgbg::Normalizer::sum();
    case 1:
      return fgbg::Normalizer::mean();
    case 2:
      return fgbg::Normalizer::avg_factor(factor);
    case 3:
      return fgbg::Normalizer::num_positives();
    case 4:
      return fgbg::Normalizer::target_sum();
    default:
      throw std::invalid_argument("fgbg: unknown normaliser kind " + std::to_string(kind));
  }
}

/// Everything a dense call takes besides the loss's own inputs. `grad` empty: a value-only call
/// (the C++ `value()`, no gradient buffer).
struct DenseArgs {
  View x, labels;
  std::optional<View> grad;
  std::optional<View> weights;
  int norm_kind;
  double norm_factor;
  int losses_kind;  ///< 0 none, 1 element losses (N × C), 2 anchor losses (N)
  std::optional<View> losses;
};

template <typename S>
fgbg::Weights<S> weights_of(const std::optional<View>& w) {
  if (!w) return {};
  return fgbg::Weights<S>(in2<S>(*w));
}

/// Runs `f(x, labels, g, weights, normalizer, sink...)` with the loss output the call asked for
/// appended (nothing, element_losses or anchor_losses), with the GIL released. `g` points to the
/// gradient map, or is nullptr for a value-only call. S is the compute type (float or double), X
/// the type of the logits and of the gradient: S, or Eigen::half / Eigen::bfloat16 (float
/// losses only), read and written in place. Weights and loss outputs are in S.
template <typename S, typename X = S, bool kElementLosses = true, typename F>
double run_dense(const DenseArgs& a, F&& f) {
  const In2<X> x = in2<X>(a.x);
  const LabelMap labels = labels_of(a.labels);
  const fgbg::Weights<S> w = weights_of<S>(a.weights);
  const fgbg::Normalizer norm = normalizer_of(a.norm_kind, a.norm_factor);
  auto with_sink = [&](auto g) -> double {
    if constexpr (kElementLosses) {
      if (a.losses_kind == 1) {
        Out2<S> e = out2<S>(*a.losses);
        return static_cast<double>(f(x, labels, g, w, norm, fgbg::element_losses(e)));
      }
    } else {
      if (a.losses_kind == 1)
        throw std::invalid_argument(
            "fgbg: a softmax head has one loss per anchor, not per element");
    }
    if (a.losses_kind == 2) {
      const auto& [p, r, c, rs, cs] = *a.losses;
      (void)c;
      (void)rs;
      (void)cs;
      OutVec<S> e(reinterpret_cast<S*>(p), r);
      return static_cast<double>(f(x, labels, g, w, norm, fgbg::anchor_losses(e)));
    }
    return static_cast<double>(f(x, labels, g, w, norm));
  };
  py::gil_scoped_release release;
  if (a.grad) {
    Out2<X> g = out2<X>(*a.grad);
    return with_sink(&g);
  }
  return with_sink(nullptr);
}

/// The call of a dense loss for run_dense: `value(x, y, inputs..., w, n, sink...)` when `g` is
/// nullptr, else `value_and_grad(x, y, inputs..., *g, w, n, sink...)`. The inputs are given with a
/// trailing comma (`FGBG_CALL(loss, q, )`), or none (`FGBG_CALL(loss, )`).
#define FGBG_CALL(loss, ...)                                                                       \
  [&](const auto& x_, const auto& y_, auto g_, const auto& w_, const auto& n_,                     \
      auto... sink_) -> double {                                                                   \
    if constexpr (std::is_null_pointer_v<decltype(g_)>)                                            \
      return static_cast<double>(loss.value(x_, y_, __VA_ARGS__ w_, n_, sink_...));                \
    else                                                                                           \
      return static_cast<double>(loss.value_and_grad(x_, y_, __VA_ARGS__ * g_, w_, n_, sink_...)); \
  }

template <typename S, typename X = S>
double sigmoid_ce(const DenseArgs& a) {
  const fgbg::SigmoidCrossEntropyLoss<S> loss;
  return run_dense<S, X>(a, FGBG_CALL(loss, ));
}

template <typename S, typename X = S>
double sigmoid_focal(const DenseArgs& a, double alpha, double gamma) {
  const fgbg::SigmoidFocalLoss<S> loss({static_cast<S>(alpha), static_cast<S>(gamma)});
  return run_dense<S, X>(a, FGBG_CALL(loss, ));
}

/// FL* (RetinaNet appendix; fvcore's sigmoid_focal_loss_star).
template <typename S, typename X = S>
double focal_star(const DenseArgs& a, double alpha, double gamma) {
  fgbg::FocalLossStarConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma = static_cast<S>(gamma);
  const fgbg::FocalLossStar<S> loss(cfg);
  return run_dense<S, X>(a, FGBG_CALL(loss, ));
}

template <typename S, typename X = S>
double softmax_ce(const DenseArgs& a) {
  const fgbg::SoftmaxCrossEntropyLoss<S> loss;
  return run_dense<S, X, false>(a, FGBG_CALL(loss, ));
}

template <typename S, typename X = S>
double softmax_focal(const DenseArgs& a, double alpha, double gamma) {
  const fgbg::SoftmaxFocalLoss<S> loss({static_cast<S>(alpha), static_cast<S>(gamma)});
  return run_dense<S, X, false>(a, FGBG_CALL(loss, ));
}

template <typename S, typename X = S>
double quality_focal(const DenseArgs& a, const View& quality, double beta) {
  fgbg::QualityFocalLossConfig<S> cfg;
  cfg.beta = static_cast<S>(beta);
  const fgbg::QualityFocalLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(quality);
  return run_dense<S, X>(a, FGBG_CALL(loss, q, ));
}

template <typename S, typename X = S>
double varifocal(const DenseArgs& a, const View& quality, double alpha, double gamma,
                 bool iou_weighted, double min_quality) {
  fgbg::VarifocalLossConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma = static_cast<S>(gamma);
  cfg.iou_weighted = iou_weighted;
  cfg.min_quality = static_cast<S>(min_quality);
  const fgbg::VarifocalLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(quality);
  return run_dense<S, X>(a, FGBG_CALL(loss, q, ));
}

template <typename S, typename X = S>
double soft_target_ce(const DenseArgs& a, const View& targets) {
  const fgbg::SoftTargetCrossEntropyLoss<S> loss;
  const InVec<S> t = in_vec<S>(targets);
  return run_dense<S, X>(a, FGBG_CALL(loss, t, ));
}

template <typename S, typename X = S>
double dense_target_focal(const DenseArgs& a, const View& targets, double alpha, double gamma) {
  fgbg::DenseTargetFocalLossConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma = static_cast<S>(gamma);
  const fgbg::DenseTargetFocalLoss<S> loss(cfg);
  const In2<S> t = in2<S>(targets);
  return run_dense<S, X>(a, FGBG_CALL(loss, t, ));
}

using GroupMap =
    Eigen::Map<const Eigen::Array<std::int64_t, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;

/// The ranking workspace of this thread, reused by every AP, RS and aLRP call: it grows to the
/// largest problem seen (O(P) plus 4 bytes per relevant negative entry, 32 MB at 100k × 80) and
/// then a call allocates nothing. Without it each call allocated and page-faulted that buffer
/// again (about 10% of a Rank & Sort call at 100k × 80).
fgbg::RankingWorkspace& ranking_workspace() {
  thread_local fgbg::RankingWorkspace ws;
  return ws;
}

/// Runs `f(x, labels, g, [groups], [workspace])` with or without fgbg::groups(ids) and (kWs) the
/// thread's ranking workspace, GIL released; `g` points to the gradient map or is nullptr (value
/// only). X: the logits' and gradient's type (S, or a half type for the losses that take one).
template <typename S, typename X = S, bool kWs = false, typename F>
auto run_ranking(const View& xv, const View& lv, const std::optional<View>& gv,
                 const std::optional<View>& ids, F&& f) {
  const In2<X> x = in2<X>(xv);
  const LabelMap labels = labels_of(lv);
  auto with_groups = [&](auto g) {
    if (ids) {
      const auto& [p, r, c, rs, cs] = *ids;
      (void)c;
      (void)cs;
      const GroupMap gm(reinterpret_cast<const std::int64_t*>(p), r, Eigen::InnerStride<>(rs));
      if constexpr (kWs)
        return f(x, labels, g, fgbg::groups(gm), ranking_workspace());
      else
        return f(x, labels, g, fgbg::groups(gm));
    }
    if constexpr (kWs)
      return f(x, labels, g, ranking_workspace());
    else
      return f(x, labels, g);
  };
  py::gil_scoped_release release;
  if (gv) {
    Out2<X> g = out2<X>(*gv);
    return with_groups(&g);
  }
  return with_groups(nullptr);
}

/// `value(x, y, inputs..., rest...)` or `value_and_grad(x, y, inputs..., *g, rest...)`, as
/// FGBG_CALL for the ranking losses. `rest` (the groups, the workspace) is taken by reference: a
/// copy of the workspace cost its 32 MB (and the page faults) on every call at 100k × 80.
#define FGBG_RANK_CALL(loss, ...)                                     \
  [&](const auto& x_, const auto& y_, auto g_, auto&&... rest_) {     \
    if constexpr (std::is_null_pointer_v<decltype(g_)>)               \
      return loss.value(x_, y_, __VA_ARGS__ rest_...);                \
    else                                                              \
      return loss.value_and_grad(x_, y_, __VA_ARGS__ * g_, rest_...); \
  }

/// AP loss: the value; `grad` receives the error-driven update.
template <typename S>
double ap_loss(const View& x, const View& labels, const std::optional<View>& grad,
               const std::optional<View>& ids, double delta, bool interpolate) {
  fgbg::APLossConfig cfg;
  cfg.delta = delta;
  cfg.interpolate = interpolate;
  const fgbg::APLoss<S> loss(cfg);
  return static_cast<double>(run_ranking<S, S, true>(x, labels, grad, ids, FGBG_RANK_CALL(loss, )));
}

/// Rank & Sort loss: (loss_rank, loss_sort); `grad` receives the error-driven update.
template <typename S>
std::tuple<double, double> rank_sort_loss(const View& x, const View& labels, const View& iou,
                                          const std::optional<View>& grad,
                                          const std::optional<View>& ids, double delta,
                                          double eps) {
  fgbg::RankSortLossConfig cfg;
  cfg.delta = delta;
  cfg.eps = eps;
  const fgbg::RankSortLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(iou);
  const auto v = run_ranking<S, S, true>(x, labels, grad, ids, FGBG_RANK_CALL(loss, q, ));
  return {static_cast<double>(v.rank), static_cast<double>(v.sort)};
}

/// aLRP loss: (cls, loc); `grad` receives the classification update, `grad_loc` ∂loc/∂ℓ.
template <typename S>
std::tuple<double, double> alrp_loss(const View& x, const View& labels, const View& loc_error,
                                     const std::optional<View>& grad,
                                     const std::optional<View>& grad_loc,
                                     const std::optional<View>& ids, double delta, double eps) {
  if (grad.has_value() != grad_loc.has_value())
    throw std::invalid_argument("fgbg::ALRPLoss: the binding takes both gradients or neither");
  fgbg::ALRPLossConfig cfg;
  cfg.delta = delta;
  cfg.eps = eps;
  const fgbg::ALRPLoss<S> loss(cfg);
  const InVec<S> l = in_vec<S>(loc_error);
  S* glp = nullptr;
  Index gln = 0;
  if (grad_loc) {
    const auto& [gp, gr, gc, grs, gcs] = *grad_loc;
    (void)gc;
    (void)grs;
    (void)gcs;
    glp = reinterpret_cast<S*>(gp);
    gln = gr;
  }
  OutVec<S> gl(glp, gln);
  const auto v = run_ranking<S, S, true>(x, labels, grad, ids,
                                         [&](const auto& xx, const auto& yy, auto gg, auto&&... g) {
                                           if constexpr (std::is_null_pointer_v<decltype(gg)>)
                                             return loss.value(xx, yy, l, g...);
                                           else
                                             return loss.value_and_grad(xx, yy, l, *gg, gl, g...);
                                         });
  return {static_cast<double>(v.cls), static_cast<double>(v.loc)};
}

/// DR loss: the value and its true gradient. X may be a half type (DR takes fp16 / bf16 logits).
template <typename S, typename X = S>
double dr_loss(const View& x, const View& labels, const std::optional<View>& grad,
               const std::optional<View>& ids, double pos_lambda, double neg_lambda, double L,
               double tau, double margin) {
  fgbg::DRLossConfig<S> cfg;
  cfg.pos_lambda = static_cast<S>(pos_lambda);
  cfg.neg_lambda = static_cast<S>(neg_lambda);
  cfg.L = static_cast<S>(L);
  cfg.tau = static_cast<S>(tau);
  cfg.margin = static_cast<S>(margin);
  const fgbg::DRLoss<S> loss(cfg);
  return static_cast<double>(run_ranking<S, X>(x, labels, grad, ids, FGBG_RANK_CALL(loss, )));
}

/// CARL (PISA): the value; `grad` (N × cols) receives ∂L/∂logits and `grad_reg` (N) ∂L/∂reg_loss.
/// Both empty: value only. Float and double logits only (CARL takes no half precision).
template <typename S>
double carl(const View& xv, const View& lv, const View& rv, const std::optional<View>& gv,
            const std::optional<View>& grv, double k, double bias, bool sigmoid, int norm_kind,
            double norm_factor) {
  fgbg::CarlLossConfig<S> cfg;
  cfg.k = static_cast<S>(k);
  cfg.bias = static_cast<S>(bias);
  cfg.sigmoid = sigmoid;
  const fgbg::CarlLoss<S> loss(cfg);
  const In2<S> x = in2<S>(xv);
  const LabelMap labels = labels_of(lv);
  const InVec<S> reg = in_vec<S>(rv);
  const fgbg::Normalizer norm = normalizer_of(norm_kind, norm_factor);
  py::gil_scoped_release release;
  if (gv && grv) {
    Out2<S> g = out2<S>(*gv);
    const auto& [p, r, c, rs, cs] = *grv;
    (void)c;
    (void)rs;
    (void)cs;
    OutVec<S> gr(reinterpret_cast<S*>(p), r);
    return static_cast<double>(loss.value_and_grad(x, labels, reg, g, gr, norm));
  }
  return static_cast<double>(loss.value(x, labels, reg, norm));
}

/// The sampling-free guided loss over BCE (`softmax` false) or softmax CE: (value, w, L_cls);
/// `grad` empty: value only. Float and double logits only.
template <typename S, typename Inner>
std::tuple<double, double, double> guided_impl(const DenseArgs& a, double reg_loss, double scale,
                                               bool ignored_as_negative) {
  fgbg::GuidedLossConfig cfg;
  cfg.classification_scale = scale;
  cfg.treat_ignored_as_negative = ignored_as_negative;
  const fgbg::GuidedLoss<Inner> loss(Inner(), cfg);
  const In2<S> x = in2<S>(a.x);
  const LabelMap labels = labels_of(a.labels);
  const fgbg::Weights<S> w = weights_of<S>(a.weights);
  const fgbg::Normalizer norm = normalizer_of(a.norm_kind, a.norm_factor);
  fgbg::GuidedLossResult r;
  {
    py::gil_scoped_release release;
    if (a.grad) {
      Out2<S> g = out2<S>(*a.grad);
      r = loss.value_and_grad(x, labels, reg_loss, g, w, norm);
    } else {
      r = loss.value(x, labels, reg_loss, w, norm);
    }
  }
  return {r.value, r.weight, r.cls_loss};
}

template <typename S>
std::tuple<double, double, double> guided(const DenseArgs& a, double reg_loss, double scale,
                                          bool ignored_as_negative, bool softmax) {
  if (softmax)
    return guided_impl<S, fgbg::SoftmaxCrossEntropyLoss<S>>(a, reg_loss, scale,
                                                            ignored_as_negative);
  return guided_impl<S, fgbg::SigmoidCrossEntropyLoss<S>>(a, reg_loss, scale, ignored_as_negative);
}

using GtMap =
    Eigen::Map<const Eigen::Array<std::int64_t, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;
GtMap gt_of(const View& v) {
  const auto& [p, r, c, rs, cs] = v;
  (void)c;
  (void)cs;
  return GtMap(reinterpret_cast<const std::int64_t*>(p), r, Eigen::InnerStride<>(rs));
}

/// ISR-P (PISA): writes the new label weights (N) into `out`; returns (P, n_max, ratio,
/// guarded).
template <typename S>
std::tuple<long long, long long, double, bool> isr_p(const View& lv, const View& gv, const View& iv,
                                                     const View& cv, const std::optional<View>& wv,
                                                     Index num_classes, const View& ov, double k,
                                                     double bias) {
  fgbg::IsrPConfig<S> cfg;
  cfg.k = static_cast<S>(k);
  cfg.bias = static_cast<S>(bias);
  const fgbg::IsrP<S> isr(cfg);
  const LabelMap labels = labels_of(lv);
  const GtMap gt = gt_of(gv);
  const InVec<S> iou = in_vec<S>(iv);
  const InVec<S> cls = in_vec<S>(cv);
  const auto& [p, r, c, rs, cs] = ov;
  (void)c;
  (void)rs;
  (void)cs;
  OutVec<S> out(reinterpret_cast<S*>(p), r);
  fgbg::IsrPResult res;
  {
    py::gil_scoped_release release;
    if (wv)
      res = isr.weights(labels, gt, iou, cls, in_vec<S>(*wv), num_classes, out);
    else
      res = isr.weights(labels, gt, iou, cls, num_classes, out);
  }
  return {static_cast<long long>(res.positives), static_cast<long long>(res.max_class_positives),
          res.ratio, res.guarded};
}

/// Optimal bias initialisation and the class-adaptive thresholds of the sampling-free mechanism,
/// from the labels of one or more assignments (N, fgbg's labels): (num_fg, num_bg, num_ignored,
/// per-class counts).
std::tuple<long long, long long, long long, std::vector<long long>> anchor_statistics(
    const View& lv, Index num_classes) {
  fgbg::AnchorStatistics st(num_classes);
  st.add(labels_of(lv));
  std::vector<long long> per(static_cast<std::size_t>(num_classes));
  for (Index k = 0; k < num_classes; ++k) per[k] = st.num_fg_of(k + 1);
  return {st.num_fg(), st.num_bg(), st.num_ignored(), per};
}

/// The class-adaptive thresholds τ_k = max(floor, f_k (C + 1)) from counts (the sampling-free
/// mechanism's per-class variant).
std::vector<double> per_class_thresholds(const std::vector<std::int64_t>& per_class,
                                         std::int64_t num_fg, std::int64_t num_bg,
                                         std::int64_t num_ignored, double floor) {
  fgbg::AnchorStatistics st(1);
  st.restore({per_class, num_fg, num_bg, num_ignored});
  Eigen::ArrayXd thr(st.num_classes());
  fgbg::per_class_score_thresholds(st, thr, floor);
  return std::vector<double>(thr.data(), thr.data() + thr.size());
}

/// A copy of `v` as a NumPy array (torch.from_numpy takes it without a copy).
template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
  return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
}

/// The class-adaptive selection: every (anchor, class) with scores(anchor, class−1) >
/// thresholds(class−1), anchor-major or by score descending: (anchors, labels 1..C, scores).
template <typename S>
std::tuple<py::array_t<Index>, py::array_t<std::int64_t>, py::array_t<S>> select_above(
    const View& sv, const View& tv, bool score_descending) {
  std::vector<fgbg::ScoredCandidate<S>> out;
  {
    const In2<S> scores = in2<S>(sv);
    const InVec<double> thr = in_vec<double>(tv);
    py::gil_scoped_release release;
    fgbg::select_above_thresholds(scores, thr, out,
                                  score_descending ? fgbg::CandidateOrder::score_descending
                                                   : fgbg::CandidateOrder::anchor_major);
  }
  std::vector<Index> anchors(out.size());
  std::vector<std::int64_t> labels(out.size());
  std::vector<S> values(out.size());
  for (std::size_t k = 0; k < out.size(); ++k) {
    anchors[k] = out[k].anchor;
    labels[k] = out[k].label;
    values[k] = out[k].score;
  }
  return {to_array(anchors), to_array(labels), to_array(values)};
}

/// Max-IoU assignment of one image: (labels, gt index, max IoU), each N long.
template <typename S>
std::tuple<py::array_t<fgbg::Label>, py::array_t<std::int32_t>, py::array_t<double>> max_iou_assign(
    const View& boxes, const View& gts, const View& gt_labels, double pos_iou_thr,
    double neg_iou_thr, double neg_iou_lo, double min_pos_iou, bool match_low_quality,
    bool gt_max_assign_all, bool low_quality_zero_iou) {
  fgbg::MaxIouAssignerConfig cfg{pos_iou_thr,         neg_iou_thr,       neg_iou_lo,
                                 min_pos_iou,         match_low_quality, gt_max_assign_all,
                                 low_quality_zero_iou};
  const fgbg::MaxIouAssigner assigner(cfg);
  fgbg::Assignment a;
  {
    const In2<S> b = in2<S>(boxes);
    const In2<S> g = in2<S>(gts);
    const LabelMap gl = labels_of(gt_labels);
    py::gil_scoped_release release;
    assigner.assign(b, g, gl, a);
  }
  return {to_array(a.label_storage), to_array(a.gt_storage), to_array(a.iou_storage)};
}

fgbg::SamplerConfig sampler_config(Index num, double pos_fraction, double neg_pos_ub, bool sorted) {
  fgbg::SamplerConfig cfg;
  cfg.num = num;
  cfg.pos_fraction = pos_fraction;
  cfg.neg_pos_ub = neg_pos_ub;
  cfg.sorted = sorted;
  return cfg;
}

/// Biased mini-batch sampling with std::mt19937_64(seed): (positive, negative) indices.
std::tuple<py::array_t<Index>, py::array_t<Index>> random_sample(const View& labels, Index num,
                                                                 double pos_fraction,
                                                                 double neg_pos_ub, bool sorted,
                                                                 std::uint64_t seed) {
  const fgbg::RandomSampler sampler(sampler_config(num, pos_fraction, neg_pos_ub, sorted));
  std::mt19937_64 rng(seed);
  fgbg::Sample out;
  sampler.sample(labels_of(labels), rng, out);
  return {to_array(out.positives), to_array(out.negatives)};
}

/// OHEM (mmdetection mode) by per-candidate losses: (positive, negative) indices.
std::tuple<py::array_t<Index>, py::array_t<Index>> ohem_sample(const View& labels,
                                                               const View& losses, Index num,
                                                               double pos_fraction,
                                                               double neg_pos_ub, bool sorted) {
  const fgbg::OhemSampler sampler(sampler_config(num, pos_fraction, neg_pos_ub, sorted));
  fgbg::Sample out;
  sampler.sample(labels_of(labels), in_vec<double>(losses), out);
  return {to_array(out.positives), to_array(out.negatives)};
}

using Blob = std::vector<std::uint8_t>;

/// SSD hard negative mining of one image: every positive and the neg_pos_ratio · P negatives of
/// largest loss: (positive, negative) indices.
std::tuple<py::array_t<Index>, py::array_t<Index>> ssd_mine(const View& labels, const View& losses,
                                                            double neg_pos_ratio, bool sorted) {
  const fgbg::SsdHardNegativeMining miner({neg_pos_ratio, sorted});
  fgbg::Sample out;
  miner.sample(labels_of(labels), in_vec<double>(losses), out);
  return {to_array(out.positives), to_array(out.negatives)};
}

/// Instance-balanced positives (Libra R-CNN) + random negatives, std::mt19937_64(seed).
std::tuple<py::array_t<Index>, py::array_t<Index>> instance_balanced_sample(
    const View& labels, const View& gt_index, Index num, double pos_fraction, double neg_pos_ub,
    bool sorted, bool faithful, std::uint64_t seed) {
  fgbg::InstanceBalancedSamplerConfig cfg;
  cfg.batch = sampler_config(num, pos_fraction, neg_pos_ub, sorted);
  cfg.mode = faithful ? fgbg::InstanceBalanceMode::faithful : fgbg::InstanceBalanceMode::clean;
  const fgbg::InstanceBalancedSampler sampler(cfg);
  std::mt19937_64 rng(seed);
  fgbg::Sample out;
  sampler.sample(labels_of(labels), gt_of(gt_index), rng, out);
  return {to_array(out.positives), to_array(out.negatives)};
}

/// IoU-balanced negatives (Libra R-CNN) with instance-balanced or random positives,
/// std::mt19937_64(seed). `blob`: the faithful mode's IouBalancedState (empty in clean mode).
/// Returns (positives, negatives, new state blob or empty).
std::tuple<py::array_t<Index>, py::array_t<Index>, py::bytes> iou_balanced_sample(
    const View& labels, const View& gt_index, const View& max_iou, Index num, double pos_fraction,
    double neg_pos_ub, bool sorted, double floor_thr, double floor_fraction, Index num_bins,
    bool faithful, int range_upper, double fixed_upper, bool instance_balanced_positives,
    bool positive_faithful, std::uint64_t seed, const std::string& blob) {
  fgbg::IouBalancedSamplerConfig cfg;
  cfg.batch = sampler_config(num, pos_fraction, neg_pos_ub, sorted);
  cfg.floor_thr = floor_thr;
  cfg.floor_fraction = floor_fraction;
  cfg.num_bins = num_bins;
  cfg.mode = faithful ? fgbg::IouBalanceMode::faithful : fgbg::IouBalanceMode::clean;
  if (range_upper < 0 || range_upper > 2)
    throw std::invalid_argument("fgbg: unknown range_upper " + std::to_string(range_upper));
  cfg.range_upper = static_cast<fgbg::IouRangeUpper>(range_upper);
  cfg.fixed_upper = fixed_upper;
  cfg.instance_balanced_positives = instance_balanced_positives;
  cfg.positive_mode =
      positive_faithful ? fgbg::InstanceBalanceMode::faithful : fgbg::InstanceBalanceMode::clean;
  const fgbg::IouBalancedSampler sampler(cfg);
  fgbg::IouBalancedState state = sampler.initial_state();
  if (faithful && !blob.empty()) state.load(Blob(blob.begin(), blob.end()));
  std::mt19937_64 rng(seed);
  fgbg::Sample out;
  sampler.sample(labels_of(labels), gt_of(gt_index), in_vec<double>(max_iou), rng, out,
                 faithful ? &state : nullptr);
  if (!faithful) return {to_array(out.positives), to_array(out.negatives), py::bytes()};
  const Blob b = state.save();
  return {to_array(out.positives), to_array(out.negatives),
          py::bytes(reinterpret_cast<const char*>(b.data()), b.size())};
}

/// ISR-N (PISA's Score-HLR sampler) of one image, std::mt19937_64(seed): (positives, negatives
/// in rank order then the random ones, the negatives' weights, (valid, ranked, random, ratio)).
template <typename S>
std::tuple<py::array_t<Index>, py::array_t<Index>, py::array_t<double>,
           std::tuple<long long, long long, long long, double>>
score_hlr_sample(const View& labels, const View& logits, const View& boxes, Index num,
                 double pos_fraction, double neg_pos_ub, double k, double bias, double score_thr,
                 double iou_thr, std::uint64_t seed) {
  fgbg::ScoreHlrSamplerConfig cfg;
  cfg.num = num;
  cfg.pos_fraction = pos_fraction;
  cfg.neg_pos_ub = neg_pos_ub;
  cfg.k = k;
  cfg.bias = bias;
  cfg.score_thr = score_thr;
  cfg.iou_thr = iou_thr;
  const fgbg::ScoreHlrSampler<S> sampler(cfg);
  fgbg::ScoreHlrWorkspace<S> ws;
  std::mt19937_64 rng(seed);
  fgbg::Sample out;
  fgbg::ScoreHlrResult r;
  {
    const LabelMap y = labels_of(labels);
    const In2<S> x = in2<S>(logits);
    const In2<S> b = in2<S>(boxes);
    py::gil_scoped_release release;
    r = sampler.sample(y, x, b, rng, out, ws);
  }
  return {to_array(out.positives),
          to_array(out.negatives),
          to_array(out.negative_weights),
          {static_cast<long long>(r.valid), static_cast<long long>(r.ranked),
           static_cast<long long>(r.random), r.ratio}};
}

/// A fresh faithful-mode IoU-balanced state with floor threshold τ.
py::bytes iou_balanced_new_state(double floor_thr) {
  const Blob b = fgbg::IouBalancedState(floor_thr).save();
  return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
}

/// The faithful-mode state's floor threshold.
double iou_balanced_inspect(const std::string& blob) {
  fgbg::IouBalancedState s;
  s.load(Blob(blob.begin(), blob.end()));
  return s.floor_thr();
}

/// EFL: (value, new state blob, statistics buffer or empty). With `reduce`, this worker's batch
/// sums go to the returned buffer and the state is not committed (commit with efl_commit).
template <typename S, typename X = S>
std::tuple<double, py::bytes, std::vector<double>> equalized_focal(const DenseArgs& a,
                                                                   const std::string& blob,
                                                                   double alpha, double gamma_b,
                                                                   double scale, double decay,
                                                                   bool reduce) {
  fgbg::EqualizedFocalLossConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma_b = static_cast<S>(gamma_b);
  cfg.scale = static_cast<S>(scale);
  cfg.decay = decay;
  const fgbg::EqualizedFocalLoss<S> loss(cfg);
  fgbg::EqualizedFocalState state;
  state.load(Blob(blob.begin(), blob.end()));
  fgbg::ReduceBuffer buffer;
  double v;
  if (!a.grad)
    throw std::invalid_argument("fgbg::EqualizedFocalLoss: the binding needs a gradient");
  auto call = [&](const auto& x, const auto& y, auto g, const auto& w, const auto& n,
                  auto... sink) -> double {
    if constexpr (std::is_null_pointer_v<decltype(g)>) {
      return 0.0;  // not reached: checked above
    } else {
      if (reduce) return loss.value_and_grad(x, y, *g, state, w, n, buffer, sink...);
      return loss.value_and_grad(x, y, *g, state, w, n, sink...);
    }
  };
  v = run_dense<S, X>(a, call);
  const Blob out = state.save();
  return {v, py::bytes(reinterpret_cast<const char*>(out.data()), out.size()),
          std::vector<double>(buffer.data(), buffer.data() + buffer.size())};
}

/// Commits an all-reduced EFL statistics buffer into the state; returns the new blob.
py::bytes efl_commit(const std::string& blob, const std::vector<double>& reduced, double alpha,
                     double gamma_b, double scale, double decay) {
  fgbg::EqualizedFocalLossConfig<double> cfg;
  cfg.alpha = alpha;
  cfg.gamma_b = gamma_b;
  cfg.scale = scale;
  cfg.decay = decay;
  const fgbg::EqualizedFocalLoss<double> loss(cfg);
  fgbg::EqualizedFocalState state;
  state.load(Blob(blob.begin(), blob.end()));
  fgbg::ReduceBuffer b = fgbg::ReduceBuffer::make(
      fgbg::StateMethod::equalized_focal, fgbg::EqualizedFocalState::kReduceVersion,
      loss.header(state.num_classes()), 2 * static_cast<std::size_t>(state.num_classes()));
  if (reduced.size() != b.size())
    throw std::invalid_argument("fgbg::EqualizedFocalState: reduced buffer has " +
                                std::to_string(reduced.size()) + " entries, expected " +
                                std::to_string(b.size()));
  std::memcpy(b.data(), reduced.data(), reduced.size() * sizeof(double));
  state.commit(b);
  const Blob out = state.save();
  return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

py::bytes efl_new_state(Index classes) {
  const Blob out = fgbg::EqualizedFocalState(classes).save();
  return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

/// The EFL state's fields: (G+, G-, g, updates).
std::tuple<std::vector<double>, std::vector<double>, std::vector<double>, long long> efl_inspect(
    const std::string& blob) {
  fgbg::EqualizedFocalState state;
  state.load(Blob(blob.begin(), blob.end()));
  const auto s = state.snapshot();
  return {s.pos, s.neg, s.ratio, s.updates};
}

fgbg::GhmcLossConfig ghmc_config(int bins, double momentum, bool paper_division) {
  fgbg::GhmcLossConfig cfg;
  cfg.bins = bins;
  cfg.momentum = momentum;
  cfg.division = paper_division ? fgbg::GhmcDivision::bins : fgbg::GhmcDivision::nonempty_bins;
  return cfg;
}

/// GHM-C: (value, new state blob). `blob` empty: no state (momentum 0 only). `reduced`: the
/// all-reduced statistics of ghmc_statistics, or empty.
template <typename S, typename X = S>
std::tuple<double, py::bytes> ghmc(const View& xv, const View& lv, const View& gv,
                                   const std::optional<View>& wv, const std::string& blob, int bins,
                                   double momentum, bool paper_division,
                                   const std::vector<double>& reduced) {
  const fgbg::GhmcLoss<S> loss(ghmc_config(bins, momentum, paper_division));
  const In2<X> x = in2<X>(xv);
  const LabelMap labels = labels_of(lv);
  Out2<X> grad = out2<X>(gv);
  const fgbg::Weights<S> w = weights_of<S>(wv);
  fgbg::GhmcState state(bins);
  const bool stateful = !blob.empty();
  if (stateful) state.load(Blob(blob.begin(), blob.end()));
  fgbg::ReduceBuffer b;
  if (!reduced.empty()) {
    b = fgbg::ReduceBuffer::make(
        fgbg::StateMethod::ghm_c, fgbg::GhmcLoss<S>::kReduceVersion,
        {static_cast<std::uint64_t>(bins), fgbg::double_bits(momentum),
         static_cast<std::uint64_t>(paper_division ? fgbg::GhmcDivision::bins
                                                   : fgbg::GhmcDivision::nonempty_bins)},
        static_cast<std::size_t>(bins) + 1);
    if (reduced.size() != b.size())
      throw std::invalid_argument("fgbg::GhmcLoss: reduced buffer has " +
                                  std::to_string(reduced.size()) + " entries, expected " +
                                  std::to_string(b.size()));
    std::memcpy(b.data(), reduced.data(), reduced.size() * sizeof(double));
  }
  double v;
  {
    py::gil_scoped_release release;
    if (stateful && !reduced.empty())
      v = loss.value_and_grad(x, labels, grad, state, w, b);
    else if (stateful)
      v = loss.value_and_grad(x, labels, grad, state, w);
    else if (!reduced.empty())
      v = loss.value_and_grad(x, labels, grad, w, b);
    else
      v = loss.value_and_grad(x, labels, grad, w);
  }
  if (!stateful) return {v, py::bytes()};
  const Blob out = state.save();
  return {v, py::bytes(reinterpret_cast<const char*>(out.data()), out.size())};
}

/// This worker's GHM-C histogram as a flat buffer to all-reduce (SUM).
template <typename S, typename X = S>
std::vector<double> ghmc_statistics(const View& xv, const View& lv, const std::optional<View>& wv,
                                    int bins, double momentum, bool paper_division) {
  const fgbg::GhmcLoss<S> loss(ghmc_config(bins, momentum, paper_division));
  const fgbg::ReduceBuffer b = loss.batch_statistics(in2<X>(xv), labels_of(lv), weights_of<S>(wv));
  return std::vector<double>(b.data(), b.data() + b.size());
}

py::bytes ghmc_new_state(int bins) {
  const Blob out = fgbg::GhmcState(bins).save();
  return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

/// The GHM-C state's fields: (moving S_k, last R_k, last n, last tot).
std::tuple<std::vector<double>, std::vector<long long>, long long, double> ghmc_inspect(
    const std::string& blob) {
  fgbg::GhmcState state;
  state.load(Blob(blob.begin(), blob.end()));
  const auto s = state.snapshot();
  return {s.moving, std::vector<long long>(s.counts.begin(), s.counts.end()),
          static_cast<long long>(s.nonempty), s.tot};
}

fgbg::ResidualObjectnessConfig resobj_config(double a_obj, double a_cls, double a_box, double mu,
                                             double e0, bool one_per_call) {
  fgbg::ResidualObjectnessConfig cfg;
  cfg.obj_normalizer_scale = a_obj;
  cfg.cls_normalizer_scale = a_cls;
  cfg.box_normalizer_scale = a_box;
  cfg.ema_momentum = mu;
  cfg.ema_initial = e0;
  cfg.ema_updates =
      one_per_call ? fgbg::EmaUpdates::one_per_call : fgbg::EmaUpdates::three_per_call;
  return cfg;
}

/// Residual objectness: class logits z (N × C), labels, stage logits s (N × K), gradients of both
/// (both empty: value() with the state as it is), the state blob and, optionally, the summed
/// statistics of residual_objectness_statistics. Returns (loss, obj_loss, cls_loss,
/// obj_normalizer, cls_normalizer, box_normalizer, positives, valid, new state blob). X: the
/// logits' and gradients' type (S or a half type, computed in float).
template <typename S, typename X = S>
std::tuple<double, double, double, double, double, double, long long, long long, py::bytes>
residual_objectness(const View& zv, const View& lv, const View& sv, const std::optional<View>& gzv,
                    const std::optional<View>& gsv, const std::string& blob, double a_obj,
                    double a_cls, double a_box, double mu, double e0, bool one_per_call,
                    const std::vector<double>& reduced) {
  const fgbg::ResidualObjectnessLoss<S> loss(
      resobj_config(a_obj, a_cls, a_box, mu, e0, one_per_call));
  const In2<X> z = in2<X>(zv);
  const In2<X> st = in2<X>(sv);
  const LabelMap labels = labels_of(lv);
  fgbg::ResidualObjectnessState state;
  state.load(Blob(blob.begin(), blob.end()));
  fgbg::ReduceBuffer b;
  if (!reduced.empty()) {
    b = loss.batch_statistics(labels, z.cols());  // this rank's buffer: its shape and header
    if (reduced.size() != b.size())
      throw std::invalid_argument("fgbg::ResidualObjectnessLoss: reduced buffer has " +
                                  std::to_string(reduced.size()) + " entries, expected " +
                                  std::to_string(b.size()));
    std::memcpy(b.data(), reduced.data(), reduced.size() * sizeof(double));
  }
  fgbg::ResidualObjectnessResult r;
  {
    py::gil_scoped_release release;
    if (gzv && gsv) {
      Out2<X> gz = out2<X>(*gzv);
      Out2<X> gs = out2<X>(*gsv);
      r = reduced.empty() ? loss.value_and_grad(z, labels, st, gz, gs, state)
                          : loss.value_and_grad(z, labels, st, gz, gs, state, b);
    } else {
      const fgbg::ResidualObjectnessState& cs = state;
      r = reduced.empty() ? loss.value(z, labels, st, cs) : loss.value(z, labels, st, cs, b);
    }
  }
  const Blob out = state.save();
  return {r.loss,
          r.obj_loss,
          r.cls_loss,
          r.obj_normalizer,
          r.cls_normalizer,
          r.box_normalizer,
          static_cast<long long>(r.num_positives),
          static_cast<long long>(r.num_valid),
          py::bytes(reinterpret_cast<const char*>(out.data()), out.size())};
}

/// This worker's residual-objectness counts as a flat buffer to all-reduce (SUM).
std::vector<double> residual_objectness_statistics(const View& lv, Index classes, double a_obj,
                                                   double a_cls, double a_box, double mu, double e0,
                                                   bool one_per_call) {
  const fgbg::ResidualObjectnessLoss<double> loss(
      resobj_config(a_obj, a_cls, a_box, mu, e0, one_per_call));
  const fgbg::ReduceBuffer b = loss.batch_statistics(labels_of(lv), classes);
  return std::vector<double>(b.data(), b.data() + b.size());
}

py::bytes resobj_new_state() {
  const Blob out = fgbg::ResidualObjectnessState().save();
  return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

/// The residual-objectness state's fields: (E, started, calls).
std::tuple<double, bool, long long> resobj_inspect(const std::string& blob) {
  fgbg::ResidualObjectnessState s;
  s.load(Blob(blob.begin(), blob.end()));
  return {s.num_pos_ema(), s.started(), static_cast<long long>(s.calls())};
}

/// Inference scores σ(Σ_k s_k)·σ(z) into `out` (N × C).
template <typename S>
void resobj_scores(const View& sv, const View& zv, const View& ov) {
  Out2<S> out = out2<S>(ov);
  fgbg::residual_objectness_scores(in2<S>(sv), in2<S>(zv), out);
}

/// Binds `name_f32` / `name_f64` for the two scalar types.
template <typename F32, typename F64>
void def2(py::module_& m, const char* name, F32 f32, F64 f64) {
  m.def((std::string(name) + "_f32").c_str(), f32);
  m.def((std::string(name) + "_f64").c_str(), f64);
}

/// Binds `name_f32` / `name_f64` and the half-precision logits `name_f16` / `name_bf16`
/// (computed in float, logits and gradient read and written in their 16-bit type).
#define FGBG_DEF4(m, name, fn)                        \
  do {                                                \
    def2(m, name, &fn<float>, &fn<double>);           \
    m.def(name "_f16", &fn<float, Eigen::half>);      \
    m.def(name "_bf16", &fn<float, Eigen::bfloat16>); \
  } while (0)

}  // namespace

PYBIND11_MODULE(_fgbg, m) {
  m.doc() = "fgbg's compiled losses; use the `fgbg` package, not this module.";
  static py::exception<std::domain_error> non_finite(m, "NonFiniteError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::domain_error& e) {
      PyErr_SetString(non_finite.ptr(), e.what());
    }
  });

  py::class_<DenseArgs>(m, "DenseArgs")
      .def(py::init<View, View, std::optional<View>, std::optional<View>, int, double, int,
                    std::optional<View>>(),
           py::arg("x"), py::arg("labels"), py::arg("grad"), py::arg("weights"),
           py::arg("norm_kind"), py::arg("norm_factor"), py::arg("losses_kind"), py::arg("losses"));

  FGBG_DEF4(m, "sigmoid_ce", sigmoid_ce);
  FGBG_DEF4(m, "sigmoid_focal", sigmoid_focal);
  FGBG_DEF4(m, "focal_star", focal_star);
  FGBG_DEF4(m, "softmax_ce", softmax_ce);
  FGBG_DEF4(m, "softmax_focal", softmax_focal);
  FGBG_DEF4(m, "quality_focal", quality_focal);
  FGBG_DEF4(m, "varifocal", varifocal);
  FGBG_DEF4(m, "soft_target_ce", soft_target_ce);
  FGBG_DEF4(m, "dense_target_focal", dense_target_focal);
  FGBG_DEF4(m, "equalized_focal", equalized_focal);
  m.def("efl_commit", &efl_commit);
  m.def("efl_new_state", &efl_new_state);
  m.def("efl_inspect", &efl_inspect);
  FGBG_DEF4(m, "ghmc", ghmc);
  FGBG_DEF4(m, "ghmc_statistics", ghmc_statistics);
  m.def("ghmc_new_state", &ghmc_new_state);
  m.def("ghmc_inspect", &ghmc_inspect);
  def2(m, "ap_loss", &ap_loss<float>, &ap_loss<double>);
  def2(m, "rank_sort_loss", &rank_sort_loss<float>, &rank_sort_loss<double>);
  FGBG_DEF4(m, "dr_loss", dr_loss);
  def2(m, "alrp_loss", &alrp_loss<float>, &alrp_loss<double>);
  def2(m, "carl", &carl<float>, &carl<double>);
  def2(m, "guided", &guided<float>, &guided<double>);
  def2(m, "isr_p", &isr_p<float>, &isr_p<double>);
  FGBG_DEF4(m, "residual_objectness", residual_objectness);
  m.def("residual_objectness_statistics", &residual_objectness_statistics);
  m.def("resobj_new_state", &resobj_new_state);
  m.def("resobj_inspect", &resobj_inspect);
  def2(m, "resobj_scores", &resobj_scores<float>, &resobj_scores<double>);
  m.def("anchor_statistics", &anchor_statistics);
  m.def("per_class_thresholds", &per_class_thresholds);
  def2(m, "select_above", &select_above<float>, &select_above<double>);
  m.def("optimal_sigmoid_prior", &fgbg::optimal_sigmoid_prior);
  m.def("optimal_sigmoid_bias", &fgbg::optimal_sigmoid_bias);
  m.def("optimal_softmax_background_bias", &fgbg::optimal_softmax_background_bias);
  m.def("released_score_threshold",
        py::overload_cast<std::int64_t, std::int64_t, Index>(&fgbg::released_score_threshold));
  def2(m, "max_iou_assign", &max_iou_assign<float>, &max_iou_assign<double>);
  m.def("random_sample", &random_sample);
  m.def("ohem_sample", &ohem_sample);
  m.def("ssd_mine", &ssd_mine);
  m.def("instance_balanced_sample", &instance_balanced_sample);
  m.def("iou_balanced_sample", &iou_balanced_sample);
  m.def("iou_balanced_new_state", &iou_balanced_new_state);
  def2(m, "score_hlr_sample", &score_hlr_sample<float>, &score_hlr_sample<double>);
  m.def("iou_balanced_inspect", &iou_balanced_inspect);
}
