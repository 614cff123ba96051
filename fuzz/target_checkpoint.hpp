#pragma once
// Fuzz target (fuzz_main.cpp): the training checkpoint loader (examples/validflow/training.hpp) on raw and on resealed
// bytes (fuzz_common.hpp). Accepted: a checkpoint or a FileError.
#include "fuzz_common.hpp"

#include "training.hpp"

namespace validflow::fuzz {

inline int run_checkpoint(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const auto& input : {std::string(bytes), validflow::fuzz::reseal_archive(bytes)}) {
    try {
      const auto c = validflow::app::checkpoint_from_archive(validflow::io::parse_archive(input, "fuzz.pt"), "fuzz.pt");
      (void)c;
    } catch (const validflow::FileError&) {
    } catch (const std::exception& e) {
      unexpected("fuzz_checkpoint", e);
    }
  }
  return 0;
}

}  // namespace validflow::fuzz
