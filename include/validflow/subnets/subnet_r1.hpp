#pragma once
// ValidFlow's FA-flow subnet r1 ("feature advection"): the scales pass in parallel, with no up/down-sampling
// shortcuts. Each scale: depthwise-separable conv in -> hidden (depthwise k x k + pointwise 1 x 1, biases),
// LeakyReLU, depthwise-separable conv hidden -> out, CBAM on the output, times a learnable scalar gamma
// (zero at init, so the enclosing coupling starts as the identity, like CS-Flow's gammas).
#include <validflow/core/packed_conv.hpp>
#include <validflow/core/subnet.hpp>
#include <validflow/subnets/cbam.hpp>
#include <validflow/subnets/subnet_options.hpp>

#include <string>
#include <vector>

namespace validflow {

struct DepthwiseSeparableConvOptions {
  DepthwiseSeparableConvOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
};

/// Depthwise k x k conv (groups = in channels) followed by a pointwise 1 x 1 conv; both with bias.
class DepthwiseSeparableConvImpl : public torch::nn::Cloneable<DepthwiseSeparableConvImpl> {
 public:
  explicit DepthwiseSeparableConvImpl(DepthwiseSeparableConvOptions options) : options(std::move(options)) {
    DepthwiseSeparableConvImpl::reset();
  }

  void reset() override {
    const auto c = options.in_channels(), k = options.kernel_size();
    packed_.clear();
    depthwise =
        register_module("depthwise", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, k).padding(k / 2).groups(c)));
    pointwise = register_module("pointwise", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, options.out_channels(), 1)));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::DepthwiseSeparableConv(" << options.in_channels() << " -> " << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ")";
  }

  torch::Tensor forward(const torch::Tensor& x) { return packed_(*pointwise, packed_(*depthwise, x)); }

  double macs(int64_t h, int64_t w) const { return conv_macs(*depthwise, h, w) + conv_macs(*pointwise, h, w); }

  DepthwiseSeparableConvOptions options;
  torch::nn::Conv2d depthwise{nullptr};
  torch::nn::Conv2d pointwise{nullptr};

 private:
  PackedConvolutions packed_;
};

TORCH_MODULE(DepthwiseSeparableConv);

/// r1's options: the shared subnet options, with CBAM on by default (the paper's FA flow).
struct SubnetR1Options : SubnetOptions<SubnetR1Options> {
  SubnetR1Options() { cbam(true); }
};

class SubnetR1Impl : public torch::nn::Cloneable<SubnetR1Impl> {
 public:
  using Options = SubnetR1Options;

  explicit SubnetR1Impl(SubnetR1Options options) : options(std::move(options)) { SubnetR1Impl::reset(); }

  void reset() override {
    const auto& in = options.in_channels();
    const auto& out = options.out_channels();
    TORCH_CHECK(!in.empty() && out.size() == in.size(),
                "SubnetR1: in_channels and out_channels need one entry per scale");
    TORCH_CHECK(options.kernel_size() % 2 == 1, "SubnetR1: kernel_size must be odd");
    gammas.clear();
    input_convs.clear();
    output_convs.clear();
    cbams.clear();
    for (size_t s = 0; s < in.size(); ++s) {
      const auto name = std::to_string(s);
      if (options.use_gamma()) gammas.push_back(register_parameter("gamma" + name, torch::zeros({1})));
      input_convs.push_back(
          register_module("conv_scale" + name + "_0", DepthwiseSeparableConv(DepthwiseSeparableConvOptions(
                                                          in[s], options.hidden_channels(), options.kernel_size()))));
      output_convs.push_back(
          register_module("conv_scale" + name + "_1", DepthwiseSeparableConv(DepthwiseSeparableConvOptions(
                                                          options.hidden_channels(), out[s], options.kernel_size()))));
      if (options.cbam()) {
        cbams.push_back(register_module("cbam" + name, CBAM(CBAMOptions(out[s]).reduction(options.cbam_reduction()))));
      }
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::SubnetR1(in=" << torch::IntArrayRef(options.in_channels())
           << ", out=" << torch::IntArrayRef(options.out_channels()) << ", hidden=" << options.hidden_channels()
           << ", kernel_size=" << options.kernel_size() << ", cbam=" << options.cbam() << ")";
  }

  TensorList forward(const TensorList& x) {
    check_flow_input(x, options.in_channels(), "SubnetR1", input_convs[0]->pointwise->weight);
    TensorList out;
    for (size_t s = 0; s < x.size(); ++s) {
      auto o = output_convs[s](torch::leaky_relu(input_convs[s](x[s]), options.leaky_slope()));
      if (options.cbam()) o = cbams[s](o);
      if (options.use_gamma()) o = o * gammas[s];
      out.push_back(o);
    }
    return out;
  }

  double macs(const MapSizes& sizes) const {
    double total = 0;
    for (size_t s = 0; s < input_convs.size(); ++s) {
      const auto [h, w] = sizes[s];
      total += input_convs[s]->macs(h, w) + output_convs[s]->macs(h, w);
      if (options.cbam()) total += cbams[s]->macs(h, w);
    }
    return total;
  }

  SubnetR1Options options;
  std::vector<torch::Tensor> gammas;
  std::vector<DepthwiseSeparableConv> input_convs, output_convs;
  std::vector<CBAM> cbams;
};

TORCH_MODULE(SubnetR1);

}  // namespace validflow
