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
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/core/core.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/ranking/alrp_loss.hpp>
#include <fgbg/ranking/ap_loss.hpp>
#include <fgbg/ranking/dr_loss.hpp>
#include <fgbg/ranking/rank_sort_loss.hpp>
#include <fgbg/soft_sampling/dense_target_focal_loss.hpp>
#include <fgbg/soft_sampling/equalized_focal_loss.hpp>
#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/quality_focal_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>
#include <fgbg/soft_sampling/soft_target_cross_entropy.hpp>
#include <fgbg/soft_sampling/softmax_cross_entropy.hpp>
#include <fgbg/soft_sampling/softmax_focal_loss.hpp>
#include <fgbg/soft_sampling/varifocal_loss.hpp>

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

/// Everything a dense call takes besides the loss's own inputs.
struct DenseArgs {
  View x, labels, grad;
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

/// Runs `f(x, labels, grad, weights, normalizer, sink...)` with the loss output the call asked
/// for appended (nothing, element_losses or anchor_losses), with the GIL released.
template <typename S, bool kElementLosses = true, typename F>
double run_dense(const DenseArgs& a, F&& f) {
  const In2<S> x = in2<S>(a.x);
  const LabelMap labels = labels_of(a.labels);
  Out2<S> grad = out2<S>(a.grad);
  const fgbg::Weights<S> w = weights_of<S>(a.weights);
  const fgbg::Normalizer norm = normalizer_of(a.norm_kind, a.norm_factor);
  py::gil_scoped_release release;
  if constexpr (kElementLosses) {
    if (a.losses_kind == 1) {
      Out2<S> e = out2<S>(*a.losses);
      return static_cast<double>(f(x, labels, grad, w, norm, fgbg::element_losses(e)));
    }
  } else {
    if (a.losses_kind == 1)
      throw std::invalid_argument("fgbg: a softmax head has one loss per anchor, not per element");
  }
  if (a.losses_kind == 2) {
    const auto& [p, r, c, rs, cs] = *a.losses;
    (void)c;
    (void)rs;
    (void)cs;
    OutVec<S> e(reinterpret_cast<S*>(p), r);
    return static_cast<double>(f(x, labels, grad, w, norm, fgbg::anchor_losses(e)));
  }
  return static_cast<double>(f(x, labels, grad, w, norm));
}

template <typename S>
double sigmoid_ce(const DenseArgs& a) {
  const fgbg::SigmoidCrossEntropyLoss<S> loss;
  return run_dense<S>(a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n,
                             auto... sink) { return loss.value_and_grad(x, y, g, w, n, sink...); });
}

template <typename S>
double sigmoid_focal(const DenseArgs& a, double alpha, double gamma) {
  const fgbg::SigmoidFocalLoss<S> loss({static_cast<S>(alpha), static_cast<S>(gamma)});
  return run_dense<S>(a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n,
                             auto... sink) { return loss.value_and_grad(x, y, g, w, n, sink...); });
}

template <typename S>
double softmax_ce(const DenseArgs& a) {
  const fgbg::SoftmaxCrossEntropyLoss<S> loss;
  return run_dense<S, false>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, g, w, n, sink...);
      });
}

template <typename S>
double softmax_focal(const DenseArgs& a, double alpha, double gamma) {
  const fgbg::SoftmaxFocalLoss<S> loss({static_cast<S>(alpha), static_cast<S>(gamma)});
  return run_dense<S, false>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, g, w, n, sink...);
      });
}

template <typename S>
double quality_focal(const DenseArgs& a, const View& quality, double beta) {
  fgbg::QualityFocalLossConfig<S> cfg;
  cfg.beta = static_cast<S>(beta);
  const fgbg::QualityFocalLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(quality);
  return run_dense<S>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, q, g, w, n, sink...);
      });
}

template <typename S>
double varifocal(const DenseArgs& a, const View& quality, double alpha, double gamma,
                 bool iou_weighted, double min_quality) {
  fgbg::VarifocalLossConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma = static_cast<S>(gamma);
  cfg.iou_weighted = iou_weighted;
  cfg.min_quality = static_cast<S>(min_quality);
  const fgbg::VarifocalLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(quality);
  return run_dense<S>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, q, g, w, n, sink...);
      });
}

template <typename S>
double soft_target_ce(const DenseArgs& a, const View& targets) {
  const fgbg::SoftTargetCrossEntropyLoss<S> loss;
  const InVec<S> t = in_vec<S>(targets);
  return run_dense<S>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, t, g, w, n, sink...);
      });
}

template <typename S>
double dense_target_focal(const DenseArgs& a, const View& targets, double alpha, double gamma) {
  fgbg::DenseTargetFocalLossConfig<S> cfg;
  cfg.alpha = static_cast<S>(alpha);
  cfg.gamma = static_cast<S>(gamma);
  const fgbg::DenseTargetFocalLoss<S> loss(cfg);
  const In2<S> t = in2<S>(targets);
  return run_dense<S>(
      a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
        return loss.value_and_grad(x, y, t, g, w, n, sink...);
      });
}

using GroupMap =
    Eigen::Map<const Eigen::Array<std::int64_t, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;

/// Runs `f(x, labels, grad, groups...)` with or without fgbg::groups(ids), GIL released.
template <typename S, typename F>
auto run_ranking(const View& xv, const View& lv, const View& gv, const std::optional<View>& ids,
                 F&& f) {
  const In2<S> x = in2<S>(xv);
  const LabelMap labels = labels_of(lv);
  Out2<S> grad = out2<S>(gv);
  py::gil_scoped_release release;
  if (ids) {
    const auto& [p, r, c, rs, cs] = *ids;
    (void)c;
    (void)cs;
    const GroupMap g(reinterpret_cast<const std::int64_t*>(p), r, Eigen::InnerStride<>(rs));
    return f(x, labels, grad, fgbg::groups(g));
  }
  return f(x, labels, grad);
}

/// AP loss: the value; `grad` receives the error-driven update.
template <typename S>
double ap_loss(const View& x, const View& labels, const View& grad, const std::optional<View>& ids,
               double delta, bool interpolate) {
  fgbg::APLossConfig cfg;
  cfg.delta = delta;
  cfg.interpolate = interpolate;
  const fgbg::APLoss<S> loss(cfg);
  return static_cast<double>(
      run_ranking<S>(x, labels, grad, ids, [&](auto&&... a) { return loss.value_and_grad(a...); }));
}

/// Rank & Sort loss: (loss_rank, loss_sort); `grad` receives the error-driven update.
template <typename S>
std::tuple<double, double> rank_sort_loss(const View& x, const View& labels, const View& iou,
                                          const View& grad, const std::optional<View>& ids,
                                          double delta, double eps) {
  fgbg::RankSortLossConfig cfg;
  cfg.delta = delta;
  cfg.eps = eps;
  const fgbg::RankSortLoss<S> loss(cfg);
  const InVec<S> q = in_vec<S>(iou);
  const auto v = run_ranking<S>(x, labels, grad, ids,
                                [&](const auto& xx, const auto& yy, auto& gg, auto... g) {
                                  return loss.value_and_grad(xx, yy, q, gg, g...);
                                });
  return {static_cast<double>(v.rank), static_cast<double>(v.sort)};
}

/// aLRP loss: (cls, loc); `grad` receives the classification update, `grad_loc` ∂loc/∂ℓ.
template <typename S>
std::tuple<double, double> alrp_loss(const View& x, const View& labels, const View& loc_error,
                                     const View& grad, const View& grad_loc,
                                     const std::optional<View>& ids, double delta, double eps) {
  fgbg::ALRPLossConfig cfg;
  cfg.delta = delta;
  cfg.eps = eps;
  const fgbg::ALRPLoss<S> loss(cfg);
  const InVec<S> l = in_vec<S>(loc_error);
  const auto& [gp, gr, gc, grs, gcs] = grad_loc;
  (void)gc;
  (void)grs;
  (void)gcs;
  OutVec<S> gl(reinterpret_cast<S*>(gp), gr);
  const auto v = run_ranking<S>(x, labels, grad, ids,
                                [&](const auto& xx, const auto& yy, auto& gg, auto... g) {
                                  return loss.value_and_grad(xx, yy, l, gg, gl, g...);
                                });
  return {static_cast<double>(v.cls), static_cast<double>(v.loc)};
}

/// DR loss: the value and its true gradient.
template <typename S>
double dr_loss(const View& x, const View& labels, const View& grad, const std::optional<View>& ids,
               double pos_lambda, double neg_lambda, double L, double tau, double margin) {
  fgbg::DRLossConfig<S> cfg;
  cfg.pos_lambda = static_cast<S>(pos_lambda);
  cfg.neg_lambda = static_cast<S>(neg_lambda);
  cfg.L = static_cast<S>(L);
  cfg.tau = static_cast<S>(tau);
  cfg.margin = static_cast<S>(margin);
  const fgbg::DRLoss<S> loss(cfg);
  return static_cast<double>(
      run_ranking<S>(x, labels, grad, ids, [&](auto&&... a) { return loss.value_and_grad(a...); }));
}

/// A copy of `v` as a NumPy array (torch.from_numpy takes it without a copy).
template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
  return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
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

/// EFL: (value, new state blob, statistics buffer or empty). With `reduce`, this worker's batch
/// sums go to the returned buffer and the state is not committed (commit with efl_commit).
template <typename S>
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
  if (reduce)
    v = run_dense<S>(
        a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
          return loss.value_and_grad(x, y, g, state, w, n, buffer, sink...);
        });
  else
    v = run_dense<S>(
        a, [&](const auto& x, const auto& y, auto& g, const auto& w, const auto& n, auto... sink) {
          return loss.value_and_grad(x, y, g, state, w, n, sink...);
        });
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
template <typename S>
std::tuple<double, py::bytes> ghmc(const View& xv, const View& lv, const View& gv,
                                   const std::optional<View>& wv, const std::string& blob, int bins,
                                   double momentum, bool paper_division,
                                   const std::vector<double>& reduced) {
  const fgbg::GhmcLoss<S> loss(ghmc_config(bins, momentum, paper_division));
  const In2<S> x = in2<S>(xv);
  const LabelMap labels = labels_of(lv);
  Out2<S> grad = out2<S>(gv);
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
template <typename S>
std::vector<double> ghmc_statistics(const View& xv, const View& lv, const std::optional<View>& wv,
                                    int bins, double momentum, bool paper_division) {
  const fgbg::GhmcLoss<S> loss(ghmc_config(bins, momentum, paper_division));
  const fgbg::ReduceBuffer b = loss.batch_statistics(in2<S>(xv), labels_of(lv), weights_of<S>(wv));
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

/// Binds `name_f32` / `name_f64` for the two scalar types.
template <typename F32, typename F64>
void def2(py::module_& m, const char* name, F32 f32, F64 f64) {
  m.def((std::string(name) + "_f32").c_str(), f32);
  m.def((std::string(name) + "_f64").c_str(), f64);
}

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
      .def(py::init<View, View, View, std::optional<View>, int, double, int, std::optional<View>>(),
           py::arg("x"), py::arg("labels"), py::arg("grad"), py::arg("weights"),
           py::arg("norm_kind"), py::arg("norm_factor"), py::arg("losses_kind"), py::arg("losses"));

  def2(m, "sigmoid_ce", &sigmoid_ce<float>, &sigmoid_ce<double>);
  def2(m, "sigmoid_focal", &sigmoid_focal<float>, &sigmoid_focal<double>);
  def2(m, "softmax_ce", &softmax_ce<float>, &softmax_ce<double>);
  def2(m, "softmax_focal", &softmax_focal<float>, &softmax_focal<double>);
  def2(m, "quality_focal", &quality_focal<float>, &quality_focal<double>);
  def2(m, "varifocal", &varifocal<float>, &varifocal<double>);
  def2(m, "soft_target_ce", &soft_target_ce<float>, &soft_target_ce<double>);
  def2(m, "dense_target_focal", &dense_target_focal<float>, &dense_target_focal<double>);
  def2(m, "equalized_focal", &equalized_focal<float>, &equalized_focal<double>);
  m.def("efl_commit", &efl_commit);
  m.def("efl_new_state", &efl_new_state);
  m.def("efl_inspect", &efl_inspect);
  def2(m, "ghmc", &ghmc<float>, &ghmc<double>);
  def2(m, "ghmc_statistics", &ghmc_statistics<float>, &ghmc_statistics<double>);
  m.def("ghmc_new_state", &ghmc_new_state);
  m.def("ghmc_inspect", &ghmc_inspect);
  def2(m, "ap_loss", &ap_loss<float>, &ap_loss<double>);
  def2(m, "rank_sort_loss", &rank_sort_loss<float>, &rank_sort_loss<double>);
  def2(m, "dr_loss", &dr_loss<float>, &dr_loss<double>);
  def2(m, "alrp_loss", &alrp_loss<float>, &alrp_loss<double>);
  def2(m, "max_iou_assign", &max_iou_assign<float>, &max_iou_assign<double>);
  m.def("random_sample", &random_sample);
  m.def("ohem_sample", &ohem_sample);
}
