#pragma once
// The model configuration of the `validflow` program: which flow (CS-Flow or ValidFlow) with which options.
// It travels in checkpoints (as JSON), so a checkpoint always rebuilds exactly the model it was trained with.
#include <validflow/validflow.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <stdexcept>
#include <string>

namespace validflow::app {

struct ModelConfig {
  std::string model = "validflow";  ///< "validflow" or "csflow"
  int64_t channels = 304;
  int64_t scales = 3;
  int64_t blocks = 0;  ///< CS-Flow: coupling blocks; ValidFlow: FA+FB modules (n); 0: the model's default
  int64_t hidden = 1024;
  int64_t kernel_size = 3;            ///< ValidFlow: every conv; CS-Flow: ignored (official [3]*(n-1)+[5])
  std::vector<int64_t> kernel_sizes;  ///< CS-Flow: explicit per-block kernel sizes (empty: official)
  double clamp = 3.0;
  bool actnorm = true;
  bool fa_cbam = true;
  bool fb_cbam = true;
  bool long_branches = true;
  int64_t cbam_reduction = 16;
};

inline nlohmann::json to_json(const ModelConfig& c) {
  return {{"model", c.model},
          {"channels", c.channels},
          {"scales", c.scales},
          {"blocks", c.blocks},
          {"hidden", c.hidden},
          {"kernel_size", c.kernel_size},
          {"kernel_sizes", c.kernel_sizes},
          {"clamp", c.clamp},
          {"actnorm", c.actnorm},
          {"fa_cbam", c.fa_cbam},
          {"fb_cbam", c.fb_cbam},
          {"long_branches", c.long_branches},
          {"cbam_reduction", c.cbam_reduction}};
}

inline ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  try {
    c.model = j.at("model").get<std::string>();
    c.channels = j.at("channels").get<int64_t>();
    c.scales = j.at("scales").get<int64_t>();
    c.blocks = j.at("blocks").get<int64_t>();
    c.hidden = j.at("hidden").get<int64_t>();
    c.kernel_size = j.at("kernel_size").get<int64_t>();
    c.kernel_sizes = j.at("kernel_sizes").get<std::vector<int64_t>>();
    c.clamp = j.at("clamp").get<double>();
    c.actnorm = j.at("actnorm").get<bool>();
    c.fa_cbam = j.at("fa_cbam").get<bool>();
    c.fb_cbam = j.at("fb_cbam").get<bool>();
    c.long_branches = j.at("long_branches").get<bool>();
    c.cbam_reduction = j.at("cbam_reduction").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("invalid model configuration: ") + e.what());
  }
  return c;
}

/// Fills in the model-dependent defaults: blocks 0 means ValidFlow's n = 3, CS-Flow's official 4.
inline ModelConfig with_defaults(ModelConfig c) {
  if (c.blocks == 0) c.blocks = c.model == "csflow" ? 4 : 3;
  return c;
}

/// Builds the flow a configuration describes (parameters freshly initialised).
inline std::shared_ptr<FlowModule> build_model(const ModelConfig& config) {
  const auto c = with_defaults(config);
  if (c.model == "csflow") {
    return CSFlow(CSFlowOptions()
                      .channels(c.channels)
                      .scales(c.scales)
                      .blocks(c.blocks)
                      .hidden_channels(c.hidden)
                      .kernel_sizes(c.kernel_sizes)
                      .clamp(c.clamp))
        .ptr();
  }
  if (c.model == "validflow") {
    return ValidFlow(ValidFlowOptions()
                         .channels(c.channels)
                         .scales(c.scales)
                         .modules(c.blocks)
                         .hidden_channels(c.hidden)
                         .kernel_size(c.kernel_size)
                         .clamp(c.clamp)
                         .actnorm(c.actnorm)
                         .fa_cbam(c.fa_cbam)
                         .fb_cbam(c.fb_cbam)
                         .long_branches(c.long_branches)
                         .cbam_reduction(c.cbam_reduction))
        .ptr();
  }
  throw std::invalid_argument("unknown model '" + c.model + "' (expected validflow or csflow)");
}

/// Map sizes of the scales for a finest map of `size` x `size` (each scale halves).
inline MapSizes halving_map_sizes(int64_t size, int64_t scales) {
  MapSizes sizes;
  for (int64_t s = 0; s < scales; ++s) sizes.push_back({size >> s, size >> s});
  return sizes;
}

}  // namespace validflow::app
