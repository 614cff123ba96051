#pragma once
// Fuzz target (fuzz_main.cpp): the training checkpoint loader (apps/validflow/training.hpp) on raw and on resealed
// bytes (fuzz_common.hpp). Accepted: a checkpoint or a FileError.
#include "fuzz_common.hpp"

#include "training.hpp"

namespace validflow::fuzz {

inline int run_checkpoint(const uint8_t* data, size_t size) {
  return on_raw_and_resealed(data, size, "fuzz_checkpoint", [](const std::string& input) {
    (void)validflow::app::checkpoint_from_archive(validflow::io::parse_archive(input, "fuzz.pt"), "fuzz.pt");
  });
}

}  // namespace validflow::fuzz
