#pragma once
// Decisions from scores, stored in a model file and adjustable at run time.
//
//  * Image threshold: an image is anomalous when its raw score >= threshold. Chosen when the model is exported:
//    the F1-optimal threshold on a labelled test set, or, without defective images, the threshold that flags
//    at most a target fraction (false-positive rate) of held-out good images.
//  * Normalised score (anomalib's convention): (score - threshold) / (score_max - score_min) + 0.5, clipped
//    to [0, 1], so the threshold sits at 0.5 whatever the model; score_min / score_max are the range of the
//    scores the threshold was chosen on. An overridden threshold moves the 0.5 point with it.
//  * Fail-safe: a score that is not finite (NaN or Inf: a model or an input the flow cannot handle) is never a
//    pass. decide() makes such an image anomalous *and* invalid, with normalised score 1; so do the detectors
//    for a map that is not finite. Callers report invalid images as errors (predict: exit 6; Triton: an error
//    response), never as a score (docs/reliability.md, "Fail-safe decisions").
//  * Pixel threshold: a pixel of the anomaly map (models/maps.hpp, smoothed with map_sigma) is defective when
//    its value >= pixel_threshold; chosen the same way on pixels. Maps are normalised like the scores.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace validflow {

/// The decision on one image (DecisionRule::decide).
struct ImageDecision {
  bool anomalous = true;
  bool valid = false;  ///< false: the score is not finite; the image is anomalous whatever the threshold
  double normalized_score = 1;
};

struct DecisionRule {
  double threshold = 0;
  std::string threshold_source;  ///< how it was chosen, in words (with the number of images)
  double score_min = 0, score_max = 1;
  double pixel_threshold = 0;
  std::string pixel_threshold_source;
  double map_min = 0, map_max = 1;
  double map_sigma = 4;  ///< Gaussian smoothing of the maps, in pixels of the model's input size

  /// Throws std::invalid_argument naming the field that is not finite or out of order.
  void validate() const {
    for (auto [name, v] : {std::pair<const char*, double>{"threshold", threshold},
                           {"score_min", score_min},
                           {"score_max", score_max},
                           {"pixel_threshold", pixel_threshold},
                           {"map_min", map_min},
                           {"map_max", map_max},
                           {"map_sigma", map_sigma}})
      if (!std::isfinite(v)) throw std::invalid_argument(std::string("decision rule: ") + name + " is not finite");
    if (!(score_max > score_min)) throw std::invalid_argument("decision rule: score_max must exceed score_min");
    if (!(map_max > map_min)) throw std::invalid_argument("decision rule: map_max must exceed map_min");
    if (map_sigma < 0 || map_sigma > 64) throw std::invalid_argument("decision rule: map_sigma must be in 0..64");
  }

  static double normalized(double value, double threshold, double lo, double hi) {
    return std::clamp((value - threshold) / (hi - lo) + 0.5, 0.0, 1.0);
  }
  double normalized_score(double score, double active_threshold) const {
    return normalized(score, active_threshold, score_min, score_max);
  }
  /// The one decision step: anomalous when score >= threshold; a non-finite score is anomalous and invalid.
  ImageDecision decide(double score, double active_threshold) const {
    if (!std::isfinite(score)) return {};
    return {score >= active_threshold, true, normalized_score(score, active_threshold)};
  }
};

inline nlohmann::json to_json(const DecisionRule& d) {
  return {{"threshold", d.threshold},
          {"threshold_source", d.threshold_source},
          {"score_min", d.score_min},
          {"score_max", d.score_max},
          {"pixel_threshold", d.pixel_threshold},
          {"pixel_threshold_source", d.pixel_threshold_source},
          {"map_min", d.map_min},
          {"map_max", d.map_max},
          {"map_sigma", d.map_sigma}};
}

inline DecisionRule decision_rule_from_json(const nlohmann::json& j) {
  DecisionRule d;
  try {
    if (j.size() != 9) throw std::invalid_argument("expected 9 fields, got " + std::to_string(j.size()));
    d.threshold = j.at("threshold").get<double>();
    d.threshold_source = j.at("threshold_source").get<std::string>();
    d.score_min = j.at("score_min").get<double>();
    d.score_max = j.at("score_max").get<double>();
    d.pixel_threshold = j.at("pixel_threshold").get<double>();
    d.pixel_threshold_source = j.at("pixel_threshold_source").get<std::string>();
    d.map_min = j.at("map_min").get<double>();
    d.map_max = j.at("map_max").get<double>();
    d.map_sigma = j.at("map_sigma").get<double>();
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
