#pragma once
// The options of one prediction, shared by validflow::Detector (validflow/detector.hpp, no LibTorch) and
// validflow::TensorDetector (detect/tensor_detector.hpp). No LibTorch needed.
#include <validflow/util/error.hpp>

#include <optional>
#include <stdexcept>

namespace validflow {

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
