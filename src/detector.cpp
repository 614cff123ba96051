// validflow::Detector (validflow/detector.hpp): the LibTorch-free facade over validflow::TensorDetector. The only
// translation unit of the facade that includes LibTorch.
#include <validflow/detect/tensor_detector.hpp>
#include <validflow/detector.hpp>

#include <torch/torch.h>

#include <algorithm>

namespace validflow {
namespace {

torch::Device parse_device(const std::string& name) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    throw DeviceError("unknown device '" + name + "' (expected cpu, cuda or cuda:N)");
  }
  if (device.is_cpu()) return device;
  if (!device.is_cuda()) throw DeviceError("device '" + name + "' is not supported (expected cpu, cuda or cuda:N)");
  if (!torch::cuda::is_available())
    throw DeviceError("device '" + name + "' needs CUDA, and this LibTorch build or machine has no CUDA device");
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  const int64_t index = device.has_index() ? device.index() : 0;
  if (index < 0 || index >= count)
    throw DeviceError("GPU " + std::to_string(index) + " does not exist (" + std::to_string(count) + " CUDA devices)");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

/// A view of the caller's pixels (no copy: the detector only reads its inputs): uint8 [H, W, 3] or [H, W], or float
/// [3, H, W] (a channel-first view of the caller's [H, W, 3] floats, as TensorDetector takes them).
torch::Tensor as_tensor(const ImageView& image, size_t i, int64_t max_pixels) {
  const std::string who = "image " + std::to_string(i) + ": ";
  if (!image.data) throw ImageError(who + "no pixel data");
  if (image.height < 1 || image.width < 1)
    throw ImageError(who + "empty image (" + std::to_string(image.height) + " x " + std::to_string(image.width) + ")");
  if (image.height > max_pixels / image.width)  // before any product that could overflow
    throw ImageError(who + std::to_string(image.width) + " x " + std::to_string(image.height) +
                     " pixels is above the limit of " + std::to_string(max_pixels) +
                     " (DetectorOptions::max_image_pixels)");
  if (image.channels != 1 && image.channels != 3)
    throw ImageError(who + "expected 1 (gray) or 3 (RGB) channels, got " + std::to_string(image.channels));
  const bool floats = image.type == PixelType::float32;
  if (floats && image.channels != 3) throw ImageError(who + "float images need 3 (RGB) channels");
  const int64_t value_size = floats ? int64_t{sizeof(float)} : 1;
  const int64_t packed = image.width * image.channels * value_size;
  const int64_t stride = image.row_stride == 0 ? packed : image.row_stride;
  if (stride < packed)
    throw ImageError(who + "row stride " + std::to_string(stride) + " is shorter than a row (" +
                     std::to_string(packed) + " bytes)");
  auto* data = const_cast<uint8_t*>(image.data);
  if (floats) {
    if (stride % value_size != 0)
      throw ImageError(who + "row stride " + std::to_string(stride) + " is not a whole number of floats");
    return torch::from_blob(data, {image.height, image.width, 3}, {stride / value_size, 3, 1}, torch::kFloat32)
        .permute({2, 0, 1});
  }
  if (image.channels == 1) return torch::from_blob(data, {image.height, image.width}, {stride, 1}, torch::kUInt8);
  return torch::from_blob(data, {image.height, image.width, 3}, {stride, 3, 1}, torch::kUInt8);
}

std::vector<float> to_floats(const torch::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

Detector::Detector(const std::string& model_file, const DetectorOptions& options)
    : impl_(std::make_unique<TensorDetector>(model_file, TensorDetectorOptions()
                                                             .device(parse_device(options.device()))
                                                             .precision(options.precision())
                                                             .measure_precision(options.measure_precision())
                                                             .max_input_size(options.max_input_size())
                                                             .max_image_pixels(options.max_image_pixels()))) {}

Detector::~Detector() = default;
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;

std::vector<Prediction> Detector::predict(const std::vector<ImageView>& images, const PredictOptions& options) const {
  if (images.empty()) throw ImageError("Detector::predict: no images");
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i)
    tensors.push_back(as_tensor(images[i], i, impl_->options().max_image_pixels()));
  const auto predicted = impl_->predict(tensors, options);
  std::vector<Prediction> out(predicted.size());
  for (size_t i = 0; i < predicted.size(); ++i) {
    const auto& p = predicted[i];
    auto& o = out[i];
    o.score = p.score;
    o.normalized_score = p.normalized_score;
    o.anomalous = p.anomalous;
    o.valid = p.valid;
    if (!options.maps()) continue;
    o.height = images[i].height;
    o.width = images[i].width;
    o.anomaly_map = to_floats(p.anomaly_map);
    const auto mask = p.defect_mask.to(torch::kCPU, torch::kUInt8).contiguous();
    o.defect_mask.assign(mask.data_ptr<uint8_t>(), mask.data_ptr<uint8_t>() + mask.numel());
  }
  return out;
}

Prediction Detector::predict(const ImageView& image, const PredictOptions& options) const {
  return predict(std::vector<ImageView>{image}, options).at(0);
}

int64_t Detector::image_size() const { return impl_->image_size(); }
double Detector::threshold() const { return impl_->threshold(); }
double Detector::pixel_threshold() const { return impl_->info().decision.pixel_threshold; }
std::string Detector::device() const { return impl_->options().device().str(); }
Precision Detector::precision() const { return impl_->options().precision(); }
double Detector::precision_speedup() const { return impl_->precision_probe().speedup(); }

std::vector<float> Detector::normalized_map(const std::vector<float>& anomaly_map,
                                            std::optional<double> pixel_threshold) const {
  const auto map = torch::from_blob(const_cast<float*>(anomaly_map.data()), {static_cast<int64_t>(anomaly_map.size())},
                                    torch::kFloat32);
  return to_floats(impl_->normalized_map(map, pixel_threshold));
}

HeatmapScale Detector::heatmap_scale(std::optional<double> pixel_threshold) const {
  return impl_->heatmap_scale(pixel_threshold);
}

const TensorDetector& Detector::tensor_detector() const { return *impl_; }

void Detector::set_intra_op_threads(int threads) { torch::set_num_threads(std::max(1, threads)); }
int Detector::intra_op_threads() { return torch::get_num_threads(); }
bool Detector::cuda_available() { return torch::cuda::is_available(); }

}  // namespace validflow
