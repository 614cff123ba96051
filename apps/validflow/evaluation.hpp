#pragma once
// Evaluation of a trained flow on the cached test features, in four steps:
//   score_test_set   image scores and anomaly maps (the library's score_features and maps)
//   compute_metrics  image AUROC (overall and per defect type), F1-optimal threshold, pixel AUROC and AUPRO
//   write_tables_and_plots  metrics.json, scores.csv, roc.png, histogram.png
//   write_heatmaps   the most and least anomalous images with their maps, on one colour scale
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
  int pixel_size = 256;                      ///< resolution at which maps are compared with masks (and drawn)
  double map_sigma = 0;                      ///< Gaussian smoothing of the maps (pixels at pixel_size)
  bool quiet = false;
};

struct TestScores {
  std::vector<double> scores;  ///< per test image
  torch::Tensor maps;          ///< [N, pixel_size, pixel_size]: the finest-scale maps at the comparison size
  double seconds = 0;          ///< scoring time (the flow alone)
};

/// A CV_32FC1 view-copy of a [H, W] float map.
cv::Mat to_mat(const torch::Tensor& map);

TestScores score_test_set(const AnyFlow& model, const TensorList& features, const EvalOptions& options);

MetricsSummary compute_metrics(const std::vector<Sample>& samples, const TestScores& t, const EvalOptions& options);

void write_tables_and_plots(const std::string& out_dir, const std::vector<Sample>& samples, const TestScores& t,
                            const MetricsSummary& m);

/// Heatmaps of the `per_group` most and least anomalous images, on one colour scale (0 .. the largest map value).
std::vector<HeatmapEntry> write_heatmaps(const std::string& out_dir, const std::vector<Sample>& samples,
                                         const TestScores& t, const EvalOptions& options);

MetricsSummary evaluate(const AnyFlow& model, const FeatureCache& cache, const std::string& out_dir,
                        const EvalOptions& options, const nlohmann::json& extra_info = {});

}  // namespace validflow::app
