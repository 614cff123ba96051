#pragma once
// The flow contract of validflow, and only the contract. Every flow layer, sequence and stack follows it.
// (Module helpers the contract uses, ModuleRef and parameter counts, are in util/modules.hpp.)
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
//  * Conditional form: `forward(x, conditions)` / `inverse(z, conditions)`. A conditional module names the
//    channels of each condition it needs (`condition_channels()`); each condition has the input's batch and
//    spatial sizes, dtype and device (FrEIA's rule), and is checked like an input (check_conditions). The
//    stacks pass the conditions to their conditional layers only. An unconditional module refuses conditions.
#include <validflow/util/error.hpp>
#include <validflow/util/modules.hpp>

#include <torch/torch.h>

#include <array>
#include <atomic>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace validflow {

/// What every flow module returns: the transformed tensors and the per-sample log|det J| ([batch]).
struct FlowResult {
  TensorList tensors;
  torch::Tensor log_det;
};

/// Thrown for every input that breaks the contract; the message names the module and the problem.
class FlowInputError : public ErrorOf<std::invalid_argument, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
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

/// The run-time interface of every flow module. A plain interface: a flow layer is an ordinary LibTorch module
/// (`torch::nn::Cloneable<XImpl>`) that also implements it, usually through FlowLayer<XImpl> below. Code that
/// holds layers of any type keeps both views in an AnyFlow.
class FlowModule {
 public:
  virtual ~FlowModule() = default;
  virtual FlowResult forward(const TensorList& x) = 0;
  virtual FlowResult inverse(const TensorList& z) = 0;
  /// The conditional form of the contract (see the top of this file). Not virtual, so that a layer's
  /// `forward(x)` does not hide it from callers that hold a FlowModule; layers override conditional_forward.
  FlowResult forward(const TensorList& x, const TensorList& conditions) { return conditional_forward(x, conditions); }
  FlowResult inverse(const TensorList& z, const TensorList& conditions) { return conditional_inverse(z, conditions); }
  /// Channels of each condition the module needs; empty for an unconditional module.
  virtual std::vector<int64_t> condition_channels() const { return {}; }
  /// Multiply-accumulates of one sample's forward at these map sizes, counting convolutions and linear
  /// layers (thop's convention; element-wise work is not counted). Parameter-free layers return 0.
  virtual double forward_macs(const MapSizes& /*sizes*/) const { return 0; }

 protected:
  /// Unconditional modules: no conditions, or a FlowInputError that says so.
  virtual FlowResult conditional_forward(const TensorList& x, const TensorList& conditions) {
    refuse_conditions(conditions);
    return forward(x);
  }
  virtual FlowResult conditional_inverse(const TensorList& z, const TensorList& conditions) {
    refuse_conditions(conditions);
    return inverse(z);
  }

 private:
  static void refuse_conditions(const TensorList& conditions) {
    if (!conditions.empty())
      throw FlowInputError("this flow module is unconditional and takes no conditions, got " +
                           std::to_string(conditions.size()));
  }
};

/// Any flow module, with its parameters: e.g. `AnyFlow flow = ValidFlow(options);` then `flow->forward(x)`,
/// `flow.module().parameters()`.
using AnyFlow = ModuleRef<FlowModule>;

/// Base of the library's flow layers: torch::nn::Cloneable<Derived> + FlowModule, with Python's
/// `Module.to(dtype)` semantics: a dtype change casts floating-point parameters and buffers only. (LibTorch casts
/// every buffer, which would turn permutation indices into lossy floats and bool flags into floats that a later
/// torch::load reinterprets bit by bit.)
template <typename Derived>
class FlowLayer : public torch::nn::Cloneable<Derived>, public FlowModule {
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
/// `rank` is 4 (NCHW) for the multi-scale layers; the single-tensor blocks (validflow/freia/) take
/// [batch, channels, spatial...] of the rank they were built for (2 for vectors).
inline void check_flow_input(const TensorList& x, const std::vector<int64_t>& channels, const std::string& module,
                             const torch::Tensor& reference = {}, int64_t rank = 4) {
  if (x.size() != channels.size()) {
    detail::throw_input_error(module, "expected ", channels.size(), " scale(s), got ", x.size());
  }
  for (size_t s = 0; s < x.size(); ++s) {
    const auto& t = x[s];
    if (!t.defined()) detail::throw_input_error(module, "scale ", s, ": tensor is undefined");
    if (t.dim() != rank) {
      if (rank == 4) {
        detail::throw_input_error(module, "scale ", s, ": expected an NCHW tensor (4 dims), got shape ",
                                  detail::shape_string(t));
      }
      detail::throw_input_error(module, "scale ", s, ": expected a tensor of rank ", rank, " ([batch, channels]",
                                rank > 2 ? " + spatial dims" : "", "), got shape ", detail::shape_string(t));
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

/// Validates the conditions of a conditional module against the channels it needs and its input `x` (scale 0):
/// count, rank, channels, and the input's batch and spatial sizes, dtype and device; NaN/Inf like inputs.
inline void check_conditions(const TensorList& conditions, const std::vector<int64_t>& channels, const TensorList& x,
                             const std::string& module) {
  if (conditions.size() != channels.size()) {
    detail::throw_input_error(module, "expected ", channels.size(), " condition(s), got ", conditions.size());
  }
  const auto& input = x.at(0);
  for (size_t k = 0; k < conditions.size(); ++k) {
    const auto& c = conditions[k];
    if (!c.defined()) detail::throw_input_error(module, "condition ", k, ": tensor is undefined");
    if (!c.is_floating_point()) {
      detail::throw_input_error(module, "condition ", k, ": expected a floating-point tensor, got ", c.scalar_type());
    }
    if (c.dim() != input.dim() || c.size(1) != channels[k]) {
      detail::throw_input_error(module, "condition ", k, ": expected ", channels[k], " channels and rank ", input.dim(),
                                ", got shape ", detail::shape_string(c));
    }
    for (int64_t d = 0; d < c.dim(); ++d) {
      if (d != 1 && c.size(d) != input.size(d)) {
        detail::throw_input_error(module, "condition ", k, ": shape ", detail::shape_string(c),
                                  " does not match the input's batch and spatial sizes (input ",
                                  detail::shape_string(input), ")");
      }
    }
    if (c.scalar_type() != input.scalar_type()) {
      detail::throw_input_error(module, "condition ", k, ": dtype ", c.scalar_type(), " differs from the input's ",
                                input.scalar_type());
    }
    if (c.device() != input.device()) {
      detail::throw_input_error(module, "condition ", k, ": on ", c.device(), ", the input is on ", input.device());
    }
    if (finite_checks() && detail::nested_flow_depth() == 0 && !torch::isfinite(c).all().item<bool>()) {
      detail::throw_input_error(module, "condition ", k, " contains NaN or Inf values");
    }
  }
}

namespace detail {
/// One step of a composed flow in the conditional form: conditional layers get the conditions, the others not.
inline FlowResult forward_step(FlowModule& layer, const TensorList& x, const TensorList& conditions) {
  return layer.condition_channels().empty() ? layer.forward(x) : layer.forward(x, conditions);
}
inline FlowResult inverse_step(FlowModule& layer, const TensorList& z, const TensorList& conditions) {
  return layer.condition_channels().empty() ? layer.inverse(z) : layer.inverse(z, conditions);
}
}  // namespace detail

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
