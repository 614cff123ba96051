#pragma once
// ConvSubnet: the simplest coupling subnet. Each scale independently: conv k x k (in -> hidden),
// LeakyReLU, conv k x k (hidden -> out). No cross-scale links. Useful for tests, examples and
// single-scale flows. The output conv starts at zero, so a coupling built on it starts as the identity.
#include <validflow/core/packed_conv.hpp>
#include <validflow/core/subnet.hpp>

#include <string>
#include <vector>

namespace validflow {

struct ConvSubnetOptions {
  TORCH_ARG(std::vector<int64_t>, in_channels) = {};
  TORCH_ARG(std::vector<int64_t>, out_channels) = {};
  TORCH_ARG(int64_t, hidden_channels) = 64;
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(double, leaky_slope) = 0.1;
  /// Zero the output conv so the enclosing coupling starts as the identity.
  TORCH_ARG(bool, zero_init_output) = true;
};

class ConvSubnetImpl : public torch::nn::Cloneable<ConvSubnetImpl> {
 public:
  using Options = ConvSubnetOptions;

  explicit ConvSubnetImpl(ConvSubnetOptions options) : options(std::move(options)) { ConvSubnetImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.in_channels().size() == options.out_channels().size() && !options.in_channels().empty(),
                "ConvSubnet: in_channels and out_channels must have one entry per scale");
    TORCH_CHECK(options.kernel_size() % 2 == 1, "ConvSubnet: kernel_size must be odd, got ", options.kernel_size());
    hidden.clear();
    output.clear();
    packed_.clear();
    const auto pad = options.kernel_size() / 2;
    for (size_t s = 0; s < options.in_channels().size(); ++s) {
      hidden.push_back(
          register_module("conv_scale" + std::to_string(s) + "_0",
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels()[s],
                                                                     options.hidden_channels(), options.kernel_size())
                                                .padding(pad))));
      output.push_back(
          register_module("conv_scale" + std::to_string(s) + "_1",
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(options.hidden_channels(),
                                                                     options.out_channels()[s], options.kernel_size())
                                                .padding(pad))));
      if (options.zero_init_output()) {
        torch::NoGradGuard no_grad;
        output.back()->weight.zero_();
        output.back()->bias.zero_();
      }
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::ConvSubnet(in=" << torch::IntArrayRef(options.in_channels())
           << ", out=" << torch::IntArrayRef(options.out_channels()) << ", hidden=" << options.hidden_channels()
           << ", kernel_size=" << options.kernel_size() << ")";
  }

  TensorList forward(const TensorList& x) {
    check_flow_input(x, options.in_channels(), "ConvSubnet", hidden[0]->weight);
    TensorList out;
    for (size_t s = 0; s < x.size(); ++s) {
      out.push_back(packed_(*output[s], torch::leaky_relu(packed_(*hidden[s], x[s]), options.leaky_slope())));
    }
    return out;
  }

  double macs(const MapSizes& sizes) const {
    double total = 0;
    for (size_t s = 0; s < hidden.size(); ++s) {
      total += conv_macs(*hidden[s], sizes[s][0], sizes[s][1]) + conv_macs(*output[s], sizes[s][0], sizes[s][1]);
    }
    return total;
  }

  ConvSubnetOptions options;
  std::vector<torch::nn::Conv2d> hidden;
  std::vector<torch::nn::Conv2d> output;

 private:
  PackedConvolutions packed_;
};

TORCH_MODULE(ConvSubnet);

}  // namespace validflow
