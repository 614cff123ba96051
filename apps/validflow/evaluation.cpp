#include "evaluation.hpp"

#include <validflow/detect/tensor_detector.hpp>

#include <iomanip>
#include <iostream>
#include <sstream>
#include <tuple>

namespace validflow::app {

cv::Mat to_mat(const torch::Tensor& map) {
  const auto m = map.to(torch::kFloat32).contiguous();
  return cv::Mat(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32FC1, m.data_ptr<float>()).clone();
}

namespace {

/// A threshold and where it came from, with the values it was chosen on (for the normalisation's anchors).
struct ThresholdChoice {
  double threshold = 0;
  std::string source;
  std::vector<double> values;
};

/// F1-optimal on labelled values, or the target false-positive rate on good values (see detect/decision.hpp).
ThresholdChoice choose_threshold(const ThresholdOptions& o, const std::vector<double>& labelled,
                                 const std::vector<int>& labels, const std::vector<double>& holdout_good,
                                 const std::string& what) {
  const bool has_defects = std::count(labels.begin(), labels.end(), 1) > 0;
  ThresholdChoice c;
  std::ostringstream source;
  if (o.from == "f1" || (o.from == "auto" && has_defects)) {
    if (!has_defects)
      throw DatasetError("--threshold-from f1 needs defective test " + what + "; this run's test set has none");
    const auto best = eval::f1_optimal_threshold(labelled, labels);
    c.threshold = best.threshold;
    source << "F1-optimal on the labelled test set (" << labelled.size() << " " << what << ", F1 " << std::fixed
           << std::setprecision(4) << best.f1 << ")";
    c.values = labelled;
  } else {
    std::vector<double> good = holdout_good;
    std::string from = "held-out good training " + what;
    if (good.empty()) {
      for (size_t i = 0; i < labels.size(); ++i)
        if (labels[i] == 0) good.push_back(labelled[i]);
      from = "good test " + what + " (no images were held out: extract with --holdout)";
    }
    if (good.empty()) throw DatasetError("no good " + what + " to set a threshold on");
    c.threshold = threshold_at_false_positive_rate(good, o.target_fpr);
    source << "target false-positive rate " << o.target_fpr << " on " << good.size() << " " << from;
    c.values = std::move(good);
  }
  c.source = source.str();
  return c;
}

/// Pixel values of maps [N, S, S] (every `stride`-th pixel of each image) with their mask labels when `samples`.
void sample_pixels(const torch::Tensor& maps, const std::vector<Sample>* samples, int64_t stride,
                   std::vector<double>& values, std::vector<int>& labels) {
  const int64_t size = maps.size(1);
  for (int64_t i = 0; i < maps.size(0); ++i) {
    const auto flat = maps[i].reshape({-1}).to(torch::kFloat64).contiguous();
    const double* v = flat.data_ptr<double>();
    cv::Mat mask;
    if (samples) mask = load_mask((*samples)[static_cast<size_t>(i)].mask_path, static_cast<int>(size));
    for (int64_t p = 0; p < flat.numel(); p += stride) {
      values.push_back(v[p]);
      labels.push_back(samples ? mask.data[p] : 0);
    }
  }
}

/// The pixel threshold, on a sample of pixels of the maps (at most ~4 M values): labelled by the masks when the test
/// set has them, else at the target false-positive rate of good pixels (held-out images when there are any, else
/// the good test images).
ThresholdChoice choose_pixel_threshold(const ThresholdOptions& o, const std::vector<Sample>& test_samples,
                                       const TestScores& test, const TestScores& holdout) {
  const bool masks = has_masks(test_samples);
  const bool from_holdout = holdout.maps.defined() && holdout.maps.numel() > 0;
  const auto& pixel_maps = (masks || !from_holdout) ? test.maps : holdout.maps;
  const int64_t stride = std::max<int64_t>(1, pixel_maps.numel() / (int64_t{4} << 20));
  std::vector<double> pixel_values, holdout_pixels;
  std::vector<int> pixel_labels, unused;
  if (masks) sample_pixels(test.maps, &test_samples, stride, pixel_values, pixel_labels);
  if (from_holdout) {
    sample_pixels(holdout.maps, nullptr, stride, holdout_pixels, unused);
  } else if (!masks) {  // good test images only
    for (size_t i = 0; i < test_samples.size(); ++i) {
      if (test_samples[i].label != 0) continue;
      const auto one = test.maps.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
      sample_pixels(one, nullptr, stride, pixel_values, pixel_labels);
    }
  }
  ThresholdOptions pixel_options = o;
  if (!masks) pixel_options.from = "fpr";
  return choose_threshold(pixel_options, pixel_values, pixel_labels, holdout_pixels, "pixels");
}

/// Sets the range and the robust anchors (detect/decision.hpp) of the values a threshold was chosen on.
void set_bounds(const ThresholdChoice& c, double& min, double& max, double& low, double& high) {
  min = *std::min_element(c.values.begin(), c.values.end());
  max = *std::max_element(c.values.begin(), c.values.end());
  if (!(max > min)) max = min + std::max(1e-12, std::abs(min) * 1e-6);
  std::tie(low, high) = robust_bounds(c.values, c.threshold);
}

}  // namespace

DecisionRule choose_decision_rule(const std::vector<Sample>& test_samples, const TestScores& test,
                                  const TestScores& holdout, const ThresholdOptions& o, double map_sigma) {
  std::vector<int> labels;
  for (const auto& s : test_samples) labels.push_back(s.label);
  const auto image = choose_threshold(o, test.scores, labels, holdout.scores, "images");
  const auto pixel = choose_pixel_threshold(o, test_samples, test, holdout);
  DecisionRule d;
  d.threshold = image.threshold;
  d.threshold_source = image.source;
  set_bounds(image, d.score_min, d.score_max, d.score_low, d.score_high);
  d.pixel_threshold = pixel.threshold;
  d.pixel_threshold_source = pixel.source;
  set_bounds(pixel, d.map_min, d.map_max, d.map_low, d.map_high);
  d.map_sigma = map_sigma;
  d.normalization = "robust";
  d.validate();
  return d;
}

TestScores score_test_set(const AnyFlow& model, const TensorList& features, const EvalOptions& options) {
  model.module().eval();
  const auto start = std::chrono::steady_clock::now();
  const auto scored = score_features(*model, features, options.batch_size, options.precision);
  TestScores t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto scores = scored.scores.to(torch::kFloat64).contiguous();
  t.scores.assign(scores.data_ptr<double>(), scores.data_ptr<double>() + scores.numel());
  for (double s : t.scores)
    if (!std::isfinite(s))
      throw std::invalid_argument(
          "the flow gave a non-finite score on the test features: its weights are not finite "
          "(a diverged training?) or the features hold extreme values");
  t.maps = maps_at_input_size(scored.maps, options.pixel_size, options.map_sigma);
  return t;
}

MetricsSummary compute_metrics(const std::vector<Sample>& samples, const TestScores& t, const EvalOptions& options) {
  std::vector<int> labels;
  std::vector<std::string> types;
  for (const auto& s : samples) {
    labels.push_back(s.label);
    types.push_back(s.type);
  }
  MetricsSummary m;
  m.n_test = samples.size();
  m.n_defective = static_cast<size_t>(std::count(labels.begin(), labels.end(), 1));
  if (m.n_defective == 0 || m.n_defective == m.n_test)
    throw DatasetError("the test set needs good and defective images for AUROC; it has " +
                       std::to_string(m.n_test - m.n_defective) + " good and " + std::to_string(m.n_defective) +
                       " defective");
  m.image_auroc = eval::auroc(t.scores, labels);
  m.image_auroc_per_type = eval::auroc_per_type(t.scores, labels, types);
  const auto best = eval::f1_optimal_threshold(t.scores, labels);
  m.threshold = best.threshold;
  m.f1 = best.f1;
  m.precision = best.precision;
  m.recall = best.recall;
  if (has_masks(samples)) {  // pixel metrics where every defective image has a mask
    eval::PixelEvaluator pixels;
    ProgressBar bar(samples.size(), "pixel metrics",
                    {"img", options.quiet ? ProgressOptions::Mode::silent : ProgressOptions::Mode::automatic});
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto map = to_mat(t.maps[static_cast<int64_t>(i)]);
      const auto mask = load_mask(samples[i].mask_path, options.pixel_size);
      pixels.add(map.ptr<float>(), mask.ptr<uint8_t>(), options.pixel_size, options.pixel_size);
      bar.tick();
    }
    bar.finish();
    m.pixel_auroc = pixels.auroc();
    m.aupro = pixels.aupro(0.3);
  }
  return m;
}

void write_tables_and_plots(const std::string& out_dir, const std::vector<Sample>& samples, const TestScores& t,
                            const MetricsSummary& m) {
  namespace fs = std::filesystem;
  std::vector<ScoreRow> rows;
  std::vector<int> labels;
  std::vector<std::string> types;
  for (size_t i = 0; i < samples.size(); ++i) {
    rows.push_back({samples[i].path, samples[i].label, samples[i].type, t.scores[i]});
    labels.push_back(samples[i].label);
    types.push_back(samples[i].type);
  }
  write_scores_csv((fs::path(out_dir) / "scores.csv").string(), rows);
  const auto roc = eval::roc_curve(t.scores, labels);
  std::vector<RocSeries> curves{{"all defects", roc.fpr, roc.tpr, m.image_auroc}};
  for (const auto& [type, curve] : eval::roc_per_type(t.scores, labels, types))
    curves.push_back({type, curve.fpr, curve.tpr, m.image_auroc_per_type.at(type)});
  write_roc_png((fs::path(out_dir) / "roc.png").string(), curves);
  write_histogram_png((fs::path(out_dir) / "histogram.png").string(), t.scores, labels, m.threshold);
  write_metrics_json((fs::path(out_dir) / "metrics.json").string(), m);
}

std::vector<HeatmapEntry> write_heatmaps(const std::string& out_dir, const std::vector<Sample>& samples,
                                         const TestScores& t, const EvalOptions& options, const DecisionRule& rule) {
  namespace fs = std::filesystem;
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return t.scores[a] > t.scores[b]; });
  const auto scale = rule.map_scale(rule.pixel_threshold);
  OverlayOptions overlay;
  overlay.side_by_side = true;
  overlay.legend = HeatmapScale{scale.low(), scale.threshold, scale.high()};
  std::vector<HeatmapEntry> entries;
  const int k = std::min<int>(options.heatmaps_per_group, static_cast<int>(samples.size()) / 2);
  auto render = [&](size_t i, const std::string& group, int rank) {
    const auto& s = samples[i];
    const std::string file = "heatmaps/" + std::string(group == "most anomalous" ? "most_" : "least_") +
                             std::to_string(rank) + "_" + s.type + ".png";
    const auto image = load_image(s.path, options.pixel_size);
    const auto mask = s.mask_path.empty() ? cv::Mat() : load_mask(s.mask_path, options.pixel_size);
    const auto normalized = normalize_map(t.maps[static_cast<int64_t>(i)], scale);
    write_heatmap_png((fs::path(out_dir) / file).string(), image, to_mat(normalized), mask, overlay);
    entries.push_back(
        {file, s.path, s.label, s.type, t.scores[i], group, rule.normalized_score(t.scores[i], rule.threshold)});
  };
  for (int r = 0; r < k; ++r) render(order[static_cast<size_t>(r)], "most anomalous", r + 1);
  for (int r = 0; r < k; ++r) render(order[order.size() - 1 - static_cast<size_t>(r)], "least anomalous", r + 1);
  return entries;
}

MetricsSummary evaluate(const AnyFlow& model, const FeatureCache& cache, const std::string& out_dir,
                        const EvalOptions& options, const nlohmann::json& extra_info) {
  const auto say = [&](const std::string& line) {
    if (!options.quiet) std::cerr << line << std::flush;
  };
  say("scoring   " + std::to_string(cache.test_samples.size()) + " test images (flow, maps at " +
      std::to_string(options.pixel_size) + " px) ... ");
  const auto t = score_test_set(model, cache.test, options);
  const auto holdout = cache.holdout.empty() ? TestScores{} : score_test_set(model, cache.holdout, options);
  say("done\nthresholds image and pixel (as export chooses them) ... ");
  const auto rule = choose_decision_rule(cache.test_samples, t, holdout, ThresholdOptions{}, options.map_sigma);
  say("done\n");
  auto m = compute_metrics(cache.test_samples, t, options);
  m.extra = extra_info;
  m.extra["inference_precision"] = to_string(options.precision);
  m.extra["map_sigma_input_pixels"] = options.map_sigma;
  m.extra["pixel_metrics_resolution"] = options.pixel_size;
  m.extra["pixel_threshold"] = rule.pixel_threshold;
  m.extra["pixel_threshold_source"] = rule.pixel_threshold_source;
  m.extra["scoring_seconds"] = t.seconds;
  m.extra["scoring_images_per_second"] = static_cast<double>(t.scores.size()) / t.seconds;
  say("report    tables, plots and heatmaps ... ");
  write_tables_and_plots(out_dir, cache.test_samples, t, m);
  ReportPage page;
  page.metrics = m;
  page.heatmaps = write_heatmaps(out_dir, cache.test_samples, t, options, rule);
  say("done\n");
  const auto scale = rule.map_scale(rule.pixel_threshold);
  page.heatmap_scale = HeatmapScale{scale.low(), scale.threshold, scale.high()};
  page.pixel_threshold_source = rule.pixel_threshold_source;
  page.pixel_resolution = options.pixel_size;
  for (const auto& [key, value] : extra_info.items())
    page.info.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
  write_index_html((std::filesystem::path(out_dir) / "index.html").string(), page);
  return m;
}

}  // namespace validflow::app
