// fgbg in libtorch: fgbg's sigmoid focal loss as a torch::autograd::Function whose forward runs
// the fused value_and_grad once over the tensors' memory (Eigen::Maps, no copy for contiguous
// float32 CPU tensors) and whose backward scales the stored gradient by grad_output; then 200
// steps of SGD on a small dense head. Exits non-zero unless the loss matches a torch-written
// focal loss at the start and falls.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <exception>

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

}  // namespace

int main() {
  try {
    torch::manual_seed(0);
    torch::set_num_threads(1);
    const int64_t n = 512, d = 16, c = 8;
    const torch::Tensor feats = torch::randn({n, d});
    torch::Tensor labels = (torch::matmul(feats, torch::randn({d, c + 1}) * 2)).argmax(1);
    labels.masked_fill_(torch::rand({n}) < 0.6, 0);  // mostly background
    torch::nn::Linear head(d, c);
    {
      torch::NoGradGuard no_grad;
      head->weight.normal_(0, 0.01);
      head->bias.fill_(-4.6);  // prior probability 0.01
    }
    const torch::Tensor first = torch_focal(head->forward(feats), labels, 0.25, 2.0);
    torch::optim::SGD opt(head->parameters(), torch::optim::SGDOptions(0.5).momentum(0.9));
    float start = 0, end = 0;
    for (int step = 0; step < 200; ++step) {
      opt.zero_grad();
      const torch::Tensor loss = FgbgFocalLoss::apply(head->forward(feats), labels, 0.25, 2.0);
      loss.backward();
      opt.step();
      if (step == 0) start = loss.item<float>();
      end = loss.item<float>();
    }
    const float ref = first.item<float>();
    std::printf("fgbg focal loss in libtorch: step 0 %.6f (torch formula %.6f), step 199 %.6f\n",
                start, ref, end);
    if (!(std::abs(start - ref) <= 1e-5f * std::abs(ref)) || !(end < 0.5f * start)) {
      std::printf("FAILED: the loss does not match the torch formula or does not fall\n");
      return 1;
    }
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
