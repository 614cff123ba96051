#pragma once
// The one test harness every flow layer, block, stack and model goes through.
//
// check_flow(name, make, spec) builds a module with `make()`, gives it non-trivial parameters (a data-dependent
// initialisation pass, then random values for every parameter, so zero-initialised weights cannot hide a
// wrong sign) and checks:
//   shapes/dtypes kept; inverse(forward(x)) ~ x in fp32 (<= 1e-5 max abs) and fp64 (<= 1e-10);
//   log-det of forward = -log-det of inverse; log-det = log|det| of the autograd Jacobian in fp64 (rel <= 1e-8);
//   every parameter gets a gradient from the NLL; eval()+NoGradGuard = train mode; clone() is independent and
//   equal; torch::save/torch::load into a fresh module gives identical outputs (no ActNorm re-initialisation);
//   wrong number of scales, wrong channels, batch mismatch, NaN input and wrong dtype throw FlowInputError.
// Single-tensor (FrEIA) blocks: spec.spatial_dims sets the rank (0: vectors [batch, C]); conditional modules
// get spec.conditions (channels of each condition), the Jacobian is taken with respect to x only, and missing,
// mis-shaped and NaN conditions must throw FlowInputError too.
#include "catch_torch.hpp"

#include <validflow/core.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace vft {

using validflow::FlowInputError;
using validflow::FlowModule;
using validflow::TensorList;

/// Shape of a multi-scale test input: channels and square map size per scale.
struct InputSpec {
  std::vector<int64_t> channels;
  std::vector<int64_t> sizes;
  int64_t batch = 3;
  int64_t spatial_dims = 2;           ///< per scale: [batch, C] + spatial_dims sides of sizes[s]
  std::vector<int64_t> conditions{};  ///< channels of each condition (same batch and spatial sizes as scale 0)
};

/// [batch, channels, size x spatial_dims].
inline std::vector<int64_t> tensor_shape(const InputSpec& spec, int64_t batch, int64_t channels, int64_t size) {
  std::vector<int64_t> shape{batch, channels};
  shape.insert(shape.end(), static_cast<size_t>(spec.spatial_dims), size);
  return shape;
}

inline TensorList random_inputs(const InputSpec& spec, torch::Dtype dtype, int64_t batch) {
  TensorList x;
  for (size_t s = 0; s < spec.channels.size(); ++s) {
    x.push_back(torch::randn(tensor_shape(spec, batch, spec.channels[s], spec.sizes[s]), torch::dtype(dtype)));
  }
  return x;
}

inline TensorList random_conditions(const InputSpec& spec, torch::Dtype dtype, int64_t batch) {
  TensorList c;
  for (const auto channels : spec.conditions) {
    c.push_back(torch::randn(tensor_shape(spec, batch, channels, spec.sizes[0]), torch::dtype(dtype)));
  }
  return c;
}

inline double max_abs_diff(const TensorList& a, const TensorList& b) {
  double m = 0;
  for (size_t s = 0; s < a.size(); ++s) m = std::max(m, (a[s] - b[s]).abs().max().item<double>());
  return m;
}

inline bool equal_lists(const TensorList& a, const TensorList& b) {
  if (a.size() != b.size()) return false;
  for (size_t s = 0; s < a.size(); ++s) {
    if (!a[s].equal(b[s])) return false;
  }
  return true;
}

/// Replaces every parameter by random values of a moderate scale (weights ~ 0.5/sqrt(fan_in), others ~ 0.2).
inline void randomize_parameters(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    const double std = p.dim() >= 2 ? 0.5 / std::sqrt(static_cast<double>(p[0].numel())) : 0.2;
    p.normal_(0.0, std);
  }
}

/// Per-sample log|det| of the full Jacobian of `module`'s forward at x (fp64), built row by row with autograd.
inline torch::Tensor autograd_log_abs_det(FlowModule& module, const TensorList& x, const TensorList& conditions = {}) {
  TensorList inputs;
  for (const auto& t : x) inputs.push_back(t.detach().clone().requires_grad_(true));
  auto out = module.forward(inputs, conditions).tensors;
  const int64_t batch = x[0].size(0);
  TensorList flat_out;
  for (const auto& z : out) flat_out.push_back(z.reshape({batch, -1}));
  const auto z = torch::cat(flat_out, 1);
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < z.size(1); ++i) {
    // Samples are independent, so one backward of the batch sum gives row i of every sample's Jacobian.
    auto grads = torch::autograd::grad({z.select(1, i).sum()}, inputs, {}, /*retain_graph=*/true);
    TensorList flat_grad;
    for (const auto& g : grads) flat_grad.push_back(g.reshape({batch, -1}));
    rows.push_back(torch::cat(flat_grad, 1));
  }
  const auto jacobian = torch::stack(rows, 1);  // [batch, D_out, D_in]
  return std::get<1>(torch::linalg_slogdet(jacobian));
}

/// Measured errors, printed for the record (docs/architecture.md quotes them).
struct HarnessReport {
  double inverse_error_f32 = 0, inverse_error_f64 = 0, log_det_sum_error_f64 = 0, jacobian_rel_error = 0;
};

struct HarnessOptions {
  InputSpec spec;           ///< unit-scale inputs for the fp32/fp64 round trips
  InputSpec jacobian_spec;  ///< tiny inputs for the autograd Jacobian
  bool check_bad_inputs = true;
  double jacobian_tolerance = 1e-8;
  bool expect_nonzero_log_det = true;            ///< false for volume-preserving layers (permutations)
  std::vector<std::string> unused_parameters{};  ///< parameters the configuration does not use (GIN's global_scale)
  /// fp64 round trip and |ld_f + ld_i| bound (relative); looser only where a layer holds a float32-rounded matrix.
  double f64_tolerance = 1e-10;
};

/// Builds the module under test for the given per-scale channels.
using ModuleFactory = std::function<validflow::AnyFlow(const std::vector<int64_t>& channels)>;

/// Runs a training forward once (data-dependent initialisations happen), then randomises all parameters.
inline validflow::AnyFlow make_nontrivial(const ModuleFactory& make, const InputSpec& spec, torch::Dtype dtype) {
  auto module = make(spec.channels);
  module.module().to(dtype);
  module.module().train();
  module->forward(random_inputs(spec, dtype, spec.batch), random_conditions(spec, dtype, spec.batch));
  randomize_parameters(module.module());
  return module;
}

inline HarnessReport check_flow(const std::string& name, const ModuleFactory& make, const HarnessOptions& options) {
  INFO("module: " << name);
  HarnessReport report;
  const auto& spec = options.spec;

  // Round trips in fp32 and fp64, shapes and dtypes kept, forward/inverse log-dets opposite.
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    torch::manual_seed(1);
    auto module = make_nontrivial(make, spec, dtype);
    module.module().eval();
    const auto x = random_inputs(spec, dtype, spec.batch);
    const auto c = random_conditions(spec, dtype, spec.batch);
    const auto forward = module->forward(x, c);
    REQUIRE(forward.tensors.size() == x.size());
    for (size_t s = 0; s < x.size(); ++s) {
      REQUIRE(forward.tensors[s].sizes() == x[s].sizes());
      REQUIRE(forward.tensors[s].scalar_type() == dtype);
    }
    REQUIRE(forward.log_det.sizes() == torch::IntArrayRef{spec.batch});
    REQUIRE(forward.log_det.scalar_type() == dtype);
    const auto inverse = module->inverse(forward.tensors, c);
    const double error = max_abs_diff(inverse.tensors, x);
    const double log_det_error = (forward.log_det + inverse.log_det).abs().max().item<double>();
    const double log_det_scale = 1.0 + forward.log_det.abs().max().item<double>();
    CAPTURE(error, log_det_error, forward.log_det);
    if (dtype == torch::kFloat32) {
      report.inverse_error_f32 = error;
      CHECK(error <= 1e-5);
      CHECK(log_det_error <= 1e-5 * log_det_scale);
    } else {
      report.inverse_error_f64 = error;
      report.log_det_sum_error_f64 = log_det_error;
      CHECK(error <= options.f64_tolerance);
      CHECK(log_det_error <= options.f64_tolerance * log_det_scale);
    }
    // A non-trivial module must actually change its input (guards against an accidental identity).
    CHECK(max_abs_diff(forward.tensors, x) > 1e-3);
  }

  // Log-det against the autograd Jacobian, fp64, tiny input.
  {
    torch::manual_seed(2);
    auto module = make_nontrivial(make, options.jacobian_spec, torch::kFloat64);
    module.module().eval();
    const auto x = random_inputs(options.jacobian_spec, torch::kFloat64, options.jacobian_spec.batch);
    const auto c = random_conditions(options.jacobian_spec, torch::kFloat64, options.jacobian_spec.batch);
    const auto analytic = module->forward(x, c).log_det;
    const auto numeric = autograd_log_abs_det(*module, x, c);
    const double rel = ((analytic - numeric).abs() / numeric.abs().clamp_min(1.0)).max().item<double>();
    report.jacobian_rel_error = rel;
    CAPTURE(analytic, numeric, rel);
    CHECK(rel <= options.jacobian_tolerance);
    if (options.expect_nonzero_log_det) {
      CHECK(analytic.abs().max().item<double>() > 1e-3);  // non-trivial log-det: a wrong sign would show
    }
  }

  torch::manual_seed(3);
  auto module = make_nontrivial(make, spec, torch::kFloat32);
  const auto x = random_inputs(spec, torch::kFloat32, spec.batch);
  const auto c = random_conditions(spec, torch::kFloat32, spec.batch);

  // Gradients of the NLL reach every parameter; eval + no-grad gives the same result as train mode.
  if (!module.module().parameters().empty()) {
    module.module().train();
    module.module().zero_grad();
    const auto result = module->forward(x, c);
    torch::Tensor sq = torch::zeros({spec.batch});
    for (const auto& z : result.tensors) sq = sq + z.pow(2).flatten(1).sum(1);
    (0.5 * sq - result.log_det).mean().backward();
    for (const auto& p : module.module().named_parameters()) {
      INFO("parameter " << p.key());
      const auto& unused = options.unused_parameters;
      if (std::find(unused.begin(), unused.end(), p.key()) != unused.end()) continue;
      REQUIRE(p.value().grad().defined());
      CHECK(p.value().grad().abs().max().item<double>() > 0);
    }
    module.module().eval();
    torch::NoGradGuard no_grad;
    const auto eval_result = module->forward(x, c);
    CHECK(max_abs_diff(eval_result.tensors, result.tensors) <= 1e-6);
  }

  module.module().eval();
  torch::NoGradGuard no_grad;
  const auto reference = module->forward(x, c);

  // clone(): equal outputs, independent parameters.
  {
    auto copy = module.clone();
    copy.module().eval();
    CHECK(equal_lists(copy->forward(x, c).tensors, reference.tensors));
    auto params = copy.module().parameters();
    if (!params.empty()) {
      params[0].add_(1.0);
      CHECK(equal_lists(module->forward(x, c).tensors, reference.tensors));
    }
  }

  // save/load into a freshly built module (train mode: ActNorm must not re-initialise).
  {
    const std::string path = "validflow_harness_" + name + ".pt";
    torch::save(module.module_ptr(), path);
    auto fresh = make(spec.channels);
    auto fresh_module = fresh.module_ptr();
    torch::load(fresh_module, path);
    std::remove(path.c_str());
    fresh.module().train();
    const auto loaded = fresh->forward(x, c);
    CHECK(equal_lists(loaded.tensors, reference.tensors));
    CHECK(loaded.log_det.equal(reference.log_det));
  }

  if (options.check_bad_inputs) {
    auto fewer = x;
    fewer.pop_back();
    CHECK_THROWS_AS(module->forward(fewer, c), FlowInputError);
    auto more = x;
    more.push_back(x.back());
    CHECK_THROWS_AS(module->forward(more, c), FlowInputError);
    auto wrong_channels = x;
    wrong_channels[0] = torch::randn(tensor_shape(spec, spec.batch, spec.channels[0] + 2, spec.sizes[0]));
    CHECK_THROWS_AS(module->forward(wrong_channels, c), FlowInputError);
    if (x.size() > 1) {
      auto wrong_batch = x;
      wrong_batch.back() = torch::randn(tensor_shape(spec, spec.batch + 1, spec.channels.back(), spec.sizes.back()));
      CHECK_THROWS_WITH(module->forward(wrong_batch, c), Catch::Contains("batch size mismatch"));
    }
    auto with_nan = x;
    with_nan[0] = x[0].clone();
    with_nan[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(module->forward(with_nan, c), Catch::Contains("NaN"));
    CHECK_THROWS_AS(module->inverse(with_nan, c), FlowInputError);
    TensorList integers;
    for (const auto& t : x) integers.push_back(t.to(torch::kInt32));
    CHECK_THROWS_AS(module->forward(integers, c), FlowInputError);
    if (!module.module().parameters().empty()) {
      TensorList doubles;
      for (const auto& t : x) doubles.push_back(t.to(torch::kFloat64));
      CHECK_THROWS_WITH(module->forward(doubles, c), Catch::Contains("dtype"));
    }
    if (!c.empty()) {  // conditions are checked like inputs
      CHECK_THROWS_WITH(module->forward(x), Catch::Contains("condition"));
      auto extra = c;
      extra.push_back(c[0]);
      CHECK_THROWS_WITH(module->forward(x, extra), Catch::Contains("condition"));
      auto wrong = c;
      wrong[0] = torch::randn(tensor_shape(spec, spec.batch, spec.conditions[0] + 1, spec.sizes[0]));
      CHECK_THROWS_WITH(module->forward(x, wrong), Catch::Contains("condition 0"));
      if (spec.spatial_dims > 0) {
        wrong[0] = torch::randn(tensor_shape(spec, spec.batch, spec.conditions[0], spec.sizes[0] + 1));
        CHECK_THROWS_WITH(module->inverse(x, wrong), Catch::Contains("spatial"));
      }
      wrong[0] = c[0].clone();
      wrong[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
      CHECK_THROWS_WITH(module->forward(x, wrong), Catch::Contains("condition 0 contains NaN"));
      wrong[0] = c[0].to(torch::kFloat64);
      CHECK_THROWS_WITH(module->forward(x, wrong), Catch::Contains("dtype"));
    } else {
      CHECK_THROWS_WITH(module->forward(x, {x[0]}), Catch::Contains("condition"));
    }
  }

  std::printf(
      "[harness] %-40s inverse err fp32 %.2e  fp64 %.2e  |ld_f + ld_i| fp64 %.2e  log-det vs autograd rel %.2e\n",
      name.c_str(), report.inverse_error_f32, report.inverse_error_f64, report.log_det_sum_error_f64,
      report.jacobian_rel_error);
  return report;
}

}  // namespace vft
