#include <validflow/io/image_format.hpp>

#include <validflow/io/crc32.hpp>

#include <cstring>

namespace validflow::io {
namespace {

std::uint64_t process_max_pixels = std::uint64_t{1} << 28;

uint32_t be16(std::string_view b, size_t at) {
  return static_cast<uint32_t>(static_cast<unsigned char>(b[at])) << 8 | static_cast<unsigned char>(b[at + 1]);
}
uint32_t be32(std::string_view b, size_t at) { return be16(b, at) << 16 | be16(b, at + 2); }
uint32_t le16(std::string_view b, size_t at) {
  return static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 8 | static_cast<unsigned char>(b[at]);
}
uint32_t le32(std::string_view b, size_t at) { return le16(b, at + 2) << 16 | le16(b, at); }

std::string size_problem(const ImageHeader& h, std::uint64_t max_pixels) {
  if (h.width > 0 && h.height > 0 &&
      static_cast<std::uint64_t>(h.width) * static_cast<std::uint64_t>(h.height) > max_pixels)
    return h.format + " of " + std::to_string(h.width) + " x " + std::to_string(h.height) +
           " pixels is larger than the limit of " + std::to_string(max_pixels) + " pixels";
  return "";
}

/// A chunk type for a message: its 4 letters, or hex when they are not ASCII letters (a corrupt file's bytes would
/// make the message invalid UTF-8, which a server's JSON error response cannot carry).
std::string printable_chunk_type(std::string_view type) {
  bool letters = true;
  for (char c : type) letters = letters && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'));
  if (letters) return std::string(type);
  static const char* const digits = "0123456789abcdef";
  std::string hex = "0x";
  for (char c : type) {
    const auto u = static_cast<unsigned char>(c);
    hex += digits[u >> 4];
    hex += digits[u & 15];
  }
  return hex;
}

std::string check_png(std::string_view b, ImageHeader& h) {
  // Chunks: length (4, big-endian), type (4), data, CRC-32 of type + data (4). IHDR first, IEND last.
  size_t pos = 8;
  bool first = true, image_data = false;
  while (true) {
    if (b.size() - pos < 12) return "truncated PNG (the file ends before its IEND chunk)";
    const uint32_t length = be32(b, pos);
    if (length > 0x7FFFFFFFu) return "corrupt PNG (a chunk length above 2^31)";
    if (b.size() - pos - 12 < length) return "truncated PNG (the file ends inside a chunk)";
    const std::string_view type = b.substr(pos + 4, 4);
    if (io::crc32(b.data() + pos + 4, 4 + static_cast<size_t>(length)) != be32(b, pos + 8 + length))
      return "corrupt PNG (chunk " + printable_chunk_type(type) + " fails its CRC check)";
    if (first) {
      if (type != "IHDR" || length != 13) return "corrupt PNG (the first chunk is not IHDR)";
      h.width = be32(b, pos + 8);
      h.height = be32(b, pos + 12);
      if (h.width == 0 || h.height == 0 || h.width > 0x7FFFFFFF || h.height > 0x7FFFFFFF)
        return "corrupt PNG (invalid dimensions " + std::to_string(h.width) + " x " + std::to_string(h.height) + ")";
      first = false;
    }
    if (type == "IDAT") image_data = true;
    if (type == "IEND") return image_data ? "" : "corrupt PNG (no image data)";
    pos += 12 + static_cast<size_t>(length);
  }
}

bool is_sof(unsigned marker) {  // start of frame: C0..CF except DHT (C4), JPG (C8), DAC (CC)
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

std::string check_jpeg(std::string_view b, ImageHeader& h) {
  // Segments (FF marker, 2-byte length) up to each start of scan (FF DA), then entropy-coded data, in which FF
  // is followed by 00 (a stuffed byte) or a restart marker D0..D7; any other marker ends the scan. The image
  // is complete when the end-of-image marker (FF D9) is reached.
  const auto at = [&](size_t i) { return static_cast<unsigned char>(b[i]); };
  size_t pos = 2;
  bool frame = false, scan = false;
  while (true) {
    if (pos >= b.size()) return "truncated JPEG (the file ends before its end-of-image marker)";
    if (at(pos) != 0xFF) return "corrupt JPEG (no marker at byte " + std::to_string(pos) + ")";
    while (pos < b.size() && at(pos) == 0xFF) ++pos;  // fill bytes
    if (pos >= b.size()) return "truncated JPEG (the file ends before its end-of-image marker)";
    const unsigned marker = at(pos++);
    if (marker == 0xD9) {
      if (!frame || !scan) return "corrupt JPEG (no image data before its end-of-image marker)";
      return "";
    }
    if (marker == 0x00 || marker == 0xD8) return "corrupt JPEG (unexpected marker at byte " + std::to_string(pos) + ")";
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // markers without a length
    if (b.size() - pos < 2) return "truncated JPEG (the file ends inside a segment)";
    const size_t length = be16(b, pos);
    if (length < 2) return "corrupt JPEG (a segment length below 2)";
    if (b.size() - pos < length) return "truncated JPEG (the file ends inside a segment)";
    if (is_sof(marker)) {
      if (length < 8) return "corrupt JPEG (a frame header too short)";
      h.height = be16(b, pos + 3);
      h.width = be16(b, pos + 5);
      if (h.width == 0 || h.height == 0) return "corrupt JPEG (zero image dimensions)";
      frame = true;
    }
    pos += length;
    if (marker != 0xDA) continue;
    if (!frame) return "corrupt JPEG (image data before a frame header)";
    scan = true;
    while (true) {  // entropy-coded data
      const void* ff = std::memchr(b.data() + pos, 0xFF, b.size() - pos);
      if (!ff) return "truncated JPEG (the file ends inside the image data)";
      pos = static_cast<size_t>(static_cast<const char*>(ff) - b.data());
      if (pos + 1 >= b.size()) return "truncated JPEG (the file ends inside the image data)";
      const unsigned next = at(pos + 1);
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos += 2;
      } else if (next == 0xFF) {
        pos += 1;
      } else {
        break;  // a marker: the next segment (or EOI)
      }
    }
  }
}

std::string check_bmp(std::string_view b, ImageHeader& h) {
  if (b.size() < 26) return "truncated BMP (header incomplete)";
  const uint32_t data_offset = le32(b, 10), dib = le32(b, 14);
  uint32_t bits = 0, compression = 0;
  int64_t width = 0, height = 0;
  if (dib == 12) {  // OS/2 BITMAPCOREHEADER
    width = le16(b, 18);
    height = le16(b, 20);
    bits = le16(b, 24);
  } else if (dib >= 40) {
    if (b.size() < 14 + static_cast<size_t>(40)) return "truncated BMP (header incomplete)";
    width = static_cast<int32_t>(le32(b, 18));
    height = static_cast<int32_t>(le32(b, 22));
    bits = le16(b, 28);
    compression = le32(b, 30);
  } else {
    return "unsupported BMP header (" + std::to_string(dib) + " bytes)";
  }
  if (height < 0) height = -height;  // top-down rows
  if (width <= 0 || height <= 0)
    return "corrupt BMP (invalid dimensions " + std::to_string(width) + " x " + std::to_string(height) + ")";
  h.width = width;
  h.height = height;
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
    return "unsupported BMP bit depth " + std::to_string(bits);
  if (data_offset >= b.size()) return "truncated BMP (the file ends before its pixel data)";
  if (compression == 0 || compression == 3 || compression == 6) {  // uncompressed rows (with bit fields)
    const std::uint64_t row = (static_cast<std::uint64_t>(bits) * static_cast<std::uint64_t>(width) + 31) / 32 * 4;
    if (row * static_cast<std::uint64_t>(height) > b.size() - data_offset)
      return "truncated BMP (the file ends inside its pixel data)";
  } else if (compression != 1 && compression != 2) {  // RLE8 / RLE4 are length-checked by the decoder
    return "unsupported BMP compression " + std::to_string(compression);
  }
  return "";
}

std::string check_tiff(std::string_view b, ImageHeader& h) {
  // Classic TIFF: the first image file directory (the image OpenCV reads) and every strip or tile it points to
  // must lie inside the file.
  const bool little = b[0] == 'I';
  const auto u16 = [&](size_t at) { return little ? le16(b, at) : be16(b, at); };
  const auto u32 = [&](size_t at) { return little ? le32(b, at) : be32(b, at); };
  const size_t n = b.size();
  const uint32_t ifd = u32(4);
  if (ifd < 8 || n < 2 || ifd > n - 2) return "truncated TIFF (the file ends before its first directory)";
  const uint32_t entries = u16(ifd);
  if (n - ifd - 2 < 4 || (n - ifd - 2 - 4) / 12 < entries)  // the entries, then the next directory's offset
    return "truncated TIFF (the file ends inside its first directory)";
  struct Field {
    uint32_t type = 0, count = 0;
    size_t data = 0;  // where the values are
  };
  Field offsets, counts;
  bool tiled = false;
  for (uint32_t e = 0; e < entries; ++e) {
    const size_t at = ifd + 2 + 12 * static_cast<size_t>(e);
    const uint32_t tag = u16(at), type = u16(at + 2), count = u32(at + 4);
    static const uint32_t type_size[] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8};
    const uint64_t size = type < 13 ? static_cast<uint64_t>(type_size[type]) * count : 0;
    size_t data = at + 8;
    if (size > 4) {
      data = u32(at + 8);
      if (data > n || size > n - data) return "truncated TIFF (a directory entry points past the end of the file)";
    }
    const bool integer = (type == 3 || type == 4) && count >= 1;
    if ((tag == 256 || tag == 257) && integer) {
      const int64_t v = type == 3 ? u16(data) : u32(data);
      (tag == 256 ? h.width : h.height) = v;
    }
    if ((tag == 273 || tag == 324) && integer) offsets = {type, count, data};
    if ((tag == 279 || tag == 325) && integer) counts = {type, count, data};
    if (tag == 324) tiled = true;
  }
  if (h.width <= 0 || h.height <= 0) return "corrupt TIFF (no image width and length)";
  if (offsets.count == 0 || counts.count != offsets.count)
    return std::string("corrupt TIFF (") + (tiled ? "tile" : "strip") + " offsets and byte counts missing or unequal)";
  const auto value = [&](const Field& f, uint32_t i) -> uint64_t {
    return f.type == 3 ? u16(f.data + 2 * static_cast<size_t>(i)) : u32(f.data + 4 * static_cast<size_t>(i));
  };
  for (uint32_t i = 0; i < offsets.count; ++i) {
    const uint64_t offset = value(offsets, i), bytes = value(counts, i);
    if (offset > n || bytes > n - offset)
      return std::string("truncated TIFF (a ") + (tiled ? "tile" : "strip") + " lies past the end of the file)";
  }
  return "";
}

}  // namespace

std::uint64_t max_image_pixels() { return process_max_pixels; }
void set_max_image_pixels(std::uint64_t pixels) { process_max_pixels = pixels; }

std::string image_structure_problem(std::string_view b, ImageHeader& h) {
  return image_structure_problem(b, h, process_max_pixels);
}

std::string image_structure_problem(std::string_view b, ImageHeader& h, std::uint64_t max_pixels) {
  h = ImageHeader{};
  std::string problem;
  if (b.empty()) return "empty file";
  if (b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0) {
    h.format = "PNG";
    problem = check_png(b, h);
  } else if (b.size() >= 3 && std::memcmp(b.data(), "\xFF\xD8\xFF", 3) == 0) {
    h.format = "JPEG";
    problem = check_jpeg(b, h);
  } else if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') {
    h.format = "BMP";
    problem = check_bmp(b, h);
  } else if (b.size() >= 8 && (std::memcmp(b.data(), "II*\0", 4) == 0 || std::memcmp(b.data(), "MM\0*", 4) == 0)) {
    h.format = "TIFF";
    problem = check_tiff(b, h);
  } else if (b.size() >= 4 && (std::memcmp(b.data(), "II+\0", 4) == 0 || std::memcmp(b.data(), "MM\0+", 4) == 0)) {
    return "BigTIFF files are not supported";
  } else {
    return "not a PNG, JPEG, BMP or TIFF file";
  }
  if (!problem.empty()) return problem;
  return size_problem(h, max_pixels);
}

}  // namespace validflow::io
