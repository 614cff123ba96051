#pragma once
// Image preprocessing: the one resize and the normalisation that every path of validflow uses (feature
// extraction for training and evaluation, prediction on new images, the Triton backend), so their numbers
// cannot drift apart.
//
//  * resize: bilinear, antialiased when shrinking: the filter of PIL's `Image.resize(size, BILINEAR)`, which
//    the official CS-Flow applies through torchvision's `Resize` to 8-bit PIL images. 8-bit input is resized
//    as PIL does it: a horizontal pass, then a vertical pass, each rounded to 8-bit values. Measured against
//    PIL: see docs/features.md ("Preprocessing").
//  * normalisation: per channel (x - mean) / std of the backbone (ImageNet statistics for EfficientNet-B*,
//    (255 x - 127) / 128 for the TF-trained EfficientNet-Lite).
//
// Accepted decoded images (what OpenCV or PIL give after decoding, in RGB order):
//    uint8 [H, W, 3] (or [H, W] / [H, W, 1] gray, replicated to RGB), values 0..255;
//    floating [3, H, W] (or [1, H, W] gray), values in [0, 1] (e.g. from 16-bit files).
#include <validflow/features/backbone.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace validflow::features {

/// Throws FeatureError unless the statistics are 3 finite means and 3 finite positive standard deviations.
inline void check_normalization(const ImageNormalization& n, const std::string& who) {
  if (n.mean.size() != 3 || n.stddev.size() != 3)
    throw FeatureError(who + ": normalization mean and std need 3 values (RGB)");
  for (size_t c = 0; c < 3; ++c) {
    if (!std::isfinite(n.mean[c]) || !std::isfinite(n.stddev[c]) || !(n.stddev[c] > 0.0))
      throw FeatureError(who + ": normalization needs finite means and finite positive standard deviations");
  }
}

/// Normalises an image batch [N, 3, H, W] in [0, 1] with the given statistics.
inline torch::Tensor normalize_images(const torch::Tensor& x, const ImageNormalization& n) {
  detail::check_image_batch("normalize_images", x);
  check_normalization(n, "normalize_images");
  const auto mean = torch::tensor(n.mean, x.options()).view({1, -1, 1, 1});
  const auto stddev = torch::tensor(n.stddev, x.options()).view({1, -1, 1, 1});
  return (x - mean) / stddev;
}

namespace detail {
/// The resize kernel itself, without input checks: bilinear, half-pixel centres, PIL's antialiasing filter
/// along every axis that shrinks (along an axis that grows it is plain bilinear, as in PIL).
inline torch::Tensor bilinear_antialiased(const torch::Tensor& x, int64_t height, int64_t width) {
  if (x.size(2) == height && x.size(3) == width) return x;
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false)
                               .antialias(true));
}

inline void check_target_size(const std::string& who, int64_t height, int64_t width) {
  constexpr int64_t max_side = 1 << 15;  // protects the machine from a typo (an image of 10^5 x 10^5)
  if (height < 1 || width < 1 || height > max_side || width > max_side)
    throw FeatureError(who + ": target size " + std::to_string(height) + "x" + std::to_string(width) +
                       " is out of range (1.." + std::to_string(max_side) + " per side)");
}
}  // namespace detail

/// Resizes a float image batch [N, 3, H, W] in [0, 1] to height x width (see the top of this file).
inline torch::Tensor resize_images(const torch::Tensor& x, int64_t height, int64_t width) {
  detail::check_image_batch("resize_images", x);
  detail::check_target_size("resize_images", height, width);
  return detail::bilinear_antialiased(x, height, width);
}

/// How far outside [0, 1] a floating-point image's values may be (rounding of a resampled or converted image).
constexpr double kFloatImageSlack = 1e-3;

/// One decoded image (see the top of this file) -> float [3, height, width] in [0, 1], resized with the one
/// resize. 8-bit input is resized in two passes rounded to 8-bit values like PIL; float input is not rounded.
inline torch::Tensor prepare_image(const torch::Tensor& image, int64_t height, int64_t width) {
  const std::string who = "prepare_image";
  detail::check_target_size(who, height, width);
  if (!image.defined()) throw FeatureError(who + ": the image tensor is undefined");
  torch::Tensor chw;
  bool eight_bit = false;
  if (image.scalar_type() == torch::kByte) {
    eight_bit = true;
    if (image.dim() == 2) {
      chw = image.unsqueeze(0);
    } else if (image.dim() == 3 && (image.size(2) == 3 || image.size(2) == 1)) {
      chw = image.permute({2, 0, 1});
    } else {
      throw FeatureError(who + ": an 8-bit image must be [H, W, 3] (RGB), [H, W, 1] or [H, W] (gray), got shape " +
                         detail::shape_string(image.sizes()));
    }
  } else if (image.is_floating_point()) {
    if (image.dim() == 3 && (image.size(0) == 3 || image.size(0) == 1)) {
      chw = image;
    } else {
      throw FeatureError(who + ": a floating-point image must be [3, H, W] (RGB) or [1, H, W] (gray) in [0, 1], " +
                         "got shape " + detail::shape_string(image.sizes()));
    }
  } else {
    throw FeatureError(who + ": expected a uint8 [H, W, 3] or a floating-point [3, H, W] image, got dtype " +
                       std::string(c10::toString(image.scalar_type())));
  }
  if (chw.size(1) < 1 || chw.size(2) < 1)
    throw FeatureError(who + ": empty image of shape " + detail::shape_string(image.sizes()));
  if (chw.size(0) == 1) chw = chw.expand({3, -1, -1});
  auto x = chw.unsqueeze(0).to(torch::kFloat);
  if (!eight_bit) {
    // One pass: finite and in [0, 1] within rounding (min and max propagate NaN). 0..255 not divided (or another
    // scale) would otherwise be scored without a word.
    const auto [lo, hi] = torch::aminmax(x);
    const double low = lo.item<double>(), high = hi.item<double>();
    if (!std::isfinite(low) || !std::isfinite(high)) throw FeatureError(who + ": the image contains NaN or Inf values");
    if (low < -kFloatImageSlack || high > 1 + kFloatImageSlack)
      throw FeatureError(who + ": a floating-point image must hold values in [0, 1], got " + std::to_string(low) +
                         " .. " + std::to_string(high) +
                         (high > 1.5 && high <= 255.5 ? " (8-bit values: divide by 255)" : ""));
    return detail::bilinear_antialiased(x.contiguous(), height, width).squeeze(0);
  }
  // 8-bit: as PIL, a horizontal pass then a vertical pass, each rounded to the 8-bit grid; then [0, 1].
  // PIL rounds halves up (fixed point + 0.5, then a shift), hence floor(v + 0.5) rather than round-half-even.
  auto to_8bit = [](torch::Tensor v) { return v.add_(0.5).floor_().clamp_(0, 255); };
  auto y = x.contiguous();
  if (y.size(3) != width) y = to_8bit(detail::bilinear_antialiased(y, y.size(2), width));
  if (y.size(2) != height) y = to_8bit(detail::bilinear_antialiased(y, height, width));
  return y.div_(255.0).squeeze(0);
}

/// Decoded images of any sizes -> one float batch [N, 3, height, width] in [0, 1] (prepare_image on each).
inline torch::Tensor prepare_images(const std::vector<torch::Tensor>& images, int64_t height, int64_t width) {
  if (images.empty()) throw FeatureError("prepare_images: no images");
  std::vector<torch::Tensor> prepared;
  prepared.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    try {
      prepared.push_back(prepare_image(images[i], height, width));
    } catch (const FeatureError& e) {
      throw FeatureError("image " + std::to_string(i) + ": " + e.what());
    }
  }
  return torch::stack(prepared);
}

}  // namespace validflow::features
