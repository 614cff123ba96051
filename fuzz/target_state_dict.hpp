#pragma once
// Fuzz target (fuzz_main.cpp): the state-dict reader (io/state_dict.hpp: our zip check, then LibTorch's zip reader and
// unpickler) on raw bytes, and on bytes whose zip CRC-32s were recomputed so that mutations of the pickle
// and of the tensor data reach LibTorch. Accepted: a state dict or a FileError (StateDictError included).
#include "fuzz_common.hpp"

#include <validflow/io/state_dict.hpp>

namespace validflow::fuzz {

namespace state_dict_detail {

/// The zip with every entry's CRC-32 (central directory and local header) recomputed where the structure
/// allows; otherwise unchanged.
inline std::string reseal_zip(std::string bytes) {
  const auto le = [&](size_t at, int n) { return validflow::io::detail::zip_le(bytes, at, n); };
  const auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  const size_t n = bytes.size();
  if (n < 22) return bytes;
  size_t eocd = std::string::npos;
  for (size_t back = 22; back <= n && back <= 22 + 65535; ++back)
    if (std::memcmp(bytes.data() + n - back, "PK\x05\x06", 4) == 0) {
      eocd = n - back;
      break;
    }
  if (eocd == std::string::npos) return bytes;
  // Offsets come from the input: every comparison is written so that it cannot wrap (fits(at, len)).
  const auto fits = [&](uint64_t at, uint64_t len) { return at <= n && len <= n - at; };
  uint64_t entries = le(eocd + 10, 2), cd_offset = le(eocd + 16, 4);
  if (eocd >= 20 && std::memcmp(bytes.data() + eocd - 20, "PK\x06\x07", 4) == 0) {
    const uint64_t at = le(eocd - 20 + 8, 8);
    if (!fits(at, 56)) return bytes;
    entries = le(at + 32, 8);
    cd_offset = le(at + 48, 8);
  }
  uint64_t pos = cd_offset;
  for (uint64_t e = 0; e < entries && e < 100000; ++e) {
    if (!fits(pos, 46) || std::memcmp(bytes.data() + pos, "PK\x01\x02", 4) != 0) break;
    uint64_t size = le(pos + 24, 4);
    const uint64_t local = le(pos + 42, 4);
    const uint64_t name_len = le(pos + 28, 2), extra_len = le(pos + 30, 2), comment_len = le(pos + 32, 2);
    if (!fits(pos + 46, name_len + extra_len)) break;
    for (uint64_t x = pos + 46 + name_len, end = x + extra_len; end - x >= 4;) {  // zip64 sizes
      const uint64_t id = le(x, 2), len = le(x + 2, 2);
      if (id == 1 && len >= 8 && end - x >= 12 && size == 0xFFFFFFFFu) size = le(x + 4, 8);
      if (len > end - x - 4) break;
      x += 4 + len;
    }
    if (fits(local, 30) && std::memcmp(bytes.data() + local, "PK\x03\x04", 4) == 0) {
      const uint64_t data = local + 30 + le(local + 26, 2) + le(local + 28, 2);
      if (fits(data, size)) {
        const uint32_t crc = validflow::io::crc32(bytes.data() + data, size);
        put32(pos + 16, crc);
        put32(local + 14, crc);
      }
    }
    pos += 46 + name_len + extra_len + comment_len;
  }
  return bytes;
}

}  // namespace state_dict_detail

inline int run_state_dict(const uint8_t* data, size_t size) {
  const std::string raw(reinterpret_cast<const char*>(data), size);
  for (const auto& input : {raw, state_dict_detail::reseal_zip(raw)}) {
    try {
      const auto state = validflow::parse_state_dict(std::vector<char>(input.begin(), input.end()), "fuzz.pt");
      for (const auto& [key, tensor] : state) (void)tensor.sum();  // every value is readable
    } catch (const validflow::FileError&) {
    } catch (const std::exception& e) {
      unexpected("fuzz_state_dict", e);
    }
  }
  return 0;
}

}  // namespace validflow::fuzz
