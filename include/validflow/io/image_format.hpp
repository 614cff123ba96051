#pragma once
// The structure of an image file, checked before any decoder sees it (docs/reliability.md):
//
//  * only the formats the program documents are handed to OpenCV (PNG, JPEG, BMP, TIFF, recognised by their
//    signature, whatever the extension): OpenCV would otherwise pick any of its decoders (HDR, PFM, PXM, Sun
//    raster, JPEG 2000, ...) by content, a needless attack surface;
//  * the file must be complete: a JPEG must reach its end-of-image marker, a PNG its IEND chunk with every
//    chunk's CRC right, an uncompressed BMP and a TIFF must hold every byte their headers point to. libjpeg
//    decodes a truncated JPEG with only a warning on stderr ("Premature end of JPEG file") and grey where the
//    data ends; here it is a bad image;
//  * the dimensions are at most max_image_pixels() (or the limit given), so a small file cannot make the program
//    allocate gigabytes.
//
// Pure byte inspection (no OpenCV, no LibTorch): fuzzed by fuzz/target_image.hpp. Compiled into validflow_image
// (src/image_format.cpp), shared by the program and the Triton backend: one check for files and for bytes on the wire.
#include <cstdint>
#include <string>
#include <string_view>

namespace validflow::io {

struct ImageHeader {
  std::string format;             ///< "PNG", "JPEG", "BMP" or "TIFF"
  int64_t width = 0, height = 0;  ///< 0 where the header does not say (RLE BMP, TIFF without the tags)
};

/// The largest image (width x height) the program decodes; 2^28 (e.g. 16384 x 16384) unless changed.
std::uint64_t max_image_pixels();
/// Changes the limit (fuzzers and tests use a small one). Not thread-safe: call before decoding.
void set_max_image_pixels(std::uint64_t pixels);

/// Checks `bytes` as described at the top of this file. Returns "" and fills `header` when the file is a
/// complete image of a supported format within the size limit; otherwise the reason, e.g. "truncated JPEG
/// (no end-of-image marker)", "not a PNG, JPEG, BMP or TIFF file".
std::string image_structure_problem(std::string_view bytes, ImageHeader& header);
/// The same with an explicit pixel limit instead of the process-wide one (a server with per-model limits).
std::string image_structure_problem(std::string_view bytes, ImageHeader& header, std::uint64_t max_pixels);

}  // namespace validflow::io
