#pragma once
// validflow::Detector: a trained detector (a model file written by `validflow export`) behind an interface that
// needs no LibTorch headers, so a program that only runs detectors compiles in about a second. Link the compiled
// library validflow::detect (CMake). The same detector on LibTorch tensors, header-only, with its stages exposed:
// validflow::TensorDetector (validflow/detect/tensor_detector.hpp); both give identical scores.
//
//   const validflow::Detector detector("model.vfm");                     // verified on load; CPU, fp32
//   const auto p = detector.predict(validflow::ImageView{rgb.data, rgb.rows, rgb.cols});   // uint8 RGB rows
//   if (p.anomalous) ...;          // p.score, p.normalized_score, p.anomaly_map / p.defect_mask (height x width)
//
// Errors carry validflow::Error (util/error.hpp): FileError for the file, UnsupportedPrecision for a precision
// the device lacks, ImageError for an image it cannot use (a layout it cannot read, float values outside [0, 1], more
// pixels than DetectorOptions::max_image_pixels), ThresholdError for a non-finite override, and a
// DeviceError for a device that does not exist; error_kind() classifies any of them.
// Thread safety: predict() is const and may run on several threads at once.
#include <validflow/detect/heatmap.hpp>
#include <validflow/detect/predict_options.hpp>
#include <validflow/util/error.hpp>
#include <validflow/util/precision.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow {

class TensorDetector;

/// An image the detector refuses (empty, a layout it cannot read, too small).
class ImageError : public ErrorOf<std::invalid_argument, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
};

/// A device that this build or machine does not have (CUDA absent, a GPU index out of range).
class DeviceError : public ErrorOf<std::runtime_error, ErrorKind::unsupported> {
 public:
  using ErrorOf::ErrorOf;
};

/// The type of an ImageView's values.
enum class PixelType {
  uint8,    ///< 0 .. 255
  float32,  ///< in [0, 1] (16-bit and float files, decoded as `validflow predict` decodes them); 3 channels only
};

/// A decoded image owned by the caller: `height` rows of `width` pixels of `channels` interleaved values (3: RGB,
/// 1: gray), each row `row_stride` bytes apart (0: tightly packed, width * channels * the value's size). OpenCV:
/// ImageView{mat.data, mat.rows, mat.cols, mat.channels(), static_cast<int64_t>(mat.step)} after BGR -> RGB
/// (and PixelType::float32 for a CV_32FC3 image).
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 3;
  int64_t row_stride = 0;
  PixelType type = PixelType::uint8;
};

struct DetectorOptions {
  /// "cpu", "cuda" or "cuda:N".
  DetectorOptions& device(std::string value) {
    device_ = std::move(value);
    return *this;
  }
  const std::string& device() const { return device_; }
  /// fp32, or bf16 where the device runs it natively and a timed probe at load shows it at least as fast as fp32
  /// (refused otherwise, never silently slower).
  DetectorOptions& precision(Precision value) {
    precision_ = value;
    return *this;
  }
  Precision precision() const { return precision_; }
  /// false: keep a reduced precision without the timed probe (still refused without native support).
  DetectorOptions& measure_precision(bool value) {
    measure_precision_ = value;
    return *this;
  }
  bool measure_precision() const { return measure_precision_; }
  /// The largest model input size loaded (px per side) and the most pixels of an image given to predict().
  DetectorOptions& max_input_size(int64_t value) {
    max_input_size_ = value;
    return *this;
  }
  int64_t max_input_size() const { return max_input_size_; }
  DetectorOptions& max_image_pixels(int64_t value) {
    max_image_pixels_ = value;
    return *this;
  }
  int64_t max_image_pixels() const { return max_image_pixels_; }

 private:
  std::string device_ = "cpu";
  Precision precision_ = Precision::Float32;
  bool measure_precision_ = true;
  int64_t max_input_size_ = kDefaultMaxInputSize;
  int64_t max_image_pixels_ = kDefaultMaxImagePixels;
};

/// What the detector says about one image.
struct Prediction {
  double score = 0;             ///< raw score: mean z^2 / 2 (CS-Flow's definition)
  double normalized_score = 0;  ///< in [0, 1], 0.5 at the threshold
  bool anomalous = false;       ///< score >= threshold, or not valid
  /// false: the score or the map is not finite, so it cannot be trusted; anomalous is then true (never a pass) and
  /// normalized_score 1. Report such a part as an error, not as a score (docs/reliability.md).
  bool valid = true;
  int64_t height = 0;  ///< the image's size: the maps' size (0 without maps)
  int64_t width = 0;
  std::vector<float> anomaly_map;    ///< height * width, row-major, at the image's resolution (empty without maps)
  std::vector<uint8_t> defect_mask;  ///< height * width: 1 where anomaly_map >= the pixel threshold
};

class Detector {
 public:
  /// Loads and verifies a model file.
  explicit Detector(const std::string& model_file, const DetectorOptions& options = {});
  ~Detector();
  Detector(Detector&&) noexcept;
  Detector& operator=(Detector&&) noexcept;
  Detector(const Detector&) = delete;
  Detector& operator=(const Detector&) = delete;

  /// Predicts on images of any sizes, in one batch.
  std::vector<Prediction> predict(const std::vector<ImageView>& images, const PredictOptions& options = {}) const;
  Prediction predict(const ImageView& image, const PredictOptions& options = {}) const;

  /// The model's input size: every image is resized to image_size() x image_size().
  int64_t image_size() const;
  /// The model file's image and pixel thresholds (PredictOptions overrides them per call).
  double threshold() const;
  double pixel_threshold() const;
  /// The device it runs on ("cpu", "cuda:0") and the precision.
  std::string device() const;
  Precision precision() const;
  /// A reduced precision's speed over fp32 as the probe at load measured it (fp32 time / reduced time, >= 1 when
  /// kept); 0 when no probe ran (fp32, or measure_precision(false)).
  double precision_speedup() const;
  /// An anomaly map normalised like the scores (0.5 at the pixel threshold, clamped to [0, 1]), for display:
  /// blend_heatmap (detect/heatmap.hpp) colours it as every validflow heatmap is coloured.
  std::vector<float> normalized_map(const std::vector<float>& anomaly_map,
                                    std::optional<double> pixel_threshold = std::nullopt) const;
  /// The raw map values the heatmap colours stand for (a legend): low -> 0, pixel threshold -> 0.5, high -> 1.
  HeatmapScale heatmap_scale(std::optional<double> pixel_threshold = std::nullopt) const;

  /// The LibTorch-level detector inside, for code that includes validflow/detect/tensor_detector.hpp.
  const TensorDetector& tensor_detector() const;

  /// LibTorch's intra-op thread count (process-wide), and whether this build and machine have CUDA.
  static void set_intra_op_threads(int threads);
  static int intra_op_threads();
  static bool cuda_available();

 private:
  std::unique_ptr<TensorDetector> impl_;
};

}  // namespace validflow
