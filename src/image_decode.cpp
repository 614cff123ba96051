#include <validflow/io/image_decode.hpp>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <limits>
#include <vector>

namespace validflow::io {
namespace {

/// Checks the structure (image_format.hpp), then decodes with OpenCV.
cv::Mat decode_checked(std::string_view bytes, const std::string& name, int flags, const std::string& what,
                       std::uint64_t max_pixels) {
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw ImageDecodeError(what + " file larger than 2 GiB: " + name);
  ImageHeader header;
  const auto problem = image_structure_problem(bytes, header, max_pixels);
  if (!problem.empty()) throw ImageDecodeError("bad " + what + " (" + problem + "): " + name);
  cv::Mat m;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    m = cv::imdecode(buffer, flags);
  } catch (const cv::Exception& e) {
    throw ImageDecodeError("cannot decode " + what + " (corrupt or unsupported " + header.format + "): " + name + ": " +
                           e.what());
  }
  if (m.empty())
    throw ImageDecodeError("cannot decode " + what + " (corrupt or unsupported " + header.format + "): " + name);
  return m;
}

}  // namespace

cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name) {
  return decode_image_bytes(bytes, name, max_image_pixels());
}

cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name, std::uint64_t max_pixels) {
  const cv::Mat raw = decode_checked(bytes, name, cv::IMREAD_UNCHANGED, "image", max_pixels);
  double scale;
  switch (raw.depth()) {
    case CV_8U:
      scale = 1.0;
      break;
    case CV_16U:
      scale = 1.0 / 65535.0;
      break;
    case CV_32F:
      scale = 1.0;
      break;
    default:
      throw ImageDecodeError("unsupported pixel depth in image: " + name);
  }
  cv::Mat rgb;
  switch (raw.channels()) {
    case 1:
      cv::cvtColor(raw, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 2: {  // gray + alpha
      std::vector<cv::Mat> ch;
      cv::split(raw, ch);
      cv::cvtColor(ch[0], rgb, cv::COLOR_GRAY2RGB);
      break;
    }
    case 3:
      cv::cvtColor(raw, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(raw, rgb, cv::COLOR_BGRA2RGB);
      break;
    default:
      throw ImageDecodeError("unsupported number of channels (" + std::to_string(raw.channels()) +
                             ") in image: " + name);
  }
  if (raw.depth() == CV_8U) return rgb;
  cv::Mat f;
  rgb.convertTo(f, CV_32FC3, scale);
  return f;
}

cv::Mat decode_mask_bytes(std::string_view bytes, const std::string& name, int threshold) {
  const cv::Mat m =
      decode_checked(bytes, name, cv::IMREAD_GRAYSCALE | cv::IMREAD_IGNORE_ORIENTATION, "mask", max_image_pixels());
  cv::Mat out;
  cv::threshold(m, out, threshold - 1, 1, cv::THRESH_BINARY);  // > threshold-1  <=>  >= threshold
  return out;
}

}  // namespace validflow::io
