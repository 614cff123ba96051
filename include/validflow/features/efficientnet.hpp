#pragma once
// Native EfficientNet-B0..B7 and EfficientNet-Lite0..Lite4 as LibTorch modules.
//
// The module tree mirrors `efficientnet_pytorch` (lukemelas/EfficientNet-PyTorch) so that its state dicts
// load key for key: `_conv_stem`, `_bn0`, `_blocks.{i}.{_expand_conv,_bn0,_depthwise_conv,_bn1,_se_reduce,
// _se_expand,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`. torchvision's layout is mapped onto it by
// weights.hpp.
//
// Padding: `Padding::StaticSame` reproduces efficientnet_pytorch's Conv2dStaticSamePadding, i.e. TF "same"
// padding computed once for the model's native resolution (456 px for B5) and then applied unchanged to any
// input size; this is what the official CS-Flow features use. `Padding::Symmetric` is torchvision's (k-1)/2.
// Both agree on stride-1 convolutions; they differ on stride-2 ones.
//
// Truncation: `.last_block(i)` builds only the stem and blocks 0..i (no head, no classifier); `features()`
// then returns block i's output (after its residual sum, no activation). CS-Flow: B5, last_block 35, 304
// channels, stride 32.
//
// Inference path: in eval mode without autograd (the frozen extractor), `features()` runs a fused path that
// computes the same function with fewer passes over memory: every BatchNorm folded into the convolution before
// it (weights cached, recomputed when a parameter or buffer changes), activations, squeeze-excitation scaling and
// the residual sum in place, and on CPU the activations in channels_last memory (oneDNN's fast depthwise
// kernels need it; the output is returned in the input's memory format). Outputs equal the reference path within
// float rounding. `set_fused_inference(false)` selects the reference path (benchmarks compare both).
//
// Example:
//   EfficientNet net(EfficientNetOptions::from_name("efficientnet-b5").last_block(35));
//   net->eval();
//   auto f = net->features(images);  // [N, 304, H/32, W/32]
#include <validflow/features/backbone.hpp>
#include <validflow/util/tensor_stamp.hpp>
#include <validflow/util/text.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <ostream>
#include <string>
#include <vector>

namespace validflow::features {

/// How stride-2 convolutions are padded (stride-1 convolutions are the same in both modes).
enum class Padding {
  StaticSame,  ///< efficientnet_pytorch / TF "same", computed for `native_resolution` (CS-Flow parity)
  Symmetric,   ///< torchvision: (k-1)/2 on every side
};

enum class Activation {
  Swish,  ///< x * sigmoid(x) (EfficientNet-B*)
  ReLU6,  ///< min(max(x, 0), 6) (EfficientNet-Lite*)
};

/// Zero padding (left, right, top, bottom).
using Padding4 = std::array<int64_t, 4>;

inline const char* to_string(Padding p) { return p == Padding::StaticSame ? "static-same" : "symmetric"; }
inline const char* to_string(Activation a) { return a == Activation::Swish ? "swish" : "relu6"; }

namespace detail {

inline torch::Tensor activate(const torch::Tensor& x, Activation a) {
  return a == Activation::Swish ? x * torch::sigmoid(x) : torch::clamp(x, 0.0, 6.0);
}

/// The activation in place (one pass over memory; torch::silu_ is x * sigmoid(x) in one kernel).
inline torch::Tensor& activate_(torch::Tensor& x, Activation a) {
  if (a == Activation::Swish)
    torch::silu_(x);
  else
    x.clamp_(0.0, 6.0);
  return x;
}

inline std::atomic<bool>& fused_inference_flag() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

/// efficientnet_pytorch's round_filters: scale by the width coefficient, round to a multiple of 8, never
/// more than 10% down.
inline int64_t round_filters(int64_t filters, double width, int64_t divisor = 8) {
  const double scaled = static_cast<double>(filters) * width;
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(scaled + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * scaled) rounded += divisor;
  return rounded;
}

inline int64_t round_repeats(int64_t repeats, double depth) {
  return static_cast<int64_t>(std::ceil(depth * static_cast<double>(repeats)));
}

/// TF "same" padding (left/top, right/bottom) for one spatial dimension of size `size`.
inline std::array<int64_t, 2> same_padding(int64_t size, int64_t kernel, int64_t stride) {
  const int64_t out = (size + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + kernel - size, 0);
  return {total / 2, total - total / 2};
}

}  // namespace detail

/// Output size of a convolution along one dimension with explicit (possibly asymmetric) padding.
inline int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after) {
  const int64_t padded = in + pad_before + pad_after;
  if (padded < kernel) return 0;
  return (padded - kernel) / stride + 1;
}

/// Whether eval-mode forwards without autograd take the fused inference path (default true; see the top of this
/// file). Process-wide; meant for benchmarks and tests that compare against the reference path.
inline void set_fused_inference(bool enabled) { detail::fused_inference_flag().store(enabled); }
inline bool fused_inference_enabled() { return detail::fused_inference_flag().load(); }

namespace detail {

/// 2-D convolution with explicit (left, right, top, bottom) zero padding: inside the convolution when it is
/// symmetric, else by a separate zero pad (only the stride-2 convolutions of static-same padding).
inline torch::Tensor conv2d_padded(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                   int64_t stride, int64_t groups, const Padding4& p) {
  namespace F = torch::nn::functional;
  if (p[0] == p[1] && p[2] == p[3])
    return F::conv2d(x, weight,
                     F::Conv2dFuncOptions()
                         .bias(bias)
                         .stride(stride)
                         .padding(torch::ExpandingArray<2>({p[2], p[0]}))
                         .groups(groups));
  const auto padded = F::pad(x, F::PadFuncOptions(std::vector<int64_t>{p[0], p[1], p[2], p[3]}));
  return F::conv2d(padded, weight, F::Conv2dFuncOptions().bias(bias).stride(stride).groups(groups));
}

/// A convolution followed by an eval-mode BatchNorm, as one convolution with bias:
///   w' = w * gamma / sqrt(var + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta.
struct FoldedConv {
  torch::Tensor weight;
  torch::Tensor bias;
};

/// Whether a BatchNorm can be folded: it normalises with running statistics in eval mode.
inline bool foldable(const torch::nn::BatchNorm2dImpl& bn) {
  return bn.running_mean.defined() && bn.running_var.defined() && !bn.running_mean.is_inference() &&
         !bn.running_var.is_inference();
}

/// Folds (conv_weight, conv_bias) and `bn` (in double precision, stored in the weight's dtype), in the memory
/// format of `like` (channels_last weights make oneDNN keep channels_last activations).
inline FoldedConv fold_conv_bn(const torch::Tensor& conv_weight, const torch::Tensor& conv_bias,
                               const torch::nn::BatchNorm2dImpl& bn, at::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  const auto dd = conv_weight.options().dtype(torch::kDouble);
  const auto var = bn.running_var.to(torch::kDouble);
  auto scale = (var + bn.options.eps()).rsqrt();
  if (bn.weight.defined()) scale = scale * bn.weight.to(torch::kDouble);
  auto shift = conv_bias.defined() ? conv_bias.to(torch::kDouble) - bn.running_mean.to(torch::kDouble)
                                   : -bn.running_mean.to(torch::kDouble);
  shift = shift * scale;
  if (bn.bias.defined()) shift = shift + bn.bias.to(torch::kDouble);
  auto w = (conv_weight.to(dd) * scale.view({-1, 1, 1, 1})).to(conv_weight.scalar_type()).contiguous(format);
  return {w, shift.to(conv_weight.scalar_type())};
}

/// The folded convolution of one (convolution, BatchNorm) pair, recomputed when any of their tensors changes:
/// another tensor (to(), load), an in-place update (version counter: copy_, load_state_dict, a training-mode
/// BatchNorm forward, which increments num_batches_tracked) or another eps. Thread-safe. A copy (clone()) starts
/// empty. Writes that bypass the version counter (through data_ptr or `.data()`) need `clear()`.
class FoldCache {
 public:
  FoldCache() = default;
  FoldCache(const FoldCache&) {}
  FoldCache& operator=(const FoldCache&) {
    clear();
    return *this;
  }

  FoldedConv get(const torch::Tensor& conv_weight, const torch::Tensor& conv_bias, const torch::nn::BatchNorm2dImpl& bn,
                 at::MemoryFormat format) {
    std::array<TensorStamp, 7> now{stamp(conv_weight),
                                   stamp(conv_bias),
                                   stamp(bn.weight),
                                   stamp(bn.bias),
                                   stamp(bn.running_mean),
                                   stamp(bn.running_var),
                                   stamp(bn.num_batches_tracked)};
    const bool channels_last = format == at::MemoryFormat::ChannelsLast;
    std::lock_guard<std::mutex> lock(mutex_);
    if (now != stamps_ || bn.options.eps() != eps_) {
      stamps_ = now;
      eps_ = bn.options.eps();
      folded_[0] = folded_[1] = FoldedConv{};
    }
    auto& f = folded_[channels_last ? 1 : 0];
    if (!f.weight.defined()) f = fold_conv_bn(conv_weight, conv_bias, bn, format);
    return f;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    stamps_ = {};
    folded_[0] = folded_[1] = FoldedConv{};
  }

 private:
  static TensorStamp stamp(const torch::Tensor& t) { return TensorStamp::of(t); }

  std::mutex mutex_;
  std::array<TensorStamp, 7> stamps_{};
  double eps_ = -1.0;
  std::array<FoldedConv, 2> folded_{};
};

/// Whether a forward of `module` on `x` may take the fused inference path: eval mode, the switch on, and no
/// autograd wanted (grad mode off, or neither the input nor any parameter requires grad).
inline bool use_fused_inference(const torch::nn::Module& module, const torch::Tensor& x) {
  if (module.is_training() || !fused_inference_enabled()) return false;
  if (!torch::GradMode::is_enabled()) return true;
  if (x.requires_grad()) return false;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) return false;
  return true;
}

/// The memory format the fused path computes in: channels_last on CPU (oneDNN's depthwise and 1x1 kernels are
/// several times faster on it than on NCHW), the input's own format elsewhere.
inline at::MemoryFormat inference_format(const torch::Tensor& x) {
  return x.is_cpu() ? at::MemoryFormat::ChannelsLast : x.suggest_memory_format();
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------------------
// Conv2dPadded: a bias-optional 2-D convolution with explicit (left, right, top, bottom) zero padding.
// Registers `weight` (and `bias`) directly, so its keys are `<name>.weight` like Python's Conv2d.

struct Conv2dPaddedOptions {
  Conv2dPaddedOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = false;
  /// Zero padding (left, right, top, bottom).
  TORCH_ARG(Padding4, padding) = Padding4{{0, 0, 0, 0}};
};

class Conv2dPaddedImpl : public torch::nn::Cloneable<Conv2dPaddedImpl> {
 public:
  Conv2dPaddedImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : Conv2dPaddedImpl(Conv2dPaddedOptions(in_channels, out_channels, kernel_size)) {}
  explicit Conv2dPaddedImpl(const Conv2dPaddedOptions& options_) : options(options_) { Conv2dPaddedImpl::reset(); }

  void reset() override {
    const auto& o = options;
    if (o.in_channels() < 1 || o.out_channels() < 1 || o.kernel_size() < 1 || o.stride() < 1 || o.groups() < 1 ||
        o.in_channels() % o.groups() != 0 || o.out_channels() % o.groups() != 0)
      throw FeatureError("Conv2dPadded: invalid options (in " + std::to_string(o.in_channels()) + ", out " +
                         std::to_string(o.out_channels()) + ", kernel " + std::to_string(o.kernel_size()) +
                         ", stride " + std::to_string(o.stride()) + ", groups " + std::to_string(o.groups()) + ")");
    for (auto p : o.padding())
      if (p < 0) throw FeatureError("Conv2dPadded: negative padding");
    weight = register_parameter(
        "weight", torch::empty({o.out_channels(), o.in_channels() / o.groups(), o.kernel_size(), o.kernel_size()}));
    if (o.bias())
      bias = register_parameter("bias", torch::empty({o.out_channels()}));
    else
      bias = register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
    reset_parameters();
  }

  /// PyTorch's default Conv2d initialisation: kaiming_uniform(a = sqrt(5)), bias U(+-1/sqrt(fan_in)).
  void reset_parameters() {
    torch::NoGradGuard no_grad;
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (bias.defined()) {
      const double fan_in = static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3));
      bias.uniform_(-1.0 / std::sqrt(fan_in), 1.0 / std::sqrt(fan_in));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return detail::conv2d_padded(x, weight, bias, options.stride(), options.groups(), options.padding());
  }

  int64_t output_size(int64_t height_or_width, bool vertical = true) const {
    const auto& p = options.padding();
    return conv_output_size(height_or_width, options.kernel_size(), options.stride(), vertical ? p[2] : p[0],
                            vertical ? p[3] : p[1]);
  }

  void pretty_print(std::ostream& stream) const override {
    const auto& p = options.padding();
    stream << "validflow::features::Conv2dPadded(" << options.in_channels() << ", " << options.out_channels()
           << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
           << ", groups=" << options.groups() << ", padding=(" << p[0] << ", " << p[1] << ", " << p[2] << ", " << p[3]
           << "), bias=" << std::boolalpha << options.bias() << ")";
  }

  Conv2dPaddedOptions options;
  torch::Tensor weight;
  torch::Tensor bias;
};

/// A `ModuleHolder` subclass for `Conv2dPaddedImpl`; see `torch::nn::ModuleHolder` for the semantics.
TORCH_MODULE(Conv2dPadded);

// ------------------------------------------------------------------------------------------------------------
// MBConvBlock: inverted residual block with optional expansion and squeeze-excitation.

struct MBConvBlockOptions {
  MBConvBlockOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  /// Expansion ratio; 1 means no `_expand_conv`.
  TORCH_ARG(int64_t, expand_ratio) = 1;
  /// Squeeze-excitation bottleneck channels; 0 means no SE (Lite).
  TORCH_ARG(int64_t, se_channels) = 0;
  /// Padding (left, right, top, bottom) of the depthwise convolution.
  TORCH_ARG(Padding4, padding) = Padding4{{0, 0, 0, 0}};
  TORCH_ARG(double, bn_eps) = 1e-3;
  TORCH_ARG(double, bn_momentum) = 0.01;
  TORCH_ARG(Activation, activation) = Activation::Swish;
  /// Drop-connect probability of the residual branch in training mode (no effect in eval mode).
  TORCH_ARG(double, drop_connect_rate) = 0.0;
  /// Position in the network (used for torchvision key names and messages).
  TORCH_ARG(int64_t, index) = 0;
  TORCH_ARG(int64_t, stage) = 1;           ///< 1-based stage (torchvision's features.{stage})
  TORCH_ARG(int64_t, index_in_stage) = 0;  ///< 0-based position inside the stage

 public:
  int64_t expanded_channels() const { return in_channels_ * expand_ratio_; }
  bool has_skip() const { return stride_ == 1 && in_channels_ == out_channels_; }
};

class MBConvBlockImpl : public torch::nn::Cloneable<MBConvBlockImpl> {
 public:
  explicit MBConvBlockImpl(const MBConvBlockOptions& options_) : options(options_) { MBConvBlockImpl::reset(); }

  void reset() override {
    const auto& o = options;
    const int64_t mid = o.expanded_channels();
    auto bn = [&](int64_t c) {
      return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(o.bn_eps()).momentum(o.bn_momentum()));
    };
    if (o.expand_ratio() != 1) {
      expand_conv = register_module("_expand_conv", Conv2dPadded(Conv2dPaddedOptions(o.in_channels(), mid, 1)));
      bn0 = register_module("_bn0", bn(mid));
    } else {
      expand_conv = nullptr;
      bn0 = nullptr;
    }
    depthwise_conv = register_module(
        "_depthwise_conv",
        Conv2dPadded(
            Conv2dPaddedOptions(mid, mid, o.kernel_size()).stride(o.stride()).groups(mid).padding(o.padding())));
    bn1 = register_module("_bn1", bn(mid));
    if (o.se_channels() > 0) {
      se_reduce = register_module("_se_reduce", Conv2dPadded(Conv2dPaddedOptions(mid, o.se_channels(), 1).bias(true)));
      se_expand = register_module("_se_expand", Conv2dPadded(Conv2dPaddedOptions(o.se_channels(), mid, 1).bias(true)));
    } else {
      se_reduce = nullptr;
      se_expand = nullptr;
    }
    project_conv = register_module("_project_conv", Conv2dPadded(Conv2dPaddedOptions(mid, o.out_channels(), 1)));
    bn2 = register_module("_bn2", bn(o.out_channels()));
  }

  torch::Tensor forward(const torch::Tensor& inputs) {
    if (detail::use_fused_inference(*this, inputs) && foldable()) return forward_fused(inputs);
    const auto act = options.activation();
    torch::Tensor x = inputs;
    if (!expand_conv.is_empty()) x = detail::activate(bn0(expand_conv(x)), act);
    x = detail::activate(bn1(depthwise_conv(x)), act);
    if (!se_reduce.is_empty()) {
      auto s = torch::adaptive_avg_pool2d(x, {1, 1});
      s = se_expand(detail::activate(se_reduce(s), act));
      x = torch::sigmoid(s) * x;
    }
    x = bn2(project_conv(x));
    if (options.has_skip()) {
      if (is_training() && options.drop_connect_rate() > 0.0) {
        const double keep = 1.0 - options.drop_connect_rate();
        auto mask = torch::empty({x.size(0), 1, 1, 1}, x.options()).bernoulli_(keep);
        x = x / keep * mask;
      }
      x = x + inputs;
    }
    return x;
  }

  /// The same function in eval mode without autograd: BatchNorms folded into the convolutions, activations,
  /// SE scaling and the residual sum in place; computes in the memory format of `inputs`.
  torch::Tensor forward_fused(const torch::Tensor& inputs) {
    const auto act = options.activation();
    const auto format = inputs.suggest_memory_format();
    torch::Tensor x = inputs;
    if (!expand_conv.is_empty()) {
      const auto f = fold_expand_.get(expand_conv->weight, expand_conv->bias, *bn0, format);
      x = detail::conv2d_padded(x, f.weight, f.bias, 1, 1, Padding4{{0, 0, 0, 0}});
      detail::activate_(x, act);
    }
    {
      const auto f = fold_depthwise_.get(depthwise_conv->weight, depthwise_conv->bias, *bn1, format);
      x = detail::conv2d_padded(x, f.weight, f.bias, options.stride(), depthwise_conv->options.groups(),
                                options.padding());
      detail::activate_(x, act);
    }
    if (!se_reduce.is_empty()) {
      auto s = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);  // [N, mid]
      s = torch::linear(s, se_reduce->weight.flatten(1), se_reduce->bias);
      detail::activate_(s, act);
      s = torch::linear(s, se_expand->weight.flatten(1), se_expand->bias).sigmoid_();
      x.mul_(s.view({s.size(0), s.size(1), 1, 1}));
    }
    const auto f = fold_project_.get(project_conv->weight, project_conv->bias, *bn2, format);
    x = detail::conv2d_padded(x, f.weight, f.bias, 1, 1, Padding4{{0, 0, 0, 0}});
    if (options.has_skip()) x.add_(inputs);
    return x;
  }

  /// Whether every BatchNorm of the block uses running statistics (the fused path needs it).
  bool foldable() const {
    return (bn0.is_empty() || detail::foldable(*bn0)) && detail::foldable(*bn1) && detail::foldable(*bn2);
  }

  void pretty_print(std::ostream& stream) const override {
    const auto& o = options;
    stream << "validflow::features::MBConvBlock(index=" << o.index() << ", " << o.in_channels() << " -> "
           << o.out_channels() << ", kernel_size=" << o.kernel_size() << ", stride=" << o.stride()
           << ", expand=" << o.expand_ratio() << ", se=" << o.se_channels() << ", skip=" << std::boolalpha
           << o.has_skip() << ")";
  }

  MBConvBlockOptions options;
  Conv2dPadded expand_conv{nullptr};
  torch::nn::BatchNorm2d bn0{nullptr};
  Conv2dPadded depthwise_conv{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  Conv2dPadded se_reduce{nullptr};
  Conv2dPadded se_expand{nullptr};
  Conv2dPadded project_conv{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};

 private:
  detail::FoldCache fold_expand_, fold_depthwise_, fold_project_;
};

/// A `ModuleHolder` subclass for `MBConvBlockImpl`; see `torch::nn::ModuleHolder` for the semantics.
TORCH_MODULE(MBConvBlock);

// ------------------------------------------------------------------------------------------------------------
// EfficientNet

struct EfficientNetOptions {
  EfficientNetOptions() = default;
  EfficientNetOptions(double width_coefficient, double depth_coefficient, int64_t native_resolution)
      : width_coefficient_(width_coefficient),
        depth_coefficient_(depth_coefficient),
        native_resolution_(native_resolution) {}

  TORCH_ARG(std::string, name) = "efficientnet-b0";
  TORCH_ARG(double, width_coefficient) = 1.0;
  TORCH_ARG(double, depth_coefficient) = 1.0;
  /// The resolution the model was trained at; static-same paddings are computed for it.
  TORCH_ARG(int64_t, native_resolution) = 224;
  TORCH_ARG(Padding, padding) = Padding::StaticSame;
  TORCH_ARG(Activation, activation) = Activation::Swish;
  /// Squeeze-excitation ratio of a block's input channels; 0 disables SE (Lite).
  TORCH_ARG(double, se_ratio) = 0.25;
  /// Lite: stem (32) and head (1280) widths fixed, first and last stage repeats not scaled.
  TORCH_ARG(bool, fixed_stem_head) = false;
  /// BatchNorm epsilon: 1e-3 for efficientnet_pytorch, Lite and torchvision B5-B7; 1e-5 for torchvision B0-B4.
  TORCH_ARG(double, bn_eps) = 1e-3;
  TORCH_ARG(double, bn_momentum) = 0.01;
  /// Drop-connect rate of the last block (block i uses rate * i / num_blocks); training mode only.
  TORCH_ARG(double, drop_connect_rate) = 0.2;
  /// Dropout before the classifier (training mode only).
  TORCH_ARG(double, dropout) = 0.2;
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Build only the stem and blocks 0..last_block (0-based); -1 builds every block.
  TORCH_ARG(int64_t, last_block) = -1;
  /// Build the head (`_conv_head`, `_bn1`) and classifier (`_fc`); only possible when no block is cut off.
  TORCH_ARG(bool, include_top) = true;
  /// The statistics of the images the weights were trained on: ImageNet's (B*), TF's (Lite*, set by lite()).
  TORCH_ARG(ImageNormalization, normalization) = ImageNormalization::imagenet();

 public:
  /// EfficientNet-B0..B7 (efficientnet_pytorch's compound coefficients).
  static EfficientNetOptions b(int variant) {
    struct P {
      double w, d;
      int64_t r;
      double dropout;
    };
    static const P table[8] = {{1.0, 1.0, 224, 0.2}, {1.0, 1.1, 240, 0.2}, {1.1, 1.2, 260, 0.3}, {1.2, 1.4, 300, 0.3},
                               {1.4, 1.8, 380, 0.4}, {1.6, 2.2, 456, 0.4}, {1.8, 2.6, 528, 0.5}, {2.0, 3.1, 600, 0.5}};
    if (variant < 0 || variant > 7)
      throw FeatureError("EfficientNetOptions::b: unknown variant B" + std::to_string(variant) + " (B0..B7 exist)");
    const auto& p = table[variant];
    EfficientNetOptions o(p.w, p.d, p.r);
    o.name("efficientnet-b" + std::to_string(variant)).dropout(p.dropout);
    return o;
  }

  /// EfficientNet-Lite0..Lite4: ReLU6, no squeeze-excitation, fixed stem and head.
  static EfficientNetOptions lite(int variant) {
    struct P {
      double w, d;
      int64_t r;
      double dropout;
    };
    static const P table[5] = {
        {1.0, 1.0, 224, 0.2}, {1.0, 1.1, 240, 0.2}, {1.1, 1.2, 260, 0.3}, {1.2, 1.4, 280, 0.3}, {1.4, 1.8, 300, 0.3}};
    if (variant < 0 || variant > 4)
      throw FeatureError("EfficientNetOptions::lite: unknown variant Lite" + std::to_string(variant) +
                         " (Lite0..Lite4 exist)");
    const auto& p = table[variant];
    EfficientNetOptions o(p.w, p.d, p.r);
    o.name("efficientnet-lite" + std::to_string(variant))
        .dropout(p.dropout)
        .activation(Activation::ReLU6)
        .se_ratio(0.0)
        .fixed_stem_head(true)
        .normalization(ImageNormalization::lite());
    return o;
  }

  /// Accepts "efficientnet-b5", "efficientnet_b5", "b5", "efficientnet-lite0", "lite0" (any case).
  static EfficientNetOptions from_name(const std::string& name) {
    std::string n = to_lower(name);
    for (const char* prefix : {"efficientnet-", "efficientnet_", "efficientnet"})
      if (n.rfind(prefix, 0) == 0) {
        n = n.substr(std::string(prefix).size());
        break;
      }
    auto number = [&](const std::string& rest) -> int {
      if (rest.size() != 1 || !std::isdigit(static_cast<unsigned char>(rest[0]))) return -1;
      return rest[0] - '0';
    };
    if (n.size() >= 2 && n[0] == 'b') {
      const int v = number(n.substr(1));
      if (v >= 0 && v <= 7) return b(v);
    } else if (n.rfind("lite", 0) == 0) {
      const int v = number(n.substr(4));
      if (v >= 0 && v <= 4) return lite(v);
    }
    throw FeatureError("EfficientNet: unknown backbone name '" + name +
                       "'; known: efficientnet-b0 .. efficientnet-b7, efficientnet-lite0 .. efficientnet-lite4");
  }
};

/// The stem and block plan of an EfficientNet (all blocks, whatever `last_block` says).
struct EfficientNetPlan {
  int64_t stem_channels = 0;
  std::array<int64_t, 4> stem_padding{{0, 0, 0, 0}};
  std::vector<MBConvBlockOptions> blocks;
  int64_t head_channels = 0;
  int64_t num_stages = 7;
};

/// Computes every block's channels, repeats, SE width and paddings from the options, exactly as
/// efficientnet_pytorch (and TF's efficientnet_lite builder for Lite) does.
inline EfficientNetPlan efficientnet_plan(const EfficientNetOptions& o) {
  if (!(o.width_coefficient() > 0.0) || !(o.depth_coefficient() > 0.0) || o.native_resolution() < 1)
    throw FeatureError("EfficientNet: width/depth coefficients and native resolution must be positive");
  struct Stage {
    int64_t kernel, stride, expand, in, out, repeats;
  };
  static const Stage stages[7] = {{3, 1, 1, 32, 16, 1},  {3, 2, 6, 16, 24, 2},  {5, 2, 6, 24, 40, 2},
                                  {3, 2, 6, 40, 80, 3},  {5, 1, 6, 80, 112, 3}, {5, 2, 6, 112, 192, 4},
                                  {3, 1, 6, 192, 320, 1}};
  const double w = o.width_coefficient();
  EfficientNetPlan plan;
  plan.stem_channels = o.fixed_stem_head() ? 32 : detail::round_filters(32, w);
  plan.head_channels = o.fixed_stem_head() ? 1280 : detail::round_filters(1280, w);
  int64_t size = o.native_resolution();  // the spatial size the static-same padding is computed for
  auto pad_for = [&](int64_t kernel, int64_t stride) -> std::array<int64_t, 4> {
    if (o.padding() == Padding::Symmetric) {
      const int64_t p = (kernel - 1) / 2;
      return {p, p, p, p};
    }
    const auto s = detail::same_padding(size, kernel, stride);
    return {s[0], s[1], s[0], s[1]};
  };
  plan.stem_padding = pad_for(3, 2);
  size = (size + 1) / 2;

  int64_t channels = plan.stem_channels;
  int64_t total = 0;
  std::vector<int64_t> repeats(7);
  for (int s = 0; s < 7; ++s) {
    const bool fixed = o.fixed_stem_head() && (s == 0 || s == 6);
    repeats[s] = fixed ? stages[s].repeats : detail::round_repeats(stages[s].repeats, o.depth_coefficient());
    total += repeats[s];
  }
  int64_t index = 0;
  for (int s = 0; s < 7; ++s) {
    const auto& st = stages[s];
    const int64_t out = detail::round_filters(st.out, w);
    for (int64_t r = 0; r < repeats[s]; ++r) {
      const int64_t stride = r == 0 ? st.stride : 1;
      MBConvBlockOptions b(channels, out, st.kernel);
      b.stride(stride)
          .expand_ratio(st.expand)
          .se_channels(o.se_ratio() > 0.0
                           ? std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(channels) * o.se_ratio()))
                           : 0)
          .padding(pad_for(st.kernel, stride))
          .bn_eps(o.bn_eps())
          .bn_momentum(o.bn_momentum())
          .activation(o.activation())
          .drop_connect_rate(o.drop_connect_rate() * static_cast<double>(index) / static_cast<double>(total))
          .index(index)
          .stage(s + 1)
          .index_in_stage(r);
      plan.blocks.push_back(b);
      if (stride > 1) size = (size + stride - 1) / stride;
      channels = out;
      ++index;
    }
  }
  return plan;
}

/// The convolution arithmetic of the stem and blocks 0..last for an H x W input, written once: calls
/// visit(block, input size, output size) for the stem (block nullptr) and every block, and returns the output
/// size {H', W'} of block `last`.
template <typename Visit>
std::array<int64_t, 2> walk_efficientnet_sizes(const EfficientNetPlan& plan, int64_t last, int64_t height,
                                               int64_t width, Visit&& visit) {
  const auto& sp = plan.stem_padding;
  std::array<int64_t, 2> size{conv_output_size(height, 3, 2, sp[2], sp[3]),
                              conv_output_size(width, 3, 2, sp[0], sp[1])};
  visit(static_cast<const MBConvBlockOptions*>(nullptr), std::array<int64_t, 2>{height, width}, size);
  for (int64_t i = 0; i <= last && i < static_cast<int64_t>(plan.blocks.size()); ++i) {
    const auto& b = plan.blocks[static_cast<size_t>(i)];
    const auto& p = b.padding();
    const std::array<int64_t, 2> in = size;
    size = {conv_output_size(in[0], b.kernel_size(), b.stride(), p[2], p[3]),
            conv_output_size(in[1], b.kernel_size(), b.stride(), p[0], p[1])};
    visit(&b, in, size);
  }
  return size;
}

inline std::array<int64_t, 2> walk_efficientnet_sizes(const EfficientNetPlan& plan, int64_t last, int64_t height,
                                                      int64_t width) {
  return walk_efficientnet_sizes(plan, last, height, width,
                                 [](const MBConvBlockOptions*, std::array<int64_t, 2>, std::array<int64_t, 2>) {});
}

/// Index of the last block of stage 6, the deepest stride-32 block before the final stage: CS-Flow's block
/// 35 for B5 (304 channels), block 14 for B0 and Lite0 (192 channels). The default feature layer.
inline int64_t default_feature_block(const EfficientNetOptions& o) {
  const auto plan = efficientnet_plan(o);
  int64_t last = -1;
  for (const auto& b : plan.blocks)
    if (b.stage() == 6) last = b.index();
  return last;
}

/// Trainable parameters of the network these options build (stem, blocks up to last_block, head/classifier
/// when built), computed without building it.
inline int64_t efficientnet_parameter_count(const EfficientNetOptions& o) {
  const auto plan = efficientnet_plan(o);
  const int64_t n = static_cast<int64_t>(plan.blocks.size());
  const int64_t last = o.last_block() < 0 ? n - 1 : std::min<int64_t>(o.last_block(), n - 1);
  int64_t count = plan.stem_channels * 3 * 9 + 2 * plan.stem_channels;
  for (int64_t i = 0; i <= last; ++i) {
    const auto& b = plan.blocks[static_cast<size_t>(i)];
    const int64_t mid = b.expanded_channels();
    if (b.expand_ratio() != 1) count += b.in_channels() * mid + 2 * mid;
    count += mid * b.kernel_size() * b.kernel_size() + 2 * mid;
    if (b.se_channels() > 0) count += 2 * mid * b.se_channels() + b.se_channels() + mid;
    count += mid * b.out_channels() + 2 * b.out_channels();
  }
  if (last == n - 1 && o.include_top()) {
    const int64_t c = plan.blocks.back().out_channels();
    count += c * plan.head_channels + 2 * plan.head_channels;
    count += plan.head_channels * o.num_classes() + o.num_classes();
  }
  return count;
}

class EfficientNetImpl : public torch::nn::Cloneable<EfficientNetImpl>, public FeatureBackbone {
 public:
  explicit EfficientNetImpl(const EfficientNetOptions& options_ = EfficientNetOptions()) : options(options_) {
    EfficientNetImpl::reset();
  }

  void reset() override {
    plan_ = efficientnet_plan(options);
    const int64_t n = static_cast<int64_t>(plan_.blocks.size());
    if (options.last_block() < -1 || options.last_block() >= n)
      throw FeatureError("EfficientNet: last_block " + std::to_string(options.last_block()) + " is out of range for " +
                         options.name() + ", which has blocks 0.." + std::to_string(n - 1) + " (-1: all)");
    if (options.num_classes() < 1) throw FeatureError("EfficientNet: num_classes must be positive");
    built_blocks_ = options.last_block() < 0 ? n : options.last_block() + 1;
    const bool top = options.include_top() && built_blocks_ == n;

    conv_stem = register_module(
        "_conv_stem",
        Conv2dPadded(Conv2dPaddedOptions(3, plan_.stem_channels, 3).stride(2).padding(plan_.stem_padding)));
    bn0 = register_module(
        "_bn0",
        torch::nn::BatchNorm2d(
            torch::nn::BatchNorm2dOptions(plan_.stem_channels).eps(options.bn_eps()).momentum(options.bn_momentum())));
    blocks = torch::nn::ModuleList();
    for (int64_t i = 0; i < built_blocks_; ++i) blocks->push_back(MBConvBlock(plan_.blocks[static_cast<size_t>(i)]));
    blocks = register_module("_blocks", blocks);
    if (top) {
      const int64_t c = plan_.blocks.back().out_channels();
      conv_head = register_module("_conv_head", Conv2dPadded(Conv2dPaddedOptions(c, plan_.head_channels, 1)));
      bn1 = register_module("_bn1", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(plan_.head_channels)
                                                               .eps(options.bn_eps())
                                                               .momentum(options.bn_momentum())));
      fc = register_module("_fc", torch::nn::Linear(plan_.head_channels, options.num_classes()));
    } else {
      conv_head = nullptr;
      bn1 = nullptr;
      fc = nullptr;
    }
  }

  /// Stem only: conv, BN, activation. On the fused inference path (see the top of this file) the result is in
  /// the path's memory format (channels_last on CPU).
  torch::Tensor stem(const torch::Tensor& x) {
    check_input(x);
    if (detail::use_fused_inference(*this, x) && detail::foldable(*bn0)) {
      const auto format = detail::inference_format(x);
      const auto f = fold_stem_.get(conv_stem->weight, conv_stem->bias, *bn0, format);
      auto h = detail::conv2d_padded(x.contiguous(format), f.weight, f.bias, conv_stem->options.stride(), 1,
                                     conv_stem->options.padding());
      return detail::activate_(h, options.activation());
    }
    return detail::activate(bn0(conv_stem(x)), options.activation());
  }

  /// Output of the last built block (the truncation point), [N, feature_channels(), H/stride, W/stride], in the
  /// memory format of `x`.
  torch::Tensor features(const torch::Tensor& x) override {
    auto h = stem(x);
    for (const auto& block : *blocks) h = block->as<MBConvBlockImpl>()->forward(h);
    return h.contiguous(x.suggest_memory_format());
  }

  /// Outputs of several blocks (0-based indices, any order, each <= the last built block), in the order asked.
  std::vector<torch::Tensor> forward_taps(const torch::Tensor& x, const std::vector<int64_t>& taps) {
    if (taps.empty()) throw FeatureError("EfficientNet::forward_taps: no block index given");
    int64_t deepest = 0;
    for (auto t : taps) {
      if (t < 0 || t >= built_blocks_)
        throw FeatureError("EfficientNet::forward_taps: block " + std::to_string(t) + " is not built (this " +
                           options.name() + " has blocks 0.." + std::to_string(built_blocks_ - 1) + ")");
      deepest = std::max(deepest, t);
    }
    std::vector<torch::Tensor> outs(static_cast<size_t>(built_blocks_));
    auto h = stem(x);
    for (int64_t i = 0; i <= deepest; ++i) {
      h = blocks[static_cast<size_t>(i)]->as<MBConvBlockImpl>()->forward(h);
      outs[static_cast<size_t>(i)] = h;
    }
    std::vector<torch::Tensor> result;
    for (auto t : taps) result.push_back(outs[static_cast<size_t>(t)].contiguous(x.suggest_memory_format()));
    return result;
  }

  /// Pooled-before head features: blocks, `_conv_head`, `_bn1`, activation ([N, head_channels, h, w]).
  torch::Tensor extract_head_features(const torch::Tensor& x) {
    require_top("extract_head_features");
    return detail::activate(bn1(conv_head(features(x))), options.activation());
  }

  /// ImageNet logits [N, num_classes]; needs the full model (no truncation, include_top).
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = extract_head_features(x);
    h = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    h = torch::dropout(h, options.dropout(), is_training());
    return fc(h);
  }

  int64_t feature_stride() const override {
    int64_t s = 2;
    for (int64_t i = 0; i < built_blocks_; ++i) s *= plan_.blocks[static_cast<size_t>(i)].stride();
    return s;
  }
  int64_t feature_channels() const override {
    return built_blocks_ > 0 ? plan_.blocks[static_cast<size_t>(built_blocks_ - 1)].out_channels()
                             : plan_.stem_channels;
  }
  std::string backbone_name() const override { return options.name(); }
  ImageNormalization normalization() const override { return options.normalization(); }

  int64_t num_built_blocks() const { return built_blocks_; }
  int64_t num_total_blocks() const { return static_cast<int64_t>(plan_.blocks.size()); }
  bool has_top() const { return !fc.is_empty(); }
  const EfficientNetPlan& plan() const { return plan_; }

  /// Feature-map size [C, H', W'] for an H x W input, by the convolution arithmetic (no forward pass).
  std::array<int64_t, 3> feature_shape(int64_t height, int64_t width) const {
    const auto size = walk_efficientnet_sizes(plan_, built_blocks_ - 1, height, width);
    return {feature_channels(), size[0], size[1]};
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::features::EfficientNet(name=" << options.name() << ", blocks=" << built_blocks_ << "/"
           << plan_.blocks.size() << ", channels=" << feature_channels() << ", stride=" << feature_stride()
           << ", padding=" << to_string(options.padding());
    if (options.padding() == Padding::StaticSame) stream << "@" << options.native_resolution();
    stream << ", activation=" << to_string(options.activation()) << ", top=" << std::boolalpha << has_top() << ")";
  }

  EfficientNetOptions options;
  Conv2dPadded conv_stem{nullptr};
  torch::nn::BatchNorm2d bn0{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  Conv2dPadded conv_head{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  void check_input(const torch::Tensor& x) const {
    detail::check_image_batch("EfficientNet(" + options.name() + ")", x);
    detail::check_matches_parameters("EfficientNet(" + options.name() + ")", x, conv_stem->weight);
  }
  void require_top(const char* what) const {
    if (fc.is_empty())
      throw FeatureError("EfficientNet::" + std::string(what) + ": " + options.name() +
                         " was built without head/classifier (last_block " + std::to_string(options.last_block()) +
                         ", include_top " + (options.include_top() ? "true" : "false") + ")");
  }

  EfficientNetPlan plan_;
  int64_t built_blocks_ = 0;
  detail::FoldCache fold_stem_;
};

/// A `ModuleHolder` subclass for `EfficientNetImpl`; see `torch::nn::ModuleHolder` for the semantics.
TORCH_MODULE(EfficientNet);

/// Forward multiply-accumulates of one image through the network these options build (convolutions and the
/// classifier; BN, activations and the SE pooling are not counted, as thop does not count them either).
inline int64_t efficientnet_macs(const EfficientNetOptions& o, int64_t height, int64_t width) {
  const auto plan = efficientnet_plan(o);
  const int64_t n = static_cast<int64_t>(plan.blocks.size());
  const int64_t last = o.last_block() < 0 ? n - 1 : o.last_block();
  int64_t macs = 0;
  const auto out =
      walk_efficientnet_sizes(plan, last, height, width,
                              [&](const MBConvBlockOptions* b, std::array<int64_t, 2> in, std::array<int64_t, 2> size) {
                                if (!b) {  // the stem
                                  macs += size[0] * size[1] * plan.stem_channels * 3 * 9;
                                  return;
                                }
                                const int64_t mid = b->expanded_channels();
                                if (b->expand_ratio() != 1) macs += in[0] * in[1] * b->in_channels() * mid;
                                macs += size[0] * size[1] * mid * b->kernel_size() * b->kernel_size();
                                if (b->se_channels() > 0) macs += 2 * mid * b->se_channels();
                                macs += size[0] * size[1] * mid * b->out_channels();
                              });
  if (last == n - 1 && o.include_top()) {
    macs += out[0] * out[1] * plan.blocks.back().out_channels() * plan.head_channels;
    macs += plan.head_channels * o.num_classes();
  }
  return macs;
}

}  // namespace validflow::features
