#pragma once
// A feature extractor described by data (which EfficientNet, cut after which block, at which image size and
// how many scales), as it travels in feature caches and model files: `build_extractor` is the one place that
// turns a description into the multi-scale extractor, so extraction for training and prediction on new images
// use the same network with the same preprocessing.
#include <validflow/features/extractor.hpp>
#include <validflow/features/weights.hpp>
#include <validflow/io/json_fields.hpp>

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace validflow::features {

struct BackboneSpec {
  std::string name = "efficientnet-b5";  ///< efficientnet-b0..b7, efficientnet-lite0..4
  int64_t layer = -1;                    ///< feature block; < 0: the backbone's default (B5: 35, as CS-Flow)
  int64_t image_size = 768;              ///< input size of scale 0 (square); scales halve
  int64_t scales = 3;
  Padding padding = Padding::StaticSame;

  static constexpr int64_t max_image_size = 4096, max_scales = 8;

  /// The spec with `layer` resolved to the backbone's default when negative. Throws FeatureError for an
  /// unknown name, a block out of range, or a size that the backbone's stride and the scales do not divide.
  BackboneSpec resolved() const {
    BackboneSpec r = *this;
    const auto options = EfficientNetOptions::from_name(name);
    r.name = options.name();
    if (r.layer < 0) r.layer = default_feature_block(options);
    const int64_t blocks = static_cast<int64_t>(efficientnet_plan(options).blocks.size());
    if (r.layer >= blocks)
      throw FeatureError("backbone " + r.name + ": feature block " + std::to_string(r.layer) + " is out of range 0.." +
                         std::to_string(blocks - 1));
    if (scales < 1 || scales > max_scales)
      throw FeatureError("scales must be in 1.." + std::to_string(max_scales) + ", got " + std::to_string(scales));
    if (image_size < 1 || image_size > max_image_size)
      throw FeatureError("image size must be in 1.." + std::to_string(max_image_size) + ", got " +
                         std::to_string(image_size));
    return r;
  }
};

inline nlohmann::json to_json(const BackboneSpec& b) {
  return {{"name", b.name},
          {"layer", b.layer},
          {"image_size", b.image_size},
          {"scales", b.scales},
          {"padding", to_string(b.padding)}};
}

/// Strict: every key present with the right type, no other key; resolved (validated).
inline BackboneSpec backbone_spec_from_json(const nlohmann::json& j) {
  BackboneSpec b;
  try {
    for (const auto& item : j.items()) {
      const auto& k = item.key();
      if (k != "name" && k != "layer" && k != "image_size" && k != "scales" && k != "padding")
        throw FeatureError("unknown key '" + k + "'");
    }
    b.name = j.at("name").get<std::string>();
    b.layer = io::json_integer<int64_t>(j.at("layer"), "layer");
    b.image_size = io::json_integer<int64_t>(j.at("image_size"), "image_size");
    b.scales = io::json_integer<int64_t>(j.at("scales"), "scales");
    const auto padding = j.at("padding").get<std::string>();
    if (padding == "static-same")
      b.padding = Padding::StaticSame;
    else if (padding == "symmetric")
      b.padding = Padding::Symmetric;
    else
      throw FeatureError("unknown padding '" + padding + "'");
    return b.resolved();
  } catch (const nlohmann::json::exception& e) {
    throw FeatureError(std::string("invalid backbone description: ") + e.what());
  } catch (const FeatureError& e) {
    throw FeatureError(std::string("invalid backbone description: ") + e.what());
  }
}

/// Builds the multi-scale extractor a spec describes (frozen, eval mode, normalising with the backbone's own
/// statistics). Weights: a torch.save file (`weights_path`, efficientnet_pytorch or torchvision layout) or
/// none (random: shapes and tests only). Throws FeatureError for an invalid spec, FileError / StateDictError
/// for weights that cannot be read or do not fit.
inline MultiScaleExtractor build_extractor(const BackboneSpec& spec, const std::string& weights_path = "") {
  const auto s = spec.resolved();
  auto net = make_efficientnet(s.name, s.layer, weights_path, s.padding);
  return MultiScaleExtractor(MultiScaleExtractorOptions(net).image_size(s.image_size).n_scales(s.scales));
}

}  // namespace validflow::features
