#pragma once
// Our own structural check of a `torch.save` zip file before LibTorch's reader sees it (io/state_dict.hpp).
// LibTorch 1.13's zip reader does not verify the entries' CRC-32 (a file with an overwritten entry loads with
// changed values), so every byte of every entry is checked here: the end-of-central-directory record (zip64
// too, as torch.save writes it), every central-directory entry and its local header inside the file, names
// equal in both, stored (uncompressed, unencrypted) file entries as torch.save writes them (no directory
// entries), no duplicate names, and each entry's CRC-32. No LibTorch needed; fuzzed by fuzz/target_state_dict.hpp.
#include <validflow/io/crc32.hpp>
#include <validflow/io/errors.hpp>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace validflow::io {

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  ///< of the entry's bytes in the file
  uint64_t size = 0;
};

namespace detail {
inline uint64_t zip_le(std::string_view b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
  return v;
}
}  // namespace detail

/// Checks the zip structure of `bytes` (see the top of this file) and returns its entries in directory order.
/// Throws FileError naming `path` and the problem.
inline std::vector<ZipEntry> check_zip(std::string_view b, const std::string& path) {
  auto refuse = [&](const std::string& why) {
    return FileError(path, "'" + path + "' is not a valid torch.save zip file: " + why);
  };
  const auto le = [&](size_t at, int bytes) { return detail::zip_le(b, at, bytes); };
  const size_t n = b.size();
  // End of central directory: 22 bytes + a comment of up to 65535, at the end of the file.
  size_t eocd = std::string_view::npos;
  for (size_t back = 22; back <= n && back <= 22 + 65535; ++back) {
    const size_t at = n - back;
    if (std::memcmp(b.data() + at, "PK\x05\x06", 4) == 0 && at + 22 + le(at + 20, 2) == n) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string_view::npos) throw refuse("no end-of-central-directory record (truncated?)");
  uint64_t entries = le(eocd + 10, 2), cd_size = le(eocd + 12, 4), cd_offset = le(eocd + 16, 4);
  if (le(eocd + 4, 2) != 0 || le(eocd + 6, 2) != 0 || le(eocd + 8, 2) != entries) throw refuse("a multi-disk archive");
  if (eocd >= 20 && std::memcmp(b.data() + eocd - 20, "PK\x06\x07", 4) == 0) {  // zip64 locator
    const uint64_t at = le(eocd - 20 + 8, 8);
    if (at > eocd - 20 || eocd - 20 - at < 56 || std::memcmp(b.data() + at, "PK\x06\x06", 4) != 0)
      throw refuse("a broken zip64 end-of-central-directory record");
    entries = le(static_cast<size_t>(at) + 32, 8);
    cd_size = le(static_cast<size_t>(at) + 40, 8);
    cd_offset = le(static_cast<size_t>(at) + 48, 8);
  }
  if (cd_offset > eocd || cd_size > eocd - cd_offset) throw refuse("the central directory lies outside the file");
  if (entries == 0) throw refuse("no entries");
  if (entries > cd_size / 46) throw refuse("more entries than the central directory can hold");
  std::vector<ZipEntry> out;
  std::set<std::string> names;
  size_t pos = static_cast<size_t>(cd_offset);
  const size_t cd_end = static_cast<size_t>(cd_offset + cd_size);
  for (uint64_t e = 0; e < entries; ++e) {
    if (cd_end - pos < 46 || std::memcmp(b.data() + pos, "PK\x01\x02", 4) != 0)
      throw refuse("central directory entry " + std::to_string(e) + " is broken");
    const uint64_t flags = le(pos + 8, 2), method = le(pos + 10, 2), crc = le(pos + 16, 4), external = le(pos + 38, 4);
    uint64_t compressed = le(pos + 20, 4), size = le(pos + 24, 4), local = le(pos + 42, 4);
    const size_t name_len = le(pos + 28, 2), extra_len = le(pos + 30, 2), comment_len = le(pos + 32, 2);
    if (cd_end - pos - 46 < name_len + extra_len + comment_len)
      throw refuse("central directory entry " + std::to_string(e) + " is broken");
    const std::string name(b.substr(pos + 46, name_len));
    // zip64 extra field (id 1): the 64-bit values of the fields that hold 0xFFFFFFFF, in this order.
    for (size_t x = pos + 46 + name_len, x_end = x + extra_len; x_end - x >= 4;) {
      const uint64_t id = le(x, 2), len = le(x + 2, 2);
      if (x_end - x - 4 < len) throw refuse("entry '" + name + "' has a broken extra field");
      if (id == 1) {
        size_t v = x + 4;
        for (uint64_t* field : {&size, &compressed, &local}) {
          if (*field != 0xFFFFFFFFu) continue;
          if (x + 4 + len - v < 8) throw refuse("entry '" + name + "' has a broken zip64 field");
          *field = le(v, 8);
          v += 8;
        }
      }
      x += 4 + static_cast<size_t>(len);
    }
    pos += 46 + name_len + extra_len + comment_len;
    if (name.empty() || !names.insert(name).second) throw refuse("an empty or duplicate entry name");
    if (flags & 1) throw refuse("entry '" + name + "' is encrypted");
    // A directory entry (name ending in '/', or the DOS directory attribute): LibTorch's zip reader reads such an
    // entry as empty (found by fuzzing: a flipped attribute bit on the version record); torch.save writes none.
    if (name.back() == '/' || (external & 0x10)) throw refuse("entry '" + name + "' is marked as a directory");
    if (method != 0 || compressed != size)
      throw refuse("entry '" + name + "' is compressed (torch.save stores entries uncompressed)");
    if (local > cd_offset || cd_offset - local < 30 || std::memcmp(b.data() + local, "PK\x03\x04", 4) != 0)
      throw refuse("entry '" + name + "' has no local header inside the file");
    const size_t l = static_cast<size_t>(local);
    const uint64_t local_name = le(l + 26, 2), local_extra = le(l + 28, 2);
    if (cd_offset - local - 30 < local_name + local_extra || b.substr(l + 30, local_name) != name)
      throw refuse("entry '" + name + "' has a local header that disagrees with the central directory");
    const uint64_t data = local + 30 + local_name + local_extra;
    if (size > cd_offset - data) throw refuse("entry '" + name + "' lies outside the file (truncated?)");
    if (crc32(b.data() + data, static_cast<size_t>(size)) != crc)
      throw refuse("checksum mismatch in entry '" + name + "' (corrupt file)");
    out.push_back({name, data, size});
  }
  return out;
}

}  // namespace validflow::io
