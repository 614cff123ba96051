#pragma once
// What a loaded state must mean, beyond its names and shapes: a layer whose buffers carry an invariant (a
// permutation is a permutation, its inverse is its inverse) says so by deriving from StateInvariants; loaders call
// check_state_invariants on the whole module after load_state_dict, so a checkpoint, model file or FrEIA state that
// holds a non-permutation is refused with the buffer's name instead of silently scrambling (or duplicating)
// channels.
#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace validflow {

class StateInvariants {
 public:
  virtual ~StateInvariants() = default;
  /// Throws std::invalid_argument naming the buffer whose value breaks the layer's invariant.
  virtual void check_state_invariants() const = 0;
};

/// Throws std::invalid_argument unless `index` is a permutation of 0..n-1 and `inverse` its inverse.
inline void check_permutation_pair(const torch::Tensor& index, const torch::Tensor& inverse, int64_t n,
                                   const std::string& what) {
  const auto expected = torch::arange(n, torch::kLong);
  const auto is_permutation = [&](const torch::Tensor& t) {
    return t.dim() == 1 && t.numel() == n && t.scalar_type() == torch::kLong &&
           std::get<0>(t.to(torch::kCPU).sort()).equal(expected);
  };
  if (!is_permutation(index))
    throw std::invalid_argument(what + " is not a permutation of 0.." + std::to_string(n - 1));
  if (!is_permutation(inverse) || !index.to(torch::kCPU).index_select(0, inverse.to(torch::kCPU)).equal(expected))
    throw std::invalid_argument(what + "'s inverse is not its inverse permutation");
}

/// Checks every layer of `module` (itself included) that states invariants.
inline void check_state_invariants(const torch::nn::Module& module) {
  if (const auto* own = dynamic_cast<const StateInvariants*>(&module)) own->check_state_invariants();
  for (const auto& child : module.modules(/*include_self=*/false))
    if (const auto* layer = dynamic_cast<const StateInvariants*>(child.get())) layer->check_state_invariants();
}

}  // namespace validflow
