// validflow::Detector behind the LibTorch-free DetectorEngine interface of detector_engine.hpp.
#include "detector_engine.hpp"

#include <validflow/detect.hpp>

#include <torch/torch.h>

namespace validflow::triton {

struct DetectorEngine::Impl {
  torch::Device device;
  Detector detector;
  Impl(const EngineOptions& options, torch::Device dev)
      : device(dev),
        detector(options.model_file, DetectorOptions().device(dev).precision(
                                         options.precision == "bf16" ? Precision::BFloat16 : Precision::Float32)) {}
};

namespace {
torch::Device device_for(const EngineOptions& options) {
  if (!options.cuda) return torch::kCPU;
  if (!torch::cuda::is_available())
    throw std::runtime_error("a KIND_GPU instance needs CUDA, and this LibTorch has no CUDA device");
  if (options.device_index < 0 || options.device_index >= static_cast<int>(torch::cuda::device_count()))
    throw std::runtime_error("GPU " + std::to_string(options.device_index) + " does not exist (" +
                             std::to_string(torch::cuda::device_count()) + " CUDA devices)");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(options.device_index));
}
}  // namespace

DetectorEngine::DetectorEngine(const EngineOptions& options)
    : impl_(std::make_unique<Impl>(options, device_for(options))) {}

DetectorEngine::~DetectorEngine() = default;

std::vector<ItemResult> DetectorEngine::predict(const std::vector<ImageView>& images, std::optional<double> threshold,
                                                bool maps) const {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (const auto& image : images)
    // A view of Triton's request buffer, not a copy: the detector only reads its inputs.
    tensors.push_back(
        torch::from_blob(const_cast<uint8_t*>(image.data), {image.height, image.width, 3}, torch::kUInt8));
  PredictOptions options;
  options.maps(maps);
  if (threshold) options.threshold(*threshold);
  std::vector<Prediction> predictions;
  try {
    predictions = impl_->detector.predict(tensors, options);
  } catch (const std::invalid_argument& e) {  // features::FeatureError: an image the detector cannot read
    throw BadImage(e.what());
  }
  if (predictions.size() != images.size())
    throw std::runtime_error("the detector returned " + std::to_string(predictions.size()) + " predictions for " +
                             std::to_string(images.size()) + " images");
  std::vector<ItemResult> results(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const Prediction& p = predictions[i];
    results[i].score = p.score;
    results[i].normalized_score = p.normalized_score;
    results[i].anomalous = p.anomalous;
    if (maps) {
      const torch::Tensor map = p.anomaly_map.to(torch::kCPU, torch::kFloat32).contiguous();
      if (map.dim() != 2 || map.size(0) != images[i].height || map.size(1) != images[i].width)
        throw std::runtime_error("the detector's anomaly map has shape " + c10::str(map.sizes()) + ", expected [" +
                                 std::to_string(images[i].height) + ", " + std::to_string(images[i].width) + "]");
      results[i].anomaly_map.assign(map.data_ptr<float>(), map.data_ptr<float>() + map.numel());
    }
  }
  return results;
}

int64_t DetectorEngine::image_size() const { return impl_->detector.image_size(); }
double DetectorEngine::threshold() const { return impl_->detector.threshold(); }
std::string DetectorEngine::device() const { return impl_->device.str(); }

void DetectorEngine::set_intra_op_threads(int64_t threads) { torch::set_num_threads(static_cast<int>(threads)); }
int64_t DetectorEngine::intra_op_threads() { return torch::get_num_threads(); }
bool DetectorEngine::cuda_available() { return torch::cuda::is_available(); }

}  // namespace validflow::triton
