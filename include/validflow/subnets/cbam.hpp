#pragma once
// CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018), on one NCHW tensor:
//   channel attention  Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))   (shared MLP C -> C/r -> C, ReLU)
//   spatial attention  Ms = sigmoid(conv7x7([mean_c(x'), max_c(x')]))     with x' = Mc * x
//   output             Ms * x'
#include <validflow/core/flow.hpp>
#include <validflow/core/packed_conv.hpp>

#include <algorithm>

namespace validflow {

struct CBAMOptions {
  /* implicit */ CBAMOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Reduction ratio r of the channel MLP (hidden width max(1, C / r)).
  TORCH_ARG(int64_t, reduction) = 16;
  /// Kernel size of the spatial-attention convolution.
  TORCH_ARG(int64_t, spatial_kernel_size) = 7;
};

class CBAMImpl : public torch::nn::Cloneable<CBAMImpl> {
 public:
  using Options = CBAMOptions;

  explicit CBAMImpl(CBAMOptions options) : options(std::move(options)) { CBAMImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.channels() > 0 && options.reduction() > 0, "CBAM: channels and reduction must be positive");
    TORCH_CHECK(options.spatial_kernel_size() % 2 == 1, "CBAM: spatial_kernel_size must be odd");
    const int64_t hidden = std::max<int64_t>(1, options.channels() / options.reduction());
    packed_.clear();
    mlp_reduce =
        register_module("mlp_reduce", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), hidden, 1)));
    mlp_expand =
        register_module("mlp_expand", torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, options.channels(), 1)));
    spatial = register_module(
        "spatial",
        torch::nn::Conv2d(
            torch::nn::Conv2dOptions(2, 1, options.spatial_kernel_size()).padding(options.spatial_kernel_size() / 2)));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::CBAM(channels=" << options.channels() << ", reduction=" << options.reduction()
           << ", spatial_kernel_size=" << options.spatial_kernel_size() << ")";
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto mlp = [&](const torch::Tensor& pooled) {
      return packed_(*mlp_expand, torch::relu(packed_(*mlp_reduce, pooled)));
    };
    const auto channel_attention =
        torch::sigmoid(mlp(x.mean({2, 3}, /*keepdim=*/true)) + mlp(x.amax({2, 3}, /*keepdim=*/true)));
    const auto refined = x * channel_attention;
    const auto pooled = torch::cat({refined.mean(1, /*keepdim=*/true), refined.amax(1, /*keepdim=*/true)}, 1);
    return refined * torch::sigmoid(packed_(*spatial, pooled));
  }

  /// Multiply-accumulates of one sample at an h x w map.
  double macs(int64_t h, int64_t w) const {
    return conv_macs(*mlp_reduce, 1, 1) * 2 + conv_macs(*mlp_expand, 1, 1) * 2 + conv_macs(*spatial, h, w);
  }

  CBAMOptions options;
  torch::nn::Conv2d mlp_reduce{nullptr};
  torch::nn::Conv2d mlp_expand{nullptr};
  torch::nn::Conv2d spatial{nullptr};

 private:
  PackedConvolutions packed_;
};

TORCH_MODULE(CBAM);

}  // namespace validflow
