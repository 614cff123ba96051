#pragma once
// Fuzz target (fuzz_main.cpp): the file container (io::parse_archive) on raw bytes: every offset, size, dtype, shape
// and checksum of a hostile file. Accepted: an archive or a FileError.
#include "fuzz_common.hpp"

namespace validflow::fuzz {

inline int run_archive(const uint8_t* data, size_t size) {
  return on_raw_and_resealed(data, size, "fuzz_archive", [](const std::string& input) {
    const auto archive = validflow::io::parse_archive(input, "fuzz.vf");
    // A file that was accepted serialises back into one that parses to the same content.
    const auto again = validflow::io::parse_archive(validflow::io::serialize_archive(archive), "again.vf");
    if (again.tensors.size() != archive.tensors.size() || again.blobs != archive.blobs || again.meta != archive.meta)
      std::abort();
  });
}

}  // namespace validflow::fuzz
