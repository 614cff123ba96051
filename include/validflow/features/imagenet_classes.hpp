#pragma once
// The 1000 ImageNet-1k class names in the standard class-index order (index 0 = "tench", 281 = "tabby",
// 967 = "espresso"), as listed by torchvision 0.14 (torchvision/models/_meta.py, BSD-3-Clause).
// Used to print classifier predictions (top_k) of backbones imported with ImageNet weights.
// The names are data (data/imagenet_classes.txt, one per line), compiled into validflow::detect: a program that
// includes this header links validflow::detect (the flow layers stay header-only).
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow::features {

/// The names by class index (data/imagenet_classes.txt; defined in validflow::detect).
const std::array<const char*, 1000>& imagenet_class_names();

/// The ImageNet-1k name of class `index` (0..999); throws std::out_of_range otherwise.
inline std::string imagenet_class_name(int64_t index) {
  if (index < 0 || index >= 1000)
    throw std::out_of_range("imagenet_class_name: class index " + std::to_string(index) + " is outside 0..999");
  return imagenet_class_names()[static_cast<size_t>(index)];
}

/// One classifier prediction: class index, ImageNet name (empty if the classifier has not 1000 classes) and
/// softmax probability.
struct Prediction {
  int64_t index = -1;
  std::string label;
  double probability = 0.0;
};

/// The k most probable classes of one image's logits (shape [classes] or [1, classes]), best first.
inline std::vector<Prediction> top_k(const torch::Tensor& logits, int64_t k = 5) {
  if (!logits.defined() || logits.dim() < 1 || logits.dim() > 2 || (logits.dim() == 2 && logits.size(0) != 1))
    throw std::invalid_argument("top_k: expected the logits of one image, shape [classes] or [1, classes]");
  const auto flat = logits.detach().reshape({-1}).to(torch::kCPU, torch::kDouble);
  k = std::min<int64_t>(k, flat.size(0));
  const auto probs = torch::softmax(flat, 0);
  const auto best = std::get<1>(probs.topk(k));
  std::vector<Prediction> out;
  for (int64_t i = 0; i < k; ++i) {
    Prediction p;
    p.index = best[i].item<int64_t>();
    p.probability = probs[p.index].item<double>();
    if (flat.size(0) == 1000) p.label = imagenet_class_name(p.index);
    out.push_back(p);
  }
  return out;
}

}  // namespace validflow::features
