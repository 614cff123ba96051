#pragma once
// Anomaly maps at image resolution, written once for the report, the Detector and the thresholds: the
// finest-scale map (models/objectives.hpp: channel mean of z_0^2) upsampled bilinearly to the model's input
// size (the paper's Fig. 5), optionally smoothed with a Gaussian (sigma in input pixels, as anomalib's
// post-processing), then resized bilinearly to each image's own size.
#include <validflow/core/flow.hpp>

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <vector>

namespace validflow {

/// Gaussian smoothing of maps [N, H, W] (separable, kernel radius ceil(4 sigma), reflected borders). sigma 0:
/// unchanged. Throws std::invalid_argument for a negative or non-finite sigma.
inline torch::Tensor smooth_maps(const torch::Tensor& maps, double sigma) {
  if (!std::isfinite(sigma) || sigma < 0) throw std::invalid_argument("smooth_maps: sigma must be finite and >= 0");
  if (sigma == 0) return maps;
  TORCH_CHECK(maps.dim() == 3, "smooth_maps: expected maps [N, H, W], got ", maps.sizes());
  const int64_t radius = static_cast<int64_t>(std::ceil(4 * sigma));
  auto x = torch::arange(-radius, radius + 1, maps.options());
  auto kernel = torch::exp(-(x * x) / (2 * sigma * sigma));
  kernel = kernel / kernel.sum();
  namespace F = torch::nn::functional;
  auto y = maps.unsqueeze(1);
  // Reflection needs a pad smaller than the side; larger kernels fall back to replicated borders.
  const bool reflect = radius < y.size(2) && radius < y.size(3);
  const F::PadFuncOptions::mode_t mode =
      reflect ? F::PadFuncOptions::mode_t(torch::kReflect) : F::PadFuncOptions::mode_t(torch::kReplicate);
  y = F::pad(y, F::PadFuncOptions({radius, radius, 0, 0}).mode(mode));
  y = F::conv2d(y, kernel.view({1, 1, 1, -1}));
  y = F::pad(y, F::PadFuncOptions({0, 0, radius, radius}).mode(mode));
  y = F::conv2d(y, kernel.view({1, 1, -1, 1}));
  return y.squeeze(1);
}

/// Bilinear resize of maps [N, h, w] to [N, height, width] (half-pixel centres, no antialiasing: maps are
/// only ever enlarged).
inline torch::Tensor resize_maps(const torch::Tensor& maps, int64_t height, int64_t width) {
  TORCH_CHECK(maps.dim() == 3, "resize_maps: expected maps [N, H, W], got ", maps.sizes());
  if (maps.size(1) == height && maps.size(2) == width) return maps;
  namespace F = torch::nn::functional;
  return F::interpolate(maps.unsqueeze(1), F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{height, width})
                                               .mode(torch::kBilinear)
                                               .align_corners(false))
      .squeeze(1);
}

/// Finest-scale maps [N, h0, w0] -> maps at the model's input size [N, size, size], smoothed with `sigma`.
inline torch::Tensor maps_at_input_size(const torch::Tensor& maps, int64_t size, double sigma) {
  return smooth_maps(resize_maps(maps, size, size), sigma);
}

}  // namespace validflow
