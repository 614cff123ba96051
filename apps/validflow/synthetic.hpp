#pragma once
// Procedural synthetic surface-defect dataset for `validflow demo` (examples layer: OpenCV + std only).
//
// In the spirit of DAGM 2007 (itself synthetic): one texture family per dataset, every image a fresh
// random instance of it (phase, orientation jitter, brightness), and three defect types drawn on top:
//   scratch  thin bright or dark smooth arc,
//   spot     soft elliptical stain (darker or brighter),
//   crack    dark jagged random-walk line, sometimes branched.
// Defect contrast is about 1.5-3.5 texture standard deviations: visible, but not a trivial intensity outlier.
// Masks are the pixels where the defect's coverage is >= 0.25, stored as 0/255 PNG.
//
// The output is a `folder:` dataset (train/good, test/good, test/<type>, ground_truth/<type>/*_mask.png)
// plus synthetic.json describing the options. Generation is deterministic for a seed (own RNG; no
// std::*_distribution, whose output differs between standard libraries). It is written to a temporary
// sibling folder and renamed into place; an existing folder with the same synthetic.json is reused, one
// with a different synthetic.json (made by this generator) is replaced, anything else is an error.
#include "report.hpp"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

namespace validflow {
namespace app {

enum class SyntheticTexture { noise, fibre, grain };

const char* to_string(SyntheticTexture t);

SyntheticTexture parse_synthetic_texture(const std::string& s);

struct SyntheticOptions {
  int n_train = 60;
  int n_test_good = 20;
  int n_test_defective = 30;  // split evenly over scratch, spot, crack
  int size = 192;             // image side in pixels (64..1024)
  std::uint64_t seed = 0;
  SyntheticTexture texture = SyntheticTexture::fibre;
};

struct SyntheticResult {
  std::string root;
  bool reused = false;                     // an identical dataset was already there
  std::map<std::string, int> test_counts;  // per type, "good" included
  int n_train = 0;
};

/// The defect types of the generator, in the order the defective test images are assigned.
std::vector<std::string> synthetic_defect_types();

/// One synthetic image (CV_8UC1) and, for a defect type, its mask (CV_8UC1 0/255; empty for "good").
/// Deterministic in (seed, split_id, index); exposed for tests and previews.
std::pair<cv::Mat, cv::Mat> synthetic_sample(const SyntheticOptions& o, const std::string& type, int split_id,
                                             int index);

/// Writes the dataset to out_dir (see the top of this file) and returns what is there.
SyntheticResult generate_synthetic_dataset(const std::string& out_dir, const SyntheticOptions& o);

}  // namespace app
}  // namespace validflow
