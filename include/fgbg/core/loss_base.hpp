/// @file loss_base.hpp
/// @brief The one call interface of every fgbg loss: DenseLoss generates the `value` /
///        `value_and_grad` overloads, checks the arguments at compile time and hands the loss one
///        Call object.
///
/// Every call has the same shape, whatever the loss:
///
/// @code
///   value(logits, labels, inputs...,               [state], [option], [workspace], [normalizer],
///         [reduce], [losses])
///   value_and_grad(logits, labels, inputs..., outputs..., [state], [option], [workspace],
///                  [normalizer], [reduce], [losses])
/// @endcode
///
/// - `inputs`: the method's further per-anchor inputs, positional and required (QFL's quality,
///   CARL's regression loss, aLRP's localisation error, RS's IoU).
/// - `outputs`: the gradient (N × C, same layout rules as below), then the method's further
///   outputs (CARL's ∂L/∂reg_loss, aLRP's ∂L/∂ℓ and optional ranks). Positional.
/// - `state`: the method's state object (EFL, GHM-C, residual objectness). `value` reads it;
///   `value_and_grad` reads and updates it.
/// - `option`: per-anchor or per-element weights (a Weights or any Eigen array) for the losses
///   that take weights, or fgbg::groups(ids) for the losses that rank or normalise per group (DR,
///   AP, aLRP, RS).
/// - `workspace`: reusable buffers (ranking losses); without one the call allocates a temporary.
/// - `normalizer`: a Normalizer for this call instead of the one in the loss's config.
/// - `reduce`: a ReduceBuffer (core/state_io.hpp) for the losses whose statistics are reduced
///   across data-parallel workers: GHM-C reads the reduced histogram from it, EFL writes this
///   worker's gradient statistics into it instead of committing them (docs/data_parallel.md).
/// - `losses`: fgbg::element_losses(out) (N × C) or fgbg::anchor_losses(out) (N), the weighted,
///   unnormalised loss of each element or anchor, written in the same pass (core/loss_output.hpp)
///   by the losses whose Signature has `losses` (the sigmoid and softmax heads, GHM-C; per anchor
///   only: AP, aLRP, RS, CARL, residual objectness, each with its own meaning: docs/conventions.md).
///
/// The trailing arguments are recognised by their type, so each may be left out independently
/// (`value(x, labels, Normalizer::avg_factor(a))` needs no empty weights), but they must come in
/// the order above. An argument that fits no slot, a missing required one or a wrong order fails
/// to compile with a static_assert naming the rule; a required state that is missing too.
///
/// Outputs are taken by forwarding reference, so temporaries (a Map, a block) bind to them; a
/// plain array is resized to the right shape (no allocation once it has it), a view must have
/// it. A read-only output (a const Map, an expression) is rejected at compile time. Nothing is
/// written and no state changes before every run-time check has passed.
///
/// What each loss takes is its Signature (a struct deriving from DefaultSignature that overrides
/// what differs); the loss implements one function, `template <class Call> R run(Call& c)
/// const`, where R is double (the value in double, rounded to the scalar type by the base) or a
/// result struct returned as is. See docs/extending.md.
#pragma once

#include "requires_cxx17.hpp"

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dense.hpp"
#include "loss_output.hpp"
#include "reduction.hpp"
#include "state_io.hpp"
#include "weights.hpp"

namespace fgbg {

/// How a loss takes its state object.
enum class StateUse {
  none,      ///< stateless
  optional,  ///< a state may be passed (GHM-C: required only with momentum)
  required   ///< every call needs one (EFL, residual objectness)
};

/// The trailing option a loss accepts besides state, workspace and normaliser.
enum class CallOption {
  none,     ///< nothing
  weights,  ///< per-anchor or per-element weights (Weights, or an Eigen array viewed as one)
  groups    ///< fgbg::groups(ids): one ranking or normalisation per group of anchors
};

/// What a loss takes besides the logits and the labels; a loss's Signature derives from this and
/// overrides what differs (see the file comment).
struct DefaultSignature {
  static constexpr int inputs = 0;   ///< required inputs after the labels
  static constexpr int outputs = 1;  ///< required outputs of value_and_grad (gradient first)
  static constexpr int optional_outputs = 0;  ///< outputs that may follow the required ones
  using State = detail::None;                 ///< the state type
  static constexpr StateUse state = StateUse::none;
  static constexpr CallOption option = CallOption::weights;
  using Workspace = detail::None;            ///< reusable buffers; a temporary one when not passed
  static constexpr bool normalizer = true;   ///< takes a Normalizer (the config has a default)
  static constexpr bool accumulate = false;  ///< also value_and_accumulate_grad (CARL)
  static constexpr bool reduce = false;      ///< takes a ReduceBuffer last (GHM-C, EFL)
  /// writes per-element / per-anchor losses (fgbg::element_losses, fgbg::anchor_losses)
  static constexpr LossOutputs losses = LossOutputs::none;
};

/// A group id per anchor (an integer vector, non-decreasing: each group a run of consecutive
/// anchors), as a loss's trailing option; make one with fgbg::groups(ids).
template <typename GD>
struct Groups {
  const Eigen::DenseBase<GD>& ids;
};

/// Marks `ids` as the group ids of a call (see Groups).
template <typename GD>
Groups<GD> groups(const Eigen::DenseBase<GD>& ids) {
  static_assert(std::is_integral<typename GD::Scalar>::value,
                "fgbg::groups: group ids must be an integer array");
  return {ids};
}

namespace detail {

template <typename T>
using Bare = std::remove_cv_t<std::remove_reference_t<T>>;

template <typename D>
std::true_type eigen_probe(const Eigen::EigenBase<D>*);
std::false_type eigen_probe(const void*);

/// Whether T is an Eigen object (an Array, a Map, a block, an expression, a DenseBase<D>).
template <typename T>
inline constexpr bool kIsEigen = decltype(eigen_probe(std::declval<const Bare<T>*>()))::value;

template <typename T>
struct IsGroups : std::false_type {};
template <typename GD>
struct IsGroups<Groups<GD>> : std::true_type {};

/// Slot of a trailing argument of type A: 1 state, 2 option, 3 workspace, 4 normaliser,
/// 5 reduce buffer, 6 loss output, 0 none.
template <typename Sig, typename Scalar, typename A>
constexpr int trailing_slot() {
  using T = Bare<A>;
  if constexpr (Sig::state != StateUse::none && std::is_same<T, typename Sig::State>::value)
    return 1;
  else if constexpr (Sig::option == CallOption::weights &&
                     (kIsEigen<T> || std::is_same<T, Weights<Scalar>>::value))
    return 2;
  else if constexpr (Sig::option == CallOption::groups && IsGroups<T>::value)
    return 2;
  else if constexpr (kGiven<typename Sig::Workspace> &&
                     std::is_same<T, typename Sig::Workspace>::value)
    return 3;
  else if constexpr (Sig::normalizer && std::is_same<T, Normalizer>::value)
    return 4;
  else if constexpr (Sig::reduce && std::is_same<T, ReduceBuffer>::value)
    return 5;
  else if constexpr ((Sig::losses == LossOutputs::both && IsElementLosses<T>::value) ||
                     (Sig::losses != LossOutputs::none && IsAnchorLosses<T>::value))
    return 6;
  else
    return 0;
}

/// Where each argument of a call with arguments A... (after logits and labels) goes.
template <typename Sig, typename Scalar, bool kGrad, typename... A>
struct CallLayout {
  static constexpr std::size_t n = sizeof...(A);
  static constexpr bool eigen[n + 1] = {kIsEigen<A>..., false};
  static constexpr int slot[n + 1] = {trailing_slot<Sig, Scalar, A>()..., 0};
  static constexpr std::size_t inputs = static_cast<std::size_t>(Sig::inputs);
  static constexpr std::size_t required_outputs =
      kGrad ? static_cast<std::size_t>(Sig::outputs) : 0;
  static constexpr std::size_t max_outputs =
      kGrad ? static_cast<std::size_t>(Sig::outputs + Sig::optional_outputs) : 0;

  /// Number of outputs given: the required ones, then Eigen arguments up to the maximum.
  static constexpr std::size_t count_outputs() {
    std::size_t k = required_outputs;
    while (k < max_outputs && inputs + k < n && eigen[inputs + k]) ++k;
    return k;
  }
  static constexpr std::size_t outputs = count_outputs();
  static constexpr std::size_t first_trailing = inputs + outputs;

  static constexpr bool positional_ok() {
    if (n < inputs + required_outputs) return false;
    for (std::size_t i = 0; i < inputs + required_outputs; ++i)
      if (!eigen[i]) return false;
    return true;
  }
  /// Position of the trailing argument in slot `s`, or n when it is not given.
  static constexpr std::size_t position(int s) {
    for (std::size_t i = first_trailing; i < n; ++i)
      if (slot[i] == s) return i;
    return n;
  }
  static constexpr bool trailing_ok() {
    int last = 0;
    for (std::size_t i = first_trailing; i < n; ++i) {
      if (slot[i] <= last) return false;  // no slot, a repeated slot or the wrong order
      last = slot[i];
    }
    return true;
  }
  static constexpr bool state_ok() { return Sig::state != StateUse::required || position(1) < n; }
};

/// Everything a loss's run() receives for one call. `in` holds the inputs (const Eigen::DenseBase
/// references), `out` the outputs (writable Eigen::DenseBase references; None for an output not
/// given and for every output of a value-only call), so `std::get<0>(c.out)` is the gradient or
/// None. `state` is a pointer (const for `value`; nullptr when an optional state is not given),
/// `option` the Weights, the Groups or None, `normalizer` the normaliser of this call (nullptr for
/// a loss without one). `reduce` points to the ReduceBuffer (const when the caller passed a const
/// one), nullptr when not given; `kReduce` says whether it was given. `losses` is the erased
/// per-element or per-anchor loss output (kind none when not given).
template <typename XD, typename LD, typename In, typename Out, typename StatePtr, typename Option,
          typename Workspace, bool kAccumulate, typename ReducePtr = std::nullptr_t>
struct Call {
  /// Whether the outputs are written (value_and_grad) or not (value).
  static constexpr bool kGrad = kGiven<std::tuple_element_t<0, Out>>;
  /// value_and_accumulate_grad: outputs are added to, not overwritten.
  static constexpr bool kAdd = kAccumulate;
  const Eigen::DenseBase<XD>& x;
  const Eigen::DenseBase<LD>& labels;
  In in;
  Out out;
  StatePtr state;
  Option option;
  Workspace* workspace;
  const Normalizer* normalizer;
  ReducePtr reduce;
  LossSink<ComputeOf<typename XD::Scalar>> losses;
  /// Whether a ReduceBuffer was passed.
  static constexpr bool kReduce = !std::is_same<ReducePtr, std::nullptr_t>::value;
};

template <typename D>
const Eigen::DenseBase<D>& as_input(const Eigen::DenseBase<D>& a) {
  return a;
}

template <typename Scalar, typename D>
Eigen::DenseBase<D>& as_output(const Eigen::DenseBase<D>& a) {
  static_assert(kStorableAs<typename D::Scalar, Scalar>,
                "fgbg: every output (gradient, ranks) must have the loss's scalar type (or "
                "Eigen::half / Eigen::bfloat16 for a float loss, as the logits)");
  return writable(a);
}

template <std::size_t K>
auto nones() {
  if constexpr (K == 0)
    return std::tuple<>{};
  else
    return std::tuple_cat(std::tuple<None>{}, nones<K - 1>());
}

}  // namespace detail

/// CRTP base giving every loss the call interface of the file comment; `Sig` is the loss's
/// Signature.
template <typename Derived, typename Scalar_, typename Sig = DefaultSignature>
class DenseLoss {
 public:
  using Scalar = Scalar_;
  using Signature = Sig;

  /// The loss value; no output is written and the state (if any) is only read.
  template <typename XD, typename LD, typename... A>
  auto value(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
             A&&... args) const {
    return finish(dispatch<false, false>(logits, labels, std::forward<A>(args)...));
  }

  /// The loss value; writes its gradient with respect to the logits (normalisation included) and
  /// the method's further outputs; updates the state.
  template <typename XD, typename LD, typename... A>
  auto value_and_grad(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                      A&&... args) const {
    return finish(dispatch<true, false>(logits, labels, std::forward<A>(args)...));
  }

  /// value_and_grad adding into the outputs instead of overwriting them (losses whose Signature
  /// has `accumulate`; the outputs must have their shapes).
  template <typename XD, typename LD, typename... A>
  auto value_and_accumulate_grad(const Eigen::DenseBase<XD>& logits,
                                 const Eigen::DenseBase<LD>& labels, A&&... args) const {
    static_assert(Sig::accumulate, "fgbg: this loss has no value_and_accumulate_grad");
    return finish(dispatch<true, true>(logits, labels, std::forward<A>(args)...));
  }

  /// The value in double, before it is rounded to the scalar type (GuidedLoss uses it); same
  /// arguments as value / value_and_grad, chosen by `kGrad`.
  template <bool kGrad, typename XD, typename LD, typename... A>
  auto run_double(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                  A&&... args) const {
    return dispatch<kGrad, false>(logits, labels, std::forward<A>(args)...);
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }

  template <typename R>
  static auto finish(const R& r) {
    if constexpr (std::is_same<R, double>::value)
      return static_cast<Scalar>(r);
    else
      return r;
  }

  template <bool kGrad, bool kAdd, typename XD, typename LD, typename... A>
  auto dispatch(const Eigen::DenseBase<XD>& logits, const Eigen::DenseBase<LD>& labels,
                A&&... args) const {
    using L = detail::CallLayout<Sig, Scalar, kGrad, A...>;
    static_assert(L::positional_ok(),
                  "fgbg: a loss call starts (logits, labels, inputs..., outputs...): the inputs "
                  "this loss requires (value_and_grad: and its outputs) are missing or not Eigen "
                  "arrays; see the loss's header for its arguments");
    static_assert(L::trailing_ok(),
                  "fgbg: after the outputs a loss call takes, in this order and each at most "
                  "once, [state] [weights or fgbg::groups(ids)] [workspace] [Normalizer] "
                  "[ReduceBuffer] [fgbg::element_losses / anchor_losses]; an argument here fits "
                  "none of the slots this loss has, or is out of order");
    static_assert(L::state_ok(), "fgbg: this loss needs its state object in every call");
    auto all = std::forward_as_tuple(std::forward<A>(args)...);
    auto in = slice<0>(
        all, std::make_index_sequence<L::inputs>{},
        [](const auto& a) -> auto& { return detail::as_input(a); });
    auto given = slice<L::inputs>(
        all, std::make_index_sequence<L::outputs>{},
        [](const auto& a) -> auto& { return detail::as_output<Scalar>(a); });
    constexpr std::size_t kOutputs = static_cast<std::size_t>(Sig::outputs + Sig::optional_outputs);
    auto out = std::tuple_cat(given, detail::nones<kOutputs - L::outputs>());
    auto state = pick<L::position(1), kGrad>(all, static_cast<typename Sig::State*>(nullptr));
    auto option = make_option<L::position(2)>(all);
    using Ws = typename Sig::Workspace;
    Ws* ws = nullptr;
    if constexpr (detail::kGiven<Ws>) {
      if constexpr (L::position(3) < L::n) {
        ws = &std::get<L::position(3)>(all);
        return run<kAdd>(logits, labels, in, out, state, option, ws,
                         normalizer_of<L::position(4)>(all), reduce_of<L::position(5)>(all),
                         sink_of<L::position(6)>(all));
      } else {
        Ws local;
        ws = &local;
        return run<kAdd>(logits, labels, in, out, state, option, ws,
                         normalizer_of<L::position(4)>(all), reduce_of<L::position(5)>(all),
                         sink_of<L::position(6)>(all));
      }
    } else {
      return run<kAdd>(logits, labels, in, out, state, option, ws,
                       normalizer_of<L::position(4)>(all), reduce_of<L::position(5)>(all),
                       sink_of<L::position(6)>(all));
    }
  }

  template <bool kAdd, typename XD, typename LD, typename In, typename Out, typename StatePtr,
            typename Option, typename Ws, typename ReducePtr>
  auto run(const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<LD>& labels, In& in, Out& out,
           StatePtr state, Option& option, Ws* ws, const Normalizer* norm, ReducePtr rb,
           const detail::LossSink<Scalar>& sink) const {
    detail::Call<XD, LD, In, Out, StatePtr, Option, Ws, kAdd, ReducePtr> c{
        x, labels, in, out, state, option, ws, norm, rb, sink};
    return self().run(c);
  }

  /// The loss output at position P, erased (kind none if not given).
  template <std::size_t P, typename Tup>
  static detail::LossSink<Scalar> sink_of(Tup& all) {
    if constexpr (P < std::tuple_size<Tup>::value) {
      using D = std::remove_reference_t<decltype(std::get<P>(all).out)>;
      static_assert(std::is_same<typename D::Scalar, Scalar>::value,
                    "fgbg: element_losses / anchor_losses must have the loss's scalar type");
      return detail::LossSink<Scalar>(std::get<P>(all));
    } else {
      return detail::LossSink<Scalar>();
    }
  }

  /// Pointer to the ReduceBuffer at position P (const if the caller's is const), or nullptr
  /// (of type std::nullptr_t) if not given.
  template <std::size_t P, typename Tup>
  static auto reduce_of(Tup& all) {
    if constexpr (P < std::tuple_size<Tup>::value)
      return &std::get<P>(all);
    else
      return nullptr;
  }

  /// std::tuple of f(argument) for the arguments at Off + I.
  template <std::size_t Off, typename Tup, std::size_t... I, typename F>
  static auto slice(Tup& all, std::index_sequence<I...>, F f) {
    return std::tuple<decltype(f(std::get<Off + I>(all)))...>(f(std::get<Off + I>(all))...);
  }

  /// Pointer to the state at position P (const for value calls), or nullptr if not given.
  template <std::size_t P, bool kGrad, typename Tup, typename State>
  static auto pick(Tup& all, State*) {
    using Ptr = std::conditional_t<kGrad, State*, const State*>;
    if constexpr (P < std::tuple_size<Tup>::value) {
      auto& s = std::get<P>(all);
      static_assert(!kGrad || !std::is_const<std::remove_reference_t<decltype(s)>>::value,
                    "fgbg: value_and_grad updates the state: pass it as a non-const object");
      return Ptr(&s);
    } else {
      return Ptr(nullptr);
    }
  }

  template <std::size_t P, typename Tup>
  static auto make_option(Tup& all) {
    if constexpr (Sig::option == CallOption::weights) {
      if constexpr (P < std::tuple_size<Tup>::value)
        return Weights<Scalar>(std::get<P>(all));
      else
        return Weights<Scalar>();
    } else if constexpr (Sig::option == CallOption::groups && P < std::tuple_size<Tup>::value) {
      return std::get<P>(all);
    } else {
      return detail::None{};
    }
  }

  template <std::size_t P, typename Tup>
  const Normalizer* normalizer_of(Tup& all) const {
    if constexpr (!Sig::normalizer)
      return nullptr;
    else if constexpr (P < std::tuple_size<Tup>::value)
      return &std::get<P>(all);
    else
      return &self().config().normalizer;
  }
};

}  // namespace fgbg
