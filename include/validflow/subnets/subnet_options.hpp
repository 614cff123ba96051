#pragma once
// The options every multi-scale convolutional subnet of validflow shares (CS-Flow's CrossConvolutions,
// ValidFlow's r1 and r2), written once. A CRTP base so that a chain of setters keeps the derived type:
// `SubnetR1Options().hidden_channels(128).cbam(false)` is still a SubnetR1Options.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

/// Like TORCH_ARG, but the setter returns the derived options type.
#define VALIDFLOW_SHARED_ARG(T, name)                \
 public:                                             \
  Derived& name(const T& value) {                    \
    name##_ = value;                                 \
    return static_cast<Derived&>(*this);             \
  }                                                  \
  const T& name() const noexcept { return name##_; } \
  T& name() noexcept { return name##_; }             \
                                                     \
 private:                                            \
  T name##_

namespace validflow {

template <typename Derived>
struct SubnetOptions {
  /// Channels of each scale's input and output (the coupling sets both).
  VALIDFLOW_SHARED_ARG(std::vector<int64_t>, in_channels) = {};
  VALIDFLOW_SHARED_ARG(std::vector<int64_t>, out_channels) = {};
  /// Hidden width (CS-Flow: fc_internal = 1024).
  VALIDFLOW_SHARED_ARG(int64_t, hidden_channels) = 1024;
  VALIDFLOW_SHARED_ARG(int64_t, kernel_size) = 3;
  VALIDFLOW_SHARED_ARG(double, leaky_slope) = 0.1;
  /// Learnable output scalars, zero at init, so the enclosing coupling starts as the identity.
  VALIDFLOW_SHARED_ARG(bool, use_gamma) = true;
  /// CBAM on each scale's output.
  VALIDFLOW_SHARED_ARG(bool, cbam) = false;
  VALIDFLOW_SHARED_ARG(int64_t, cbam_reduction) = 16;
};

}  // namespace validflow
