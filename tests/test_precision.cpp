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

namespace {

/// Runs `f` with pre-packed convolutions switched to `enabled`, restoring the switch after.
template <typename F>
auto with_packed_convolutions(bool enabled, F&& f) {
  const bool before = packed_convolutions_enabled();
  set_packed_convolutions(enabled);
  struct Restore {
    bool value;
    ~Restore() { set_packed_convolutions(value); }
  } restore{before};
  return f();
}

/// Where this LibTorch has no pre-packed path: checks that a convolution runs eager, says so, and returns true.
bool packing_off_here() {
  if (PackedConvolutions::available()) return false;
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 4, 3).padding(1));
  CHECK_FALSE(PackedConvolutions::applies(*conv, torch::randn({1, 4, 6, 6})));
  WARN("skipped: pre-packed convolutions are off with this LibTorch (" TORCH_VERSION "), every convolution runs eager");
  return true;
}

}  // namespace

TEST_CASE("pre-packed convolutions give the eager result for every geometry the flows use", "[precision][packed]") {
  if (packing_off_here()) return;
  struct Geometry {
    int64_t in, out, kernel, stride, groups;
    bool bias;
  };
  // 3x3 and 5x5 "same" convolutions, the strided ones of the cross-scale links (2 and 4), depthwise, 1x1, no bias.
  const std::vector<Geometry> geometries{{8, 16, 3, 1, 1, true},  {16, 8, 5, 1, 1, true}, {16, 8, 3, 2, 1, true},
                                         {16, 8, 3, 4, 1, true},  {8, 8, 3, 1, 8, true},  {8, 12, 1, 1, 1, true},
                                         {8, 16, 3, 1, 1, false}, {2, 1, 7, 1, 1, true}};
  torch::manual_seed(11);
  for (const auto& g : geometries) {
    CAPTURE(g.in, g.out, g.kernel, g.stride, g.groups, g.bias);
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(g.in, g.out, g.kernel)
                               .stride(g.stride)
                               .padding(g.kernel / 2)
                               .groups(g.groups)
                               .bias(g.bias));
    PackedConvolutions packed;
    for (const int64_t batch : {1, 3}) {
      const auto x = torch::randn({batch, g.in, 8, 8});
      torch::NoGradGuard no_grad;
      REQUIRE(PackedConvolutions::applies(*conv, x));
      const auto eager = conv(x);
      const auto out = packed(*conv, x);
      CHECK(packed.size() == 1);
      CHECK(out.sizes() == eager.sizes());
      CHECK(!out.is_mkldnn());
      CHECK((out - eager).abs().max().item<double>() <= 1e-5 * std::max(1.0, eager.abs().max().item<double>()));
      // A channels_last input gives the same values.
      const auto cl = packed(*conv, x.contiguous(torch::MemoryFormat::ChannelsLast));
      CHECK((cl - eager).abs().max().item<double>() <= 1e-5 * std::max(1.0, eager.abs().max().item<double>()));
    }
  }
}

TEST_CASE("a pre-packed weight follows every change of the convolution", "[precision][packed]") {
  if (packing_off_here()) return;
  torch::manual_seed(12);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(8, 8, 3).padding(1));
  PackedConvolutions packed;
  const auto x = torch::randn({2, 8, 6, 6});
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>() <= 1e-5 * std::max(1.0, b.abs().max().item<double>());
  };
  {
    torch::NoGradGuard no_grad;
    const auto first = packed(*conv, x);
    REQUIRE(close(first, conv(x)));
    conv->weight.mul_(-2.0);  // in place: the version counter moves
    const auto after_update = packed(*conv, x);
    CHECK(close(after_update, conv(x)));
    CHECK(!close(after_update, first));
    conv->weight.copy_(torch::randn_like(conv->weight));  // what load_state_dict does
    CHECK(close(packed(*conv, x), conv(x)));
    conv->weight.set_data(torch::randn_like(conv->weight));  // another tensor
    CHECK(close(packed(*conv, x), conv(x)));
    // A clone packs its own weights; its owner's cache is not shared.
    auto copy = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(conv->clone());
    copy->weight.add_(1.0);
    PackedConvolutions copied = packed;
    CHECK(copied.size() == 0);
    CHECK(close(copied(*copy, x), copy->forward(x)));
    CHECK(close(packed(*conv, x), conv(x)));
  }
  // Where it does not apply, the module's own forward runs: autograd, other dtypes, autocast, padding modes.
  {
    const auto xg = x.clone().requires_grad_(true);
    CHECK_FALSE(PackedConvolutions::applies(*conv, xg));
    packed(*conv, xg).sum().backward();
    CHECK(xg.grad().defined());
    CHECK(conv->weight.grad().defined());
  }
  torch::NoGradGuard no_grad;
  CHECK_FALSE(PackedConvolutions::applies(*conv, x.to(torch::kDouble)));
  {
    validflow::detail::AutocastRegion autocast(torch::Device(torch::kCPU), torch::kBFloat16);
    CHECK_FALSE(PackedConvolutions::applies(*conv, x));
  }
  torch::nn::Conv2d reflect(torch::nn::Conv2dOptions(8, 8, 3).padding(1).padding_mode(torch::kReflect));
  CHECK_FALSE(PackedConvolutions::applies(*reflect, x));
  torch::nn::Conv2d same(torch::nn::Conv2dOptions(8, 8, 3).padding(torch::kSame));
  CHECK_FALSE(PackedConvolutions::applies(*same, x));
  with_packed_convolutions(false, [&] {
    CHECK_FALSE(PackedConvolutions::applies(*conv, x));
    return 0;
  });
}

TEST_CASE("pre-packed convolutions give the eager flows' latents and log-dets", "[precision][packed]") {
  auto validflow_model = tiny_validflow();
  torch::manual_seed(4);
  CSFlow csflow(CSFlowOptions().channels(8).blocks(2).hidden_channels(16));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : csflow->parameters()) p.normal_(0.0, 0.2);
  }
  csflow->eval();
  const auto x = tiny_inputs(3);
  torch::NoGradGuard no_grad;
  for (FlowModule* model : std::vector<FlowModule*>{validflow_model.get(), csflow.get()}) {
    const auto eager = with_packed_convolutions(false, [&] { return model->forward(x); });
    const auto packs_before = PackedConvolutions::packs_made();
    const auto packed = with_packed_convolutions(true, [&] { return model->forward(x); });
    const auto packs_first = PackedConvolutions::packs_made();
    CHECK((packs_first > packs_before) == PackedConvolutions::available());  // every convolution packed once ...
    with_packed_convolutions(true, [&] { return model->forward(x); });
    CHECK(PackedConvolutions::packs_made() == packs_first);  // ... and reused
    CHECK(rel_error(packed.tensors, eager.tensors) < 1e-5);
    CHECK(((packed.log_det - eager.log_det).abs() / eager.log_det.abs()).max().item<double>() < 1e-5);
    const auto back = with_packed_convolutions(true, [&] { return model->inverse(packed.tensors); });
    CHECK(rel_error(back.tensors, x) < 1e-4);
  }
}
