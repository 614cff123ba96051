#pragma once
// Evaluation of a trained flow on the cached test features, in four steps:
//   score_test_set   image scores and anomaly maps (the library's score_features and maps)
//   compute_metrics  image AUROC (overall and per defect type), F1-optimal threshold, pixel AUROC and AUPRO
//   write_tables_and_plots  metrics.json, scores.csv, roc.png, histogram.png
//   choose_decision_rule  image and pixel thresholds with their normalisation (what export writes in the model file)
//   write_heatmaps   the most and least anomalous images with their maps, coloured on the decision rule's map scale
// and evaluate() runs them and writes index.html. Files are written atomically; nothing is written before the
// scores exist.
#include "feature_cache.hpp"
#include "report.hpp"
#include "training.hpp"

#include <validflow/eval/metrics.hpp>
#include <validflow/models/maps.hpp>
#include <validflow/models/scoring.hpp>

#include <algorithm>
#include <filesystem>
#include <numeric>

namespace validflow::app {

struct EvalOptions {
  int64_t batch_size = 16;
  Precision precision = Precision::Float32;  ///< inference precision of the flow (bf16: autocast on CPU/CUDA)
  int heatmaps_per_group = 6;                ///< most and least anomalous images rendered
  /// Side of the maps: the model's input size (run_eval sets it from the features). Masks are resized to it
  /// (nearest) for the pixel metrics, which are therefore at the input resolution, as predict's maps are made.
  int pixel_size = 256;
  double map_sigma = 0;  ///< Gaussian smoothing of the maps, in input pixels (as export and the model file)
  bool quiet = false;
};

struct TestScores {
  std::vector<double> scores;  ///< per test image
  torch::Tensor maps;          ///< [N, pixel_size, pixel_size]: the finest-scale maps at the input size, smoothed
  double seconds = 0;          ///< scoring time (the flow alone)
};

/// A CV_32FC1 view-copy of a [H, W] float map.
cv::Mat to_mat(const torch::Tensor& map);

TestScores score_test_set(const AnyFlow& model, const TensorList& features, const EvalOptions& options);

MetricsSummary compute_metrics(const std::vector<Sample>& samples, const TestScores& t, const EvalOptions& options);

void write_tables_and_plots(const std::string& out_dir, const std::vector<Sample>& samples, const TestScores& t,
                            const MetricsSummary& m);

/// How export (and eval's report) choose thresholds: auto (F1-optimal when the test set has defects, else the
/// target false-positive rate), f1 or fpr.
struct ThresholdOptions {
  std::string from = "auto";
  double target_fpr = 0.01;
};

/// The decision rule of a run (detect/decision.hpp): image and pixel thresholds, their ranges and robust anchors.
/// `holdout` may be empty (no held-out images). Throws DatasetError when there is nothing to set a threshold on.
DecisionRule choose_decision_rule(const std::vector<Sample>& test_samples, const TestScores& test,
                                  const TestScores& holdout, const ThresholdOptions& o, double map_sigma);

/// Heatmaps of the `per_group` most and least anomalous images, coloured on `rule`'s map scale (detect/heatmap.hpp:
/// 0.5 = the pixel threshold), each with its legend.
std::vector<HeatmapEntry> write_heatmaps(const std::string& out_dir, const std::vector<Sample>& samples,
                                         const TestScores& t, const EvalOptions& options, const DecisionRule& rule);

MetricsSummary evaluate(const AnyFlow& model, const FeatureCache& cache, const std::string& out_dir,
                        const EvalOptions& options, const nlohmann::json& extra_info = {});

}  // namespace validflow::app
