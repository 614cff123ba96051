#include "synthetic.hpp"

namespace validflow {
namespace app {

// Internal helpers (declared here, defined below).
namespace detail {

/// Deterministic RNG: splitmix64 seeding + xorshift-style mixing; identical on every platform.
class SynthRng {
 public:
  explicit SynthRng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  int integer(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1)); }
  bool coin(double p = 0.5) { return uniform() < p; }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t state_;
};

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b);

cv::Mat white_noise(SynthRng& rng, int rows, int cols);

/// Smooth value noise: a (cells+1)^2 random grid upsampled bicubically to size x size.
cv::Mat value_noise(SynthRng& rng, int size, int cells);

void normalise(cv::Mat& m, double mean, double stddev);

/// Texture image (CV_32F, mean ~0.5, std ~0.08). dataset_angle: the dataset's fibre orientation.
cv::Mat make_texture(SynthRng& rng, SyntheticTexture kind, int size, double dataset_angle);

cv::Point2d random_point(SynthRng& rng, int size, double margin);

/// Draws one defect of `type` into coverage (CV_32F, 0..1) and returns the signed contrast.
double draw_defect(SynthRng& rng, const std::string& type, cv::Mat& coverage);

cv::Mat to_u8(const cv::Mat& f);

std::string synthetic_manifest(const SyntheticOptions& o);

std::string read_text(const std::filesystem::path& p);

}  // namespace detail

const char* to_string(SyntheticTexture t) {
  switch (t) {
    case SyntheticTexture::noise:
      return "noise";
    case SyntheticTexture::fibre:
      return "fibre";
    case SyntheticTexture::grain:
      return "grain";
  }
  return "?";
}

SyntheticTexture parse_synthetic_texture(const std::string& s) {
  if (s == "noise") return SyntheticTexture::noise;
  if (s == "fibre" || s == "fiber") return SyntheticTexture::fibre;
  if (s == "grain") return SyntheticTexture::grain;
  throw std::invalid_argument("unknown synthetic texture \"" + s + "\" (known: noise, fibre, grain)");
}

namespace detail {
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  SynthRng r(seed ^ (a * 0xD6E8FEB86659FD93ull) ^ (b * 0xA0761D6478BD642Full));
  r.next();
  return r.next();
}

cv::Mat white_noise(SynthRng& rng, int rows, int cols) {
  cv::Mat m(rows, cols, CV_32F);
  for (int y = 0; y < rows; ++y) {
    auto* p = m.ptr<float>(y);
    for (int x = 0; x < cols; ++x) p[x] = static_cast<float>(rng.normal());
  }
  return m;
}

cv::Mat value_noise(SynthRng& rng, int size, int cells) {
  cv::Mat g = white_noise(rng, cells + 1, cells + 1), out;
  cv::resize(g, out, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  return out;
}

void normalise(cv::Mat& m, double mean, double stddev) {
  cv::Scalar mu, sd;
  cv::meanStdDev(m, mu, sd);
  m = (m - mu[0]) * (stddev / std::max(sd[0], 1e-12)) + mean;
}

cv::Mat make_texture(SynthRng& rng, SyntheticTexture kind, int size, double dataset_angle) {
  cv::Mat t;
  switch (kind) {
    case SyntheticTexture::noise: {
      t = value_noise(rng, size, 4) + 0.5 * value_noise(rng, size, 8) + 0.25 * value_noise(rng, size, 16) +
          0.125 * value_noise(rng, size, 32);
      break;
    }
    case SyntheticTexture::fibre: {
      // White noise smeared along one direction by a line kernel: streaks like brushed or woven surfaces.
      const int len = std::max(5, size / 8) | 1;
      cv::Mat k = cv::Mat::zeros(len, len, CV_32F);
      const double a = dataset_angle + rng.uniform(-0.08, 0.08);
      const cv::Point2d c(len / 2.0, len / 2.0), d(std::cos(a) * len / 2.0, std::sin(a) * len / 2.0);
      cv::line(k, c - d, c + d, cv::Scalar(1.0), 1, cv::LINE_AA);
      k /= cv::sum(k)[0];
      cv::Mat n = white_noise(rng, size, size);
      cv::filter2D(n, t, CV_32F, k, cv::Point(-1, -1), 0, cv::BORDER_REFLECT);
      normalise(t, 0.0, 1.0);
      t += 0.6 * value_noise(rng, size, 5);
      break;
    }
    case SyntheticTexture::grain: {
      cv::Mat n = white_noise(rng, size, size);
      cv::GaussianBlur(n, t, cv::Size(0, 0), std::max(0.8, size / 160.0));
      normalise(t, 0.0, 1.0);
      t += 0.5 * value_noise(rng, size, 6);
      break;
    }
  }
  normalise(t, rng.uniform(0.42, 0.58), 0.08);
  return t;
}

cv::Point2d random_point(SynthRng& rng, int size, double margin) {
  return {rng.uniform(margin, 1.0 - margin) * size, rng.uniform(margin, 1.0 - margin) * size};
}

double draw_defect(SynthRng& rng, const std::string& type, cv::Mat& coverage) {
  const int size = coverage.rows;
  const double s = size / 192.0;  // scale relative to the default size
  const int shift = 4;            // sub-pixel drawing precision
  auto fp = [&](cv::Point2d p) { return cv::Point(cvRound(p.x * (1 << shift)), cvRound(p.y * (1 << shift))); };
  if (type == "scratch") {
    const cv::Point2d p0 = random_point(rng, size, 0.12);
    const double ang = rng.uniform(0.0, 3.14159265358979);
    const double len = rng.uniform(0.3, 0.6) * size;
    const cv::Point2d dir(std::cos(ang), std::sin(ang)), nrm(-dir.y, dir.x);
    const cv::Point2d p2 = p0 + dir * len, p1 = p0 + dir * (len / 2) + nrm * (rng.uniform(-0.15, 0.15) * len);
    std::vector<cv::Point> pts;
    for (int i = 0; i <= 40; ++i) {
      const double t = i / 40.0;
      pts.push_back(fp(p0 * ((1 - t) * (1 - t)) + p1 * (2 * t * (1 - t)) + p2 * (t * t)));
    }
    const int thick = std::max(1, static_cast<int>(std::lround(rng.uniform(1.0, 2.2) * s)));
    cv::polylines(coverage, pts, false, cv::Scalar(1.0), thick, cv::LINE_AA, shift);
    cv::GaussianBlur(coverage, coverage, cv::Size(0, 0), 0.6 * s);
    return (rng.coin(0.65) ? 1.0 : -1.0) * rng.uniform(0.16, 0.26);
  }
  if (type == "spot") {
    const cv::Point2d c = random_point(rng, size, 0.15);
    const double rx = rng.uniform(5.0, 16.0) * s, ry = rx * rng.uniform(0.5, 1.0), ang = rng.uniform(0.0, 180.0);
    cv::ellipse(coverage, fp(c), cv::Size(cvRound(rx * (1 << shift)), cvRound(ry * (1 << shift))), ang, 0, 360,
                cv::Scalar(1.0), cv::FILLED, cv::LINE_AA, shift);
    cv::GaussianBlur(coverage, coverage, cv::Size(0, 0), std::max(1.0, 0.35 * ry));
    double mx = 0;
    cv::minMaxLoc(coverage, nullptr, &mx);
    if (mx > 0) coverage /= mx;
    return (rng.coin(0.7) ? -1.0 : 1.0) * rng.uniform(0.18, 0.28);
  }
  if (type == "crack") {
    cv::Point2d p = random_point(rng, size, 0.2);
    double ang = rng.uniform(0.0, 6.283185307179586);
    const int steps = rng.integer(14, 26);
    std::vector<cv::Point> main{fp(p)};
    std::vector<std::vector<cv::Point>> lines;
    for (int i = 0; i < steps; ++i) {
      ang += rng.uniform(-0.6, 0.6);
      p += cv::Point2d(std::cos(ang), std::sin(ang)) * (rng.uniform(3.0, 6.0) * s);
      p.x = std::clamp(p.x, 2.0, size - 3.0);
      p.y = std::clamp(p.y, 2.0, size - 3.0);
      main.push_back(fp(p));
      if (i > 3 && rng.coin(0.08)) {  // a short branch
        cv::Point2d q = p;
        double b = ang + (rng.coin() ? 1.0 : -1.0) * rng.uniform(0.5, 1.1);
        std::vector<cv::Point> br{fp(q)};
        for (int k = rng.integer(3, 7); k > 0; --k) {
          b += rng.uniform(-0.5, 0.5);
          q += cv::Point2d(std::cos(b), std::sin(b)) * (rng.uniform(2.5, 5.0) * s);
          q.x = std::clamp(q.x, 2.0, size - 3.0);
          q.y = std::clamp(q.y, 2.0, size - 3.0);
          br.push_back(fp(q));
        }
        lines.push_back(br);
      }
    }
    lines.push_back(main);
    const int thick = std::max(1, static_cast<int>(std::lround(rng.uniform(1.0, 2.0) * s)));
    cv::polylines(coverage, lines, false, cv::Scalar(1.0), thick, cv::LINE_AA, shift);
    cv::GaussianBlur(coverage, coverage, cv::Size(0, 0), 0.5 * s);
    return -rng.uniform(0.2, 0.3);
  }
  throw std::invalid_argument("unknown synthetic defect type \"" + type + "\"");
}

cv::Mat to_u8(const cv::Mat& f) {
  cv::Mat u;
  f.convertTo(u, CV_8U, 255.0);  // saturating
  return u;
}

std::string synthetic_manifest(const SyntheticOptions& o) {
  std::ostringstream j;
  j << "{\n  \"generator\": \"validflow-synthetic-1\",\n  \"layout\": \"folder\",\n  \"seed\": " << o.seed
    << ",\n  \"size\": " << o.size << ",\n  \"texture\": \"" << to_string(o.texture)
    << "\",\n  \"n_train\": " << o.n_train << ",\n  \"n_test_good\": " << o.n_test_good
    << ",\n  \"n_test_defective\": " << o.n_test_defective
    << ",\n  \"defect_types\": [\"scratch\", \"spot\", \"crack\"]\n}\n";
  return j.str();
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace detail
std::vector<std::string> synthetic_defect_types() { return {"scratch", "spot", "crack"}; }

std::pair<cv::Mat, cv::Mat> synthetic_sample(const SyntheticOptions& o, const std::string& type, int split_id,
                                             int index) {
  detail::SynthRng dataset_rng(detail::mix_seed(o.seed, 0x5EED, 0));
  const double dataset_angle = dataset_rng.uniform(0.0, 3.14159265358979);
  detail::SynthRng rng(
      detail::mix_seed(o.seed, static_cast<std::uint64_t>(split_id) + 1, static_cast<std::uint64_t>(index) + 1));
  cv::Mat img = detail::make_texture(rng, o.texture, o.size, dataset_angle);
  cv::Mat mask;
  if (type != "good") {
    cv::Mat cov = cv::Mat::zeros(o.size, o.size, CV_32F);
    // Fine grain hides thin defects more than the smoother textures: compensate a little.
    const double gain = o.texture == SyntheticTexture::grain ? 1.4 : 1.0;
    const double contrast = gain * detail::draw_defect(rng, type, cov);
    img += contrast * cov;
    mask = cov >= 0.25f;  // 0/255 CV_8U
  }
  return {detail::to_u8(img), mask};
}

namespace detail {
/// Every image, mask and the manifest of a synthetic dataset, written into `dir` (a staging folder).
void write_synthetic_files(const std::filesystem::path& dir, const SyntheticOptions& o,
                           const std::map<std::string, int>& test_counts, const std::string& manifest) {
  namespace fs = std::filesystem;
  const auto types = synthetic_defect_types();
  fs::create_directories(dir / "train" / "good");
  fs::create_directories(dir / "test" / "good");
  auto name = [](int i) {
    char b[16];
    std::snprintf(b, sizeof b, "%03d", i);
    return std::string(b);
  };
  for (int i = 0; i < o.n_train; ++i)
    write_png_atomic(dir / "train" / "good" / (name(i) + ".png"), synthetic_sample(o, "good", 0, i).first);
  for (int i = 0; i < o.n_test_good; ++i)
    write_png_atomic(dir / "test" / "good" / (name(i) + ".png"), synthetic_sample(o, "good", 1, i).first);
  for (std::size_t k = 0; k < types.size(); ++k) {
    const std::string& t = types[k];
    fs::create_directories(dir / "test" / t);
    fs::create_directories(dir / "ground_truth" / t);
    for (int i = 0; i < test_counts.at(t); ++i) {
      const auto im = synthetic_sample(o, t, 2 + static_cast<int>(k), i);
      write_png_atomic(dir / "test" / t / (name(i) + ".png"), im.first);
      write_png_atomic(dir / "ground_truth" / t / (name(i) + "_mask.png"), im.second);
    }
  }
  std::ofstream mf(dir / "synthetic.json", std::ios::binary);
  mf << manifest;
  mf.close();
  if (!mf) throw ReportError("cannot write " + (dir / "synthetic.json").string());
}
}  // namespace detail

SyntheticResult generate_synthetic_dataset(const std::string& out_dir, const SyntheticOptions& o) {
  namespace fs = std::filesystem;
  if (o.n_train < 1 || o.n_test_good < 1 || o.n_test_defective < 1)
    throw std::invalid_argument("synthetic dataset: n_train, n_test_good and n_test_defective must be >= 1");
  if (o.size < 64 || o.size > 1024)
    throw std::invalid_argument("synthetic dataset: size must be in [64, 1024], got " + std::to_string(o.size));
  const fs::path root = fs::absolute(fs::path(out_dir)).lexically_normal();
  const std::string manifest = detail::synthetic_manifest(o);
  const auto types = synthetic_defect_types();

  SyntheticResult res;
  res.root = root.string();
  res.n_train = o.n_train;
  res.test_counts["good"] = o.n_test_good;
  for (std::size_t k = 0; k < types.size(); ++k)
    res.test_counts[types[k]] = o.n_test_defective / static_cast<int>(types.size()) +
                                (static_cast<int>(k) < o.n_test_defective % static_cast<int>(types.size()) ? 1 : 0);

  std::error_code ec;
  if (fs::exists(root, ec)) {
    const fs::path mf = root / "synthetic.json";
    if (fs::is_regular_file(mf, ec)) {
      if (detail::read_text(mf) == manifest) {
        res.reused = true;
        return res;
      }
    } else if (!(fs::is_directory(root, ec) && fs::is_empty(root, ec))) {
      throw ReportError("synthetic dataset: " + root.string() +
                        " exists and was not made by this generator (no synthetic.json); "
                        "remove it or choose another folder");
    }
  }

  // Staged under a temporary name that a later run removes if this one is killed (io/files.hpp).
  if (root.has_parent_path() && fs::is_directory(root.parent_path(), ec))
    io::remove_stale_temp_files(root.parent_path().string(), {root.filename().string()});
  const fs::path tmp = io::make_staging_directory(root.string());
  try {
    detail::write_synthetic_files(tmp, o, res.test_counts, manifest);
    if (root.has_parent_path()) fs::create_directories(root.parent_path());
    io::replace_directory(tmp.string(), root.string());  // replaces an empty folder or an older one of ours
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return res;
}

}  // namespace app
}  // namespace validflow
