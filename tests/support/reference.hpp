// Test support: reading the reference vectors of tests/data/*.json (format: tests/data/README.md)
// and comparing results with the tolerances of the issue: 1e-9 · max(1, max|expected|) in
// double, 1e-5 relative or 1e-6 absolute in float.
#pragma once

#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include <fgbg/core/config.hpp>
#include <fgbg/core/reduction.hpp>

namespace fgbg_test {

using json = nlohmann::json;
using fgbg::Index;

/// Parses tests/data/<file>.
inline json load_reference(const std::string& file) {
  const std::string path = std::string(FGBG_TEST_DATA_DIR) + "/" + file;
  std::ifstream in(path);
  if (!in) FAIL("cannot open reference file " << path);
  return json::parse(in);
}

/// An N × cols row-major matrix from a list of rows (N may be 0).
template <typename Scalar>
fgbg::RowArray<Scalar> matrix(const json& rows, Index cols) {
  fgbg::RowArray<Scalar> m(static_cast<Index>(rows.size()), cols);
  for (Index r = 0; r < m.rows(); ++r)
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<Scalar>(rows[r][c].get<double>());
  return m;
}

/// Number of logit columns of a case: from its first row, else `fallback` (N = 0 cases).
inline Index logit_cols(const json& c, Index fallback) {
  return c["logits"].empty() ? fallback : static_cast<Index>(c["logits"][0].size());
}

/// A vector from a JSON list.
template <typename Scalar>
Eigen::Array<Scalar, Eigen::Dynamic, 1> vector(const json& v) {
  Eigen::Array<Scalar, Eigen::Dynamic, 1> out(static_cast<Index>(v.size()));
  for (Index i = 0; i < out.size(); ++i) out[i] = static_cast<Scalar>(v[i].get<double>());
  return out;
}

/// Labels (-1 / 0 / 1..C).
inline fgbg::LabelVector labels(const json& v) {
  fgbg::LabelVector out(static_cast<Index>(v.size()));
  for (Index i = 0; i < out.size(); ++i) out[i] = v[i].get<int>();
  return out;
}

/// The normalisation field of a case: "sum", "mean" or a number (avg_factor).
inline fgbg::Normalizer normalizer(const json& n) {
  if (n.is_number()) return fgbg::Normalizer::avg_factor(n.get<double>());
  const std::string s = n.get<std::string>();
  if (s == "sum") return fgbg::Normalizer::sum();
  if (s == "mean") return fgbg::Normalizer::mean();
  if (s == "target_sum") return fgbg::Normalizer::target_sum();
  if (s == "num_positives") return fgbg::Normalizer::num_positives();
  FAIL("unexpected normalization " << s);
  return {};
}

/// Tolerance on one array: double 1e-9·max(1, max|expected|); float max(1e-6, 1e-5·|e|).
template <typename Scalar>
bool close(double got, double expected, double scale) {
  if (std::is_same<Scalar, double>::value)
    return std::abs(got - expected) <= 1e-9 * std::max(1.0, scale);
  return std::abs(got - expected) <= std::max(1e-6, 1e-5 * std::abs(expected)) ||
         std::abs(got - expected) <= 1e-5 * std::max(1.0, scale) * 1e-1;
}

/// Checks a scalar result against the expected value.
template <typename Scalar>
void check_scalar(const char* what, double got, double expected) {
  INFO(what << ": got " << got << ", expected " << expected);
  CHECK(close<Scalar>(got, expected, std::abs(expected)));
}

/// Checks an array result (any shape, row-major order) against a JSON matrix or vector.
template <typename Scalar, typename Derived>
void check_array(const char* what, const Eigen::DenseBase<Derived>& got, const json& expected) {
  const bool is_matrix = !expected.empty() && expected[0].is_array();
  const Index rows = static_cast<Index>(expected.size());
  const Index cols = is_matrix ? static_cast<Index>(expected[0].size()) : 1;
  REQUIRE(got.size() == rows * cols);
  double scale = 0;
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      scale = std::max(scale, std::abs((is_matrix ? expected[r][c] : expected[r]).get<double>()));
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const double e = (is_matrix ? expected[r][c] : expected[r]).get<double>();
      const double g = is_matrix ? static_cast<double>(got.derived().coeff(r, c))
                                 : static_cast<double>(got.derived().coeff(r));
      if (!close<Scalar>(g, e, scale)) {
        INFO(what << "(" << r << ", " << c << "): got " << g << ", expected " << e);
        CHECK(false);
        return;
      }
    }
}

/// Central-difference gradient of f (a callable on a double array returning double) at x.
template <typename F, typename Derived>
fgbg::RowArray<double> numeric_grad(F&& f, const Eigen::DenseBase<Derived>& x0, double h = 1e-6) {
  fgbg::RowArray<double> x = x0.derived();
  fgbg::RowArray<double> g(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r)
    for (Index c = 0; c < x.cols(); ++c) {
      const double keep = x(r, c);
      x(r, c) = keep + h;
      const double up = f(x);
      x(r, c) = keep - h;
      const double down = f(x);
      x(r, c) = keep;
      g(r, c) = (up - down) / (2 * h);
    }
  return g;
}

/// max |a − b| / max(1, max |b|).
template <typename A, typename B>
double rel_max_diff(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  if (b.size() == 0) return 0.0;
  const double scale = std::max(1.0, static_cast<double>(b.derived().abs().maxCoeff()));
  return static_cast<double>((a.derived() - b.derived()).abs().maxCoeff()) / scale;
}

/// Runs every case of a dense-loss reference file: value, gradient and value() of the loss that
/// `make(params)` builds, with the case's normaliser.
template <typename Loss, typename Scalar, bool Softmax = false>
void run_reference_file(const char* file, const std::function<Loss(const json&)>& make) {
  const json ref = load_reference(file);
  for (const json& c : ref["cases"]) {
    SECTION(c["name"].get<std::string>()) {
      const Index n = c["num_anchors"];
      const Index k = logit_cols(c, Index(c["num_classes"]) + (Softmax ? 1 : 0));
      const auto x = matrix<Scalar>(c["logits"], k);
      const auto y = labels(c["labels"]);
      const Loss loss = make(c["params"]);
      const fgbg::Normalizer norm = normalizer(c["normalization"]);
      fgbg::RowArray<Scalar> g(n, k);
      const Scalar v = loss.value_and_grad(x, y, g, norm);
      check_scalar<Scalar>("loss", v, c["expected"]["loss"]);
      check_array<Scalar>("grad", g, c["expected"]["grad"]);
      check_scalar<Scalar>("value()", loss.value(x, y, norm), c["expected"]["loss"]);
    }
  }
}

}  // namespace fgbg_test
