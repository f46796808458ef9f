// Fuzz target: softmax cross-entropy and softmax focal loss (N × (C+1) logits, column 0 is the
// background), float and double, checked against a long-double oracle.
#include <fgbg/soft_sampling/softmax_cross_entropy.hpp>
#include <fgbg/soft_sampling/softmax_focal_loss.hpp>
#include <optional>

#include "fuzz_oracle.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "softmax";

template <typename S>
struct Case {
  int method, nk, wk;
  S alpha, gamma;
  double factor;
  RowA<S> x;
  Labels l;
  Eigen::Array<S, Eigen::Dynamic, 1> w;
};

template <typename S>
void oracle(const Case<S>& k, S value, const RowA<S>& grad) {
  const Index n = k.x.rows(), cols = k.x.cols();
  Index valid = 0, pos = 0;
  for (Index i = 0; i < n; ++i) {
    FZ_CHECK(k.l[i] >= -1 && k.l[i] < cols, kFam, "label out of range accepted");
    valid += k.l[i] != -1;
    pos += k.l[i] > 0;
  }
  FZ_CHECK(all_finite(k.x), kFam, "non-finite logit accepted");
  if (k.wk) FZ_CHECK(all_finite(k.w) && (k.w >= S(0)).all(), kFam, "bad weight accepted");
  const LD a = norm_a(k.nk, k.factor, valid, pos);
  LD total = 0;
  RowA<LD> g = RowA<LD>::Zero(n, cols);
  for (Index i = 0; i < n; ++i) {
    const int y = k.l[i];
    if (y < 0) continue;
    LD m = k.x(i, 0);
    for (Index j = 1; j < cols; ++j) m = std::max<LD>(m, k.x(i, j));
    LD s = 0;
    for (Index j = 0; j < cols; ++j) s += std::exp(LD(k.x(i, j)) - m);
    // x − m before log s is subtracted: m + log s rounds to m in long double for |m| ~ FLT_MAX
    // (log 3 is below its ulp), which made the oracle's log p_y 0 instead of −log 3.
    const LD ls = std::log(s);
    std::vector<LD> p(cols);
    LD q = 0;
    for (Index j = 0; j < cols; ++j) {
      p[j] = std::exp((LD(k.x(i, j)) - m) - ls);
      if (j != y) q += p[j];
    }
    const LD logpy = (LD(k.x(i, y)) - m) - ls;
    const LD wv = k.wk ? LD(k.w[i]) : 1;
    if (k.method == 0) {
      total += wv * -logpy;
      for (Index j = 0; j < cols; ++j) g(i, j) = wv * (p[j] - (j == y)) / a;
    } else {
      const LD ay = k.alpha < 0 ? 1 : (y > 0 ? LD(k.alpha) : 1 - LD(k.alpha));
      // q^γ from log q = log1p(−p_y) while p_y ≤ 1/2: q summed in long double may round below 1
      // although p_y is ~e^−1e308 (exact q^γ = 1), and a huge γ then made the oracle's q^γ 0.
      const LD logq = p[y] <= 0.5L ? std::log1p(-p[y]) : std::log(q);
      const LD qg = k.gamma == S(0) ? 1 : std::exp(LD(k.gamma) * logq);
      total += wv * -ay * qg * logpy;
      const LD ratio = q > 0 ? logpy / q : -1;
      const LD A = ay * qg * (LD(k.gamma) * p[y] * ratio - 1);
      for (Index j = 0; j < cols; ++j) g(i, j) = wv * (j == y ? A * q : -A * p[j]) / a;
    }
  }
  check_finite_where_exact<S>(kFam, total / a, value, g, grad);
}

template <typename S>
void run(In& in) {
  Case<S> k;
  k.method = in.u8() % 2;
  const Index n = in.small(5), cols = in.small(4);
  k.alpha = in.any<S>();
  k.gamma = in.any<S>();
  k.nk = in.u8() % 4;
  k.factor = in.any<double>();
  k.x = decode_matrix<S>(in, n, cols);
  k.l = decode_labels(in, n, cols - 1);
  k.wk = in.u8() % 2;
  k.w.resize(n);
  for (Index i = 0; i < n; ++i)
    k.w[i] = in.flag() ? std::fabs(in.mostly_moderate<S>()) : in.any<S>();
  context().clear();
  note("method", k.method), note("double", sizeof(S) == 8), note("alpha", k.alpha),
      note("gamma", k.gamma);
  note("normalizer", k.nk), note("factor", k.factor), note_array("x", k.x),
      note_array("labels", k.l);
  note("weights_kind", k.wk), note_array("w", k.w);
  const fgbg::Normalizer norm{static_cast<fgbg::Reduction>(k.nk), k.factor};
  const fgbg::Weights<S> w = k.wk ? fgbg::Weights<S>(k.w) : fgbg::Weights<S>{};
  auto go = [&](const auto& loss) {
    dense_protocol<S>(
        kFam, in, k.x, NoState{},
        [&](const auto& x, auto& g, NoState&) { return loss.value_and_grad(x, k.l, g, w, norm); },
        [&](const auto& x, const NoState&) { return loss.value(x, k.l, w, norm); },
        [&](const std::vector<double>& r, const RowA<S>& g) {
          oracle<S>(k, static_cast<S>(r[0]), g);
        });
  };
  if (k.method == 0) {
    go(fgbg::SoftmaxCrossEntropyLoss<S>());
  } else {
    std::optional<fgbg::SoftmaxFocalLoss<S>> loss;
    if (completes(kFam, [&] { loss.emplace(fgbg::SoftmaxFocalLossConfig<S>{k.alpha, k.gamma}); }))
      go(*loss);
  }
}
}  // namespace

FZ_ENTRY_FLOAT_OR_DOUBLE(run)
