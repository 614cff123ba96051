#pragma once
// ValidFlow (Zhang et al., 2023): n modules of [FA block -> FB block] (paper: n = 3).
//   FA block: ActNorm -> ChannelShuffle -> ParallelAffineCoupling<SubnetR1>   (per-scale, depthwise-separable, CBAM)
//   FB block: ActNorm -> ChannelShuffle -> ParallelAffineCoupling<SubnetR2>   (cross-scale + 1<->3 branches, CBAM)
// Block j (0-based over all 2n blocks) shuffles with seed j. ActNorm, CBAM and the 1<->3 branches are switches
// (the paper's ablations: Table 6 varies n, Table 7 toggles CBAM and the branches in FB).
#include <validflow/core.hpp>
#include <validflow/models/stacked_model.hpp>
#include <validflow/subnets/cross_convolutions.hpp>
#include <validflow/subnets/subnet_r1.hpp>

#include <vector>

namespace validflow {

struct ValidFlowOptions {
  TORCH_ARG(int64_t, channels) = 304;
  TORCH_ARG(int64_t, scales) = 3;
  /// n: number of FA + FB modules.
  TORCH_ARG(int64_t, modules) = 3;
  /// Hidden width of r1 and r2.
  TORCH_ARG(int64_t, hidden_channels) = 1024;
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(double, clamp) = 3.0;
  TORCH_ARG(double, output_clamp) = 1e6;
  TORCH_ARG(bool, actnorm) = true;
  /// CBAM on the output of r1 (FA) and of r2 (FB).
  TORCH_ARG(bool, fa_cbam) = true;
  TORCH_ARG(bool, fb_cbam) = true;
  /// The extra scale 1 <-> 3 branches of r2.
  TORCH_ARG(bool, long_branches) = true;
  TORCH_ARG(int64_t, cbam_reduction) = 16;
};

class ValidFlowImpl : public StackedFlowModel<ValidFlowImpl> {
 public:
  using Options = ValidFlowOptions;
  using CouplingR1 = ParallelAffineCoupling<SubnetR1>;
  using CouplingR2 = ParallelAffineCoupling<SubnetR2>;
  using FABlock = FlowSequence<ActNorm, ChannelShuffle, CouplingR1>;
  using FBBlock = FlowSequence<ActNorm, ChannelShuffle, CouplingR2>;
  using FABlockNoActNorm = FlowSequence<ChannelShuffle, CouplingR1>;
  using FBBlockNoActNorm = FlowSequence<ChannelShuffle, CouplingR2>;

  explicit ValidFlowImpl(ValidFlowOptions options = {}) : options(std::move(options)) { ValidFlowImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.modules() >= 1, "ValidFlow: needs at least one FA+FB module, got ", options.modules());
    TORCH_CHECK(options.scales() >= 1, "ValidFlow: needs at least one scale, got ", options.scales());
    TORCH_CHECK(!options.long_branches() || options.scales() >= 3,
                "ValidFlow: the 1<->3 branches need 3 scales; switch long_branches off for fewer");
    const std::vector<int64_t> channels(static_cast<size_t>(options.scales()), options.channels());
    const auto clamp = SoftClampOptions().clamp(options.clamp());
    const auto r1 = SubnetR1Options()
                        .hidden_channels(options.hidden_channels())
                        .kernel_size(options.kernel_size())
                        .cbam(options.fa_cbam())
                        .cbam_reduction(options.cbam_reduction());
    const auto r2 = SubnetR2Options()
                        .hidden_channels(options.hidden_channels())
                        .kernel_size(options.kernel_size())
                        .cbam(options.fb_cbam())
                        .long_branches(options.long_branches())
                        .cbam_reduction(options.cbam_reduction());
    const auto fa = CouplingR1::Impl::Options(channels, r1).soft_clamp(clamp).output_clamp(options.output_clamp());
    const auto fb = CouplingR2::Impl::Options(channels, r2).soft_clamp(clamp).output_clamp(options.output_clamp());
    auto& stack = new_stack();
    for (int64_t m = 0; m < options.modules(); ++m) {
      const auto fa_shuffle = ChannelShuffleOptions(channels).seed(static_cast<uint32_t>(2 * m));
      const auto fb_shuffle = ChannelShuffleOptions(channels).seed(static_cast<uint32_t>(2 * m + 1));
      if (options.actnorm()) {
        stack->push_back(FABlock(ActNormOptions(channels), fa_shuffle, fa));
        stack->push_back(FBBlock(ActNormOptions(channels), fb_shuffle, fb));
      } else {
        stack->push_back(FABlockNoActNorm(fa_shuffle, fa));
        stack->push_back(FBBlockNoActNorm(fb_shuffle, fb));
      }
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::ValidFlow(channels=" << options.channels() << ", scales=" << options.scales()
           << ", modules=" << options.modules() << ", hidden=" << options.hidden_channels()
           << ", kernel_size=" << options.kernel_size() << ", actnorm=" << options.actnorm()
           << ", fa_cbam=" << options.fa_cbam() << ", fb_cbam=" << options.fb_cbam()
           << ", long_branches=" << options.long_branches() << ")";
  }

  ValidFlowOptions options;
};

TORCH_MODULE(ValidFlow);

}  // namespace validflow
