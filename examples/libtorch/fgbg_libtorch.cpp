// fgbg in libtorch: fgbg's losses as one torch::autograd::Function whose forward runs a fused
// value_and_grad once over the tensors' memory (Eigen::Maps, no copy for contiguous float32 CPU
// tensors) and whose backward scales the stored gradient by grad_output; then 200 steps of SGD
// on a small dense head with each of three losses: the sigmoid focal loss, BCE, and GHM-C with
// momentum, whose state object (the moving bin populations) lives across the steps. Exits
// non-zero unless each loss matches a torch-written one at the start and falls.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include <fgbg/soft_sampling/ghm_c_loss.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/soft_sampling/sigmoid_focal_loss.hpp>

namespace {

/// loss = fgbg::SigmoidFocalLoss over logits N x C (float32, CPU) and labels N (fgbg's: -1 ignore,
/// 0 background, k class k), normalised by max(1, #positives) (RetinaNet).
struct FgbgFocalLoss : torch::autograd::Function<FgbgFocalLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels, double alpha, double gamma) {
    TORCH_CHECK(logits.device().is_cpu() && labels.device().is_cpu(), "fgbg runs on the CPU");
    TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat,
                "fgbg: logits must be a 2-D float32 tensor");
    TORCH_CHECK(labels.dim() == 1 && !labels.is_floating_point(),
                "fgbg: labels must be 1-D integers");
    const torch::Tensor x = logits.detach().contiguous();
    const torch::Tensor y = labels.to(torch::kInt32).contiguous();
    const auto n = x.size(0), c = x.size(1);
    torch::Tensor grad = torch::empty_like(x);
    const Eigen::Map<const fgbg::RowArray<float>> xm(x.data_ptr<float>(), n, c);
    const Eigen::Map<const fgbg::LabelVector> ym(y.data_ptr<std::int32_t>(), y.size(0));
    Eigen::Map<fgbg::RowArray<float>> gm(grad.data_ptr<float>(), n, c);
    const fgbg::SigmoidFocalLoss<float> loss(
        {static_cast<float>(alpha), static_cast<float>(gamma)});
    const float value = loss.value_and_grad(xm, ym, gm);  // throws before writing anything
    ctx->saved_data["grad"] = grad;
    return torch::tensor(value);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    const torch::Tensor grad = ctx->saved_data["grad"].toTensor();
    return {grad * grad_output[0], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

using XMap = Eigen::Map<const fgbg::RowArray<float>>;
using YMap = Eigen::Map<const fgbg::LabelVector>;
using GMap = Eigen::Map<fgbg::RowArray<float>>;
/// One fused call of any fgbg loss: value_and_grad(logits, labels, grad [, state]).
using Kernel = std::function<float(const XMap&, const YMap&, GMap&)>;

/// Any fgbg dense loss over logits N x C (float32, CPU) and labels N, as one autograd Function.
struct FgbgLoss : torch::autograd::Function<FgbgLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels, const Kernel& kernel) {
    TORCH_CHECK(logits.device().is_cpu() && labels.device().is_cpu(), "fgbg runs on the CPU");
    TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat,
                "fgbg: logits must be a 2-D float32 tensor");
    TORCH_CHECK(labels.dim() == 1 && !labels.is_floating_point(),
                "fgbg: labels must be 1-D integers");
    const torch::Tensor x = logits.detach().contiguous();
    const torch::Tensor y = labels.to(torch::kInt32).contiguous();
    torch::Tensor grad = torch::empty_like(x);
    const XMap xm(x.data_ptr<float>(), x.size(0), x.size(1));
    const YMap ym(y.data_ptr<std::int32_t>(), y.size(0));
    GMap gm(grad.data_ptr<float>(), x.size(0), x.size(1));
    const float value = kernel(xm, ym, gm);  // fgbg throws before writing anything
    ctx->saved_data["grad"] = grad;
    return torch::tensor(value);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    const torch::Tensor grad = ctx->saved_data["grad"].toTensor();
    return {grad * grad_output[0], torch::Tensor(), torch::Tensor()};
  }
};

/// torch GHM-C (mmdetection's GHMC with momentum): weights from the moving bin populations
/// `acc` (updated in place), BCE summed and divided by the valid count.
torch::Tensor torch_ghmc(const torch::Tensor& x, const torch::Tensor& labels, int bins,
                         double momentum, std::vector<double>& acc) {
  const auto c = x.size(1);
  const torch::Tensor t =
      torch::one_hot(labels.clamp_min(0), c + 1).slice(1, 1, c + 1).to(x.scalar_type());
  const torch::Tensor g = (torch::sigmoid(x.detach()) - t).abs();
  const double tot = static_cast<double>(x.numel());
  torch::Tensor w = torch::zeros_like(x);
  int nonempty = 0;
  for (int k = 0; k < bins; ++k) {
    const float lo = static_cast<float>(k) / static_cast<float>(bins);
    const float hi = k + 1 == bins ? 1.0f + 1e-6f : static_cast<float>(k + 1) / bins;
    const torch::Tensor in = (g >= lo) & (g < hi);
    const double cnt = in.sum().item<double>();
    if (cnt > 0) {
      acc[k] = momentum * acc[k] + (1 - momentum) * cnt;
      w.masked_fill_(in, tot / acc[k]);
      ++nonempty;
    }
  }
  if (nonempty) w = w / nonempty;
  return torch::binary_cross_entropy_with_logits(x, t, w, {}, at::Reduction::Sum) / tot;
}

/// The same loss written with torch operations (torchvision's formula) on one-hot targets.
torch::Tensor torch_focal(const torch::Tensor& x, const torch::Tensor& labels, double alpha,
                          double gamma) {
  const auto c = x.size(1);
  const torch::Tensor t =
      torch::one_hot(labels.clamp_min(0), c + 1).slice(1, 1, c + 1).to(x.scalar_type());
  const torch::Tensor p = torch::sigmoid(x);
  const torch::Tensor ce =
      torch::binary_cross_entropy_with_logits(x, t, {}, {}, at::Reduction::None);
  const torch::Tensor pt = p * t + (1 - p) * (1 - t);
  const torch::Tensor at = alpha * t + (1 - alpha) * (1 - t);
  const double npos = std::max<double>(1.0, (labels > 0).sum().item<double>());
  return (at * ce * torch::pow(1 - pt, gamma)).sum() / npos;
}

/// 200 SGD steps of a fresh head on `loss_of(logits)`; checks step 0 against `reference` (the
/// torch formula of the same loss, evaluated first) and that the loss falls below `fall` of it.
bool train(const char* name, const torch::Tensor& feats, int64_t c,
           const std::function<torch::Tensor(const torch::Tensor&)>& loss_of,
           const std::function<torch::Tensor(const torch::Tensor&)>& reference, float fall) {
  torch::manual_seed(1);
  torch::nn::Linear head(feats.size(1), c);
  {
    torch::NoGradGuard no_grad;
    head->weight.normal_(0, 0.01);
    head->bias.fill_(-4.6);  // prior probability 0.01
  }
  const float ref = reference(head->forward(feats).detach()).item<float>();
  torch::optim::SGD opt(head->parameters(), torch::optim::SGDOptions(0.5).momentum(0.9));
  float start = 0, end = 0;
  for (int step = 0; step < 200; ++step) {
    opt.zero_grad();
    const torch::Tensor loss = loss_of(head->forward(feats));
    loss.backward();
    opt.step();
    if (step == 0) start = loss.item<float>();
    end = loss.item<float>();
  }
  std::printf("fgbg %s in libtorch: step 0 %.6f (torch formula %.6f), step 199 %.6f\n", name, start,
              ref, end);
  if (!(std::abs(start - ref) <= 1e-5f * std::abs(ref)) || !(end < fall * start)) {
    std::printf("FAILED: %s does not match the torch formula or does not fall\n", name);
    return false;
  }
  return true;
}

}  // namespace

int main() {
  try {
    torch::manual_seed(0);
    torch::set_num_threads(1);
    const int64_t n = 512, d = 16, c = 8;
    const torch::Tensor feats = torch::randn({n, d});
    torch::Tensor labels = (torch::matmul(feats, torch::randn({d, c + 1}) * 2)).argmax(1);
    labels.masked_fill_(torch::rand({n}) < 0.6, 0);  // mostly background

    const fgbg::SigmoidFocalLoss<float> focal({0.25f, 2.0f});
    const Kernel focal_kernel = [&](const XMap& x, const YMap& y, GMap& g) {
      return focal.value_and_grad(x, y, g);
    };
    bool ok = train(
        "focal loss", feats, c,
        [&](const torch::Tensor& x) { return FgbgFocalLoss::apply(x, labels, 0.25, 2.0); },
        [&](const torch::Tensor& x) { return torch_focal(x, labels, 0.25, 2.0); }, 0.5f);
    ok &= train(
        "focal loss (generic Function)", feats, c,
        [&](const torch::Tensor& x) { return FgbgLoss::apply(x, labels, focal_kernel); },
        [&](const torch::Tensor& x) { return torch_focal(x, labels, 0.25, 2.0); }, 0.5f);

    // BCE with the mean over every element (torch's default reduction).
    const fgbg::SigmoidCrossEntropyLoss<float> bce;
    const Kernel bce_kernel = [&](const XMap& x, const YMap& y, GMap& g) {
      return bce.value_and_grad(x, y, g, fgbg::Weights<float>(), fgbg::Normalizer::mean());
    };
    ok &= train(
        "BCE", feats, c,
        [&](const torch::Tensor& x) { return FgbgLoss::apply(x, labels, bce_kernel); },
        [&](const torch::Tensor& x) {
          const torch::Tensor t =
              torch::one_hot(labels, c + 1).slice(1, 1, c + 1).to(torch::kFloat);
          return torch::binary_cross_entropy_with_logits(x, t);
        },
        0.5f);

    // GHM-C with momentum: the state object carries the moving bin populations across steps,
    // as mmdetection's GHMC module does. The torch reference starts from the same empty state.
    const fgbg::GhmcLoss<float> ghmc({10, 0.75});
    fgbg::GhmcState state(10);
    const Kernel ghmc_kernel = [&](const XMap& x, const YMap& y, GMap& g) {
      return ghmc.value_and_grad(x, y, g, state);
    };
    std::vector<double> acc(10, 0.0);
    ok &= train(
        "GHM-C (momentum 0.75)", feats, c,
        [&](const torch::Tensor& x) { return FgbgLoss::apply(x, labels, ghmc_kernel); },
        [&](const torch::Tensor& x) { return torch_ghmc(x, labels, 10, 0.75, acc); }, 0.9f);
    if (state.snapshot().moving == std::vector<double>(10, 0.0)) {
      std::printf("FAILED: the GHM-C state did not advance\n");
      ok = false;
    }
    if (!ok) return 1;

    // An error of fgbg's reaches the caller before anything is written.
    try {
      FgbgFocalLoss::apply(torch::zeros({3, 2}), torch::full({3}, 5, torch::kLong), 0.25, 2.0);
      std::printf("FAILED: a label outside -1..C was accepted\n");
      return 1;
    } catch (const std::invalid_argument& e) {
      std::printf("label 5 of 2 classes refused: %s\n", e.what());
    }
    return 0;
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
