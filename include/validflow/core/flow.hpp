#pragma once
// The flow contract of validflow. Every flow layer, sequence and stack follows it.
//
//  * "forward" maps data -> latent, "inverse" maps latent -> data.
//  * Multi-scale: a module takes and returns a `TensorList`, one NCHW tensor per scale (any number >= 1;
//    CS-Flow and ValidFlow use 3). Scale 0 is the finest.
//  * `forward(x)` returns {z, log_det} where log_det = log|det dz/dx| per sample, shape [batch].
//    `inverse(z)` returns {x, -log_det of the matching forward}, so forward + inverse log-dets sum to 0.
//  * dtype and device of outputs and log-dets follow the input; the module's parameters must already be
//    on that dtype/device (module->to(...)), otherwise a FlowInputError names the mismatch.
//  * Every module validates its input (number of scales, rank, channels, batch sizes, dtype, device,
//    spatial sizes it needs, and NaN/Inf while `finite_checks()` is on) and throws FlowInputError.
#include <torch/torch.h>

#include <array>
#include <atomic>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow {

using TensorList = std::vector<torch::Tensor>;

/// Spatial size {H, W} of each scale; used for the analytic cost of a module.
using MapSizes = std::vector<std::array<int64_t, 2>>;

/// What every flow module returns: the transformed tensors and the per-sample log|det J| ([batch]).
struct FlowResult {
  TensorList tensors;
  torch::Tensor log_det;
};

/// Thrown for every input that breaks the contract; the message names the module and the problem.
class FlowInputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {
inline std::atomic<bool>& finite_checks_flag() {
  static std::atomic<bool> flag{true};
  return flag;
}
}  // namespace detail

/// Whether modules reject inputs that contain NaN or Inf (on by default; costs one reduction per call).
inline bool finite_checks() { return detail::finite_checks_flag().load(); }
inline void set_finite_checks(bool enabled) { detail::finite_checks_flag().store(enabled); }

/// The run-time interface of every flow module; combine with torch::nn::Cloneable<Derived>.
class FlowModule : public virtual torch::nn::Module {
 public:
  virtual FlowResult forward(const TensorList& x) = 0;
  virtual FlowResult inverse(const TensorList& z) = 0;
  /// Multiply-accumulates of one sample's forward at these map sizes, counting convolutions and linear
  /// layers (thop's convention; element-wise work is not counted). Parameter-free layers return 0.
  virtual double forward_macs(const MapSizes& /*sizes*/) const { return 0; }
};

/// Number of trainable parameters (requires_grad) of a module and its children.
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

}  // namespace validflow

namespace validflow::detail {
/// Tag for the accessor below.
struct ModuleStateAccess;
}  // namespace validflow::detail

namespace torch::nn {
/// Accessor to torch::nn::Module's private state (parameters_, buffers_, children_, clone_), which Module grants
/// to every specialisation of torch::nn::Cloneable. Used only by validflow::Cloneable (see there).
template <>
class Cloneable<validflow::detail::ModuleStateAccess> {
 public:
  static void clear(Module& m) {
    m.parameters_.clear();
    m.buffers_.clear();
    m.children_.clear();
  }
  static size_t parameter_count(const Module& m) { return m.parameters_.size(); }
  static size_t buffer_count(const Module& m) { return m.buffers_.size(); }
  static size_t child_count(const Module& m) { return m.children_.size(); }
  static torch::Tensor& parameter(Module& m, const std::string& key) { return m.parameters_[key]; }
  static torch::Tensor& buffer(Module& m, const std::string& key) { return m.buffers_[key]; }
  static const OrderedDict<std::string, std::shared_ptr<Module>>& children(const Module& m) { return m.children_; }
  static void clone_into(Module& target, Module& source, const torch::optional<Device>& device) {
    target.clone_(source, device);
  }
};
}  // namespace torch::nn

namespace validflow {

/// torch::nn::Cloneable<Derived> with a *virtual* torch::nn::Module base, so that a module can also derive
/// validflow::FlowModule (itself a virtual Module). LibTorch 1.x's Cloneable inherits Module virtually; LibTorch
/// 2.x's does not, which makes `Cloneable<D>, FlowModule` an ambiguous double Module there. The clone()
/// semantics are exactly LibTorch's (copy-construct, reset(), deep-copy parameters, buffers and children).
template <typename Derived>
class Cloneable : public virtual torch::nn::Module {
  using Access = torch::nn::Cloneable<detail::ModuleStateAccess>;

 public:
  using torch::nn::Module::Module;

  /// Must (re)create every parameter, buffer and submodule (register_* calls), like LibTorch's Cloneable.
  virtual void reset() = 0;

  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    torch::NoGradGuard no_grad;
    const auto& self = static_cast<const Derived&>(*this);
    auto copy = std::make_shared<Derived>(self);
    Access::clear(*copy);
    copy->reset();
    TORCH_CHECK(Access::parameter_count(*copy) == Access::parameter_count(*this),
                "The cloned module does not have the same number of parameters as the original module after "
                "calling reset(). Are you sure you called register_parameter() inside reset() and not the "
                "constructor?");
    for (const auto& parameter : named_parameters(/*recurse=*/false)) {
      const auto& tensor = parameter.value();
      auto data = device && tensor.device() != *device ? tensor.to(*device) : tensor.clone();
      Access::parameter(*copy, parameter.key()).set_data(data);
    }
    TORCH_CHECK(Access::buffer_count(*copy) == Access::buffer_count(*this),
                "The cloned module does not have the same number of buffers as the original module after "
                "calling reset(). Are you sure you called register_buffer() inside reset() and not the "
                "constructor?");
    for (const auto& buffer : named_buffers(/*recurse=*/false)) {
      const auto& tensor = buffer.value();
      auto data = device && tensor.device() != *device ? tensor.to(*device) : tensor.clone();
      Access::buffer(*copy, buffer.key()).set_data(data);
    }
    TORCH_CHECK(Access::child_count(*copy) == Access::child_count(*this),
                "The cloned module does not have the same number of child modules as the original module after "
                "calling reset(). Are you sure you called register_module() inside reset() and not the "
                "constructor?");
    const auto& copy_children = Access::children(*copy);
    for (const auto& child : Access::children(*this)) {
      Access::clone_into(*copy_children[child.key()], *child.value(), device);
    }
    return copy;
  }

 private:
  void clone_(torch::nn::Module& other, const torch::optional<torch::Device>& device) final {
    auto clone = std::dynamic_pointer_cast<Derived>(other.clone(device));
    TORCH_CHECK(clone != nullptr,
                "Attempted to clone submodule, but it is of a different type than the submodule it was to be "
                "cloned into");
    static_cast<Derived&>(*this) = *clone;
  }
};

/// Base of the library's flow layers: validflow::Cloneable<Derived> + FlowModule, with Python's `Module.to(dtype)`
/// semantics: a dtype change casts floating-point parameters and buffers only. (LibTorch casts every buffer,
/// which would turn permutation indices into lossy floats and bool flags into floats that a later
/// torch::load reinterprets bit by bit.)
template <typename Derived>
class FlowLayer : public Cloneable<Derived>, public FlowModule {
 public:
  using torch::nn::Module::to;
  void to(torch::Dtype dtype, bool non_blocking = false) override { cast(torch::nullopt, dtype, non_blocking); }
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    cast(device, dtype, non_blocking);
  }

 private:
  void cast(const torch::optional<torch::Device>& device, torch::Dtype dtype, bool non_blocking) {
    for (auto& child : this->children()) {
      if (device) {
        child->to(*device, dtype, non_blocking);
      } else {
        child->to(dtype, non_blocking);
      }
    }
    auto convert = [&](torch::Tensor& t) {
      const auto target = t.is_floating_point() ? dtype : t.scalar_type();
      t.set_data(device ? t.to(*device, target, non_blocking) : t.to(target, non_blocking));
    };
    torch::NoGradGuard no_grad;
    for (auto& p : this->named_parameters(/*recurse=*/false)) convert(p.value());
    for (auto& b : this->named_buffers(/*recurse=*/false)) convert(b.value());
  }
};

namespace detail {

template <typename... Parts>
[[noreturn]] void throw_input_error(const std::string& module, const Parts&... parts) {
  std::ostringstream message;
  message << module << ": ";
  (message << ... << parts);
  throw FlowInputError(message.str());
}

inline std::string shape_string(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

/// The dtype/device every input must have to meet a module's parameters (undefined: anything floating).
inline torch::Tensor reference_tensor(const torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p;
  return {};
}

}  // namespace detail

namespace detail {
inline int& nested_flow_depth() {
  thread_local int depth = 0;
  return depth;
}
}  // namespace detail

/// Scope of a composite module (sequence, stack, coupling) calling its parts: their inputs derive from an input
/// already checked for NaN/Inf, so the parts skip that check (one reduction per top-level call, not per layer).
class NestedFlowCall {
 public:
  NestedFlowCall() { ++detail::nested_flow_depth(); }
  ~NestedFlowCall() { --detail::nested_flow_depth(); }
  NestedFlowCall(const NestedFlowCall&) = delete;
  NestedFlowCall& operator=(const NestedFlowCall&) = delete;
};

/// Throws FlowInputError if a scale holds NaN or Inf, while finite_checks() is on and outside a NestedFlowCall.
inline void check_finite(const TensorList& x, const std::string& module) {
  if (!finite_checks() || detail::nested_flow_depth() > 0) return;
  for (size_t s = 0; s < x.size(); ++s) {
    if (x[s].defined() && !torch::isfinite(x[s]).all().item<bool>()) {
      detail::throw_input_error(module, "scale ", s, " contains NaN or Inf values");
    }
  }
}

/// Validates a multi-scale input against the channels a module was built for. `reference` (a parameter of
/// the module, may be undefined) fixes the dtype and device. Throws FlowInputError naming the problem.
inline void check_flow_input(const TensorList& x, const std::vector<int64_t>& channels, const std::string& module,
                             const torch::Tensor& reference = {}) {
  if (x.size() != channels.size()) {
    detail::throw_input_error(module, "expected ", channels.size(), " scale(s), got ", x.size());
  }
  for (size_t s = 0; s < x.size(); ++s) {
    const auto& t = x[s];
    if (!t.defined()) detail::throw_input_error(module, "scale ", s, ": tensor is undefined");
    if (t.dim() != 4) {
      detail::throw_input_error(module, "scale ", s, ": expected an NCHW tensor (4 dims), got shape ",
                                detail::shape_string(t));
    }
    if (!t.is_floating_point()) {
      detail::throw_input_error(module, "scale ", s, ": expected a floating-point tensor, got ", t.scalar_type());
    }
    if (t.size(1) != channels[s]) {
      detail::throw_input_error(module, "scale ", s, ": expected ", channels[s], " channels, got ", t.size(1),
                                " (shape ", detail::shape_string(t), ")");
    }
    if (t.size(0) != x[0].size(0)) {
      detail::throw_input_error(module, "batch size mismatch across scales: scale 0 has ", x[0].size(0), ", scale ", s,
                                " has ", t.size(0));
    }
    if (t.scalar_type() != x[0].scalar_type()) {
      detail::throw_input_error(module, "dtype mismatch across scales: scale 0 is ", x[0].scalar_type(), ", scale ", s,
                                " is ", t.scalar_type());
    }
    if (t.device() != x[0].device()) {
      detail::throw_input_error(module, "device mismatch across scales: scale 0 is on ", x[0].device(), ", scale ", s,
                                " is on ", t.device());
    }
  }
  if (reference.defined()) {
    if (x[0].scalar_type() != reference.scalar_type()) {
      detail::throw_input_error(module, "input dtype ", x[0].scalar_type(), " does not match the module's parameters (",
                                reference.scalar_type(), "); convert the input or call module->to(", x[0].scalar_type(),
                                ")");
    }
    if (x[0].device() != reference.device()) {
      detail::throw_input_error(module, "input is on ", x[0].device(), " but the module's parameters are on ",
                                reference.device(), "; call module->to(device)");
    }
  }
  check_finite(x, module);
}

/// Per-sample zero log-det with the input's dtype and device.
inline torch::Tensor zero_log_det(const TensorList& x) {
  if (x.empty() || !x[0].defined()) throw FlowInputError("validflow: expected at least one defined input scale");
  return torch::zeros({x[0].size(0)}, x[0].options());
}

/// Chains one step of a composed flow: takes its tensors and adds its log-det.
inline void chain(FlowResult& result, FlowResult step) {
  result.tensors = std::move(step.tensors);
  result.log_det = result.log_det + step.log_det;
}

/// Channel counts of a multi-scale tensor list.
inline std::vector<int64_t> channels_of(const TensorList& x) {
  std::vector<int64_t> channels;
  for (const auto& t : x) channels.push_back(t.size(1));
  return channels;
}

}  // namespace validflow
