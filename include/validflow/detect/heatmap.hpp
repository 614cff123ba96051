#pragma once
// The one colour scale of every heatmap (eval's report, `predict --heatmaps`, the embed example), std only: a
// normalised anomaly map (DecisionRule::map_scale / Detector::normalized_map: 0 at the scale's low end, 0.5 at
// the pixel threshold, 1 at its high end) is coloured
//   below the threshold  navy -> teal, faint (alpha 0.15 -> 0.35): the part shows through where it is good;
//   at and above it      yellow -> orange -> red, strong (alpha 0.6 -> 0.8): defective pixels stand out.
// A legend reads its raw values from HeatmapScale (low, threshold, high).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace validflow {

/// What the colours of a heatmap mean in raw map values: low -> 0, threshold -> 0.5, high -> 1.
struct HeatmapScale {
  double low = 0, threshold = 0.5, high = 1;
};

/// A colour (RGB, 0..255) and how strongly it covers the image (0..1).
struct HeatmapColour {
  uint8_t r = 0, g = 0, b = 0;
  float alpha = 0;
};

/// The colour of a normalised map value (clamped to [0, 1]; NaN is drawn as magenta, fully opaque).
inline HeatmapColour heatmap_colour(float normalized) {
  if (std::isnan(normalized)) return {255, 0, 255, 1.0f};
  const float v = std::clamp(normalized, 0.0f, 1.0f);
  const auto mix = [](std::array<float, 3> a, std::array<float, 3> b, float t, float alpha) {
    return HeatmapColour{static_cast<uint8_t>(std::lround(a[0] + (b[0] - a[0]) * t)),
                         static_cast<uint8_t>(std::lround(a[1] + (b[1] - a[1]) * t)),
                         static_cast<uint8_t>(std::lround(a[2] + (b[2] - a[2]) * t)), alpha};
  };
  if (v < 0.5f) {
    const float t = v / 0.5f;
    return mix({30, 50, 140}, {40, 170, 190}, t, 0.15f + 0.2f * t);
  }
  const float t = (v - 0.5f) / 0.5f;
  return t < 0.5f ? mix({255, 225, 0}, {255, 130, 0}, t / 0.5f, 0.6f + 0.2f * t)
                  : mix({255, 130, 0}, {210, 0, 0}, (t - 0.5f) / 0.5f, 0.6f + 0.2f * t);
}

/// Blends a normalised map over an RGB image of the same size (rows of width * 3 bytes, `stride` bytes apart),
/// in place.
inline void blend_heatmap(uint8_t* rgb, int64_t height, int64_t width, int64_t stride, const float* normalized) {
  for (int64_t y = 0; y < height; ++y) {
    uint8_t* row = rgb + y * stride;
    for (int64_t x = 0; x < width; ++x) {
      const auto c = heatmap_colour(normalized[y * width + x]);
      uint8_t* px = row + 3 * x;
      const uint8_t colour[3] = {c.r, c.g, c.b};
      for (int k = 0; k < 3; ++k)
        px[k] = static_cast<uint8_t>(std::lround(px[k] * (1.0f - c.alpha) + colour[k] * c.alpha));
    }
  }
}

}  // namespace validflow
