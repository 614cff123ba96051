#pragma once
// Evaluation metrics for anomaly detection. Header-only, standard library only (no torch).
//
//  * Image level: `auroc` (exact with ties: equals the Mann-Whitney U statistic / (n_pos * n_neg), the
//    average-rank formula), `roc_curve` (like sklearn's roc_curve with drop_intermediate=False),
//    `f1_optimal_threshold`, `auroc_per_type` (good samples vs each defect type).
//  * Pixel level: `PixelEvaluator` collects many anomaly maps with their ground-truth masks and computes
//    the pixel AUROC and the AUPRO (area under the per-region-overlap curve up to a false-positive-rate
//    limit, 0.3 by default, normalised by that limit, as in the MVTec AD paper). Both are sort based,
//    O(n log n) in the number of pixels, and exact with tied scores.
//  * `label_connected_components`: 8-connectivity labelling of a binary mask (the regions of AUPRO).
//
// Conventions: label 1 (or a non-zero mask pixel) is the positive, defective class; a higher score means
// more anomalous. Scores must be finite (NaN or +-inf is rejected: it signals a broken model). Every bad
// input throws `validflow::eval::MetricError` with a message that names the function and the problem.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <validflow/util/error.hpp>
#include <vector>

namespace validflow {
namespace eval {

/// Thrown for every invalid metric input (empty input, one class only, non-finite score, size mismatch).
class MetricError : public ErrorOf<std::invalid_argument, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
};

/// ROC curve points, one per distinct score threshold, from (0,0) to (1,1). Point i is the operating
/// point of the rule "score >= thresholds[i] -> defective". thresholds[0] is +infinity (nothing flagged),
/// as in sklearn >= 1.3; thresholds are strictly decreasing.
struct RocCurve {
  std::vector<double> fpr;
  std::vector<double> tpr;
  std::vector<double> thresholds;
};

/// The threshold maximising F1 for the rule "score >= threshold -> defective".
struct ThresholdResult {
  double threshold = 0.0;
  double f1 = 0.0;
  double precision = 0.0;
  double recall = 0.0;
  std::size_t true_positives = 0;
  std::size_t false_positives = 0;
  std::size_t false_negatives = 0;
};

/// The per-region-overlap curve: mean overlap of the ground-truth regions (pro) against the pixel
/// false-positive rate (fpr), one point per distinct score threshold, from (0,0) to (1,1).
struct ProCurve {
  std::vector<double> fpr;
  std::vector<double> pro;
};

namespace detail {

inline std::string where(const char* fn) { return std::string("validflow::eval::") + fn + ": "; }

inline void check_scores_labels(const char* fn, const std::vector<double>& scores, const std::vector<int>& labels,
                                std::size_t& n_pos, std::size_t& n_neg) {
  if (scores.size() != labels.size()) {
    std::ostringstream m;
    m << where(fn) << "size mismatch: " << scores.size() << " scores but " << labels.size() << " labels";
    throw MetricError(m.str());
  }
  if (scores.empty()) throw MetricError(where(fn) + "empty input (no scores)");
  n_pos = 0;
  n_neg = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!std::isfinite(scores[i])) {
      std::ostringstream m;
      m << where(fn) << "score at index " << i << " is not finite (" << scores[i] << ")";
      throw MetricError(m.str());
    }
    if (labels[i] == 1) {
      ++n_pos;
    } else if (labels[i] == 0) {
      ++n_neg;
    } else {
      std::ostringstream m;
      m << where(fn) << "label at index " << i << " is " << labels[i] << ", expected 0 (good) or 1 (defective)";
      throw MetricError(m.str());
    }
  }
  if (n_pos == 0 || n_neg == 0) {
    std::ostringstream m;
    m << where(fn) << "only one class present (" << n_pos << " defective, " << n_neg << " good); AUROC/ROC need both";
    throw MetricError(m.str());
  }
}

/// 2 * U (Mann-Whitney) for ascending-sorted positive and negative scores: for every positive, twice the
/// number of negatives strictly below it plus the number of negatives equal to it. Exact integer.
template <class T>
std::uint64_t twice_mann_whitney_sorted(const std::vector<T>& pos_sorted, const std::vector<T>& neg_sorted) {
  std::uint64_t twice_u = 0;
  std::size_t below = 0;  // negatives strictly below the current positive value
  std::size_t i = 0;
  const std::size_t np = pos_sorted.size(), nn = neg_sorted.size();
  while (i < np) {
    const T v = pos_sorted[i];
    std::size_t j = i;
    while (j < np && pos_sorted[j] == v) ++j;
    const std::uint64_t p = j - i;
    while (below < nn && neg_sorted[below] < v) ++below;
    std::size_t eq_end = below;
    while (eq_end < nn && neg_sorted[eq_end] == v) ++eq_end;
    twice_u += p * (2 * static_cast<std::uint64_t>(below) + static_cast<std::uint64_t>(eq_end - below));
    i = j;
  }
  return twice_u;
}

/// Indices of the scores sorted by decreasing score (stable).
inline std::vector<std::size_t> order_descending(const std::vector<double>& scores) {
  std::vector<std::size_t> idx(scores.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  return idx;
}

/// Calls visit(threshold, true positives, false positives) for each distinct score, highest first, with the
/// counts of samples whose score is >= threshold (tied scores enter together).
template <typename Visit>
void sweep_thresholds(const std::vector<double>& scores, const std::vector<int>& labels, Visit visit) {
  const auto idx = order_descending(scores);
  std::size_t tp = 0, fp = 0, k = 0;
  while (k < idx.size()) {
    const double t = scores[idx[k]];
    while (k < idx.size() && scores[idx[k]] == t) {
      (labels[idx[k]] == 1 ? tp : fp) += 1;
      ++k;
    }
    visit(t, tp, fp);
  }
}

}  // namespace detail

/// Area under the ROC curve. Ties count one half (exactly the Mann-Whitney U / (n_pos * n_neg)).
/// labels: 0 = good, 1 = defective; higher score = more anomalous.
inline double auroc(const std::vector<double>& scores, const std::vector<int>& labels) {
  std::size_t n_pos = 0, n_neg = 0;
  detail::check_scores_labels("auroc", scores, labels, n_pos, n_neg);
  std::vector<double> pos, neg;
  pos.reserve(n_pos);
  neg.reserve(n_neg);
  for (std::size_t i = 0; i < scores.size(); ++i) (labels[i] == 1 ? pos : neg).push_back(scores[i]);
  std::sort(pos.begin(), pos.end());
  std::sort(neg.begin(), neg.end());
  const std::uint64_t twice_u = detail::twice_mann_whitney_sorted(pos, neg);
  return static_cast<double>(twice_u) / (2.0 * static_cast<double>(n_pos) * static_cast<double>(n_neg));
}

/// ROC curve with one point per distinct score (sklearn roc_curve, drop_intermediate=False).
inline RocCurve roc_curve(const std::vector<double>& scores, const std::vector<int>& labels) {
  std::size_t n_pos = 0, n_neg = 0;
  detail::check_scores_labels("roc_curve", scores, labels, n_pos, n_neg);
  RocCurve roc;
  roc.fpr.push_back(0.0);
  roc.tpr.push_back(0.0);
  roc.thresholds.push_back(std::numeric_limits<double>::infinity());
  detail::sweep_thresholds(scores, labels, [&](double t, std::size_t tp, std::size_t fp) {
    roc.fpr.push_back(static_cast<double>(fp) / static_cast<double>(n_neg));
    roc.tpr.push_back(static_cast<double>(tp) / static_cast<double>(n_pos));
    roc.thresholds.push_back(t);
  });
  return roc;
}

/// The threshold with the highest F1 score for "score >= threshold -> defective". The candidates are the
/// distinct scores; among equal F1 the highest threshold wins.
inline ThresholdResult f1_optimal_threshold(const std::vector<double>& scores, const std::vector<int>& labels) {
  std::size_t n_pos = 0, n_neg = 0;
  detail::check_scores_labels("f1_optimal_threshold", scores, labels, n_pos, n_neg);
  ThresholdResult best;
  best.f1 = -1.0;
  detail::sweep_thresholds(scores, labels, [&](double t, std::size_t tp, std::size_t fp) {
    const std::size_t fn = n_pos - tp;
    const double f1 = 2.0 * tp / static_cast<double>(2 * tp + fp + fn);
    if (f1 > best.f1) {
      best.threshold = t;
      best.f1 = f1;
      best.precision = tp + fp > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fp) : 0.0;
      best.recall = static_cast<double>(tp) / static_cast<double>(n_pos);
      best.true_positives = tp;
      best.false_positives = fp;
      best.false_negatives = fn;
    }
  });
  return best;
}

/// All good samples (label 0) with the defective samples of one defect type.
struct TypeSubset {
  std::vector<double> scores;
  std::vector<int> labels;
};

/// The per-defect-type subsets (good samples + that type's defects), keyed by type. types[i] is the defect
/// type of sample i (ignored for good samples).
inline std::map<std::string, TypeSubset> subsets_per_type(const std::vector<double>& scores,
                                                          const std::vector<int>& labels,
                                                          const std::vector<std::string>& types) {
  std::size_t n_pos = 0, n_neg = 0;
  detail::check_scores_labels("subsets_per_type", scores, labels, n_pos, n_neg);
  if (types.size() != scores.size()) {
    std::ostringstream m;
    m << detail::where("subsets_per_type") << "size mismatch: " << scores.size() << " scores but " << types.size()
      << " types";
    throw MetricError(m.str());
  }
  std::map<std::string, TypeSubset> out;
  for (std::size_t i = 0; i < types.size(); ++i) {
    if (labels[i] != 1 || out.count(types[i])) continue;
    auto& subset = out[types[i]];
    for (std::size_t j = 0; j < types.size(); ++j) {
      if (labels[j] == 0 || types[j] == types[i]) {
        subset.scores.push_back(scores[j]);
        subset.labels.push_back(labels[j]);
      }
    }
  }
  return out;
}

/// AUROC of all good samples against the defective samples of each defect type, keyed by type.
inline std::map<std::string, double> auroc_per_type(const std::vector<double>& scores, const std::vector<int>& labels,
                                                    const std::vector<std::string>& types) {
  std::map<std::string, double> out;
  for (const auto& [type, subset] : subsets_per_type(scores, labels, types))
    out[type] = auroc(subset.scores, subset.labels);
  return out;
}

/// ROC curve of all good samples against the defective samples of each defect type, keyed by type.
inline std::map<std::string, RocCurve> roc_per_type(const std::vector<double>& scores, const std::vector<int>& labels,
                                                    const std::vector<std::string>& types) {
  std::map<std::string, RocCurve> out;
  for (const auto& [type, subset] : subsets_per_type(scores, labels, types))
    out[type] = roc_curve(subset.scores, subset.labels);
  return out;
}

/// Labels the 8-connected components of a binary mask (non-zero = foreground), row-major height x width.
/// labels receives height*width entries: 0 for background, 1..n for the components in raster order of
/// their first pixel. Returns n.
inline int label_connected_components(const std::uint8_t* mask, int height, int width, std::vector<int>& labels) {
  if (height < 0 || width < 0) throw MetricError(detail::where("label_connected_components") + "negative size");
  const std::size_t n = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  labels.assign(n, 0);
  if (n == 0) return 0;
  if (mask == nullptr) throw MetricError(detail::where("label_connected_components") + "mask is null");
  int count = 0;
  std::vector<std::size_t> stack;
  for (std::size_t start = 0; start < n; ++start) {
    if (mask[start] == 0 || labels[start] != 0) continue;
    ++count;
    labels[start] = count;
    stack.push_back(start);
    while (!stack.empty()) {
      const std::size_t p = stack.back();
      stack.pop_back();
      const int y = static_cast<int>(p / static_cast<std::size_t>(width));
      const int x = static_cast<int>(p % static_cast<std::size_t>(width));
      for (int dy = -1; dy <= 1; ++dy) {
        const int yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (int dx = -1; dx <= 1; ++dx) {
          const int xx = x + dx;
          if ((dx == 0 && dy == 0) || xx < 0 || xx >= width) continue;
          const std::size_t q =
              static_cast<std::size_t>(yy) * static_cast<std::size_t>(width) + static_cast<std::size_t>(xx);
          if (mask[q] != 0 && labels[q] == 0) {
            labels[q] = count;
            stack.push_back(q);
          }
        }
      }
    }
  }
  return count;
}

/// Collects anomaly maps and ground-truth masks image by image, then computes the pixel AUROC and the
/// AUPRO over all pixels of all images. Memory: 4 bytes per good pixel, 8 per defective pixel. The
/// computations sort the internal buffers in place (hence non-const); more images may be added after.
class PixelEvaluator {
 public:
  /// scores: height*width anomaly map (row-major); mask: height*width ground truth, non-zero = defective
  /// pixel, or nullptr for an image without defects.
  void add(const float* scores, const std::uint8_t* mask, int height, int width) {
    if (height <= 0 || width <= 0) {
      std::ostringstream m;
      m << detail::where("PixelEvaluator::add") << "image " << images_ << " has an empty map (" << height << "x"
        << width << ")";
      throw MetricError(m.str());
    }
    if (scores == nullptr) throw MetricError(detail::where("PixelEvaluator::add") + "scores pointer is null");
    const std::size_t n = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(scores[i])) {
        std::ostringstream m;
        m << detail::where("PixelEvaluator::add") << "image " << images_ << ": score at pixel (" << i / width << ","
          << i % width << ") is not finite (" << scores[i] << ")";
        throw MetricError(m.str());
      }
    }
    std::vector<int> comp;
    const int n_comp = mask ? label_connected_components(mask, height, width, comp) : 0;
    const std::uint32_t base = static_cast<std::uint32_t>(region_size_.size());
    region_size_.resize(region_size_.size() + static_cast<std::size_t>(n_comp), 0);
    for (std::size_t i = 0; i < n; ++i) {
      if (mask && mask[i] != 0) {
        const std::uint32_t r = base + static_cast<std::uint32_t>(comp[i] - 1);
        defect_.emplace_back(scores[i], r);
        ++region_size_[r];
      } else {
        ok_.push_back(scores[i]);
      }
    }
    ++images_;
    sorted_ = false;
  }

  /// Vector overload: mask may be empty (image without defects), otherwise it must match scores.
  void add(const std::vector<float>& scores, const std::vector<std::uint8_t>& mask, int height, int width) {
    const std::size_t n =
        static_cast<std::size_t>(height < 0 ? 0 : height) * static_cast<std::size_t>(width < 0 ? 0 : width);
    if (scores.size() != n || (!mask.empty() && mask.size() != n)) {
      std::ostringstream m;
      m << detail::where("PixelEvaluator::add") << "image " << images_ << ": size mismatch: " << height << "x" << width
        << " = " << n << " pixels, but " << scores.size() << " scores and " << mask.size() << " mask values";
      throw MetricError(m.str());
    }
    add(scores.data(), mask.empty() ? nullptr : mask.data(), height, width);
  }

  /// Optional: reserves room for this many good pixels (avoids re-allocation peaks for large test sets).
  void reserve(std::size_t total_pixels) { ok_.reserve(total_pixels); }

  std::size_t num_images() const { return images_; }
  std::size_t num_pixels() const { return ok_.size() + defect_.size(); }
  std::size_t num_defect_pixels() const { return defect_.size(); }
  std::size_t num_regions() const { return region_size_.size(); }

  /// Pixel-level AUROC (defective pixels vs all other pixels), exact with ties.
  double auroc() {
    require_both("auroc");
    sort_buffers();
    // Both buffers are sorted descending: walk the positives from the top, counting negatives above.
    const std::size_t np = defect_.size(), nn = ok_.size();
    std::uint64_t twice_u = 0;
    std::size_t above = 0, j = 0;  // negatives strictly above the current positive value
    while (j < np) {
      const float v = defect_[j].first;
      std::size_t k = j;
      while (k < np && defect_[k].first == v) ++k;
      while (above < nn && ok_[above] > v) ++above;
      std::size_t eq_end = above;
      while (eq_end < nn && ok_[eq_end] == v) ++eq_end;
      const std::uint64_t below = nn - eq_end;
      twice_u += static_cast<std::uint64_t>(k - j) * (2 * below + static_cast<std::uint64_t>(eq_end - above));
      j = k;
    }
    return static_cast<double>(twice_u) / (2.0 * static_cast<double>(np) * static_cast<double>(nn));
  }

  /// The per-region-overlap curve over all distinct thresholds. The false-positive rate counts every
  /// pixel outside the ground-truth regions (of good and defective images); the overlap of a threshold is
  /// the mean over all regions of all images of the fraction of the region's pixels at or above it.
  /// One point per distinct score: for plotting large sets, thin it out; aupro() does not store it.
  ProCurve pro_curve() {
    require_both("pro_curve");
    ProCurve c;
    c.fpr.push_back(0.0);
    c.pro.push_back(0.0);
    sweep([&](double fpr, double pro) {
      c.fpr.push_back(fpr);
      c.pro.push_back(pro);
      return true;
    });
    return c;
  }

  /// Area under the PRO curve for fpr in [0, fpr_limit], divided by fpr_limit (so 1 is perfect). The
  /// curve is linearly interpolated at fpr_limit.
  double aupro(double fpr_limit = 0.3) {
    if (!(fpr_limit > 0.0 && fpr_limit <= 1.0)) {
      std::ostringstream m;
      m << detail::where("PixelEvaluator::aupro") << "fpr_limit must be in (0, 1], got " << fpr_limit;
      throw MetricError(m.str());
    }
    require_both("aupro");
    long double area = 0.0L;
    double x0 = 0.0, y0 = 0.0;
    sweep([&](double x1, double y1) {
      if (x1 <= fpr_limit) {
        area += 0.5L * (x1 - x0) * (static_cast<long double>(y0) + y1);
        x0 = x1;
        y0 = y1;
        return x1 < fpr_limit;
      }
      const double y_at = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0);
      area += 0.5L * (fpr_limit - x0) * (static_cast<long double>(y0) + y_at);
      return false;
    });
    return static_cast<double>(area) / fpr_limit;
  }

 private:
  /// Walks the thresholds from the highest score down; calls point(fpr, pro) after each group of equal
  /// scores until it returns false. The last point is (1, 1).
  template <class F>
  void sweep(F&& point) {
    sort_buffers();
    const double n_ok = static_cast<double>(ok_.size());
    const long double n_regions = static_cast<long double>(region_size_.size());
    std::size_t i = 0, j = 0, fp = 0;
    long double overlap_sum = 0.0L;  // sum over regions of the covered fraction
    while (i < ok_.size() || j < defect_.size()) {
      float t;
      if (i < ok_.size() && j < defect_.size())
        t = std::max(ok_[i], defect_[j].first);
      else if (i < ok_.size())
        t = ok_[i];
      else
        t = defect_[j].first;
      while (i < ok_.size() && ok_[i] == t) {
        ++fp;
        ++i;
      }
      while (j < defect_.size() && defect_[j].first == t) {
        overlap_sum += 1.0L / static_cast<long double>(region_size_[defect_[j].second]);
        ++j;
      }
      const bool last = i == ok_.size() && j == defect_.size();
      // At the lowest threshold every region is fully covered: report exactly 1 (no rounding residue).
      const double pro = last ? 1.0 : static_cast<double>(std::min(overlap_sum / n_regions, 1.0L));
      if (!point(static_cast<double>(fp) / n_ok, pro)) return;
    }
  }

  void require_both(const char* fn) const {
    const std::string name = std::string("PixelEvaluator::") + fn;
    if (images_ == 0) throw MetricError(detail::where(name.c_str()) + "empty input (no maps added)");
    if (defect_.empty() || ok_.empty()) {
      std::ostringstream m;
      m << detail::where(name.c_str()) << "only one class present (" << defect_.size() << " defective pixels, "
        << ok_.size() << " good pixels); pixel metrics need both";
      throw MetricError(m.str());
    }
  }
  void sort_buffers() {
    if (sorted_) return;
    std::sort(ok_.begin(), ok_.end(), [](float a, float b) { return a > b; });
    std::sort(defect_.begin(), defect_.end(),
              [](const std::pair<float, std::uint32_t>& a, const std::pair<float, std::uint32_t>& b) {
                return a.first > b.first;
              });
    sorted_ = true;
  }

  std::vector<float> ok_;                                // scores of pixels outside every region
  std::vector<std::pair<float, std::uint32_t>> defect_;  // (score, global region id)
  std::vector<std::uint32_t> region_size_;               // pixels per region
  std::size_t images_ = 0;
  bool sorted_ = false;
};

}  // namespace eval
}  // namespace validflow
