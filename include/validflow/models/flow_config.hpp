#pragma once
// A flow described by data: which model (CS-Flow or ValidFlow) with which options. It travels as JSON in
// checkpoints and model files, so a file always rebuilds exactly the model that was trained, and
// `build_flow` is the one place that turns a description into a module.
//
// Depth is counted the way each paper counts it: ValidFlow in FA+FB *modules* (n = 3: six coupling blocks),
// CS-Flow in coupling *blocks* (official 4; the ValidFlow paper's comparison uses 6).
#include <validflow/io/json_fields.hpp>
#include <validflow/models/csflow.hpp>
#include <validflow/models/validflow_model.hpp>
#include <validflow/util/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow {

/// An invalid flow description (a field out of range, an unknown model, malformed JSON); names the field.
class FlowConfigError : public ErrorOf<std::invalid_argument, ErrorKind::config> {
 public:
  using ErrorOf::ErrorOf;
};

struct FlowConfig {
  std::string model = "validflow";  ///< "validflow" or "csflow"
  int64_t channels = 304;           ///< feature channels of every scale
  int64_t scales = 3;
  int64_t modules = 3;  ///< ValidFlow: FA+FB modules n (each is two coupling blocks)
  int64_t blocks = 4;   ///< CS-Flow: coupling blocks
  int64_t hidden = 1024;
  int64_t kernel_size = 3;            ///< ValidFlow: every conv
  std::vector<int64_t> kernel_sizes;  ///< CS-Flow: one per block; empty: the official [3]*(blocks-1)+[5]
  double clamp = 3.0;                 ///< soft clamp of the log-scales
  bool actnorm = true;                ///< ValidFlow switches (the paper's ablations)
  bool fa_cbam = true;
  bool fb_cbam = true;
  bool long_branches = true;
  int64_t cbam_reduction = 16;

  /// Limits that keep a typo from exhausting the machine; far above any sensible model.
  static constexpr int64_t max_depth = 64, max_width = 65536, max_kernel = 31, max_scales = 8;

  bool is_csflow() const { return model == "csflow"; }

  /// Throws FlowConfigError naming the first field that is out of range.
  void validate() const {
    auto range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
      if (v < lo || v > hi)
        throw FlowConfigError(std::string(name) + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                              ", got " + std::to_string(v));
    };
    if (model != "validflow" && model != "csflow")
      throw FlowConfigError("model must be validflow or csflow, got '" + model + "'");
    range("channels", channels, 2, max_width);
    if (channels % 2 != 0)
      throw FlowConfigError("channels must be even (couplings split them), got " + std::to_string(channels));
    range("scales", scales, 1, max_scales);
    range("hidden", hidden, 1, max_width);
    if (!std::isfinite(clamp) || !(clamp > 0))
      throw FlowConfigError("clamp must be a positive finite number, got " + std::to_string(clamp));
    if (is_csflow()) {
      range("blocks", blocks, 1, max_depth);
      if (!kernel_sizes.empty() && static_cast<int64_t>(kernel_sizes.size()) != blocks)
        throw FlowConfigError("kernel_sizes has " + std::to_string(kernel_sizes.size()) + " entries for " +
                              std::to_string(blocks) + " blocks");
      for (auto k : kernel_sizes) {
        range("kernel_sizes[i]", k, 1, max_kernel);
        if (k % 2 == 0) throw FlowConfigError("kernel sizes must be odd, got " + std::to_string(k));
      }
    } else {
      range("modules", modules, 1, max_depth);
      range("kernel_size", kernel_size, 1, max_kernel);
      if (kernel_size % 2 == 0) throw FlowConfigError("kernel_size must be odd, got " + std::to_string(kernel_size));
      range("cbam_reduction", cbam_reduction, 1, max_width);
      if (long_branches && scales < 3) throw FlowConfigError("long_branches need 3 scales; switch them off for fewer");
    }
  }

  /// Coupling blocks of the flow (ValidFlow: 2 per module).
  int64_t coupling_blocks() const { return is_csflow() ? blocks : 2 * modules; }
};

inline nlohmann::json to_json(const FlowConfig& c) {
  nlohmann::json j = {
      {"model", c.model}, {"channels", c.channels}, {"scales", c.scales}, {"hidden", c.hidden}, {"clamp", c.clamp}};
  if (c.is_csflow()) {
    j["blocks"] = c.blocks;
    j["kernel_sizes"] = c.kernel_sizes;
  } else {
    j["modules"] = c.modules;
    j["kernel_size"] = c.kernel_size;
    j["actnorm"] = c.actnorm;
    j["fa_cbam"] = c.fa_cbam;
    j["fb_cbam"] = c.fb_cbam;
    j["long_branches"] = c.long_branches;
    j["cbam_reduction"] = c.cbam_reduction;
  }
  return j;
}

/// Strict: every key of the model's kind must be present with the right type, no unknown key; validated.
inline FlowConfig flow_config_from_json(const nlohmann::json& j) {
  FlowConfig c;
  try {
    if (!j.is_object()) throw FlowConfigError("a flow configuration must be a JSON object");
    c.model = j.at("model").get<std::string>();
    const std::vector<std::string> common{"model", "channels", "scales", "hidden", "clamp"};
    const std::vector<std::string> own =
        c.is_csflow() ? std::vector<std::string>{"blocks", "kernel_sizes"}
                      : std::vector<std::string>{"modules", "kernel_size",   "actnorm",       "fa_cbam",
                                                 "fb_cbam", "long_branches", "cbam_reduction"};
    for (const auto& item : j.items()) {
      if (std::find(common.begin(), common.end(), item.key()) == common.end() &&
          std::find(own.begin(), own.end(), item.key()) == own.end())
        throw FlowConfigError("unknown key '" + item.key() + "' for model " + c.model);
    }
    c.channels = io::json_integer<int64_t>(j.at("channels"), "channels");
    c.scales = io::json_integer<int64_t>(j.at("scales"), "scales");
    c.hidden = io::json_integer<int64_t>(j.at("hidden"), "hidden");
    c.clamp = j.at("clamp").get<double>();
    if (c.is_csflow()) {
      c.blocks = io::json_integer<int64_t>(j.at("blocks"), "blocks");
      c.kernel_sizes = io::json_integers<int64_t>(j.at("kernel_sizes"), "kernel_sizes");
    } else {
      c.modules = io::json_integer<int64_t>(j.at("modules"), "modules");
      c.kernel_size = io::json_integer<int64_t>(j.at("kernel_size"), "kernel_size");
      c.actnorm = j.at("actnorm").get<bool>();
      c.fa_cbam = j.at("fa_cbam").get<bool>();
      c.fb_cbam = j.at("fb_cbam").get<bool>();
      c.long_branches = j.at("long_branches").get<bool>();
      c.cbam_reduction = io::json_integer<int64_t>(j.at("cbam_reduction"), "cbam_reduction");
    }
  } catch (const nlohmann::json::exception& e) {
    throw FlowConfigError(std::string("invalid flow configuration: ") + e.what());
  } catch (const FlowConfigError& e) {
    throw FlowConfigError(std::string("invalid flow configuration: ") + e.what());
  }
  try {
    c.validate();
  } catch (const FlowConfigError& e) {
    throw FlowConfigError(std::string("invalid flow configuration: ") + e.what());
  }
  return c;
}

/// A lower bound of the trainable parameters of build_flow(c), computed without building it: the weights of
/// the convolutions whose size grows with the configuration (biases, ActNorm, gammas and CBAM's 7x7 spatial
/// conv are left out). Every coupling has two subnets; per scale each has an input conv (C/2 -> hidden) and
/// an output conv (hidden -> C): depthwise-separable in ValidFlow's FA blocks, full k x k convs in FB blocks
/// and CS-Flow, which also have the cross-scale convs (hidden -> C, between neighbouring scales and, with
/// long branches, between scales 1 and 3); CBAM adds its MLP (C -> C/r -> C). test_pipeline checks
/// bound <= count <= 4 * bound + 5000 over a grid of configurations.
/// Loaders compare it with the weights a file holds *before* building the flow, so a small file whose JSON
/// describes a huge model (hidden 65536, kernel 31) is refused instead of making the program allocate terabytes.
/// A double: the bound of a configuration within the limits may exceed 2^63.
inline double min_parameter_count(const FlowConfig& c) {
  const double s = static_cast<double>(c.scales), ch = static_cast<double>(c.channels),
               h = static_cast<double>(c.hidden), half = static_cast<double>(c.channels / 2);
  const double cbam = 2.0 * ch * static_cast<double>(std::max<int64_t>(1, c.channels / c.cbam_reduction));
  auto cross = [&](double k2, bool long_branches) {  // CrossConvolutions: per subnet
    return k2 * h * (s * half + s * ch + 2.0 * (s - 1) * ch + (long_branches ? 2.0 * ch : 0.0));
  };
  double total = 0;
  if (c.is_csflow()) {
    for (int64_t b = 0; b < c.blocks; ++b) {
      const double k = c.kernel_sizes.empty() ? (b + 1 == c.blocks ? 5.0 : 3.0)
                                              : static_cast<double>(c.kernel_sizes[static_cast<size_t>(b)]);
      total += 2.0 * cross(k * k, false);
    }
  } else {
    const double k2 = static_cast<double>(c.kernel_size * c.kernel_size);
    const double fa = 2.0 * s * (half * k2 + half * h + h * k2 + h * ch + (c.fa_cbam ? cbam : 0.0));
    const double fb = 2.0 * (cross(k2, c.long_branches) + (c.fb_cbam ? s * cbam : 0.0));
    total = static_cast<double>(c.modules) * (fa + fb);
  }
  return total;
}

/// Refuses (FlowConfigError) a description that needs more parameters than `available` (the elements of the
/// file's flow tensors): called before build_flow by the loaders of files (see min_parameter_count).
inline void check_parameters_available(const FlowConfig& c, int64_t available) {
  const double needed = min_parameter_count(c);
  if (needed > static_cast<double>(available)) {
    std::ostringstream m;
    m << "the flow it describes needs at least " << std::setprecision(4) << needed << " weights, the file holds "
      << available << " (a description that does not match its weights)";
    throw FlowConfigError(m.str());
  }
}

/// Builds the flow a configuration describes (parameters freshly initialised). Validates it first.
inline AnyFlow build_flow(const FlowConfig& c) {
  c.validate();
  if (c.is_csflow()) {
    return CSFlow(CSFlowOptions()
                      .channels(c.channels)
                      .scales(c.scales)
                      .blocks(c.blocks)
                      .hidden_channels(c.hidden)
                      .kernel_sizes(c.kernel_sizes)
                      .clamp(c.clamp));
  }
  return ValidFlow(ValidFlowOptions()
                       .channels(c.channels)
                       .scales(c.scales)
                       .modules(c.modules)
                       .hidden_channels(c.hidden)
                       .kernel_size(c.kernel_size)
                       .clamp(c.clamp)
                       .actnorm(c.actnorm)
                       .fa_cbam(c.fa_cbam)
                       .fb_cbam(c.fb_cbam)
                       .long_branches(c.long_branches)
                       .cbam_reduction(c.cbam_reduction));
}

/// Map sizes of the scales for a finest map of `size` x `size` (each scale halves).
inline MapSizes halving_map_sizes(int64_t size, int64_t scales) {
  MapSizes sizes;
  for (int64_t s = 0; s < scales; ++s) sizes.push_back({size >> s, size >> s});
  return sizes;
}

}  // namespace validflow
