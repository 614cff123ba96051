#pragma once
// ChannelShuffle: a fixed channel permutation per scale (output channel c = input channel perm[c]).
// Volume preserving (log-det 0). Permutations are buffers, so they travel with checkpoints and devices.
#include <validflow/core/flow.hpp>
#include <validflow/core/numpy_permutation.hpp>
#include <validflow/util/state_invariants.hpp>

#include <string>
#include <vector>

namespace validflow {

struct ChannelShuffleOptions {
  /* implicit */ ChannelShuffleOptions(std::vector<int64_t> channels) : channels_(std::move(channels)) {}
  /// Channels of each scale.
  TORCH_ARG(std::vector<int64_t>, channels);
  /// Seed of the numpy-legacy generator; seed k reproduces the official CS-Flow block k.
  TORCH_ARG(uint32_t, seed) = 0;
  /// Explicit permutations, one per scale (e.g. anomalib's); when empty they are generated from `seed`.
  TORCH_ARG(std::vector<std::vector<int64_t>>, permutations) = {};
};

class ChannelShuffleImpl : public FlowLayer<ChannelShuffleImpl>, public StateInvariants {
 public:
  using Options = ChannelShuffleOptions;

  explicit ChannelShuffleImpl(ChannelShuffleOptions options) : options(std::move(options)) {
    ChannelShuffleImpl::reset();
  }

  void reset() override {
    const auto& channels = options.channels();
    TORCH_CHECK(!channels.empty(), "ChannelShuffle: needs at least one scale");
    auto lists =
        options.permutations().empty() ? csflow_permutations(options.seed(), channels) : options.permutations();
    TORCH_CHECK(lists.size() == channels.size(), "ChannelShuffle: got ", lists.size(), " explicit permutations for ",
                channels.size(), " scales");
    permutations.clear();
    inverse_permutations.clear();
    for (size_t s = 0; s < channels.size(); ++s) {
      auto perm = torch::tensor(lists[s], torch::kLong);
      TORCH_CHECK(perm.numel() == channels[s], "ChannelShuffle: permutation of scale ", s, " has ", perm.numel(),
                  " entries for ", channels[s], " channels");
      TORCH_CHECK(std::get<0>(perm.sort()).equal(torch::arange(channels[s], torch::kLong)),
                  "ChannelShuffle: list of scale ", s, " is not a permutation of 0..", channels[s] - 1);
      permutations.push_back(register_buffer("perm_" + std::to_string(s), perm));
      inverse_permutations.push_back(register_buffer("perm_inv_" + std::to_string(s), perm.argsort()));
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::ChannelShuffle(channels=" << torch::IntArrayRef(options.channels())
           << ", seed=" << options.seed() << ")";
  }

  void check_state_invariants() const override {
    for (size_t s = 0; s < permutations.size(); ++s)
      check_permutation_pair(permutations[s], inverse_permutations[s], options.channels()[s],
                             "ChannelShuffle buffer perm_" + std::to_string(s));
  }

  FlowResult forward(const TensorList& x) override { return apply(x, permutations); }
  FlowResult inverse(const TensorList& z) override { return apply(z, inverse_permutations); }

  ChannelShuffleOptions options;
  std::vector<torch::Tensor> permutations;
  std::vector<torch::Tensor> inverse_permutations;

 private:
  FlowResult apply(const TensorList& x, const std::vector<torch::Tensor>& index) {
    check_flow_input(x, options.channels(), "ChannelShuffle");
    FlowResult result{{}, zero_log_det(x)};
    for (size_t s = 0; s < x.size(); ++s) {
      result.tensors.push_back(x[s].index_select(1, index[s].to(x[s].device())));
    }
    return result;
  }
};

TORCH_MODULE(ChannelShuffle);

}  // namespace validflow
