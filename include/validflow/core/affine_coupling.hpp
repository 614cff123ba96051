#pragma once
// ParallelAffineCoupling<Subnet>: GLOW-style affine coupling applied to all scales jointly (CS-Flow's
// parallel_glow_coupling_layer), with a correct inverse.
//
// Per scale s, x_s = [x1_s | x2_s] (first C/2 channels | rest). Subnets see all scales at once:
//   [a | b] = s2(x2)          y1 = exp(clamp(a)) * x1 + b
//   [c | d] = s1(y1)          y2 = exp(clamp(c)) * x2 + d          y = [y1 | y2]
// log|det J| = sum over scales, channels and pixels of clamp(a) + clamp(c).
// Inverse: [c | d] = s1(y1), x2 = (y2 - d) * exp(-clamp(c)); [a | b] = s2(x2), x1 = (y1 - b) * exp(-clamp(a)).
// (The official CS-Flow and anomalib inverses take b from s1 and do not negate the log-det; this one is exact.)
#include <validflow/core/flow.hpp>
#include <validflow/core/soft_clamp.hpp>
#include <validflow/core/subnet.hpp>

#include <string>
#include <vector>

namespace validflow {

template <typename SubnetOptions>
struct ParallelAffineCouplingOptions {
  /* implicit */ ParallelAffineCouplingOptions(std::vector<int64_t> channels, SubnetOptions subnet = {})
      : channels_(std::move(channels)), subnet_(std::move(subnet)) {}
  /// Channels of each scale; each must be even.
  TORCH_ARG(std::vector<int64_t>, channels);
  /// Options of both subnets; the coupling fills in their in/out channels.
  TORCH_ARG(SubnetOptions, subnet);
  /// Soft clamp of the log-scales (CS-Flow: clamp 3, constant 0.636).
  TORCH_ARG(SoftClampOptions, soft_clamp) = {};
  /// Hard clamp of the outputs to [-output_clamp, output_clamp] in both directions (CS-Flow: 1e6); <= 0: off.
  TORCH_ARG(double, output_clamp) = 0.0;
};

template <typename Subnet>
class ParallelAffineCouplingImpl : public FlowLayer<ParallelAffineCouplingImpl<Subnet>> {
  static_assert(is_subnet_v<Subnet>,
                "ParallelAffineCoupling<Subnet>: Subnet must be a module holder whose Impl has "
                "`using Options = ...` with in_channels(std::vector<int64_t>) / out_channels(std::vector<int64_t>) "
                "setters, `TensorList forward(const TensorList&)` and `double macs(const MapSizes&) const` "
                "(see validflow/core/subnet.hpp)");

 public:
  using SubnetOptions = typename Subnet::Impl::Options;
  using Options = ParallelAffineCouplingOptions<SubnetOptions>;

  explicit ParallelAffineCouplingImpl(Options options) : options(std::move(options)) {
    ParallelAffineCouplingImpl::reset();
  }

  void reset() override {
    const auto& channels = options.channels();
    TORCH_CHECK(!channels.empty(), "ParallelAffineCoupling: needs at least one scale");
    first_half.clear();
    second_half.clear();
    for (size_t s = 0; s < channels.size(); ++s) {
      if (channels[s] < 2 || channels[s] % 2 != 0) {
        detail::throw_input_error("ParallelAffineCoupling", "scale ", s, " has ", channels[s],
                                  " channels; the coupling splits channels in halves and needs an even count");
      }
      first_half.push_back(channels[s] / 2);
      second_half.push_back(channels[s] - channels[s] / 2);
    }
    // Names as in the official CS-Flow state dict: s1 conditions the second half, s2 the first.
    s1 = this->register_module(
        "s1", Subnet(SubnetOptions(options.subnet()).in_channels(first_half).out_channels(doubled(second_half))));
    s2 = this->register_module(
        "s2", Subnet(SubnetOptions(options.subnet()).in_channels(second_half).out_channels(doubled(first_half))));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::ParallelAffineCoupling(channels=" << torch::IntArrayRef(options.channels())
           << ", clamp=" << options.soft_clamp().clamp() << ", output_clamp=" << options.output_clamp() << ")";
  }

  FlowResult forward(const TensorList& x) override {
    check_flow_input(x, options.channels(), "ParallelAffineCoupling", detail::reference_tensor(*this));
    NestedFlowCall nested;
    TensorList x1, x2;
    split(x, x1, x2);
    FlowResult result{{}, zero_log_det(x)};
    const auto r2 = run_subnet(*s2, x2, doubled(first_half), "ParallelAffineCoupling subnet s2");
    TensorList y1;
    for (size_t s = 0; s < x.size(); ++s) {
      const auto log_scale = soft_clamp(r2[s].narrow(1, 0, first_half[s]), options.soft_clamp());
      y1.push_back(log_scale.exp() * x1[s] + r2[s].narrow(1, first_half[s], first_half[s]));
      result.log_det = result.log_det + log_scale.sum({1, 2, 3});
    }
    const auto r1 = run_subnet(*s1, y1, doubled(second_half), "ParallelAffineCoupling subnet s1");
    for (size_t s = 0; s < x.size(); ++s) {
      const auto log_scale = soft_clamp(r1[s].narrow(1, 0, second_half[s]), options.soft_clamp());
      const auto y2 = log_scale.exp() * x2[s] + r1[s].narrow(1, second_half[s], second_half[s]);
      result.log_det = result.log_det + log_scale.sum({1, 2, 3});
      result.tensors.push_back(output_clamped(torch::cat({y1[s], y2}, 1)));
    }
    return result;
  }

  FlowResult inverse(const TensorList& z) override {
    check_flow_input(z, options.channels(), "ParallelAffineCoupling", detail::reference_tensor(*this));
    NestedFlowCall nested;
    TensorList y1, y2;
    split(z, y1, y2);
    FlowResult result{{}, zero_log_det(z)};
    const auto r1 = run_subnet(*s1, y1, doubled(second_half), "ParallelAffineCoupling subnet s1");
    TensorList x2;
    for (size_t s = 0; s < z.size(); ++s) {
      const auto log_scale = soft_clamp(r1[s].narrow(1, 0, second_half[s]), options.soft_clamp());
      x2.push_back((y2[s] - r1[s].narrow(1, second_half[s], second_half[s])) * (-log_scale).exp());
      result.log_det = result.log_det - log_scale.sum({1, 2, 3});
    }
    const auto r2 = run_subnet(*s2, x2, doubled(first_half), "ParallelAffineCoupling subnet s2");
    for (size_t s = 0; s < z.size(); ++s) {
      const auto log_scale = soft_clamp(r2[s].narrow(1, 0, first_half[s]), options.soft_clamp());
      const auto x1 = (y1[s] - r2[s].narrow(1, first_half[s], first_half[s])) * (-log_scale).exp();
      result.log_det = result.log_det - log_scale.sum({1, 2, 3});
      result.tensors.push_back(output_clamped(torch::cat({x1, x2[s]}, 1)));
    }
    return result;
  }

  double forward_macs(const MapSizes& sizes) const override { return s1->macs(sizes) + s2->macs(sizes); }

  Options options;
  Subnet s1{nullptr};
  Subnet s2{nullptr};
  std::vector<int64_t> first_half;
  std::vector<int64_t> second_half;

 private:
  static std::vector<int64_t> doubled(std::vector<int64_t> channels) {
    for (auto& c : channels) c *= 2;
    return channels;
  }

  void split(const TensorList& x, TensorList& first, TensorList& second) const {
    for (size_t s = 0; s < x.size(); ++s) {
      first.push_back(x[s].narrow(1, 0, first_half[s]));
      second.push_back(x[s].narrow(1, first_half[s], second_half[s]));
    }
  }

  static TensorList run_subnet(typename Subnet::Impl& subnet, const TensorList& in,
                               const std::vector<int64_t>& out_channels, const std::string& name) {
    auto out = subnet.forward(in);
    check_subnet_output(out, in, out_channels, name);
    return out;
  }

  torch::Tensor output_clamped(const torch::Tensor& t) const {
    return options.output_clamp() > 0 ? t.clamp(-options.output_clamp(), options.output_clamp()) : t;
  }
};

/// Module holder of ParallelAffineCouplingImpl<Subnet> (TORCH_MODULE cannot take templates).
template <typename Subnet>
class ParallelAffineCoupling : public torch::nn::ModuleHolder<ParallelAffineCouplingImpl<Subnet>> {
 public:
  using torch::nn::ModuleHolder<ParallelAffineCouplingImpl<Subnet>>::ModuleHolder;
  using Impl = ParallelAffineCouplingImpl<Subnet>;
};

}  // namespace validflow
