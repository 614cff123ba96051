#pragma once
// Fuzz target (fuzz_main.cpp): the feature cache loader (apps/validflow/feature_cache.hpp) on raw and on resealed
// bytes (fuzz_common.hpp). Accepted: a cache or a FileError.
#include "fuzz_common.hpp"

#include "feature_cache.hpp"

namespace validflow::fuzz {

inline int run_feature_cache(const uint8_t* data, size_t size) {
  return on_raw_and_resealed(data, size, "fuzz_feature_cache", [](const std::string& input) {
    (void)validflow::app::feature_cache_from_archive(validflow::io::parse_archive(input, "fuzz.pt"), "fuzz.pt");
  });
}

}  // namespace validflow::fuzz
