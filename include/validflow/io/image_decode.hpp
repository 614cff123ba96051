#pragma once
// Image bytes to pixels, for files and for bytes sent over the wire: the structure check of image_format.hpp first
// (PNG, JPEG, BMP or TIFF, complete, within a pixel limit), then OpenCV's decoders. Compiled into validflow_image
// (src/image_decode.cpp, OpenCV), shared by the `validflow` program (predict, extract) and the Triton backend's
// encoded input, so both see the same pixels and give the same scores.
#include <validflow/io/image_format.hpp>
#include <validflow/util/error.hpp>

#include <opencv2/core.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace validflow::io {

/// Bytes that are not a usable image; what() is one line naming the image and the problem.
class ImageDecodeError : public ErrorOf<std::runtime_error, ErrorKind::input> {
 public:
  using ErrorOf::ErrorOf;
};

/// Decodes an image at its own size into RGB: CV_8UC3 for 8-bit files, CV_32FC3 in [0, 1] for 16-bit and float
/// files; gray (and gray + alpha) is replicated to 3 channels, alpha is dropped. `name` (a path, "request 3 item 0")
/// is named in errors. Images above `max_pixels` are refused from their header, before any decoding.
cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name, std::uint64_t max_pixels);
cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name);  // max_image_pixels()

/// A mask's bytes decoded as CV_8UC1 0/1 (1: pixel >= threshold) at the file's size; checked as images are.
cv::Mat decode_mask_bytes(std::string_view bytes, const std::string& name, int threshold = 128);

}  // namespace validflow::io
