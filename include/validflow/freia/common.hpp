#pragma once
// What the single-tensor (FrEIA) blocks share: their input checks, the conditions concatenated to a subnet's
// input, sums over all but the batch dimension, and a channel-mixing matrix applied like FrEIA's
// `F.conv{1,2,3}d(x, w)` / `F.linear(x, w)`. A block works on a list of one tensor [batch, C, spatial...] with the
// number of spatial dimensions it was built for (0 for vectors, 2 for images), as FrEIA's blocks do.
#include <validflow/core/flow.hpp>
#include <validflow/freia/subnets.hpp>
#include <validflow/subnets/subnet_options.hpp>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace validflow {

/// Which copy of a FrEIA block to follow where the copies differ (only in how they are initialised: see
/// AllInOneBlockOptions::variant; the computation is the same).
enum class FreiaVariant { freia, anomalib };

/// The options every block with a subnet shares, written once: a CRTP base (VALIDFLOW_SHARED_ARG, as in
/// subnets/subnet_options.hpp), so a chain of setters keeps the block's own options type.
template <typename Derived, typename SubnetOptions>
struct BlockOptions {
  /// Channels C of the input (>= 2).
  VALIDFLOW_SHARED_ARG(int64_t, channels) = 0;
  /// Options of the subnet(s); the block sets their in_channels and out_channels, the user the rest.
  VALIDFLOW_SHARED_ARG(SubnetOptions, subnet) = {};
  /// Spatial dimensions of the input: 0 for vectors [batch, C], 2 for images [batch, C, H, W] (1 and 3 too).
  VALIDFLOW_SHARED_ARG(int64_t, spatial_dims) = 2;
  /// Channels of each condition (FrEIA's dims_c), concatenated to every subnet's input; empty: unconditional.
  VALIDFLOW_SHARED_ARG(std::vector<int64_t>, condition_channels) = {};

 protected:
  BlockOptions(int64_t channels, SubnetOptions subnet) : channels_(channels), subnet_(std::move(subnet)) {}
};

/// Base of the conditional blocks: forward(x) / inverse(z) are the conditional forms with no conditions, and the
/// conditions' channels come from `Derived::options.condition_channels()`. Derived implements
/// conditional_forward / conditional_inverse (validflow/core/flow.hpp).
template <typename Derived>
class ConditionalFlowLayer : public FlowLayer<Derived> {
 public:
  using FlowModule::forward;  // forward(x, conditions), inverse(z, conditions)
  using FlowModule::inverse;
  FlowResult forward(const TensorList& x) override { return this->conditional_forward(x, {}); }
  FlowResult inverse(const TensorList& z) override { return this->conditional_inverse(z, {}); }
  std::vector<int64_t> condition_channels() const override {
    return static_cast<const Derived&>(*this).options.condition_channels();
  }
};

namespace freia_detail {

/// Checks a block's input (one tensor of rank 2 + spatial_dims with `channels` channels, on the parameters'
/// dtype and device, finite) and its conditions (validflow/core/flow.hpp: check_conditions).
inline void check_block_input(const TensorList& x, int64_t channels, int64_t spatial_dims, const std::string& module,
                              const torch::Tensor& reference, const TensorList& conditions,
                              const std::vector<int64_t>& condition_channels) {
  check_flow_input(x, {channels}, module, reference, 2 + spatial_dims);
  check_conditions(conditions, condition_channels, x, module);
}

inline void check_spatial_dims(int64_t spatial_dims, const char* module) {
  TORCH_CHECK(spatial_dims >= 0 && spatial_dims <= 3, module,
              ": spatial_dims must be 0 (vectors), 1, 2 (images) or 3, got ", spatial_dims);
}

inline void check_condition_channels(const std::vector<int64_t>& channels, const char* module) {
  for (const auto c : channels) TORCH_CHECK(c > 0, module, ": every condition needs channels > 0, got ", c);
}

/// Checks that a subnet returned `channels` channels at the input x's rank and spatial size.
inline void check_subnet_output(const char* module, const torch::Tensor& a, int64_t channels, const torch::Tensor& x) {
  if (a.dim() != x.dim() || a.size(1) != channels || a.sizes().slice(2) != x.sizes().slice(2)) {
    detail::throw_input_error(module, "a subnet returned shape ", detail::shape_string(a), ", expected ", channels,
                              " channels at the input's size ", detail::shape_string(x));
  }
}

inline int64_t total(const std::vector<int64_t>& channels) {
  int64_t n = 0;
  for (const auto c : channels) n += c;
  return n;
}

/// The subnet's input: the passive half followed by the conditions (FrEIA: torch.cat([x1, *c], 1)).
inline torch::Tensor with_conditions(const torch::Tensor& passive, const TensorList& conditions) {
  if (conditions.empty()) return passive;
  TensorList parts{passive};
  parts.insert(parts.end(), conditions.begin(), conditions.end());
  return torch::cat(parts, 1);
}

/// Sum over every dimension but the batch: [batch, ...] -> [batch].
inline torch::Tensor sum_per_sample(const torch::Tensor& t) { return t.flatten(1).sum(1); }

/// Positions per channel of one sample (FrEIA's `x[0, :1].numel()`).
inline int64_t positions(const torch::Tensor& x) { return x.dim() > 2 ? x[0][0].numel() : 1; }

/// Positions of one sample at these map sizes (1 for vectors), for forward_macs.
inline int64_t positions(const MapSizes& sizes, int64_t spatial_dims) {
  if (spatial_dims == 0 || sizes.empty()) return 1;
  return sizes[0][0] * sizes[0][1];
}

/// y[:, i] = sum_j w[i, j] x[:, j]: FrEIA's permute_function(x, w) for a [C, C] matrix w, computed as FrEIA does
/// (F.linear on vectors, a 1x1 convolution on maps: faster than a matmul over moved dims, which copies twice).
inline torch::Tensor mix_channels(const torch::Tensor& x, const torch::Tensor& w) {
  const int64_t c = w.size(0);
  switch (x.dim()) {
    case 2:
      return torch::nn::functional::linear(x, w);
    case 3:
      return torch::conv1d(x, w.reshape({c, c, 1}));
    case 4:
      return torch::conv2d(x, w.reshape({c, c, 1, 1}));
    default:
      return torch::conv3d(x, w.reshape({c, c, 1, 1, 1}));
  }
}

/// [1, C, 1, ...] with `spatial_dims` trailing ones: the shape of FrEIA's per-channel parameters.
inline std::vector<int64_t> channel_shape(int64_t channels, int64_t spatial_dims) {
  std::vector<int64_t> shape{1, channels};
  shape.insert(shape.end(), static_cast<size_t>(spatial_dims), 1);
  return shape;
}

}  // namespace freia_detail
}  // namespace validflow
