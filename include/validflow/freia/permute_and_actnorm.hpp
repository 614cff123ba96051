#pragma once
// FrEIA's PermuteRandom (FrEIA/modules/fixed_transforms.py) and ActNorm (FrEIA/modules/invertible_resnet.py) on
// one tensor [batch, C, spatial...], with FrEIA's parameter names (perm, perm_inv; scale, bias).
//  * PermuteRandom: y = x[:, perm], log-det 0; perm = numpy's np.random.permutation(C) after
//    np.random.seed(seed), as FrEIA draws it (FrEIA leaves numpy's global state alone when seed is None).
//  * FreiaActNorm: y = x * exp(scale) + bias, log|det| = positions * sum(scale). Initialised from the first
//    batch it transforms, like FrEIA (in any mode): scale = -log(std), bias = -mean(x * exp(scale)) per channel
//    (unbiased std). Unlike FrEIA, the `initialized` flag is a buffer (saved with the module; the FrEIA importer
//    sets it), an inverse before initialisation is an error instead of initialising from latents, and a constant
//    channel is an error instead of an infinite scale.
#include <validflow/core/flow.hpp>
#include <validflow/core/numpy_permutation.hpp>
#include <validflow/freia/common.hpp>
#include <validflow/util/state_invariants.hpp>

#include <random>
#include <string>
#include <vector>

namespace validflow {

struct PermuteRandomOptions {
  /* implicit */ PermuteRandomOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Spatial dimensions of the input: 0 for vectors, 2 for images.
  TORCH_ARG(int64_t, spatial_dims) = 2;
  /// np.random.seed(seed) before np.random.permutation(C).
  TORCH_ARG(uint32_t, seed) = 0;
};

class PermuteRandomImpl : public FlowLayer<PermuteRandomImpl>, public StateInvariants {
 public:
  using Options = PermuteRandomOptions;

  explicit PermuteRandomImpl(PermuteRandomOptions options) : options(std::move(options)) { PermuteRandomImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.channels() >= 1, "PermuteRandom: needs at least 1 channel, got ", options.channels());
    freia_detail::check_spatial_dims(options.spatial_dims(), "PermuteRandom");
    std::mt19937 generator(options.seed());
    const auto drawn = numpy_legacy_permutation(generator, options.channels());
    perm = register_buffer("perm", torch::tensor(drawn, torch::kLong));
    perm_inv = register_buffer("perm_inv", torch::argsort(perm));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::PermuteRandom(channels=" << options.channels() << ", seed=" << options.seed() << ")";
  }

  void check_state_invariants() const override {
    check_permutation_pair(perm, perm_inv, options.channels(), "PermuteRandom buffer perm");
  }

  FlowResult forward(const TensorList& x) override { return permuted(x, perm); }
  FlowResult inverse(const TensorList& z) override { return permuted(z, perm_inv); }

  PermuteRandomOptions options;
  torch::Tensor perm, perm_inv;

 private:
  FlowResult permuted(const TensorList& x, const torch::Tensor& index) const {
    check_flow_input(x, {options.channels()}, "PermuteRandom", {}, 2 + options.spatial_dims());
    return {{x[0].index_select(1, index.to(x[0].device()))}, zero_log_det(x)};
  }
};

TORCH_MODULE(PermuteRandom);

struct FreiaActNormOptions {
  /* implicit */ FreiaActNormOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Spatial dimensions of the input: 0 for vectors, 2 for images.
  TORCH_ARG(int64_t, spatial_dims) = 2;
  /// A channel whose standard deviation at initialisation is below this is an error.
  TORCH_ARG(double, min_std) = 1e-12;
};

class FreiaActNormImpl : public FlowLayer<FreiaActNormImpl> {
 public:
  using Options = FreiaActNormOptions;

  explicit FreiaActNormImpl(FreiaActNormOptions options) : options(std::move(options)) { FreiaActNormImpl::reset(); }

  void reset() override {
    TORCH_CHECK(options.channels() >= 1, "FreiaActNorm: needs at least 1 channel, got ", options.channels());
    freia_detail::check_spatial_dims(options.spatial_dims(), "FreiaActNorm");
    const auto shape = freia_detail::channel_shape(options.channels(), options.spatial_dims());
    scale = register_parameter("scale", torch::zeros(shape));
    bias = register_parameter("bias", torch::zeros(shape));
    initialized = register_buffer("initialized", torch::tensor(false));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::FreiaActNorm(channels=" << options.channels() << ")";
  }

  bool is_initialized() const { return initialized.item<bool>(); }

  FlowResult forward(const TensorList& x) override {
    check(x);
    if (!is_initialized()) initialize_from(x[0]);
    const auto log_det = scale.sum() * static_cast<double>(freia_detail::positions(x[0]));
    return {{x[0] * scale.exp() + bias}, zero_log_det(x) + log_det};
  }

  FlowResult inverse(const TensorList& z) override {
    check(z);
    if (!is_initialized())
      detail::throw_input_error("FreiaActNorm",
                                "inverse before the data-dependent initialisation (run a forward "
                                "first, or load trained weights)");
    const auto log_det = scale.sum() * static_cast<double>(freia_detail::positions(z[0]));
    return {{(z[0] - bias) / scale.exp()}, zero_log_det(z) - log_det};
  }

  FreiaActNormOptions options;
  torch::Tensor scale, bias, initialized;

 private:
  void check(const TensorList& x) const {
    check_flow_input(x, {options.channels()}, "FreiaActNorm", scale, 2 + options.spatial_dims());
  }

  void initialize_from(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    const auto values = x.transpose(0, 1).contiguous().view({options.channels(), -1});
    if (values.size(1) < 2) {
      detail::throw_input_error("FreiaActNorm",
                                "the data-dependent initialisation needs more than one value per "
                                "channel (batch * positions = ",
                                values.size(1), ")");
    }
    const auto std = values.std(1);
    const double smallest = std.min().item<double>();
    if (!(smallest >= options.min_std())) {
      detail::throw_input_error("FreiaActNorm", "cannot initialise: channel ", std.argmin().item<int64_t>(),
                                " has standard deviation ", smallest, " (constant or non-finite)");
    }
    scale.view(-1).copy_(torch::log(1 / std));
    bias.view(-1).copy_(-(values * scale.view({-1, 1}).exp()).mean(1));
    initialized.fill_(true);
  }
};

TORCH_MODULE(FreiaActNorm);

}  // namespace validflow
