/// @file ranking_loss.hpp
/// @brief The base of the ranking losses (AP, aLRP, RS): their call signature, the workspace
///        handling and the per-group driver, written once.
///
/// Every ranking loss is called as every other fgbg loss (core/loss_base.hpp):
///
/// @code
///   value(logits, labels, inputs... [, fgbg::groups(ids)] [, workspace])
///   value_and_grad(logits, labels, inputs..., outputs... [, fgbg::groups(ids)] [, workspace]
///                  [, fgbg::anchor_losses(a)])
/// @endcode
///
/// Without a RankingWorkspace the call allocates a temporary one; pass one (kept across
/// iterations) for allocation-free steady state. Without groups the call ranks all its anchors
/// together (one ranking per call). With `fgbg::groups(ids)` (one id per anchor, non-decreasing,
/// each group a run of consecutive anchors: e.g. the image index) it ranks each group separately:
/// every value is the mean of the groups' values over the groups with at least one positive, and
/// each group's update is divided by that number of groups (so it stays the update of the
/// returned value); groups without positives get a zero update. With groups, labels, the inputs
/// and the vector outputs must be vectors at compile time.
///
/// A ranking loss derives from RankingLoss and supplies, besides its config:
///
/// @code
///   // every check of a call over rows x (throws; writes nothing)
///   void check(x, labels, in, out) const;
///   // makes the outputs hold their shapes (after check; may resize plain arrays)
///   void prepare(x, out) const;
///   // whether `anchor` counts as a positive (a group counts when it has one)
///   bool is_positive(labels, in, anchor) const;
///   // one ranking over the rows x: check, prepare, compute; updates scaled by `scale`
///   R rank(x, labels, in, out, RankingWorkspace& ws, double scale) const;
///   // the public result from the summed R (R is double or detail::RankValues)
///   auto make(const R&) const;
/// @endcode
///
/// `in` and `out` are std::tuple of the inputs and outputs (None for an output not given); in a
/// per-group call they hold that group's rows. Each rank() also leaves, in `ws.pos_loss[k]`, the
/// loss of its k-th sorted positive `ws.pos[k]` (AP: 1 − p̂_i; aLRP: the classification part
/// F_i / R_i; RS: the ranking plus the sorting error), so that the value of the ranking is their
/// mean. The base writes them into `fgbg::anchor_losses(a)` when the call passes one (a_n = the
/// loss of positive anchor n, 0 for every other anchor): without groups Σ a / n_P is the value
/// (aLRP: its `cls`; RS: rank + sort); with groups the value is the mean over the groups with
/// positives of the mean of a over the group's positives.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <tuple>
#include <utility>

#include "../core/loss_base.hpp"
#include "ranking_primitives.hpp"

namespace fgbg {

/// The call signature of the ranking losses: a reusable RankingWorkspace, optional groups, no
/// weights, no normaliser (the ranking losses normalise by their positives).
struct RankingSignature : DefaultSignature {
  using Workspace = RankingWorkspace;
  static constexpr CallOption option = CallOption::groups;
  static constexpr bool normalizer = false;
  static constexpr LossOutputs losses = LossOutputs::anchor;  ///< the positives' own losses
};

namespace detail {

inline void add_values(double& total, double v) {
  total += v;
}
inline void add_values(RankValues& total, const RankValues& v) {
  total.first += v.first;
  total.second += v.second;
}
inline double divide_values(double v, double d) {
  return v / d;
}
inline RankValues divide_values(const RankValues& v, double d) {
  return {v.first / d, v.second / d};
}

/// Rows [first, first + len) of an input or output: the rows of an N × C array (the logits'
/// gradient is the only matrix), the entries of a vector, nothing of None.
template <typename T>
auto group_rows(T& a, Index first, Index len) {
  if constexpr (!kGiven<Bare<T>>)
    return None{};
  else if constexpr (Bare<decltype(a.derived())>::IsVectorAtCompileTime)
    return a.derived().segment(first, len);
  else
    return a.derived().middleRows(first, len);
}

template <typename Tuple, std::size_t... I>
auto group_rows_of(Tuple& t, Index first, Index len, std::index_sequence<I...>) {
  (void)first, (void)len;  // unused when the tuple is empty
  return std::make_tuple(group_rows(std::get<I>(t), first, len)...);
}

/// group_rows of every element of a tuple.
template <typename Tuple>
auto group_rows_of(Tuple& t, Index first, Index len) {
  return group_rows_of(t, first, len, std::make_index_sequence<std::tuple_size<Tuple>::value>{});
}

/// Makes the gradient (the first output, when given) hold N × C (prepare_output); the
/// `prepare` of AP and RS, and the first step of aLRP's.
template <typename XD, typename Out>
void prepare_ranking_grad(const char* where, const Eigen::DenseBase<XD>& x, Out& out) {
  auto& grad = std::get<0>(out);
  if constexpr (kGiven<Bare<decltype(grad)>>)
    prepare_output(where, "grad", grad, x.rows(), x.cols());
}

/// Zeroes every output that is given.
template <typename Tuple>
void zero_outputs(Tuple& out) {
  std::apply([](auto&... o) { (zero_output(o), ...); }, out);
}

/// The MemView of a given input or output, an empty one for None.
template <typename T>
MemView view_of(const T& a) {
  if constexpr (kGiven<Bare<T>>)
    return MemView::of(a);
  else
    return {};
}

/// Checks the anchor_losses output of a ranking call over N × C logits: its length, and that it
/// shares no memory with the logits, the labels, an input or an output. Writes nothing.
template <typename Scalar, typename Call>
void check_ranking_losses(const char* where, const Call& c) {
  const auto& sink = c.losses;
  if (!sink.given()) return;
  sink.check(where, c.x.rows(), c.x.cols(),
             {{MemView::of(c.x), "logits"}, {MemView::of(c.labels), "labels"}});
  std::apply([&](const auto&... a) { (sink.check_apart(where, view_of(a), "an input"), ...); },
             c.in);
  std::apply([&](const auto&... o) { (sink.check_apart(where, view_of(o), "an output"), ...); },
             c.out);
}

/// Writes the positives' losses of one ranking (ws.pos_loss of ws.pos, anchors offset by row0)
/// into the anchor output. The anchors of the ranking must be zero already.
template <typename Scalar>
void write_positive_losses(const LossSink<Scalar>& sink, const RankingWorkspace& ws, Index row0) {
  for (std::size_t k = 0; k < ws.pos.size(); ++k)
    sink.set_anchor(row0 + ws.pos[k].anchor, ws.pos_loss[k]);
}

}  // namespace detail

/// CRTP base of APLoss, ALRPLoss and RankSortLoss; see the file comment.
template <typename Derived, typename Scalar, typename Sig>
class RankingLoss : public DenseLoss<Derived, Scalar, Sig> {
 public:
  /// See DenseLoss and the file comment.
  template <typename Call>
  auto run(Call& c) const {
    RankingWorkspace& ws = *c.workspace;
    if constexpr (!detail::kGiven<decltype(c.option)>) {
      if (!c.losses.given()) return self().make(self().rank(c.x, c.labels, c.in, c.out, ws, 1.0));
      // The output's own checks first; rank() checks the rest before it writes anything, and
      // the output is written only after it returns.
      detail::check_ranking_losses<Scalar>(Derived::kName, c);
      ws.pos.clear();  // rank() refills it unless the call has no positives
      const auto r = self().rank(c.x, c.labels, c.in, c.out, ws, 1.0);
      c.losses.prepare(c.x.rows(), 1);
      c.losses.zero_anchors(0, c.x.rows());
      detail::write_positive_losses(c.losses, ws, 0);
      return self().make(r);
    } else {
      return per_group(c, c.option.ids, ws);
    }
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }

  /// One ranking per group: every check over the whole call first, then the outputs prepared,
  /// then the groups one by one, each update scaled by 1 / (groups with positives).
  template <typename Call, typename GrD>
  auto per_group(Call& c, const Eigen::DenseBase<GrD>& groups, RankingWorkspace& ws) const {
    const auto& x = c.x.derived();
    const auto& labels = c.labels.derived();
    static_assert(detail::Bare<decltype(labels)>::IsVectorAtCompileTime,
                  "fgbg: with groups, the labels must be a vector at compile time");
    self().check(c.x, c.labels, c.in, c.out);
    detail::check_groups(Derived::kName, groups, x.rows());
    detail::check_ranking_losses<Scalar>(Derived::kName, c);
    self().prepare(c.x, c.out);
    c.losses.prepare(x.rows(), 1);
    if (c.losses.given()) c.losses.zero_anchors(0, x.rows());
    const Index gp = detail::count_groups_with_positives(
        groups, [&](Index a) { return self().is_positive(c.labels, c.in, a); });
    using R = decltype(self().rank(c.x, c.labels, c.in, c.out, ws, 1.0));
    R total{};
    if (gp == 0) {
      detail::zero_outputs(c.out);
      return self().make(total);
    }
    const double scale = 1.0 / static_cast<double>(gp);
    detail::for_each_group(groups, [&](Index first, Index len) {
      auto in = detail::group_rows_of(c.in, first, len);
      auto out = detail::group_rows_of(c.out, first, len);
      ws.pos.clear();
      detail::add_values(total, self().rank(x.middleRows(first, len), labels.segment(first, len),
                                            in, out, ws, scale));
      if (c.losses.given()) detail::write_positive_losses(c.losses, ws, first);
    });
    return self().make(detail::divide_values(total, static_cast<double>(gp)));
  }
};

}  // namespace fgbg
