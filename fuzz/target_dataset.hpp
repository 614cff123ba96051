#pragma once
// Fuzz target (fuzz_main.cpp): dataset specs and DAGM Labels.txt (apps/validflow/datasets.cpp). The input's first
// line is a dataset spec `KIND:SUBPATH` (SUBPATH relative to a small generated tree holding a DAGM class, a folder
// dataset, an MTD dataset and a csv labels file), the rest is written as the DAGM class's Train and Test Labels.txt
// and as the csv labels file (csv:labels.csv). The labels are also parsed directly (parse_dagm_labels,
// parse_label_csv). Accepted: a dataset or a DatasetError.
#include "datasets.hpp"

#include <opencv2/imgcodecs.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <unistd.h>

namespace validflow::fuzz {

namespace fs = std::filesystem;

namespace dataset_detail {

inline fs::path root;  // the generated tree

inline void image(const fs::path& p, int value = 100) {
  fs::create_directories(p.parent_path());
  cv::imwrite(p.string(), cv::Mat(8, 8, CV_8UC1, cv::Scalar(value)));
}

inline void text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

[[noreturn]] inline void unexpected(const std::exception& e) {
  std::fprintf(stderr, "fuzz_dataset: unexpected exception type: %s\n", e.what());
  std::abort();
}

}  // namespace dataset_detail

inline void init_dataset() {
  using namespace dataset_detail;
  root = fs::temp_directory_path() / ("validflow-fuzz-dataset-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const char* split : {"Train", "Test"}) {
    image(root / "dagm" / split / "0001.PNG");
    image(root / "dagm" / split / "0002.PNG");
    image(root / "dagm" / split / "Label/0002_label.PNG", 255);
  }
  image(root / "folder/train/good/000.png");
  image(root / "folder/test/good/000.png");
  image(root / "folder/test/crack/000.png");
  image(root / "folder/ground_truth/crack/000_mask.png", 255);
  for (int i = 0; i < 3; ++i) image(root / "mtd/MT_Free/Imgs" / ("f" + std::to_string(i) + ".jpg"));
  image(root / "mtd/MT_Crack/Imgs/c.jpg");
  image(root / "mtd/MT_Crack/Imgs/c.png", 255);
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(dataset_detail::root, ec);
  });
}

inline int run_dataset(const uint8_t* data, size_t size) {
  using namespace dataset_detail;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const std::string spec = input.substr(0, std::min(newline, size_t{200}));
  const std::string labels = newline == std::string::npos ? "" : input.substr(newline + 1);
  try {
    (void)validflow::app::parse_dagm_labels(labels, "Labels.txt");
  } catch (const validflow::app::DatasetError&) {
  } catch (const std::exception& e) {
    unexpected(e);
  }
  try {
    const auto rows = validflow::app::parse_label_csv(labels, "labels.csv", 0.25 + static_cast<double>(size % 4) / 4);
    for (const auto& r : rows)
      if (r.image.empty() || (r.label != 0 && r.label != 1) || (r.label == 0 && !r.mask.empty())) std::abort();
  } catch (const validflow::app::DatasetError&) {
  } catch (const std::exception& e) {
    unexpected(e);
  }
  text(root / "labels.csv", labels);
  text(root / "dagm/Train/Label/Labels.txt", labels);
  text(root / "dagm/Test/Label/Labels.txt", labels);
  // KIND:SUBPATH -> KIND:<root>/SUBPATH; a spec that would leave the tree is not tried (it would read the
  // machine's folders, which says nothing about the reader).
  const auto colon = spec.find(':');
  std::string full = spec;
  if (colon != std::string::npos) {
    if (spec.find("..") != std::string::npos || spec.find('\0') != std::string::npos) return 0;
    full = spec.substr(0, colon + 1) + (root / spec.substr(colon + 1)).string();
  }
  validflow::app::DatasetOptions options;
  options.seed = size;
  options.holdout_fraction = static_cast<double>(size % 7) / 12.0;
  try {
    const auto d = validflow::app::load_dataset(full, options);
    if (d.train.empty() || d.test.empty()) std::abort();
  } catch (const validflow::app::DatasetError&) {
  } catch (const std::exception& e) {
    unexpected(e);
  }
  return 0;
}

}  // namespace validflow::fuzz
