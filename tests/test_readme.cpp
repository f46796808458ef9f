// The README's usage snippets, pasted as they are (between the BEGIN/END markers) into functions
// that provide the buffers they assume, so that the documentation cannot drift from the API. Each
// result is then checked against a plainly written call on owned arrays.
#include <catch2/catch.hpp>
#include <cmath>
#include <fgbg/fgbg.hpp>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using fgbg::Index;

namespace {

struct DenseBuffers {
  Index N = 500, C = 7;
  std::vector<float> logits, grad, weights_v;
  std::vector<int> labels;
  DenseBuffers() {
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(-3.f, 2.f);
    logits.resize(static_cast<std::size_t>(N * C));
    for (float& v : logits) v = nd(rng);
    grad.assign(logits.size(), 0.f);
    weights_v.assign(static_cast<std::size_t>(N), 1.f);
    labels.resize(static_cast<std::size_t>(N));
    for (Index a = 0; a < N; ++a)
      labels[a] = a % 50 == 0 ? 1 + static_cast<int>(a % C) : (a % 23 == 0 ? -1 : 0);
    for (Index a = 0; a < N; ++a) weights_v[a] = 0.5f + static_cast<float>(a % 3);
  }
};

float readme_focal(DenseBuffers& b, float& loss_weighted) {
  const float* logits_ptr = b.logits.data();
  const int* labels_ptr = b.labels.data();
  float* grad_ptr = b.grad.data();
  const Index N = b.N, C = b.C;
  Eigen::Map<const Eigen::ArrayXf> weights(b.weights_v.data(), N);
  const double A = 17.0;
  // BEGIN README "Using it", first snippet
  // clang-format off
  // Your framework's buffers: N anchors × C classes, row-major float (a [N, C] tensor), labels int32.
  Eigen::Map<const fgbg::RowArray<float>> logits(logits_ptr, N, C);
  Eigen::Map<const fgbg::LabelVector> labels(labels_ptr, N);   // -1 ignore, 0 background, k = class k
  Eigen::Map<fgbg::RowArray<float>> grad(grad_ptr, N, C);       // written in place, same shape

  fgbg::SigmoidFocalLoss<float> focal({/*alpha=*/0.25f, /*gamma=*/2.0f});   // RetinaNet defaults
  float loss = focal.value_and_grad(logits, labels, grad);     // sum / max(1, #positive anchors)

  // Optional per-anchor (N) or per-element (N × C) weights Ω, and a per-call normaliser:
  loss = focal.value_and_grad(logits, labels, grad, weights, fgbg::Normalizer::avg_factor(A));
  // clang-format on
  // END
  loss_weighted = loss;
  return focal.value(logits, labels);
}

}  // namespace

TEST_CASE("README: the focal-loss snippet on Maps equals the call on owned arrays", "[readme]") {
  DenseBuffers b;
  float weighted = 0;
  const float plain = readme_focal(b, weighted);
  const fgbg::RowArray<float> x =
      Eigen::Map<const fgbg::RowArray<float>>(b.logits.data(), b.N, b.C);
  const fgbg::LabelVector y = Eigen::Map<const fgbg::LabelVector>(b.labels.data(), b.N);
  const Eigen::ArrayXf w = Eigen::Map<const Eigen::ArrayXf>(b.weights_v.data(), b.N);
  const fgbg::SigmoidFocalLoss<float> focal;
  fgbg::RowArray<float> g;
  CHECK(plain == focal.value(x, y));
  const float want = focal.value_and_grad(x, y, g, w, fgbg::Normalizer::avg_factor(17.0));
  CHECK(weighted == want);
  CHECK((Eigen::Map<const fgbg::RowArray<float>>(b.grad.data(), b.N, b.C) == g).all());
  CHECK(weighted > 0);
}

namespace {

/// The README's loss-outputs snippet on the buffers of the first one.
Eigen::ArrayXf readme_anchor_losses(DenseBuffers& b, fgbg::Sample& sample) {
  Eigen::Map<const fgbg::RowArray<float>> logits(b.logits.data(), b.N, b.C);
  Eigen::Map<const fgbg::LabelVector> labels(b.labels.data(), b.N);
  Eigen::Map<fgbg::RowArray<float>> grad(b.grad.data(), b.N, b.C);
  const fgbg::SigmoidFocalLoss<float> focal;
  // BEGIN README "Using it", loss-outputs snippet
  // clang-format off
  Eigen::ArrayXf per_anchor;                                   // resized to N
  focal.value_and_grad(logits, labels, grad, fgbg::anchor_losses(per_anchor));
  fgbg::OhemSampler().sample(labels, per_anchor, sample);     // rank RoIs by their loss
  // clang-format on
  // END
  return per_anchor;
}

}  // namespace

TEST_CASE("README: the loss-outputs snippet gives each anchor's focal loss", "[readme]") {
  DenseBuffers b;
  fgbg::Sample sample;
  const Eigen::ArrayXf a = readme_anchor_losses(b, sample);
  REQUIRE(a.size() == b.N);
  const fgbg::LabelVector y = Eigen::Map<const fgbg::LabelVector>(b.labels.data(), b.N);
  for (Index i = 0; i < b.N; ++i) {
    double want = 0;  // torchvision's sigmoid_focal_loss, reduction='none', summed over the row
    for (Index j = 0; j < b.C && y[i] >= 0; ++j) {
      const double x = b.logits[static_cast<std::size_t>(i * b.C + j)];
      const double p = 1 / (1 + std::exp(-x)), t = y[i] == j + 1 ? 1 : 0;
      const double ce = std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::abs(x)));
      const double pt = p * t + (1 - p) * (1 - t);
      want += (0.25 * t + 0.75 * (1 - t)) * ce * (1 - pt) * (1 - pt);
    }
    CHECK(std::abs(a[i] - want) <= 1e-6 * want + 1e-30);
  }
  CHECK(sample.num_positives() == (y > 0).count());
  fgbg::Sample again;
  fgbg::OhemSampler().sample(y, a, again);
  CHECK(again.negatives == sample.negatives);
}

TEST_CASE("README: the assign-sample-weight snippet runs and normalises by what was sampled",
          "[readme]") {
  using Boxes = fgbg::RowArray<float>;
  // a grid of 16×16 anchors of size 32 on a 512×512 image, two ground truths
  Boxes anchors(256, 4);
  for (Index i = 0; i < 16; ++i)
    for (Index j = 0; j < 16; ++j)
      anchors.row(i * 16 + j) << 32.f * j, 32.f * i, 32.f * j + 32.f, 32.f * i + 32.f;
  Boxes gt_boxes(2, 4);
  gt_boxes << 40, 40, 100, 110, 300, 200, 360, 290;
  fgbg::LabelVector gt_labels(2);
  gt_labels << 1, 1;
  fgbg::RowArray<float> objectness = fgbg::RowArray<float>::Constant(256, 1, -2.f), grad(256, 1);
  Eigen::ArrayXf omega(256);
  std::mt19937_64 rng(3);
  const fgbg::SigmoidCrossEntropyLoss<float> bce;
  // BEGIN README "Using it", second snippet
  // clang-format off
  fgbg::MaxIouAssigner assigner(fgbg::MaxIouAssignerConfig::rpn());   // 0.7 / 0.3, min_pos 0.3
  fgbg::Assignment assignment;                                         // reused across images
  assigner.assign(anchors, gt_boxes, gt_labels, assignment);
  fgbg::RandomSampler sampler(fgbg::SamplerConfig::rpn());            // 256, 0.5
  fgbg::Sample sample;
  sampler.sample(assignment, rng, sample);                             // rng: your std::mt19937_64
  fgbg::sample_weights(sample, assignment.size(), omega);             // Ω: 1 sampled, 0 otherwise
  // Normalise by what was sampled (mmdetection's RPN: max(P,1) + max(N,1)), not by `mean`,
  // which counts every non-ignored anchor whatever its weight.
  const double A = fgbg::sample_avg_factor(fgbg::SampleNormalization::mmdet_rpn, sample);
  float loss = bce.value_and_grad(objectness, assignment.labels(), grad, omega,
                                  fgbg::Normalizer::avg_factor(A));
  // clang-format on
  // END
  const double sampled = (omega > 0.f).count();
  REQUIRE(sampled > 0);
  CHECK(A >= 2.0);
  // every logit is −2, so each sampled anchor's BCE is softplus(±2) and the sum is over Ω
  double want = 0;
  for (Index a = 0; a < 256; ++a)
    if (omega[a] > 0.f)
      want += assignment.labels()[a] > 0 ? fgbg::softplus(2.0) : fgbg::softplus(-2.0);
  CHECK(loss == Approx(want / A).epsilon(1e-6));
  CHECK(((omega > 0.f) || (grad.col(0) == 0.f)).all());  // unsampled anchors get no gradient
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The lines between `begin` and the next "// END" (exclusive), leading spaces removed, with the
/// clang-format guards dropped.
std::vector<std::string> snippet_in_test(const std::string& src, const std::string& begin) {
  std::vector<std::string> out;
  std::stringstream ss(src.substr(src.find(begin) + begin.size()));
  std::string line;
  std::getline(ss, line);  // rest of the BEGIN line
  while (std::getline(ss, line)) {
    const auto first = line.find_first_not_of(' ');
    const std::string t = first == std::string::npos ? "" : line.substr(first);
    if (t == "// END") break;
    if (t == "// clang-format off" || t == "// clang-format on") continue;
    out.push_back(t);
  }
  return out;
}

/// The lines of the k-th C++ block of the README's "Using it" section, leading spaces removed.
std::vector<std::string> snippet_in_readme(const std::string& readme, int k) {
  const auto sec = readme.substr(readme.find("## Using it"));
  std::size_t at = 0;
  for (int i = 0; i <= k; ++i) at = sec.find("```c++\n", at) + 7;
  std::vector<std::string> out;
  std::stringstream ss(sec.substr(at, sec.find("```", at) - at));
  std::string line;
  while (std::getline(ss, line)) {
    const auto first = line.find_first_not_of(' ');
    out.push_back(first == std::string::npos ? "" : line.substr(first));
  }
  return out;
}

}  // namespace

TEST_CASE("README: the snippets compiled above are the README's, line for line", "[readme]") {
  const std::string readme = read_text(FGBG_TEST_DATA_DIR "/../../README.md");
  const std::string src = read_text(__FILE__);
  auto first = snippet_in_readme(readme, 0);
  REQUIRE(first.size() > 2);
  CHECK(first[0] == "#include <fgbg/fgbg.hpp>");
  first.erase(first.begin(), first.begin() + 2);  // the include and the blank line after it
  CHECK(first == snippet_in_test(src, "// BEGIN README \"Using it\", first snippet"));
  CHECK(snippet_in_readme(readme, 1) ==
        snippet_in_test(src, "// BEGIN README \"Using it\", loss-outputs snippet"));
  CHECK(snippet_in_readme(readme, 2) ==
        snippet_in_test(src, "// BEGIN README \"Using it\", second snippet"));
}
