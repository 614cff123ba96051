#pragma once
// Fuzz target (fuzz_main.cpp): the model file loader (detect/model_file.hpp: archive, kind, metadata, backbone and flow
// descriptions, weights) on raw and on resealed bytes (fuzz_common.hpp). Accepted: a model or a FileError.
#include "fuzz_common.hpp"

#include <validflow/detect/model_file.hpp>

namespace validflow::fuzz {

inline int run_model_file(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const auto& input : {std::string(bytes), validflow::fuzz::reseal_archive(bytes)}) {
    try {
      const auto model = validflow::load_model_archive(validflow::io::parse_archive(input, "fuzz.vfm"), "fuzz.vfm");
      (void)model;
    } catch (const validflow::FileError&) {
    } catch (const std::exception& e) {
      unexpected("fuzz_model_file", e);
    }
  }
  return 0;
}

}  // namespace validflow::fuzz
