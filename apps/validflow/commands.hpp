#pragma once
// The subcommands of the `validflow` program, each a function over parsed, validated options (cli.cpp parses
// and validates them; docs/usage.md documents them).
//
//   extract   dataset -> OUT/features.pt (the features of every train, test and held-out image)
//   train     OUT/features.pt -> OUT/checkpoint.pt, OUT/training.json
//   eval      -> OUT/report/ (metrics, ROC, histogram, heatmaps, index.html)
//   export    OUT -> one model file (and optionally a Triton model repository)
//   predict   model file + images -> decisions, scores, maps (predictions.csv/.json, heatmaps)
//   run       extract + train + eval;  demo: a generated dataset -> run -> export -> the predict command
//   info, check-csflow
#include "evaluation.hpp"
#include "feature_cache.hpp"
#include "training.hpp"

#include <validflow/validflow.hpp>

#include <optional>
#include <string>
#include <vector>

namespace validflow::app {

/// Exit codes of the program (docs/reliability.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,  ///< a bug: an unexpected error (the message says so)
  kExitUsage = 2,     ///< bad command line: unknown option, value out of range, missing argument
  kExitBadInput = 3,  ///< bad data or files: a dataset, image, checkpoint, cache or model file that cannot be used
  kExitSkipped = 4,   ///< predict: finished, but some images could not be read (listed, skipped)
  kExitDiverged = 5,  ///< train: the loss became non-finite; the last good checkpoint was kept
  kExitInvalid = 6,   ///< predict: some images got a score that is not finite (listed, reported anomalous)
};

struct ExtractArgs {
  std::string dataset;
  ExtractionSpec spec;
  std::string weights = "auto";  ///< a path, "auto" (the converted pretrained file if present) or "none"
  int64_t batch_size = 8;
  bool skip_bad_images = false;
  uint64_t split_seed = 0;
  double test_fraction = 0.2;  ///< mtd, csv: share of the good images tested
  double label_cutoff = 0.5;   ///< csv: a defect probability >= this is defective
  double holdout_fraction = 0;
  uint64_t holdout_seed = 0;
};

struct ExportArgs {
  std::string to;                       ///< the model file to write
  std::string threshold_from = "auto";  ///< auto | f1 | fpr
  double target_fpr = 0.01;
  double map_sigma = 0;
  std::string triton_repository;  ///< also write a Triton model repository here
  std::string triton_name = "validflow";
  int64_t triton_max_batch_size = 8;
  int64_t triton_instances = 1;
  int64_t triton_threads = 0;  ///< LibTorch threads per instance (config parameter intra_op_threads); 0: not set
  bool triton_warmup = true;   ///< model_warmup with a sample at the model's input size
};
/// Why `name` cannot be a Triton model name ("" when it can; backends/triton/model_repository.hpp).
std::string triton_model_name_problem(const std::string& name);

struct PredictArgs {
  std::string model;
  std::vector<std::string> paths;
  std::string out;  ///< empty: print only
  std::optional<double> threshold, pixel_threshold;
  bool heatmaps = false;
  int64_t batch_size = 8;
  std::string precision = "fp32";
  std::string device = "cpu";
  int64_t max_image_pixels = kDefaultMaxImagePixels;  ///< per image, checked from the file's header
  int64_t max_input_size = kDefaultMaxInputSize;      ///< of the model file
};

/// `--backbone auto`: the first of auto_backbone_order() whose converted pretrained file is installed (the best Lite
/// first: ImageNet accuracy at a fraction of B5's cost, so the default trains in minutes); "" when none is.
const std::vector<std::string>& auto_backbone_order();
std::string auto_backbone();
/// `name`, or for "auto" auto_backbone() (Lite0 when none is installed: its missing weights are then refused).
std::string resolve_backbone_name(const std::string& name);

/// Paths of a run folder.
std::string features_path(const std::string& out);
std::string checkpoint_path(const std::string& out);

FeatureCache run_extract(ExtractArgs e, const std::string& out);
/// Throws TrainingDiverged (exit 5) when the loss becomes non-finite.
Checkpoint run_train(FlowConfig config, const TrainOptions& t, const FeatureCache& cache, const std::string& out);
MetricsSummary run_eval(const Checkpoint& checkpoint, const FeatureCache& cache, const std::string& out,
                        const EvalOptions& options);
/// Writes the model file; returns its path.
std::string run_export(const std::string& out, const ExportArgs& e);
/// Returns kExitOk, kExitSkipped or kExitInvalid.
int run_predict(const PredictArgs& p);
int run_demo(const std::string& out, int64_t epochs);
int run_info(const FlowConfig& config, int64_t map_size, const std::string& backbone, int64_t layer, int64_t image_size,
             bool json);
int run_check_csflow(const std::string& file, double tolerance);

}  // namespace validflow::app
