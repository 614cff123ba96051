#pragma once
// The options of one prediction, shared by validflow::Detector (validflow/detector.hpp, no LibTorch) and
// validflow::TensorDetector (detect/tensor_detector.hpp). No LibTorch needed.
#include <validflow/util/error.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>

namespace validflow {

/// The most pixels (height x width) of an image a detector accepts unless its options allow more: 64 Mpx
/// (8192 x 8192). An image's maps are as large as the image, so the limit bounds a call's memory (~1.5 GB).
constexpr int64_t kDefaultMaxImagePixels = int64_t{1} << 26;

/// The largest model input size (px per side) a detector loads unless its options allow more: twice the paper's
/// 768. The extractor needs memory and time in proportion to the input's pixels (4096 px: ~5 GB per image).
constexpr int64_t kDefaultMaxInputSize = 1536;

/// A threshold override that is not a finite number.
class ThresholdError : public ErrorOf<std::invalid_argument, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
};

/// Chainable like LibTorch's options: `PredictOptions().threshold(2.5).maps(false)`.
struct PredictOptions {
  /// Overrides the model file's image threshold for this call.
  PredictOptions& threshold(std::optional<double> value) {
    threshold_ = value;
    return *this;
  }
  const std::optional<double>& threshold() const { return threshold_; }

  /// Overrides the model file's pixel threshold for this call.
  PredictOptions& pixel_threshold(std::optional<double> value) {
    pixel_threshold_ = value;
    return *this;
  }
  const std::optional<double>& pixel_threshold() const { return pixel_threshold_; }

  /// Compute anomaly maps and defect masks (the image score alone is cheaper).
  PredictOptions& maps(bool value) {
    maps_ = value;
    return *this;
  }
  bool maps() const { return maps_; }

 private:
  std::optional<double> threshold_;
  std::optional<double> pixel_threshold_;
  bool maps_ = true;
};

}  // namespace validflow
