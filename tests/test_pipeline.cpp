// The validflow program's pipeline: model configurations, feature cache, training checkpoints (atomic
// writes, exact resume, divergence stop), evaluation outputs.
#include "catch_torch.hpp"
#include "test_util.hpp"

#include "evaluation.hpp"
#include "feature_cache.hpp"
#include "training.hpp"

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace validflow;
using validflow::test::TempDir;
using namespace validflow::app;

namespace {

TensorList random_features(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({n, 8, 8, 8}), torch::randn({n, 8, 4, 4}), torch::randn({n, 8, 2, 2})};
}

FlowConfig tiny_config(const std::string& model) {
  FlowConfig c;
  c.model = model;
  c.channels = 8;
  c.blocks = 1;
  c.modules = 1;
  c.hidden = 8;
  c.cbam_reduction = 4;
  return c;
}

Checkpoint fresh_checkpoint(const FlowConfig& config) {
  torch::manual_seed(0);
  Checkpoint c;
  c.config = config;
  c.feature_layout = {{"channels", 8}};
  c.model = build_flow(config);
  return c;
}

TrainOptions quick_training(int64_t epochs) {
  TrainOptions t;
  t.epochs = epochs;
  t.batch_size = 4;
  t.lr = 1e-3;
  t.checkpoint_every = 1;
  t.quiet = true;
  return t;
}

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  auto pb = b.named_parameters();
  for (const auto& p : a.named_parameters()) {
    if (!p.value().equal(pb[p.key()])) return false;
  }
  return true;
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp") != std::string::npos) return true;  // write_file_atomic's temps
  }
  return false;
}

}  // namespace

TEST_CASE("model configurations round-trip through JSON and build both flows", "[pipeline][config]") {
  for (const std::string model : {"validflow", "csflow"}) {
    const auto config = tiny_config(model);
    CHECK(to_json(flow_config_from_json(to_json(config))) == to_json(config));
    auto flow = build_flow(config);
    CHECK(flow->forward(random_features(2, 0)).log_det.size(0) == 2);
  }
  auto bad = to_json(tiny_config("validflow"));
  bad["model"] = "glow";
  CHECK_THROWS_WITH(flow_config_from_json(bad), Catch::Contains("model must be validflow or csflow, got 'glow'"));
  bad["model"] = "validflow";
  bad.erase("hidden");
  CHECK_THROWS_WITH(flow_config_from_json(bad), Catch::Contains("invalid flow configuration"));
  bad = to_json(tiny_config("validflow"));
  bad["blocks"] = 4;  // CS-Flow's depth key in a ValidFlow description
  CHECK_THROWS_WITH(flow_config_from_json(bad), Catch::Contains("unknown key 'blocks'"));
  bad = to_json(tiny_config("csflow"));
  bad["blocks"] = 0;
  CHECK_THROWS_WITH(flow_config_from_json(bad), Catch::Contains("blocks must be in 1..64, got 0"));
  auto huge = tiny_config("validflow");
  huge.modules = 100000;
  CHECK_THROWS_WITH(build_flow(huge), Catch::Contains("modules must be in 1..64"));
  huge = tiny_config("csflow");
  huge.clamp = std::nan("");
  CHECK_THROWS_WITH(build_flow(huge), Catch::Contains("clamp must be a positive finite number"));
  CHECK((halving_map_sizes(24, 3) == MapSizes{{24, 24}, {12, 12}, {6, 6}}));
}

TEST_CASE("training resumes exactly and checkpoints are atomic", "[pipeline][train]") {
  TempDir dir("resume");
  const auto features = random_features(10, 1);
  const auto config = tiny_config("validflow");

  const auto straight = train_flow(fresh_checkpoint(config), features, quick_training(4), dir.file("straight.pt"));
  CHECK(straight.epoch == 4);
  CHECK(straight.loss_history.size() == 4);
  CHECK(straight.loss_history.back() < straight.loss_history.front());

  train_flow(fresh_checkpoint(config), features, quick_training(2), dir.file("resumed.pt"));
  CHECK(load_checkpoint(dir.file("resumed.pt")).epoch == 2);
  auto resume = quick_training(4);
  resume.resume = true;
  const auto resumed = train_flow(fresh_checkpoint(config), features, resume, dir.file("resumed.pt"));
  CHECK(resumed.epoch == 4);
  CHECK(resumed.loss_history == straight.loss_history);
  CHECK(same_parameters(resumed.model.module(), straight.model.module()));

  // A reloaded checkpoint rebuilds the same model and gives the same outputs (ActNorm stays initialised).
  auto loaded = load_checkpoint(dir.file("straight.pt"));
  loaded.model.module().eval();
  straight.model.module().eval();
  const auto probe = random_features(3, 7);
  CHECK(loaded.model->forward(probe).tensors[0].equal(straight.model->forward(probe).tensors[0]));
  CHECK_FALSE(has_temp_files(dir.path));

  // Resuming with another configuration is refused.
  auto other = config;
  other.hidden = 16;
  CHECK_THROWS_WITH(train_flow(fresh_checkpoint(other), features, resume, dir.file("straight.pt")),
                    Catch::Contains("another configuration"));
}

TEST_CASE("a diverging loss stops training and keeps the last good checkpoint", "[pipeline][train]") {
  TempDir dir("diverge");
  auto features = random_features(8, 2);
  const auto config = tiny_config("csflow");
  train_flow(fresh_checkpoint(config), features, quick_training(2), dir.file("ckpt.pt"));
  // With the input checks off, a NaN feature reaches the loss.
  set_finite_checks(false);
  features[0][3][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  auto resume = quick_training(4);
  resume.resume = true;
  CHECK_THROWS_AS(train_flow(fresh_checkpoint(config), features, resume, dir.file("ckpt.pt")), TrainingDiverged);
  set_finite_checks(true);
  const auto kept = load_checkpoint(dir.file("ckpt.pt"));
  CHECK(kept.epoch == 2);
  for (const auto& p : kept.model.module().parameters()) CHECK(torch::isfinite(p).all().item<bool>());
  CHECK_FALSE(has_temp_files(dir.path));
}

TEST_CASE("corrupt or missing checkpoints are clear errors", "[pipeline][train]") {
  TempDir dir("corrupt");
  CHECK_THROWS_WITH(load_checkpoint(dir.file("missing.pt")), Catch::Contains("not found"));
  train_flow(fresh_checkpoint(tiny_config("validflow")), random_features(4, 3), quick_training(1), dir.file("c.pt"));
  std::ifstream in(dir.file("c.pt"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir.file("truncated.pt"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  CHECK_THROWS_WITH(load_checkpoint(dir.file("truncated.pt")), Catch::Contains("corrupt"));
}

TEST_CASE("min_parameter_count bounds every flow from below, within a factor of 4", "[pipeline][config]") {
  // The bound lets loaders refuse a small file that describes a huge model before building it; it must never
  // exceed the real count (a valid file would be refused) and stay close to it (or it would protect nothing).
  for (const std::string model : {"validflow", "csflow"})
    for (const int64_t channels : {2, 8, 14, 96})
      for (const int64_t hidden : {1, 6, 32})
        for (const int64_t k : {1, 3, 5}) {
          auto c = tiny_config(model);
          c.channels = channels;
          c.hidden = hidden;
          c.kernel_size = k;
          c.cbam_reduction = hidden == 32 ? 16 : 1;
          c.blocks = 2;
          c.modules = 2;
          if (model == "csflow") c.kernel_sizes = {k, 1};
          c.long_branches = channels != 14;
          c.fa_cbam = c.fb_cbam = hidden != 6;
          const double count = static_cast<double>(trainable_parameter_count(build_flow(c).module()));
          const double bound = min_parameter_count(c);
          INFO(to_json(c).dump() << " count " << count << " bound " << bound);
          CHECK(bound <= count);
          CHECK(count <= 4 * bound + 5000);  // + the fixed-size parts (CBAM's spatial convs, biases)
        }
}

TEST_CASE("a small checkpoint describing a huge flow is refused before the flow is built", "[pipeline][errors]") {
  TempDir dir("huge");
  train_flow(fresh_checkpoint(tiny_config("csflow")), random_features(4, 3), quick_training(1), dir.file("c.pt"));
  auto archive = io::read_archive(dir.file("c.pt"));
  archive.meta["config"]["hidden"] = 65536;  // within FlowConfig's limits: ~10^10 weights, 40 GB to build
  archive.meta["config"]["channels"] = 65536;
  archive.meta["config"]["kernel_sizes"] = {31};
  archive.meta["config"]["blocks"] = 1;
  io::write_archive(dir.file("huge.pt"), archive);
  CHECK_THROWS_WITH(load_checkpoint(dir.file("huge.pt")),
                    Catch::Contains("huge.pt") && Catch::Contains("needs at least") && Catch::Contains("weights"));
}

TEST_CASE("feature cache round trip and staleness", "[pipeline][cache]") {
  TempDir dir("cache");
  FeatureCache cache;
  cache.train = random_features(5, 4);
  cache.test = random_features(3, 5);
  cache.test_samples = {{"a.png", 0, "good", ""}, {"b.png", 1, "crack", "b_mask.png"}, {"c.png", 1, "spot", ""}};
  const nlohmann::json request = {{"dataset", "folder:x"}, {"backbone", "efficientnet-b0"}};
  cache.meta = {{"request", request}, {"scales", 3}};
  cache.backbone_state = StateDict{{"_conv_stem.weight", torch::randn({4, 3, 3, 3})}};
  save_feature_cache(cache, dir.file("features.pt"));
  CHECK_FALSE(has_temp_files(dir.path));

  std::string reason;
  const auto loaded = load_matching_cache(dir.file("features.pt"), request, reason);
  REQUIRE(loaded);
  CHECK(loaded->train[2].equal(cache.train[2]));
  CHECK(loaded->test[0].equal(cache.test[0]));
  CHECK(loaded->test_samples[1].mask_path == "b_mask.png");
  CHECK(loaded->test_samples[2].type == "spot");
  CHECK((loaded->map_sizes() == MapSizes{{8, 8}, {4, 4}, {2, 2}}));

  auto other = request;
  other["backbone"] = "efficientnet-b5";
  CHECK_FALSE(load_matching_cache(dir.file("features.pt"), other, reason));
  CHECK_THAT(reason, Catch::Contains("stale"));
  std::ofstream(dir.file("broken.pt")) << "not a pickle";
  CHECK_THROWS_WITH(load_feature_cache(dir.file("broken.pt")), Catch::Contains("not a valid validflow file"));
  CHECK_THROWS_WITH(load_feature_cache(dir.file("absent.pt")), Catch::Contains("validflow extract"));
  // An unwritable destination is an error naming it, and leaves nothing behind.
  std::ofstream(dir.file("not_a_folder")) << "x";
  CHECK_THROWS_WITH(save_feature_cache(cache, dir.file("not_a_folder") + "/features.pt"),
                    Catch::Contains("not_a_folder"));
  CHECK_THROWS_AS(save_checkpoint(dir.file("not_a_folder") + "/c.pt", fresh_checkpoint(tiny_config("csflow")),
                                  *std::make_unique<torch::optim::Adam>(
                                      std::vector<torch::Tensor>{torch::zeros({1}, torch::requires_grad())})),
                  validflow::FileError);
  CHECK_FALSE(has_temp_files(dir.path));
  CHECK(file_fingerprint("") == "none");
  CHECK_THROWS_WITH(file_fingerprint(dir.file("absent.bin")), Catch::Contains("absent.bin"));
}

TEST_CASE("scoring: scores and maps follow the shared definitions", "[pipeline][eval]") {
  auto model = build_flow(tiny_config("validflow"));
  model.module().eval();
  const auto features = random_features(5, 6);
  const auto scored = score_features(*model, features, 2);
  torch::NoGradGuard no_grad;
  const auto z = model->forward(features).tensors;
  CHECK(scored.scores.allclose(image_scores(z)));
  CHECK(scored.maps.allclose(anomaly_maps(z)));
  CHECK(to_mat(resize_maps(scored.maps, 32, 32)[0]).size() == cv::Size(32, 32));
}
