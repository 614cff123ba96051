#pragma once
// Import of a FrEIA network's weights. FrEIA's SequenceINN (and GraphINN) keep their blocks in `module_list`, so
// `torch.save(inn.state_dict())` writes `module_list.K.<name>`; inside a larger model (anomalib's FastFlow,
// CFlow-AD) the same names sit under a prefix, e.g. `fast_flow_blocks.0.` or `pool_layers... decoders.0.`.
// A FlowStack whose K-th layer is the block FrEIA's K-th module is (validflow/freia/ blocks carry FrEIA's
// parameter names) loads such a state dict through the one strict loader (io/state_dict.hpp): every missing,
// unexpected or mismatched key is listed in one StateDictError. Keys outside `prefix` belong to the rest of the
// larger model and are left alone; everything under it must be used.
#include <validflow/core/sequence.hpp>
#include <validflow/io/state_dict.hpp>

#include <string>

namespace validflow {

/// Loads the FrEIA SequenceINN under `prefix` ("" for a file that holds only the SequenceINN) into `stack`.
/// FreiaActNorm layers are marked initialised (FrEIA keeps that flag outside the state dict). Throws
/// StateDictError naming every key that does not fit.
inline LoadReport load_freia_sequence(FlowStackImpl& stack, const StateDict& state, const std::string& prefix = "") {
  const std::string root = prefix + "module_list.";
  const auto is_flag = [](const std::string& key) {
    const std::string flag = ".initialized";
    return key.size() > flag.size() && key.compare(key.size() - flag.size(), flag.size(), flag) == 0;
  };
  const auto report = load_state_dict(
      stack, state, [&](const std::string& own) { return is_flag(own) ? std::string() : root + own; },
      [&](const std::string& key) { return !prefix.empty() && key.rfind(prefix, 0) != 0; });
  torch::NoGradGuard no_grad;
  for (auto& buffer : stack.named_buffers())
    if (is_flag(buffer.key()) && buffer.value().scalar_type() == torch::kBool) buffer.value().fill_(true);
  return report;
}

}  // namespace validflow
