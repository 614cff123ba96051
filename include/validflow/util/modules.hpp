#pragma once
// Module helpers that are not part of the flow contract, shared by core/, io/, features/ and models/: an owning
// reference to a module of any interface (ModuleRef), parameter counts, convolution cost, and shapes as text.
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace validflow {

/// Multi-scale tensors: one NCHW tensor per scale, scale 0 the finest (flows, feature extractors).
using TensorList = std::vector<torch::Tensor>;

/// Spatial size {H, W} of each scale; used for the analytic cost of a module.
using MapSizes = std::vector<std::array<int64_t, 2>>;

/// Number of parameters of a module and its children, trainable or frozen (e.g. a feature backbone).
inline int64_t parameter_count(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

/// Number of trainable parameters (requires_grad) of a module and its children: what a flow's size means.
inline int64_t trainable_parameter_count(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) {
    if (p.requires_grad()) total += p.numel();
  }
  return total;
}

/// Multiply-accumulates of a 2-D convolution producing an out_h x out_w map.
inline double conv_macs(const torch::nn::Conv2dImpl& conv, int64_t out_h, int64_t out_w) {
  const auto& o = conv.options;
  const auto& k = o.kernel_size();
  return static_cast<double>(out_h) * out_w * o.out_channels() * (o.in_channels() / o.groups()) * k->at(0) * k->at(1);
}

/// An owning reference to a module of any type that implements `Interface` (FlowModule, a feature backbone):
/// the torch::nn::Module (parameters, train/eval, to, save/load, clone) and its interface view, kept together.
template <typename Interface>
class ModuleRef {
 public:
  ModuleRef() = default;
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<torch::nn::Module, Impl> &&
                                                       std::is_base_of_v<Interface, Impl>>>
  /* implicit */ ModuleRef(std::shared_ptr<Impl> impl) : module_(impl), view_(impl.get()) {}
  template <typename Impl, typename = std::enable_if_t<std::is_base_of_v<torch::nn::Module, Impl> &&
                                                       std::is_base_of_v<Interface, Impl>>>
  /* implicit */ ModuleRef(const torch::nn::ModuleHolder<Impl>& holder) : ModuleRef(holder.ptr()) {}

  /// A module of unknown type (e.g. the result of clone()); throws std::invalid_argument if it does not
  /// implement `Interface`.
  static ModuleRef from_module(std::shared_ptr<torch::nn::Module> module) {
    if (!module) throw std::invalid_argument("ModuleRef: empty module");
    auto* view = dynamic_cast<Interface*>(module.get());
    if (!view) throw std::invalid_argument("ModuleRef: module " + module->name() + " does not implement the interface");
    ModuleRef ref;
    ref.module_ = std::move(module);
    ref.view_ = view;
    return ref;
  }

  Interface* operator->() const { return &get(); }
  Interface& operator*() const { return get(); }
  Interface& get() const {
    if (!view_) throw std::logic_error("ModuleRef: accessing an empty reference");
    return *view_;
  }
  torch::nn::Module& module() const {
    if (!module_) throw std::logic_error("ModuleRef: accessing an empty reference");
    return *module_;
  }
  const std::shared_ptr<torch::nn::Module>& module_ptr() const { return module_; }
  /// The module as its concrete type, or nullptr if it is of another type.
  template <typename T>
  std::shared_ptr<T> as() const {
    return std::dynamic_pointer_cast<T>(module_);
  }
  bool is_empty() const { return module_ == nullptr; }

  /// A deep copy (LibTorch's clone()), optionally on another device.
  ModuleRef clone(const torch::optional<torch::Device>& device = torch::nullopt) const {
    return from_module(module().clone(device));
  }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  Interface* view_ = nullptr;
};

namespace detail {

/// "[2, 3, 8, 8]": a shape for messages.
inline std::string shape_string(torch::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}
inline std::string shape_string(const torch::Tensor& t) { return shape_string(t.sizes()); }

/// The dtype/device every input must have to meet a module's parameters (undefined: anything floating).
inline torch::Tensor reference_tensor(const torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p;
  return {};
}

}  // namespace detail

}  // namespace validflow
