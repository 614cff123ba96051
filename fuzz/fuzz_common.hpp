#pragma once
// Shared helpers of the libFuzzer targets (fuzz/README.md). Each target feeds its input to one loader and
// accepts exactly two outcomes: a result, or the loader's documented error type. Anything else (a crash, a
// sanitizer report, another exception type, a leak) is a finding.
#include <validflow/io/crc32.hpp>
#include <validflow/io/tensor_archive.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

namespace validflow::fuzz {

/// Reports an exception the loader must never throw, and aborts (libFuzzer records the input).
[[noreturn]] inline void unexpected(const char* target, const std::exception& e) {
  std::fprintf(stderr, "%s: unexpected exception type: %s\n", target, e.what());
  std::abort();
}

/// Archive bytes with every checksum recomputed, so mutations of the JSON header and of the tensor bytes reach
/// the loaders behind the checksums (without it almost every mutation stops at a CRC). Inputs that are not
/// archives, or whose header is not JSON, come back with only the header CRC fixed.
inline std::string reseal_archive(std::string_view bytes) {
  if (bytes.size() < 24 || std::memcmp(bytes.data(), io::detail::archive_magic(), 8) != 0) return std::string(bytes);
  const auto header_len = io::detail::get<uint64_t>(bytes, 16);
  if (header_len > bytes.size() - 24 || header_len > io::kMaxHeaderBytes) return std::string(bytes);
  const std::string_view header = bytes.substr(24, header_len);
  const uint64_t payload_start = io::detail::align64(24 + header_len);
  const std::string_view payload = payload_start <= bytes.size() ? bytes.substr(payload_start) : std::string_view();
  auto h = nlohmann::json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  std::string text(header);
  if (h.is_object()) {
    for (const char* table : {"tensors", "blobs"}) {
      auto it = h.find(table);
      if (it == h.end() || !it->is_array()) continue;
      for (auto& e : *it) {
        if (!e.is_object()) continue;
        const auto offset = e.find("offset"), size = e.find("size");
        if (offset == e.end() || size == e.end() || !offset->is_number_unsigned() || !size->is_number_unsigned())
          continue;
        const auto o = offset->get<uint64_t>(), s = size->get<uint64_t>();
        if (o <= payload.size() && s <= payload.size() - o) e["crc32"] = io::crc32(payload.data() + o, s);
      }
    }
    text = h.dump();
  }
  std::string out(bytes.substr(0, 12));
  io::detail::put<uint32_t>(out, io::crc32(text.data(), text.size()));
  io::detail::put<uint64_t>(out, text.size());
  out += text;
  out.resize(io::detail::align64(out.size()), '\0');
  out += payload;
  return out;
}

/// Runs `load` on the raw bytes and on their resealed form (reseal_archive): a FileError is the accepted refusal,
/// any other exception aborts (libFuzzer records the input).
template <class Load>
int on_raw_and_resealed(const uint8_t* data, size_t size, const char* target, Load&& load) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const auto& input : {std::string(bytes), reseal_archive(bytes)}) {
    try {
      load(input);
    } catch (const FileError&) {
    } catch (const std::exception& e) {
      unexpected(target, e);
    }
  }
  return 0;
}

}  // namespace validflow::fuzz
