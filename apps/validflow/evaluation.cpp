#include "evaluation.hpp"

namespace validflow::app {

cv::Mat to_mat(const torch::Tensor& map) {
  const auto m = map.to(torch::kFloat32).contiguous();
  return cv::Mat(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32FC1, m.data_ptr<float>()).clone();
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
                                         const TestScores& t, const EvalOptions& options) {
  namespace fs = std::filesystem;
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return t.scores[a] > t.scores[b]; });
  OverlayOptions overlay;
  overlay.side_by_side = true;
  overlay.vmin = 0;
  overlay.vmax = t.maps.max().item<double>();
  std::vector<HeatmapEntry> entries;
  const int k = std::min<int>(options.heatmaps_per_group, static_cast<int>(samples.size()) / 2);
  auto render = [&](size_t i, const std::string& group, int rank) {
    const auto& s = samples[i];
    const std::string file = "heatmaps/" + std::string(group == "most anomalous" ? "most_" : "least_") +
                             std::to_string(rank) + "_" + s.type + ".png";
    const auto image = load_image(s.path, options.pixel_size);
    const auto mask = s.mask_path.empty() ? cv::Mat() : load_mask(s.mask_path, options.pixel_size);
    write_heatmap_png((fs::path(out_dir) / file).string(), image, to_mat(t.maps[static_cast<int64_t>(i)]), mask,
                      overlay);
    entries.push_back({file, s.path, s.label, s.type, t.scores[i], group});
  };
  for (int r = 0; r < k; ++r) render(order[static_cast<size_t>(r)], "most anomalous", r + 1);
  for (int r = 0; r < k; ++r) render(order[order.size() - 1 - static_cast<size_t>(r)], "least anomalous", r + 1);
  return entries;
}

MetricsSummary evaluate(const AnyFlow& model, const FeatureCache& cache, const std::string& out_dir,
                        const EvalOptions& options, const nlohmann::json& extra_info) {
  const auto t = score_test_set(model, cache.test, options);
  auto m = compute_metrics(cache.test_samples, t, options);
  m.extra = extra_info;
  m.extra["inference_precision"] = to_string(options.precision);
  m.extra["map_sigma"] = options.map_sigma;
  m.extra["scoring_seconds"] = t.seconds;
  m.extra["scoring_images_per_second"] = static_cast<double>(t.scores.size()) / t.seconds;
  write_tables_and_plots(out_dir, cache.test_samples, t, m);
  ReportPage page;
  page.metrics = m;
  page.heatmaps = write_heatmaps(out_dir, cache.test_samples, t, options);
  for (const auto& [key, value] : extra_info.items())
    page.info.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
  write_index_html((std::filesystem::path(out_dir) / "index.html").string(), page);
  return m;
}

}  // namespace validflow::app
