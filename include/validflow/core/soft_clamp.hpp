#pragma once
// The soft clamp applied to the log-scale of affine couplings (CS-Flow / old FrEIA):
//   clamp * constant * atan(s / clamp), with constant 0.636 (CS-Flow's truncated 2/pi, kept for weight parity).
// It bounds the log-scale to (-clamp*constant*pi/2, +clamp*constant*pi/2) and is ~identity near 0.
#include <torch/torch.h>

namespace validflow {

struct SoftClampOptions {
  /// Clamp value alpha; alpha <= 0 disables the clamp (the log-scale is s itself).
  TORCH_ARG(double, clamp) = 3.0;
  /// The constant in front of atan; 0.636 reproduces CS-Flow, 2/pi is the exact bound.
  TORCH_ARG(double, constant) = 0.636;
};

inline torch::Tensor soft_clamp(const torch::Tensor& s, const SoftClampOptions& options) {
  if (options.clamp() <= 0) return s;
  return (options.clamp() * options.constant()) * torch::atan(s / options.clamp());
}

}  // namespace validflow
