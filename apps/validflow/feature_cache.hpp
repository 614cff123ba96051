#pragma once
// The feature cache of the `validflow` program: the 3-scale features of a dataset's train, test and held-out
// images, extracted once by a frozen backbone, with what scoring and reporting need besides them (labels, defect
// types, image and mask paths) and the backbone's weights as they extracted (for `export`).
//
// File: validflow's verified container (io/tensor_archive.hpp, kind "validflow-features"): metadata (the
// extraction request: dataset spec and file lists, the backbone's description, weights file and fingerprint,
// storage type; the test samples) and the tensors `train.<s>`, `test.<s>`, `holdout.<s>`, `backbone.<key>`.
// A cache whose request differs from the one asked for is stale and is rebuilt. Written atomically.
#include <validflow/io/files.hpp>
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
std::string file_fingerprint(const std::string& path);

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
nlohmann::json extraction_request(const Dataset& dataset, const std::string& dataset_spec, const ExtractionSpec& e);

/// The kind of validflow file a feature cache is (io/tensor_archive.hpp) and its layout version.
constexpr const char* kFeatureCacheKind = "validflow-features";
constexpr int64_t kFeatureCacheVersion = 1;

/// Writes the cache atomically (io::write_archive): features, sample lists, meta and the backbone's weights.
void save_feature_cache(const FeatureCache& cache, const std::string& path);

/// Reads and verifies a feature cache: checksums (io::read_archive), then every tensor's presence, rank, dtype
/// and shape agreement, and the test sample list. Throws FileError naming the file and the problem.
/// feature_cache_from_archive does the checks after the archive's own (the fuzzer's entry point).
FeatureCache feature_cache_from_archive(const io::TensorArchive& archive, const std::string& path);

/// feature_cache_from_archive of the file at `path`; throws FileError when it is missing or unreadable.
FeatureCache load_feature_cache(const std::string& path);

/// The cache at `path` if it exists and was extracted for exactly `request` (its meta's "listing" when it has one:
/// the dataset as listed, before any image is decoded; else its "request"); otherwise nullopt with the reason.
std::optional<FeatureCache> load_matching_cache(const std::string& path, const nlohmann::json& request,
                                                std::string& reason);

/// The extractor of a spec, with its weights file (random weights when empty).
features::MultiScaleExtractor make_extractor(const ExtractionSpec& e);

/// The extractor a cache was extracted with, rebuilt from the cache itself (its stored backbone weights).
features::MultiScaleExtractor extractor_of(const FeatureCache& cache);

/// A decoded image (decode_image) as the tensor features::prepare_image takes: uint8 [H, W, 3] or float [3, H, W].
torch::Tensor image_tensor(const cv::Mat& rgb);

/// Images [end - start, 3, S, S] (RGB in [0, 1]) of samples[start, end), through the library's one resize.
torch::Tensor load_image_batch(const std::vector<Sample>& samples, size_t start, size_t end, int64_t image_size);

/// For a backbone without pretrained weights: BatchNorm statistics from (up to `max_images`) training images,
/// so that random features do not fade into constant channels. Returns the number of images used.
size_t calibrate_random_backbone(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& train,
                                 int64_t image_size, int64_t batch_size, size_t max_images = 64);

/// Extracts the features of `samples` in batches, with a progress bar.
TensorList extract_features(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& samples,
                            int64_t image_size, int64_t batch_size, bool fp16, const std::string& label);

}  // namespace validflow::app
