#pragma once
// CS-Flow (Rudolph et al., WACV 2022), identical to the official code's flow: n blocks of
// [ChannelShuffle (official permutation, seed = block index) -> ParallelAffineCoupling<CrossConvolutions>],
// kernel sizes [3] * (n - 1) + [5], hidden 1024, soft clamp 3 (0.636), output clamp +-1e6.
#include <validflow/core.hpp>
#include <validflow/models/stacked_model.hpp>
#include <validflow/subnets/cross_convolutions.hpp>

#include <string>
#include <vector>

namespace validflow {

struct CSFlowOptions {
  /// Feature channels of every scale (EfficientNet-B5 block 35: 304).
  TORCH_ARG(int64_t, channels) = 304;
  TORCH_ARG(int64_t, scales) = 3;
  /// Coupling blocks (official default 4; the ValidFlow paper compares with 6).
  TORCH_ARG(int64_t, blocks) = 4;
  TORCH_ARG(int64_t, hidden_channels) = 1024;
  /// One kernel size per block; empty means the official [3] * (blocks - 1) + [5].
  TORCH_ARG(std::vector<int64_t>, kernel_sizes) = {};
  TORCH_ARG(double, clamp) = 3.0;
  TORCH_ARG(double, output_clamp) = 1e6;
  TORCH_ARG(bool, use_gamma) = true;

 public:
  std::vector<int64_t> resolved_kernel_sizes() const {
    if (!kernel_sizes_.empty()) return kernel_sizes_;
    std::vector<int64_t> sizes(static_cast<size_t>(std::max<int64_t>(blocks_, 0)), 3);
    if (!sizes.empty()) sizes.back() = 5;
    return sizes;
  }
};

class CSFlowImpl : public StackedFlowModel<CSFlowImpl> {
 public:
  using Options = CSFlowOptions;
  using Coupling = ParallelAffineCoupling<CrossConvolutions>;
  using Block = FlowSequence<ChannelShuffle, Coupling>;

  explicit CSFlowImpl(CSFlowOptions options = {}) : options(std::move(options)) { CSFlowImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.blocks() >= 1, "CSFlow: needs at least one block, got ", options.blocks());
    TORCH_CHECK(options.scales() >= 1, "CSFlow: needs at least one scale, got ", options.scales());
    const auto kernels = options.resolved_kernel_sizes();
    TORCH_CHECK(static_cast<int64_t>(kernels.size()) == options.blocks(), "CSFlow: ", kernels.size(),
                " kernel sizes for ", options.blocks(), " blocks");
    const std::vector<int64_t> channels(static_cast<size_t>(options.scales()), options.channels());
    auto& stack = new_stack();
    for (int64_t k = 0; k < options.blocks(); ++k) {
      auto subnet = CrossConvolutionsOptions()
                        .hidden_channels(options.hidden_channels())
                        .kernel_size(kernels[static_cast<size_t>(k)])
                        .use_gamma(options.use_gamma());
      stack->push_back(Block(ChannelShuffleOptions(channels).seed(static_cast<uint32_t>(k)),
                             Coupling::Impl::Options(channels, subnet)
                                 .soft_clamp(SoftClampOptions().clamp(options.clamp()))
                                 .output_clamp(options.output_clamp())));
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::CSFlow(channels=" << options.channels() << ", scales=" << options.scales()
           << ", blocks=" << options.blocks() << ", hidden=" << options.hidden_channels()
           << ", kernel_sizes=" << torch::IntArrayRef(options.resolved_kernel_sizes()) << ")";
  }

  /// Block k (channel shuffle + coupling).
  Block::Impl& block(size_t k) const {
    auto block = (*flow)[k].as<Block::Impl>();
    TORCH_CHECK(block != nullptr, "CSFlow: block ", k, " has an unexpected type");
    return *block;
  }

  CSFlowOptions options;
};

TORCH_MODULE(CSFlow);

}  // namespace validflow
