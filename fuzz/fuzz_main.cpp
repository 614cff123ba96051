// The libFuzzer binary `validflow_fuzz`: one target per loader (target_*.hpp), chosen with the environment
// variable VALIDFLOW_FUZZ_TARGET. One binary rather than eight: every target includes LibTorch's headers, and
// one translation unit compiles in a fraction of the time of eight (the fuzz build runs in CI). scripts/fuzz.sh
// builds and runs them; fuzz/README.md describes the corpus and the regression inputs.
#include "target_archive.hpp"
#include "target_checkpoint.hpp"
#include "target_config.hpp"
#include "target_dataset.hpp"
#include "target_feature_cache.hpp"
#include "target_image.hpp"
#include "target_model_file.hpp"
#include "target_state_dict.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

struct Target {
  const char* name;
  void (*init)();
  int (*run)(const uint8_t*, size_t);
};

void no_init() {}

const Target targets[] = {
    {"archive", no_init, validflow::fuzz::run_archive},
    {"model_file", no_init, validflow::fuzz::run_model_file},
    {"checkpoint", no_init, validflow::fuzz::run_checkpoint},
    {"feature_cache", no_init, validflow::fuzz::run_feature_cache},
    {"state_dict", no_init, validflow::fuzz::run_state_dict},
    {"dataset", validflow::fuzz::init_dataset, validflow::fuzz::run_dataset},
    {"image", validflow::fuzz::init_image, validflow::fuzz::run_image},
    {"config", no_init, validflow::fuzz::run_config},
};

const Target* chosen = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* name = std::getenv("VALIDFLOW_FUZZ_TARGET");
  for (const auto& t : targets)
    if (name && std::strcmp(name, t.name) == 0) chosen = &t;
  if (!chosen) {
    std::fprintf(stderr, "validflow_fuzz: set VALIDFLOW_FUZZ_TARGET to one of:");
    for (const auto& t : targets) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  torch::set_num_threads(1);
  chosen->init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return chosen->run(data, size); }
