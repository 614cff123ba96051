#pragma once
// The multi-scale feature extractor of CS-Flow / ValidFlow.
//
// forward(images) with images [N, 3, H, W] in [0, 1] (H x W = image_size):
//   1. normalise per channel: (x - mean) / std (ImageNet statistics by default);
//   2. scale 0 is the normalised tensor; scale s > 0 is its nearest-neighbour downsample to (H/2^s, W/2^s),
//      always taken from the full-resolution tensor (F.interpolate(x, size) in the official code);
//   3. the same frozen backbone runs on every scale.
// Returns a TensorList (one NCHW map per scale, scale 0 the finest). With the default CS-Flow backbone
// (EfficientNet-B5 cut after block 35, static-same padding for 456 px) and 768-px images the maps are
// [N, 304, 24, 24], [N, 304, 12, 12], [N, 304, 6, 6].
//
// Image sizes must divide by feature_stride * 2^(n_scales - 1) (32 * 4 = 128 for CS-Flow); the extractor
// does not resize: use prepare_images() / resize_images() (features/preprocess.hpp) first.
#include <validflow/features/backbone.hpp>
#include <validflow/features/efficientnet.hpp>
#include <validflow/features/preprocess.hpp>
#include <validflow/features/weights.hpp>
#include <validflow/util/modules.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace validflow::features {

struct MultiScaleExtractorOptions {
  /* implicit */ MultiScaleExtractorOptions(AnyBackbone backbone) : backbone_(std::move(backbone)) {}
  template <typename Impl, typename = std::enable_if_t<std::is_base_of<FeatureBackbone, Impl>::value>>
  /* implicit */ MultiScaleExtractorOptions(const torch::nn::ModuleHolder<Impl>& backbone)
      : backbone_(backbone.ptr()) {}

  /// The frozen network run on every scale.
  TORCH_ARG(AnyBackbone, backbone);
  /// Input image size (height, width) at scale 0.
  TORCH_ARG(torch::ExpandingArray<2>, image_size) = 768;
  TORCH_ARG(int64_t, n_scales) = 3;
  /// Whether forward() normalises its input; false: the input is already normalised.
  TORCH_ARG(bool, normalize) = true;
  /// Overrides the backbone's own image statistics (FeatureBackbone::normalization()).
  TORCH_ARG(c10::optional<ImageNormalization>, normalization) = c10::nullopt;
  /// Keep the backbone in eval mode and run it without autograd.
  TORCH_ARG(bool, frozen) = true;
};

class MultiScaleExtractorImpl : public torch::nn::Cloneable<MultiScaleExtractorImpl> {
 public:
  explicit MultiScaleExtractorImpl(const MultiScaleExtractorOptions& options_) : options(options_) {
    MultiScaleExtractorImpl::reset();
  }

  /// Registers the options' backbone (not a copy: the extractor shares it, like any LibTorch submodule passed
  /// in) and the normalisation buffers.
  void reset() override {
    const auto& o = options;
    if (o.backbone().is_empty()) throw FeatureError("MultiScaleExtractor: no backbone given");
    if (o.n_scales() < 1)
      throw FeatureError("MultiScaleExtractor: n_scales must be >= 1, got " + std::to_string(o.n_scales()));
    const auto stats = image_normalization();
    check_normalization(stats, "MultiScaleExtractor");
    const int64_t stride = o.backbone()->feature_stride();
    const int64_t divisor = stride << (o.n_scales() - 1);
    const int64_t h = (*o.image_size())[0], w = (*o.image_size())[1];
    if (h < 1 || w < 1 || h % divisor != 0 || w % divisor != 0)
      throw FeatureError("MultiScaleExtractor: image size " + std::to_string(h) + "x" + std::to_string(w) +
                         " must divide by " + std::to_string(divisor) + " = backbone stride " + std::to_string(stride) +
                         " * 2^(n_scales - 1) with n_scales " + std::to_string(o.n_scales()) + " (e.g. " +
                         std::to_string(divisor * ((h + divisor - 1) / divisor)) + ")");
    backbone = o.backbone();
    register_module("backbone", backbone.module_ptr());
    norm_mean = register_buffer("mean", torch::tensor(stats.mean, torch::kFloat).view({1, 3, 1, 1}));
    norm_std = register_buffer("std", torch::tensor(stats.stddev, torch::kFloat).view({1, 3, 1, 1}));
    if (o.frozen()) {
      backbone.module().eval();
      for (auto& p : backbone.module().parameters()) p.set_requires_grad(false);
    }
  }

  /// A deep copy that copies the backbone once (LibTorch's Cloneable would share the options' backbone).
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy_options = options;
    copy_options.backbone(backbone.clone(device));
    auto copy = std::make_shared<MultiScaleExtractorImpl>(copy_options);
    if (device) {
      copy->norm_mean.set_data(norm_mean.to(*device));
      copy->norm_std.set_data(norm_std.to(*device));
    }
    copy->train(is_training());
    return copy;
  }

  /// The statistics forward() normalises with: the options' override, else the backbone's own.
  ImageNormalization image_normalization() const {
    return options.normalization() ? *options.normalization() : options.backbone()->normalization();
  }

  /// Images [N, 3, H, W] (in [0, 1] if normalize) -> one feature map per scale, scale 0 the finest.
  TensorList forward(const torch::Tensor& images) {
    const std::string who = "MultiScaleExtractor(" + backbone->backbone_name() + ")";
    detail::check_image_batch(who, images);
    const int64_t h = (*options.image_size())[0], w = (*options.image_size())[1];
    if (images.size(2) != h || images.size(3) != w)
      throw FeatureError(who + ": expected " + std::to_string(h) + "x" + std::to_string(w) + " images, got " +
                         std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)) +
                         " (resize them first, e.g. with resize_images)");
    torch::optional<torch::NoGradGuard> no_grad;
    if (options.frozen()) no_grad.emplace();
    torch::Tensor x = images;
    if (options.normalize()) x = (x - norm_mean.to(x.dtype())) / norm_std.to(x.dtype());
    TensorList out;
    namespace F = torch::nn::functional;
    for (int64_t s = 0; s < options.n_scales(); ++s) {
      torch::Tensor xs = x;
      if (s > 0)
        xs = F::interpolate(
            x, F::InterpolateFuncOptions().size(std::vector<int64_t>{h >> s, w >> s}).mode(torch::kNearest));
      out.push_back(backbone->features(xs));
    }
    return out;
  }

  /// Re-estimates the running mean and variance of every BatchNorm in the backbone from `image_batches`
  /// (same input as forward(), every scale; cumulative average over the batches), then returns the backbone
  /// to eval mode. For backbones WITHOUT pretrained weights: with random weights and the default statistics
  /// (mean 0, variance 1) the signal fades from block to block and feature channels end up constant.
  /// Do not use it on pretrained backbones: it replaces their ImageNet statistics.
  void calibrate_batchnorm(const std::vector<torch::Tensor>& image_batches) {
    if (image_batches.empty()) throw FeatureError("calibrate_batchnorm: no images");
    std::vector<std::pair<torch::nn::BatchNorm2dImpl*, torch::optional<double>>> norms;
    for (const auto& module : backbone.module().modules(/*include_self=*/false)) {
      if (auto* bn = module->as<torch::nn::BatchNorm2dImpl>()) {
        norms.emplace_back(bn, bn->options.momentum());
        bn->reset_running_stats();
        bn->options.momentum(torch::nullopt);  // cumulative average over all calibration batches
      }
    }
    backbone.module().train();
    for (const auto& images : image_batches) forward(images);
    backbone.module().eval();
    for (auto& [bn, momentum] : norms) bn->options.momentum(momentum);
  }

  /// Keeps a frozen backbone in eval mode whatever the extractor's mode.
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    if (options.frozen()) backbone.module().eval();
  }

  /// The input size [H, W] of each scale.
  std::vector<std::array<int64_t, 2>> scale_sizes() const {
    std::vector<std::array<int64_t, 2>> sizes;
    for (int64_t s = 0; s < options.n_scales(); ++s)
      sizes.push_back({(*options.image_size())[0] >> s, (*options.image_size())[1] >> s});
    return sizes;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::features::MultiScaleExtractor(backbone=" << backbone->backbone_name()
           << ", image_size=" << (*options.image_size())[0] << "x" << (*options.image_size())[1]
           << ", n_scales=" << options.n_scales() << ", normalize=" << std::boolalpha << options.normalize()
           << ", frozen=" << options.frozen() << ")";
  }

  MultiScaleExtractorOptions options;
  AnyBackbone backbone;
  torch::Tensor norm_mean;  ///< buffer "mean", [1, 3, 1, 1]
  torch::Tensor norm_std;   ///< buffer "std", [1, 3, 1, 1]
};

/// A `ModuleHolder` subclass for `MultiScaleExtractorImpl`; see `torch::nn::ModuleHolder` for the semantics.
TORCH_MODULE(MultiScaleExtractor);

/// The official CS-Flow extractor: EfficientNet-B5 cut after block 35 with static-same padding for 456 px,
/// ImageNet normalisation, 3 scales of a 768-px image. Loads `weights_path` (efficientnet_pytorch or
/// torchvision layout) unless empty (random weights: only for shapes and tests).
inline MultiScaleExtractor make_csflow_extractor(const std::string& weights_path = "", int64_t image_size = 768,
                                                 int64_t n_scales = 3) {
  auto net = make_efficientnet("efficientnet-b5", 35, weights_path, Padding::StaticSame);
  return MultiScaleExtractor(MultiScaleExtractorOptions(net).image_size(image_size).n_scales(n_scales));
}

}  // namespace validflow::features
