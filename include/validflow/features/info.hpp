#pragma once
// What `validflow info --backbone NAME [--layer N] [--image-size S] [--json]` prints: the backbone's
// parameter counts (truncated at the feature layer and full), the feature-map shapes at every scale, and
// the forward cost. Computed from the architecture alone (nothing is run, no weights are needed).
#include <validflow/features/backbone.hpp>
#include <validflow/features/efficientnet.hpp>
#include <validflow/util/text.hpp>

#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace validflow::features {

struct ScaleInfo {
  int64_t input_height = 0, input_width = 0;
  int64_t channels = 0, height = 0, width = 0;  ///< feature map [C, H, W]
  int64_t macs = 0;                             ///< forward multiply-accumulates per image at this scale
};

struct BackboneInfo {
  std::string name;
  int64_t layer = -1;  ///< 0-based block whose output is the feature map
  int64_t total_blocks = 0;
  int64_t parameters_truncated = 0;  ///< stem + blocks 0..layer
  int64_t parameters_full = 0;       ///< every block + head + 1000-class classifier
  int64_t channels = 0;
  int64_t stride = 0;
  int64_t image_size = 0;
  int64_t n_scales = 0;
  int64_t native_resolution = 0;
  std::string padding;
  std::string activation;
  std::vector<ScaleInfo> scales;

  int64_t total_macs() const {
    int64_t m = 0;
    for (const auto& s : scales) m += s.macs;
    return m;
  }

  /// One JSON object (keys in snake_case), no trailing newline.
  std::string to_json() const {
    std::ostringstream o;
    o << "{\"backbone\": \"" << name << "\", \"layer\": " << layer << ", \"total_blocks\": " << total_blocks
      << ", \"parameters_truncated\": " << parameters_truncated << ", \"parameters_full\": " << parameters_full
      << ", \"channels\": " << channels << ", \"stride\": " << stride << ", \"image_size\": " << image_size
      << ", \"n_scales\": " << n_scales << ", \"native_resolution\": " << native_resolution << ", \"padding\": \""
      << padding << "\", \"activation\": \"" << activation << "\", \"scales\": [";
    for (std::size_t i = 0; i < scales.size(); ++i) {
      const auto& s = scales[i];
      o << (i ? ", " : "") << "{\"scale\": " << i << ", \"input\": [" << s.input_height << ", " << s.input_width
        << "], \"features\": [" << s.channels << ", " << s.height << ", " << s.width
        << "], \"gmacs\": " << std::setprecision(6) << static_cast<double>(s.macs) / 1e9 << "}";
    }
    o << "], \"total_gmacs\": " << std::setprecision(6) << static_cast<double>(total_macs()) / 1e9 << "}";
    return o.str();
  }

  /// Human-readable lines, ending with a newline.
  std::string to_text() const {
    std::ostringstream o;
    o << "backbone            " << name << " (" << activation << ", padding " << padding;
    if (padding == "static-same") o << " for " << native_resolution << " px";
    o << ")\n";
    o << "feature layer       block " << layer << " of 0.." << total_blocks - 1 << " (" << channels
      << " channels, stride " << stride << ")\n";
    o << "parameters          " << group_thousands(parameters_truncated) << " up to block " << layer << ", "
      << group_thousands(parameters_full) << " full model\n";
    for (std::size_t i = 0; i < scales.size(); ++i) {
      const auto& s = scales[i];
      o << "scale " << i << "             " << s.input_height << "x" << s.input_width << " -> [N, " << s.channels
        << ", " << s.height << ", " << s.width << "]  " << std::fixed << std::setprecision(2)
        << static_cast<double>(s.macs) / 1e9 << " GMAC\n";
    }
    o << "total               " << std::fixed << std::setprecision(2) << static_cast<double>(total_macs()) / 1e9
      << " GMAC (" << static_cast<double>(2 * total_macs()) / 1e9 << " GFLOP) per image over " << n_scales
      << " scale(s)\n";
    return o.str();
  }
};

/// Info for a named EfficientNet (see EfficientNetOptions::from_name). `layer` < 0 picks
/// default_feature_block (CS-Flow's block 35 for B5); the image size must divide by stride * 2^(n_scales-1).
inline BackboneInfo backbone_info(const std::string& name, int64_t layer = -1, int64_t image_size = 768,
                                  int64_t n_scales = 3, Padding padding = Padding::StaticSame) {
  auto o = EfficientNetOptions::from_name(name).padding(padding);
  const auto plan = efficientnet_plan(o);
  const int64_t total = static_cast<int64_t>(plan.blocks.size());
  if (layer < 0) layer = default_feature_block(o);
  if (layer >= total)
    throw FeatureError("backbone_info: layer " + std::to_string(layer) + " is out of range for " + o.name() +
                       ", which has blocks 0.." + std::to_string(total - 1));
  if (n_scales < 1) throw FeatureError("backbone_info: n_scales must be >= 1");
  BackboneInfo info;
  info.name = o.name();
  info.layer = layer;
  info.total_blocks = total;
  info.parameters_full = efficientnet_parameter_count(EfficientNetOptions(o).last_block(-1).include_top(true));
  o.last_block(layer);
  info.parameters_truncated = efficientnet_parameter_count(o);
  info.channels = plan.blocks[static_cast<std::size_t>(layer)].out_channels();
  info.stride = 2;
  for (int64_t i = 0; i <= layer; ++i) info.stride *= plan.blocks[static_cast<std::size_t>(i)].stride();
  info.image_size = image_size;
  info.n_scales = n_scales;
  info.native_resolution = o.native_resolution();
  info.padding = to_string(o.padding());
  info.activation = to_string(o.activation());
  const int64_t divisor = info.stride << (n_scales - 1);
  if (image_size < 1 || image_size % divisor != 0) {
    const int64_t below = image_size / divisor * divisor, above = below + divisor;
    throw FeatureError("backbone_info: image size " + std::to_string(image_size) + " must divide by " +
                       std::to_string(divisor) + " = stride " + std::to_string(info.stride) + " * 2^(" +
                       std::to_string(n_scales) + " - 1); the nearest valid sizes are " +
                       (below > 0 ? std::to_string(below) + " and " : std::string()) + std::to_string(above));
  }
  for (int64_t s = 0; s < n_scales; ++s) {
    ScaleInfo si;
    si.input_height = si.input_width = image_size >> s;
    const auto size = walk_efficientnet_sizes(plan, layer, si.input_height, si.input_width);
    si.channels = info.channels;
    si.height = size[0];
    si.width = size[1];
    si.macs = efficientnet_macs(o, si.input_height, si.input_width);
    info.scales.push_back(si);
  }
  return info;
}

}  // namespace validflow::features
