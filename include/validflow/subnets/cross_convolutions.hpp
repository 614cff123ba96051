#pragma once
// CrossConvolutions: CS-Flow's cross-scale subnet, layer for layer as the official code
// (marco-rudolph/cs-flow freia_funcs.py), generalised to any number of scales, plus the two extensions that
// make it ValidFlow's FB-flow subnet r2 (see SubnetR2Options).
//
//   h_s = LeakyReLU_0.1(conv_scale{s}_0(x_s))                           in -> hidden, k x k
//   o_s = conv_scale{s}_1(h_s)                                         hidden -> out, k x k
//       + down_conv{s-1}{s}(h_{s-1})                                   stride-2 conv from the finer scale
//       + up_conv{s+1}{s}(upsample_x2(h_{s+1}))                        bilinear x2 (align_corners=false) + conv
//   [r2 only] o_0 += up_conv20(upsample_x4(h_2)), o_2 += down_conv02(h_0)   (stride-4 conv): the 1<->3 branches
//   [r2 only] o_s = CBAM_s(o_s)
//   o_s *= gamma_s                                                     learnable scalar, 0 at init
// Every conv has a bias and zero padding k // 2. Scales must halve: H_s = 2 * H_{s+1} (and W).
// Parameter names equal the official state-dict names (conv_scale0_0, up_conv10, down_conv01, gamma0, ...).
#include <validflow/core/packed_conv.hpp>
#include <validflow/core/subnet.hpp>
#include <validflow/subnets/cbam.hpp>
#include <validflow/subnets/subnet_options.hpp>

#include <string>
#include <vector>

namespace validflow {

struct CrossConvolutionsOptions : SubnetOptions<CrossConvolutionsOptions> {
  /// ValidFlow r2: extra branches between scales 0 and 2 (stride-4 conv down, bilinear x4 + conv up).
  TORCH_ARG(bool, long_branches) = false;
};

struct SubnetR2Options : CrossConvolutionsOptions {
  SubnetR2Options() {
    long_branches(true);
    cbam(true);
  }
};

class CrossConvolutionsImpl : public torch::nn::Cloneable<CrossConvolutionsImpl> {
 public:
  using Options = CrossConvolutionsOptions;

  explicit CrossConvolutionsImpl(CrossConvolutionsOptions options) : options(std::move(options)) {
    CrossConvolutionsImpl::reset();
  }

  void reset() override {
    const auto& in = options.in_channels();
    const auto& out = options.out_channels();
    const auto n = in.size();
    TORCH_CHECK(n >= 1 && out.size() == n, "CrossConvolutions: in_channels and out_channels need one entry per scale");
    TORCH_CHECK(options.kernel_size() % 2 == 1, "CrossConvolutions: kernel_size must be odd");
    TORCH_CHECK(!options.long_branches() || n >= 3, "CrossConvolutions: long_branches need at least 3 scales");
    const int64_t k = options.kernel_size(), hidden = options.hidden_channels();
    auto conv = [&](int64_t from, int64_t to, int64_t stride) {
      return torch::nn::Conv2d(torch::nn::Conv2dOptions(from, to, k).stride(stride).padding(k / 2));
    };
    packed_.clear();
    gammas.clear();
    input_convs.clear();
    output_convs.clear();
    up_convs.clear();
    down_convs.clear();
    cbams.clear();
    if (options.use_gamma()) {
      for (size_t s = 0; s < n; ++s)
        gammas.push_back(register_parameter("gamma" + std::to_string(s), torch::zeros({1})));
    }
    for (size_t s = 0; s < n; ++s) {
      input_convs.push_back(register_module("conv_scale" + std::to_string(s) + "_0", conv(in[s], hidden, 1)));
    }
    for (size_t s = 0; s < n; ++s) {
      output_convs.push_back(register_module("conv_scale" + std::to_string(s) + "_1", conv(hidden, out[s], 1)));
    }
    for (size_t s = 0; s + 1 < n; ++s) {  // up_conv{s+1}{s}: from scale s+1 to s
      up_convs.push_back(
          register_module("up_conv" + std::to_string(s + 1) + std::to_string(s), conv(hidden, out[s], 1)));
    }
    for (size_t s = 0; s + 1 < n; ++s) {  // down_conv{s}{s+1}: from scale s to s+1
      down_convs.push_back(
          register_module("down_conv" + std::to_string(s) + std::to_string(s + 1), conv(hidden, out[s + 1], 2)));
    }
    if (options.long_branches()) {
      up_conv20 = register_module("up_conv20", conv(hidden, out[0], 1));
      down_conv02 = register_module("down_conv02", conv(hidden, out[2], 4));
    }
    if (options.cbam()) {
      for (size_t s = 0; s < n; ++s) {
        cbams.push_back(
            register_module("cbam" + std::to_string(s), CBAM(CBAMOptions(out[s]).reduction(options.cbam_reduction()))));
      }
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::CrossConvolutions(in=" << torch::IntArrayRef(options.in_channels())
           << ", out=" << torch::IntArrayRef(options.out_channels()) << ", hidden=" << options.hidden_channels()
           << ", kernel_size=" << options.kernel_size() << ", long_branches=" << options.long_branches()
           << ", cbam=" << options.cbam() << ")";
  }

  TensorList forward(const TensorList& x) {
    check_flow_input(x, options.in_channels(), "CrossConvolutions", input_convs[0]->weight);
    check_halving_sizes(x);
    const auto n = x.size();
    TensorList hidden, out;
    for (size_t s = 0; s < n; ++s)
      hidden.push_back(torch::leaky_relu(packed_(*input_convs[s], x[s]), options.leaky_slope()));
    for (size_t s = 0; s < n; ++s) out.push_back(packed_(*output_convs[s], hidden[s]));
    // Same summation order as the official code: o1 = o1 + down01 + up21.
    for (size_t s = 0; s < n; ++s) {
      if (s > 0) out[s] = out[s] + packed_(*down_convs[s - 1], hidden[s - 1]);
      if (s + 1 < n) out[s] = out[s] + packed_(*up_convs[s], upsample(hidden[s + 1], 2));
    }
    if (options.long_branches()) {
      out[0] = out[0] + packed_(*up_conv20, upsample(hidden[2], 4));
      out[2] = out[2] + packed_(*down_conv02, hidden[0]);
    }
    for (size_t s = 0; s < n; ++s) {
      if (options.cbam()) out[s] = cbams[s](out[s]);
      if (options.use_gamma()) out[s] = out[s] * gammas[s];
    }
    return out;
  }

  double macs(const MapSizes& sizes) const {
    double total = 0;
    const auto n = input_convs.size();
    for (size_t s = 0; s < n; ++s) {
      const auto [h, w] = sizes[s];
      total += conv_macs(*input_convs[s], h, w) + conv_macs(*output_convs[s], h, w);
      if (s + 1 < n)
        total += conv_macs(*up_convs[s], h, w) + conv_macs(*down_convs[s], sizes[s + 1][0], sizes[s + 1][1]);
      if (options.cbam()) total += cbams[s]->macs(h, w);
    }
    if (options.long_branches()) {
      total += conv_macs(*up_conv20, sizes[0][0], sizes[0][1]) + conv_macs(*down_conv02, sizes[2][0], sizes[2][1]);
    }
    return total;
  }

  CrossConvolutionsOptions options;
  std::vector<torch::Tensor> gammas;
  std::vector<torch::nn::Conv2d> input_convs, output_convs, up_convs, down_convs;
  torch::nn::Conv2d up_conv20{nullptr}, down_conv02{nullptr};
  std::vector<CBAM> cbams;

 private:
  PackedConvolutions packed_;

  static torch::Tensor upsample(const torch::Tensor& x, double factor) {
    namespace F = torch::nn::functional;
    return F::interpolate(x, F::InterpolateFuncOptions()
                                 .scale_factor(std::vector<double>{factor, factor})
                                 .mode(torch::kBilinear)
                                 .align_corners(false));
  }

  static void check_halving_sizes(const TensorList& x) {
    for (size_t s = 0; s + 1 < x.size(); ++s) {
      if (x[s].size(2) != 2 * x[s + 1].size(2) || x[s].size(3) != 2 * x[s + 1].size(3)) {
        detail::throw_input_error("CrossConvolutions", "map sizes must halve from scale to scale: scale ", s, " is ",
                                  x[s].size(2), "x", x[s].size(3), ", scale ", s + 1, " is ", x[s + 1].size(2), "x",
                                  x[s + 1].size(3));
      }
    }
  }
};

TORCH_MODULE(CrossConvolutions);

/// ValidFlow's FB-flow subnet r2 is CrossConvolutions built with SubnetR2Options.
using SubnetR2 = CrossConvolutions;

}  // namespace validflow
