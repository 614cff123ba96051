#pragma once
// Dataset readers and image loading of the `validflow` program (examples layer: OpenCV + std only).
//
//   load_dataset("KIND:PATH", options) with KIND one of
//     mvtec:  one MVTec AD category: train/good, test/<type>, ground_truth/<type>/<stem>_mask.png
//     mtd:    Magnetic Tile Defect: MT_Free, MT_<Defect>/Imgs/*.jpg with same-name *.png masks.
//             Protocol: a seeded 4/5 of MT_Free trains, the remaining 1/5 plus every defective image test.
//     dagm:   one DAGM 2007 class: Train/ and Test/, each with Label/Labels.txt; trains on the defect-free
//             Train images, tests on all Test images.
//     folder: train/good, test/good, test/<type>, optional ground_truth/<type>/<stem>_mask.png (or <stem>.png)
//     csv:    a labels file (parse_label_csv): one row per image with its path (relative to the file's folder, or
//             absolute), its label (good/defective, 0/1, or a defect probability compared with a cut-off) and
//             optionally a mask, a defect type and a split. Without a split column a seeded 1/5 (test_fraction)
//             of the good images is tested, the rest trains; every defective image is tested.
//
// A Sample has label 0 (good) or 1 (defective), a defect type ("good" for good samples) and an optional
// mask path (empty: no mask file; for a good sample that means an all-zero mask). Masks are binarised at
// 128 (value >= 128 is defective) after a nearest-neighbour resize.
// Images: load_image() reads any 8/16-bit gray, gray+alpha, BGR or BGRA file, replicates gray to 3
// channels, resizes to size x size (bilinear) and returns an RGB CV_32FC3 image in [0, 1];
// Every problem throws DatasetError naming the path (and line for Labels.txt).
#include <validflow/io/image_decode.hpp>
#include <validflow/util/error.hpp>
#include <validflow/util/text.hpp>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace validflow {
namespace app {

// The image checks and decoders are the library's (validflow_image), shared with the Triton backend.
using io::image_structure_problem;
using io::ImageHeader;
using io::max_image_pixels;
using io::set_max_image_pixels;

/// Thrown for every dataset problem; the message names the offending path.
class DatasetError : public ErrorOf<std::runtime_error, ErrorKind::file> {
 public:
  using ErrorOf::ErrorOf;
};

struct Sample {
  std::string path;
  int label = 0;              // 0 good, 1 defective
  std::string type = "good";  // "good" or the defect type
  std::string mask_path;      // empty: no mask file
};

struct BadImage {
  std::string path;
  std::string reason;
};

/// True when there is a defective sample and every defective sample has a mask (pixel metrics are possible).
bool has_masks(const std::vector<Sample>& samples);

struct Dataset {
  std::string kind;  // mvtec, mtd, dagm, folder
  std::string root;
  std::vector<Sample> train;
  std::vector<Sample> test;
  std::vector<Sample> holdout;    // good training images kept out of training (DatasetOptions::holdout_fraction)
  std::vector<BadImage> skipped;  // images dropped because of DatasetOptions::skip_bad_images

  std::size_t n_defective() const {
    return static_cast<std::size_t>(
        std::count_if(test.begin(), test.end(), [](const Sample& s) { return s.label == 1; }));
  }
  std::size_t n_good_test() const { return test.size() - n_defective(); }
  /// True when every defective test sample has a mask (pixel metrics are possible).
  bool has_masks() const { return app::has_masks(test); }
  /// Distinct defect types of the test set, sorted.
  std::vector<std::string> defect_types() const {
    std::set<std::string> t;
    for (const auto& s : test)
      if (s.label == 1) t.insert(s.type);
    return {t.begin(), t.end()};
  }
  /// Number of test samples per type ("good" included).
  std::map<std::string, std::size_t> test_counts() const {
    std::map<std::string, std::size_t> c;
    for (const auto& s : test) ++c[s.type];
    return c;
  }
};

struct DatasetOptions {
  std::uint64_t seed = 0;          // MTD's and csv's train/test split of the good images
  double mtd_test_fraction = 0.2;  // share of the good images tested (MTD: MT_Free, paper 1/5; csv without split)
  double label_cutoff = 0.5;       // csv: a numeric label (a defect probability) >= cutoff is defective
  bool check_images = true;        // decode every image and mask once while loading
  bool skip_bad_images = false;    // with check_images: drop unreadable images and list them in `skipped`
  double holdout_fraction = 0.0;   // share of the good training images held out for thresholds (0..0.5)
  std::uint64_t holdout_seed = 0;  // seed of that choice
};

/// Moves a seeded `fraction` of d.train (at least one image when fraction > 0, at least one left for
/// training) into d.holdout, keeping both in file order. Throws DatasetError for a fraction outside [0, 0.5].
void hold_out(Dataset& d, double fraction, std::uint64_t seed);

/// One MVTec AD category (all defective test images must have masks).
Dataset load_mvtec(const std::string& root_path);

/// Plain folder layout; ground_truth/<type>/ is optional per defect type, but where it exists every image
/// of that type needs a mask.
Dataset load_folder(const std::string& root_path);

/// Magnetic Tile Defect dataset with the paper's protocol (seeded split of MT_Free). Types are the folder
/// names without "MT_", lower case (blowhole, break, crack, fray, uneven).
Dataset load_mtd(const std::string& root_path, std::uint64_t seed = 0, double test_fraction = 0.2);

/// One DAGM 2007 class folder (Train/, Test/, each with Label/Labels.txt). Defect type: "defect".
Dataset load_dagm(const std::string& root_path);

/// Decodes an image file at its own size into RGB: CV_8UC3 for 8-bit files, CV_32FC3 in [0, 1] for 16-bit
/// and float files; gray (and gray + alpha) is replicated to 3 channels, alpha is dropped. This is what
/// feature extraction and prediction hand to the library's one resize (features::prepare_image).
/// Throws DatasetError naming the path.
cv::Mat decode_image(const std::string& path);

/// Reads an image for display (reports, heatmaps) as RGB float [0,1], CV_32FC3. size > 0: resized to
/// size x size (OpenCV bilinear: pictures only; features use features::prepare_image); size <= 0: original
/// size. Throws DatasetError naming the path.
cv::Mat load_image(const std::string& path, int size);

/// Reads a ground-truth mask as CV_8UC1 with values 0/1 (1: pixel >= threshold), resized (nearest) to
/// size x size if size > 0. An empty path gives an all-zero mask of size x size (needs size > 0).
cv::Mat load_mask(const std::string& path, int size, int threshold = 128);

/// decode_image of a file's bytes; `name` (the path) is named in errors. Checks the file's structure first
/// (image_format.hpp: PNG, JPEG, BMP or TIFF, complete, within max_image_pixels()).
cv::Mat decode_image_bytes(const std::string& bytes, const std::string& name);

/// A mask file's bytes decoded as CV_8UC1 0/1 (1: pixel >= threshold) at the file's size; checked as images are.
cv::Mat decode_mask_bytes(const std::string& bytes, const std::string& name, int threshold = 128);

/// One row of a labels file (csv: dataset kind).
struct LabelRow {
  std::string image;
  int label = 0;
  std::string type;   ///< empty: "defect" for a defective image
  std::string mask;   ///< empty: none
  std::string split;  ///< "train", "test" or empty (the seeded split decides)
  std::size_t line = 0;
};

/// Parses a labels file (`file` names it in errors). Fields are separated by commas, semicolons or tabs (the first
/// line decides), or by runs of spaces when the first line has none of them; RFC 4180 quotes are honoured. The first
/// row is a header when it names a `path` column (case-insensitive; then `label` is required and `mask`, `type` and
/// `split` are optional, other columns are refused); without one the columns are path, label and optionally type.
/// A label is good/ok/normal/0 or defective/defect/bad/anomalous/1, or a number in [0, 1] (a defect probability):
/// defective when >= `cutoff`. split is train or test; a training row must be good and a good row may not name a
/// mask. Every problem throws DatasetError naming the file, the line and what is wrong; a path named twice is one.
std::vector<LabelRow> parse_label_csv(const std::string& text, const std::string& file, double cutoff = 0.5);

/// A labelled image list (dataset kind csv:); see parse_label_csv and the top of this file.
Dataset load_label_csv(const std::string& csv_path, std::uint64_t seed = 0, double test_fraction = 0.2,
                       double cutoff = 0.5);

/// One row of a DAGM Labels.txt.
struct DagmLabel {
  std::string image;
  int label = 0;
  std::string mask;  ///< empty: none
};

/// Parses a DAGM Labels.txt (`file` names it in errors): a header line, then `id label image 0 mask-file` per
/// non-empty line, exactly five columns; label 0 or 1; file names relative without `..` (they may not leave
/// the dataset folder). Throws DatasetError naming the file, the line and the problem.
std::vector<DagmLabel> parse_dagm_labels(const std::string& text, const std::string& file);

/// Decodes every image and mask of the dataset once (a mask must have its image's size). Bad ones throw
/// DatasetError naming the path, or,
/// with skip_bad_images, are removed and listed in d.skipped (an empty training set still throws).
/// on_progress(done, total) is called after each sample if given.
void check_dataset_images(Dataset& d, bool skip_bad_images,
                          const std::function<void(std::size_t, std::size_t)>& on_progress = {});

/// The image files named by `paths` for prediction: files as given, folders searched recursively for image
/// files (by extension), each folder's files sorted. Paths that do not exist, dangling links, unreadable
/// folders and entries named like images that are not files (FIFOs, devices, folders) go to `problems` (path and
/// reason) instead. The folder `exclude` (predict's --out) and validflow's staging folders are not searched.
std::vector<std::string> collect_image_files(const std::vector<std::string>& paths, std::vector<BadImage>& problems,
                                             const std::string& exclude = "");

/// Parses "KIND:PATH" and reads the dataset (see the top of this file).
Dataset load_dataset(const std::string& spec, const DatasetOptions& opt = {});

}  // namespace app
}  // namespace validflow
