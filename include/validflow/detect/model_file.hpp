#pragma once
// The model file: a trained detector as one self-contained file (io/tensor_archive.hpp, kind
// "validflow-model"): the backbone's description and weights, the image size and normalisation, the flow's
// configuration and weights, the score definition, the decision rule (thresholds, normalisation ranges) and
// the provenance (dataset, file-list fingerprint, training options, date). Nothing else is needed to use it.
//
// Loading is strict: a file of another kind or a newer version, a missing, extra or mis-shaped tensor, a
// failed checksum or inconsistent metadata is a FileError naming the file and the problem. No code runs from
// a model file: it holds JSON and raw numbers only (docs/reliability.md).
#include <validflow/detect/decision.hpp>
#include <validflow/features/backbone_spec.hpp>
#include <validflow/io/archive_reader.hpp>
#include <validflow/io/state_dict.hpp>
#include <validflow/io/tensor_archive.hpp>
#include <validflow/models/flow_config.hpp>
#include <validflow/version.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace validflow {

constexpr const char* kModelFileKind = "validflow-model";
constexpr int64_t kModelFileVersion = 1;

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
}  // namespace detail

/// Writes a model file atomically. `extractor` must be built from `info.backbone` and `flow` from `info.flow`.
inline void save_model_file(const std::string& path, const ModelInfo& info,
                            const features::MultiScaleExtractorImpl& extractor, const AnyFlow& flow) {
  info.decision.validate();
  info.flow.validate();
  io::TensorArchive archive;
  archive.kind = kModelFileKind;
  archive.kind_version = kModelFileVersion;
  archive.meta = {{"library_version", info.library_version},
                  {"backbone", features::to_json(info.backbone)},
                  {"normalization", detail::normalization_json(extractor.image_normalization())},
                  {"flow", to_json(info.flow)},
                  {"score", kScoreDefinition},
                  {"decision", to_json(info.decision)},
                  {"provenance", info.provenance}};
  for (const auto& [key, tensor] : module_state_dict(extractor.backbone.module()))
    archive.tensors.emplace_back("backbone." + key, tensor);
  for (const auto& [key, tensor] : module_state_dict(flow.module()))
    archive.tensors.emplace_back("flow." + key, tensor);
  io::write_archive(path, archive);
}

/// Verifies and builds a model file already read into an archive (load_model_file, and the fuzzer
/// fuzz/target_model_file.hpp on bytes); `path` names it in errors. Throws FileError.
inline LoadedModel load_model_archive(const io::TensorArchive& archive, const std::string& path) {
  const io::ArchiveReader file(archive, path, "model file", kModelFileKind, kModelFileVersion);
  const auto refuse = [&](const std::string& why) { return file.refuse(why); };
  constexpr size_t kMetadataFields = 7;  // library_version, backbone, flow, decision, provenance, score, normalization
  LoadedModel model;
  file.translate_errors([&] {
    const auto& meta = archive.meta;
    if (meta.size() != kMetadataFields)
      throw refuse("expected " + std::to_string(kMetadataFields) + " metadata fields, found " +
                   std::to_string(meta.size()));
    model.info.library_version = file.meta<std::string>("library_version");
    model.info.backbone = features::backbone_spec_from_json(meta.at("backbone"));
    model.info.flow = flow_config_from_json(meta.at("flow"));
    model.info.decision = decision_rule_from_json(meta.at("decision"));
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
  });
  model.extractor->eval();
  model.flow.module().eval();
  return model;
}

/// Reads, verifies and builds a model file (see the top of this file). Throws FileError naming the file.
inline LoadedModel load_model_file(const std::string& path) {
  return load_model_archive(io::parse_archive(io::read_file_bytes(path), path), path);
}

}  // namespace validflow
