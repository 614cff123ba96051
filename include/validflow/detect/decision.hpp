#pragma once
// Decisions from scores, stored in a model file and adjustable at run time.
//
//  * Image threshold: an image is anomalous when its raw score >= threshold. Chosen when the model is exported:
//    the F1-optimal threshold on a labelled test set, or, without defective images, the threshold that flags
//    at most a target fraction (false-positive rate) of held-out good images.
//  * Normalised score in [0, 1] with the threshold at 0.5 whatever the model (NormalizationScale: piecewise linear,
//    threshold - below -> 0, threshold -> 0.5, threshold + above -> 1, clipped). Two conventions:
//      robust (written by `validflow export` since model file version 3): the anchors score_low / score_high
//        are the 5th and 95th percentiles of the scores the threshold was chosen on (the upper one at least as
//        far above the threshold as the lower one is below it: robust_bounds), so one outlier cannot crowd every
//        score at 0.5: below = threshold - score_low, above = score_high - threshold.
//      minmax (anomalib's, and every model file before version 3): (score - threshold) / (score_max - score_min)
//        + 0.5, i.e. below = above = (score_max - score_min) / 2 over the full range of those scores.
//    An overridden threshold moves the 0.5 point with it (a side the anchors no longer bound gets the anchors'
//    whole width). The raw score is always reported beside it.
//  * Fail-safe: a score that is not finite (NaN or Inf: a model or an input the flow cannot handle) is never a
//    pass. decide() makes such an image anomalous *and* invalid, with normalised score 1; so do the detectors
//    for a map that is not finite. Callers report invalid images as errors (predict: exit 6; Triton: an error
//    response), never as a score (docs/reliability.md, "Fail-safe decisions").
//  * Pixel threshold: a pixel of the anomaly map (models/maps.hpp, smoothed with map_sigma) is defective when
//    its value >= pixel_threshold; chosen the same way on pixels. Maps are normalised like the scores (map_low /
//    map_high, map_min / map_max): that normalised map is what every heatmap colours (0.5 = pixel threshold).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace validflow {

/// The decision on one image (DecisionRule::decide).
struct ImageDecision {
  bool anomalous = true;
  bool valid = false;  ///< false: the score is not finite; the image is anomalous whatever the threshold
  double normalized_score = 1;
};

/// Raw values -> [0, 1], piecewise linear: threshold - below -> 0, threshold -> 0.5, threshold + above -> 1.
struct NormalizationScale {
  double threshold = 0, below = 1, above = 1;  ///< below, above > 0
  double operator()(double value) const {
    const double v =
        value < threshold ? 0.5 - 0.5 * (threshold - value) / below : 0.5 + 0.5 * (value - threshold) / above;
    return std::clamp(v, 0.0, 1.0);
  }
  /// The raw values shown at 0 and 1 (a legend's ends).
  double low() const { return threshold - below; }
  double high() const { return threshold + above; }
};

/// The q-th percentile (q in [0, 100]) of `values`, linearly interpolated (numpy's default). Throws
/// std::invalid_argument for no values.
inline double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw std::invalid_argument("percentile: no values");
  const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(lo), values.end());
  const double a = values[lo];
  if (hi == lo) return a;
  const double b = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(hi), values.end());
  return a + (rank - static_cast<double>(lo)) * (b - a);
}

/// The robust anchors of the values a threshold was chosen on: low = 5th percentile, high = 95th percentile but at
/// least threshold + (threshold - low); a low at or above the threshold is mirrored below it. low < threshold < high.
inline std::pair<double, double> robust_bounds(const std::vector<double>& values, double threshold) {
  double low = percentile(values, 5), high = percentile(values, 95);
  if (!(low < threshold)) low = threshold - std::max(high - threshold, std::max(1e-12, std::abs(threshold) * 1e-6));
  high = std::max(high, threshold + (threshold - low));
  return {low, high};
}

struct DecisionRule {
  double threshold = 0;
  std::string threshold_source;          ///< how it was chosen, in words (with the number of images)
  double score_min = 0, score_max = 1;   ///< range of the scores the threshold was chosen on
  double score_low = 0, score_high = 1;  ///< their robust anchors (robust_bounds)
  double pixel_threshold = 0;
  std::string pixel_threshold_source;
  double map_min = 0, map_max = 1;
  double map_low = 0, map_high = 1;
  double map_sigma = 4;                  ///< Gaussian smoothing of the maps, in pixels of the model's input size
  std::string normalization = "robust";  ///< "robust" or "minmax" (anomalib's; model files before version 3)

  /// Throws std::invalid_argument naming the field that is not finite or out of order.
  void validate() const {
    for (auto [name, v] : {std::pair<const char*, double>{"threshold", threshold},
                           {"score_min", score_min},
                           {"score_max", score_max},
                           {"score_low", score_low},
                           {"score_high", score_high},
                           {"pixel_threshold", pixel_threshold},
                           {"map_min", map_min},
                           {"map_max", map_max},
                           {"map_low", map_low},
                           {"map_high", map_high},
                           {"map_sigma", map_sigma}})
      if (!std::isfinite(v)) throw std::invalid_argument(std::string("decision rule: ") + name + " is not finite");
    if (!(score_max > score_min)) throw std::invalid_argument("decision rule: score_max must exceed score_min");
    if (!(map_max > map_min)) throw std::invalid_argument("decision rule: map_max must exceed map_min");
    if (!(score_high > score_low)) throw std::invalid_argument("decision rule: score_high must exceed score_low");
    if (!(map_high > map_low)) throw std::invalid_argument("decision rule: map_high must exceed map_low");
    if (map_sigma < 0 || map_sigma > 64) throw std::invalid_argument("decision rule: map_sigma must be in 0..64");
    if (normalization != "robust" && normalization != "minmax")
      throw std::invalid_argument("decision rule: normalization must be robust or minmax, got '" + normalization + "'");
  }

  /// The scale of the scores around `active_threshold` (the stored one, or an override).
  NormalizationScale score_scale(double active_threshold) const {
    return scale(active_threshold, score_low, score_high, score_min, score_max);
  }
  /// The scale of the anomaly maps around `active_pixel_threshold`: what heatmaps colour.
  NormalizationScale map_scale(double active_pixel_threshold) const {
    return scale(active_pixel_threshold, map_low, map_high, map_min, map_max);
  }
  double normalized_score(double score, double active_threshold) const { return score_scale(active_threshold)(score); }
  /// The one decision step: anomalous when score >= threshold; a non-finite score is anomalous and invalid.
  ImageDecision decide(double score, double active_threshold) const {
    if (!std::isfinite(score)) return {};
    return {score >= active_threshold, true, normalized_score(score, active_threshold)};
  }

 private:
  NormalizationScale scale(double t, double low, double high, double min, double max) const {
    if (normalization == "minmax") return {t, (max - min) / 2, (max - min) / 2};
    const double width = high - low;  // a side the anchors no longer bound (an overridden threshold) gets it all
    return {t, t > low ? t - low : width, high > t ? high - t : width};
  }
};

inline nlohmann::json to_json(const DecisionRule& d) {
  return {{"threshold", d.threshold},
          {"threshold_source", d.threshold_source},
          {"score_min", d.score_min},
          {"score_max", d.score_max},
          {"score_low", d.score_low},
          {"score_high", d.score_high},
          {"pixel_threshold", d.pixel_threshold},
          {"pixel_threshold_source", d.pixel_threshold_source},
          {"map_min", d.map_min},
          {"map_max", d.map_max},
          {"map_low", d.map_low},
          {"map_high", d.map_high},
          {"map_sigma", d.map_sigma},
          {"normalization", d.normalization}};
}

/// A decision rule of a model file: the 14 fields of version 3, or the 9 of versions 1 and 2 (`legacy`: min-max
/// normalisation, as they were written). Throws std::invalid_argument naming what is wrong.
inline DecisionRule decision_rule_from_json(const nlohmann::json& j, bool legacy = false) {
  DecisionRule d;
  try {
    const size_t fields = legacy ? 9 : 14;
    if (j.size() != fields)
      throw std::invalid_argument("expected " + std::to_string(fields) + " fields, got " + std::to_string(j.size()));
    d.threshold = j.at("threshold").get<double>();
    d.threshold_source = j.at("threshold_source").get<std::string>();
    d.score_min = j.at("score_min").get<double>();
    d.score_max = j.at("score_max").get<double>();
    d.pixel_threshold = j.at("pixel_threshold").get<double>();
    d.pixel_threshold_source = j.at("pixel_threshold_source").get<std::string>();
    d.map_min = j.at("map_min").get<double>();
    d.map_max = j.at("map_max").get<double>();
    d.map_sigma = j.at("map_sigma").get<double>();
    if (legacy) {
      d.normalization = "minmax";
      d.score_low = d.score_min, d.score_high = d.score_max, d.map_low = d.map_min, d.map_high = d.map_max;
    } else {
      d.score_low = j.at("score_low").get<double>();
      d.score_high = j.at("score_high").get<double>();
      d.map_low = j.at("map_low").get<double>();
      d.map_high = j.at("map_high").get<double>();
      d.normalization = j.at("normalization").get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("decision rule: ") + e.what());
  }
  d.validate();
  return d;
}

/// The smallest threshold that flags at most floor(target_fpr * n) of the good `scores` (rule: score >=
/// threshold). Throws std::invalid_argument for no scores or a rate outside [0, 1).
inline double threshold_at_false_positive_rate(std::vector<double> good_scores, double target_fpr) {
  if (good_scores.empty()) throw std::invalid_argument("threshold_at_false_positive_rate: no good scores");
  if (!(target_fpr >= 0 && target_fpr < 1))
    throw std::invalid_argument("threshold_at_false_positive_rate: target rate must be in [0, 1)");
  for (double s : good_scores)
    if (!std::isfinite(s)) throw std::invalid_argument("threshold_at_false_positive_rate: a score is not finite");
  std::sort(good_scores.begin(), good_scores.end(), std::greater<double>());
  const auto allowed = static_cast<size_t>(std::floor(target_fpr * static_cast<double>(good_scores.size())));
  // Just above the (allowed+1)-th largest score: at most the `allowed` largest scores reach it.
  return std::nextafter(good_scores[allowed], std::numeric_limits<double>::infinity());
}

}  // namespace validflow
