// CPU benchmarks of FrEIA's blocks in validflow (validflow/freia/), one case per block at the size a detector uses
// it (FastFlow's 2-D flow on a 64-channel 64x64 map, CFlow-AD's conditional per-position flow on 4096 vectors of
// 256 channels), inference: eval, NoGradGuard, forward, finite checks off.
//
//   bench_freia [--freia_times=FILE] [--tuned_runtime] [Google Benchmark flags]
//
// --tuned_runtime applies validflow::configure_cpu_runtime() (runtime.hpp: heap instead of one mmap per large
// tensor, LibTorch's AVX-512 kernels where the CPU has them), as the validflow program does; without it LibTorch
// runs with its defaults, as FrEIA in Python does. scripts/bench_freia.sh measures both ways, FrEIA too.
//
// With --freia_times (the JSON of tools/bench_freia.py, which times FrEIA 0.2's same blocks at the same sizes), each
// case gets counters freia_ms (FrEIA's median forward) and speedup (FrEIA's time / ours); scripts/bench_freia.sh
// runs both in one go with the same thread count. Times are wall clock (UseRealTime: intra-op worker threads).
#include <validflow/freia.hpp>
#include <validflow/runtime.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

using namespace validflow;

namespace {

std::map<std::string, double> g_freia_seconds;

struct Case {
  std::string name;  ///< as in tools/bench_freia.py's CASES
  std::function<AnyFlow()> make;
  std::vector<int64_t> input, condition;
};

using ConvAllInOne = AllInOneBlock<Conv2dSubnet>;
using FcAllInOne = AllInOneBlock<FcSubnet>;

std::vector<Case> cases() {
  return {
      {"allinone_fastflow/c64_64x64_b8",
       [] { return AnyFlow(ConvAllInOne(ConvAllInOne::Impl::Options(64, Conv2dSubnetOptions())).ptr()); },
       {8, 64, 64, 64},
       {}},
      {"allinone_cflow/c256_cond128_n4096",
       [] {
         return AnyFlow(FcAllInOne(FcAllInOne::Impl::Options(256, FcSubnetOptions())
                                       .spatial_dims(0)
                                       .condition_channels({128})
                                       .affine_clamping(1.9)
                                       .permute_soft(true))
                            .ptr());
       },
       {4096, 256},
       {4096, 128}},
      {"glow_conv/c64_64x64_b8",
       [] { return AnyFlow(GLOWCouplingBlock<Conv2dSubnet>(CouplingBlockOptions<Conv2dSubnetOptions>(64)).ptr()); },
       {8, 64, 64, 64},
       {}},
      {"rnvp_fc/c256_cond128_n4096",
       [] {
         return AnyFlow(RNVPCouplingBlock<FcSubnet>(
                            CouplingBlockOptions<FcSubnetOptions>(256).spatial_dims(0).condition_channels({128}))
                            .ptr());
       },
       {4096, 256},
       {4096, 128}},
      {"permute_random/c256_n4096",
       [] { return AnyFlow(PermuteRandom(PermuteRandomOptions(256).spatial_dims(0)).ptr()); },
       {4096, 256},
       {}},
      {"actnorm/c64_64x64_b8",
       [] { return AnyFlow(FreiaActNorm(FreiaActNormOptions(64)).ptr()); },
       {8, 64, 64, 64},
       {}},
  };
}

void run_case(benchmark::State& state, const Case& c) {
  set_finite_checks(false);
  torch::manual_seed(0);
  const TensorList x{torch::randn(c.input)};
  const TensorList conditions = c.condition.empty() ? TensorList{} : TensorList{torch::randn(c.condition)};
  auto block = c.make();
  block.module().train();
  block->forward(x, conditions);  // data-dependent initialisation (ActNorm)
  block.module().eval();
  torch::NoGradGuard no_grad;
  block->forward(x, conditions);  // warm-up (oneDNN primitives)
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto result = block->forward(x, conditions);
    benchmark::DoNotOptimize(result.tensors[0].data_ptr());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                         static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  const auto found = g_freia_seconds.find(c.name);
  if (found != g_freia_seconds.end()) {
    state.counters["freia_ms"] = found->second * 1e3;
    state.counters["speedup"] = found->second / seconds;  // how many times faster than FrEIA's forward
  }
  set_finite_checks(true);
}

/// Removes `flag` from argv (before Google Benchmark sees the flags); true if it was there.
bool take_flag(int& argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], flag) != 0) continue;
    for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
    --argc;
    return true;
  }
  return false;
}

/// Reads --freia_times=FILE (and removes it from argv before Google Benchmark sees the flags).
bool read_freia_times(int& argc, char** argv) {
  const char* flag = "--freia_times=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], flag, std::strlen(flag)) != 0) continue;
    const std::string path = argv[i] + std::strlen(flag);
    std::ifstream in(path);
    if (!in) {
      std::fprintf(stderr, "bench_freia: cannot read '%s'\n", path.c_str());
      return false;
    }
    try {
      const auto json = nlohmann::json::parse(in);
      for (const auto& [name, seconds] : json.at("cases").items()) g_freia_seconds[name] = seconds.get<double>();
      std::printf("FrEIA times from %s (torch %s, %d threads)\n", path.c_str(),
                  json.at("torch").get<std::string>().c_str(), json.at("threads").get<int>());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_freia: '%s' is not tools/bench_freia.py's JSON: %s\n", path.c_str(), e.what());
      return false;
    }
    for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
    --argc;
    return true;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!read_freia_times(argc, argv)) return 2;
  if (take_flag(argc, argv, "--tuned_runtime")) {
    const auto report = configure_cpu_runtime();
    std::printf("runtime: validflow::configure_cpu_runtime (malloc tuned %s, kernels %s)\n",
                report.malloc_tuned ? "yes" : "no", report.cpu_capability.c_str());
  } else {
    std::printf("runtime: LibTorch's defaults\n");
  }
  for (const auto& c : cases()) {
    benchmark::RegisterBenchmark(("freia/" + c.name).c_str(), [c](benchmark::State& state) { run_case(state, c); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("torch threads: %d\n", at::get_num_threads());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
