#pragma once
// The run-time interface every feature backbone of validflow implements (native EfficientNets, TorchScript
// models), and the error types of the features part.
//
//  * `features(x)` maps a normalised image batch [N, 3, H, W] to one feature map [N, C, H/s, W/s], where s is
//    `feature_stride()`. Backbones are frozen feature extractors: they are used in eval mode.
//  * `normalization()`: the per-channel statistics the network was trained with (ImageNet's for EfficientNet-B*,
//    TF's (255 x - 127) / 128 for EfficientNet-Lite); the extractor normalises images with them.
//  * A plain interface: a backbone is an ordinary LibTorch module (torch::nn::Cloneable<XImpl>) that also
//    implements it; AnyBackbone holds one of any type with both views.
#include <validflow/util/error.hpp>
#include <validflow/util/modules.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow::features {

/// Thrown for every invalid argument of the features part (bad image tensor, bad sizes, bad options).
class FeatureError : public ErrorOf<std::invalid_argument, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
};

/// Per-channel normalisation statistics for images in [0, 1].
struct ImageNormalization {
  std::vector<double> mean;
  std::vector<double> stddev;
  /// torchvision / efficientnet_pytorch / CS-Flow.
  static ImageNormalization imagenet() { return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}}; }
  /// EfficientNet-Lite (TF): (255 x - 127) / 128.
  static ImageNormalization lite() {
    return {{127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0}, {128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0}};
  }
  bool operator==(const ImageNormalization& o) const { return mean == o.mean && stddev == o.stddev; }
  bool operator!=(const ImageNormalization& o) const { return !(*this == o); }
};

/// Interface of a frozen image -> feature-map network.
class FeatureBackbone {
 public:
  virtual ~FeatureBackbone() = default;
  /// Normalised images [N, 3, H, W] -> features [N, C, H', W'].
  virtual torch::Tensor features(const torch::Tensor& x) = 0;
  /// Total down-sampling factor of `features` (32 for EfficientNet cut after a stride-32 block). Image sizes
  /// must divide by it (times 2^(scales-1) in the multi-scale extractor).
  virtual int64_t feature_stride() const = 0;
  /// Number of feature channels, or -1 when only known after a forward pass (TorchScript).
  virtual int64_t feature_channels() const = 0;
  /// A short name for messages and `info`.
  virtual std::string backbone_name() const = 0;
  /// The image statistics the network expects (see the top of this file).
  virtual ImageNormalization normalization() const = 0;
};

/// Any feature backbone, with its parameters (see ModuleRef in core/flow.hpp).
using AnyBackbone = ModuleRef<FeatureBackbone>;

namespace detail {

using validflow::detail::shape_string;

/// Checks that `x` is a floating NCHW RGB batch; `who` names the caller in the message.
inline void check_image_batch(const std::string& who, const torch::Tensor& x) {
  if (!x.defined()) throw FeatureError(who + ": the input tensor is undefined");
  if (x.dim() != 4)
    throw FeatureError(who + ": expected an image batch [N, 3, H, W], got a tensor of shape " +
                       shape_string(x.sizes()));
  if (x.size(1) != 3) {
    std::string hint = x.size(1) == 1 ? " (grayscale images must be converted explicitly, e.g. "
                                        "x.expand({-1, 3, -1, -1}))"
                                      : "";
    throw FeatureError(who + ": expected 3 (RGB) channels, got " + std::to_string(x.size(1)) +
                       " channels in a tensor of shape " + shape_string(x.sizes()) + hint);
  }
  if (!x.is_floating_point())
    throw FeatureError(who + ": expected a floating-point image tensor, got dtype " +
                       std::string(c10::toString(x.scalar_type())) +
                       " (convert with x.to(torch::kFloat) / 255 for 8-bit images)");
  if (x.size(0) < 1 || x.size(2) < 1 || x.size(3) < 1)
    throw FeatureError(who + ": empty image batch of shape " + shape_string(x.sizes()));
}

/// Checks that `x` has the dtype and device of the module's parameter `reference` (if defined).
inline void check_matches_parameters(const std::string& who, const torch::Tensor& x, const torch::Tensor& reference) {
  if (!reference.defined()) return;
  if (x.scalar_type() != reference.scalar_type() || x.device() != reference.device()) {
    std::ostringstream m;
    m << who << ": input has dtype " << x.scalar_type() << " on " << x.device() << " but the weights have dtype "
      << reference.scalar_type() << " on " << reference.device() << "; move the input or call module->to(...)";
    throw FeatureError(m.str());
  }
}

}  // namespace detail
}  // namespace validflow::features
