// Test support: the loss fixtures of the contract suite (tests/test_contract.cpp, and the thread
// check of tests/test_threads.cpp). A fixture adapts one loss's public call to one shape:
//
//   Fixture f(variant);                      // variant 0..kVariants−1: a hyper-parameter set
//   Aux a = f.make_aux(c);                   // state / workspace / side outputs for case c
//   Values v = f.grad(c, x, g, a);           // value_and_grad with logits x, gradient g
//   Values u = f.value(c, x, a);             // the value-only call
//
// where c is a Case (a random Problem plus the optional arguments of the call: weights and
// normaliser), x any Eigen object holding c.p.logits (another layout, a Map, a block) and g any
// writable Eigen object of the same shape. Values holds what the call returns (value, or the
// components of a multi-valued result) in double (exact for float and double). Aux holds
// everything else a call reads or writes: the loss's state (warmed up by one call, so that it is
// not trivial), its workspace, its side outputs (CARL's ∂/∂reg_loss, aLRP's ∂/∂ℓ and ranks, the
// stage gradients of residual objectness) and the other logits of a two-input loss. Fixture::same
// compares two Aux bit for bit (state and side outputs) and Fixture::fill sets the side outputs
// to a sentinel.
//
// Traits of a fixture (static constexpr): kName, kVariants, kSoftmax (logits N × (C+1)),
// kWeights (accepts weights), kNormalizer (accepts a Normalizer argument), kExactAlias (an
// output equal to the logits is refused; DR accepts it as an in-place gradient), kZeroEmpty (N = 0
// and all-ignored give value 0; otherwise Fixture::empty_value()), kZeroWithoutPositives (no
// positive anchor: every value and gradient is 0), kStateful (value() must not change the
// state), kRead (the logits it checks: kAll, or kPositiveRows for CARL, which reads only what
// it uses). Fixture::bad_inputs() lists the loss's own bad inputs (side inputs, state, config);
// the generic ones (labels, logits, shapes, aliasing, weights, normaliser) are in the suite.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstring>
#include <fgbg/fgbg.hpp>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "problems.hpp"

namespace fgbg_test {
namespace contract {

using fgbg::Index;
using fgbg::RowArray;
template <typename S>
using Vec = Eigen::Array<S, Eigen::Dynamic, 1>;

/// x in double, through a volatile: GCC 12.2 at -O3 SLP-vectorised the float → double
/// conversions of ALRPLoss<float>'s (cls, loc) pair together with the double → float rounding
/// inside the loss and produced the unrounded double values (-fno-tree-slp-vectorize or -O2
/// gave the float ones); a volatile keeps each value as the call returned it.
template <typename T>
double widen(T x) {
  volatile T kept = x;
  return static_cast<double>(kept);
}

/// What a call returns, in double (float and double values convert exactly).
struct Values {
  double v[4] = {0, 0, 0, 0};
  int n = 1;
  Values() = default;
  template <typename A>
  explicit Values(A a) : v{widen(a), 0, 0, 0}, n(1) {}
  template <typename A, typename B>
  Values(A a, B b) : v{widen(a), widen(b), 0, 0}, n(2) {}
  template <typename A, typename B, typename C>
  Values(A a, B b, C c) : v{widen(a), widen(b), widen(c), 0}, n(3) {}
};

inline bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof(double)) == 0;
}
template <typename S>
bool same_bits_s(S a, S b) {
  return std::memcmp(&a, &b, sizeof(S)) == 0;
}
inline bool same(const Values& a, const Values& b) {
  if (a.n != b.n) return false;
  for (int i = 0; i < a.n; ++i)
    if (!same_bits(a.v[i], b.v[i])) return false;
  return true;
}
inline std::ostream& operator<<(std::ostream& os, const Values& v) {
  const auto precision = os.precision(17);
  os << "{";
  for (int i = 0; i < v.n; ++i) os << (i ? ", " : "") << v.v[i];
  os.precision(precision);
  return os << "}";
}

/// Bitwise equality of two Eigen objects of the same shape (any layouts).
template <typename A, typename B>
bool same_array(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  using S = typename A::Scalar;
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index j = 0; j < a.cols(); ++j)
    for (Index i = 0; i < a.rows(); ++i)
      if (!same_bits_s<S>(a.derived().coeff(i, j), S(b.derived().coeff(i, j)))) return false;
  return true;
}
template <typename T>
bool same_vector(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// One call's inputs: the problem, and the optional arguments the suite varies.
template <typename S>
struct Case {
  Problem<S> p;
  Vec<S> weights;  ///< passed when use_weights (a copy of p.weights, or a bad one)
  bool use_weights = false;
  std::optional<fgbg::Normalizer> norm;  ///< passed when set (losses with kNormalizer)

  fgbg::Weights<S> w() const {
    return use_weights ? fgbg::Weights<S>(weights) : fgbg::Weights<S>();
  }
};

template <typename S>
Case<S> make_case(std::uint64_t seed, const ProblemOptions& o, bool use_weights = false) {
  Case<S> c;
  c.p = random_problem<S>(seed, o);
  c.weights = c.p.weights;
  c.use_weights = use_weights;
  return c;
}

/// Calls value_and_grad of a DenseLoss-like surface with the case's weights and normaliser.
template <typename L, typename S, typename XD, typename GD, typename... Extra>
S dense_grad(const L& l, const Case<S>& c, const Eigen::DenseBase<XD>& x,
             const Eigen::DenseBase<GD>& g, Extra&&... extra) {
  return c.norm ? l.value_and_grad(x, c.p.labels, extra..., g, c.w(), *c.norm)
                : l.value_and_grad(x, c.p.labels, extra..., g, c.w());
}
template <typename L, typename S, typename XD, typename... Extra>
S dense_value(const L& l, const Case<S>& c, const Eigen::DenseBase<XD>& x, Extra&&... extra) {
  return c.norm ? l.value(x, c.p.labels, extra..., c.w(), *c.norm)
                : l.value(x, c.p.labels, extra..., c.w());
}

/// A fixture's own bad input: `call` makes one call that must throw `kind` with `message` in
/// what() (message empty: any message), after mutating the case or the aux as it needs.
template <typename S, typename Aux>
struct BadInput {
  std::string what;
  std::function<void(Case<S>&, RowArray<S>& g, Aux&)> call;
  bool domain = false;  ///< std::domain_error (else std::invalid_argument)
  std::string message;
  /// Run before the outputs and state are recorded (e.g. to put a bad state into the aux).
  std::function<void(Case<S>&, Aux&)> prepare = nullptr;
};

enum class Reads { kAll, kPositiveRows };

/// An empty Aux for stateless fixtures without side outputs.
struct NoAux {};

// ---------------------------------------------------------------------------------------------
// Fixtures of the DenseLoss surface: value(x, y, [w, [norm]]), value_and_grad(x, y, g, ...).

template <typename S, typename Loss, bool Softmax>
struct DenseFixtureBase {
  using Scalar = S;
  using Aux = NoAux;
  static constexpr bool kSoftmax = Softmax;
  static constexpr bool kWeights = true;
  static constexpr bool kNormalizer = true;
  static constexpr bool kExactAlias = true;
  static constexpr bool kZeroEmpty = true;
  static constexpr bool kZeroWithoutPositives = false;
  static constexpr bool kStateful = false;
  static constexpr Reads kRead = Reads::kAll;
  Loss loss;
  explicit DenseFixtureBase(Loss l) : loss(std::move(l)) {}
  Aux make_aux(const Case<S>&) const { return {}; }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux&) const {
    return Values(dense_grad(loss, c, x, g));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux&) const {
    return Values(dense_value(loss, c, x));
  }
  static bool same(const Aux&, const Aux&) { return true; }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const { return {}; }
};

template <typename S>
struct BceFixture : DenseFixtureBase<S, fgbg::SigmoidCrossEntropyLoss<S>, false> {
  static constexpr const char* kName = "SigmoidCrossEntropyLoss";
  static constexpr int kVariants = 1;
  explicit BceFixture(int)
      : DenseFixtureBase<S, fgbg::SigmoidCrossEntropyLoss<S>, false>(
            fgbg::SigmoidCrossEntropyLoss<S>()) {}
};

template <typename S>
struct FocalFixture : DenseFixtureBase<S, fgbg::SigmoidFocalLoss<S>, false> {
  static constexpr const char* kName = "SigmoidFocalLoss";
  static constexpr int kVariants = 2;  // γ = 2 (the closed form's square), γ = 1.5 (pow)
  explicit FocalFixture(int v)
      : DenseFixtureBase<S, fgbg::SigmoidFocalLoss<S>, false>(
            fgbg::SigmoidFocalLoss<S>({S(0.25), v == 0 ? S(2) : S(1.5)})) {}
};

template <typename S>
struct FocalStarFixture : DenseFixtureBase<S, fgbg::FocalLossStar<S>, false> {
  static constexpr const char* kName = "FocalLossStar";
  static constexpr int kVariants = 2;  // α = 0.25, γ = 3; fvcore's defaults α off, γ = 1
  explicit FocalStarFixture(int v)
      : DenseFixtureBase<S, fgbg::FocalLossStar<S>, false>(
            v == 0 ? fgbg::FocalLossStar<S>({S(0.25), S(3)}) : fgbg::FocalLossStar<S>()) {}
};

template <typename S>
struct SoftmaxCeFixture : DenseFixtureBase<S, fgbg::SoftmaxCrossEntropyLoss<S>, true> {
  static constexpr const char* kName = "SoftmaxCrossEntropyLoss";
  static constexpr int kVariants = 1;
  explicit SoftmaxCeFixture(int)
      : DenseFixtureBase<S, fgbg::SoftmaxCrossEntropyLoss<S>, true>(
            fgbg::SoftmaxCrossEntropyLoss<S>()) {}
};

template <typename S>
struct SoftmaxFocalFixture : DenseFixtureBase<S, fgbg::SoftmaxFocalLoss<S>, true> {
  static constexpr const char* kName = "SoftmaxFocalLoss";
  static constexpr int kVariants = 2;  // γ = 2, γ = 0.5
  explicit SoftmaxFocalFixture(int v)
      : DenseFixtureBase<S, fgbg::SoftmaxFocalLoss<S>, true>(
            fgbg::SoftmaxFocalLoss<S>({S(0.25), v == 0 ? S(2) : S(0.5)})) {}
  std::vector<BadInput<S, NoAux>> bad_inputs() const {
    return {{"per-element weights (softmax losses take one weight per anchor)",
             [this](Case<S>& c, RowArray<S>& g, NoAux&) {
               const RowArray<S> w = RowArray<S>::Ones(c.p.rows(), c.p.cols());
               this->loss.value_and_grad(c.p.logits, c.p.labels, g, w);
             },
             false, "weights must be"},
            {"one column only (C+1 >= 2)",
             [this](Case<S>& c, RowArray<S>&, NoAux&) {
               RowArray<S> x1 = RowArray<S>::Zero(c.p.rows(), 1), g1(c.p.rows(), 1);
               c.p.labels.setZero();
               this->loss.value_and_grad(x1, c.p.labels, g1);
             },
             false, "C+1 >= 2 columns"}};
  }
};

// ---------------------------------------------------------------------------------------------
// QFL and VFL: value(x, y, quality, [w, [norm]]), value_and_grad(x, y, quality, g, ...).

template <typename S, typename Loss>
struct QualityFixtureBase : DenseFixtureBase<S, Loss, false> {
  using Aux = NoAux;
  explicit QualityFixtureBase(Loss l) : DenseFixtureBase<S, Loss, false>(std::move(l)) {}
  /// The quality goes in as a Map here and as an array in value(), so that value() ==
  /// value_and_grad() also says that the quality's storage does not matter.
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux&) const {
    const Eigen::Map<const Vec<S>> q(c.p.quality.data(), c.p.quality.size());
    return Values(dense_grad(this->loss, c, x, g, q));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux&) const {
    return Values(dense_value(this->loss, c, x, c.p.quality));
  }
  /// The quality array's own errors (read at positive rows only).
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto with_q = [this](double value, Index at_positive) {
      return [this, value, at_positive](Case<S>& c, RowArray<S>& g, Aux&) {
        Index i = 0;
        for (Index seen = -1; i < c.p.rows(); ++i)
          if (c.p.labels[i] > 0 && ++seen == at_positive) break;
        c.p.quality[i] = static_cast<S>(value);
        this->loss.value_and_grad(c.p.logits, c.p.labels, c.p.quality, g);
      };
    };
    const double inf = std::numeric_limits<double>::infinity();
    return {{"quality > 1 at a positive", with_q(1.5, 0), false,
             "quality(0) = 1.5 of a positive anchor must be in [0, 1]"},
            {"quality < 0 at a positive", with_q(-0.01, 0), false, "must be in [0, 1]"},
            {"NaN quality at a positive", with_q(std::nan(""), 0), true, "quality(0, 0) is nan"},
            {"inf quality at a positive", with_q(inf, 0), true, "is inf"},
            {"quality of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               const Vec<S> q2 = Vec<S>::Constant(c.p.rows() + 1, S(0.5));
               this->loss.value_and_grad(c.p.logits, c.p.labels, q2, g);
             },
             false, "quality must be a vector of 23 entries, got 24 x 1"},
            {"an N x C quality (weights mistaken for it)",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               const RowArray<S> qm = RowArray<S>::Constant(c.p.rows(), c.p.cols(), S(0.5));
               this->loss.value_and_grad(c.p.logits, c.p.labels, qm, g);
             },
             false, "quality must be a vector of"},
            {"value(): quality < 0 at a positive",
             [this](Case<S>& c, RowArray<S>&, Aux&) {
               for (Index i = 0; i < c.p.rows(); ++i)
                 if (c.p.labels[i] > 0) c.p.quality[i] = S(-0.01);
               this->loss.value(c.p.logits, c.p.labels, c.p.quality);
             },
             false, "must be in [0, 1]"}};
  }
};

template <typename S>
struct QflFixture : QualityFixtureBase<S, fgbg::QualityFocalLoss<S>> {
  static constexpr const char* kName = "QualityFocalLoss";
  static constexpr int kVariants = 2;  // β = 2 (squared path), β = 2.5 (pow path)
  explicit QflFixture(int v)
      : QualityFixtureBase<S, fgbg::QualityFocalLoss<S>>(
            fgbg::QualityFocalLoss<S>({v == 0 ? S(2) : S(2.5)})) {}
};

template <typename S>
struct SoftBceFixture : QualityFixtureBase<S, fgbg::SoftTargetCrossEntropyLoss<S>> {
  static constexpr const char* kName = "SoftTargetCrossEntropyLoss";
  static constexpr int kVariants = 1;
  explicit SoftBceFixture(int)
      : QualityFixtureBase<S, fgbg::SoftTargetCrossEntropyLoss<S>>(
            fgbg::SoftTargetCrossEntropyLoss<S>()) {}
};

template <typename S>
struct VflFixture : QualityFixtureBase<S, fgbg::VarifocalLoss<S>> {
  static constexpr const char* kName = "VarifocalLoss";
  static constexpr int kVariants = 1;
  explicit VflFixture(int)
      : QualityFixtureBase<S, fgbg::VarifocalLoss<S>>(fgbg::VarifocalLoss<S>()) {}
  std::vector<BadInput<S, NoAux>> bad_inputs() const {
    auto v = QualityFixtureBase<S, fgbg::VarifocalLoss<S>>::bad_inputs();
    v.push_back({"positive of quality 0 with min_quality = 0",
                 [](Case<S>& c, RowArray<S>& g, NoAux&) {
                   fgbg::VarifocalLossConfig<S> cfg;
                   cfg.min_quality = 0;
                   for (Index i = 0; i < c.p.rows(); ++i)
                     if (c.p.labels[i] > 0) c.p.quality[i] = 0;
                   fgbg::VarifocalLoss<S>(cfg).value_and_grad(c.p.logits, c.p.labels, c.p.quality,
                                                              g);
                 },
                 false, "= 0 for a positive anchor"});
    return v;
  }
};

// ---------------------------------------------------------------------------------------------
// Dense targets: value(x, y, targets, [w, [norm]]), value_and_grad(x, y, targets, g, ...).

/// The N × C targets of a dense-target call: the quality (or 1 on every third row) at the label
/// column of a positive, soft background on every third row, and anything in [0, 1] on an
/// ignored row (read and checked, never used).
template <typename S>
struct DenseTargetAux {
  RowArray<S> targets;
};

template <typename S, typename Loss>
struct DenseTargetFixtureBase : DenseFixtureBase<S, Loss, false> {
  using Aux = DenseTargetAux<S>;
  explicit DenseTargetFixtureBase(Loss l) : DenseFixtureBase<S, Loss, false>(std::move(l)) {}
  Aux make_aux(const Case<S>& c) const {
    Aux a{RowArray<S>::Zero(c.p.rows(), c.p.cols())};
    for (Index i = 0; i < c.p.rows(); ++i) {
      const fgbg::Label y = c.p.labels[i];
      if (y > 0 && y <= c.p.cols()) a.targets(i, y - 1) = i % 3 == 0 ? S(1) : c.p.quality[i];
      if ((y == 0 && i % 3 == 1) || y < 0)
        for (Index j = 0; j < c.p.cols(); ++j) a.targets(i, j) = S(0.05) * S(j % 4);
    }
    return a;
  }
  /// The targets go in as a Map here and as an array in value() (storage must not matter).
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    const Eigen::Map<const RowArray<S>> t(a.targets.data(), a.targets.rows(), a.targets.cols());
    return Values(dense_grad(this->loss, c, x, g, t));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    return Values(dense_value(this->loss, c, x, a.targets));
  }
  static bool same(const Aux& a, const Aux& b) { return same_array(a.targets, b.targets); }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  /// The targets' own errors: range, finiteness, shape, memory shared with an output.
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto call = [this](bool grad) {
      return [this, grad](Case<S>& c, RowArray<S>& g, Aux& a) {
        if (grad)
          this->loss.value_and_grad(c.p.logits, c.p.labels, a.targets, g);
        else
          this->loss.value(c.p.logits, c.p.labels, a.targets);
      };
    };
    auto set = [](double value, Index row, Index col) {
      return [value, row, col](Case<S>&, Aux& a) { a.targets(row, col) = static_cast<S>(value); };
    };
    const double inf = std::numeric_limits<double>::infinity();
    return {
        {"target > 1", call(true), false, "targets(1, 2) = 1.5 must be in [0, 1]", set(1.5, 1, 2)},
        {"target < 0 on an ignored row", call(true), false,
         "targets(2, 0) = -0.25 must be in [0, 1]", set(-0.25, 2, 0)},
        {"NaN target", call(true), true, "targets(3, 1) is nan", set(std::nan(""), 3, 1)},
        {"inf target", call(true), true, "targets(0, 4) is inf", set(inf, 0, 4)},
        {"value(): target > 1", call(false), false, "must be in [0, 1]", set(1.0625, 4, 0)},
        {"targets with a row too few",
         [this](Case<S>& c, RowArray<S>& g, Aux& a) {
           this->loss.value_and_grad(c.p.logits, c.p.labels, a.targets.topRows(c.p.rows() - 1), g);
         },
         false, "targets must be 23 x 5, got 22 x 5"},
        {"per-anchor targets (a vector)",
         [this](Case<S>& c, RowArray<S>& g, Aux&) {
           this->loss.value_and_grad(c.p.logits, c.p.labels, c.p.quality, g);
         },
         false, "targets must be 23 x 5, got 23 x 1"},
        {"the gradient written over the targets",
         [this](Case<S>& c, RowArray<S>& g, Aux&) {
           this->loss.value_and_grad(c.p.logits, c.p.labels, g, g);
         },
         false, "grad must not share memory with the targets"},
        {"element losses written over the targets",
         [this](Case<S>& c, RowArray<S>& g, Aux& a) {
           this->loss.value_and_grad(c.p.logits, c.p.labels, a.targets, g,
                                     fgbg::element_losses(a.targets));
         },
         false, "element_losses must not share memory with the targets"}};
  }
};

template <typename S>
struct DenseFocalFixture : DenseTargetFixtureBase<S, fgbg::DenseTargetFocalLoss<S>> {
  static constexpr const char* kName = "DenseTargetFocalLoss";
  static constexpr int kVariants = 2;  // torchvision's α = 0.25, γ = 2; α off, γ = 1.5 (pow)
  explicit DenseFocalFixture(int v)
      : DenseTargetFixtureBase<S, fgbg::DenseTargetFocalLoss<S>>(fgbg::DenseTargetFocalLoss<S>(
            v == 0 ? fgbg::DenseTargetFocalLossConfig<S>{}
                   : fgbg::DenseTargetFocalLossConfig<S>{S(-1), S(1.5)})) {}
  std::vector<BadInput<S, DenseTargetAux<S>>> bad_inputs() const {
    auto v = DenseTargetFixtureBase<S, fgbg::DenseTargetFocalLoss<S>>::bad_inputs();
    auto config = [](double alpha, double gamma) {
      return [alpha, gamma](Case<S>&, RowArray<S>&, DenseTargetAux<S>&) {
        fgbg::DenseTargetFocalLoss<S>({static_cast<S>(alpha), static_cast<S>(gamma)});
      };
    };
    v.push_back({"alpha > 1", config(1.5, 2), false, "alpha"});
    v.push_back({"gamma < 0", config(0.25, -0.5), false, "gamma"});
    v.push_back({"gamma NaN", config(0.25, std::nan("")), false, "gamma"});
    return v;
  }
};

template <typename S>
struct DenseBceFixture : DenseTargetFixtureBase<S, fgbg::DenseTargetCrossEntropyLoss<S>> {
  static constexpr const char* kName = "DenseTargetCrossEntropyLoss";
  static constexpr int kVariants = 1;
  explicit DenseBceFixture(int)
      : DenseTargetFixtureBase<S, fgbg::DenseTargetCrossEntropyLoss<S>>(
            fgbg::DenseTargetCrossEntropyLoss<S>()) {}
};

// ---------------------------------------------------------------------------------------------
// EFL: value(x, y, const state, ...), value_and_grad(x, y, g, state, ...).

template <typename S>
struct EflFixture {
  using Scalar = S;
  static constexpr const char* kName = "EqualizedFocalLoss";
  static constexpr int kVariants = 1;
  static constexpr bool kSoftmax = false, kWeights = true, kNormalizer = true, kExactAlias = true;
  static constexpr bool kZeroEmpty = true, kZeroWithoutPositives = false, kStateful = true;
  static constexpr Reads kRead = Reads::kAll;
  struct Aux {
    fgbg::EqualizedFocalState state{0};
  };
  fgbg::EqualizedFocalLoss<S> loss;
  explicit EflFixture(int) {}
  /// A state that has seen this case once (non-uniform γ_j).
  Aux make_aux(const Case<S>& c) const {
    Aux a{fgbg::EqualizedFocalState(c.p.cols())};
    RowArray<S> g(c.p.rows(), c.p.cols());
    loss.value_and_grad(c.p.logits, c.p.labels, g, a.state);
    return a;
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    return Values(c.norm ? loss.value_and_grad(x, c.p.labels, g, a.state, c.w(), *c.norm)
                         : loss.value_and_grad(x, c.p.labels, g, a.state, c.w()));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    const fgbg::EqualizedFocalState& st = a.state;
    return Values(c.norm ? loss.value(x, c.p.labels, st, c.w(), *c.norm)
                         : loss.value(x, c.p.labels, st, c.w()));
  }
  static bool same(const Aux& a, const Aux& b) {
    return same_array(a.state.ratio(), b.state.ratio()) &&
           same_array(a.state.pos_grad(), b.state.pos_grad()) &&
           same_array(a.state.neg_grad(), b.state.neg_grad()) &&
           a.state.updates() == b.state.updates();
  }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    return {{"state of the wrong number of classes",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               fgbg::EqualizedFocalState s3(c.p.cols() + 1);
               try {
                 loss.value_and_grad(c.p.logits, c.p.labels, g, s3);
               } catch (...) {
                 if (s3.updates() != 0) throw std::logic_error("wrong-size state was updated");
                 throw;
               }
             },
             false, "state has 6 classes, the logits 5 columns"},
            {"value() with a state of the wrong number of classes",
             [this](Case<S>& c, RowArray<S>&, Aux&) {
               const fgbg::EqualizedFocalState s3(c.p.cols() + 1);
               loss.value(c.p.logits, c.p.labels, s3);
             },
             false, "classes, the logits"}};
  }
};

// ---------------------------------------------------------------------------------------------
// GHM-C with momentum: value(x, y, const state, [w]), value_and_grad(x, y, g, state, [w]).

template <typename S>
struct GhmcFixture {
  using Scalar = S;
  static constexpr const char* kName = "GhmcLoss";
  static constexpr int kVariants = 2;  // μ = 0.75 with a state (30 bins), μ = 0 without one
  static constexpr bool kSoftmax = false, kWeights = true, kNormalizer = false, kExactAlias = true;
  static constexpr bool kZeroEmpty = true, kZeroWithoutPositives = false, kStateful = true;
  static constexpr Reads kRead = Reads::kAll;
  struct Aux {
    fgbg::GhmcState state{30};
  };
  bool momentum;
  fgbg::GhmcLoss<S> loss;
  explicit GhmcFixture(int v)
      : momentum(v == 0), loss(v == 0 ? fgbg::GhmcLossConfig{30, 0.75} : fgbg::GhmcLossConfig{}) {}
  Aux make_aux(const Case<S>& c) const {
    Aux a;
    RowArray<S> g(c.p.rows(), c.p.cols());
    if (momentum) loss.value_and_grad(c.p.logits, c.p.labels, g, a.state);
    return a;
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    return Values(momentum ? loss.value_and_grad(x, c.p.labels, g, a.state, c.w())
                           : loss.value_and_grad(x, c.p.labels, g, c.w()));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    const fgbg::GhmcState& st = a.state;
    return Values(momentum ? loss.value(x, c.p.labels, st, c.w())
                           : loss.value(x, c.p.labels, c.w()));
  }
  static bool same(const Aux& a, const Aux& b) {
    return same_vector(a.state.moving_counts(), b.state.moving_counts()) &&
           same_vector(a.state.bin_counts(), b.state.bin_counts()) &&
           a.state.nonempty_bins() == b.state.nonempty_bins() &&
           same_bits(a.state.tot(), b.state.tot());
  }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    return {{"state of the wrong number of bins",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               fgbg::GhmcState s5(5);
               loss.value_and_grad(c.p.logits, c.p.labels, g, s5);
             },
             false, "state has 5 bins, the loss " + std::to_string(loss.config().bins)},
            {"momentum without a state",
             [](Case<S>& c, RowArray<S>& g, Aux&) {
               fgbg::GhmcLoss<S>({30, 0.75}).value_and_grad(c.p.logits, c.p.labels, g);
             },
             false, "needs a GhmcState"}};
  }
};

// ---------------------------------------------------------------------------------------------
// DR loss: value(x, y, [fgbg::groups(ids)]), value_and_grad(x, y, g, [groups]); no weights.

template <typename S>
struct DrFixture {
  using Scalar = S;
  static constexpr const char* kName = "DRLoss";
  static constexpr int kVariants = 2;  // pooled, per-group (4 groups)
  static constexpr bool kSoftmax = false, kWeights = false, kNormalizer = false;
  static constexpr bool kExactAlias = false;  // an in-place gradient is allowed
  static constexpr bool kZeroEmpty = false, kZeroWithoutPositives = false, kStateful = false;
  static constexpr Reads kRead = Reads::kAll;
  using Aux = NoAux;
  bool grouped;
  fgbg::DRLoss<S> loss;
  explicit DrFixture(int v) : grouped(v == 1) {}
  Aux make_aux(const Case<S>&) const { return {}; }
  /// N = 0 or every entry ignored: D₋ = 0, D₊ = 1 (no groups at all: the sum over none, 0).
  double empty_value(const Case<S>& c) const {
    const auto& k = loss.config();
    const double L = double(k.L), u = 0.0 - 1.0 + double(k.margin);
    const S one = static_cast<S>(double(k.tau) / L * std::log1p(std::exp(L * u)));
    if (!grouped) return static_cast<double>(one);
    Index groups = 0;  // the sum over the groups (distinct ids; none for N = 0)
    for (Index i = 0; i < c.p.rows(); ++i) groups += i == 0 || c.p.groups[i] != c.p.groups[i - 1];
    return static_cast<double>(one * static_cast<S>(groups));
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux&) const {
    return Values(grouped ? loss.value_and_grad(x, c.p.labels, g, fgbg::groups(c.p.groups))
                          : loss.value_and_grad(x, c.p.labels, g));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux&) const {
    return Values(grouped ? loss.value(x, c.p.labels, fgbg::groups(c.p.groups))
                          : loss.value(x, c.p.labels));
  }
  static bool same(const Aux&, const Aux&) { return true; }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    // Weights do not compile for DR (tests/compile_fail/call_misuse.cpp).
    return {{"decreasing groups",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               Eigen::ArrayXi gr = c.p.groups;
               gr[0] = 1;
               gr[1] = 0;
               loss.value_and_grad(c.p.logits, c.p.labels, g, fgbg::groups(gr));
             },
             false,
             "groups must be non-decreasing (each group one run of consecutive anchors), but "
             "groups(1) = 0 < groups(0) = 1"},
            {"value(): decreasing groups",
             [this](Case<S>& c, RowArray<S>&, Aux&) {
               Eigen::ArrayXi gr = c.p.groups;
               gr[0] = 1;
               gr[1] = 0;
               loss.value(c.p.logits, c.p.labels, fgbg::groups(gr));
             },
             false, "groups must be non-decreasing"},
            {"groups of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               const Eigen::ArrayXi gr = Eigen::ArrayXi::Zero(c.p.rows() + 1);
               loss.value_and_grad(c.p.logits, c.p.labels, g, fgbg::groups(gr));
             },
             false, "groups must be a vector of 23 entries, got 24 x 1"}};
  }
};

// ---------------------------------------------------------------------------------------------
// CARL: value(x, y, reg_loss, [norm]), value_and_grad(x, y, reg_loss, g, grad_reg_loss, [norm]).

template <typename S, bool Softmax>
struct CarlFixture {
  using Scalar = S;
  static constexpr const char* kName = Softmax ? "CarlLoss (softmax)" : "CarlLoss (sigmoid)";
  static constexpr int kVariants = 2;  // b = 0.2 (direct sums), b = 0 with k = 2 (log mode)
  static constexpr bool kSoftmax = Softmax, kWeights = false, kNormalizer = true;
  static constexpr bool kExactAlias = true, kZeroEmpty = true, kZeroWithoutPositives = true;
  static constexpr bool kStateful = false;
  static constexpr Reads kRead = Reads::kPositiveRows;
  struct Aux {
    Vec<S> grad_reg;
  };
  fgbg::CarlLoss<S> loss;
  explicit CarlFixture(int v)
      : loss(fgbg::CarlLossConfig<S>{v == 0 ? S(1) : S(2), v == 0 ? S(0.2) : S(0), !Softmax}) {}
  Aux make_aux(const Case<S>& c) const { return {Vec<S>::Zero(c.p.rows())}; }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    return Values(c.norm ? loss.value_and_grad(x, c.p.labels, c.p.reg_loss, g, a.grad_reg, *c.norm)
                         : loss.value_and_grad(x, c.p.labels, c.p.reg_loss, g, a.grad_reg));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux&) const {
    return Values(c.norm ? loss.value(x, c.p.labels, c.p.reg_loss, *c.norm)
                         : loss.value(x, c.p.labels, c.p.reg_loss));
  }
  static bool same(const Aux& a, const Aux& b) { return same_array(a.grad_reg, b.grad_reg); }
  static void fill(Aux& a, S s) { a.grad_reg.setConstant(s); }
  static bool zero(const Aux& a) { return (a.grad_reg == S(0)).all(); }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto reg_at_positive = [this](double value) {
      return [this, value](Case<S>& c, RowArray<S>& g, Aux& a) {
        for (Index i = 0; i < c.p.rows(); ++i)
          if (c.p.labels[i] > 0) {
            c.p.reg_loss[i] = static_cast<S>(value);
            break;
          }
        loss.value_and_grad(c.p.logits, c.p.labels, c.p.reg_loss, g, a.grad_reg);
      };
    };
    return {{"reg_loss < 0 at a positive", reg_at_positive(-1.0), false, "reg_loss"},
            {"NaN reg_loss at a positive", reg_at_positive(std::nan("")), true, "reg_loss"},
            {"reg_loss of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux& a) {
               const Vec<S> r = Vec<S>::Ones(c.p.rows() + 1);
               loss.value_and_grad(c.p.logits, c.p.labels, r, g, a.grad_reg);
             },
             false, "reg_loss"},
            {"grad_reg_loss of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux& a) {
               loss.value_and_grad(c.p.logits, c.p.labels, c.p.reg_loss, g,
                                   a.grad_reg.head(c.p.rows() - 1));
             },
             false, "grad_reg_loss"},
            {"grad_reg_loss sharing memory with reg_loss",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               loss.value_and_grad(c.p.logits, c.p.labels, c.p.reg_loss, g, c.p.reg_loss);
             },
             false, "must not share memory"},
            {"accumulate: grad_reg_loss sharing memory with reg_loss",
             [this](Case<S>& c, RowArray<S>& g, Aux&) {
               loss.value_and_accumulate_grad(c.p.logits, c.p.labels, c.p.reg_loss, g,
                                              c.p.reg_loss);
             },
             false, "must not share memory"}};
  }
};
template <typename S>
using CarlSigmoidFixture = CarlFixture<S, false>;
template <typename S>
using CarlSoftmaxFixture = CarlFixture<S, true>;

// ---------------------------------------------------------------------------------------------
// Ranking losses with a RankingWorkspace.

template <typename S>
struct RankingFixtureBase {
  using Scalar = S;
  static constexpr bool kSoftmax = false, kWeights = false, kNormalizer = false;
  static constexpr bool kExactAlias = true, kZeroEmpty = true, kZeroWithoutPositives = true;
  static constexpr bool kStateful = false;
  static constexpr Reads kRead = Reads::kAll;
};

template <typename S>
struct ApFixture : RankingFixtureBase<S> {
  static constexpr const char* kName = "APLoss";
  static constexpr int kVariants = 2;  // interpolated (default), CVPR'19
  struct Aux {
    fgbg::RankingWorkspace ws;
  };
  fgbg::APLoss<S> loss;
  explicit ApFixture(int v) : loss(fgbg::APLossConfig{1.0, v == 0}) {}
  Aux make_aux(const Case<S>&) const { return {}; }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    return Values(loss.value_and_grad(x, c.p.labels, g, a.ws));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    return Values(loss.value(x, c.p.labels, a.ws));
  }
  static bool same(const Aux&, const Aux&) { return true; }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const { return {}; }
};

template <typename S>
struct AlrpFixture : RankingFixtureBase<S> {
  static constexpr const char* kName = "ALRPLoss";
  static constexpr int kVariants = 1;
  struct Aux {
    fgbg::RankingWorkspace ws;
    Vec<S> grad_loc, rank;
  };
  fgbg::ALRPLoss<S> loss;
  explicit AlrpFixture(int) {}
  // The localisation errors ℓ are the problem's reg_loss (in [0, 3], within [0, 2^512]).
  Aux make_aux(const Case<S>& c) const {
    return {fgbg::RankingWorkspace(), Vec<S>::Zero(c.p.rows()), Vec<S>::Zero(c.p.rows())};
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    const auto v = loss.value_and_grad(x, c.p.labels, c.p.reg_loss, g, a.grad_loc, a.rank, a.ws);
    return Values(v.cls, v.loc);
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    const auto v = loss.value(x, c.p.labels, c.p.reg_loss, a.ws);
    return Values(v.cls, v.loc);
  }
  static bool same(const Aux& a, const Aux& b) {
    return same_array(a.grad_loc, b.grad_loc) && same_array(a.rank, b.rank);
  }
  static void fill(Aux& a, S s) {
    a.grad_loc.setConstant(s);
    a.rank.setConstant(s);
  }
  static bool zero(const Aux& a) { return (a.grad_loc == S(0)).all() && (a.rank == S(0)).all(); }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto loc_at_positive = [this](double value) {
      return [this, value](Case<S>& c, RowArray<S>& g, Aux& a) {
        for (Index i = 0; i < c.p.rows(); ++i)
          if (c.p.labels[i] > 0) {
            c.p.reg_loss[i] = static_cast<S>(value);
            break;
          }
        loss.value_and_grad(c.p.logits, c.p.labels, c.p.reg_loss, g, a.grad_loc, a.rank, a.ws);
      };
    };
    return {{"loc_error < 0 at a positive", loc_at_positive(-0.5), false, "loc_error"},
            {"NaN loc_error at a positive", loc_at_positive(std::nan("")), true, "loc_error"},
            {"loc_error of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux& a) {
               const Vec<S> l = Vec<S>::Ones(c.p.rows() + 1);
               loss.value_and_grad(c.p.logits, c.p.labels, l, g, a.grad_loc, a.rank, a.ws);
             },
             false, "loc_error"},
            {"rank output of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux& a) {
               loss.value_and_grad(c.p.logits, c.p.labels, c.p.reg_loss, g, a.grad_loc,
                                   a.rank.head(c.p.rows() - 1), a.ws);
             },
             false, "rank"}};
  }
};

template <typename S>
struct RsFixture : RankingFixtureBase<S> {
  static constexpr const char* kName = "RankSortLoss";
  static constexpr int kVariants = 1;
  struct Aux {
    fgbg::RankingWorkspace ws;
  };
  fgbg::RankSortLoss<S> loss;
  explicit RsFixture(int) {}
  Aux make_aux(const Case<S>&) const { return {}; }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    const auto v = loss.value_and_grad(x, c.p.labels, c.p.quality, g, a.ws);
    return Values(v.rank, v.sort);
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    const auto v = loss.value(x, c.p.labels, c.p.quality, a.ws);
    return Values(v.rank, v.sort);
  }
  static bool same(const Aux&, const Aux&) { return true; }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto iou_at_positive = [this](double value) {
      return [this, value](Case<S>& c, RowArray<S>& g, Aux& a) {
        for (Index i = 0; i < c.p.rows(); ++i)
          if (c.p.labels[i] > 0) {
            c.p.quality[i] = static_cast<S>(value);
            break;
          }
        loss.value_and_grad(c.p.logits, c.p.labels, c.p.quality, g, a.ws);
      };
    };
    return {{"iou > 1 at a positive", iou_at_positive(1.5), false, "iou"},
            {"NaN iou at a positive", iou_at_positive(std::nan("")), true, "iou"},
            {"iou of the wrong length",
             [this](Case<S>& c, RowArray<S>& g, Aux& a) {
               const Vec<S> l = Vec<S>::Ones(c.p.rows() + 1);
               loss.value_and_grad(c.p.logits, c.p.labels, l, g, a.ws);
             },
             false, "iou"}};
  }
};

// ---------------------------------------------------------------------------------------------
// Residual objectness: value_and_grad(classes, y, stages, grad_classes, grad_stages, state).
// Two fixtures: the class logits as "the logits" (stages in Aux), and the stage logits.

template <typename S, bool StagesAreX>
struct ResObjFixture {
  using Scalar = S;
  static constexpr const char* kName = StagesAreX ? "ResidualObjectnessLoss (stage logits)"
                                                  : "ResidualObjectnessLoss (class logits)";
  static constexpr int kVariants = 2;  // three EMA updates per call (release), one
  static constexpr bool kSoftmax = false, kWeights = false, kNormalizer = false;
  static constexpr bool kExactAlias = true, kZeroEmpty = true, kZeroWithoutPositives = false;
  static constexpr bool kStateful = true;
  static constexpr Reads kRead = Reads::kAll;
  struct Aux {
    RowArray<S> other;  ///< the logits that are not x (stage logits N × 2, or class logits)
    RowArray<S> grad_other;
    fgbg::ResidualObjectnessState state;
  };
  fgbg::ResidualObjectnessLoss<S> loss;
  explicit ResObjFixture(int v)
      : loss(fgbg::ResidualObjectnessConfig{
            20.0, 10.0, 1.0, 0.9, 100.0,
            v == 0 ? fgbg::EmaUpdates::three_per_call : fgbg::EmaUpdates::one_per_call}) {}
  /// A problem of the logits this fixture calls x: N × 2 stage logits (around prior 0.001) or
  /// the N × C class logits.
  static ProblemOptions adapt(ProblemOptions o) {
    if (StagesAreX) {
      o.classes = 2;
      o.logit_centre = -6.9;
      o.logit_spread = 1.0;
    }
    return o;
  }
  Aux make_aux(const Case<S>& c) const {
    Aux a;
    ProblemOptions o;
    o.n = c.p.rows();
    o.classes = StagesAreX ? 4 : 2;
    o.logit_centre = StagesAreX ? -4.6 : -6.9;
    a.other = random_problem<S>(static_cast<std::uint64_t>(c.p.rows()) + 17, o).logits;
    a.grad_other.setZero(a.other.rows(), a.other.cols());
    // Labels must be in range for the class logits: clamp (C of x or of the other).
    RowArray<S> gx(c.p.rows(), c.p.cols());
    a.state.reset();
    if (labels_fit(c)) call(c, c.p.logits, gx, a);  // a state that has seen one call
    return a;
  }
  static bool labels_fit(const Case<S>& c) {
    const Index classes = StagesAreX ? 4 : c.p.cols();
    for (Index i = 0; i < c.p.rows(); ++i)
      if (c.p.labels[i] < -1 || c.p.labels[i] > classes) return false;
    return c.p.labels.size() == c.p.rows();
  }
  template <typename XD, typename GD>
  fgbg::ResidualObjectnessResult call(const Case<S>& c, const Eigen::DenseBase<XD>& x,
                                      const Eigen::DenseBase<GD>& g, Aux& a) const {
    if constexpr (StagesAreX)
      return loss.value_and_grad(a.other, c.p.labels, x, a.grad_other, g, a.state);
    else
      return loss.value_and_grad(x, c.p.labels, a.other, g, a.grad_other, a.state);
  }
  static Values values(const fgbg::ResidualObjectnessResult& r) {
    return Values(r.loss, r.obj_loss, r.cls_loss);
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux& a) const {
    return values(call(c, x, g, a));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux& a) const {
    const fgbg::ResidualObjectnessState& st = a.state;
    if constexpr (StagesAreX)
      return values(loss.value(a.other, c.p.labels, x, st));
    else
      return values(loss.value(x, c.p.labels, a.other, st));
  }
  static bool same(const Aux& a, const Aux& b) {
    return same_array(a.grad_other, b.grad_other) &&
           same_bits(a.state.num_pos_ema(), b.state.num_pos_ema()) &&
           a.state.started() == b.state.started() && a.state.calls() == b.state.calls();
  }
  static void fill(Aux& a, S s) { a.grad_other.setConstant(s); }
  /// All ignored: the stage gradient is 0; no positive: the class gradient is 0.
  static bool zero(const Aux& a) { return (a.grad_other == S(0)).all(); }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    return {
        {"grad_stages sharing memory with grad_classes",
         [this](Case<S>& c, RowArray<S>&, Aux& a) {
           const Index k = StagesAreX ? a.other.cols() : c.p.cols();
           RowArray<S> both = RowArray<S>::Constant(c.p.rows(), k + 2, S(7));
           const RowArray<S> stages = StagesAreX ? c.p.logits : a.other;
           const RowArray<S> classes = StagesAreX ? a.other : c.p.logits;
           try {
             loss.value_and_grad(classes, c.p.labels, stages, both.middleCols(1, k),
                                 both.leftCols(2), a.state);
           } catch (...) {
             if (!(both == S(7)).all()) throw std::logic_error("overlapping outputs written");
             throw;
           }
         },
         false, "must not share memory"},
        // A started state with a NaN or zero EMA can no longer be made (restore() refuses
        // it: tests/test_state.cpp); a bad reduce buffer is the state's other way in.
        {"a reduce buffer of another method",
         [this](Case<S>& c, RowArray<S>& g, Aux& a) {
           const fgbg::ReduceBuffer other = fgbg::positive_count_buffer(c.p.labels, 1 << 20);
           if constexpr (StagesAreX)
             loss.value_and_grad(a.other, c.p.labels, c.p.logits, a.grad_other, g, a.state, other);
           else
             loss.value_and_grad(c.p.logits, c.p.labels, a.other, g, a.grad_other, a.state, other);
         },
         false, "reduce buffer has"},
        {"a reduce buffer whose counts are below the call's",
         [this](Case<S>& c, RowArray<S>& g, Aux& a) {
           const Index classes = StagesAreX ? a.other.cols() : c.p.cols();
           fgbg::ReduceBuffer few = loss.batch_statistics(c.p.labels, classes);
           few.payload()[1] -= 1.0;  // one valid anchor fewer than this call has
           if constexpr (StagesAreX)
             loss.value_and_grad(a.other, c.p.labels, c.p.logits, a.grad_other, g, a.state, few);
           else
             loss.value_and_grad(c.p.logits, c.p.labels, a.other, g, a.grad_other, a.state, few);
         },
         false, "below this call's"}};
  }
};
template <typename S>
using ResObjClassFixture = ResObjFixture<S, false>;
template <typename S>
using ResObjStageFixture = ResObjFixture<S, true>;

// ---------------------------------------------------------------------------------------------
// Guided loss around BCE: value(x, y, reg_loss, [w, [norm]]), value_and_grad(x, y, reg, g, ...).

template <typename S>
struct GuidedFixture {
  using Scalar = S;
  static constexpr const char* kName = "GuidedLoss<SigmoidCrossEntropyLoss>";
  static constexpr int kVariants = 2;  // ignored anchors ignored; trained as background
  static constexpr bool kSoftmax = false, kWeights = true, kNormalizer = true, kExactAlias = true;
  static constexpr bool kZeroEmpty = true, kZeroWithoutPositives = false, kStateful = false;
  static constexpr Reads kRead = Reads::kAll;
  using Aux = NoAux;
  static constexpr double kRegLoss = 0.75;
  fgbg::GuidedLoss<fgbg::SigmoidCrossEntropyLoss<S>> loss;
  bool ignored_as_negative;
  /// Variant 1 trains ignored anchors as background: an all-ignored call is not empty.
  bool trains_ignored() const { return ignored_as_negative; }
  explicit GuidedFixture(int v)
      : loss(fgbg::SigmoidCrossEntropyLoss<S>(), fgbg::GuidedLossConfig{2.0, v == 1}),
        ignored_as_negative(v == 1) {}
  Aux make_aux(const Case<S>&) const { return {}; }
  static Values values(const fgbg::GuidedLossResult& r) {
    return Values(r.value, r.weight, r.cls_loss);
  }
  template <typename XD, typename GD>
  Values grad(const Case<S>& c, const Eigen::DenseBase<XD>& x, const Eigen::DenseBase<GD>& g,
              Aux&) const {
    return values(c.norm ? loss.value_and_grad(x, c.p.labels, kRegLoss, g, c.w(), *c.norm)
                         : loss.value_and_grad(x, c.p.labels, kRegLoss, g, c.w()));
  }
  template <typename XD>
  Values value(const Case<S>& c, const Eigen::DenseBase<XD>& x, Aux&) const {
    return values(c.norm ? loss.value(x, c.p.labels, kRegLoss, c.w(), *c.norm)
                         : loss.value(x, c.p.labels, kRegLoss, c.w()));
  }
  static bool same(const Aux&, const Aux&) { return true; }
  static void fill(Aux&, S) {}
  static bool zero(const Aux&) { return true; }
  std::vector<BadInput<S, Aux>> bad_inputs() const {
    auto reg = [this](double r, bool grad) {
      return [this, r, grad](Case<S>& c, RowArray<S>& g, Aux&) {
        if (grad)
          loss.value_and_grad(c.p.logits, c.p.labels, r, g);
        else
          loss.value(c.p.logits, c.p.labels, r);
      };
    };
    const double inf = std::numeric_limits<double>::infinity();
    return {{"negative reg_loss", reg(-1.0, true), false, "reg_loss"},
            {"NaN reg_loss", reg(std::nan(""), true), true, "reg_loss"},
            {"inf reg_loss", reg(inf, true), true, "reg_loss"},
            {"value(): negative reg_loss", reg(-1.0, false), false, "reg_loss"}};
  }
};

/// Every fixture, for one scalar type.
template <typename S>
using AllFixtures =
    std::tuple<BceFixture<S>, FocalFixture<S>, FocalStarFixture<S>, SoftmaxCeFixture<S>,
               SoftmaxFocalFixture<S>, QflFixture<S>, SoftBceFixture<S>, VflFixture<S>,
               DenseFocalFixture<S>, DenseBceFixture<S>, EflFixture<S>, GhmcFixture<S>,
               DrFixture<S>, CarlSigmoidFixture<S>, CarlSoftmaxFixture<S>, ApFixture<S>,
               AlrpFixture<S>, RsFixture<S>, ResObjClassFixture<S>, ResObjStageFixture<S>,
               GuidedFixture<S>>;

#if defined(FGBG_CONTRACT_SCALAR)
/// The fixture list of one half of the typed suite (test_contract_float, test_contract_double).
using FixtureList = AllFixtures<FGBG_CONTRACT_SCALAR>;
#else
template <typename... A, typename... B>
std::tuple<A..., B...> cat_types(std::tuple<A...>*, std::tuple<B...>*);
/// The fixture list of the typed suite: every fixture in float, then in double.
using FixtureList = decltype(cat_types(static_cast<AllFixtures<float>*>(nullptr),
                                       static_cast<AllFixtures<double>*>(nullptr)));
#endif

/// The problem options of a fixture for a call of n anchors and c classes.
template <typename F>
ProblemOptions options_for(Index n, Index classes) {
  ProblemOptions o;
  o.n = n;
  o.classes = classes;
  o.softmax = F::kSoftmax;
  o.groups = 4;
  if constexpr (std::is_same<F, ResObjStageFixture<typename F::Scalar>>::value) o = F::adapt(o);
  return o;
}

/// C, the largest valid label: the class columns of the logits (of the class logits for the
/// residual-objectness fixture whose x is the stage logits).
template <typename F>
Index label_classes(const Case<typename F::Scalar>& c) {
  if constexpr (std::is_same<F, ResObjStageFixture<typename F::Scalar>>::value) return 4;
  return c.p.cols() - (F::kSoftmax ? 1 : 0);
}

/// True if the fixture's loss trains label −1 (GuidedLoss with treat_ignored_as_negative).
template <typename F>
bool trains_ignored(const F& f) {
  if constexpr (std::is_same<F, GuidedFixture<typename F::Scalar>>::value)
    return f.trains_ignored();
  (void)f;
  return false;
}

/// The fixture's expected value of an empty call (N = 0, or every anchor ignored).
template <typename F>
double empty_value(const F& f, const Case<typename F::Scalar>& c) {
  if constexpr (F::kZeroEmpty) {
    (void)f;
    (void)c;
    return 0.0;
  } else {
    return f.empty_value(c);
  }
}

}  // namespace contract
}  // namespace fgbg_test
