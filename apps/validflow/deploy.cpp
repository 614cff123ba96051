// `validflow export` (a trained run -> one model file) and `validflow predict` (a model file + new images ->
// decisions, scores, maps). See commands.hpp and docs/usage.md.
#include "commands.hpp"

#include "model_repository.hpp"  // backends/triton: the Triton repository writer (no LibTorch, no Triton)

#include <validflow/detect.hpp>
#include <validflow/util/text.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <unistd.h>

namespace fs = std::filesystem;

namespace validflow::app {
namespace {

/// FNV-1a of a text (the file lists of an extraction).
std::string text_fingerprint(const std::string& text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  std::ostringstream s;
  s << std::hex << hash;
  return s.str();
}

std::string utc_now() {
  const auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

}  // namespace

namespace {

/// The Triton entry's options from `export --triton ...` (checked before any work; see run_export).
triton::RepositoryOptions triton_options_for(const ExportArgs& e) {
  triton::RepositoryOptions repository;
  repository.name = e.triton_name;
  repository.max_batch_size = e.triton_max_batch_size;
  repository.instance_count = e.triton_instances;
  repository.intra_op_threads = e.triton_threads;
  repository.overwrite = true;  // as --to replaces its file (never another backend's entry)
  repository.model_file_name =
      "model" + (fs::path(e.to).has_extension() ? fs::path(e.to).extension().string() : std::string(".vfm"));
  return repository;
}

/// Where the model came from: data, weights, training, export (stored in the model file, shown by predict).
nlohmann::json export_provenance(const FeatureCache& cache, const Checkpoint& checkpoint) {
  const auto& request = cache.meta.at("request");
  return {{"dataset", request.at("dataset")},
          {"files_fingerprint", text_fingerprint(request.at("train_files").dump() + request.at("test_files").dump() +
                                                 request.at("holdout_files").dump())},
          {"train_images", cache.train[0].size(0)},
          {"test_images", cache.test[0].size(0)},
          {"holdout_images", cache.holdout.empty() ? 0 : cache.holdout[0].size(0)},
          {"backbone_weights", request.at("weights")},
          {"backbone_weights_fingerprint", request.at("weights_fingerprint")},
          {"training", checkpoint.train_options},
          {"epochs", checkpoint.epoch},
          {"final_loss", checkpoint.loss_history.empty() ? 0.0 : checkpoint.loss_history.back()},
          {"exported", utc_now()},
          {"exported_by", std::string("validflow ") + version_string}};
}

/// Loads the staged model file back and scores up to 4 test images from disk: they must reproduce the run's
/// scores (relative 1e-4), or the export is refused.
void check_staged_model(const std::string& staging, const FeatureCache& cache, const std::vector<double>& scores) {
  const TensorDetector detector(staging);
  std::vector<torch::Tensor> images;
  std::vector<double> expected;
  for (size_t i = 0; i < cache.test_samples.size() && images.size() < 4; ++i) {
    try {
      images.push_back(image_tensor(decode_image(cache.test_samples[i].path)));
      expected.push_back(scores[i]);
    } catch (const DatasetError&) {  // moved or deleted since extraction: nothing to compare with
    }
  }
  if (images.empty()) {
    std::cerr << "checked   not compared with the run's scores: its test images are no longer readable\n";
    return;
  }
  const auto predicted = detector.predict(images, PredictOptions().maps(false));
  for (size_t i = 0; i < images.size(); ++i) {
    const double rel = std::abs(predicted[i].score - expected[i]) / std::max(std::abs(expected[i]), 1e-12);
    if (rel > 1e-4)
      throw DatasetError("the exported model scores a test image " + std::to_string(predicted[i].score) +
                         ", the run's features gave " + std::to_string(expected[i]) +
                         " (images changed since extraction?)");
  }
  std::cerr << "checked   the file reproduces the run's scores on " << images.size() << " test images\n";
}

}  // namespace

/// --to must be a new file or a model file (it is replaced), never one of the run's own files or a user's file.
void check_export_target(const std::string& out, const std::string& to) {
  std::error_code ec;
  if (fs::is_directory(to, ec)) throw FileError(to, "--to " + to + " is a directory; give the model file's name");
  for (const auto& input : {checkpoint_path(out), features_path(out)})
    if (io::same_file(to, input))
      throw FileError(to, "--to " + to + " is " + input + ", which export reads; give the model file another name");
  if (!fs::exists(fs::symlink_status(to, ec))) return;
  std::ifstream existing(to, std::ios::binary);
  std::string head(8, '\0');
  existing.read(head.data(), 8);
  if (!fs::is_regular_file(fs::status(to, ec)) || !existing || !io::has_archive_magic(head))
    throw FileError(to, "--to " + to +
                            " exists and is not a validflow model file; export replaces only its own "
                            "files: give a new name or remove it");
}

std::string run_export(const std::string& out, const ExportArgs& e) {
  std::error_code ec;
  check_export_target(out, e.to);
  const auto checkpoint = load_checkpoint(checkpoint_path(out));
  const auto cache = load_feature_cache(features_path(out));
  auto extractor = extractor_of(cache);
  if (checkpoint.config.channels != cache.channels() || checkpoint.config.scales != cache.scales())
    throw FileError(checkpoint_path(out), "the checkpoint in " + out + " was trained on other features than " +
                                              features_path(out) + " holds: run `validflow train` again");
  ModelInfo info;
  info.backbone = features::backbone_spec_from_json(cache.meta.at("request").at("backbone"));
  info.flow = checkpoint.config;
  for (const auto& hw : cache.map_sizes()) info.feature_map_sizes.push_back(hw[0]);  // what the flow was trained on
  const int64_t size = info.backbone.image_size;
  std::cerr << "export    " << out << ": " << checkpoint.config.model << " (" << checkpoint.epoch << " epochs), "
            << info.backbone.name << " at " << size << " px\n";

  // --triton: the options and the target are checked before the work (a refusal writes nothing); the entry is
  // written from the checked model file before that file takes its name --to, so a failed entry never leaves a
  // new model file behind (only the final rename, in the same folder, comes after it).
  auto repository = triton_options_for(e);
  if (e.triton_warmup) repository.warmup_size = size;
  const auto triton_error = [&](const std::string& why) {
    return FileError(e.triton_repository, "--triton " + e.triton_repository + ": " + why + " (nothing written)");
  };
  if (!e.triton_repository.empty()) {
    try {
      triton::check_repository_target(e.triton_repository, repository);
    } catch (const triton::RepositoryError& x) {
      throw triton_error(x.what());
    }
  }

  EvalOptions scoring;
  scoring.pixel_size = static_cast<int>(size);
  scoring.map_sigma = e.map_sigma;
  std::cerr << "scoring   " << cache.test_samples.size() + cache.holdout_samples.size()
            << " test and held-out images for the thresholds ...\n";
  const auto test = score_test_set(checkpoint.model, cache.test, scoring);
  std::vector<int> labels;
  for (const auto& s : cache.test_samples) labels.push_back(s.label);
  TestScores holdout;
  if (!cache.holdout.empty()) holdout = score_test_set(checkpoint.model, cache.holdout, scoring);
  info.decision =
      choose_decision_rule(cache.test_samples, test, holdout, {e.threshold_from, e.target_fpr}, e.map_sigma);
  info.provenance = export_provenance(cache, checkpoint);
  if (std::count(labels.begin(), labels.end(), 1) > 0)
    info.provenance["test_image_auroc"] = eval::auroc(test.scores, labels);

  // Written next to the target, checked by loading it back and scoring test images from disk, then renamed:
  // a failed export never replaces a good model file.
  const fs::path target(e.to);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  io::remove_stale_temp_files(target.has_parent_path() ? target.parent_path().string() : ".",
                              {target.filename().string()});
  const std::string staging = io::temp_path_for(e.to);  // removed by a later run if this one is killed
  save_model_file(staging, info, *extractor, checkpoint.model);
  std::optional<triton::RepositoryEntry> entry;
  try {
    check_staged_model(staging, cache, test.scores);
    if (!e.triton_repository.empty()) {
      try {
        entry = triton::write_model_repository(staging, e.triton_repository, repository);
      } catch (const triton::RepositoryError& x) {
        throw triton_error(x.what());
      }
    }
  } catch (...) {
    fs::remove(staging, ec);
    throw;
  }
  fs::rename(staging, target, ec);
  if (ec) {
    const auto why = ec.message();
    fs::remove(staging, ec);
    throw FileError(e.to, "cannot write " + e.to + ": " + why);
  }
  const auto& d = info.decision;
  std::cerr << "threshold " << std::setprecision(6) << d.threshold << ": " << d.threshold_source
            << "; normalised scores 0 / 0.5 / 1 at " << d.score_low << " / " << d.threshold << " / " << d.score_high
            << "\n";
  std::cerr << "pixels    " << d.pixel_threshold << ": " << d.pixel_threshold_source << "; heatmap scale " << d.map_low
            << " / " << d.pixel_threshold << " / " << d.map_high << "\n";
  std::cout << "model     " << e.to << " (" << std::fixed << std::setprecision(1)
            << static_cast<double>(fs::file_size(target)) / (1 << 20) << " MiB)\n";
  if (entry)
    std::cout << "triton    " << entry->config.string() << " and " << entry->model_file.string() << " (model '"
              << repository.name << "'; serve it: docs/serving.md)\n";
  return e.to;
}

std::string triton_model_name_problem(const std::string& name) { return triton::model_name_problem(name); }

namespace {

/// Where each image's heatmap goes under heatmaps/: its path below the folder argument it was found in, behind that
/// folder's name (`predict data/test` -> `test/crack/003.png`), or its file name for a file argument; extension
/// .png, and `_2`, `_3` ... before it where two images would share a name.
std::vector<std::string> heatmap_names(const std::vector<std::string>& files, const std::vector<std::string>& args) {
  std::vector<std::string> names;
  std::set<std::string> used;
  for (const auto& file : files) {
    fs::path name = fs::path(file).filename();
    for (const auto& arg : args) {
      const std::string prefix = arg.empty() || arg.back() == '/' ? arg : arg + "/";
      if (file.size() > prefix.size() && file.compare(0, prefix.size(), prefix) == 0) {
        std::error_code ec;
        const auto folder = fs::weakly_canonical(fs::absolute(arg), ec).filename();
        name = folder / fs::path(file.substr(prefix.size())).lexically_normal();
        break;
      }
    }
    name.replace_extension(".png");
    std::string candidate = name.string();
    for (int n = 2; !used.insert(candidate).second; ++n)
      candidate = (name.parent_path() / (name.stem().string() + "_" + std::to_string(n) + ".png")).string();
    names.push_back((fs::path("heatmaps") / candidate).string());
  }
  return names;
}

/// The image beside its anomaly map (coloured on the model file's scale, with its legend) and defect mask, as
/// `heatmap` (a path relative to `out`).
void write_prediction_heatmap(const std::string& out, const std::string& heatmap, const cv::Mat& decoded,
                              const TensorPrediction& r, const TensorDetector& detector,
                              decltype(PredictArgs::pixel_threshold) pixel_threshold) {
  cv::Mat shown;
  decoded.convertTo(shown, CV_32FC3, decoded.depth() == CV_8U ? 1.0 / 255.0 : 1.0);
  OverlayOptions overlay;
  overlay.side_by_side = true;
  overlay.legend = detector.heatmap_scale(pixel_threshold);
  write_heatmap_png((fs::path(out) / heatmap).string(), shown,
                    to_mat(detector.normalized_map(r.anomaly_map, pixel_threshold)),
                    to_mat(r.defect_mask.to(torch::kFloat32)) > 0.5f, overlay);
}

/// predict's results as they come: rows of predictions.json and predictions.csv, and a line per image on stdout
/// when there is no --out. Names that are not valid UTF-8 are written escaped (util/text.hpp) and marked.
struct PredictionTable {
  nlohmann::json rows = nlohmann::json::array();
  std::ostringstream csv{"path,score,normalized_score,anomalous,valid,heatmap\n", std::ios::ate};
  size_t anomalous = 0, scored = 0;
  std::vector<std::string> invalid;

  void add(const std::string& name, const TensorPrediction& r, const std::string& heatmap, bool to_stdout) {
    anomalous += r.anomalous ? 1 : 0;
    ++scored;
    if (!r.valid) invalid.push_back(name);
    const auto path = escape_non_utf8(name);
    nlohmann::json row = {{"path", path},
                          {"score", r.valid ? nlohmann::json(r.score) : nlohmann::json()},  // never NaN in JSON
                          {"normalized_score", r.normalized_score},
                          {"anomalous", r.anomalous},
                          {"valid", r.valid},
                          {"heatmap", escape_non_utf8(heatmap)}};
    if (path != name) row["path_escaped"] = true;
    rows.push_back(row);
    std::ostringstream line;  // every number with round-trip precision, as eval's scores.csv
    line << std::setprecision(std::numeric_limits<double>::max_digits10) << csv_field(path) << ",";
    if (r.valid) line << r.score;
    line << "," << r.normalized_score << "," << (r.anomalous ? 1 : 0) << "," << (r.valid ? 1 : 0) << ","
         << csv_field(escape_non_utf8(heatmap)) << "\n";
    csv << line.str();
    if (to_stdout) {
      if (!r.valid)
        std::cout << "INVALID   score not finite (reported anomalous)  " << name << "\n";
      else
        std::cout << (r.anomalous ? "ANOMALOUS " : "ok        ") << std::fixed << std::setprecision(4)
                  << r.normalized_score << "  " << name << "\n";
    }
  }
};

TensorDetector load_detector_for(const PredictArgs& p) {
  TensorDetectorOptions options;
  options.device(torch::Device(p.device))
      .precision(parse_precision(p.precision))
      .max_input_size(p.max_input_size)
      .max_image_pixels(p.max_image_pixels);
  if (options.device().is_cuda() && !torch::cuda::is_available())
    throw std::invalid_argument("--device cuda: this LibTorch has no CUDA, or no GPU is visible");
  return TensorDetector(p.model, options);
}

/// Fault injection for the fail-safe rows of tests/cli/bad_inputs.py, never set in normal use:
/// VALIDFLOW_FAULT_NAN_SCORE=TEXT gives every image whose path contains TEXT a NaN score and map, as a model that
/// overflows on that image would (the load-time probe refuses models that overflow everywhere), and decides it again
/// with the library's one decision step.
void inject_score_fault(std::vector<TensorPrediction>& predictions, const std::vector<std::string>& names,
                        const DecisionRule& rule, double threshold) {
  const char* text = std::getenv("VALIDFLOW_FAULT_NAN_SCORE");
  if (!text || !*text) return;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (names[i].find(text) == std::string::npos) continue;
    auto& p = predictions[i];
    p.score = std::nan("");
    if (p.anomaly_map.defined()) p.anomaly_map.fill_(std::nan(""));
    const auto decision = rule.decide(p.score, threshold);
    p.anomalous = decision.anomalous;
    p.valid = decision.valid;
    p.normalized_score = decision.normalized_score;
  }
}

/// The names predict writes in --out.
const std::vector<std::string>& predict_outputs() {
  static const std::vector<std::string> names{"predictions.csv", "predictions.json", "heatmaps"};
  return names;
}

/// --out is replaced as a whole, so it must be predict's own: new, empty, staged by validflow (its marker), or
/// holding nothing but predict's outputs; and none of the command's inputs may lie inside it.
void check_predict_out(const PredictArgs& p) {
  std::error_code ec;
  const auto status = fs::symlink_status(p.out, ec);
  for (const auto& input : p.paths)
    if (io::is_within(input, p.out))
      throw FileError(p.out, "--out " + p.out + " holds the input " + input +
                                 "; predict replaces --out as a whole, "
                                 "so give a folder outside the images");
  if (io::is_within(p.model, p.out))
    throw FileError(p.out, "--out " + p.out + " holds the model file " + p.model + "; give another folder");
  if (!fs::exists(status)) return;
  if (!fs::is_directory(status))
    throw FileError(p.out, "--out " + p.out + " exists and is not a folder; give a new or an empty folder");
  if (io::is_owned_directory(p.out)) return;
  for (fs::directory_iterator it(p.out, ec), end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    const auto& ours = predict_outputs();
    if (std::find(ours.begin(), ours.end(), name) == ours.end())
      throw FileError(p.out, "--out " + p.out + " holds files predict did not write ('" + name +
                                 "'); predict replaces --out as a whole, so give a new or an empty folder");
  }
  if (ec) throw FileError(p.out, "cannot list --out " + p.out + ": " + ec.message());
}

}  // namespace

int run_predict(const PredictArgs& p) {
  const auto start = std::chrono::steady_clock::now();
  if (!p.out.empty()) check_predict_out(p);
  const TensorDetector detector = load_detector_for(p);
  set_max_image_pixels(static_cast<std::uint64_t>(p.max_image_pixels));  // refused by header, before decoding
  const auto& decision = detector.info().decision;
  const double threshold = p.threshold ? *p.threshold : decision.threshold;
  std::cerr << "model     " << p.model << ": " << detector.info().flow.model << " on " << detector.info().backbone.name
            << " at " << detector.image_size() << " px, threshold " << threshold << (p.threshold ? " (given)" : "")
            << ", " << p.device << " " << p.precision;
  if (const auto& probe = detector.precision_probe(); probe.speedup() > 0) std::cerr << " (" << probe.describe() << ")";
  std::cerr << "\n";
  std::string staging;  // --out is written here, then put in place as a whole (a failure leaves the old or none)
  if (!p.out.empty()) {
    const fs::path out = fs::absolute(p.out);
    io::remove_stale_temp_files(out.parent_path().string(), {out.filename().string()});
  }
  std::vector<BadImage> problems;
  const auto files = collect_image_files(p.paths, problems, p.out);
  const auto heatmap_files = heatmap_names(files, p.paths);
  if (files.empty() && problems.empty()) throw DatasetError("no image files found in the given paths");
  if (!p.out.empty()) staging = io::make_staging_directory(fs::absolute(p.out).string());
  try {
    PredictionTable table;
    ProgressBar bar(files.size(), "predict", {"img"});
    const auto predict_options =
        PredictOptions().threshold(p.threshold).pixel_threshold(p.pixel_threshold).maps(p.heatmaps);
    for (size_t first = 0; first < files.size(); first += static_cast<size_t>(p.batch_size)) {
      const size_t end = std::min(files.size(), first + static_cast<size_t>(p.batch_size));
      std::vector<torch::Tensor> images;
      std::vector<cv::Mat> decoded;
      std::vector<std::string> names, heatmaps;
      for (size_t i = first; i < end; ++i) {
        try {
          decoded.push_back(decode_image(files[i]));
          images.push_back(image_tensor(decoded.back()));
          names.push_back(files[i]);
          heatmaps.push_back(heatmap_files[i]);
        } catch (const DatasetError& err) {
          problems.push_back({files[i], err.what()});
        }
      }
      auto predictions = images.empty() ? std::vector<TensorPrediction>{} : detector.predict(images, predict_options);
      inject_score_fault(predictions, names, detector.info().decision, threshold);
      for (size_t i = 0; i < predictions.size(); ++i) {
        std::string heatmap;
        if (p.heatmaps && !staging.empty()) {
          heatmap = heatmaps[i];
          write_prediction_heatmap(staging, heatmap, decoded[i], predictions[i], detector, p.pixel_threshold);
        }
        table.add(names[i], predictions[i], heatmap, /*to_stdout=*/p.out.empty());
      }
      bar.update(end);
    }
    bar.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json skipped = nlohmann::json::array();
    for (const auto& b : problems) {
      std::cerr << "skipped   " << b.path << ": " << b.reason << "\n";
      skipped.push_back({{"path", escape_non_utf8(b.path)}, {"reason", escape_non_utf8(b.reason)}});
    }
    for (const auto& name : table.invalid)
      std::cerr << "INVALID   " << name << ": the score is not finite; reported anomalous (never a pass)\n";
    const double rate = static_cast<double>(table.scored) / seconds;
    if (!staging.empty()) {
      const nlohmann::json report = {
          {"model", escape_non_utf8(p.model)},
          {"threshold", threshold},
          {"pixel_threshold", p.pixel_threshold ? *p.pixel_threshold : decision.pixel_threshold},
          {"images", table.rows},
          {"skipped", skipped},
          {"anomalous", table.anomalous},
          {"invalid", table.invalid.size()},
          {"seconds", seconds},
          {"images_per_second", rate},
          {"device", p.device},
          {"precision", p.precision}};
      io::write_file_atomic((fs::path(staging) / "predictions.csv").string(), table.csv.str());
      io::write_file_atomic((fs::path(staging) / "predictions.json").string(), report.dump(2) + "\n");
      io::replace_directory(staging, fs::absolute(p.out).string());
    }
    std::cout << "images      " << table.scored << " scored, " << table.anomalous << " anomalous";
    if (!table.invalid.empty()) std::cout << " (" << table.invalid.size() << " of them INVALID: score not finite)";
    std::cout << ", " << problems.size() << " skipped\n";
    std::cout << "speed       " << std::fixed << std::setprecision(2) << rate
              << " images/s end to end (decoding, preprocessing, features, flow, maps)\n";
    if (!p.out.empty()) std::cout << "results     " << (fs::path(p.out) / "predictions.csv").string() << "\n";
    if (!table.invalid.empty()) return kExitInvalid;
    return problems.empty() ? kExitOk : kExitSkipped;
  } catch (...) {
    std::error_code ec;
    if (!staging.empty()) fs::remove_all(staging, ec);
    throw;
  }
}

}  // namespace validflow::app
