#pragma once
// Fuzz target (fuzz_main.cpp): image and mask decoding (apps/validflow: image_format.cpp's structure check, then
// OpenCV) on raw bytes. Accepted: an image or a DatasetError. The pixel limit is lowered (4 Mpx) so that a
// valid header of a large image is not reported as an out-of-memory finding; fuzz.sh also sets
// OPENCV_IO_MAX_IMAGE_PIXELS for the formats OpenCV sizes itself.
#include "datasets.hpp"

#include <cstdio>
#include <cstdlib>

namespace validflow::fuzz {

inline void init_image() { validflow::app::set_max_image_pixels(4u << 20); }

inline int run_image(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const cv::Mat image = validflow::app::decode_image_bytes(bytes, "fuzz.png");
    if (image.channels() != 3 || (image.depth() != CV_8U && image.depth() != CV_32F)) std::abort();
  } catch (const validflow::app::DatasetError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_image: unexpected exception type: %s\n", e.what());
    std::abort();
  }
  try {
    const cv::Mat mask = validflow::app::decode_mask_bytes(bytes, "fuzz_mask.png");
    if (mask.type() != CV_8UC1) std::abort();
  } catch (const validflow::app::DatasetError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_image: unexpected exception type: %s\n", e.what());
    std::abort();
  }
  return 0;
}

}  // namespace validflow::fuzz
