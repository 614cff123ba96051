#pragma once
// The backend's bridge to validflow::Detector, declared without LibTorch so that the Triton glue (backend.cpp)
// compiles in a second instead of half a minute. detector_engine.cpp is the only translation unit of the backend
// that includes torch.
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow::triton {

/// One RGB image, uint8, height x width x 3, contiguous; owned by the caller (Triton's request buffer).
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
};

/// One image's result (validflow::Prediction without the mask).
struct ItemResult {
  double score = 0;
  double normalized_score = 0;
  bool anomalous = false;
  std::vector<float> anomaly_map;  // height * width, row-major; empty when maps were not asked for
};

struct EngineOptions {
  std::string model_file;
  std::string precision = "fp32";  // fp32 | bf16
  bool cuda = false;               // a KIND_GPU instance
  int device_index = 0;
};

/// Thrown by predict() for an image the detector refuses (its what() names the problem); other exceptions are
/// internal errors.
class BadImage : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A loaded validflow::Detector. predict() is const and may run on several threads at once.
class DetectorEngine {
 public:
  explicit DetectorEngine(const EngineOptions& options);  // throws with a message naming the file
  ~DetectorEngine();
  DetectorEngine(const DetectorEngine&) = delete;
  DetectorEngine& operator=(const DetectorEngine&) = delete;

  /// Predicts a batch. threshold: overrides the model file's image threshold for this call.
  std::vector<ItemResult> predict(const std::vector<ImageView>& images, std::optional<double> threshold,
                                  bool maps) const;
  int64_t image_size() const;
  double threshold() const;
  std::string device() const;

  /// LibTorch's intra-op thread count (process-wide).
  static void set_intra_op_threads(int64_t threads);
  static int64_t intra_op_threads();
  /// Whether this LibTorch build can run KIND_GPU instances.
  static bool cuda_available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace validflow::triton
