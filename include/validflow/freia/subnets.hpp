#pragma once
// The subnets of the single-tensor (FrEIA) blocks, and their contract. FrEIA builds a block's subnet with
// `subnet_constructor(c_in, c_out)`; here a block sets `in_channels` / `out_channels` on the subnet's options and
// the user sets the rest. A subnet type `S` (a module holder) works in the blocks of validflow/freia/ when:
//   * `typename S::Impl::Options` is default-constructible with setters `in_channels(int64_t)` and
//     `out_channels(int64_t)`;
//   * `S::Impl` is constructible from its Options and has `torch::Tensor forward(const torch::Tensor&)` that maps
//     [batch, in_channels, spatial...] to [batch, out_channels, spatial...];
//   * `S::Impl` has `double macs(int64_t positions) const`: multiply-accumulates of one sample at that many
//     spatial positions (1 for vectors).
// The two subnets the field's detectors use are here, named as nn.Sequential names them ("0", "2", ...), so a
// FrEIA state dict loads without renaming: FcSubnet (CFlow-AD's `subnet_fc`: Linear, ReLU, Linear) and
// Conv2dSubnet (FastFlow's `subnet_conv`: Conv2d, ReLU, Conv2d, padding "same").
#include <validflow/core/packed_conv.hpp>
#include <validflow/util/modules.hpp>

#include <torch/torch.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace validflow {
namespace detail {

template <typename, typename = void>
struct is_tensor_subnet : std::false_type {};

template <typename S>
struct is_tensor_subnet<S, std::void_t<typename S::Impl::Options,
                                       decltype(std::declval<typename S::Impl::Options&>().in_channels(int64_t{})),
                                       decltype(std::declval<typename S::Impl::Options&>().out_channels(int64_t{})),
                                       decltype(std::declval<const typename S::Impl&>().macs(int64_t{}))>>
    : std::is_same<decltype(std::declval<typename S::Impl&>().forward(std::declval<const torch::Tensor&>())),
                   torch::Tensor> {};

/// nn.Linear applied along dim 1 of [batch, channels, spatial...] (per position for rank > 2).
inline torch::Tensor linear_on_channels(torch::nn::Linear layer, const torch::Tensor& x) {
  if (x.dim() == 2) return layer(x);
  return layer(x.movedim(1, -1)).movedim(-1, 1);
}

/// The checks every subnet's widths share (in and out set by the block, hidden by the user).
inline void check_subnet_widths(const char* subnet, int64_t in, int64_t out, int64_t hidden) {
  TORCH_CHECK(in > 0 && out > 0, subnet, ": in_channels and out_channels must be positive, got ", in, " and ", out);
  TORCH_CHECK(hidden >= 0, subnet, ": hidden_channels must be >= 0, got ", hidden);
}

}  // namespace detail

/// A subnet of the single-tensor blocks (see the top of this file).
template <typename S>
inline constexpr bool is_tensor_subnet_v = detail::is_tensor_subnet<S>::value;

struct FcSubnetOptions {
  TORCH_ARG(int64_t, in_channels) = 0;
  TORCH_ARG(int64_t, out_channels) = 0;
  /// Width of the hidden layers; 0 means 2 * in_channels (CFlow-AD's subnet_fc).
  TORCH_ARG(int64_t, hidden_channels) = 0;
  /// Hidden layers, each Linear + ReLU (CFlow-AD: 1).
  TORCH_ARG(int64_t, hidden_layers) = 1;
};

/// Fully connected subnet: (Linear, ReLU) x hidden_layers, Linear. On vectors [batch, C], or per position on
/// [batch, C, spatial...]. Layers are named "0", "2", ... like the nn.Sequential it mirrors.
class FcSubnetImpl : public torch::nn::Cloneable<FcSubnetImpl> {
 public:
  using Options = FcSubnetOptions;

  explicit FcSubnetImpl(FcSubnetOptions options) : options(std::move(options)) { FcSubnetImpl::reset(); }

  void reset() override {
    detail::check_subnet_widths("FcSubnet", options.in_channels(), options.out_channels(), options.hidden_channels());
    TORCH_CHECK(options.hidden_layers() >= 0 && options.hidden_layers() <= 16,
                "FcSubnet: hidden_layers must be in [0, 16], got ", options.hidden_layers());
    layers.clear();
    const int64_t hidden = options.hidden_channels() > 0 ? options.hidden_channels() : 2 * options.in_channels();
    int64_t in = options.in_channels();
    for (int64_t i = 0; i <= options.hidden_layers(); ++i) {
      const int64_t out = i == options.hidden_layers() ? options.out_channels() : hidden;
      layers.push_back(register_module(std::to_string(2 * i), torch::nn::Linear(in, out)));
      in = out;
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::FcSubnet(in=" << options.in_channels() << ", out=" << options.out_channels()
           << ", hidden_layers=" << options.hidden_layers() << ")";
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto h = x;
    for (size_t i = 0; i < layers.size(); ++i) {
      h = detail::linear_on_channels(layers[i], h);
      if (i + 1 < layers.size()) h = torch::relu(h);
    }
    return h;
  }

  double macs(int64_t positions) const {
    double total = 0;
    for (const auto& layer : layers) total += static_cast<double>(layer->weight.numel());
    return total * static_cast<double>(positions);
  }

  FcSubnetOptions options;
  std::vector<torch::nn::Linear> layers;
};

TORCH_MODULE(FcSubnet);

struct Conv2dSubnetOptions {
  TORCH_ARG(int64_t, in_channels) = 0;
  TORCH_ARG(int64_t, out_channels) = 0;
  /// Hidden width; 0 means in_channels (FastFlow: in_channels * hidden_ratio, 1.0 by default).
  TORCH_ARG(int64_t, hidden_channels) = 0;
  /// Odd kernel size, padded to keep the size ("same"); FastFlow alternates 3 and 1 unless conv3x3_only.
  TORCH_ARG(int64_t, kernel_size) = 3;
};

/// Convolutional subnet on [batch, C, H, W]: Conv2d, ReLU, Conv2d, both "same"-padded (FastFlow's subnet_conv).
/// Layers "0" and "2" like the nn.Sequential it mirrors.
class Conv2dSubnetImpl : public torch::nn::Cloneable<Conv2dSubnetImpl> {
 public:
  using Options = Conv2dSubnetOptions;

  explicit Conv2dSubnetImpl(Conv2dSubnetOptions options) : options(std::move(options)) { Conv2dSubnetImpl::reset(); }

  void reset() override {
    detail::check_subnet_widths("Conv2dSubnet", options.in_channels(), options.out_channels(),
                                options.hidden_channels());
    TORCH_CHECK(options.kernel_size() >= 1 && options.kernel_size() % 2 == 1 && options.kernel_size() <= 15,
                "Conv2dSubnet: kernel_size must be odd and in [1, 15], got ", options.kernel_size());
    const int64_t hidden = options.hidden_channels() > 0 ? options.hidden_channels() : options.in_channels();
    const auto conv = [&](int64_t in, int64_t out) {
      return torch::nn::Conv2d(
          torch::nn::Conv2dOptions(in, out, options.kernel_size()).padding(options.kernel_size() / 2));
    };
    packed_.clear();
    first = register_module("0", conv(options.in_channels(), hidden));
    second = register_module("2", conv(hidden, options.out_channels()));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::Conv2dSubnet(in=" << options.in_channels() << ", out=" << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ")";
  }

  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4, "Conv2dSubnet: expected [batch, C, H, W], got ", detail::shape_string(x));
    return packed_(*second, torch::relu(packed_(*first, x)));
  }

  double macs(int64_t positions) const {
    return static_cast<double>(first->weight.numel() + second->weight.numel()) * static_cast<double>(positions);
  }

  Conv2dSubnetOptions options;
  torch::nn::Conv2d first{nullptr};
  torch::nn::Conv2d second{nullptr};

 private:
  PackedConvolutions packed_;
};

TORCH_MODULE(Conv2dSubnet);

}  // namespace validflow
