#pragma once
// Any network exported with torch.jit.trace / torch.jit.script (e.g. a WideResNet-50 cut after layer2/3, a
// MobileNetV3 for edge devices) used as a FeatureBackbone, so that MultiScaleExtractor runs it like the
// native EfficientNets. tools/export_backbone.py `torchscript` writes such files.
//
// The scripted module's forward must take one normalised image batch [N, 3, H, W] and return a 4-D
// tensor, or a tuple/list of them (choose one with `output_index`). The extractor cannot know its
// down-sampling factor: state it with `.stride(s)` (it checks image sizes against it).
//
// Example:
//   TorchScriptBackbone net(TorchScriptBackboneOptions("wrn50_layer3.pt").stride(16));
//   MultiScaleExtractor ex(MultiScaleExtractorOptions(net).image_size(512));
#include <validflow/features/backbone.hpp>
#include <validflow/io/errors.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <ostream>
#include <string>

namespace validflow::features {

struct TorchScriptBackboneOptions {
  /* implicit */ TorchScriptBackboneOptions(std::string path) : path_(std::move(path)) {}
  /// File written by torch.jit.save / ScriptModule.save (empty when constructed from a module).
  TORCH_ARG(std::string, path);
  /// Down-sampling factor of the output relative to the input.
  TORCH_ARG(int64_t, stride) = 32;
  /// Feature channels if known (-1: unknown; only used for information).
  TORCH_ARG(int64_t, channels) = -1;
  /// Which element of a tuple/list output is the feature map; -1: the output must be a tensor.
  TORCH_ARG(int64_t, output_index) = -1;
  TORCH_ARG(std::string, name) = "torchscript";
  /// The statistics of the images the network was trained on.
  TORCH_ARG(ImageNormalization, normalization) = ImageNormalization::imagenet();
};

class TorchScriptBackboneImpl : public torch::nn::Cloneable<TorchScriptBackboneImpl>, public FeatureBackbone {
 public:
  explicit TorchScriptBackboneImpl(const TorchScriptBackboneOptions& options_) : options(options_) {
    TorchScriptBackboneImpl::reset();
  }
  /// Wraps an in-memory scripted module (it is deep-copied).
  TorchScriptBackboneImpl(const torch::jit::Module& module, const TorchScriptBackboneOptions& options_)
      : options(options_), module_(module), loaded_(true) {
    TorchScriptBackboneImpl::reset();
  }

  void reset() override {
    if (options.stride() < 1)
      throw FeatureError("TorchScriptBackbone: stride must be >= 1, got " + std::to_string(options.stride()));
    if (loaded_) {
      module_ = module_.deepcopy();  // clone() and construction from a module: an independent copy
    } else {
      const auto& path = options.path();
      if (path.empty()) throw FileError("", "TorchScriptBackbone: no file given");
      if (!std::ifstream(path).good())
        throw FileError(path, "TorchScriptBackbone: TorchScript file '" + path + "' not found or unreadable");
      try {
        module_ = torch::jit::load(path, torch::kCPU);
      } catch (const c10::Error& e) {
        throw FileError(path, "TorchScriptBackbone: '" + path +
                                  "' is not a TorchScript archive (torch.jit.save): " + e.what_without_backtrace());
      }
      loaded_ = true;
    }
    if (!module_.find_method("forward"))
      throw FileError(options.path(),
                      "TorchScriptBackbone: the module of '" + options.path() + "' has no forward method");
    module_.eval();
    for (auto p : module_.parameters()) p.set_requires_grad(false);
  }

  torch::Tensor features(const torch::Tensor& x) override {
    const std::string who = "TorchScriptBackbone(" + options.name() + ")";
    detail::check_image_batch(who, x);
    c10::IValue out;
    try {
      out = module_.forward({x});
    } catch (const c10::Error& e) {
      throw FeatureError(who + ": forward failed for input " + detail::shape_string(x.sizes()) + ": " +
                         e.what_without_backtrace());
    }
    torch::Tensor t;
    if (options.output_index() < 0) {
      if (!out.isTensor())
        throw FeatureError(who + ": forward returned a " + out.tagKind() +
                           ", not a tensor; set output_index to pick one element");
      t = out.toTensor();
    } else {
      std::vector<c10::IValue> items;
      if (out.isTuple())
        items = out.toTupleRef().elements().vec();
      else if (out.isList())
        items = out.toList().vec();
      else
        throw FeatureError(who + ": output_index is set but forward returned a " + out.tagKind() +
                           ", not a tuple or list");
      if (options.output_index() >= static_cast<int64_t>(items.size()) ||
          !items[static_cast<std::size_t>(options.output_index())].isTensor())
        throw FeatureError(who + ": output " + std::to_string(options.output_index()) +
                           " does not exist or is not a tensor (forward returned " + std::to_string(items.size()) +
                           " items)");
      t = items[static_cast<std::size_t>(options.output_index())].toTensor();
    }
    if (t.dim() != 4)
      throw FeatureError(who + ": expected a 4-D feature map, got shape " + detail::shape_string(t.sizes()));
    return t;
  }

  int64_t feature_stride() const override { return options.stride(); }
  int64_t feature_channels() const override { return options.channels(); }
  std::string backbone_name() const override { return options.name(); }
  ImageNormalization normalization() const override { return options.normalization(); }

  /// Number of parameters of the scripted module (they are not nn::Module parameters of this wrapper).
  int64_t scripted_parameter_count() const {
    int64_t n = 0;
    for (const auto& p : module_.parameters()) n += p.numel();
    return n;
  }

  torch::jit::Module& module() { return module_; }

  void train(bool on = true) override {
    torch::nn::Module::train(on);
    module_.train(on);
  }
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(device, dtype, non_blocking);
    module_.to(device, dtype, non_blocking);
  }
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(dtype, non_blocking);
    module_.to(dtype, non_blocking);
  }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
    module_.to(device, non_blocking);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::features::TorchScriptBackbone(name=" << options.name() << ", path=" << options.path()
           << ", stride=" << options.stride() << ")";
  }

  TorchScriptBackboneOptions options;

 private:
  torch::jit::Module module_;
  bool loaded_ = false;
};

/// A `ModuleHolder` subclass for `TorchScriptBackboneImpl`; see `torch::nn::ModuleHolder` for the semantics.
TORCH_MODULE(TorchScriptBackbone);

}  // namespace validflow::features
