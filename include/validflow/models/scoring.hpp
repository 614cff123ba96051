#pragma once
// Batched scoring of cached features: image scores and anomaly maps (models/objectives.hpp) of a trained flow,
// at an inference precision. The one scoring loop of `eval`, the Detector and the benchmarks.
#include <validflow/models/objectives.hpp>
#include <validflow/models/precision.hpp>

#include <algorithm>

namespace validflow {

struct FeatureScores {
  torch::Tensor scores;  ///< [N]: mean z^2 / 2 (image_scores)
  torch::Tensor maps;    ///< [N, H_0, W_0]: channel mean of z_0^2 (anomaly_maps)
};

/// Scores and maps of `features` (per scale [N, C, H_s, W_s]) in batches of `batch_size`, without autograd.
/// The flow must be in eval mode (a trained flow: ActNorm initialised).
inline FeatureScores score_features(FlowModule& flow, const TensorList& features, int64_t batch_size,
                                    Precision precision = Precision::Float32) {
  if (batch_size < 1) throw std::invalid_argument("score_features: batch_size must be >= 1");
  if (features.empty() || !features[0].defined())
    throw FlowInputError("score_features: no features (expected one tensor per scale)");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> scores, maps;
  const int64_t n = features[0].size(0);
  for (int64_t start = 0; start < n; start += batch_size) {
    TensorList batch;
    for (const auto& f : features) batch.push_back(f.slice(0, start, std::min(n, start + batch_size)));
    const auto z = forward_at_precision(flow, batch, precision).tensors;
    scores.push_back(image_scores(z));
    maps.push_back(anomaly_maps(z));
  }
  if (scores.empty()) return {torch::empty({0}), torch::empty({0})};
  return {torch::cat(scores), torch::cat(maps)};
}

}  // namespace validflow
