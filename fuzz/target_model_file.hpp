#pragma once
// Fuzz target (fuzz_main.cpp): the model file loader (detect/model_file.hpp: archive, kind, metadata, backbone and flow
// descriptions, weights) on raw and on resealed bytes (fuzz_common.hpp). Accepted: a model or a FileError.
#include "fuzz_common.hpp"

#include <validflow/detect/model_file.hpp>

namespace validflow::fuzz {

inline int run_model_file(const uint8_t* data, size_t size) {
  return on_raw_and_resealed(data, size, "fuzz_model_file", [](const std::string& input) {
    (void)validflow::load_model_archive(validflow::io::parse_archive(input, "fuzz.vfm"), "fuzz.vfm");
  });
}

}  // namespace validflow::fuzz
