#pragma once
// Reduced-precision inference for any FlowModule (CS-Flow, ValidFlow, stacks, single layers).
//
//   Precision::Float32   the default; the model runs as it is.
//   Precision::BFloat16  CPU and CUDA.
//   Precision::Float16   CUDA only (LibTorch has no usable fp16 convolutions on CPU): asking for it on a CPU
//                        input throws UnsupportedPrecision.
//
// Two ways to run at reduced precision:
//   * forward_at_precision(model, x, precision): autocast (CPU or CUDA, from the inputs' device). The model
//     stays in fp32 and is not copied; convolutions and linear layers run in the low-precision dtype,
//     element-wise steps (soft clamp, exp, log-det sums) stay in fp32 because the flow's inputs are fp32.
//   * ReducedPrecisionFlow(model, precision): a clone of the model cast to the low-precision dtype (parameters
//     and floating buffers; integer permutation buffers keep their dtype), built once. forward() casts the
//     inputs down and the outputs back up. Everything runs in the low dtype, the log-det sums included, so
//     it is less accurate than autocast (bf16 keeps 8 significant bits).
// Both return fp32 latents and fp32 log-dets, and run without autograd (inference only).
//
// Optional for both: channels_last (NHWC) memory format for the 4-D convolution weights and the inputs; the
// values are the same, only the layout differs. See docs/benchmarks.md for when it pays off.
#include <validflow/compat.hpp>
#include <validflow/core/flow.hpp>
#include <validflow/util/precision.hpp>

#include <ATen/autocast_mode.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace validflow {

inline torch::Dtype precision_dtype(Precision precision) {
  switch (precision) {
    case Precision::BFloat16:
      return torch::kBFloat16;
    case Precision::Float16:
      return torch::kFloat16;
    case Precision::Float32:
      break;
  }
  return torch::kFloat32;
}

/// Throws UnsupportedPrecision when `precision` cannot run on `device`.
inline void check_precision_supported(Precision precision, const torch::Device& device) {
  if (precision == Precision::Float16 && !device.is_cuda()) {
    throw UnsupportedPrecision("precision fp16 is supported on CUDA only, the input is on " + device.str() +
                               "; use bf16 (or fp32) on the CPU");
  }
  if (precision != Precision::Float32 && !device.is_cpu() && !device.is_cuda()) {
    throw UnsupportedPrecision("precision " + to_string(precision) + " is supported on CPU and CUDA only, got " +
                               device.str());
  }
}

/// Whether the CPU running this process has native bf16 arithmetic (AVX512_BF16; AMX implies it). Without it,
/// LibTorch emulates bf16 and a bf16 model runs several times slower than fp32 (measured on an AVX2-only AMD
/// EPYC: docs/benchmarks.md).
inline bool cpu_has_native_bf16() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") != 0;
#else
  return false;
#endif
}

/// Throws UnsupportedPrecision when `precision` cannot run on `device`, or would run slower than fp32 there
/// (bf16 on a CPU without native bf16): never a silent slow-down.
inline void check_precision_fast(Precision precision, const torch::Device& device) {
  check_precision_supported(precision, device);
  if (precision == Precision::BFloat16 && device.is_cpu() && !cpu_has_native_bf16())
    throw UnsupportedPrecision(
        "precision bf16 needs a CPU with native bf16 (AVX512_BF16); this CPU has none, so bf16 would run several "
        "times slower than fp32: use fp32");
}

/// Converts every 4-D parameter and buffer of `module` (convolution weights) to `format`
/// (torch::MemoryFormat::ChannelsLast or Contiguous). Values are unchanged.
inline void set_memory_format(torch::nn::Module& module, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(format));
  }
  for (auto& b : module.buffers()) {
    if (b.dim() == 4) b.set_data(b.contiguous(format));
  }
}

/// Each tensor in `format` (4-D tensors only; others unchanged).
inline TensorList to_memory_format(const TensorList& x, torch::MemoryFormat format) {
  TensorList out;
  out.reserve(x.size());
  for (const auto& t : x) out.push_back(t.dim() == 4 ? t.contiguous(format) : t);
  return out;
}

namespace detail {

inline TensorList cast_list(const TensorList& x, torch::Dtype dtype) {
  TensorList out;
  out.reserve(x.size());
  for (const auto& t : x) out.push_back(t.to(dtype));
  return out;
}

inline FlowResult to_float32(FlowResult r) {
  for (auto& t : r.tensors) t = t.to(torch::kFloat32);
  r.log_det = r.log_det.to(torch::kFloat32);
  return r;
}

inline void check_precision_input(const TensorList& x, const std::string& who) {
  if (x.empty() || !x[0].defined()) throw FlowInputError(who + ": expected at least one defined input scale");
}

/// RAII autocast region for one device type (CPU or CUDA) at `dtype`; restores the previous state and
/// clears the cast cache when the outermost region ends.
class AutocastRegion {
 public:
  AutocastRegion(const torch::Device& device, torch::Dtype dtype) : cuda_(device.is_cuda()) {
#if VALIDFLOW_TORCH_VERSION_AT_LEAST(2, 4)
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    was_enabled_ = at::autocast::is_autocast_enabled(type);
    old_dtype_ = at::autocast::get_autocast_dtype(type);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::set_autocast_dtype(type, dtype);
#else
    if (cuda_) {
      was_enabled_ = at::autocast::is_enabled();
      old_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(dtype);
    } else {
      was_enabled_ = at::autocast::is_cpu_enabled();
      old_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(dtype);
    }
#endif
    at::autocast::increment_nesting();
  }
  ~AutocastRegion() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if VALIDFLOW_TORCH_VERSION_AT_LEAST(2, 4)
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(type, was_enabled_);
    at::autocast::set_autocast_dtype(type, old_dtype_);
#else
    if (cuda_) {
      at::autocast::set_enabled(was_enabled_);
      at::autocast::set_autocast_gpu_dtype(old_dtype_);
    } else {
      at::autocast::set_cpu_enabled(was_enabled_);
      at::autocast::set_autocast_cpu_dtype(old_dtype_);
    }
#endif
  }
  AutocastRegion(const AutocastRegion&) = delete;
  AutocastRegion& operator=(const AutocastRegion&) = delete;

 private:
  bool cuda_;
  bool was_enabled_ = false;
  at::ScalarType old_dtype_ = at::kFloat;
};

}  // namespace detail

/// Inference forward of a fp32 model at `precision` with autocast (no copy of the model). Inputs must be fp32;
/// returns fp32 latents and log-dets. fp32 runs the plain forward. Throws UnsupportedPrecision for fp16 on CPU.
inline FlowResult forward_at_precision(FlowModule& model, const TensorList& x, Precision precision) {
  detail::check_precision_input(x, "forward_at_precision");
  check_precision_supported(precision, x[0].device());
  if (x[0].scalar_type() != torch::kFloat32) {
    throw FlowInputError(std::string("forward_at_precision: expects fp32 inputs and an fp32 model (autocast "
                                     "lowers the convolutions), got ") +
                         c10::toString(x[0].scalar_type()));
  }
  torch::NoGradGuard no_grad;
  if (precision == Precision::Float32) return model.forward(x);
  detail::AutocastRegion autocast(x[0].device(), precision_dtype(precision));
  return detail::to_float32(model.forward(x));
}

/// A model cast to a reduced precision once, for repeated inference. Holds its own copy (clone()), so the
/// original stays fp32 and trainable. forward() takes inputs of any floating dtype and returns fp32.
class ReducedPrecisionFlow {
 public:
  ReducedPrecisionFlow(const AnyFlow& model, Precision precision,
                       torch::optional<torch::Device> device = torch::nullopt,
                       torch::MemoryFormat memory_format = torch::MemoryFormat::Contiguous)
      : precision_(precision), memory_format_(memory_format) {
    const auto reference = detail::reference_tensor(model.module());
    const torch::Device target = device ? *device : (reference.defined() ? reference.device() : torch::kCPU);
    check_precision_supported(precision, target);
    auto copy = model.clone(target);
    copy.module().to(target, precision_dtype(precision));
    copy.module().eval();
    if (memory_format != torch::MemoryFormat::Contiguous) set_memory_format(copy.module(), memory_format);
    model_ = std::move(copy);
    device_ = target;
  }

  FlowResult forward(const TensorList& x) const {
    detail::check_precision_input(x, "ReducedPrecisionFlow");
    if (x[0].device() != device_) {
      throw FlowInputError("ReducedPrecisionFlow: input is on " + x[0].device().str() + " but the model is on " +
                           device_.str());
    }
    torch::NoGradGuard no_grad;
    auto in = detail::cast_list(x, precision_dtype(precision_));
    if (memory_format_ != torch::MemoryFormat::Contiguous) in = to_memory_format(in, memory_format_);
    return detail::to_float32(model_->forward(in));
  }

  Precision precision() const { return precision_; }
  /// The cast copy (e.g. for counting or printing).
  const AnyFlow& model() const { return model_; }

 private:
  Precision precision_;
  torch::MemoryFormat memory_format_;
  torch::Device device_{torch::kCPU};
  AnyFlow model_;
};

}  // namespace validflow
