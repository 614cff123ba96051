#pragma once
// The model file: a trained detector as one self-contained file (io/tensor_archive.hpp, kind
// "validflow-model"): the backbone's description and weights, the image size and normalisation, the flow's
// configuration and weights, the score definition, the decision rule (thresholds, normalisation ranges) and
// the provenance (dataset, file-list fingerprint, training options, date). Nothing else is needed to use it.
//
// Loading is strict: a file of another kind or a newer version, a missing, extra or mis-shaped tensor, a
// failed checksum, inconsistent metadata, an input size above the caller's limit (ModelFileLimits: checked
// before anything is built, so a small file cannot ask for gigabytes), a permutation that is not one, or weights
// that make the networks non-finite on a probe image is a FileError naming the file and the problem. No code runs
// from a model file: it holds JSON and raw numbers only (docs/reliability.md).
#include <validflow/detect/decision.hpp>
#include <validflow/detect/predict_options.hpp>
#include <validflow/features/backbone_spec.hpp>
#include <validflow/features/info.hpp>
#include <validflow/io/archive_reader.hpp>
#include <validflow/io/state_dict.hpp>
#include <validflow/io/tensor_archive.hpp>
#include <validflow/models/flow_config.hpp>
#include <validflow/version.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace validflow {

constexpr const char* kModelFileKind = "validflow-model";
/// 2: adds `feature_map_sizes` (the sizes the flow was trained on). 3: the decision rule's robust normalisation
/// anchors (detect/decision.hpp). Versions 1 and 2 are still read (min-max normalisation, as they were written).
constexpr int64_t kModelFileVersion = 3;

/// What a caller allows a model file to ask of the machine.
struct ModelFileLimits {
  int64_t max_input_size = kDefaultMaxInputSize;  ///< px per side (detect/predict_options.hpp)
};

/// The score a model file's thresholds refer to (CS-Flow's definition).
constexpr const char* kScoreDefinition =
    "mean over every scale, channel and position of z^2 / 2 (raw score); anomaly map: channel mean of z_0^2 at the "
    "finest scale, bilinear to the input size, Gaussian-smoothed with map_sigma";

/// Everything in a model file but the tensors.
struct ModelInfo {
  std::string library_version = version_string;  ///< of the validflow that wrote it
  features::BackboneSpec backbone;
  FlowConfig flow;
  DecisionRule decision;
  /// Side of each scale's feature maps the flow was trained on (finest first); empty when saving: the backbone's.
  std::vector<int64_t> feature_map_sizes;
  nlohmann::json provenance = nlohmann::json::object();  ///< dataset, files fingerprint, training, date, ...
};

/// A model file in memory: its description and the two networks (eval mode, CPU, float32).
struct LoadedModel {
  ModelInfo info;
  features::MultiScaleExtractor extractor{nullptr};
  AnyFlow flow;
};

namespace detail {
inline nlohmann::json normalization_json(const features::ImageNormalization& n) {
  return {{"mean", n.mean}, {"std", n.stddev}};
}

/// The side of each scale's feature maps the backbone of `spec` gives (finest first).
inline std::vector<int64_t> backbone_map_sizes(const features::BackboneSpec& spec) {
  std::vector<int64_t> sizes;
  for (const auto& s :
       features::backbone_info(spec.name, spec.layer, spec.image_size, spec.scales, spec.padding).scales)
    sizes.push_back(s.height);
  return sizes;
}

/// A smooth deterministic RGB pattern in [0, 1], as a batch [1, 3, size, size] (what the load-time probes run).
inline torch::Tensor probe_image(int64_t size) {
  const auto ramp = torch::linspace(0, 6.283185307179586, size, torch::kFloat32);
  const auto pattern = 0.5 + 0.25 * torch::sin(ramp).unsqueeze(1) * torch::cos(2 * ramp).unsqueeze(0);
  return torch::stack({pattern, pattern.flip(0), pattern.flip(1)}).unsqueeze(0);
}

/// A probe image through both networks; "" when every feature and every output of the flow is finite, else which
/// one is not. Catches a file whose finite weights overflow (one extreme weight made every score NaN) before any
/// part is judged by it.
inline std::string non_finite_on_probe(LoadedModel& model) {
  torch::NoGradGuard no_grad;
  const auto features = model.extractor->forward(probe_image(model.info.backbone.image_size));
  for (size_t s = 0; s < features.size(); ++s)
    if (!torch::isfinite(features[s]).all().item<bool>())
      return "its backbone's features at scale " + std::to_string(s) + " are not finite on a probe image";
  const auto z = model.flow->forward(features).tensors;
  for (size_t s = 0; s < z.size(); ++s)
    if (!torch::isfinite(z[s]).all().item<bool>())
      return "its flow's output at scale " + std::to_string(s) +
             " is not finite on a probe image (weights that overflow)";
  return "";
}
}  // namespace detail

/// Writes a model file atomically. `extractor` must be built from `info.backbone` and `flow` from `info.flow`.
inline void save_model_file(const std::string& path, const ModelInfo& info,
                            const features::MultiScaleExtractorImpl& extractor, const AnyFlow& flow) {
  info.decision.validate();
  info.flow.validate();
  const auto map_sizes = detail::backbone_map_sizes(info.backbone);
  if (!info.feature_map_sizes.empty() && info.feature_map_sizes != map_sizes)
    throw std::invalid_argument(
        "save_model_file: the flow was trained on other feature-map sizes than the backbone "
        "gives at " +
        std::to_string(info.backbone.image_size) + " px");
  io::TensorArchive archive;
  archive.kind = kModelFileKind;
  archive.kind_version = kModelFileVersion;
  archive.meta = {{"library_version", info.library_version},
                  {"backbone", features::to_json(info.backbone)},
                  {"normalization", detail::normalization_json(extractor.image_normalization())},
                  {"flow", to_json(info.flow)},
                  {"score", kScoreDefinition},
                  {"decision", to_json(info.decision)},
                  {"feature_map_sizes", map_sizes},
                  {"provenance", info.provenance}};
  for (const auto& [key, tensor] : module_state_dict(extractor.backbone.module()))
    archive.tensors.emplace_back("backbone." + key, tensor);
  for (const auto& [key, tensor] : module_state_dict(flow.module()))
    archive.tensors.emplace_back("flow." + key, tensor);
  io::write_archive(path, archive);
}

/// Verifies and builds a model file already read into an archive (load_model_file, and the fuzzer
/// fuzz/target_model_file.hpp on bytes); `path` names it in errors. Throws FileError.
inline LoadedModel load_model_archive(const io::TensorArchive& archive, const std::string& path,
                                      const ModelFileLimits& limits = {}) {
  const io::ArchiveReader file(archive, path, "model file", kModelFileKind, kModelFileVersion);
  const auto refuse = [&](const std::string& why) { return file.refuse(why); };
  // library_version, backbone, flow, decision, provenance, score, normalization (+ feature_map_sizes from version 2)
  const size_t metadata_fields = archive.kind_version >= 2 ? 8 : 7;
  LoadedModel model;
  file.translate_errors([&] {
    const auto& meta = archive.meta;
    if (meta.size() != metadata_fields)
      throw refuse("expected " + std::to_string(metadata_fields) + " metadata fields, found " +
                   std::to_string(meta.size()));
    model.info.library_version = file.meta<std::string>("library_version");
    model.info.backbone = features::backbone_spec_from_json(meta.at("backbone"));
    const int64_t input_size = model.info.backbone.image_size;
    if (input_size > limits.max_input_size)
      throw refuse("its input size " + std::to_string(input_size) + " px is above the limit of " +
                   std::to_string(limits.max_input_size) +
                   " px (raise it with --max-input-size, the Triton "
                   "parameter max_input_size or ModelFileLimits)");
    model.info.flow = flow_config_from_json(meta.at("flow"));
    model.info.decision = decision_rule_from_json(meta.at("decision"), /*legacy=*/archive.kind_version < 3);
    model.info.provenance = meta.at("provenance");
    if (file.meta<std::string>("score") != kScoreDefinition)
      throw refuse("its score definition is not the one this build computes");
    // Sizes are checked before building: a small file cannot make us build a big backbone or allocate a huge flow.
    const auto backbone = file.tensors("backbone."), flow = file.tensors("flow.");
    const int64_t backbone_weights = backbone.element_count();
    const auto& b = model.info.backbone;
    const int64_t needed = features::efficientnet_parameter_count(
        features::EfficientNetOptions::from_name(b.name).last_block(b.layer).padding(b.padding));
    if (backbone_weights < needed)
      throw refuse("its backbone (" + b.name + " up to block " + std::to_string(b.layer) + ") needs " +
                   std::to_string(needed) + " weights, the file holds " + std::to_string(backbone_weights));
    model.info.feature_map_sizes = detail::backbone_map_sizes(model.info.backbone);
    if (archive.kind_version >= 2 &&
        file.meta<std::vector<int64_t>>("feature_map_sizes") != model.info.feature_map_sizes)
      throw refuse("its flow was trained on feature maps of " + meta.at("feature_map_sizes").dump() +
                   " px, its backbone gives " + nlohmann::json(model.info.feature_map_sizes).dump() + " at " +
                   std::to_string(input_size) + " px");
    model.extractor = features::build_extractor(model.info.backbone);
    if (meta.at("normalization") != detail::normalization_json(model.extractor->image_normalization()))
      throw refuse("its image normalisation differs from the backbone's");
    const int64_t channels = model.extractor->backbone->feature_channels();
    if (model.info.flow.channels != channels || model.info.flow.scales != model.info.backbone.scales)
      throw refuse("the flow expects " + std::to_string(model.info.flow.scales) + " scales of " +
                   std::to_string(model.info.flow.channels) + " channels, the backbone gives " +
                   std::to_string(model.info.backbone.scales) + " of " + std::to_string(channels));
    check_parameters_available(model.info.flow, flow.element_count());
    model.flow = build_flow(model.info.flow);
    file.check_every_tensor_used("backbone.* and flow.*");
    file.check_every_tensor_finite();
    load_state_dict(model.extractor->backbone.module(), backbone);
    load_state_dict(model.flow.module(), flow);
    for (const auto& [key, tensor] : flow)
      if (key.size() >= 11 && key.compare(key.size() - 11, 11, "initialized") == 0 && !tensor.item<bool>())
        throw refuse("its flow was never trained (ActNorm '" + key + "' is not initialised)");
    model.extractor->eval();
    model.flow.module().eval();
    if (const auto problem = detail::non_finite_on_probe(model); !problem.empty()) throw refuse(problem);
  });
  return model;
}

/// Reads, verifies and builds a model file (see the top of this file). Throws FileError naming the file.
inline LoadedModel load_model_file(const std::string& path, const ModelFileLimits& limits = {}) {
  return load_model_archive(io::parse_archive(io::read_file_bytes(path), path), path, limits);
}

}  // namespace validflow
