#pragma once
// validflow::TensorDetector: a trained detector loaded from a model file (detect/model_file.hpp), predicting on
// decoded images given as LibTorch tensors; header-only. validflow::Detector (validflow/detector.hpp, library
// validflow::detect) is the same detector behind a LibTorch-free interface, for programs that only run it.
// The library itself reads no image files (no OpenCV): give it tensors as OpenCV or PIL decode them.
//
//   validflow::TensorDetector detector("model.vfm");           // CPU, fp32
//   auto p = detector.predict(image);   // uint8 [H, W, 3] RGB (or [H, W] gray, or float [3, H, W] in [0, 1])
//   if (p.anomalous) ...;                // p.score, p.normalized_score, p.anomaly_map [H, W], p.defect_mask [H, W]
//
// The path of an image is exactly the one of `validflow extract / train / eval`: the one resize and the
// backbone's normalisation (features/preprocess.hpp), the multi-scale extractor, the flow, the score and the
// maps (models/objectives.hpp, models/maps.hpp). So the scores equal `eval`'s for the same images.
//
// Thread safety: predict() is const and may be called from several threads at once on one Detector; results
// are identical to a single thread (tested). Devices: CPU and CUDA. Precision: fp32, or bf16 where the device
// runs it natively and faster: a CPU without AVX512_BF16 is refused at construction, and elsewhere a timed probe at
// load (precision_probe()) must show the reduced precision at least as fast as fp32, else it is refused too: some
// AVX512_BF16 hosts run bf16 at half the fp32 speed (docs/benchmarks.md). Never silently slower.
// Results (maps, masks) are CPU tensors.
#include <validflow/detect/heatmap.hpp>
#include <validflow/detect/model_file.hpp>
#include <validflow/detect/predict_options.hpp>
#include <validflow/features/preprocess.hpp>
#include <validflow/models/maps.hpp>
#include <validflow/models/objectives.hpp>
#include <validflow/models/precision.hpp>
#include <validflow/models/scoring.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace validflow {

/// A map of raw values normalised on `scale` (detect/decision.hpp), element-wise, clamped to [0, 1].
inline torch::Tensor normalize_map(const torch::Tensor& map, const NormalizationScale& scale) {
  return torch::where(map < scale.threshold, 0.5 - 0.5 * (scale.threshold - map) / scale.below,
                      0.5 + 0.5 * (map - scale.threshold) / scale.above)
      .clamp(0, 1);
}

struct TensorDetectorOptions {
  /// Where the networks run (images may be given on any device).
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// fp32, or bf16 (autocast of the extractor and the flow; scores and maps are computed in fp32).
  TORCH_ARG(Precision, precision) = Precision::Float32;
  /// The largest model input size loaded (px per side; detect/model_file.hpp).
  TORCH_ARG(int64_t, max_input_size) = kDefaultMaxInputSize;
  /// The most pixels an image given to predict() may have (its maps are as large; kDefaultMaxImagePixels).
  TORCH_ARG(int64_t, max_image_pixels) = kDefaultMaxImagePixels;
  /// A reduced precision is kept only where a timed probe at load shows it at least as fast as fp32 on this
  /// device (a few seconds for a full-size model; only when bf16/fp16 is asked for). false: run it as asked,
  /// unmeasured (still refused where the device lacks native support).
  TORCH_ARG(bool, measure_precision) = true;
};

/// What the load-time precision probe measured: the best of 2 timed runs of the networks (extractor and flow) on
/// a probe image at the model's input size, at fp32 and at the precision asked for, alternating.
struct PrecisionProbe {
  Precision precision = Precision::Float32;  ///< the reduced precision measured (fp32: no probe ran)
  double fp32_seconds = 0;
  double reduced_seconds = 0;
  /// fp32 time / reduced time: above 1, the reduced precision is faster.
  double speedup() const { return reduced_seconds > 0 ? fp32_seconds / reduced_seconds : 0; }
  /// Whether the reduced precision is kept: at least as fast as fp32.
  bool pays() const { return reduced_seconds > 0 && reduced_seconds <= fp32_seconds; }
  /// "bf16 measured 1.62x the speed of fp32 (0.270 s against 0.438 s per probe image)": for logs and refusals.
  std::string describe() const {
    char text[160];
    std::snprintf(text, sizeof text, "%s measured %.2fx the speed of fp32 (%.3f s against %.3f s per probe image)",
                  to_string(precision).c_str(), speedup(), reduced_seconds, fp32_seconds);
    return text;
  }
};

/// What the detector says about one image.
struct TensorPrediction {
  double score = 0;             ///< raw score: mean z^2 / 2 (CS-Flow's definition)
  double normalized_score = 0;  ///< in [0, 1], 0.5 at the threshold (detect/decision.hpp)
  bool anomalous = false;       ///< score >= threshold, or not valid
  bool valid = true;            ///< false: the score or the map is not finite (never a pass: anomalous is true)
  torch::Tensor anomaly_map;    ///< float32 [H, W] at the image's own resolution (undefined without maps)
  torch::Tensor defect_mask;    ///< bool [H, W]: anomaly_map >= pixel threshold (undefined without maps)
};

class TensorDetector {
 public:
  /// Loads and verifies a model file. Throws FileError (the file), UnsupportedPrecision (the precision on
  /// this device).
  explicit TensorDetector(const std::string& model_file, TensorDetectorOptions options = {})
      : TensorDetector(load_model_file(model_file, ModelFileLimits{checked_limits(options).max_input_size()}),
                       options) {}

  TensorDetector(LoadedModel model, TensorDetectorOptions options)
      : model_(std::move(model)), options_(checked_limits(options)) {
    if (model_.info.backbone.image_size > options_.max_input_size())
      throw FileError("", "the model's input size " + std::to_string(model_.info.backbone.image_size) +
                              " px is above the limit of " + std::to_string(options_.max_input_size()) + " px");
    check_precision_fast(options_.precision(), options_.device());
    model_.extractor->to(options_.device());
    model_.flow.module().to(options_.device());
    model_.extractor->eval();
    model_.flow.module().eval();
    if (options_.precision() != Precision::Float32 && options_.measure_precision()) {
      probe_ = measure_precision(options_.precision());
      if (!probe_.pays())
        throw UnsupportedPrecision("precision " + probe_.describe() + " at " + std::to_string(image_size()) +
                                   " px on " + options_.device().str() +
                                   ": slower than fp32 here, so it is refused; use fp32");
    }
  }

  /// Predicts on decoded images of any sizes (see the top of this file), in one batch. Throws FeatureError
  /// naming the image for an image it cannot read, std::invalid_argument for a non-finite threshold.
  std::vector<TensorPrediction> predict(const std::vector<torch::Tensor>& images,
                                        const PredictOptions& options = {}) const {
    const double threshold = checked_threshold(options.threshold(), info().decision.threshold, "threshold");
    const double pixel_threshold =
        checked_threshold(options.pixel_threshold(), info().decision.pixel_threshold, "pixel threshold");
    torch::NoGradGuard no_grad;
    const auto scored = score(features(preprocess(images)));
    const auto scores = scored.scores.to(torch::kCPU, torch::kFloat64);
    // A map that is not finite fails the part too; checked once on the small finest-scale maps (resizing and
    // smoothing finite values stays finite), not on every full-resolution map.
    const auto maps_finite = torch::isfinite(scored.maps).flatten(1).all(1).to(torch::kCPU);
    torch::Tensor maps;
    if (options.maps()) maps = maps_at_input_size(scored.maps, image_size(), info().decision.map_sigma);
    std::vector<TensorPrediction> out(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      auto& p = out[i];
      p.score = scores[static_cast<int64_t>(i)].item<double>();
      const bool map_finite = maps_finite[static_cast<int64_t>(i)].item<bool>();
      const auto decision = info().decision.decide(map_finite ? p.score : std::nan(""), threshold);
      p.normalized_score = decision.normalized_score;
      p.anomalous = decision.anomalous;
      p.valid = decision.valid;
      if (!options.maps()) continue;
      const auto [height, width] = image_height_width(images[i]);
      p.anomaly_map = resize_maps(maps.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1), height, width)
                          .squeeze(0)
                          .to(torch::kCPU)
                          .contiguous();
      p.defect_mask = p.anomaly_map >= pixel_threshold;
    }
    return out;
  }

  TensorPrediction predict(const torch::Tensor& image, const PredictOptions& options = {}) const {
    return predict(std::vector<torch::Tensor>{image}, options).at(0);
  }

  // The stages of predict(), for benchmarks and custom pipelines -----------------------------------------

  /// Decoded images -> float batch [N, 3, S, S] in [0, 1] on the detector's device (the one resize).
  torch::Tensor preprocess(const std::vector<torch::Tensor>& images) const {
    if (images.empty()) throw features::FeatureError("Detector::predict: no images");
    std::vector<torch::Tensor> on_device;
    on_device.reserve(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      const auto& image = images[i];
      if (!image.defined()) throw features::FeatureError("Detector::predict: an image tensor is undefined");
      if (image.dim() >= 2 && image.numel() > 0) {  // prepare_images names a wrong layout
        const auto [height, width] = image_height_width(image);
        if (height * width > options_.max_image_pixels())
          throw features::FeatureError("image " + std::to_string(i) + ": " + std::to_string(width) + " x " +
                                       std::to_string(height) + " pixels is above the limit of " +
                                       std::to_string(options_.max_image_pixels()) + " (max_image_pixels)");
      }
      on_device.push_back(image.to(options_.device()));
    }
    return features::prepare_images(on_device, image_size(), image_size());
  }

  /// Image batch [N, 3, S, S] -> multi-scale features (fp32).
  TensorList features(const torch::Tensor& batch) const { return features_at(batch, options_.precision()); }

  /// Features -> image scores [N] and finest-scale maps [N, h0, w0] (fp32).
  FeatureScores score(const TensorList& features) const { return score_at(features, options_.precision()); }

  /// Times both networks on a probe image at fp32 and at `reduced` on this detector's device: one untimed round
  /// (first-call allocations, kernel selection), then 2 timed runs of each, alternating; the best of each. The
  /// constructor runs it for a reduced precision.
  PrecisionProbe measure_precision(Precision reduced) const {
    check_precision_supported(reduced, options_.device());
    torch::NoGradGuard no_grad;
    const auto batch = detail::probe_image(image_size()).to(options_.device());
    PrecisionProbe probe;
    probe.precision = reduced;
    probe.fp32_seconds = probe.reduced_seconds = std::numeric_limits<double>::infinity();
    for (int round = 0; round < 3; ++round) {
      for (const auto precision : {Precision::Float32, reduced}) {
        const auto start = std::chrono::steady_clock::now();
        // Copying the scores to the CPU waits for the device (CUDA runs asynchronously).
        score_at(features_at(batch, precision), precision).scores.to(torch::kCPU);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (round == 0) continue;
        double& best = precision == Precision::Float32 ? probe.fp32_seconds : probe.reduced_seconds;
        best = std::min(best, seconds);
      }
    }
    return probe;
  }

  /// What the load-time probe measured (precision Float32 and no times when none ran).
  const PrecisionProbe& precision_probe() const { return probe_; }

  // What the model is -------------------------------------------------------------------------------------

  const ModelInfo& info() const { return model_.info; }
  /// The model's input size: every image is resized to image_size() x image_size().
  int64_t image_size() const { return model_.info.backbone.image_size; }
  /// The model file's image threshold (PredictOptions::threshold overrides it per call).
  double threshold() const { return model_.info.decision.threshold; }
  const TensorDetectorOptions& options() const { return options_; }
  /// Maps normalised like the scores (DecisionRule::map_scale: 0.5 at the pixel threshold): what heatmaps colour.
  torch::Tensor normalized_map(const torch::Tensor& anomaly_map, std::optional<double> pixel_threshold = {}) const {
    const auto& d = info().decision;
    return normalize_map(anomaly_map, d.map_scale(pixel_threshold ? *pixel_threshold : d.pixel_threshold));
  }
  /// The raw map values the heatmap colours stand for (detect/heatmap.hpp).
  HeatmapScale heatmap_scale(std::optional<double> pixel_threshold = {}) const {
    const auto& d = info().decision;
    const auto s = d.map_scale(pixel_threshold ? *pixel_threshold : d.pixel_threshold);
    return {s.low(), s.threshold, s.high()};
  }

 private:
  static double checked_threshold(const std::optional<double>& override, double stored, const char* what) {
    if (!override) return stored;
    if (!std::isfinite(*override)) throw ThresholdError(std::string("the ") + what + " must be finite");
    return *override;
  }

  TensorList features_at(const torch::Tensor& batch, Precision precision) const {
    torch::NoGradGuard no_grad;
    if (precision == Precision::Float32) return model_.extractor.ptr()->forward(batch);
    detail::AutocastRegion autocast(options_.device(), precision_dtype(precision));
    auto out = model_.extractor.ptr()->forward(batch);
    for (auto& f : out) f = f.to(torch::kFloat32);
    return out;
  }

  FeatureScores score_at(const TensorList& features, Precision precision) const {
    const auto z = forward_at_precision(*model_.flow, features, precision).tensors;
    return {image_scores(z), anomaly_maps(z)};
  }

  /// Height and width of a decoded image (uint8 [H, W, C] / [H, W], float [C, H, W]; rank >= 2).
  static std::pair<int64_t, int64_t> image_height_width(const torch::Tensor& image) {
    if (image.scalar_type() == torch::kByte || image.dim() == 2) return {image.size(0), image.size(1)};
    return {image.size(1), image.size(2)};
  }

  static TensorDetectorOptions checked_limits(TensorDetectorOptions options) {
    if (options.max_input_size() < 1)
      throw std::invalid_argument("TensorDetectorOptions: max_input_size must be >= 1, got " +
                                  std::to_string(options.max_input_size()));
    if (options.max_image_pixels() < 1)
      throw std::invalid_argument("TensorDetectorOptions: max_image_pixels must be >= 1, got " +
                                  std::to_string(options.max_image_pixels()));
    return options;
  }

  LoadedModel model_;
  TensorDetectorOptions options_;
  PrecisionProbe probe_;
};

}  // namespace validflow
