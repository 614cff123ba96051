// Reduced-precision inference (validflow/models/precision.hpp) and the channels_last helpers.
#include "catch_torch.hpp"

#include <validflow/models/precision.hpp>
#include <validflow/validflow.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

using namespace validflow;

namespace {

// Tiny ValidFlow (both subnet kinds, ActNorm, CBAM, 1<->3 branches) with every parameter randomised,
// so the gammas (zero at init) do not make the couplings identities.
ValidFlow tiny_validflow() {
  torch::manual_seed(3);
  ValidFlow model(ValidFlowOptions().channels(8).modules(1).hidden_channels(16).cbam_reduction(4));
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) {
    const double fan_in = p.dim() > 1 ? static_cast<double>(p.numel() / p.size(0)) : 1.0;
    p.normal_(0.0, p.dim() > 1 ? 0.5 / std::sqrt(fan_in) : 0.2);
  }
  model->eval();
  return model;
}

TensorList tiny_inputs(int64_t batch, uint64_t seed = 5) {
  torch::manual_seed(seed);
  return {torch::randn({batch, 8, 8, 8}), torch::randn({batch, 8, 4, 4}), torch::randn({batch, 8, 2, 2})};
}

double rel_error(const TensorList& a, const TensorList& b) {
  double diff = 0, scale = 0;
  for (size_t s = 0; s < a.size(); ++s) {
    diff = std::max(diff, (a[s] - b[s]).abs().max().item<double>());
    scale = std::max(scale, b[s].abs().max().item<double>());
  }
  return diff / scale;
}

/// Spearman rank correlation (no ties expected for continuous scores).
double spearman(const torch::Tensor& a, const torch::Tensor& b) {
  auto ranks = [](const torch::Tensor& t) { return t.argsort().argsort().to(torch::kFloat64); };
  const auto ra = ranks(a), rb = ranks(b);
  const auto ca = ra - ra.mean(), cb = rb - rb.mean();
  return ((ca * cb).sum() / (ca.pow(2).sum().sqrt() * cb.pow(2).sum().sqrt())).item<double>();
}

}  // namespace

TEST_CASE("precision names, dtypes and device support", "[precision]") {
  CHECK(parse_precision("fp32") == Precision::Float32);
  CHECK(parse_precision("bf16") == Precision::BFloat16);
  CHECK(parse_precision("half") == Precision::Float16);
  CHECK_THROWS_AS(parse_precision("int8"), UnsupportedPrecision);
  CHECK(precision_dtype(Precision::BFloat16) == torch::kBFloat16);
  CHECK(to_string(Precision::Float16) == "fp16");
  CHECK_NOTHROW(check_precision_supported(Precision::BFloat16, torch::kCPU));
  CHECK_NOTHROW(check_precision_supported(Precision::Float16, torch::Device(torch::kCUDA)));
  CHECK_THROWS_WITH(check_precision_supported(Precision::Float16, torch::kCPU),
                    Catch::Contains("fp16 is supported on CUDA only"));
}

TEST_CASE("fp16 on the CPU is a clear error in both entry points", "[precision]") {
  auto model = tiny_validflow();
  const auto x = tiny_inputs(2);
  CHECK_THROWS_AS(forward_at_precision(*model, x, Precision::Float16), UnsupportedPrecision);
  CHECK_THROWS_AS(ReducedPrecisionFlow(model, Precision::Float16), UnsupportedPrecision);
}

TEST_CASE("fp32 precision is the plain forward", "[precision]") {
  auto model = tiny_validflow();
  const auto x = tiny_inputs(3);
  torch::NoGradGuard no_grad;
  const auto ref = model->forward(x);
  const auto out = forward_at_precision(*model, x, Precision::Float32);
  CHECK(rel_error(out.tensors, ref.tensors) == 0.0);
  const auto copy = ReducedPrecisionFlow(model, Precision::Float32).forward(x);
  CHECK(rel_error(copy.tensors, ref.tensors) == 0.0);
  CHECK(copy.log_det.equal(ref.log_det));
}

TEST_CASE("bf16 inference stays close to fp32 and keeps the score ranking", "[precision]") {
  auto model = tiny_validflow();
  const auto x = tiny_inputs(64);
  torch::NoGradGuard no_grad;
  const auto ref = model->forward(x);
  const auto ref_scores = image_scores(ref.tensors);

  SECTION("autocast (model untouched, element-wise steps in fp32)") {
    const auto out = forward_at_precision(*model, x, Precision::BFloat16);
    REQUIRE(out.tensors[0].scalar_type() == torch::kFloat32);
    REQUIRE(out.log_det.scalar_type() == torch::kFloat32);
    const double z_err = rel_error(out.tensors, ref.tensors);
    const double ld_err = ((out.log_det - ref.log_det).abs().max() / ref.log_det.abs().max()).item<double>();
    const double rho = spearman(image_scores(out.tensors), ref_scores);
    INFO("rel z error " << z_err << ", rel log-det error " << ld_err << ", Spearman " << rho);
    CHECK(z_err < 3e-2);  // bf16 keeps 8 significant bits (relative step 2^-8 = 3.9e-3) per rounding
    CHECK(ld_err < 3e-2);
    CHECK(rho > 0.99);
    // The model itself is still fp32 and autocast is off again afterwards.
    CHECK(model->parameters()[0].scalar_type() == torch::kFloat32);
    CHECK(rel_error(model->forward(x).tensors, ref.tensors) == 0.0);
  }
  SECTION("cast copy (everything in bf16)") {
    ReducedPrecisionFlow low(model, Precision::BFloat16);
    REQUIRE(low.model().module().parameters()[0].scalar_type() == torch::kBFloat16);
    CHECK(model->parameters()[0].scalar_type() == torch::kFloat32);
    const auto out = low.forward(x);
    REQUIRE(out.tensors[0].scalar_type() == torch::kFloat32);
    const double z_err = rel_error(out.tensors, ref.tensors);
    const double ld_err = ((out.log_det - ref.log_det).abs().max() / ref.log_det.abs().max()).item<double>();
    const double rho = spearman(image_scores(out.tensors), ref_scores);
    INFO("rel z error " << z_err << ", rel log-det error " << ld_err << ", Spearman " << rho);
    CHECK(z_err < 5e-2);
    CHECK(ld_err < 5e-2);
    CHECK(rho > 0.98);
  }
}

TEST_CASE("bf16 works for CS-Flow and a single layer too", "[precision]") {
  torch::manual_seed(4);
  CSFlow model(CSFlowOptions().channels(8).blocks(2).hidden_channels(16));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("gamma") != std::string::npos) p.value().fill_(0.5);
    }
  }
  model->eval();
  const auto x = tiny_inputs(16, 6);
  torch::NoGradGuard no_grad;
  const auto ref = model->forward(x);
  const auto out = forward_at_precision(*model, x, Precision::BFloat16);
  CHECK(rel_error(out.tensors, ref.tensors) < 3e-2);
  CHECK(spearman(image_scores(out.tensors), image_scores(ref.tensors)) > 0.98);

  ActNorm actnorm(ActNormOptions({8, 8, 8}));
  const auto a_ref = actnorm->forward(x);
  const auto a_out = ReducedPrecisionFlow(actnorm, Precision::BFloat16).forward(x);
  CHECK(rel_error(a_out.tensors, a_ref.tensors) < 1e-2);
}

TEST_CASE("channels_last gives the NCHW results", "[precision][memory_format]") {
  auto model = tiny_validflow();
  const auto x = tiny_inputs(4);
  torch::NoGradGuard no_grad;
  const auto ref = model->forward(x);
  auto cl = std::dynamic_pointer_cast<ValidFlowImpl>(model->clone());
  REQUIRE(cl != nullptr);
  set_memory_format(*cl, torch::MemoryFormat::ChannelsLast);
  for (const auto& p : cl->parameters()) {
    if (p.dim() == 4) CHECK(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }
  const auto out = cl->forward(to_memory_format(x, torch::MemoryFormat::ChannelsLast));
  CHECK(rel_error(out.tensors, ref.tensors) < 1e-5);
  CHECK(((out.log_det - ref.log_det).abs() / ref.log_det.abs()).max().item<double>() < 1e-5);
  // The channels_last copy of ReducedPrecisionFlow at fp32 as well.
  const auto copy =
      ReducedPrecisionFlow(model, Precision::Float32, torch::nullopt, torch::MemoryFormat::ChannelsLast).forward(x);
  CHECK(rel_error(copy.tensors, ref.tensors) < 1e-5);
}
