#pragma once
// Training loss and anomaly scores, written once for every model (same definitions as the official CS-Flow):
//   loss  = mean over the batch of (1/2 ||z_b||^2 - log|det J_b|) / D     (NLL per dimension, no log 2pi term)
//   score = mean over the D latent values of z^2 / 2                       (per image)
//   map   = mean over channels of z_0^2 at the finest scale                (per image, H_0 x W_0)
// D is the total latent size per sample (sum over scales of C * H * W).
#include <validflow/core/flow.hpp>

namespace validflow {

/// Latents of every scale flattened and concatenated per sample: [batch, D].
inline torch::Tensor flatten_latents(const TensorList& z) {
  TORCH_CHECK(!z.empty(), "flatten_latents: no scales");
  TensorList flat;
  for (const auto& t : z) flat.push_back(t.reshape({t.size(0), -1}));
  return torch::cat(flat, 1);
}

/// The training objective: negative log-likelihood per latent dimension, averaged over the batch (scalar).
inline torch::Tensor nll_per_dimension(const TensorList& z, const torch::Tensor& log_det) {
  const auto flat = flatten_latents(z);
  TORCH_CHECK(log_det.dim() == 1 && log_det.size(0) == flat.size(0), "nll_per_dimension: log_det must have shape [",
              flat.size(0), "], got ", log_det.sizes());
  return torch::mean(0.5 * torch::sum(flat.pow(2), {1}) - log_det) / static_cast<double>(flat.size(1));
}

/// Image anomaly scores: mean of z^2 / 2 over all latent values, shape [batch].
inline torch::Tensor image_scores(const TensorList& z) { return torch::mean(flatten_latents(z).pow(2) / 2, {1}); }

/// Anomaly maps: channel mean of z^2 at the finest scale, shape [batch, H_0, W_0].
inline torch::Tensor anomaly_maps(const TensorList& z) {
  TORCH_CHECK(!z.empty(), "anomaly_maps: no scales");
  return torch::mean(z[0].pow(2), {1});
}

}  // namespace validflow
