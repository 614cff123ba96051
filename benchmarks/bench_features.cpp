// Feature-extraction throughput of the multi-scale extractor (CPU, fp32, eval, no autograd).
//   BM_ConvPeak/<conv>: the same-run fp32 convolution peak (3x3, 24x24 maps, batch 16, channels_last: the
//       two large convs of benchmarks/bench_flows.cpp); the best of them is the peak the extractors are compared to
//   BM_Extractor/<model>/batch:<B>: the 3-scale extractor (normalise, nearest downsamples, backbone on each scale)
//       on the fused inference path (EfficientNet's default), at batch 1 (latency) and 16 (throughput):
//         b5     EfficientNet-B5 cut after block 35 at 768/384/192 px (the CS-Flow extractor)
//         lite0  EfficientNet-Lite0 cut after block 14 at 256/128/64 px
//         lite2  EfficientNet-Lite2 cut after block 19 at 384/192/96 px
//   BM_ExtractorReference/<model>/batch:<B>: the same with set_fused_inference(false), i.e. the unfused reference
//       path (BatchNorm, activations and SE as separate out-of-place ops, NCHW), for a same-run before/after
//   BM_CSFlowB5/<size>: B5 block 35 on one scale of the given size, batch 8
//   BM_Detector/<backbone>/<flow>/<part>/batch:<B>: validflow::TensorDetector (a model file with random weights: the
//       speed does not depend on them) on decoded uint8 images 1.25x the model's input size, at batch 1 and 16:
//         end_to_end  predict(): decoded images -> decisions and anomaly maps at the images' resolution
//         preprocess  the one resize + layout (prepare_images)    features  the 3-scale extractor
//         flow        the flow, scores and finest-scale maps      maps      maps at the images' resolution
//       backbones: lite0 at 256 and lite2 at 384 with flows of hidden width 128 (docs/results.md's MTD
//       setting), b5 at 768 with hidden 1024 (the paper's); flows: validflow (n = 3), csflow6 (6 blocks)
// Counters: items_per_second = images/s; GFLOP/s from the analytic MAC count (2 FLOP per MAC);
// fraction_of_peak = GFLOP/s / the best BM_ConvPeak GFLOP/s of this process (measured once, on first use).
// tools/bench_python_extractor.py --cpp runs BM_Extractor next to the official-style Python extractor.
// Random weights (denormals flushed to zero, see main()): the speed does not depend on the weight values.
// Runtime: validflow::configure_cpu_runtime() (runtime.hpp: every core unless OMP_NUM_THREADS is set, OpenBLAS
// single-threaded, glibc malloc keeping large blocks, AVX-512 kernels), as the validflow program runs;
// `--vf_runtime=default` leaves LibTorch's and glibc's defaults (except the thread count) to measure what the
// settings are worth. OpenMP's wait policy comes from the environment (OMP_WAIT_POLICY; the validflow program sets
// PASSIVE itself): the context line says which.
#include <validflow/detect.hpp>
#include <validflow/features.hpp>
#include <validflow/features/info.hpp>
#include <validflow/runtime.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace vf = validflow::features;

namespace {

struct ConvShape {
  const char* name;
  int64_t in, out;
};
constexpr ConvShape kPeakConvs[] = {{"3x3_152to1024_24px_b16_cl", 152, 1024}, {"3x3_1024to304_24px_b16_cl", 1024, 304}};

/// GFLOP/s of one large fp32 3x3 convolution (batch 16, 24x24, channels_last), best of `repeats` calls.
double conv_gflops(const ConvShape& c, int repeats) {
  torch::NoGradGuard no_grad;
  const auto cl = at::MemoryFormat::ChannelsLast;
  auto x = torch::randn({16, c.in, 24, 24}).contiguous(cl);
  auto w = (torch::randn({c.out, c.in, 3, 3}) * 0.01).contiguous(cl);
  namespace F = torch::nn::functional;
  auto run = [&] { return F::conv2d(x, w, F::Conv2dFuncOptions().padding(1)); };
  benchmark::DoNotOptimize(run());  // oneDNN primitive creation
  const double flop = 2.0 * 16 * 24 * 24 * static_cast<double>(c.in * c.out * 9);
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    auto y = run();
    benchmark::DoNotOptimize(y);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flop / s / 1e9);
  }
  return best;
}

/// The same-run fp32 conv peak: the best of the peak convolutions (measured once per process).
double conv_peak_gflops() {
  static const double peak = [] {
    double best = 0.0;
    for (const auto& c : kPeakConvs) best = std::max(best, conv_gflops(c, 5));
    return best;
  }();
  return peak;
}

void BM_ConvPeak(benchmark::State& state, ConvShape c) {
  double gflops = 0.0;
  for (auto _ : state) gflops = std::max(gflops, conv_gflops(c, 1));
  state.counters["GFLOP/s"] = gflops;
}

struct Model {
  const char* key;   // benchmark name part
  const char* name;  // backbone name
  int64_t size;      // scale-0 image size
};
constexpr Model kModels[] = {
    {"b5", "efficientnet-b5", 768}, {"lite0", "efficientnet-lite0", 256}, {"lite2", "efficientnet-lite2", 384}};

/// Times ex->forward on a random [batch, 3, size, size] batch; one untimed warm-up forward (oneDNN primitive
/// creation for these shapes, the fused path's folded weights).
void run(benchmark::State& state, vf::MultiScaleExtractor& ex, int64_t batch, int64_t size, double macs_per_image,
         bool fused) {
  vf::set_fused_inference(fused);
  torch::NoGradGuard no_grad;
  auto x = torch::rand({batch, 3, size, size});
  benchmark::DoNotOptimize(ex->forward(x));
  double seconds = 0.0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto out = ex->forward(x);
    benchmark::DoNotOptimize(out);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  vf::set_fused_inference(true);
  const double gflop = 2.0 * macs_per_image / 1e9;
  const double gflops = gflop * static_cast<double>(batch * state.iterations()) / seconds;
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["GFLOP_per_image"] = gflop;
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_GFLOP/s"] = conv_peak_gflops();
  state.counters["fraction_of_peak"] = gflops / conv_peak_gflops();
}

void BM_Extractor(benchmark::State& state, Model m, int64_t batch, bool fused) {
  const int64_t block = vf::default_feature_block(vf::EfficientNetOptions::from_name(m.name));
  auto net = vf::make_efficientnet(m.name, block);  // random weights
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(m.size).n_scales(3));
  conv_peak_gflops();  // measured before the timing, once per process
  run(state, ex, batch, m.size, static_cast<double>(vf::backbone_info(m.name, block, m.size).total_macs()), fused);
}

void BM_CSFlowB5(benchmark::State& state) {
  const int64_t size = state.range(0);
  auto net = vf::make_efficientnet("efficientnet-b5", 35);
  vf::MultiScaleExtractor ex(vf::MultiScaleExtractorOptions(net).image_size(size).n_scales(1));
  const double macs =
      static_cast<double>(vf::efficientnet_macs(vf::EfficientNetOptions::b(5).last_block(35), size, size));
  conv_peak_gflops();
  run(state, ex, 8, size, macs, true);
}

struct DetectorCase {
  Model backbone;
  int64_t hidden;
};
constexpr DetectorCase kDetectorCases[] = {{kModels[1], 128}, {kModels[2], 128}, {kModels[0], 1024}};

/// A model file with random weights (ActNorm initialised on random features), one per (backbone, flow) and process,
/// in the temporary folder (removed at exit).
const std::string& model_file_for(const DetectorCase& c, const std::string& flow) {
  struct Files {
    std::map<std::string, std::string> paths;
    ~Files() {
      for (const auto& [key, path] : paths) std::filesystem::remove(path);
    }
  };
  static Files files;
  const std::string key = std::string(c.backbone.key) + "/" + flow;
  auto& slot = files.paths[key];
  if (!slot.empty()) return slot;
  validflow::ModelInfo info;
  info.backbone.name = c.backbone.name;
  info.backbone.image_size = c.backbone.size;
  info.backbone = info.backbone.resolved();
  auto extractor = vf::build_extractor(info.backbone);
  info.flow.model = flow == "csflow6" ? "csflow" : "validflow";
  info.flow.blocks = 6;
  info.flow.modules = 3;
  info.flow.hidden = c.hidden;
  info.flow.channels = extractor->backbone->feature_channels();
  auto model = validflow::build_flow(info.flow);
  {
    torch::NoGradGuard no_grad;
    model.module().train();
    auto features = extractor->forward(torch::rand({2, 3, c.backbone.size, c.backbone.size}));
    for (auto& f : features) f = torch::randn_like(f);  // random backbones give near-constant channels
    model->forward(features);
    model.module().eval();
  }
  info.decision.threshold = 1;
  info.decision.score_max = 2;
  info.decision.map_max = 2;
  const auto path = (std::filesystem::temp_directory_path() /
                     ("validflow_bench_" + std::string(c.backbone.key) + "_" + flow + ".vfm"))
                        .string();
  validflow::save_model_file(path, info, *extractor, model);
  slot = path;
  return slot;
}

/// A TensorDetector over model_file_for(c, flow), one per (backbone, flow) and process.
const validflow::TensorDetector& detector_for(const DetectorCase& c, const std::string& flow) {
  static std::map<std::string, std::unique_ptr<validflow::TensorDetector>> cache;
  auto& slot = cache[std::string(c.backbone.key) + "/" + flow];
  if (!slot) slot = std::make_unique<validflow::TensorDetector>(model_file_for(c, flow));
  return *slot;
}

/// Loading a model file (read, checksums, checks, build, the probe image of detect/model_file.hpp); the counter
/// probe_share is the probe's part of it (the probe alone, timed on the loaded model in the same run).
void BM_ModelLoad(benchmark::State& state, DetectorCase c, std::string flow) {
  const auto& path = model_file_for(c, flow);
  double load_seconds = 0, probe_seconds = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto model = validflow::load_model_file(path);
    load_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.PauseTiming();
    t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(validflow::detail::non_finite_on_probe(model));
    probe_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.ResumeTiming();
  }
  state.counters["probe_share"] = probe_seconds / load_seconds;
  state.counters["file_MiB"] = static_cast<double>(std::filesystem::file_size(path)) / (1 << 20);
}

void BM_Detector(benchmark::State& state, DetectorCase c, std::string flow, std::string part, int64_t batch) {
  const auto& detector = detector_for(c, flow);
  conv_peak_gflops();
  const int64_t side = c.backbone.size * 5 / 4;
  std::vector<torch::Tensor> images;
  for (int64_t i = 0; i < batch; ++i) images.push_back(torch::randint(0, 256, {side, side, 3}, torch::kByte));
  torch::NoGradGuard no_grad;
  const auto prepared = detector.preprocess(images);
  const auto features = detector.features(prepared);
  const auto scored = detector.score(features);
  std::function<void()> step;
  if (part == "end_to_end") {
    step = [&] { benchmark::DoNotOptimize(detector.predict(images)); };
  } else if (part == "preprocess") {
    step = [&] { benchmark::DoNotOptimize(detector.preprocess(images)); };
  } else if (part == "features") {
    step = [&] { benchmark::DoNotOptimize(detector.features(prepared)); };
  } else if (part == "flow") {
    step = [&] { benchmark::DoNotOptimize(detector.score(features)); };
  } else {  // maps: at the model's input size, then each image's own
    step = [&] {
      const auto maps = validflow::maps_at_input_size(scored.maps, detector.image_size(), 0);
      for (int64_t i = 0; i < batch; ++i)
        benchmark::DoNotOptimize(validflow::resize_maps(maps.slice(0, i, i + 1), side, side));
    };
  }
  step();  // warm-up: oneDNN primitives, folded weights
  double seconds = 0.0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  state.SetItemsProcessed(state.iterations() * batch);
  if (part == "features" || part == "end_to_end") {  // the extractor's share of the conv peak
    const double macs = static_cast<double>(vf::backbone_info(c.backbone.name, -1, c.backbone.size).total_macs());
    const double gflops = 2.0 * macs / 1e9 * static_cast<double>(batch * state.iterations()) / seconds;
    state.counters["extractor_GFLOP/s"] = gflops;
    state.counters["extractor_fraction_of_peak"] = gflops / conv_peak_gflops();
  }
  state.counters["peak_GFLOP/s"] = conv_peak_gflops();
}

void register_all() {
  for (const auto& c : kPeakConvs)
    benchmark::RegisterBenchmark((std::string("BM_ConvPeak/") + c.name).c_str(), BM_ConvPeak, c)
        ->Iterations(3)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (bool fused : {true, false})
    for (const auto& m : kModels)
      for (int64_t batch : {1, 16})
        benchmark::RegisterBenchmark((std::string(fused ? "BM_Extractor/" : "BM_ExtractorReference/") + m.key +
                                      "/batch:" + std::to_string(batch))
                                         .c_str(),
                                     BM_Extractor, m, batch, fused)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
  for (const auto& c : kDetectorCases)
    for (const char* flow : {"validflow", "csflow6"})
      for (const char* part : {"end_to_end", "preprocess", "features", "flow", "maps"})
        for (int64_t batch : {1, 16})
          benchmark::RegisterBenchmark((std::string("BM_Detector/") + c.backbone.key + "/" + flow + "/" + part +
                                        "/batch:" + std::to_string(batch))
                                           .c_str(),
                                       BM_Detector, c, std::string(flow), std::string(part), batch)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
  for (const auto& c : kDetectorCases)
    for (const char* flow : {"validflow", "csflow6"})
      benchmark::RegisterBenchmark((std::string("BM_ModelLoad/") + c.backbone.key + "/" + flow).c_str(), BM_ModelLoad,
                                   c, std::string(flow))
          ->Iterations(3)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_CSFlowB5", BM_CSFlowB5)
      ->ArgName("size")
      ->Arg(768)
      ->Arg(384)
      ->Arg(192)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  // Random weights make the signal decay into denormal floats through the deep stack, which the CPU computes
  // ~10-50x slower and would make the timings meaningless; trained weights do not do this. Set before any
  // intra-op thread exists, so that the threads inherit it.
  at::globalContext().setFlushDenormal(true);
  bool tuned = true;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--vf_runtime=default") == 0)
      tuned = false;
    else if (std::strcmp(argv[i], "--vf_runtime=tuned") != 0)
      args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  validflow::CpuRuntimeOptions runtime;
  runtime.single_threaded_blas = tuned;
  runtime.keep_freed_memory = tuned;
  runtime.avx512_kernels = tuned;
  const auto report = validflow::configure_cpu_runtime(runtime);
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  benchmark::AddCustomContext("torch_threads", std::to_string(report.torch_threads));
  benchmark::AddCustomContext("runtime", report.to_string());
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
