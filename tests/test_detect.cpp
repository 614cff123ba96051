// The deploy part: model files (strict, verified), decision rules, and validflow::TensorDetector (the same scores as
// the extractor + flow path, maps at image resolution, thread safety, errors).
#include "catch_torch.hpp"
#include "test_util.hpp"

#include <validflow/detect.hpp>
#include <validflow/eval/metrics.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;
using namespace validflow;
using validflow::test::TempDir;

namespace {

/// A tiny detector: EfficientNet-B0 cut after block 3 (40 channels, stride 8) at 64 px, ValidFlow n = 1 with
/// hidden 8, ActNorm initialised on features of random images, parameters randomised (non-trivial scores).
struct TinyModel {
  ModelInfo info;
  features::MultiScaleExtractor extractor{nullptr};
  AnyFlow flow;

  TinyModel() {
    torch::manual_seed(7);
    info.backbone.name = "efficientnet-b0";
    info.backbone.layer = 3;
    info.backbone.image_size = 64;
    info.backbone = info.backbone.resolved();
    extractor = features::build_extractor(info.backbone);
    info.flow.model = "validflow";
    info.flow.channels = extractor->backbone->feature_channels();
    info.flow.modules = 1;
    info.flow.hidden = 8;
    info.flow.cbam_reduction = 4;
    flow = build_flow(info.flow);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : flow.module().parameters()) p.copy_(torch::randn_like(p) * 0.05);
      flow.module().train();
      flow->forward(extractor->forward(torch::rand({6, 3, 64, 64})));  // ActNorm's data-dependent init
    }
    flow.module().eval();
    info.decision.threshold = 1.0;
    info.decision.threshold_source = "test";
    info.decision.score_min = 0.5;
    info.decision.score_max = 2.5;
    info.decision.score_low = 0.5;  // robust: 0.5 below the threshold 1 -> 0, 1.5 above it -> 1
    info.decision.score_high = 2.5;
    info.decision.pixel_threshold = 1.5;
    info.decision.pixel_threshold_source = "test";
    info.decision.map_min = 0;
    info.decision.map_max = 3;
    info.decision.map_low = 0.5;
    info.decision.map_high = 3;
    info.provenance = {{"dataset", "tiny"}};
  }
  void save(const std::string& path) const { save_model_file(path, info, *extractor, flow); }
};

std::vector<torch::Tensor> test_images() {
  torch::manual_seed(3);
  return {torch::randint(0, 256, {48, 80, 3}, torch::kByte), torch::randint(0, 256, {64, 64, 3}, torch::kByte),
          torch::randint(0, 256, {100, 30}, torch::kByte), torch::rand({3, 70, 90})};
}

/// The same scores by hand: the one resize, the extractor, the flow, image_scores.
torch::Tensor reference_scores(const TinyModel& m, const std::vector<torch::Tensor>& images) {
  torch::NoGradGuard no_grad;
  const auto batch = features::prepare_images(images, 64, 64);
  return image_scores(m.flow->forward(m.extractor.ptr()->forward(batch)).tensors);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<accepted>";
}

}  // namespace

TEST_CASE("decision rules: thresholds at a false-positive rate, normalised scores, strict JSON", "[detect]") {
  const std::vector<double> good{0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.4, 0.6, 0.8, 1.0};
  const double t0 = threshold_at_false_positive_rate(good, 0.0);
  CHECK(t0 > 1.0);
  CHECK(t0 < 1.0 + 1e-12);
  const double t1 = threshold_at_false_positive_rate(good, 0.1);  // one of ten may be flagged
  CHECK(std::count_if(good.begin(), good.end(), [&](double s) { return s >= t1; }) == 1);
  const double t2 = threshold_at_false_positive_rate(good, 0.25);
  CHECK(std::count_if(good.begin(), good.end(), [&](double s) { return s >= t2; }) == 2);
  CHECK_THROWS(threshold_at_false_positive_rate({}, 0.1));
  CHECK_THROWS(threshold_at_false_positive_rate(good, 1.0));
  CHECK_THROWS(threshold_at_false_positive_rate({0.1, NAN}, 0.1));

  DecisionRule d;  // anomalib's min-max convention
  d.threshold = 2;
  d.score_min = 1;
  d.score_max = 5;
  d.normalization = "minmax";
  CHECK(d.normalized_score(2, 2) == Approx(0.5));
  CHECK(d.normalized_score(4, 2) == Approx(1.0));
  CHECK(d.normalized_score(3, 2) == Approx(0.75));
  CHECK(d.normalized_score(-100, 2) == 0.0);
  CHECK(d.normalized_score(3, 3) == Approx(0.5));  // an overridden threshold moves the 0.5 point
  d.score_low = 1.5;                               // robust anchors: 0.5 below the threshold is 0, 2 above it is 1
  d.score_high = 4;
  d.normalization = "robust";
  CHECK(d.normalized_score(2, 2) == Approx(0.5));
  CHECK(d.normalized_score(1.75, 2) == Approx(0.25));
  CHECK(d.normalized_score(1.5, 2) == Approx(0.0));
  CHECK(d.normalized_score(3, 2) == Approx(0.75));
  CHECK(d.normalized_score(4, 2) == Approx(1.0));
  CHECK(d.normalized_score(5, 2) == 1.0);
  CHECK(d.normalized_score(5, 4.5) == Approx(0.5 + 0.5 * 0.5 / 2.5));  // above the anchors: their whole width
  CHECK(d.normalized_score(1, 1) == Approx(0.5));
  CHECK(d.normalized_score(4, 1) == Approx(1.0));
  CHECK(d.normalized_score(-1.5, 1) == Approx(0.0));  // below the anchors: their whole width, 2.5
  CHECK(d.decide(std::nan(""), 2).normalized_score == 1.0);
  const auto scale = d.score_scale(2);
  CHECK(scale.low() == Approx(1.5));
  CHECK(scale.high() == Approx(4));
  CHECK(to_json(decision_rule_from_json(to_json(d))) == to_json(d));
  auto j = to_json(d);
  j["score_max"] = 0.5;
  CHECK_THROWS_WITH(decision_rule_from_json(j), Catch::Contains("score_max must exceed score_min"));
  j = to_json(d);
  j["score_high"] = 1.0;
  CHECK_THROWS_WITH(decision_rule_from_json(j), Catch::Contains("score_high must exceed score_low"));
  j = to_json(d);
  j["normalization"] = "zscore";
  CHECK_THROWS_WITH(decision_rule_from_json(j), Catch::Contains("robust or minmax"));
  j = to_json(d);
  j["extra"] = 1;
  CHECK_THROWS_WITH(decision_rule_from_json(j), Catch::Contains("expected 14 fields"));
  // A model file before version 3: nine fields, min-max normalisation as it was written.
  j = to_json(d);
  for (const char* key : {"score_low", "score_high", "map_low", "map_high", "normalization"}) j.erase(key);
  const auto legacy = decision_rule_from_json(j, /*legacy=*/true);
  CHECK(legacy.normalization == "minmax");
  CHECK(legacy.normalized_score(3, 2) == Approx(0.75));
  CHECK_THROWS_WITH(decision_rule_from_json(j), Catch::Contains("expected 14 fields"));
}

TEST_CASE("robust normalisation anchors: percentiles, one outlier cannot crowd the scores at 0.5", "[detect]") {
  std::vector<double> values;
  for (int i = 1; i <= 101; ++i) values.push_back(i);
  CHECK(percentile(values, 0) == 1);
  CHECK(percentile(values, 50) == 51);
  CHECK(percentile(values, 100) == 101);
  CHECK(percentile(values, 1) == Approx(2));
  CHECK(percentile({1, 2}, 25) == Approx(1.25));
  CHECK_THROWS(percentile({}, 50));
  // Scores near a threshold of 10 and one contamination at 10,000: min-max puts 9 and 11 at 0.5 +- 0.0001.
  std::vector<double> scores;
  for (int i = 0; i < 200; ++i) scores.push_back(5 + 0.05 * i);  // 5 .. 14.95
  scores.push_back(10000);
  const double t = 10;
  const auto [low, high] = robust_bounds(scores, t);
  CHECK(low < t);
  CHECK(high > t);
  CHECK(high < 100);  // the outlier is left out
  DecisionRule d;
  d.threshold = t;
  d.score_low = low;
  d.score_high = high;
  d.score_min = 5;
  d.score_max = 10000;
  CHECK(d.normalized_score(11, t) - d.normalized_score(9, t) > 0.15);
  d.normalization = "minmax";
  CHECK(d.normalized_score(11, t) - d.normalized_score(9, t) < 0.001);
  // The upper anchor is never closer to the threshold than the lower one (an fpr threshold at the top of good scores).
  const auto [low2, high2] = robust_bounds({1, 2, 3, 4, 5}, 5.5);
  CHECK(high2 - 5.5 >= 5.5 - low2 - 1e-12);
  // A threshold below every value still gets a lower anchor below it.
  const auto [low3, high3] = robust_bounds({4, 5, 6}, 1);
  CHECK(low3 < 1);
  CHECK(high3 > 1);
}

TEST_CASE("heatmap colours: faint below the pixel threshold, strong and warm above it", "[detect]") {
  const auto below = heatmap_colour(0.2f), at = heatmap_colour(0.5f), above = heatmap_colour(1.0f);
  CHECK(below.alpha < 0.4f);
  CHECK(at.alpha >= 0.6f);
  CHECK(below.b > below.r);
  CHECK(at.r == 255);
  CHECK(at.g > 200);  // yellow at the threshold
  CHECK(above.r > 200);
  CHECK(above.g < 30);  // red at the top
  CHECK(heatmap_colour(-3).r == heatmap_colour(0).r);
  CHECK(heatmap_colour(7).g == heatmap_colour(1).g);
  CHECK(heatmap_colour(std::nanf("")).alpha == 1.0f);
  for (float v = 0; v < 1; v += 0.05f) CHECK(heatmap_colour(v + 0.05f).alpha >= heatmap_colour(v).alpha);
  std::vector<uint8_t> rgb(2 * 3, 100);
  const std::vector<float> normalized{0.0f, 1.0f};
  blend_heatmap(rgb.data(), 1, 2, 6, normalized.data());
  CHECK(rgb[3] > rgb[5]);  // the hot pixel turned red
  CHECK(std::abs(rgb[0] - 100) < 30);
}

TEST_CASE("model file: round trip, and the detector scores exactly as extractor + flow", "[detect]") {
  TempDir dir("detect_roundtrip");
  const TinyModel m;
  m.save(dir.file("tiny.vfm"));
  const TensorDetector detector(dir.file("tiny.vfm"));
  CHECK(detector.image_size() == 64);
  CHECK(detector.threshold() == 1.0);
  CHECK(detector.info().provenance.at("dataset") == "tiny");
  CHECK(detector.info().library_version == version_string);

  const auto images = test_images();
  const auto predictions = detector.predict(images);
  const auto expected = reference_scores(m, images);
  REQUIRE(predictions.size() == images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& p = predictions[i];
    INFO("image " << i);
    CHECK(p.score == Approx(expected[static_cast<int64_t>(i)].item<double>()).epsilon(1e-6));
    CHECK(p.anomalous == (p.score >= 1.0));
    const double expected_normalized =
        p.score < 1.0 ? 0.5 - 0.5 * (1.0 - p.score) / 0.5 : 0.5 + 0.5 * (p.score - 1.0) / 1.5;
    CHECK(p.normalized_score == Approx(std::clamp(expected_normalized, 0.0, 1.0)));
    const int64_t h = images[i].scalar_type() == torch::kByte ? images[i].size(0) : images[i].size(1);
    const int64_t w = images[i].scalar_type() == torch::kByte ? images[i].size(1) : images[i].size(2);
    CHECK(p.anomaly_map.sizes() == torch::IntArrayRef({h, w}));
    CHECK(p.anomaly_map.device().is_cpu());
    CHECK(p.defect_mask.scalar_type() == torch::kBool);
    CHECK(torch::equal(p.defect_mask, p.anomaly_map >= 1.5));
  }
  // One image alone gives the same score as in a batch (the batch does not change a result).
  CHECK(detector.predict(images[2]).score == Approx(predictions[2].score).epsilon(1e-5));
  // Per-call overrides; scores alone.
  const auto strict = detector.predict(images, PredictOptions().threshold(1e9).pixel_threshold(1e9).maps(false));
  for (const auto& p : strict) {
    CHECK_FALSE(p.anomalous);
    CHECK_FALSE(p.anomaly_map.defined());
  }
  CHECK_THROWS_WITH(detector.predict(images, PredictOptions().threshold(NAN)), Catch::Contains("finite"));
  // Bad images: named, never a crash.
  CHECK_THROWS_WITH(detector.predict({images[0], torch::zeros({5, 5, 4}, torch::kByte)}), Catch::Contains("image 1"));
  CHECK_THROWS_WITH(detector.predict(std::vector<torch::Tensor>{}), Catch::Contains("no images"));
  CHECK_THROWS_WITH(detector.predict(torch::zeros({0, 4, 3}, torch::kByte)), Catch::Contains("empty"));
  CHECK_THROWS(detector.predict(torch::Tensor()));
}

TEST_CASE("Detector (the LibTorch-free facade) gives TensorDetector's scores, maps and masks", "[detect][facade]") {
  TempDir dir("detect_facade");
  const TinyModel m;
  m.save(dir.file("tiny.vfm"));
  const TensorDetector reference(dir.file("tiny.vfm"));
  const Detector detector(dir.file("tiny.vfm"));
  CHECK(detector.image_size() == 64);
  CHECK(detector.threshold() == 1.0);
  CHECK(detector.pixel_threshold() == 1.5);
  CHECK(detector.device() == "cpu");
  CHECK(detector.precision() == Precision::Float32);

  // RGB, a padded row stride (OpenCV's ROIs) and gray: the pixels the caller owns, read in place.
  const auto rgb = torch::randint(0, 256, {40, 52, 3}, torch::kByte);
  const auto padded = torch::randint(0, 256, {40, 60, 3}, torch::kByte);
  const auto gray = torch::randint(0, 256, {33, 47}, torch::kByte);
  const std::vector<ImageView> views = {{rgb.data_ptr<uint8_t>(), 40, 52, 3, 0},
                                        {padded.data_ptr<uint8_t>(), 40, 52, 3, 60 * 3},
                                        {gray.data_ptr<uint8_t>(), 33, 47, 1, 0}};
  const std::vector<torch::Tensor> tensors = {rgb, padded.slice(1, 0, 52), gray};
  const auto got = detector.predict(views);
  const auto want = reference.predict(tensors);
  REQUIRE(got.size() == 3);
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("image " << i);
    CHECK(got[i].score == want[i].score);
    CHECK(got[i].normalized_score == want[i].normalized_score);
    CHECK(got[i].anomalous == want[i].anomalous);
    CHECK(got[i].height == want[i].anomaly_map.size(0));
    CHECK(got[i].width == want[i].anomaly_map.size(1));
    const auto map =
        torch::from_blob(const_cast<float*>(got[i].anomaly_map.data()), {got[i].height, got[i].width}, torch::kFloat32);
    CHECK(torch::equal(map, want[i].anomaly_map));
    const auto mask =
        torch::from_blob(const_cast<uint8_t*>(got[i].defect_mask.data()), {got[i].height, got[i].width}, torch::kUInt8);
    CHECK(torch::equal(mask.to(torch::kBool), want[i].defect_mask));
    const auto shown = detector.normalized_map(got[i].anomaly_map);
    CHECK(
        torch::equal(torch::from_blob(const_cast<float*>(shown.data()), {got[i].height, got[i].width}, torch::kFloat32),
                     reference.normalized_map(want[i].anomaly_map)));
  }
  // Float pixels (16-bit files as predict decodes them: [H, W, 3] in [0, 1], OpenCV's CV_32FC3) equal TensorDetector
  // on the channel-first view predict hands it; a padded stride too.
  const auto floats = torch::rand({30, 44, 3});
  const auto padded_floats = torch::rand({30, 50, 3});
  const auto got_floats = detector.predict(std::vector<ImageView>{
      {reinterpret_cast<const uint8_t*>(floats.data_ptr<float>()), 30, 44, 3, 0, PixelType::float32},
      {reinterpret_cast<const uint8_t*>(padded_floats.data_ptr<float>()), 30, 44, 3, 50 * 3 * 4, PixelType::float32}});
  const auto want_floats = reference.predict(
      std::vector<torch::Tensor>{floats.permute({2, 0, 1}), padded_floats.slice(1, 0, 44).permute({2, 0, 1})});
  for (size_t i = 0; i < 2; ++i) {
    CHECK(got_floats[i].score == want_floats[i].score);
    CHECK(got_floats[i].height == 30);
  }
  const float one_float[3] = {0.5f, 0.5f, 0.5f};
  CHECK_THROWS_WITH(
      detector.predict(ImageView{reinterpret_cast<const uint8_t*>(one_float), 1, 1, 1, 0, PixelType::float32}),
      Catch::Contains("float images need 3 (RGB) channels"));
  CHECK_THROWS_WITH(
      detector.predict(ImageView{reinterpret_cast<const uint8_t*>(one_float), 1, 1, 3, 13, PixelType::float32}),
      Catch::Contains("not a whole number of floats"));

  const auto scores_only = detector.predict(views[0], PredictOptions().maps(false).threshold(-1e9));
  CHECK(scores_only.anomalous);
  CHECK(scores_only.anomaly_map.empty());
  CHECK(scores_only.score == Approx(want[0].score).epsilon(1e-5));  // alone vs in a batch: float rounding

  // Every refusal carries the error root and its kind.
  const auto kind_of = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.kind();
    }
    FAIL("no validflow::Error thrown");
    return ErrorKind::internal;
  };
  const uint8_t pixel[3] = {1, 2, 3};
  CHECK(kind_of([&] { detector.predict(ImageView{nullptr, 4, 4}); }) == ErrorKind::input);
  CHECK(kind_of([&] { detector.predict(ImageView{pixel, 1, 1, 4}); }) == ErrorKind::input);
  CHECK(kind_of([&] { detector.predict(ImageView{pixel, 1, 1, 3, 2}); }) == ErrorKind::input);
  CHECK(kind_of([&] { detector.predict(std::vector<ImageView>{}); }) == ErrorKind::input);
  CHECK(kind_of([&] { detector.predict(views[0], PredictOptions().threshold(NAN)); }) == ErrorKind::input);
  CHECK(kind_of([&] { Detector d(dir.file("absent.vfm")); }) == ErrorKind::file);
  CHECK(kind_of([&] { Detector d(dir.file("tiny.vfm"), DetectorOptions().device("tpu")); }) == ErrorKind::unsupported);
  CHECK(kind_of([&] { Detector d(dir.file("tiny.vfm"), DetectorOptions().precision(Precision::Float16)); }) ==
        ErrorKind::unsupported);
  if (!Detector::cuda_available())
    CHECK(kind_of([&] { Detector d(dir.file("tiny.vfm"), DetectorOptions().device("cuda:0")); }) ==
          ErrorKind::unsupported);
  // A moved-from detector hands its model on.
  Detector moved = Detector(dir.file("tiny.vfm"));
  CHECK(moved.predict(views[0]).score == Approx(want[0].score).epsilon(1e-5));
}

TEST_CASE("error_kind: the one classification of every error type", "[detect][errors]") {
  CHECK(error_kind(FlowInputError("x")) == ErrorKind::input);
  CHECK(error_kind(features::FeatureError("x")) == ErrorKind::input);
  CHECK(error_kind(eval::MetricError("x")) == ErrorKind::input);
  CHECK(error_kind(FlowConfigError("x")) == ErrorKind::config);
  CHECK(error_kind(FileError("p", "x")) == ErrorKind::file);
  CHECK(error_kind(StateDictError("p", "x")) == ErrorKind::file);
  CHECK(error_kind(UnsupportedPrecision("x")) == ErrorKind::unsupported);
  CHECK(error_kind(std::invalid_argument("x")) == ErrorKind::input);
  CHECK(error_kind(std::bad_alloc()) == ErrorKind::unsupported);
  CHECK(error_kind(std::runtime_error("x")) == ErrorKind::internal);
  CHECK(error_kind(std::logic_error("x")) == ErrorKind::internal);
  // LibTorch's own checks (TORCH_CHECK in reset(), an operator's): config, and one line without the C++ trace.
  try {
    TORCH_CHECK(false, "an option out of range");
  } catch (const std::exception& e) {
    CHECK(error_kind(e) == ErrorKind::config);
    CHECK(error_message(e) == "an option out of range");
  }
  // Each standard base is kept: existing catch clauses still work.
  CHECK_THROWS_AS(throw FlowInputError("x"), std::invalid_argument);
  CHECK_THROWS_AS(throw FileError("p", "x"), std::runtime_error);
  CHECK(std::string(to_string(ErrorKind::unsupported)) == "unsupported");
}

TEST_CASE("detector: concurrent predictions equal single-threaded ones", "[detect][threads]") {
  TempDir dir("detect_threads");
  const TinyModel m;
  m.save(dir.file("tiny.vfm"));
  const TensorDetector detector(dir.file("tiny.vfm"));
  const auto images = test_images();
  const auto reference = detector.predict(images);
  constexpr int kThreads = 4, kRounds = 5;
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&] {
      for (int r = 0; r < kRounds; ++r) {
        try {
          const auto out = detector.predict(images);
          for (size_t i = 0; i < out.size(); ++i)
            if (out[i].score != reference[i].score || !torch::equal(out[i].anomaly_map, reference[i].anomaly_map))
              ++mismatches;
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  std::cout << "[threads] " << kThreads << " threads x " << kRounds << " rounds x " << images.size()
            << " images: " << mismatches.load() << " mismatches, " << errors.load() << " errors\n";
  CHECK(mismatches == 0);
  CHECK(errors == 0);
}

TEST_CASE("model file: every defect refused with the file named", "[detect][errors]") {
  TempDir dir("detect_strict");
  const TinyModel m;
  const auto good = dir.file("good.vfm");
  m.save(good);
  auto archive = io::read_archive(good);
  auto refused = [&](const io::TensorArchive& a) {
    const auto path = dir.file("bad.vfm");
    io::write_archive(path, a);
    return error_of([&] { TensorDetector d(path); });
  };
  {
    auto a = archive;
    a.tensors.erase(a.tensors[a.tensors.size() - 1].first);
    const auto e = refused(a);
    CHECK(e.find("bad.vfm") != std::string::npos);
    CHECK(e.find("missing key") != std::string::npos);
  }
  {
    auto a = archive;
    a.tensors.emplace_back("flow.surprise", torch::zeros({1}));
    CHECK(refused(a).find("unexpected key(s) (surprise)") != std::string::npos);
  }
  {
    auto a = archive;
    a.tensors.emplace_back("notes", torch::zeros({1}));
    CHECK(refused(a).find("outside backbone.* and flow.*") != std::string::npos);
  }
  {
    auto a = archive;
    for (const auto& [name, t] : archive.tensors)
      if (name.rfind("flow.", 0) == 0 && t.dim() == 4) {
        a.tensors.set(name, torch::zeros({t.size(0) + 1, t.size(1), t.size(2), t.size(3)}));
        break;
      }
    CHECK(refused(a).find("mismatch") != std::string::npos);
  }
  {
    auto a = archive;
    for (const auto& [name, t] : archive.tensors)
      if (name.rfind("flow.", 0) == 0 && t.is_floating_point()) {
        auto poisoned = t.clone();
        poisoned.view(-1)[0] = NAN;
        a.tensors.set(name, poisoned);
        break;
      }
    CHECK(refused(a).find("NaN or Inf") != std::string::npos);
  }
  {
    auto a = archive;
    for (const auto& entry : archive.tensors)
      if (entry.first.find("initialized") != std::string::npos) a.tensors.set(entry.first, torch::tensor(false));
    CHECK(refused(a).find("never trained") != std::string::npos);
  }
  {
    auto a = archive;
    a.meta["flow"]["hidden"] = 4;  // the weights are of hidden 8
    CHECK(refused(a).find("mismatch") != std::string::npos);
    a.meta["flow"]["hidden"] = 16;  // more than the file's weights can hold: refused before the flow is built
    CHECK(refused(a).find("needs at least") != std::string::npos);
    a = archive;
    a.meta["backbone"]["name"] = "efficientnet-b7";  // likewise a backbone larger than the file's weights
    a.meta["backbone"]["layer"] = 54;
    CHECK(refused(a).find("(efficientnet-b7 up to block 54) needs") != std::string::npos);
  }
  {
    auto a = archive;
    a.meta["flow"]["channels"] = 2 * m.info.flow.channels;
    const auto e = refused(a);
    INFO(e);
    CHECK(e.find("backbone gives") != std::string::npos);
  }
  {
    auto a = archive;
    a.meta["decision"]["threshold"] = "high";
    CHECK(refused(a).find("decision rule") != std::string::npos);
  }
  {
    auto a = archive;
    a.meta["normalization"]["mean"] = {0, 0, 0};
    CHECK(refused(a).find("normalisation") != std::string::npos);
  }
  {
    auto a = archive;
    a.meta["score"] = "max of z";
    CHECK(refused(a).find("score definition") != std::string::npos);
  }
  {
    auto a = archive;
    a.kind_version = kModelFileVersion + 1;
    CHECK(refused(a).find("a newer validflow wrote it") != std::string::npos);
  }
  {  // version 2 (before the robust anchors): nine decision fields, read with min-max normalisation
    auto a = archive;
    a.kind_version = 2;
    for (const char* key : {"score_low", "score_high", "map_low", "map_high", "normalization"})
      a.meta["decision"].erase(key);
    const auto path = dir.file("v2.vfm");
    io::write_archive(path, a);
    const TensorDetector old(path);
    CHECK(old.info().decision.normalization == "minmax");
    CHECK(old.info().decision.score_low == old.info().decision.score_min);
    a.kind_version = 3;
    CHECK(refused(a).find("expected 14 fields") != std::string::npos);
  }
  {
    auto a = archive;
    a.kind = "validflow-checkpoint";
    CHECK(refused(a).find("expected a validflow-model file") != std::string::npos);
  }
  // A byte changed anywhere in the weights: a checksum error, never different scores.
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 0x40);
  std::ofstream(dir.file("flipped.vfm"), std::ios::binary) << bytes;
  CHECK(error_of([&] { TensorDetector d(dir.file("flipped.vfm")); }).find("checksum mismatch") != std::string::npos);
  CHECK(error_of([&] { TensorDetector d(dir.file("absent.vfm")); }).find("absent.vfm' not found") != std::string::npos);
  CHECK(error_of([&] { TensorDetector d(dir.path.string()); }).find("is a directory, not a file") != std::string::npos);
  // bf16: kept only where the CPU runs it natively and the timed probe at load finds it at least as fast as fp32;
  // refused (never silently slower) elsewhere.
  PrecisionProbe kept;
  const auto bf16 = error_of([&] {
    TensorDetector d(good, TensorDetectorOptions().precision(Precision::BFloat16));
    kept = d.precision_probe();
  });
  if (cpu_has_native_bf16()) {
    INFO("bf16 on this AVX512_BF16 CPU: " << bf16);
    if (bf16 == "<accepted>") {
      CHECK(kept.precision == Precision::BFloat16);
      CHECK(kept.pays());
      CHECK(kept.speedup() >= 1.0);
    } else {
      CHECK(bf16.find("precision bf16 measured 0.") != std::string::npos);
      CHECK(bf16.find("slower than fp32 here") != std::string::npos);
    }
    // Unmeasured on request: kept as asked.
    CHECK(error_of([&] {
            TensorDetector d(good, TensorDetectorOptions().precision(Precision::BFloat16).measure_precision(false));
            CHECK(d.precision_probe().speedup() == 0);
          }) == "<accepted>");
  } else {
    CHECK(bf16.find("slower than fp32") != std::string::npos);
    CHECK(error_of([&] {
            TensorDetector d(good, TensorDetectorOptions().precision(Precision::BFloat16).measure_precision(false));
          }).find("native bf16") != std::string::npos);
  }
  {  // The probe itself runs on any CPU (emulated bf16 where there is no native one) and times both precisions.
    const TensorDetector d(good);
    CHECK(d.precision_probe().precision == Precision::Float32);
    CHECK(d.precision_probe().speedup() == 0);
    const auto probe = d.measure_precision(Precision::BFloat16);
    CHECK(probe.precision == Precision::BFloat16);
    CHECK(std::isfinite(probe.fp32_seconds));
    CHECK(std::isfinite(probe.reduced_seconds));
    CHECK(probe.fp32_seconds > 0);
    CHECK(probe.reduced_seconds > 0);
    CHECK(probe.speedup() == Approx(probe.fp32_seconds / probe.reduced_seconds));
    CHECK(probe.pays() == (probe.reduced_seconds <= probe.fp32_seconds));
    CHECK_THROWS_WITH(d.measure_precision(Precision::Float16), Catch::Contains("CUDA only"));
  }
  // The decision: kept when at least as fast as fp32.
  CHECK_FALSE(PrecisionProbe{Precision::BFloat16, 1.0, 2.1}.pays());
  CHECK(PrecisionProbe{Precision::BFloat16, 1.0, 2.1}.speedup() == Approx(1.0 / 2.1));
  CHECK(PrecisionProbe{Precision::BFloat16, 1.0, 1.0}.pays());
  CHECK(PrecisionProbe{Precision::BFloat16, 1.0, 0.5}.speedup() == Approx(2.0));
  CHECK_FALSE(PrecisionProbe{}.pays());
  CHECK(PrecisionProbe{Precision::BFloat16, 0.438, 0.912}.describe() ==
        "bf16 measured 0.48x the speed of fp32 (0.912 s against 0.438 s per probe image)");
  CHECK(error_of([&] {
          TensorDetector d(good, TensorDetectorOptions().precision(Precision::Float16));
        }).find("CUDA only") != std::string::npos);
}

TEST_CASE("fail-safe: untrusted scores are never a pass, loads check meaning and limits", "[detect][errors]") {
  TempDir dir("detect_failsafe");
  const TinyModel m;
  const auto good = dir.file("good.vfm");
  m.save(good);
  const auto archive = io::read_archive(good);
  auto refused = [&](const io::TensorArchive& a, const TensorDetectorOptions& o = {}) {
    const auto path = dir.file("bad.vfm");
    io::write_archive(path, a);
    return error_of([&] { TensorDetector d(path, o); });
  };
  const auto first_key = [&](const std::string& part) {
    for (const auto& [name, t] : archive.tensors)
      if (name.find(part) != std::string::npos) return name;
    FAIL("no tensor named like " << part);
    return std::string();
  };
  SECTION("a finite weight that overflows the flow is refused at load (a probe image)") {
    auto a = archive;
    std::string key;
    for (const auto& [name, t] : archive.tensors)
      if (key.empty() && name.rfind("flow.", 0) == 0 && t.dim() == 4 && t.is_floating_point()) key = name;
    auto w = a.tensors.at(key).clone();
    w.view(-1)[0] = 3e38f;
    a.tensors.set(key, w);
    const auto e = refused(a);
    INFO(e);
    CHECK(e.find("not finite on a probe image") != std::string::npos);
  }
  SECTION("a permutation that is not one is refused with its buffer named") {
    auto a = archive;
    const auto key = first_key("perm_0");
    auto p = a.tensors.at(key).clone();
    p[0] = p[1].item<int64_t>();  // a channel twice, another never
    a.tensors.set(key, p);
    const auto e = refused(a);
    INFO(e);
    CHECK(e.find("ChannelShuffle buffer perm_0 is not a permutation") != std::string::npos);
    CHECK(e.find("bad.vfm") != std::string::npos);
  }
  SECTION("input size: above the caller's limit, or inconsistent with the maps the flow was trained on") {
    CHECK(refused(archive, TensorDetectorOptions().max_input_size(32)).find("above the limit of 32 px") !=
          std::string::npos);
    CHECK(refused(archive) == "<accepted>");
    auto a = archive;
    a.meta["backbone"]["image_size"] = 128;  // the same flow would see 16 px maps, it was trained on 8
    const auto e = refused(a);
    INFO(e);
    CHECK(e.find("trained on feature maps of [8,4,2]") != std::string::npos);
  }
  SECTION("a non-finite score or map is anomalous and invalid, whatever the threshold") {
    auto loaded = load_model_file(good);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : loaded.flow.module().parameters()) p.fill_(3e38f);  // after the load-time probe
    }
    const TensorDetector detector(std::move(loaded), TensorDetectorOptions());
    for (const auto& options : {PredictOptions(), PredictOptions().threshold(1e30), PredictOptions().maps(false)}) {
      const auto p = detector.predict(test_images().at(0), options);
      CHECK_FALSE(p.valid);
      CHECK(p.anomalous);
      CHECK(p.normalized_score == 1.0);
    }
    const auto decision = m.info.decision.decide(std::nan(""), -1e300);
    CHECK((decision.anomalous && !decision.valid && decision.normalized_score == 1.0));
    CHECK(m.info.decision.decide(0.5, 1.0).valid);
    CHECK_FALSE(m.info.decision.decide(0.5, 1.0).anomalous);
  }
  SECTION("images: float values outside [0, 1] and images above the pixel limit are refused") {
    const TensorDetector detector(good, TensorDetectorOptions().max_image_pixels(64 * 64));
    CHECK(error_of([&] {
            detector.predict(torch::rand({3, 20, 20}) * 255);
          }).find("divide by 255") != std::string::npos);
    CHECK(error_of([&] { detector.predict(torch::rand({3, 20, 20}) - 1000); }).find("in [0, 1]") != std::string::npos);
    CHECK(error_of([&] {
            detector.predict(torch::zeros({65, 64, 3}, torch::kByte));
          }).find("above the limit of 4096") != std::string::npos);
    CHECK(detector.predict(torch::zeros({64, 64, 3}, torch::kByte)).valid);
    const Detector facade(good, DetectorOptions().max_image_pixels(64 * 64));
    std::vector<uint8_t> pixels(64 * 64 * 3, 100);
    CHECK(facade.predict(ImageView{pixels.data(), 64, 64}).valid);
    // A view claiming 100000 x 100000 pixels is refused before anything is read or allocated.
    CHECK(error_of([&] {
            facade.predict(ImageView{pixels.data(), 100000, 100000});
          }).find("above the limit of 4096") != std::string::npos);
    CHECK(error_of([&] {
            facade.predict(ImageView{pixels.data(), int64_t{1} << 62, int64_t{1} << 62});
          }).find("above the limit") != std::string::npos);
    CHECK(error_of([&] { Detector d(good, DetectorOptions().max_input_size(32)); }).find("above the limit of 32 px") !=
          std::string::npos);
  }
}

TEST_CASE("maps: smoothing keeps the mean and smooths, resizing is bilinear", "[detect][maps]") {
  torch::manual_seed(1);
  const auto maps = torch::rand({2, 16, 16});
  CHECK(torch::equal(smooth_maps(maps, 0), maps));
  const auto smooth = smooth_maps(maps, 2);
  CHECK(smooth.sizes() == maps.sizes());
  CHECK(smooth.mean().item<double>() == Approx(maps.mean().item<double>()).epsilon(0.02));
  CHECK(smooth.std().item<double>() < 0.5 * maps.std().item<double>());
  CHECK(smooth_maps(torch::ones({1, 4, 4}), 3).allclose(torch::ones({1, 4, 4})));  // large kernel, tiny map
  CHECK_THROWS(smooth_maps(maps, -1));
  const auto up = resize_maps(torch::tensor({0.f, 1.f}).view({1, 1, 2}), 1, 4);
  CHECK(up.allclose(torch::tensor({0.f, 0.25f, 0.75f, 1.f}).view({1, 1, 4})));
  CHECK(maps_at_input_size(maps, 32, 0).sizes() == torch::IntArrayRef({2, 32, 32}));
}
