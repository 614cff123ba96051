#pragma once
// Evaluation report of the `validflow` program (examples layer: OpenCV + nlohmann-json + std).
//
//   write_roc_png        ROC curve(s) with axes, grid, diagonal and AUROC in the legend
//   write_histogram_png  score distributions of good vs defective test images (cf. the paper's Fig. 4)
//   render_heatmap_overlay / write_heatmap_png
//                        a normalised anomaly map (0.5 = pixel threshold) bilinearly upsampled to the image, coloured
//                        on the library's one heatmap scale (detect/heatmap.hpp), optional ground-truth contour and
//                        a legend with the raw values of its colours (cf. Fig. 5)
//   write_metrics_json   metrics.json (see MetricsSummary)
//   write_scores_csv     scores.csv: path,label,type,score
//   write_index_html     index.html showing the metrics, the ROC, the histogram and the heatmaps
// Every file is written atomically (temporary file in the same folder, then rename); parent folders are
// created. Write failures throw validflow::FileError naming the path; invalid plot inputs throw ReportError.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <validflow/detect/heatmap.hpp>
#include <validflow/util/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <validflow/io/files.hpp>

namespace validflow {
namespace app {

class ReportError : public ErrorOf<std::runtime_error, ErrorKind::file> {
 public:
  using ErrorOf::ErrorOf;
};

/// Encodes img as PNG (8-bit gray/BGR/BGRA) and writes it atomically.
void write_png_atomic(const std::string& path, const cv::Mat& img);

// ---- plotting helpers -------------------------------------------------------------------------------

// ---- ROC -------------------------------------------------------------------------------------------

struct RocSeries {
  std::string name;         // e.g. "all" or a defect type
  std::vector<double> fpr;  // from validflow::eval::roc_curve
  std::vector<double> tpr;
  double auroc = std::numeric_limits<double>::quiet_NaN();
};

/// ROC plot (BGR, size x size). The first series is drawn thicker (the overall curve).
cv::Mat render_roc(const std::vector<RocSeries>& series, int size = 600, const std::string& title = "ROC curve");

void write_roc_png(const std::string& path, const std::vector<RocSeries>& series, int size = 600,
                   const std::string& title = "ROC curve");

// ---- histogram -------------------------------------------------------------------------------------

/// Histogram of the scores of good (label 0) and defective (label 1) images, overlaid semi-transparently,
/// with an optional threshold line.
cv::Mat render_histogram(const std::vector<double>& scores, const std::vector<int>& labels,
                         std::optional<double> threshold = std::nullopt, int bins = 40, int width = 760,
                         int height = 460, const std::string& xlabel = "anomaly score",
                         const std::string& title = "Score distribution");

void write_histogram_png(const std::string& path, const std::vector<double>& scores, const std::vector<int>& labels,
                         std::optional<double> threshold = std::nullopt, int bins = 40);

// ---- heatmaps --------------------------------------------------------------------------------------

struct OverlayOptions {
  bool mask_contour = true;            // draw the ground-truth outline if a mask is given
  bool side_by_side = false;           // [image | overlay]
  std::optional<HeatmapScale> legend;  // a colour bar below, labelled with these raw values (low, threshold, high)
};

/// The normalised anomaly map (CV_32FC1 in [0, 1], 0.5 at the pixel threshold; any size, bilinearly upsampled to
/// the image) coloured with heatmap_colour over the image (RGB, 8-bit or float in [0, 1]); `mask` (CV_8UC1,
/// non-zero = defect, any size; may be empty) is outlined in white. Returns CV_8UC3 BGR.
cv::Mat render_heatmap_overlay(const cv::Mat& image, const cv::Mat& normalized_map, const cv::Mat& mask = {},
                               const OverlayOptions& opt = {});

void write_heatmap_png(const std::string& path, const cv::Mat& image, const cv::Mat& normalized_map,
                       const cv::Mat& mask = {}, const OverlayOptions& opt = {});

// ---- metrics.json, scores.csv ------------------------------------------------------------------------

struct MetricsSummary {
  double image_auroc = std::numeric_limits<double>::quiet_NaN();
  std::map<std::string, double> image_auroc_per_type;
  std::optional<double> pixel_auroc;  // null without masks
  std::optional<double> aupro;        // null without masks
  std::size_t n_test = 0;
  std::size_t n_defective = 0;
  double threshold = std::numeric_limits<double>::quiet_NaN();  // F1-optimal: score >= threshold -> defective
  double f1 = std::numeric_limits<double>::quiet_NaN();
  double precision = std::numeric_limits<double>::quiet_NaN();
  double recall = std::numeric_limits<double>::quiet_NaN();
  nlohmann::json extra = nlohmann::json::object();  // merged at top level (dataset, model, timings, ...)
};

nlohmann::json to_json(const MetricsSummary& m);

void write_metrics_json(const std::string& path, const MetricsSummary& m);

struct ScoreRow {
  std::string path;
  int label = 0;
  std::string type;
  double score = 0.0;
};

/// scores.csv with header `path,label,type,score` (RFC 4180 quoting; scores with round-trip precision).
void write_scores_csv(const std::string& path, const std::vector<ScoreRow>& rows);

// ---- index.html ----------------------------------------------------------------------------------

struct HeatmapEntry {
  std::string file;        // PNG path relative to index.html, e.g. "heatmaps/003_crack.png"
  std::string image_path;  // the source image
  int label = 0;
  std::string type;
  double score = 0.0;
  std::string group;  // e.g. "most anomalous" / "least anomalous" (one section per group, in order)
  double normalized_score = std::numeric_limits<double>::quiet_NaN();  // 0.5 = the image threshold (when known)
};

struct ReportPage {
  std::string title = "ValidFlow evaluation";
  MetricsSummary metrics;
  std::string roc_png = "roc.png";
  std::string histogram_png = "histogram.png";
  std::vector<HeatmapEntry> heatmaps;
  std::optional<HeatmapScale> heatmap_scale;  // the raw map values of the heatmaps' colours
  std::string pixel_threshold_source;
  int pixel_resolution = 0;  // side of the maps and of the pixel metrics (the model's input size)
  std::vector<std::pair<std::string, std::string>> info;  // extra key/value rows (dataset, model, command)
};

std::string render_index_html(const ReportPage& p);

void write_index_html(const std::string& path, const ReportPage& p);

}  // namespace app
}  // namespace validflow
