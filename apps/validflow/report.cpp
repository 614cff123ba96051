#include "report.hpp"
#include <validflow/util/text.hpp>

namespace validflow {
namespace app {

// Internal helpers (declared here, defined below).
namespace detail {

struct PlotArea {
  cv::Rect r;  // pixel rectangle of the axes
  double x0, x1, y0, y1;
  cv::Point map(double x, double y) const {
    const double fx = (x - x0) / (x1 - x0), fy = (y - y0) / (y1 - y0);
    return {r.x + static_cast<int>(std::lround(fx * r.width)),
            r.y + r.height - static_cast<int>(std::lround(fy * r.height))};
  }
};

const cv::Scalar& palette(std::size_t i);

void put_text(cv::Mat& img, const std::string& s, cv::Point org, double scale = 0.45,
              const cv::Scalar& color = {30, 30, 30}, int thickness = 1);

cv::Size text_size(const std::string& s, double scale = 0.45, int thickness = 1);

/// Text rotated 90 degrees counter-clockwise, centred vertically on `center_y`, left edge at x.
void put_vertical_text(cv::Mat& img, const std::string& s, int x, int center_y, double scale = 0.5);

std::string fmt(double v, const char* f = "%.3g");

/// Axes box, grid, tick labels and axis labels.
void draw_axes(cv::Mat& img, const PlotArea& a, const std::vector<double>& xt, const std::vector<double>& yt,
               const std::string& xlabel, const std::string& ylabel, const char* xfmt, const char* yfmt);

void draw_title(cv::Mat& img, const std::string& title);

/// Legend box in the given corner of the axes: entries of (colour, text, filled box or line).
void draw_legend(cv::Mat& img, const cv::Rect& axes, const std::vector<std::pair<cv::Scalar, std::string>>& items,
                 bool boxes, bool bottom_right);

/// Any of CV_32FC3 RGB [0,1] (load_image), CV_8UC3 RGB, CV_8UC1, CV_32FC1 [0,1]  ->  CV_8UC3 BGR.
cv::Mat to_bgr8(const cv::Mat& image);
std::string html_escape(const std::string& s);
std::string html_num(const std::optional<double>& v, const char* f = "%.4f");
}  // namespace detail

void write_png_atomic(const std::string& path, const cv::Mat& img) {
  std::vector<unsigned char> buf;
  if (img.empty() || !cv::imencode(".png", img, buf)) throw ReportError("cannot encode PNG for " + path);
  io::write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()));
}

namespace detail {
const cv::Scalar& palette(std::size_t i) {
  static const std::vector<cv::Scalar> p{{180, 90, 20},  {40, 40, 215},  {60, 160, 40}, {20, 140, 230},
                                         {160, 60, 150}, {140, 140, 20}, {90, 90, 90},  {40, 180, 200}};
  return p[i % p.size()];
}

void put_text(cv::Mat& img, const std::string& s, cv::Point org, double scale, const cv::Scalar& color, int thickness) {
  cv::putText(img, s, org, cv::FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv::LINE_AA);
}

cv::Size text_size(const std::string& s, double scale, int thickness) {
  int base = 0;
  return cv::getTextSize(s, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &base);
}

void put_vertical_text(cv::Mat& img, const std::string& s, int x, int center_y, double scale) {
  const cv::Size ts = text_size(s, scale);
  cv::Mat t(ts.height + 8, ts.width + 4, CV_8UC3, cv::Scalar(255, 255, 255));
  put_text(t, s, {2, ts.height + 2}, scale);
  cv::Mat r;
  cv::rotate(t, r, cv::ROTATE_90_COUNTERCLOCKWISE);
  const int y = std::max(0, center_y - r.rows / 2);
  cv::Rect roi(x, y, std::min(r.cols, img.cols - x), std::min(r.rows, img.rows - y));
  r(cv::Rect(0, 0, roi.width, roi.height)).copyTo(img(roi));
}

std::string fmt(double v, const char* f) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

void draw_axes(cv::Mat& img, const PlotArea& a, const std::vector<double>& xt, const std::vector<double>& yt,
               const std::string& xlabel, const std::string& ylabel, const char* xfmt, const char* yfmt) {
  for (double x : xt) {
    const cv::Point p = a.map(x, a.y0);
    cv::line(img, {p.x, a.r.y}, {p.x, a.r.y + a.r.height}, {225, 225, 225}, 1);
    const std::string s = fmt(x, xfmt);
    put_text(img, s, {p.x - text_size(s).width / 2, a.r.y + a.r.height + 18});
  }
  for (double y : yt) {
    const cv::Point p = a.map(a.x0, y);
    cv::line(img, {a.r.x, p.y}, {a.r.x + a.r.width, p.y}, {225, 225, 225}, 1);
    const std::string s = fmt(y, yfmt);
    put_text(img, s, {a.r.x - 8 - text_size(s).width, p.y + 5});
  }
  cv::rectangle(img, a.r, {40, 40, 40}, 1);
  const cv::Size xs = text_size(xlabel, 0.55);
  put_text(img, xlabel, {a.r.x + a.r.width / 2 - xs.width / 2, a.r.y + a.r.height + 44}, 0.55);
  put_vertical_text(img, ylabel, 6, a.r.y + a.r.height / 2, 0.55);
}

void draw_title(cv::Mat& img, const std::string& title) {
  const cv::Size ts = text_size(title, 0.6);
  put_text(img, title, {img.cols / 2 - ts.width / 2, 26}, 0.6, {20, 20, 20}, 1);
}

void draw_legend(cv::Mat& img, const cv::Rect& axes, const std::vector<std::pair<cv::Scalar, std::string>>& items,
                 bool boxes, bool bottom_right) {
  int w = 0;
  for (const auto& it : items) w = std::max(w, text_size(it.second).width);
  const int row = 20, bw = w + 44, bh = static_cast<int>(items.size()) * row + 10;
  const int x = axes.x + axes.width - bw - 10;
  const int y = bottom_right ? axes.y + axes.height - bh - 10 : axes.y + 10;
  cv::rectangle(img, {x, y, bw, bh}, {255, 255, 255}, cv::FILLED);
  cv::rectangle(img, {x, y, bw, bh}, {160, 160, 160}, 1);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const int cy = y + 15 + static_cast<int>(i) * row;
    if (boxes)
      cv::rectangle(img, {x + 8, cy - 6, 20, 11}, items[i].first, cv::FILLED);
    else
      cv::line(img, {x + 8, cy}, {x + 28, cy}, items[i].first, 2, cv::LINE_AA);
    put_text(img, items[i].second, {x + 36, cy + 5});
  }
}

}  // namespace detail
cv::Mat render_roc(const std::vector<RocSeries>& series, int size, const std::string& title) {
  if (series.empty()) throw ReportError("render_roc: no ROC series given");
  cv::Mat img(size, size, CV_8UC3, cv::Scalar(255, 255, 255));
  detail::PlotArea a{cv::Rect(72, 40, size - 72 - 24, size - 40 - 66), 0.0, 1.0, 0.0, 1.0};
  const std::vector<double> ticks{0.0, 0.2, 0.4, 0.6, 0.8, 1.0};
  detail::draw_axes(img, a, ticks, ticks, "False positive rate", "True positive rate", "%.1f", "%.1f");
  for (int k = 0; k < 40; k += 2) {  // dashed chance diagonal
    cv::line(img, a.map(k / 40.0, k / 40.0), a.map((k + 1) / 40.0, (k + 1) / 40.0), {150, 150, 150}, 1, cv::LINE_AA);
  }
  std::vector<std::pair<cv::Scalar, std::string>> legend;
  for (std::size_t i = series.size(); i-- > 0;) {  // overall curve last, on top
    const auto& s = series[i];
    if (s.fpr.size() != s.tpr.size() || s.fpr.empty())
      throw ReportError("render_roc: series \"" + s.name + "\" has mismatched or empty fpr/tpr");
    std::vector<cv::Point> pts;
    for (std::size_t k = 0; k < s.fpr.size(); ++k) pts.push_back(a.map(s.fpr[k], s.tpr[k]));
    cv::polylines(img, pts, false, detail::palette(i), i == 0 ? 2 : 1, cv::LINE_AA);
  }
  for (std::size_t i = 0; i < series.size(); ++i)
    legend.emplace_back(detail::palette(i), series[i].name + " (AUROC " + detail::fmt(series[i].auroc, "%.4f") + ")");
  detail::draw_legend(img, a.r, legend, false, true);
  detail::draw_title(img, title);
  return img;
}

void write_roc_png(const std::string& path, const std::vector<RocSeries>& series, int size, const std::string& title) {
  write_png_atomic(path, render_roc(series, size, title));
}

namespace detail {
/// The x range of a histogram: every score and the threshold, widened when all are equal.
std::pair<double, double> histogram_range(const std::vector<double>& scores, std::optional<double> threshold) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double s : scores) {
    if (!std::isfinite(s)) throw ReportError("render_histogram: a score is not finite");
    lo = std::min(lo, s);
    hi = std::max(hi, s);
  }
  if (threshold && std::isfinite(*threshold)) {
    lo = std::min(lo, *threshold);
    hi = std::max(hi, *threshold);
  }
  if (hi - lo < 1e-12) return {lo - 0.5, hi + 0.5};
  return {lo, hi};
}

/// A "nice" tick step (1, 2 or 5 times a power of ten, at least 1) for about five ticks up to `max_count`.
double nice_count_step(int max_count) {
  const double raw_step = max_count / 5.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(std::max(raw_step, 1.0))));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw_step) return std::max(1.0, m * magnitude);
  return std::max(1.0, magnitude);
}

/// Translucent bars of per-bin counts over the plot area.
void draw_bars(cv::Mat& img, const PlotArea& a, const std::vector<int>& counts, const cv::Scalar& colour) {
  const int bins = static_cast<int>(counts.size());
  cv::Mat layer = img.clone();
  for (int b = 0; b < bins; ++b) {
    if (!counts[static_cast<std::size_t>(b)]) continue;
    const cv::Point p0 = a.map(a.x0 + (a.x1 - a.x0) * b / bins, 0),
                    p1 = a.map(a.x0 + (a.x1 - a.x0) * (b + 1) / bins, counts[static_cast<std::size_t>(b)]);
    cv::rectangle(layer, cv::Rect(cv::Point(p0.x + 1, p1.y), cv::Point(p1.x, p0.y)), colour, cv::FILLED);
  }
  cv::addWeighted(layer, 0.55, img, 0.45, 0.0, img);
}
}  // namespace detail

cv::Mat render_histogram(const std::vector<double>& scores, const std::vector<int>& labels,
                         std::optional<double> threshold, int bins, int width, int height, const std::string& xlabel,
                         const std::string& title) {
  if (scores.empty()) throw ReportError("render_histogram: no scores");
  if (scores.size() != labels.size())
    throw ReportError("render_histogram: " + std::to_string(scores.size()) + " scores but " +
                      std::to_string(labels.size()) + " labels");
  if (bins < 1) throw ReportError("render_histogram: bins must be >= 1");
  const auto [lo, hi] = detail::histogram_range(scores, threshold);
  std::vector<int> good(static_cast<std::size_t>(bins), 0), bad(static_cast<std::size_t>(bins), 0);
  int n_good = 0, n_bad = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const int b = std::clamp(static_cast<int>((scores[i] - lo) / (hi - lo) * bins), 0, bins - 1);
    (labels[i] == 1 ? bad : good)[static_cast<std::size_t>(b)]++;
    (labels[i] == 1 ? n_bad : n_good)++;
  }
  const int ymax_count =
      std::max(1, std::max(*std::max_element(good.begin(), good.end()), *std::max_element(bad.begin(), bad.end())));
  const double step = detail::nice_count_step(ymax_count);
  const double ytop = std::ceil(ymax_count * 1.1 / step) * step;

  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  detail::PlotArea a{cv::Rect(72, 40, width - 72 - 24, height - 40 - 66), lo, hi, 0.0, ytop};
  std::vector<double> xt, yt;
  for (int k = 0; k <= 5; ++k) xt.push_back(lo + (hi - lo) * k / 5.0);
  for (double y = 0; y <= ytop + 1e-9; y += step) yt.push_back(y);
  detail::draw_axes(img, a, xt, yt, xlabel, "count", "%.3g", "%.0f");
  const cv::Scalar c_good(200, 120, 40), c_bad(40, 40, 210);
  detail::draw_bars(img, a, good, c_good);
  detail::draw_bars(img, a, bad, c_bad);
  cv::rectangle(img, a.r, {40, 40, 40}, 1);
  std::vector<std::pair<cv::Scalar, std::string>> legend{{c_good, "good (n=" + std::to_string(n_good) + ")"},
                                                         {c_bad, "defective (n=" + std::to_string(n_bad) + ")"}};
  if (threshold && std::isfinite(*threshold)) {
    const int x = a.map(*threshold, 0).x;
    for (int y = a.r.y; y < a.r.y + a.r.height; y += 10)
      cv::line(img, {x, y}, {x, std::min(y + 5, a.r.y + a.r.height)}, {20, 20, 20}, 1);
    legend.emplace_back(cv::Scalar(20, 20, 20), "threshold " + detail::fmt(*threshold, "%.4g"));
  }
  detail::draw_legend(img, a.r, legend, true, false);
  detail::draw_title(img, title);
  return img;
}

void write_histogram_png(const std::string& path, const std::vector<double>& scores, const std::vector<int>& labels,
                         std::optional<double> threshold, int bins) {
  write_png_atomic(path, render_histogram(scores, labels, threshold, bins));
}

namespace detail {
cv::Mat to_bgr8(const cv::Mat& image) {
  cv::Mat u8, bgr;
  if (image.depth() == CV_32F)
    image.convertTo(u8, CV_8U, 255.0);
  else if (image.depth() == CV_8U)
    u8 = image;
  else
    throw ReportError("heatmap overlay: image must be 8-bit or float");
  if (u8.channels() == 1)
    cv::cvtColor(u8, bgr, cv::COLOR_GRAY2BGR);
  else if (u8.channels() == 3)
    cv::cvtColor(u8, bgr, cv::COLOR_RGB2BGR);
  else
    throw ReportError("heatmap overlay: image must have 1 or 3 channels");
  return bgr;
}

}  // namespace detail
namespace detail {
/// A colour bar of the heatmap scale, `width` wide, with the raw values at its ends and at the threshold.
cv::Mat render_heatmap_legend(int width, const HeatmapScale& scale) {
  const int bar = 12, height = 38, left = 6, right = width - 6;
  cv::Mat legend(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  for (int x = left; x < right; ++x) {
    const float v = static_cast<float>(x - left) / static_cast<float>(std::max(1, right - left - 1));
    const auto c = heatmap_colour(v);
    cv::line(legend, {x, 3}, {x, 3 + bar}, cv::Scalar(c.b, c.g, c.r));
  }
  const int mid = (left + right) / 2;
  cv::line(legend, {mid, 1}, {mid, 5 + bar}, cv::Scalar(0, 0, 0), 1);
  const auto label = [&](const std::string& text, int x, int align) {  // align: 0 left, 1 centre, 2 right
    int baseline = 0;
    const auto size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, 0.36, 1, &baseline);
    const int at = std::clamp(x - align * size.width / 2, 1, std::max(1, width - size.width - 1));
    cv::putText(legend, text, {at, height - 6}, cv::FONT_HERSHEY_SIMPLEX, 0.36, cv::Scalar(40, 40, 40), 1, cv::LINE_AA);
  };
  label(fmt(scale.low, "%.3g"), left, 0);
  label("threshold " + fmt(scale.threshold, "%.3g"), mid, 1);
  label(fmt(scale.high, "%.3g") + "+", right, 2);
  return legend;
}
}  // namespace detail

cv::Mat render_heatmap_overlay(const cv::Mat& image, const cv::Mat& normalized_map, const cv::Mat& mask,
                               const OverlayOptions& opt) {
  if (image.empty()) throw ReportError("heatmap overlay: empty image");
  if (normalized_map.empty() || normalized_map.channels() != 1)
    throw ReportError("heatmap overlay: anomaly map must be a non-empty single-channel matrix");
  const cv::Mat base = detail::to_bgr8(image);
  cv::Mat m;
  normalized_map.convertTo(m, CV_32F);
  cv::resize(m, m, base.size(), 0, 0, cv::INTER_LINEAR);
  m = m.clone();  // continuous
  cv::Mat rgb;
  cv::cvtColor(base, rgb, cv::COLOR_BGR2RGB);
  blend_heatmap(rgb.data, rgb.rows, rgb.cols, static_cast<int64_t>(rgb.step), m.ptr<float>());
  cv::Mat out;
  cv::cvtColor(rgb, out, cv::COLOR_RGB2BGR);
  if (opt.mask_contour && !mask.empty()) {
    cv::Mat mk = mask != 0;
    if (mk.size() != base.size()) cv::resize(mk, mk, base.size(), 0, 0, cv::INTER_NEAREST);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(mk, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    cv::drawContours(out, contours, -1, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
  }
  if (opt.side_by_side) cv::hconcat(base, out, out);
  if (opt.legend) cv::vconcat(out, detail::render_heatmap_legend(out.cols, *opt.legend), out);
  return out;
}

void write_heatmap_png(const std::string& path, const cv::Mat& image, const cv::Mat& normalized_map,
                       const cv::Mat& mask, const OverlayOptions& opt) {
  write_png_atomic(path, render_heatmap_overlay(image, normalized_map, mask, opt));
}

nlohmann::json to_json(const MetricsSummary& m) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  nlohmann::json j = nlohmann::json::object();
  j["image_auroc"] = num(m.image_auroc);
  j["image_auroc_per_type"] = nlohmann::json::object();
  for (const auto& [k, v] : m.image_auroc_per_type) j["image_auroc_per_type"][k] = num(v);
  j["pixel_auroc"] = m.pixel_auroc ? num(*m.pixel_auroc) : nlohmann::json(nullptr);
  j["aupro"] = m.aupro ? num(*m.aupro) : nlohmann::json(nullptr);
  j["n_test"] = m.n_test;
  j["n_defective"] = m.n_defective;
  j["threshold"] = num(m.threshold);
  j["f1"] = num(m.f1);
  j["precision"] = num(m.precision);
  j["recall"] = num(m.recall);
  if (!m.extra.is_null() && !m.extra.is_object()) throw ReportError("MetricsSummary::extra must be a JSON object");
  for (auto it = m.extra.begin(); it != m.extra.end(); ++it) {
    if (j.contains(it.key())) throw ReportError("MetricsSummary::extra must not redefine \"" + it.key() + "\"");
    j[it.key()] = it.value();
  }
  return j;
}

void write_metrics_json(const std::string& path, const MetricsSummary& m) {
  io::write_file_atomic(path, to_json(m).dump(2) + "\n");
}

void write_scores_csv(const std::string& path, const std::vector<ScoreRow>& rows) {
  std::ostringstream o;
  o << "path,label,type,score\n";
  o.precision(std::numeric_limits<double>::max_digits10);
  for (const auto& r : rows)
    o << csv_field(r.path) << ',' << r.label << ',' << csv_field(r.type) << ',' << r.score << '\n';
  io::write_file_atomic(path, o.str());
}

namespace detail {
std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string html_num(const std::optional<double>& v, const char* f) {
  return v && std::isfinite(*v) ? fmt(*v, f) : "n/a";
}

}  // namespace detail
std::string render_index_html(const ReportPage& p) {
  using detail::html_escape;
  const auto& m = p.metrics;
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << html_escape(p.title)
    << "</title>\n<style>\n"
       "body{font-family:sans-serif;margin:24px;color:#222;background:#fafafa}\n"
       "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px "
       "10px;text-align:left}\n"
       ".plots img{max-width:48%;margin-right:1%;border:1px solid #ddd;background:#fff}\n"
       ".grid{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid "
       "#ddd;padding:6px;width:280px}\n"
       ".card img{width:100%;image-rendering:auto}.card .cap{font-size:12px;word-break:break-all}\n"
       ".def{color:#b00}.good{color:#070}.scale{max-width:900px;font-size:14px}\n</style>\n</head>\n<body>\n";
  h << "<h1>" << html_escape(p.title) << "</h1>\n<table>\n";
  h << "<tr><th>image AUROC</th><td>" << detail::html_num(m.image_auroc) << "</td></tr>\n";
  for (const auto& [k, v] : m.image_auroc_per_type)
    h << "<tr><th>image AUROC: " << html_escape(k) << "</th><td>" << detail::html_num(v) << "</td></tr>\n";
  h << "<tr><th>pixel AUROC</th><td>" << detail::html_num(m.pixel_auroc) << "</td></tr>\n";
  h << "<tr><th>AUPRO (FPR &le; 0.3)</th><td>" << detail::html_num(m.aupro) << "</td></tr>\n";
  h << "<tr><th>test images</th><td>" << m.n_test << " (" << m.n_defective << " defective)</td></tr>\n";
  h << "<tr><th>F1-optimal threshold</th><td>" << detail::html_num(m.threshold, "%.6g") << " (F1 "
    << detail::html_num(m.f1) << ", precision " << detail::html_num(m.precision) << ", recall "
    << detail::html_num(m.recall) << ")</td></tr>\n";
  for (const auto& [k, v] : p.info)
    h << "<tr><th>" << html_escape(k) << "</th><td>" << html_escape(v) << "</td></tr>\n";
  h << "</table>\n<div class=\"plots\">\n<img src=\"" << html_escape(p.roc_png) << "\" alt=\"ROC curve\">\n<img src=\""
    << html_escape(p.histogram_png) << "\" alt=\"score histogram\">\n</div>\n";
  std::vector<std::string> groups;
  for (const auto& e : p.heatmaps)
    if (std::find(groups.begin(), groups.end(), e.group) == groups.end()) groups.push_back(e.group);
  if (!p.heatmaps.empty() && p.heatmap_scale) {
    const auto& sc = *p.heatmap_scale;
    h << "<p class=\"scale\">Heatmaps: the anomaly map over each image (right), ground truth outlined in white. "
         "Colours "
         "are anchored at the <b>pixel threshold "
      << detail::fmt(sc.threshold, "%.4g") << "</b> (" << html_escape(p.pixel_threshold_source)
      << "): navy to teal and faint below it (" << detail::fmt(sc.low, "%.3g")
      << " &rarr; threshold), yellow to red above it (threshold &rarr; " << detail::fmt(sc.high, "%.3g")
      << " and more): anything yellow, orange or red is a pixel the model calls defective. The scale's ends are "
         "the 5th and 95th percentiles of the pixel values the threshold was chosen on; every heatmap uses the same "
         "scale, as <code>predict --heatmaps</code> does with the model file's.";
    if (p.pixel_resolution > 0)
      h << " Maps and pixel metrics are at the model's input size, " << p.pixel_resolution << " &times; "
        << p.pixel_resolution << " px (masks resized nearest-neighbour).";
    h << "</p>\n";
  }
  for (const auto& g : groups) {
    h << "<h2>" << html_escape(g.empty() ? "Anomaly maps" : g) << "</h2>\n<div class=\"grid\">\n";
    for (const auto& e : p.heatmaps) {
      if (e.group != g) continue;
      h << "<div class=\"card\"><a href=\"" << html_escape(e.file) << "\"><img src=\"" << html_escape(e.file)
        << "\" alt=\"" << html_escape(e.image_path) << "\" loading=\"lazy\"></a>\n<div class=\"cap\">score <b>"
        << detail::fmt(e.score, "%.5g") << "</b>"
        << (std::isfinite(e.normalized_score) ? " (normalised " + detail::fmt(e.normalized_score, "%.3f") + ")" : "")
        << " &middot; <span class=\"" << (e.label ? "def" : "good") << "\">" << html_escape(e.type) << "</span><br>"
        << html_escape(e.image_path) << "</div></div>\n";
    }
    h << "</div>\n";
  }
  h << "<p style=\"font-size:12px;color:#777\">metrics.json and scores.csv hold the numbers of this page.</p>\n"
       "</body>\n</html>\n";
  return h.str();
}

void write_index_html(const std::string& path, const ReportPage& p) {
  io::write_file_atomic(path, render_index_html(p));
}

}  // namespace app
}  // namespace validflow
