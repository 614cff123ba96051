// Tests of validflow/eval/metrics.hpp: hand-computed values, random cases against simple O(n^2)
// references, ties, connected components and AUPRO on small hand-built masks, and the input errors.
#include <catch2/catch.hpp>

#include <validflow/eval/metrics.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace ve = validflow::eval;

namespace {

// ---- Independent references ------------------------------------------------------------------------

// AUROC as the probability that a random defective sample outscores a random good one (ties = 1/2).
double auroc_quadratic(const std::vector<double>& s, const std::vector<int>& y) {
  double wins = 0.0;
  double pairs = 0.0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (y[i] != 1) continue;
    for (std::size_t j = 0; j < s.size(); ++j) {
      if (y[j] != 0) continue;
      pairs += 1.0;
      if (s[i] > s[j])
        wins += 1.0;
      else if (s[i] == s[j])
        wins += 0.5;
    }
  }
  return wins / pairs;
}

// Trapezoid area of a curve (x non-decreasing from 0) restricted to [0, x_max], interpolated at x_max.
double trapezoid_up_to(const std::vector<double>& x, const std::vector<double>& y, double x_max) {
  double area = 0.0;
  for (std::size_t k = 1; k < x.size(); ++k) {
    const double a = std::min(x[k - 1], x_max), b = std::min(x[k], x_max);
    if (b <= a) continue;
    auto y_at = [&](double xx) { return y[k - 1] + (y[k] - y[k - 1]) * (xx - x[k - 1]) / (x[k] - x[k - 1]); };
    area += 0.5 * (b - a) * (y_at(a) + y_at(b));
  }
  return area;
}

// 8-connectivity labels by repeated min-propagation until nothing changes (slow, obviously correct).
std::vector<int> components_reference(const std::vector<std::uint8_t>& m, int h, int w) {
  std::vector<int> lab(m.size(), 0);
  for (std::size_t i = 0; i < m.size(); ++i) lab[i] = m[i] ? static_cast<int>(i) + 1 : 0;
  bool changed = true;
  while (changed) {
    changed = false;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        int& l = lab[y * w + x];
        if (!l) continue;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int yy = y + dy, xx = x + dx;
            if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
            const int o = lab[yy * w + xx];
            if (o && o < l) {
              l = o;
              changed = true;
            }
          }
      }
  }
  return lab;
}

struct MapAndMask {
  std::vector<float> scores;
  std::vector<std::uint8_t> mask;  // empty = defect-free
  int h, w;
};

// PRO curve by brute force: for every distinct score t, FPR and mean region overlap of "score >= t".
double aupro_reference(const std::vector<MapAndMask>& images, double limit) {
  std::vector<float> all_ok;
  struct Region {
    std::vector<float> scores;
  };
  std::vector<Region> regions;
  std::set<float> thresholds;
  for (const auto& im : images) {
    std::vector<int> lab;
    if (!im.mask.empty()) lab = components_reference(im.mask, im.h, im.w);
    std::map<int, std::size_t> region_of;
    for (std::size_t i = 0; i < im.scores.size(); ++i) {
      thresholds.insert(im.scores[i]);
      if (lab.empty() || lab[i] == 0) {
        all_ok.push_back(im.scores[i]);
      } else {
        auto it = region_of.find(lab[i]);
        if (it == region_of.end()) {
          it = region_of.emplace(lab[i], regions.size()).first;
          regions.emplace_back();
        }
        regions[it->second].scores.push_back(im.scores[i]);
      }
    }
  }
  std::vector<double> fpr{0.0}, pro{0.0};
  for (auto t = thresholds.rbegin(); t != thresholds.rend(); ++t) {
    double fp = 0;
    for (float s : all_ok) fp += s >= *t;
    double overlap = 0;
    for (const auto& r : regions) {
      double c = 0;
      for (float s : r.scores) c += s >= *t;
      overlap += c / r.scores.size();
    }
    fpr.push_back(fp / all_ok.size());
    pro.push_back(overlap / regions.size());
  }
  return trapezoid_up_to(fpr, pro, limit) / limit;
}

}  // namespace

// ---- Image-level metrics ---------------------------------------------------------------------------

TEST_CASE("auroc and roc_curve match hand-computed values (sklearn's documented example)", "[metrics]") {
  const std::vector<double> s{0.1, 0.4, 0.35, 0.8};
  const std::vector<int> y{0, 0, 1, 1};
  CHECK(ve::auroc(s, y) == Approx(0.75));
  const auto roc = ve::roc_curve(s, y);
  const std::vector<double> fpr{0.0, 0.0, 0.5, 0.5, 1.0};
  const std::vector<double> tpr{0.0, 0.5, 0.5, 1.0, 1.0};
  REQUIRE(roc.fpr.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(roc.fpr[i] == Approx(fpr[i]));
    CHECK(roc.tpr[i] == Approx(tpr[i]));
  }
  CHECK(std::isinf(roc.thresholds[0]));
  CHECK(roc.thresholds[1] == 0.8);
  CHECK(roc.thresholds[2] == 0.4);
  CHECK(roc.thresholds[3] == 0.35);
  CHECK(roc.thresholds[4] == 0.1);
}

TEST_CASE("auroc counts ties as one half (Mann-Whitney)", "[metrics]") {
  // positives {0.5, 0.9}, negatives {0.5, 0.2}: 0.9 beats both (2), 0.5 beats 0.2 and ties 0.5 (1.5).
  CHECK(ve::auroc({0.5, 0.5, 0.2, 0.9}, {0, 1, 0, 1}) == Approx(3.5 / 4.0));
  CHECK(ve::auroc({1.0, 1.0, 1.0, 1.0, 1.0}, {0, 1, 1, 0, 0}) == Approx(0.5));
  CHECK(ve::auroc({0.0, 1.0}, {0, 1}) == 1.0);
  CHECK(ve::auroc({0.0, 1.0}, {1, 0}) == 0.0);
  // A tie group holding both classes makes one diagonal ROC segment.
  const auto roc = ve::roc_curve({0.3, 0.3, 0.1, 0.9}, {0, 1, 0, 1});
  REQUIRE(roc.fpr.size() == 4);
  CHECK(roc.fpr[2] == Approx(0.5));
  CHECK(roc.tpr[2] == Approx(1.0));
}

TEST_CASE("auroc, roc_curve and F1 agree with O(n^2) references on random data", "[metrics]") {
  std::mt19937_64 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 2 + rng() % 60;
    const bool discrete = trial % 2 == 0;  // few distinct values: many ties
    std::vector<double> s(n);
    std::vector<int> y(n);
    for (std::size_t i = 0; i < n; ++i) {
      y[i] = static_cast<int>(rng() % 3 == 0);
      const double base = discrete ? static_cast<double>(rng() % 5) : std::ldexp(static_cast<double>(rng() >> 11), -53);
      // Defective samples score higher on average; in the discrete case they tie with good ones often.
      s[i] = base + (y[i] ? (discrete ? 1.0 : 0.3) : 0.0);
    }
    y[0] = 0;
    y[1] = 1;
    const double ref = auroc_quadratic(s, y);
    REQUIRE(ve::auroc(s, y) == Approx(ref).margin(1e-12));

    // ROC: each point counted directly; trapezoidal area equals the AUROC (ties = diagonal segments).
    const auto roc = ve::roc_curve(s, y);
    double np = 0, nn = 0;
    for (int v : y) (v ? np : nn) += 1;
    for (std::size_t k = 1; k < roc.thresholds.size(); ++k) {
      double tp = 0, fp = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (s[i] >= roc.thresholds[k]) (y[i] ? tp : fp) += 1;
      REQUIRE(roc.tpr[k] == Approx(tp / np));
      REQUIRE(roc.fpr[k] == Approx(fp / nn));
      REQUIRE(roc.thresholds[k] < roc.thresholds[k - 1]);
    }
    REQUIRE(roc.fpr.back() == 1.0);
    REQUIRE(roc.tpr.back() == 1.0);
    REQUIRE(trapezoid_up_to(roc.fpr, roc.tpr, 1.0) == Approx(ref).margin(1e-12));

    // F1: brute force over every candidate threshold.
    double best = -1;
    for (double t : s) {
      double tp = 0, fp = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (s[i] >= t) (y[i] ? tp : fp) += 1;
      best = std::max(best, 2 * tp / (2 * tp + fp + (np - tp)));
    }
    const auto f1 = ve::f1_optimal_threshold(s, y);
    REQUIRE(f1.f1 == Approx(best));
    double tp = 0, fp = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (s[i] >= f1.threshold) (y[i] ? tp : fp) += 1;
    REQUIRE(2 * tp / (2 * tp + fp + (np - tp)) == Approx(f1.f1));
    REQUIRE(f1.true_positives == static_cast<std::size_t>(tp));
  }
}

TEST_CASE("f1_optimal_threshold matches a hand-computed case", "[metrics]") {
  // thresholds 0.8: F1 2/3; 0.4: 1/2; 0.35: 4/5 (tp 2, fp 1); 0.1: 2/3.
  const auto r = ve::f1_optimal_threshold({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1});
  CHECK(r.threshold == 0.35);
  CHECK(r.f1 == Approx(0.8));
  CHECK(r.precision == Approx(2.0 / 3.0));
  CHECK(r.recall == Approx(1.0));
  CHECK(r.false_positives == 1);
  CHECK(r.false_negatives == 0);
}

TEST_CASE("auroc_per_type compares every defect type with all good samples", "[metrics]") {
  const std::vector<double> s{0.1, 0.2, 0.3, 0.9, 0.95, 0.15, 0.25};
  const std::vector<int> y{0, 0, 0, 1, 1, 1, 1};
  const std::vector<std::string> t{"good", "good", "good", "crack", "crack", "spot", "spot"};
  const auto per = ve::auroc_per_type(s, y, t);
  REQUIRE(per.size() == 2);
  CHECK(per.at("crack") == Approx(1.0));
  // spot {0.15, 0.25} vs good {0.1, 0.2, 0.3}: 0.15 beats 1, 0.25 beats 2 -> 3/6.
  CHECK(per.at("spot") == Approx(0.5));
  CHECK_THROWS_AS(ve::auroc_per_type(s, y, {"good"}), ve::MetricError);
}

TEST_CASE("image metrics reject bad input with clear messages", "[metrics]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(ve::auroc({}, {}), Catch::Contains("empty input"));
  CHECK_THROWS_WITH(ve::auroc({0.1, 0.2}, {1, 1}), Catch::Contains("only one class"));
  CHECK_THROWS_WITH(ve::roc_curve({0.1, 0.2}, {0, 0}), Catch::Contains("only one class"));
  CHECK_THROWS_WITH(ve::auroc({0.1, nan}, {0, 1}), Catch::Contains("index 1") && Catch::Contains("not finite"));
  CHECK_THROWS_WITH(ve::f1_optimal_threshold({0.1, std::numeric_limits<double>::infinity()}, {0, 1}),
                    Catch::Contains("not finite"));
  CHECK_THROWS_WITH(ve::auroc({0.1, 0.2, 0.3}, {0, 1}), Catch::Contains("size mismatch"));
  CHECK_THROWS_WITH(ve::auroc({0.1, 0.2}, {0, 2}), Catch::Contains("label at index 1 is 2"));
  CHECK_THROWS_AS(ve::auroc({}, {}), ve::MetricError);
  CHECK_THROWS_AS(ve::auroc({}, {}), std::invalid_argument);
}

// ---- Connected components ----------------------------------------------------------------------------

TEST_CASE("label_connected_components uses 8-connectivity", "[metrics]") {
  // Diagonal neighbours join; the right column is separate; the lone pixel bottom-right is separate.
  const int h = 5, w = 6;
  const std::vector<std::uint8_t> m{
      1, 0, 0, 0, 0, 1,  //
      0, 1, 0, 0, 0, 1,  //
      0, 0, 1, 0, 0, 0,  //
      0, 0, 0, 0, 0, 0,  //
      1, 1, 0, 0, 0, 1,  //
  };
  std::vector<int> lab;
  REQUIRE(ve::label_connected_components(m.data(), h, w, lab) == 4);
  CHECK(lab[0] == 1);
  CHECK(lab[1 * w + 1] == 1);
  CHECK(lab[2 * w + 2] == 1);
  CHECK(lab[5] == 2);
  CHECK(lab[1 * w + 5] == 2);
  CHECK(lab[4 * w + 0] == 3);
  CHECK(lab[4 * w + 1] == 3);
  CHECK(lab[4 * w + 5] == 4);
  CHECK(lab[3 * w + 3] == 0);

  const std::vector<std::uint8_t> empty(12, 0);
  CHECK(ve::label_connected_components(empty.data(), 3, 4, lab) == 0);
}

TEST_CASE("label_connected_components matches a brute-force labelling on random masks", "[metrics]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int h = 1 + static_cast<int>(rng() % 12), w = 1 + static_cast<int>(rng() % 12);
    std::vector<std::uint8_t> m(static_cast<std::size_t>(h * w));
    for (auto& v : m) v = rng() % 100 < 35 ? 255 : 0;
    std::vector<int> lab;
    const int n = ve::label_connected_components(m.data(), h, w, lab);
    const auto ref = components_reference(m, h, w);
    std::set<int> ref_ids;
    std::map<int, int> a2b;
    for (std::size_t i = 0; i < m.size(); ++i) {
      REQUIRE((lab[i] == 0) == (ref[i] == 0));
      if (!lab[i]) continue;
      ref_ids.insert(ref[i]);
      auto it = a2b.emplace(lab[i], ref[i]).first;
      REQUIRE(it->second == ref[i]);  // same partition
    }
    REQUIRE(static_cast<std::size_t>(n) == ref_ids.size());
  }
}

// ---- Pixel AUROC and AUPRO ---------------------------------------------------------------------------

TEST_CASE("pixel AUROC and AUPRO on a hand-built 2x3 map", "[metrics]") {
  // Regions: A = {(0,0)}, B = {(0,2),(1,2)}; good pixels: (0,1), (1,0), (1,1).
  const std::vector<std::uint8_t> mask{1, 0, 1, 0, 0, 1};
  SECTION("no tie between good and defective pixels") {
    // A 0.9 | B 0.8, 0.2 | good 0.7, 0.5, 0.1.
    // PRO curve: (0,0) (0,.5) (0,.75) (1/3,.75) (2/3,.75) (2/3,1) (1,1).
    const std::vector<float> s{0.9f, 0.7f, 0.8f, 0.5f, 0.1f, 0.2f};
    ve::PixelEvaluator ev;
    ev.add(s, mask, 2, 3);
    CHECK(ev.num_regions() == 2);
    CHECK(ev.num_defect_pixels() == 3);
    CHECK(ev.aupro(0.3) == Approx(0.75));
    CHECK(ev.aupro(1.0) == Approx(0.75 * 2.0 / 3.0 + 1.0 / 3.0));
    // positives {.9,.8,.2} vs negatives {.7,.5,.1}: 3 + 3 + 1 = 7 of 9.
    CHECK(ev.auroc() == Approx(7.0 / 9.0));
  }
  SECTION("a good pixel tied with a defective pixel gives a diagonal segment, interpolated at 0.3") {
    // A 0.9 | B 0.7, 0.2 | good 0.7, 0.5, 0.1. Segment (0,.5)->(1/3,.75): pro(0.3) = 0.725.
    const std::vector<float> s{0.9f, 0.7f, 0.7f, 0.5f, 0.1f, 0.2f};
    ve::PixelEvaluator ev;
    ev.add(s, mask, 2, 3);
    CHECK(ev.aupro(0.3) == Approx(0.3 * (0.5 + 0.725) / 2.0 / 0.3));
    const auto c = ev.pro_curve();
    REQUIRE(c.fpr.size() == 6);
    CHECK(c.fpr[2] == Approx(1.0 / 3.0));
    CHECK(c.pro[2] == Approx(0.75));
    // positives {.9,.7,.2} vs negatives {.7,.5,.1}: 3 + 2.5 + 1 = 6.5 of 9.
    CHECK(ev.auroc() == Approx(6.5 / 9.0));
  }
}

TEST_CASE("AUPRO averages over regions, not pixels, across images", "[metrics]") {
  // Image 1: one big region (8 pixels) fully detected; image 2 (defect-free) adds good pixels;
  // image 3: one single-pixel region that scores below every good pixel.
  ve::PixelEvaluator ev;
  std::vector<float> s1(16, 0.0f);
  std::vector<std::uint8_t> m1(16, 0);
  for (int i = 0; i < 8; ++i) {
    m1[i] = 255;
    s1[i] = 1.0f;
  }
  ev.add(s1, m1, 4, 4);
  ev.add(std::vector<float>(16, 0.5f), {}, 4, 4);
  std::vector<float> s3(4, 0.5f);
  std::vector<std::uint8_t> m3{0, 0, 0, 1};
  s3[3] = 0.1f;
  ev.add(s3, m3, 2, 2);
  CHECK(ev.num_images() == 3);
  CHECK(ev.num_regions() == 2);
  // Up to FPR 0.3 only the big region is found: PRO = 0.5 throughout.
  CHECK(ev.aupro() == Approx(0.5));
}

TEST_CASE("pixel AUROC and AUPRO agree with brute-force references on random maps", "[metrics]") {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<MapAndMask> images;
    std::vector<double> flat_s;
    std::vector<int> flat_y;
    ve::PixelEvaluator ev;
    const int n_img = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_img; ++k) {
      MapAndMask im;
      im.h = 2 + static_cast<int>(rng() % 9);
      im.w = 2 + static_cast<int>(rng() % 9);
      const std::size_t n = static_cast<std::size_t>(im.h * im.w);
      const bool has_defect = k == 0 || rng() % 2;
      if (has_defect) {
        im.mask.resize(n);
        for (auto& v : im.mask) v = rng() % 100 < 25;
        im.mask[0] = 1;  // at least one defect pixel
        im.mask[n - 1] = 0;
      }
      im.scores.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        const bool def = !im.mask.empty() && im.mask[i];
        // Few distinct values force ties between and within classes.
        im.scores[i] = static_cast<float>(rng() % 8) / 8.0f + (def ? 0.25f : 0.0f);
        flat_s.push_back(im.scores[i]);
        flat_y.push_back(def ? 1 : 0);
      }
      ev.add(im.scores, im.mask, im.h, im.w);
      images.push_back(im);
    }
    REQUIRE(ev.auroc() == Approx(auroc_quadratic(flat_s, flat_y)).margin(1e-12));
    for (double limit : {0.05, 0.3, 1.0})
      REQUIRE(ev.aupro(limit) == Approx(aupro_reference(images, limit)).margin(1e-9));
  }
}

TEST_CASE("PixelEvaluator handles a million pixels and matches the image-level AUROC", "[metrics]") {
  std::mt19937 rng(5);
  ve::PixelEvaluator ev;
  std::vector<double> flat_s;
  std::vector<int> flat_y;
  const int h = 128, w = 128;
  for (int img = 0; img < 64; ++img) {
    std::vector<float> s(h * w);
    std::vector<std::uint8_t> m(h * w, 0);
    const int cx = static_cast<int>(rng() % w), cy = static_cast<int>(rng() % h);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const bool def = img % 2 == 0 && (x - cx) * (x - cx) + (y - cy) * (y - cy) < 100;
        m[y * w + x] = def;
        s[y * w + x] = static_cast<float>(std::ldexp(static_cast<double>(rng() % 4096), -12)) + (def ? 0.3f : 0.0f);
        flat_s.push_back(s[y * w + x]);
        flat_y.push_back(def);
      }
    ev.add(s, m, h, w);
  }
  CHECK(ev.num_pixels() == 64u * h * w);
  CHECK(ev.auroc() == Approx(ve::auroc(flat_s, flat_y)).margin(1e-12));
  const double a = ev.aupro();
  CHECK(a > 0.0);
  CHECK(a <= 1.0);
}

TEST_CASE("PixelEvaluator rejects bad input with clear messages", "[metrics]") {
  ve::PixelEvaluator ev;
  CHECK_THROWS_WITH(ev.auroc(), Catch::Contains("empty input"));
  CHECK_THROWS_WITH(ev.add(std::vector<float>(5, 0.f), {}, 2, 3), Catch::Contains("size mismatch"));
  CHECK_THROWS_WITH(ev.add(std::vector<float>(6, 0.f), std::vector<std::uint8_t>(5, 0), 2, 3),
                    Catch::Contains("size mismatch"));
  std::vector<float> s(6, 0.f);
  s[4] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(ev.add(s, {}, 2, 3), Catch::Contains("pixel (1,1)") && Catch::Contains("not finite"));
  ev.add(std::vector<float>(6, 0.f), {}, 2, 3);
  CHECK_THROWS_WITH(ev.auroc(), Catch::Contains("only one class"));
  CHECK_THROWS_WITH(ev.aupro(), Catch::Contains("only one class"));
  ev.add(std::vector<float>{1.f, 0.f, 0.f, 0.f, 0.f, 0.f}, std::vector<std::uint8_t>{1, 0, 0, 0, 0, 0}, 2, 3);
  CHECK_THROWS_WITH(ev.aupro(0.0), Catch::Contains("fpr_limit"));
  CHECK_THROWS_WITH(ev.aupro(1.5), Catch::Contains("fpr_limit"));
  CHECK(ev.aupro() == Approx(1.0));
}
