// Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): small valid files of every kind the
// loaders read, so that fuzzing starts from deep inside each format. Run once by hand when a format changes:
//   build-fuzz/fuzz/validflow_fuzz_seeds fuzz/corpus
// The files are committed; scripts/fuzz.sh only reads them.
#include "feature_cache.hpp"
#include "training.hpp"

#include <validflow/detect/model_file.hpp>

#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace fs = std::filesystem;
using namespace validflow;
using namespace validflow::app;

namespace {

fs::path out_dir;

void write(const std::string& target, const std::string& name, const std::string& bytes) {
  const auto dir = out_dir / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
  std::cout << (dir / name).string() << " (" << bytes.size() << " bytes)\n";
}

std::string file_bytes(const std::string& path) { return io::read_file_bytes(path); }

/// EfficientNet-B0 cut after block 0 (16 channels) at 32 px, `scales` scales: the smallest extractor there is.
features::BackboneSpec tiny_backbone(int64_t scales) {
  features::BackboneSpec b;
  b.name = "efficientnet-b0";
  b.layer = 0;
  b.image_size = 32;
  b.scales = scales;
  return b.resolved();
}

/// Small seeds mutate faster: one scale for the files that hold a flow (fewer tensors), three where scales matter.
FlowConfig tiny_flow(const std::string& model, int64_t channels, int64_t scales = 1) {
  FlowConfig c;
  c.model = model;
  c.channels = channels;
  c.scales = scales;
  c.long_branches = scales >= 3;
  c.modules = 1;
  c.blocks = 2;
  c.hidden = 4;
  c.cbam_reduction = 4;
  return c;
}

TensorList random_features(int64_t n, int64_t channels, int64_t scales = 3) {
  TensorList out;
  for (int64_t s = 0; s < scales; ++s) out.push_back(torch::randn({n, channels, 4 >> s, 4 >> s}));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: validflow_fuzz_seeds CORPUS_DIR\n";
    return 2;
  }
  out_dir = argv[1];
  torch::manual_seed(0);
  const auto tmp = fs::temp_directory_path() / "validflow-fuzz-seeds";
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  // Checkpoints: a ValidFlow and a CS-Flow, one epoch each (Adam state included).
  for (const std::string model : {"validflow", "csflow"}) {
    Checkpoint c;
    c.config = tiny_flow(model, 4);
    c.feature_layout = {{"channels", 4}};
    c.model = build_flow(c.config);
    TrainOptions t;
    t.epochs = 1;
    t.batch_size = 2;
    t.quiet = true;
    const auto path = (tmp / ("checkpoint-" + model + ".pt")).string();
    train_flow(c, random_features(4, 4, 1), t, path);
    write("checkpoint", model + ".pt", file_bytes(path));
  }

  // Model file: the tiny backbone and a trained-looking ValidFlow (ActNorm initialised).
  ModelInfo info;
  info.backbone = tiny_backbone(1);
  auto extractor = features::build_extractor(info.backbone);
  info.flow = tiny_flow("validflow", extractor->backbone->feature_channels());
  info.flow.fa_cbam = info.flow.fb_cbam = false;
  auto flow = build_flow(info.flow);
  {
    torch::NoGradGuard no_grad;
    flow.module().train();
    flow->forward(extractor->forward(torch::rand({2, 3, 32, 32})));
    flow.module().eval();
  }
  info.decision.threshold = 1.0;
  info.decision.threshold_source = "seed";
  info.decision.pixel_threshold = 0.5;
  info.decision.pixel_threshold_source = "seed";
  info.decision.map_sigma = 1;
  info.provenance = {{"dataset", "seed"}};
  const auto model_path = (tmp / "model.vfm").string();
  save_model_file(model_path, info, *extractor, flow);
  write("model_file", "tiny.vfm", file_bytes(model_path));

  // Feature caches, with and without held-out images (three scales).
  const int64_t channels = extractor->backbone->feature_channels();
  info.backbone = tiny_backbone(3);
  for (const bool holdout : {false, true}) {
    FeatureCache cache;
    cache.train = random_features(3, channels);
    cache.test = random_features(2, channels);
    if (holdout) cache.holdout = random_features(1, channels);
    cache.test_samples = {{"a/good.png", 0, "good", ""}, {"a/crack.png", 1, "crack", "gt/crack.png"}};
    if (holdout) cache.holdout_samples = {{"a/held.png"}};
    cache.backbone_state = module_state_dict(extractor->backbone.module());
    cache.meta = {{"request",
                   {{"dataset", "folder:a"},
                    {"train_files", {"t0.png", "t1.png", "t2.png"}},
                    {"test_files", {"a/good.png", "a/crack.png"}},
                    {"holdout_files", holdout ? nlohmann::json{"a/held.png"} : nlohmann::json::array()},
                    {"backbone", features::to_json(info.backbone)},
                    {"weights", ""},
                    {"weights_fingerprint", "none"},
                    {"fp16", false}}},
                  {"scales", 3},
                  {"channels", channels},
                  {"extract_seconds", 0.5},
                  {"library_version", version_string}};
    const auto path = (tmp / "features.pt").string();
    save_feature_cache(cache, path);
    write("feature_cache", holdout ? "holdout.pt" : "plain.pt", file_bytes(path));
  }

  // The container itself: every dtype, a blob, an empty tensor.
  io::TensorArchive a;
  a.kind = "validflow-seed";
  a.meta = {{"k", 1}};
  for (auto dtype : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16, torch::kInt64, torch::kInt32,
                     torch::kInt16, torch::kInt8, torch::kUInt8})
    a.tensors.emplace_back(std::string("t") + c10::toString(dtype), torch::ones({2, 3}, dtype));
  a.tensors.emplace_back("flag", torch::tensor(true));
  a.tensors.emplace_back("empty", torch::zeros({0, 4}));
  a.blobs.emplace_back("notes", "text");
  write("archive", "all-dtypes.vf", io::serialize_archive(a));

  // State dicts (torch.save zip format): flat, with a float64 scalar and an int tensor.
  StateDict state{{"conv.weight", torch::randn({2, 3, 1, 1})},
                  {"conv.bias", torch::zeros({2})},
                  {"steps", torch::arange(4)},
                  {"scale", torch::tensor(2.5, torch::kFloat64)}};
  const auto state_path = (tmp / "state.pt").string();
  write_state_dict(state, state_path);
  write("state_dict", "flat.pt", file_bytes(state_path));

  // Images and masks: each format the program reads, gray, 16-bit, RGBA, 1x1, progressive JPEG.
  cv::Mat color(7, 9, CV_8UC3), gray(5, 6, CV_8UC1), deep(4, 5, CV_16UC1), rgba(3, 4, CV_8UC4);
  cv::randu(color, 0, 255);
  cv::randu(gray, 0, 255);
  cv::randu(deep, 0, 65535);
  cv::randu(rgba, 0, 255);
  auto encode = [](const std::string& ext, const cv::Mat& m, const std::vector<int>& params = {}) {
    std::vector<uchar> buf;
    if (!cv::imencode(ext, m, buf, params)) throw std::runtime_error("cannot encode " + ext);
    return std::string(buf.begin(), buf.end());
  };
  write("image", "color.png", encode(".png", color));
  write("image", "gray.png", encode(".png", gray));
  write("image", "deep.png", encode(".png", deep));
  write("image", "rgba.png", encode(".png", rgba));
  write("image", "one.png", encode(".png", cv::Mat(1, 1, CV_8UC1, cv::Scalar(7))));
  write("image", "color.jpg", encode(".jpg", color));
  write("image", "progressive.jpg", encode(".jpg", color, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  write("image", "restart.jpg", encode(".jpg", gray, {cv::IMWRITE_JPEG_RST_INTERVAL, 1}));
  write("image", "color.bmp", encode(".bmp", color));
  write("image", "gray.bmp", encode(".bmp", gray));
  write("image", "color.tif", encode(".tif", color));
  write("image", "deep.tif", encode(".tif", deep));

  // JSON descriptions.
  write("config", "validflow.json", to_json(tiny_flow("validflow", 16, 3)).dump());
  auto cs = tiny_flow("csflow", 16, 3);
  cs.kernel_sizes = {3, 5};
  write("config", "csflow.json", to_json(cs).dump());
  write("config", "backbone.json", features::to_json(info.backbone).dump());
  write("config", "decision.json", to_json(info.decision).dump());

  // Dataset specs (first line) and DAGM labels (the rest).
  const std::string labels = "2\n1\t0\t0001.PNG\t0\t0\n2\t1\t0002.PNG\t0\t0002_label.PNG\n";
  write("dataset", "dagm.txt", "dagm:dagm\n" + labels);
  write("dataset", "folder.txt", "folder:folder\n");
  write("dataset", "mtd.txt", "mtd:mtd\n");
  write("dataset", "mvtec.txt", "mvtec:folder\n" + labels);
  fs::remove_all(tmp);
  return 0;
}
