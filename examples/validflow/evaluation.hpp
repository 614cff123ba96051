#pragma once
// Evaluation of a trained flow on the cached test features: image scores, AUROC (overall and per defect
// type), ROC curve, F1-optimal threshold, pixel AUROC and AUPRO where masks exist, and the report folder:
// metrics.json, scores.csv, roc.png, histogram.png, heatmaps/ (most and least anomalous images) and index.html.
#include "feature_cache.hpp"
#include "report.hpp"
#include "training.hpp"

#include <validflow/eval/metrics.hpp>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>
#include <numeric>

namespace validflow::app {

struct EvalOptions {
  int64_t batch_size = 16;
  Precision precision = Precision::Float32;  ///< inference precision of the flow (bf16: autocast on CPU/CUDA)
  int heatmaps_per_group = 6;                ///< most and least anomalous images rendered
  int pixel_size = 256;                      ///< resolution at which maps are compared with masks (and heatmaps drawn)
  bool quiet = false;
};

/// The map of one sample, bilinearly upsampled to size x size, as a CV_32FC1 matrix.
inline cv::Mat upsampled_map(const torch::Tensor& map, int size) {
  namespace F = torch::nn::functional;
  auto up = F::interpolate(map.unsqueeze(0).unsqueeze(0), F::InterpolateFuncOptions()
                                                              .size(std::vector<int64_t>{size, size})
                                                              .mode(torch::kBilinear)
                                                              .align_corners(false))
                .squeeze()
                .contiguous();
  return cv::Mat(size, size, CV_32FC1, up.data_ptr<float>()).clone();
}

inline MetricsSummary evaluate(const AnyFlow& model, const FeatureCache& cache, const std::string& out_dir,
                               const EvalOptions& options, const nlohmann::json& extra_info = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(out_dir) / "heatmaps");
  const auto start = std::chrono::steady_clock::now();
  model.module().eval();
  const auto scored = score_features(*model, cache.test, options.batch_size, options.precision);
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& samples = cache.test_samples;
  std::vector<double> scores(samples.size());
  std::vector<int> labels;
  std::vector<std::string> types;
  for (size_t i = 0; i < samples.size(); ++i) {
    scores[i] = scored.scores[static_cast<int64_t>(i)].item<double>();
    labels.push_back(samples[i].label);
    types.push_back(samples[i].type);
  }

  MetricsSummary m;
  m.n_test = samples.size();
  m.n_defective = static_cast<size_t>(std::count(labels.begin(), labels.end(), 1));
  m.image_auroc = eval::auroc(scores, labels);
  m.image_auroc_per_type = eval::auroc_per_type(scores, labels, types);
  const auto best = eval::f1_optimal_threshold(scores, labels);
  m.threshold = best.threshold;
  m.f1 = best.f1;
  m.precision = best.precision;
  m.recall = best.recall;

  // Pixel metrics where every defective image has a mask.
  if (has_masks(samples)) {
    eval::PixelEvaluator pixels;
    ProgressBar bar(samples.size(), "pixel metrics",
                    {"img", options.quiet ? ProgressOptions::Mode::silent : ProgressOptions::Mode::automatic});
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto map = upsampled_map(scored.maps[static_cast<int64_t>(i)], options.pixel_size);
      const auto mask = load_mask(samples[i].mask_path, options.pixel_size);
      pixels.add(map.ptr<float>(), mask.ptr<uint8_t>(), options.pixel_size, options.pixel_size);
      bar.tick();
    }
    bar.finish();
    m.pixel_auroc = pixels.auroc();
    m.aupro = pixels.aupro(0.3);
  }
  m.extra = extra_info;
  m.extra["inference_precision"] = to_string(options.precision);
  m.extra["scoring_seconds"] = seconds;
  m.extra["scoring_images_per_second"] = static_cast<double>(samples.size()) / seconds;

  // Tables and plots.
  std::vector<ScoreRow> rows;
  for (size_t i = 0; i < samples.size(); ++i)
    rows.push_back({samples[i].path, samples[i].label, samples[i].type, scores[i]});
  write_scores_csv((fs::path(out_dir) / "scores.csv").string(), rows);
  std::vector<RocSeries> curves;
  const auto roc = eval::roc_curve(scores, labels);
  curves.push_back({"all defects", roc.fpr, roc.tpr, m.image_auroc});
  for (const auto& [type, value] : m.image_auroc_per_type) {
    std::vector<double> s;
    std::vector<int> l;
    for (size_t i = 0; i < samples.size(); ++i) {
      if (labels[i] == 0 || types[i] == type) {
        s.push_back(scores[i]);
        l.push_back(labels[i]);
      }
    }
    const auto r = eval::roc_curve(s, l);
    curves.push_back({type, r.fpr, r.tpr, value});
  }
  write_roc_png((fs::path(out_dir) / "roc.png").string(), curves);
  write_histogram_png((fs::path(out_dir) / "histogram.png").string(), scores, labels, m.threshold);
  write_metrics_json((fs::path(out_dir) / "metrics.json").string(), m);

  // Heatmaps of the most and least anomalous images, on one colour scale.
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  OverlayOptions overlay;
  overlay.side_by_side = true;
  overlay.vmin = 0;
  overlay.vmax = scored.maps.max().item<double>();
  ReportPage page;
  page.metrics = m;
  const int k = std::min<int>(options.heatmaps_per_group, static_cast<int>(samples.size()) / 2);
  auto render = [&](size_t i, const std::string& group, int rank) {
    const auto& s = samples[i];
    const std::string file = "heatmaps/" + std::string(group == "most anomalous" ? "most_" : "least_") +
                             std::to_string(rank) + "_" + s.type + ".png";
    const auto image = load_image(s.path, options.pixel_size);
    const auto map = upsampled_map(scored.maps[static_cast<int64_t>(i)], options.pixel_size);
    const auto mask = s.mask_path.empty() ? cv::Mat() : load_mask(s.mask_path, options.pixel_size);
    write_heatmap_png((fs::path(out_dir) / file).string(), image, map, mask, overlay);
    page.heatmaps.push_back({file, s.path, s.label, s.type, scores[i], group});
  };
  for (int r = 0; r < k; ++r) render(order[static_cast<size_t>(r)], "most anomalous", r + 1);
  for (int r = 0; r < k; ++r) render(order[order.size() - 1 - static_cast<size_t>(r)], "least anomalous", r + 1);
  for (const auto& [key, value] : extra_info.items())
    page.info.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
  write_index_html((fs::path(out_dir) / "index.html").string(), page);
  return m;
}

}  // namespace validflow::app
