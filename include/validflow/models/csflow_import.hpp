#pragma once
// Import of the official CS-Flow weights (marco-rudolph/cs-flow) into validflow::CSFlow.
//
// Input: a file written by Python's `torch.save` (zip format) of a flat dict {str: Tensor}, e.g.
// `torch.save(model.state_dict(), path)` of the official model. Official keys are
//   module_list.{4+2k}.{s1|s2}.{gamma0..2 | conv_scale{0,1,2}_{0,1}.{weight,bias} | up_conv10.* | up_conv21.* |
//                                down_conv01.* | down_conv12.*}
// and map to this library's `flow.{k}.1.{s1|s2}.<same name>`. The configuration (channels, hidden width,
// number of blocks, kernel size per block, gammas) is inferred from the shapes. The permutations are not in
// the file: the official code regenerates them from seed k, and so does ChannelShuffle.
#include <validflow/models/csflow.hpp>

#include <torch/script.h>

#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace validflow {

using StateDict = std::map<std::string, torch::Tensor>;

/// Thrown for unreadable files and state dicts that do not fit the model; the message names file/key.
class ImportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads a `torch.save`d dict of tensors (zip format) from `path`.
inline StateDict read_state_dict(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw ImportError("cannot open '" + path + "': no such file or not readable");
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw ImportError("'" + path + "' is empty");
  torch::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw ImportError("'" + path + "' is not a readable torch.save file (truncated or corrupt?): " +
                      std::string(e.what()).substr(0, 300));
  }
  if (!value.isGenericDict()) throw ImportError("'" + path + "' does not hold a dict of tensors");
  StateDict dict;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      throw ImportError("'" + path + "' holds a non-string key or non-tensor value; expected {str: Tensor}");
    }
    dict.emplace(entry.key().toStringRef(), entry.value().toTensor());
  }
  return dict;
}

namespace detail {

/// Official key of block k's subnet `subnet` ("s1"/"s2") entry `name`, with an optional prefix.
inline std::string official_csflow_key(const std::string& prefix, int64_t block, const std::string& subnet,
                                       const std::string& name) {
  return prefix + "module_list." + std::to_string(4 + 2 * block) + "." + subnet + "." + name;
}

inline const torch::Tensor& require_entry(const StateDict& dict, const std::string& key) {
  const auto it = dict.find(key);
  if (it == dict.end()) throw ImportError("official CS-Flow state dict: missing key '" + key + "'");
  return it->second;
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
  if (indices.empty()) {
    throw ImportError("official CS-Flow state dict: no key matches '" + prefix + "module_list.<4+2k>.<s1|s2>.*'");
  }
  const int64_t blocks = static_cast<int64_t>(indices.size());
  for (int64_t k = 0; k < blocks; ++k) {
    if (!indices.count(4 + 2 * k)) {
      throw ImportError(
          "official CS-Flow state dict: coupling blocks must be module_list.4, .6, ...; missing module_list." +
          std::to_string(4 + 2 * k));
    }
  }
  const auto& first = detail::require_entry(dict, detail::official_csflow_key(prefix, 0, "s1", "conv_scale0_0.weight"));
  if (first.dim() != 4) throw ImportError("official CS-Flow state dict: conv_scale0_0.weight must be 4-D");
  CSFlowOptions options;
  options.channels(2 * first.size(1)).hidden_channels(first.size(0)).blocks(blocks);
  std::vector<int64_t> kernels;
  for (int64_t k = 0; k < blocks; ++k) {
    kernels.push_back(
        detail::require_entry(dict, detail::official_csflow_key(prefix, k, "s1", "conv_scale0_0.weight")).size(2));
  }
  int64_t scales = 0;
  while (
      dict.count(detail::official_csflow_key(prefix, 0, "s1", "conv_scale" + std::to_string(scales) + "_0.weight"))) {
    ++scales;
  }
  options.kernel_sizes(kernels).scales(scales);
  options.use_gamma(dict.count(detail::official_csflow_key(prefix, 0, "s1", "gamma0")) > 0);
  return options;
}

/// Copies an official state dict into `model` strictly: every parameter must be present with its exact shape,
/// and no other key under `prefix`module_list may remain.
inline void load_official_csflow(CSFlowImpl& model, const StateDict& dict, const std::string& prefix = "") {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& entry : model.named_parameters()) {
    // ours: flow.{k}.1.{s1|s2}.<name>
    const std::string& ours = entry.key();
    std::smatch match;
    static const std::regex ours_pattern(R"(^flow\.(\d+)\.1\.(s1|s2)\.(.+)$)");
    if (!std::regex_match(ours, match, ours_pattern)) {
      throw ImportError("CSFlow: unexpected parameter '" + ours + "' (not a coupling subnet parameter)");
    }
    const auto key = detail::official_csflow_key(prefix, std::stoll(match[1]), match[2], match[3]);
    const auto& source = detail::require_entry(dict, key);
    auto& target = entry.value();
    if (source.sizes() != target.sizes()) {
      std::ostringstream message;
      message << "official CS-Flow state dict: '" << key << "' has shape " << source.sizes() << ", the model expects "
              << target.sizes();
      throw ImportError(message.str());
    }
    target.copy_(source.to(target.dtype()));
    used.insert(key);
  }
  for (const auto& entry : dict) {
    if (entry.first.rfind(prefix + "module_list.", 0) == 0 && !used.count(entry.first)) {
      throw ImportError("official CS-Flow state dict: unexpected key '" + entry.first +
                        "' (another configuration, or not a CS-Flow state dict)");
    }
  }
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
