#pragma once
// Import of the official CS-Flow weights (marco-rudolph/cs-flow) into validflow::CSFlow: a key-renaming step
// on the strict loader of io/state_dict.hpp.
//
// Input: a state dict read from a file written by Python's `torch.save` (zip format) of the official model,
// e.g. `torch.save(model.state_dict(), path)`. Official keys are
//   module_list.{4+2k}.{s1|s2}.{gamma0..2 | conv_scale{0,1,2}_{0,1}.{weight,bias} | up_conv10.* | up_conv21.* |
//                                down_conv01.* | down_conv12.*}
// and map to this library's `flow.{k}.1.{s1|s2}.<same name>`. The configuration (channels, hidden width,
// number of blocks, kernel size per block, gammas) is inferred from the shapes. The permutations are not in
// the file: the official code regenerates them from seed k, and so does ChannelShuffle.
#include <validflow/io/state_dict.hpp>
#include <validflow/models/csflow.hpp>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>

namespace validflow {

namespace detail {

/// Official key of block k's subnet `subnet` ("s1"/"s2") entry `name`, with an optional prefix.
inline std::string official_csflow_key(const std::string& prefix, int64_t block, const std::string& subnet,
                                       const std::string& name) {
  return prefix + "module_list." + std::to_string(4 + 2 * block) + "." + subnet + "." + name;
}

}  // namespace detail

/// Infers the CS-Flow configuration from an official state dict (keys may carry `prefix`).
inline CSFlowOptions infer_csflow_options(const StateDict& dict, const std::string& prefix = "") {
  const std::regex pattern("^" + std::regex_replace(prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                           R"(module_list\.(\d+)\.(s1|s2)\..+$)");
  std::set<int64_t> indices;
  for (const auto& entry : dict) {
    std::smatch match;
    if (std::regex_match(entry.first, match, pattern)) indices.insert(std::stoll(match[1]));
  }
  auto refuse = [&](const std::string& why) {
    return StateDictError(dict.source, "official CS-Flow state dict" +
                                           (dict.source.empty() ? "" : " '" + dict.source + "'") + ": " + why);
  };
  if (indices.empty()) throw refuse("no key matches '" + prefix + "module_list.<4+2k>.<s1|s2>.*'");
  const int64_t blocks = static_cast<int64_t>(indices.size());
  for (int64_t k = 0; k < blocks; ++k) {
    if (!indices.count(4 + 2 * k))
      throw refuse("coupling blocks must be module_list.4, .6, ...; missing module_list." + std::to_string(4 + 2 * k));
  }
  const auto& first = dict.at(detail::official_csflow_key(prefix, 0, "s1", "conv_scale0_0.weight"));
  if (first.dim() != 4) throw refuse("conv_scale0_0.weight must be 4-D");
  CSFlowOptions options;
  options.channels(2 * first.size(1)).hidden_channels(first.size(0)).blocks(blocks);
  std::vector<int64_t> kernels;
  for (int64_t k = 0; k < blocks; ++k) {
    const auto& w = dict.at(detail::official_csflow_key(prefix, k, "s1", "conv_scale0_0.weight"));
    if (w.dim() != 4) throw refuse("conv_scale0_0.weight of block " + std::to_string(k) + " must be 4-D");
    kernels.push_back(w.size(2));
  }
  int64_t scales = 0;
  while (dict.contains(
      detail::official_csflow_key(prefix, 0, "s1", "conv_scale" + std::to_string(scales) + "_0.weight"))) {
    ++scales;
  }
  // Every scale's first conv has the same shape; name the one that differs from the others, not those that differ
  // from scale 0 (a bad conv_scale0_0 would otherwise be reported as conv_scale1_0 and conv_scale2_0).
  for (int64_t k = 0; k < blocks; ++k)
    for (const char* half : {"s1", "s2"}) {
      std::map<std::vector<int64_t>, std::vector<std::string>> by_shape;
      for (int64_t s = 0; s < scales; ++s) {
        const auto key = detail::official_csflow_key(prefix, k, half, "conv_scale" + std::to_string(s) + "_0.weight");
        if (dict.contains(key)) by_shape[dict.at(key).sizes().vec()].push_back(key);
      }
      if (by_shape.size() < 2) continue;
      const auto common = std::max_element(by_shape.begin(), by_shape.end(), [](const auto& a, const auto& b) {
        return a.second.size() < b.second.size();
      });
      for (const auto& [shape, keys] : by_shape)
        if (&keys != &common->second)
          throw refuse(keys.front() + " has shape " + detail::shape_string(shape) + ", the other scales' " +
                       detail::shape_string(common->first));
    }
  options.kernel_sizes(kernels).scales(scales);
  options.use_gamma(dict.contains(detail::official_csflow_key(prefix, 0, "s1", "gamma0")));
  return options;
}

/// Copies an official state dict into `model` strictly: every coupling parameter present with its exact
/// shape, no other key under `prefix`module_list (other keys, e.g. a golden file's inputs, are ignored).
inline LoadReport load_official_csflow(CSFlowImpl& model, const StateDict& dict, const std::string& prefix = "") {
  static const std::regex ours(R"(^flow\.(\d+)\.1\.(s1|s2)\.(.+)$)");  // flow.{k}.1.{s1|s2}.<name>
  std::set<std::string> parameters;
  for (const auto& p : model.named_parameters()) parameters.insert(p.key());
  const auto rename = [&](const std::string& key) -> std::string {
    std::smatch match;
    if (!std::regex_match(key, match, ours)) {
      if (parameters.count(key))
        throw StateDictError(dict.source, "CSFlow: parameter '" + key + "' is not a coupling subnet parameter");
      return "";  // buffers (the permutations): regenerated from the seeds, not in the file
    }
    return detail::official_csflow_key(prefix, std::stoll(match[1]), match[2], match[3]);
  };
  const auto foreign = [&](const std::string& key) { return key.rfind(prefix + "module_list.", 0) != 0; };
  return load_state_dict(model, dict, rename, foreign);
}

/// Builds the CS-Flow an official state dict describes and loads it.
inline CSFlow import_official_csflow(const StateDict& dict, const std::string& prefix = "") {
  CSFlow model(infer_csflow_options(dict, prefix));
  load_official_csflow(*model, dict, prefix);
  return model;
}

inline CSFlow import_official_csflow(const std::string& path, const std::string& prefix = "") {
  return import_official_csflow(read_state_dict(path), prefix);
}

}  // namespace validflow
