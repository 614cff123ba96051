#pragma once
// The feature cache of the `validflow` program: the 3-scale features of a dataset's train, test and held-out
// images, extracted once by a frozen backbone, with what scoring and reporting need besides them (labels, defect
// types, image and mask paths) and the backbone's weights as they extracted (for `export`).
//
// File: validflow's verified container (io/tensor_archive.hpp, kind "validflow-features"): metadata (the
// extraction request: dataset spec and file lists, the backbone's description, weights file and fingerprint,
// storage type; the test samples) and the tensors `train.<s>`, `test.<s>`, `holdout.<s>`, `backbone.<key>`.
// A cache whose request differs from the one asked for is stale and is rebuilt. Written atomically.
#include <validflow/io/atomic_file.hpp>
#include "datasets.hpp"
#include "progress.hpp"

#include <validflow/features.hpp>
#include <validflow/io/state_dict.hpp>

#include <nlohmann/json.hpp>
#include <validflow/io/tensor_archive.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>

namespace validflow::app {

/// What an extraction runs: the backbone's description and its weights file (empty: random weights, whose
/// BatchNorm statistics are then calibrated on the training images).
struct ExtractionSpec {
  features::BackboneSpec backbone;
  std::string weights;
  bool fp16 = false;  ///< store the features in float16 (half the disk; scores change by ~1e-4 relative)
};

/// Fingerprint of a file: size and FNV-1a of its bytes ("none" for no file).
inline std::string file_fingerprint(const std::string& path) {
  if (path.empty()) return "none";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot read weights file '" + path + "'");
  uint64_t hash = 1469598103934665603ull, size = 0;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      hash = (hash ^ static_cast<unsigned char>(buffer[i])) * 1099511628211ull;
    }
    size += static_cast<uint64_t>(in.gcount());
  }
  std::ostringstream s;
  s << size << "-" << std::hex << hash;
  return s.str();
}

struct FeatureCache {
  nlohmann::json meta;
  TensorList train;    ///< per scale [N_train, C, H_s, W_s]
  TensorList test;     ///< per scale [N_test, C, H_s, W_s]
  TensorList holdout;  ///< per scale [N_holdout, C, H_s, W_s]: good training images kept out of training, for
                       ///< the threshold at a target false-positive rate (empty when nothing was held out)
  std::vector<Sample> test_samples;
  std::vector<Sample> holdout_samples;
  StateDict backbone_state;  ///< the extractor's backbone exactly as it extracted (export puts it in the model file)

  int64_t channels() const { return train.at(0).size(1); }
  int64_t scales() const { return static_cast<int64_t>(train.size()); }
  MapSizes map_sizes() const {
    MapSizes sizes;
    for (const auto& t : train) sizes.push_back({t.size(2), t.size(3)});
    return sizes;
  }
};

/// What identifies an extraction: a cache with a different request is stale.
inline nlohmann::json extraction_request(const Dataset& dataset, const std::string& dataset_spec,
                                         const ExtractionSpec& e) {
  auto paths = [](const std::vector<Sample>& samples) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& s : samples) files.push_back(s.path);
    return files;
  };
  return {{"dataset", dataset_spec},
          {"train_files", paths(dataset.train)},
          {"test_files", paths(dataset.test)},
          {"holdout_files", paths(dataset.holdout)},
          {"backbone", features::to_json(e.backbone.resolved())},
          {"weights", e.weights},
          {"weights_fingerprint", file_fingerprint(e.weights)},
          {"fp16", e.fp16}};
}

/// The kind of validflow file a feature cache is (io/tensor_archive.hpp) and its layout version.
constexpr const char* kFeatureCacheKind = "validflow-features";
constexpr int64_t kFeatureCacheVersion = 1;

inline void save_feature_cache(const FeatureCache& cache, const std::string& path) {
  io::TensorArchive archive;
  archive.kind = kFeatureCacheKind;
  archive.kind_version = kFeatureCacheVersion;
  archive.meta = cache.meta;
  archive.meta["test_samples"] = nlohmann::json::array();
  for (const auto& s : cache.test_samples) {
    archive.meta["test_samples"].push_back(
        {{"path", s.path}, {"label", s.label}, {"type", s.type}, {"mask", s.mask_path}});
  }
  archive.meta["holdout_images"] = cache.holdout.empty() ? 0 : cache.holdout[0].size(0);
  archive.meta["holdout_samples"] = nlohmann::json::array();
  for (const auto& s : cache.holdout_samples) archive.meta["holdout_samples"].push_back(s.path);
  for (const auto& [key, tensor] : cache.backbone_state) archive.tensors.emplace_back("backbone." + key, tensor);
  for (size_t s = 0; s < cache.train.size(); ++s) {
    archive.tensors.emplace_back("train." + std::to_string(s), cache.train[s]);
    archive.tensors.emplace_back("test." + std::to_string(s), cache.test[s]);
    if (!cache.holdout.empty()) archive.tensors.emplace_back("holdout." + std::to_string(s), cache.holdout[s]);
  }
  io::write_archive(path, archive);
}

/// Reads and verifies a feature cache: checksums (io::read_archive), then every tensor's presence, rank, dtype
/// and shape agreement, and the test sample list. Throws FileError naming the file and the problem.
/// feature_cache_from_archive does the checks after the archive's own (the fuzzer's entry point).
inline FeatureCache feature_cache_from_archive(const io::TensorArchive& archive, const std::string& path) {
  io::check_archive_kind(archive, path, kFeatureCacheKind, kFeatureCacheVersion);
  auto refuse = [&](const std::string& why) { return FileError(path, "feature cache '" + path + "': " + why); };
  FeatureCache cache;
  try {
    cache.meta = archive.meta;
    const int64_t scales = io::json_integer<int64_t>(cache.meta.at("scales"), "scales");
    if (scales < 1 || scales > 8) throw refuse("invalid number of scales " + std::to_string(scales));
    std::map<std::string, torch::Tensor> tensors;
    cache.backbone_state.source = path;
    for (const auto& [key, tensor] : archive.tensors) {
      if (key.rfind("backbone.", 0) == 0)
        cache.backbone_state.emplace_back(key.substr(9), tensor);
      else
        tensors.emplace(key, tensor);
    }
    if (cache.backbone_state.empty()) throw refuse("holds no backbone weights");
    const int64_t holdout = io::json_integer<int64_t>(cache.meta.at("holdout_images"), "holdout_images");
    if (holdout < 0) throw refuse("negative holdout_images");
    auto split = [&](const std::string& name, TensorList& out) {
      for (int64_t s = 0; s < scales; ++s) {
        const auto key = name + "." + std::to_string(s);
        const auto it = tensors.find(key);
        if (it == tensors.end()) throw refuse("missing tensor '" + key + "'");
        const auto& t = it->second;
        if (t.dim() != 4 || !t.is_floating_point())
          throw refuse("tensor '" + key + "' must be a floating-point [N, C, H, W] tensor, got " +
                       validflow::detail::shape_string(t) + " " + c10::toString(t.scalar_type()));
        if ((t.size(0) < 1 && name != "holdout") || t.size(1) < 2 || t.size(2) < 1 || t.size(3) < 1)
          throw refuse("tensor '" + key +
                       "' has an empty dimension or fewer than 2 channels: " + validflow::detail::shape_string(t));
        if (s > 0 && (t.size(0) != out[0].size(0) || t.size(1) != out[0].size(1)))
          throw refuse("tensor '" + key + "' disagrees with scale 0 in images or channels");
        if (!torch::isfinite(t).all().item<bool>()) throw refuse("tensor '" + key + "' holds NaN or Inf values");
        out.push_back(t.to(torch::kFloat32));
      }
    };
    split("train", cache.train);
    split("test", cache.test);
    if (holdout > 0) split("holdout", cache.holdout);
    std::set<std::string> expected;  // every expected tensor is there (split): name one that is not expected
    for (const char* name : {"train", "test", "holdout"})
      for (int64_t s = 0; s < scales && (holdout > 0 || std::string(name) != "holdout"); ++s)
        expected.insert(std::string(name) + "." + std::to_string(s));
    for (const auto& [key, tensor] : tensors)
      if (!expected.count(key))
        throw refuse("unexpected tensor '" + key + "' (" + std::to_string(scales) + " scales, " +
                     std::to_string(holdout) + " held-out images)");
    if (cache.train[0].size(1) != cache.test[0].size(1)) throw refuse("train and test features differ in channels");
    for (const auto& s : cache.meta.at("test_samples")) {
      cache.test_samples.push_back({s.at("path").get<std::string>(), io::json_integer<int>(s.at("label"), "label"),
                                    s.at("type").get<std::string>(), s.at("mask").get<std::string>()});
      if (cache.test_samples.back().label != 0 && cache.test_samples.back().label != 1)
        throw refuse("a test sample's label is not 0 or 1");
    }
    if (static_cast<int64_t>(cache.test_samples.size()) != cache.test[0].size(0))
      throw refuse(std::to_string(cache.test_samples.size()) + " test samples for " +
                   std::to_string(cache.test[0].size(0)) + " test feature maps");
    if (holdout > 0 && cache.holdout[0].size(0) != holdout) throw refuse("holdout_images disagrees with the tensors");
    for (const auto& p : cache.meta.at("holdout_samples")) cache.holdout_samples.push_back({p.get<std::string>()});
    if (static_cast<int64_t>(cache.holdout_samples.size()) != holdout)
      throw refuse("holdout_samples disagrees with holdout_images");
  } catch (const nlohmann::json::exception& e) {
    throw refuse(std::string("invalid metadata: ") + e.what());
  } catch (const c10::Error& e) {
    throw refuse(e.what_without_backtrace());
  }
  return cache;
}

inline FeatureCache load_feature_cache(const std::string& path) {
  if (!std::filesystem::exists(path))
    throw FileError(path, "feature cache '" + path + "' not found (run `validflow extract` first)");
  return feature_cache_from_archive(io::parse_archive(io::read_file_bytes(path), path), path);
}

/// The cache at `path` if it exists and was extracted for exactly `request`; otherwise nullopt with the reason.
inline std::optional<FeatureCache> load_matching_cache(const std::string& path, const nlohmann::json& request,
                                                       std::string& reason) {
  if (!std::filesystem::exists(path)) {
    reason = "no cache yet";
    return std::nullopt;
  }
  try {
    auto cached = load_feature_cache(path);
    if (cached.meta.at("request") == request) return cached;
    reason = "stale: extracted for another dataset, backbone, weights, image size or storage type";
  } catch (const std::exception& e) {
    reason = std::string("unreadable: ") + e.what();
  }
  return std::nullopt;
}

/// The extractor of a spec, with its weights file (random weights when empty).
inline features::MultiScaleExtractor make_extractor(const ExtractionSpec& e) {
  return features::build_extractor(e.backbone, e.weights);
}

/// The extractor a cache was extracted with, rebuilt from the cache itself (its stored backbone weights).
inline features::MultiScaleExtractor extractor_of(const FeatureCache& cache) {
  auto extractor =
      features::build_extractor(features::backbone_spec_from_json(cache.meta.at("request").at("backbone")));
  load_state_dict(extractor->backbone.module(), cache.backbone_state);
  extractor->eval();
  return extractor;
}

/// A decoded image (decode_image) as the tensor features::prepare_image takes: uint8 [H, W, 3] or float [3, H, W].
inline torch::Tensor image_tensor(const cv::Mat& rgb) {
  if (rgb.type() == CV_8UC3) {
    return torch::from_blob(const_cast<uint8_t*>(rgb.ptr<uint8_t>()), {rgb.rows, rgb.cols, 3},
                            {static_cast<int64_t>(rgb.step[0]), 3, 1}, torch::kByte)
        .clone();
  }
  if (rgb.type() == CV_32FC3) {
    return torch::from_blob(const_cast<float*>(rgb.ptr<float>()), {rgb.rows, rgb.cols, 3},
                            {static_cast<int64_t>(rgb.step[0] / sizeof(float)), 3, 1}, torch::kFloat)
        .permute({2, 0, 1})
        .clone();
  }
  throw std::invalid_argument("image_tensor: expected a CV_8UC3 or CV_32FC3 image");
}

/// Images [end - start, 3, S, S] (RGB in [0, 1]) of samples[start, end), through the library's one resize.
inline torch::Tensor load_image_batch(const std::vector<Sample>& samples, size_t start, size_t end,
                                      int64_t image_size) {
  std::vector<torch::Tensor> images;
  for (size_t i = start; i < end; ++i) images.push_back(image_tensor(decode_image(samples[i].path)));
  return features::prepare_images(images, image_size, image_size);
}

/// For a backbone without pretrained weights: BatchNorm statistics from (up to `max_images`) training images,
/// so that random features do not fade into constant channels. Returns the number of images used.
inline size_t calibrate_random_backbone(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& train,
                                        int64_t image_size, int64_t batch_size, size_t max_images = 64) {
  std::vector<torch::Tensor> batches;
  const size_t n = std::min(train.size(), max_images);
  for (size_t start = 0; start < n; start += static_cast<size_t>(batch_size)) {
    batches.push_back(load_image_batch(train, start, std::min(n, start + static_cast<size_t>(batch_size)), image_size));
  }
  extractor.calibrate_batchnorm(batches);
  return n;
}

/// Extracts the features of `samples` in batches, with a progress bar.
inline TensorList extract_features(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& samples,
                                   int64_t image_size, int64_t batch_size, bool fp16, const std::string& label) {
  std::vector<TensorList> batches;
  ProgressBar bar(samples.size(), label, {"img"});
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < samples.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(samples.size(), start + static_cast<size_t>(batch_size));
    auto features = extractor.forward(load_image_batch(samples, start, end, image_size));
    if (fp16) {
      for (auto& f : features) f = f.to(torch::kHalf);
    }
    batches.push_back(std::move(features));
    bar.update(end);
  }
  bar.finish();
  TensorList out;
  for (size_t s = 0; s < batches.at(0).size(); ++s) {
    TensorList per_scale;
    for (const auto& b : batches) per_scale.push_back(b[s]);
    out.push_back(torch::cat(per_scale, 0));
  }
  return out;
}

}  // namespace validflow::app
