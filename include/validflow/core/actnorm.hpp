#pragma once
// ActNorm (Glow): a per-scale, per-channel affine map z = x * exp(log_scale) + bias with a data-dependent
// initialisation on the first training forward, so that the outputs start at zero mean and unit variance.
#include <validflow/core/flow.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace validflow {

struct ActNormOptions {
  /* implicit */ ActNormOptions(std::vector<int64_t> channels) : channels_(std::move(channels)) {}
  /// Channels of each scale (one entry per scale).
  TORCH_ARG(std::vector<int64_t>, channels);
  /// A channel whose standard deviation at initialisation is below this is an error (it cannot be normalised).
  TORCH_ARG(double, min_std) = 1e-6;
};

/// Per-channel affine flow. Parameters per scale s: `log_scale_{s}` and `bias_{s}`, shape [1, C, 1, 1].
/// log|det J| = H * W * sum_c log_scale_c, summed over scales. The `initialized` buffer (0-dim bool) is
/// saved with the module, so a loaded model never re-initialises.
class ActNormImpl : public FlowLayer<ActNormImpl> {
 public:
  using Options = ActNormOptions;

  explicit ActNormImpl(ActNormOptions options) : options(std::move(options)) { ActNormImpl::reset(); }

  void reset() override {
    TORCH_CHECK(!options.channels().empty(), "ActNorm: needs at least one scale");
    log_scales.clear();
    biases.clear();
    for (size_t s = 0; s < options.channels().size(); ++s) {
      const int64_t c = options.channels()[s];
      TORCH_CHECK(c > 0, "ActNorm: scale ", s, " has ", c, " channels");
      log_scales.push_back(register_parameter("log_scale_" + std::to_string(s), torch::zeros({1, c, 1, 1})));
      biases.push_back(register_parameter("bias_" + std::to_string(s), torch::zeros({1, c, 1, 1})));
    }
    initialized = register_buffer("initialized", torch::tensor(false));
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::ActNorm(channels=" << torch::IntArrayRef(options.channels()) << ")";
  }

  bool is_initialized() const { return initialized.item<bool>(); }

  FlowResult forward(const TensorList& x) override {
    check_flow_input(x, options.channels(), "ActNorm", log_scales[0]);
    if (is_training() && !is_initialized()) initialize_from(x);
    FlowResult result{{}, zero_log_det(x)};
    for (size_t s = 0; s < x.size(); ++s) {
      result.tensors.push_back(x[s] * log_scales[s].exp() + biases[s]);
      result.log_det = result.log_det + log_scales[s].sum() * static_cast<double>(x[s].size(2) * x[s].size(3));
    }
    return result;
  }

  FlowResult inverse(const TensorList& z) override {
    check_flow_input(z, options.channels(), "ActNorm", log_scales[0]);
    FlowResult result{{}, zero_log_det(z)};
    for (size_t s = 0; s < z.size(); ++s) {
      result.tensors.push_back((z[s] - biases[s]) * (-log_scales[s]).exp());
      result.log_det = result.log_det - log_scales[s].sum() * static_cast<double>(z[s].size(2) * z[s].size(3));
    }
    return result;
  }

  ActNormOptions options;
  std::vector<torch::Tensor> log_scales;
  std::vector<torch::Tensor> biases;
  torch::Tensor initialized;

 private:
  void initialize_from(const TensorList& x) {
    torch::NoGradGuard no_grad;
    for (size_t s = 0; s < x.size(); ++s) {
      const auto values = x[s].transpose(0, 1).reshape({x[s].size(1), -1});
      if (values.size(1) < 2) {
        detail::throw_input_error("ActNorm",
                                  "data-dependent initialisation needs more than one value per channel "
                                  "(scale ",
                                  s, " has batch*H*W = ", values.size(1), ")");
      }
      const auto mean = values.mean(1);
      const auto std = values.std(1);
      const auto smallest = std.min().item<double>();
      if (!(smallest >= options.min_std())) {
        const auto channel = std.argmin().item<int64_t>();
        detail::throw_input_error("ActNorm", "cannot initialise: channel ", channel, " of scale ", s,
                                  " has standard deviation ", smallest, " (constant or non-finite channel)");
      }
      const auto log_scale = -std.log();
      log_scales[s].copy_(log_scale.view({1, -1, 1, 1}));
      biases[s].copy_((-mean * log_scale.exp()).view({1, -1, 1, 1}));
    }
    initialized.fill_(true);
  }
};

TORCH_MODULE(ActNorm);

}  // namespace validflow
