// The command line of `validflow`: every option declared with its allowed range (checked while parsing,
// before any file is read or written), the subcommands dispatched to commands.hpp, and the one error boundary
// that turns every error into one clear line and an exit code (docs/reliability.md).
#include "commands.hpp"

#include <validflow/features/info.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <memory>
#include <thread>
#include <utility>

#include <signal.h>
#include <unistd.h>

namespace validflow::app {
namespace {

/// A finite number in [lo, hi] (or (lo, hi] when `open_low`); CLI11's Range lets NaN through.
CLI::Validator finite_range(double lo, double hi, bool open_low = false) {
  std::ostringstream text;
  text << (open_low ? "(" : "[") << lo << ", " << hi << "]";
  const std::string name = text.str();
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) return "'" + text + "' is not a number";
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        if (!std::isfinite(v) || v < lo || v > hi || (open_low && v == lo))
          return "value " + text + " is not a finite number in " + name;
        return "";
      },
      name);
}

/// A whole number in [lo, hi]; a value too large for 64 bits is out of range, not saturated.
CLI::Validator int_range(int64_t lo, int64_t hi) {
  const std::string name = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const long long v = std::stoll(text, &used);
          if (used != text.size()) return "'" + text + "' is not a whole number";
          if (v < lo || v > hi) return "value " + text + " is not in " + name;
        } catch (const std::out_of_range&) {
          return "value " + text + " is not in " + name;
        } catch (const std::exception&) {
          return "'" + text + "' is not a whole number";
        }
        return "";
      },
      name);
}

/// A seed: a whole number in [0, 2^64 - 1]; "-1" is refused (std::stoull would wrap it to 2^64 - 1).
CLI::Validator seed_range() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
          return "'" + text + "' is not a whole number in [0, 2^64 - 1]";
        try {
          (void)std::stoull(text);
        } catch (const std::exception&) {
          return "value " + text + " is not in [0, 2^64 - 1]";
        }
        return "";
      },
      "[0, 2^64-1]");
}

/// A folder or file name that is not empty (an empty --out would write into the current folder unasked).
const CLI::Validator kNonEmptyPath(
    [](std::string& text) -> std::string { return text.empty() ? "must not be empty" : ""; }, "PATH");

constexpr int64_t kMaxThreads = 1024;

/// The two configurations (docs/usage.md). The defaults train in minutes on a 2-core machine with the weights
/// scripts/fetch_assets.sh installs; --paper is the paper's setup (EfficientNet-B5 at 768 px, hidden 1024).
/// The defaults' larger learning rate: measured on 240 MTD training images, 30 epochs (450 Adam steps), image AUROC
/// 94.6 at 1e-3 against 72.8 at the paper's 2e-4 (docs/results.md).
struct Preset {
  const char* backbone;
  int64_t image_size, hidden, modules, epochs;
  double lr;
};
constexpr Preset kDefaultPreset{"auto", 384, 128, 3, 30, 1e-3};
constexpr Preset kPaperPreset{"efficientnet-b5", 768, 1024, 3, 60, 2e-4};
constexpr const char* kPaperHelp =
    "The paper's configuration: EfficientNet-B5 (block 35) at 768 px, ValidFlow n = 3 with hidden 1024, 60 epochs at "
    "lr 2e-4 "
    "(the MTD protocol; MVTec AD: add --epochs 300). Needs B5's ImageNet weights (docs/features.md). Options given "
    "beside it win";

struct ModelFlags {
  CLI::Option* modules = nullptr;
  CLI::Option* blocks = nullptr;
  std::vector<CLI::Option*> validflow_only;
  CLI::Option* kernel_sizes = nullptr;
};

/// Model options shared by info, train, run.
ModelFlags add_model_options(CLI::App& cmd, FlowConfig& c) {
  ModelFlags f;
  cmd.add_option("--model", c.model, "Flow: validflow or csflow")
      ->check(CLI::IsMember({"validflow", "csflow"}))
      ->capture_default_str();
  f.modules = cmd.add_option("--modules", c.modules, "ValidFlow: FA+FB modules n (each is two coupling blocks)")
                  ->check(int_range(1, FlowConfig::max_depth))
                  ->capture_default_str();
  f.blocks = cmd.add_option("--blocks", c.blocks, "CS-Flow: coupling blocks (official 4; the ValidFlow paper uses 6)")
                 ->check(int_range(1, FlowConfig::max_depth))
                 ->capture_default_str();
  cmd.add_option("--hidden", c.hidden, "Hidden width of the subnets")
      ->check(int_range(1, FlowConfig::max_width))
      ->capture_default_str();
  f.validflow_only.push_back(
      cmd.add_option("--kernel-size", c.kernel_size, "ValidFlow: kernel size of every conv (odd)")
          ->check(int_range(1, FlowConfig::max_kernel))
          ->capture_default_str());
  f.kernel_sizes =
      cmd.add_option("--kernel-sizes", c.kernel_sizes, "CS-Flow: kernel size per block (default [3]*(n-1)+[5])")
          ->check(int_range(1, FlowConfig::max_kernel));
  cmd.add_option("--clamp", c.clamp, "Soft clamp of the log-scales")
      ->check(finite_range(0, 100, true))
      ->capture_default_str();
  f.validflow_only.push_back(cmd.add_flag("!--no-actnorm", c.actnorm, "ValidFlow: no ActNorm in the blocks"));
  f.validflow_only.push_back(cmd.add_flag("!--no-fa-cbam", c.fa_cbam, "ValidFlow: no CBAM in r1 (FA)"));
  f.validflow_only.push_back(cmd.add_flag("!--no-fb-cbam", c.fb_cbam, "ValidFlow: no CBAM in r2 (FB) (Table 7)"));
  f.validflow_only.push_back(
      cmd.add_flag("!--no-long-branches", c.long_branches, "ValidFlow: no scale 1<->3 branches in r2 (Table 7)"));
  return f;
}

/// Options of one model kind given with the other: a usage error, not a silent no-op. `channels_from_features`:
/// the channel count is not an option here (train, run: it comes from the features).
void check_model_flags(const ModelFlags& f, const FlowConfig& c, bool channels_from_features) {
  if (c.is_csflow()) {
    if (f.modules->count() > 0)
      throw CLI::ValidationError("--modules", "counts ValidFlow's FA+FB modules; CS-Flow's depth is --blocks");
    for (auto* o : f.validflow_only)
      if (o->count() > 0) throw CLI::ValidationError(o->get_name(), "applies to --model validflow only");
  } else {
    if (f.blocks->count() > 0)
      throw CLI::ValidationError("--blocks", "counts CS-Flow's coupling blocks; ValidFlow's depth is --modules (n)");
    if (f.kernel_sizes->count() > 0) throw CLI::ValidationError("--kernel-sizes", "applies to --model csflow only");
  }
  try {
    FlowConfig probe = c;
    if (channels_from_features) probe.channels = 304;  // the real value comes from the features
    probe.validate();
  } catch (const FlowConfigError& e) {  // name the option of the field the message starts with
    const std::string message = e.what();
    static const std::pair<const char*, const char*> fields[] = {{"kernel_sizes", "--kernel-sizes"},
                                                                 {"kernel size", "--kernel-sizes"},
                                                                 {"kernel_size", "--kernel-size"},
                                                                 {"modules", "--modules"},
                                                                 {"blocks", "--blocks"},
                                                                 {"hidden", "--hidden"},
                                                                 {"clamp", "--clamp"},
                                                                 {"channels", "--channels"},
                                                                 {"long_branches", "--no-long-branches"}};
    for (const auto& [field, option] : fields)
      if (message.rfind(field, 0) == 0) throw CLI::ValidationError(option, message);
    throw CLI::ValidationError("model options", message);
  }
}

void add_train_options(CLI::App& cmd, TrainOptions& t) {
  cmd.add_option("--epochs", t.epochs, "Training epochs (paper: 300 MVTec, 60 MTD)")
      ->check(int_range(1, 100000))
      ->capture_default_str();
  cmd.add_option("--batch-size", t.batch_size, "Batch size")->check(int_range(1, 4096))->capture_default_str();
  cmd.add_option("--lr", t.lr, "Adam learning rate")->check(finite_range(0, 10, true))->capture_default_str();
  cmd.add_option("--adam-eps", t.adam_eps, "Adam epsilon")->check(finite_range(0, 1, true))->capture_default_str();
  cmd.add_option("--weight-decay", t.weight_decay, "Adam L2 weight decay")
      ->check(finite_range(0, 1))
      ->capture_default_str();
  cmd.add_option("--max-grad-norm", t.max_grad_norm, "Gradient clipping (global norm)")
      ->check(finite_range(0, 1e6, true))
      ->capture_default_str();
  cmd.add_option("--seed", t.seed, "Seed of initialisation and shuffling")->check(seed_range())->capture_default_str();
  cmd.add_option("--checkpoint-every", t.checkpoint_every, "Write the checkpoint every N epochs")
      ->check(int_range(1, 100000))
      ->capture_default_str();
  cmd.add_flag("--resume", t.resume, "Continue from the checkpoint in --out");
}

void add_extract_options(CLI::App& cmd, ExtractArgs& e) {
  cmd.add_option("--dataset", e.dataset,
                 "KIND:PATH with KIND mvtec, mtd, dagm, folder (a folder) or csv (a labels file: docs/usage.md)")
      ->required();
  cmd.add_option("--backbone", e.spec.backbone.name,
                 "Backbone (efficientnet-b0..b7, efficientnet-lite0..4); auto: the best one whose pretrained weights "
                 "are installed (Lite4 .. Lite0, then B0 .. B7)")
      ->capture_default_str();
  cmd.add_option("--layer", e.spec.backbone.layer, "Feature block (default: the backbone's, B5: 35 as CS-Flow)")
      ->check(int_range(0, 100));
  cmd.add_option("--weights", e.weights,
                 "Backbone weight file; 'auto': the converted pretrained file in $VALIDFLOW_WEIGHTS_DIR or "
                 "~/.cache/validflow/weights (refused when it is missing); 'none': random weights (far weaker)")
      ->capture_default_str();
  cmd.add_option("--image-size", e.spec.backbone.image_size, "Input size of scale 0 (scales halve)")
      ->check(int_range(32, features::BackboneSpec::max_image_size))
      ->capture_default_str();
  cmd.add_option("--extract-batch-size", e.batch_size, "Images per extraction batch")
      ->check(int_range(1, 1024))
      ->capture_default_str();
  cmd.add_flag("--fp16", e.spec.fp16, "Store the features in float16");
  cmd.add_flag("--skip-bad-images", e.skip_bad_images, "Skip unreadable images (listed) instead of failing");
  cmd.add_option("--split-seed", e.split_seed, "Seed of the train/test split of good images (mtd, csv)")
      ->check(seed_range())
      ->capture_default_str();
  cmd.add_option("--test-fraction", e.test_fraction,
                 "Share of the good images tested (mtd: the paper's 1/5; csv rows without a split)")
      ->check(finite_range(0.05, 0.9))
      ->capture_default_str();
  cmd.add_option("--label-cutoff", e.label_cutoff, "csv: a numeric label (defect probability) >= this is defective")
      ->check(finite_range(0, 1, true))
      ->capture_default_str();
  cmd.add_option("--holdout", e.holdout_fraction,
                 "Share of the good training images kept out of training, for the threshold at a target "
                 "false-positive rate (0: every image trains, as the paper)")
      ->check(finite_range(0, 0.5))
      ->capture_default_str();
  cmd.add_option("--holdout-seed", e.holdout_seed, "Seed of the held-out choice")
      ->check(seed_range())
      ->capture_default_str();
}

/// Turns the error of a run into one line on stderr and an exit code (docs/reliability.md), by the library's one
/// classification (util/error.hpp): a diverged training is 5, anything the user can fix (input, config, file,
/// unsupported) is 3, a bug is 1.
int report_error(const std::exception& e, bool debug) {
  std::string message = error_message(e);  // one line: LibTorch's C++ trace is dropped
  int code = kExitBadInput;
  if (dynamic_cast<const TrainingDiverged*>(&e)) {
    code = kExitDiverged;
  } else if (dynamic_cast<const std::bad_alloc*>(&e)) {
    message = "out of memory (try a smaller --batch-size or --extract-batch-size)";
  } else if (error_kind(e) == ErrorKind::internal) {
    code = kExitInternal;
    message = "internal error (please report it): " + message;
  }
  std::cerr << "error: " << message << "\n";
  if (!debug && code == kExitInternal) std::cerr << "       (run again with --debug for details)\n";
  if (debug) std::cerr << "debug: " << e.what() << "\n";
  return code;
}

/// Fault injection for the interrupt tests (tests/cli/bad_inputs.py), never set in normal use:
/// VALIDFLOW_FAULT_KILL=NAME:N kills this process with SIGKILL (as `kill -9` would) when the N-th atomic write
/// of a file whose name starts with NAME has its bytes on disk, just before the rename.
void install_fault_injection() {
  const char* spec = std::getenv("VALIDFLOW_FAULT_KILL");
  if (!spec) return;
  const std::string text(spec);
  const auto colon = text.rfind(':');
  const std::string name = text.substr(0, colon);
  const long nth = colon == std::string::npos ? 1 : std::atol(text.c_str() + colon + 1);
  auto count = std::make_shared<long>(0);
  io::atomic_write_hook() = [name, nth, count](const std::string& target, const std::string&) {
    if (std::filesystem::path(target).filename().string().rfind(name, 0) == 0 && ++*count == nth)
      ::kill(::getpid(), SIGKILL);
  };
}

struct InfoArgs {
  int64_t map_size = kDefaultPreset.image_size / 32, image_size = kDefaultPreset.image_size, layer = -1;
  std::string backbone;
  bool json = false;
};

struct CheckArgs {
  std::string golden_file;
  double tolerance = 1e-5;
};

struct DemoArgs {
  std::string out = "validflow-demo";
  int64_t epochs = 40;
};

CLI::App* add_info_command(CLI::App& app, FlowConfig& config, InfoArgs& a, ModelFlags& model_flags) {
  auto* info = app.add_subcommand("info", "Architecture, exact parameter count and GFLOPs of a flow or a backbone");
  model_flags = add_model_options(*info, config);
  info->add_option("--channels", config.channels, "Feature channels per scale")
      ->check(int_range(2, FlowConfig::max_width))
      ->capture_default_str();
  info->add_option("--map-size", a.map_size, "Finest feature map size (384 px: 12, 768 px: 24)")
      ->check(int_range(1, 1024))
      ->capture_default_str();
  info->add_option("--backbone", a.backbone, "Show a backbone instead (efficientnet-b0..b7, efficientnet-lite0..4)");
  info->add_option("--layer", a.layer, "Backbone feature block (default: the backbone's)")->check(int_range(0, 100));
  info->add_option("--image-size", a.image_size, "Backbone input size")
      ->check(int_range(32, features::BackboneSpec::max_image_size))
      ->capture_default_str();
  info->add_flag("--json", a.json, "Print JSON");
  return info;
}

CLI::App* add_check_command(CLI::App& app, CheckArgs& a) {
  auto* check = app.add_subcommand("check-csflow", "Compare the C++ CS-Flow with official outputs (golden file)");
  check
      ->add_option("file", a.golden_file,
                   "Golden file (torch.save dict: official weights, inputs and outputs; docs/models.md)")
      ->required();
  check->add_option("--tolerance", a.tolerance, "Relative tolerance in float32 (float64: min(tol, 1e-10))")
      ->check(finite_range(0, 1))
      ->capture_default_str();
  return check;
}

CLI::App* add_eval_command(CLI::App& app, std::string& out, EvalOptions& options, std::string& precision_name) {
  auto* evl = app.add_subcommand("eval", "Score the test set; writes OUT/report/ (metrics, plots, heatmaps)");
  evl->add_option("--out", out, "Folder with features.pt and checkpoint.pt")
      ->check(kNonEmptyPath)
      ->capture_default_str();
  evl->add_option("--heatmaps", options.heatmaps_per_group, "Heatmaps of the most and of the least anomalous images")
      ->check(int_range(0, 1000))
      ->capture_default_str();
  evl->add_option("--map-sigma", options.map_sigma, "Gaussian smoothing of the anomaly maps (input pixels, as export)")
      ->check(finite_range(0, 64))
      ->capture_default_str();
  evl->add_option("--precision", precision_name, "Flow inference precision: fp32, bf16 (report in OUT/report-bf16)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  return evl;
}

CLI::App* add_export_command(CLI::App& app, std::string& out, ExportArgs& a) {
  auto* exp = app.add_subcommand("export", "Write a trained run (OUT) as one self-contained model file");
  exp->add_option("--out", out, "The run folder (features.pt, checkpoint.pt)")
      ->check(kNonEmptyPath)
      ->capture_default_str();
  exp->add_option("--to", a.to, "The model file to write (e.g. model.vfm)")->required()->check(kNonEmptyPath);
  exp->add_option("--threshold-from", a.threshold_from,
                  "auto: F1-optimal when the test set has defects, else a target false-positive rate; f1; fpr")
      ->check(CLI::IsMember({"auto", "f1", "fpr"}))
      ->capture_default_str();
  exp->add_option("--target-fpr", a.target_fpr, "False-positive rate of the fpr threshold")
      ->check(finite_range(0, 0.5))
      ->capture_default_str();
  exp->add_option("--map-sigma", a.map_sigma, "Gaussian smoothing of the anomaly maps (input pixels)")
      ->check(finite_range(0, 64))
      ->capture_default_str();
  auto* triton_repo = exp->add_option("--triton", a.triton_repository,
                                      "Also write a Triton model repository entry REPO/NAME (docs/serving.md)");
  exp->add_option("--name", a.triton_name, "Triton model name (letters, digits, _ - .)")
      ->check(CLI::Validator([](std::string& name) { return triton_model_name_problem(name); }, "NAME"))
      ->needs(triton_repo)
      ->capture_default_str();
  exp->add_option("--triton-max-batch-size", a.triton_max_batch_size, "Triton: images per execution")
      ->check(int_range(1, 256))
      ->needs(triton_repo)
      ->capture_default_str();
  exp->add_option("--triton-instances", a.triton_instances, "Triton: model instances (CPU)")
      ->check(int_range(1, 64))
      ->needs(triton_repo)
      ->capture_default_str();
  exp->add_option("--triton-threads", a.triton_threads,
                  "Triton: LibTorch threads per instance (0: the server's --backend-config or LibTorch's default)")
      ->check(int_range(0, 1024))
      ->needs(triton_repo)
      ->capture_default_str();
  exp->add_flag("!--no-triton-warmup", a.triton_warmup,
                "Triton: no model_warmup (by default each instance scores a sample at load, so the first request "
                "does not pay the warm-up)")
      ->needs(triton_repo);
  return exp;
}

/// "" for cpu, cuda and cuda:N; otherwise what is wrong (a CLI11 validator).
std::string device_problem(const std::string& d) {
  if (d == "cpu" || d == "cuda" ||
      (d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() < 9 &&
       d.find_first_not_of("0123456789", 5) == std::string::npos))
    return "";
  return "expected cpu, cuda or cuda:N, got '" + d + "'";
}

CLI::App* add_predict_command(CLI::App& app, PredictArgs& a) {
  auto* pred = app.add_subcommand("predict", "Score new images with a model file");
  pred->add_option("--model", a.model, "Model file (validflow export)")->required();
  pred->add_option("paths", a.paths, "Image files or folders of images (searched recursively)")->required();
  pred->add_option("--out", a.out,
                   "Folder for predictions.csv, predictions.json and heatmaps/ (new, or one predict wrote: it is "
                   "replaced as a whole)")
      ->check(kNonEmptyPath);
  pred->add_option("--threshold", a.threshold, "Image threshold (raw score); default: the model file's")
      ->check(finite_range(-1e30, 1e30));
  pred->add_option("--pixel-threshold", a.pixel_threshold, "Pixel threshold; default: the model file's")
      ->check(finite_range(-1e30, 1e30));
  pred->add_flag("--heatmaps", a.heatmaps, "Write an overlay PNG per image (needs --out)");
  pred->add_option("--batch-size", a.batch_size, "Images per batch")->check(int_range(1, 256))->capture_default_str();
  pred->add_option("--precision", a.precision,
                   "fp32, or bf16 where the device runs it natively and a timed probe at load finds it faster")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  pred->add_option("--device", a.device, "cpu or cuda (cuda:N)")->check(device_problem)->capture_default_str();
  pred->add_option("--max-image-pixels", a.max_image_pixels,
                   "Refuse images with more pixels (checked from the file's header, before decoding)")
      ->check(int_range(1, int64_t{1} << 34))
      ->capture_default_str();
  pred->add_option("--max-input-size", a.max_input_size, "Refuse model files whose input size (px) is larger")
      ->check(int_range(1, features::BackboneSpec::max_image_size))
      ->capture_default_str();
  return pred;
}

CLI::App* add_demo_command(CLI::App& app, DemoArgs& a) {
  auto* demo = app.add_subcommand("demo", "Synthetic defects -> extract -> train -> eval -> export (no download)");
  demo->add_option("--out", a.out, "Output folder")->check(kNonEmptyPath)->capture_default_str();
  demo->add_option("--epochs", a.epochs, "Training epochs")->check(int_range(1, 100000))->capture_default_str();
  return demo;
}

/// Every command's arguments and the subcommand that owns them: defined, checked after parsing, then run.
struct Commands {
  FlowConfig config;
  TrainOptions train;
  EvalOptions eval_options;
  std::string precision_name = "fp32";
  ExtractArgs extract;
  ExportArgs export_args;
  PredictArgs predict;
  InfoArgs info_args;
  CheckArgs check_args;
  DemoArgs demo_args;
  std::string out = "validflow-out";
  bool paper = false;
  std::vector<std::pair<CLI::App*, ModelFlags>> model_flags;
  CLI::App *info = nullptr, *check = nullptr, *ext = nullptr, *trn = nullptr, *evl = nullptr, *exp = nullptr,
           *pred = nullptr, *run = nullptr, *demo = nullptr;

  Commands() {
    extract.spec.backbone.name = kDefaultPreset.backbone;
    extract.spec.backbone.image_size = kDefaultPreset.image_size;
    config.hidden = kDefaultPreset.hidden;
    config.modules = kDefaultPreset.modules;
    train.epochs = kDefaultPreset.epochs;
    train.lr = kDefaultPreset.lr;
  }

  void define(CLI::App& app) {
    ModelFlags info_flags;
    info = add_info_command(app, config, info_args, info_flags);
    model_flags.emplace_back(info, info_flags);
    check = add_check_command(app, check_args);
    info->add_flag("--paper", paper, "Describe the paper's flow (hidden 1024, n = 3)");

    ext = app.add_subcommand("extract", "Extract the 3-scale features of a dataset into OUT/features.pt");
    add_extract_options(*ext, extract);
    ext->add_option("--out", out, "Output folder")->check(kNonEmptyPath)->capture_default_str();
    ext->add_flag("--paper", paper, kPaperHelp);

    trn = app.add_subcommand("train", "Train a flow on OUT/features.pt; writes OUT/checkpoint.pt");
    model_flags.emplace_back(trn, add_model_options(*trn, config));
    add_train_options(*trn, train);
    trn->add_option("--out", out, "Folder with features.pt; receives checkpoint.pt")
        ->check(kNonEmptyPath)
        ->capture_default_str();
    trn->add_flag("--paper", paper, kPaperHelp);

    evl = add_eval_command(app, out, eval_options, precision_name);
    exp = add_export_command(app, out, export_args);
    pred = add_predict_command(app, predict);

    run = app.add_subcommand("run", "extract + train + eval");
    add_extract_options(*run, extract);
    model_flags.emplace_back(run, add_model_options(*run, config));
    add_train_options(*run, train);
    run->add_option("--out", out, "Output folder")->check(kNonEmptyPath)->capture_default_str();
    run->add_flag("--paper", paper, kPaperHelp);

    demo = add_demo_command(app, demo_args);
  }

  /// --paper: the paper's values for every option of it that was not given.
  void apply_paper_preset(const CLI::App& sub) {
    const auto given = [&](const char* name) {
      const auto* option = sub.get_option_no_throw(name);
      return option != nullptr && option->count() > 0;
    };
    if (!given("--backbone")) extract.spec.backbone.name = kPaperPreset.backbone;
    if (!given("--image-size")) extract.spec.backbone.image_size = kPaperPreset.image_size;
    if (!given("--hidden")) config.hidden = kPaperPreset.hidden;
    if (!given("--modules")) config.modules = kPaperPreset.modules;
    if (!given("--epochs")) train.epochs = kPaperPreset.epochs;
    if (!given("--lr")) train.lr = kPaperPreset.lr;
    if (!given("--image-size")) info_args.image_size = kPaperPreset.image_size;
    if (!given("--map-size")) info_args.map_size = kPaperPreset.image_size / 32;
  }

  /// What CLI11's per-option checks cannot see: options that only make sense together; applies --paper.
  void check_parsed() {
    for (auto* sub : {info, ext, trn, run})
      if (*sub && paper) apply_paper_preset(*sub);
    if (*ext || *run) extract.spec.backbone.name = resolve_backbone_name(extract.spec.backbone.name);
    for (const auto& [owner, flags] : model_flags)
      if (*owner) check_model_flags(flags, config, /*channels_from_features=*/owner != info);
    if (*ext || *run) {  // backbone, block and image size together (stride), without building anything
      try {
        const auto& b = extract.spec.backbone;
        (void)features::backbone_info(b.name, b.layer, b.image_size, b.scales, b.padding);
      } catch (const features::FeatureError& e) {
        std::string why = e.what();
        if (why.rfind("backbone_info: ", 0) == 0) why = why.substr(15);
        const char* option = why.rfind("image size", 0) == 0 ? "--image-size"
                             : why.rfind("layer", 0) == 0    ? "--layer"
                                                             : "--backbone";
        throw CLI::ValidationError(option, why);
      }
    }
    if (*pred && predict.heatmaps && predict.out.empty())
      throw CLI::ValidationError("--heatmaps", "needs --out (the folder the heatmaps go to)");
  }

  /// Runs the parsed subcommand; returns the exit code.
  int run_parsed() {
    eval_options.precision = parse_precision(precision_name);
    if (*info)
      return run_info(config, info_args.map_size, info_args.backbone, info_args.layer, info_args.image_size,
                      info_args.json);
    if (*check) return run_check_csflow(check_args.golden_file, check_args.tolerance);
    if (*ext) run_extract(extract, out);
    if (*trn) run_train(config, train, load_feature_cache(features_path(out)), out);
    if (*evl) {
      const auto checkpoint = load_checkpoint(checkpoint_path(out));  // in this order: a deterministic message
      run_eval(checkpoint, load_feature_cache(features_path(out)), out, eval_options);
    }
    if (*exp) run_export(out, export_args);
    if (*pred) return run_predict(predict);
    if (*run) {
      const auto cache = run_extract(extract, out);
      run_eval(run_train(config, train, cache, out), cache, out, eval_options);
    }
    if (*demo) return run_demo(demo_args.out, demo_args.epochs);
    return kExitOk;
  }
};

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"validflow: unsupervised defect detection with normalizing flows (ValidFlow, CS-Flow)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads, --debug) may follow the subcommand
  app.set_version_flag("--version", std::string("validflow ") + version_string);
  // Usage errors in the one documented format (docs/reliability.md): `error: ...`, one line, then where to look.
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::string command;
    if (failed && failed->get_parent()) command = failed->get_name() + " ";
    if (failed && !failed->get_parent())  // an error found after parsing: name the command that was given
      for (const auto* sub : failed->get_subcommands()) command = sub->get_name() + " ";
    return "error: " + what + "\n       (see validflow " + command + "--help)\n";
  });
  Commands commands;
  commands.define(app);
  int64_t threads = 0;
  bool debug = false;
  app.add_option("--threads", threads, "CPU threads (default: $OMP_NUM_THREADS, else every core)")
      ->check(int_range(1, kMaxThreads));
  app.add_flag("--debug", debug, "On an error, print LibTorch's full message (with its C++ trace)");

  // CLI11 would answer an unknown first word with "A subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const auto* sub : std::as_const(app).get_subcommands([](const CLI::App*) { return true; })) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found = found || sub->get_name() == argv[1];
    }
    if (!found) {
      std::cerr << "error: unknown command '" << argv[1] << "' (commands: " << known << "; see --help)\n";
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
    commands.check_parsed();
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  // Threads (Debian's LibTorch starts with one unless OMP_NUM_THREADS is set), OpenBLAS single-threaded, glibc
  // malloc keeping large blocks, AVX-512 kernels: runtime.hpp, measured in docs/benchmarks.md.
  CpuRuntimeOptions runtime;
  runtime.threads = static_cast<int>(threads);
  const auto runtime_report = configure_cpu_runtime(runtime);
  if (!*commands.info && !*commands.check) std::cerr << runtime_report.to_string() << "\n";

  install_fault_injection();
  try {
    return commands.run_parsed();
  } catch (const std::exception& e) {
    return report_error(e, debug);
  }
}

}  // namespace validflow::app

int main(int argc, char** argv) {
  // OpenMP threads sleep between parallel regions instead of spinning, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is
  // set: on a shared machine spinning made extraction 7x slower (runtime.hpp, docs/benchmarks.md). libgomp reads
  // the variable before main(), so this re-executes the program once with it set.
  validflow::reexec_with_omp_wait_policy("PASSIVE", argv);
  return validflow::app::run_cli(argc, argv);
}
