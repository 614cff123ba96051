// Feature-extraction throughput of the multi-scale extractor (CPU, fp32, eval, no autograd).
//   BM_CSFlowB5/<size>: EfficientNet-B5 cut after block 35, one scale of the given size, batch 8
//   BM_CSFlowB5_3Scales: the whole CS-Flow protocol at 768 (768 + 384 + 192), batch 8
//   BM_Lite0_3Scales/<size>: EfficientNet-Lite0 cut after block 14, 3 scales, batch 8
// Counters: items_per_second = images/s; GFLOP/s from the analytic MAC count (2 FLOP per MAC).
// Random weights (denormals flushed to zero, see run()): the speed does not depend on the weight values.
#include <validflow/features.hpp>
#include <validflow/features/info.hpp>

#include <benchmark/benchmark.h>

namespace vf = validflow::features;

namespace {

constexpr int64_t kBatch = 8;

void run(benchmark::State& state, vf::MultiScaleExtractor& ex, int64_t size, double macs_per_image) {
  // Random weights make the signal decay into denormal floats through the deep stack, which the CPU
  // computes ~10-50x slower and would make the timings meaningless; trained weights do not do this.
  at::globalContext().setFlushDenormal(true);
  torch::NoGradGuard no_grad;
  auto x = torch::rand({kBatch, 3, size, size});
  {
    auto warm = ex->forward(x);  // oneDNN primitive creation for these shapes happens outside the timing
    benchmark::DoNotOptimize(warm);
  }
  for (auto _ : state) {
    auto out = ex->forward(x);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP_per_image"] = 2.0 * macs_per_image / 1e9;
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * macs_per_image * kBatch * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_CSFlowB5(benchmark::State& state) {
  const int64_t size = state.range(0);
  auto net = vf::make_efficientnet("efficientnet-b5", 35);
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(size).n_scales(1));
  const double macs =
      static_cast<double>(vf::efficientnet_macs(vf::EfficientNetOptions::b(5).last_block(35), size, size));
  run(state, ex, size, macs);
}

void BM_CSFlowB5_3Scales(benchmark::State& state) {
  auto ex = vf::make_csflow_extractor("", 768, 3);
  run(state, ex, 768, static_cast<double>(vf::backbone_info("efficientnet-b5", 35, 768).total_macs()));
}

void BM_Lite0_3Scales(benchmark::State& state) {
  const int64_t size = state.range(0);
  auto net = vf::make_efficientnet("efficientnet-lite0", 14);
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(size).n_scales(3));
  run(state, ex, size, static_cast<double>(vf::backbone_info("efficientnet-lite0", 14, size).total_macs()));
}

}  // namespace

BENCHMARK(BM_CSFlowB5)->ArgName("size")->Arg(768)->Arg(384)->Arg(192)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CSFlowB5_3Scales)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Lite0_3Scales)->ArgName("size")->Arg(768)->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
