#pragma once
// Fuzz target (fuzz_main.cpp): the feature cache loader (examples/validflow/feature_cache.hpp) on raw and on resealed
// bytes (fuzz_common.hpp). Accepted: a cache or a FileError.
#include "fuzz_common.hpp"

#include "feature_cache.hpp"

namespace validflow::fuzz {

inline int run_feature_cache(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const auto& input : {std::string(bytes), validflow::fuzz::reseal_archive(bytes)}) {
    try {
      const auto cache =
          validflow::app::feature_cache_from_archive(validflow::io::parse_archive(input, "fuzz.pt"), "fuzz.pt");
      (void)cache;
    } catch (const validflow::FileError&) {
    } catch (const std::exception& e) {
      unexpected("fuzz_feature_cache", e);
    }
  }
  return 0;
}

}  // namespace validflow::fuzz
