#pragma once
// Convolutions with pre-packed weights for inference on the CPU.
//
// Eager LibTorch hands oneDNN a plain OIHW weight, and oneDNN reorders it into its blocked layout on every call
// (one reorder per convolution per forward: 17 of 85 ms of a 304 -> 1024 3x3 convolution at batch 1 on a 24² map,
// DNNL_VERBOSE; docs/benchmarks.md). PackedConvolutions keeps the blocked weight of each convolution it runs,
// packed on first use and packed again only when the weight changes (TensorStamp), and runs the convolution on it
// with the same oneDNN kernel: the eager result (bit-identical at batch 16; at batch 1 oneDNN blocks the activations
// differently and the last bits may differ).
//
// It applies where that holds: the CPU, fp32, oneDNN built in, no autograd wanted (grad mode off, or nothing
// requires grad), no autocast, zero padding given as numbers; anything else runs the module's own forward, so
// training stays eager. The activations are NCHW (oneDNN's blocked weight is what it wants for either format).
// set_packed_convolutions(false) turns it off process-wide (benchmarks and tests compare the two).
//
// LibTorch 1.13 only (`available()`). On 2.x (measured with 2.15, oneDNN 3.x) `mkldnn_reorder_conv2d_weight` packs
// for another kernel (Acdb24a) than the one `mkldnn_convolution` then runs (ABcd8b8a), which reorders the packed
// weight again on every call: no gain, and bench_flows measured 0.88-1.15x of eager. Its match there is
// `mkldnn::_convolution_pointwise`, not used yet, so on 2.x every convolution runs eager.
#include <validflow/compat.hpp>
#include <validflow/util/tensor_stamp.hpp>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <atomic>
#include <map>
#include <mutex>
#include <variant>
#include <vector>

namespace validflow {

namespace detail {
inline std::atomic<bool>& packed_convolutions_flag() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

// LibTorch 1.13's options hold c10::variant, 2.x's std::variant: `get_if` found by argument-dependent lookup.
template <typename T, typename Variant>
const T* variant_get_if(const Variant& v) {
  using std::get_if;
  return get_if<T>(&v);
}

inline bool cpu_autocast_enabled() {
#if VALIDFLOW_TORCH_VERSION_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}
}  // namespace detail

/// Whether inference convolutions run on pre-packed weights (default true). Process-wide.
inline void set_packed_convolutions(bool enabled) { detail::packed_convolutions_flag().store(enabled); }
inline bool packed_convolutions_enabled() { return detail::packed_convolutions_flag().load(); }

/// The pre-packed weights of the convolutions one module runs. A member of the module that owns the
/// convolutions: `packed_(*conv, x)` instead of `conv(x)`. Thread-safe; a copy (clone()) starts empty.
class PackedConvolutions {
 public:
  PackedConvolutions() = default;
  PackedConvolutions(const PackedConvolutions&) {}
  PackedConvolutions& operator=(const PackedConvolutions&) {
    clear();
    return *this;
  }

  /// `conv`'s forward on `x`: on the packed weight where that gives the eager result, else conv.forward(x).
  torch::Tensor operator()(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
    if (!applies(conv, x)) return conv.forward(x);
    const auto& o = conv.options;
    const auto& pad = *detail::variant_get_if<torch::ExpandingArray<2>>(o.padding());
    const std::vector<int64_t> padding(pad->begin(), pad->end());
    const std::vector<int64_t> stride(o.stride()->begin(), o.stride()->end());
    const std::vector<int64_t> dilation(o.dilation()->begin(), o.dilation()->end());
    const auto weight = packed(conv, padding, stride, dilation);
    const c10::optional<torch::Tensor> bias =
        conv.bias.defined() ? c10::optional<torch::Tensor>(conv.bias) : c10::nullopt;
    return at::mkldnn_convolution(x.contiguous(), weight, bias, padding, stride, dilation, o.groups());
  }

  /// How many weights have been packed in this process (each pack is one oneDNN reorder that eager LibTorch
  /// would repeat on every call): shows that forwards reuse them.
  static int64_t packs_made() { return packs_counter().load(); }

  /// How many convolutions have a packed weight now.
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_.size();
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
  }

  /// Whether this LibTorch runs pre-packed weights faster than eager (see the top of this file).
  static bool available() {
#if VALIDFLOW_TORCH_VERSION_AT_LEAST(2, 0)
    return false;
#else
    return at::hasMKLDNN();
#endif
  }

  /// Whether conv(x) takes the packed path.
  static bool applies(const torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
    if (!packed_convolutions_enabled() || !available()) return false;
    const auto& w = conv.weight;
    if (!x.defined() || x.dim() != 4 || !x.device().is_cpu() || x.layout() != torch::kStrided ||
        x.scalar_type() != torch::kFloat || !w.defined() || w.layout() != torch::kStrided ||
        w.scalar_type() != torch::kFloat || !w.device().is_cpu())
      return false;
    if (conv.bias.defined() && (conv.bias.scalar_type() != torch::kFloat || !conv.bias.device().is_cpu())) return false;
    if (!TensorStamp::versioned(w) || !TensorStamp::versioned(conv.bias)) return false;
    const auto& o = conv.options;
    if (o.transposed() || !detail::variant_get_if<torch::ExpandingArray<2>>(o.padding()) ||
        !detail::variant_get_if<torch::enumtype::kZeros>(o.padding_mode()))
      return false;
    if (detail::cpu_autocast_enabled()) return false;
    if (torch::GradMode::is_enabled() &&
        (x.requires_grad() || w.requires_grad() || (conv.bias.defined() && conv.bias.requires_grad())))
      return false;
    return true;
  }

 private:
  static std::atomic<int64_t>& packs_counter() {
    static std::atomic<int64_t> count{0};
    return count;
  }

  struct Entry {
    TensorStamp weight_stamp;
    std::vector<int64_t> geometry;  // padding, stride, dilation, groups
    torch::Tensor packed;
  };

  torch::Tensor packed(torch::nn::Conv2dImpl& conv, const std::vector<int64_t>& padding,
                       const std::vector<int64_t>& stride, const std::vector<int64_t>& dilation) {
    std::vector<int64_t> geometry = padding;
    geometry.insert(geometry.end(), stride.begin(), stride.end());
    geometry.insert(geometry.end(), dilation.begin(), dilation.end());
    geometry.push_back(conv.options.groups());
    const auto stamp = TensorStamp::of(conv.weight);
    std::lock_guard<std::mutex> lock(mutex_);
    auto& e = entries_[&conv];
    if (!e.packed.defined() || e.weight_stamp != stamp || e.geometry != geometry) {
      torch::NoGradGuard no_grad;
      e.packed = at::mkldnn_reorder_conv2d_weight(conv.weight.detach().contiguous().to_mkldnn(), padding, stride,
                                                  dilation, conv.options.groups());
      packs_counter().fetch_add(1);
      e.weight_stamp = stamp;
      e.geometry = std::move(geometry);
    }
    return e.packed;
  }

  mutable std::mutex mutex_;
  std::map<const torch::nn::Conv2dImpl*, Entry> entries_;
};

}  // namespace validflow
