// CUDA benchmarks of CS-Flow (6 blocks) and ValidFlow (n = 3) at the paper's point: batch 16, 304 channels,
// hidden 1024, maps 24x24 / 12x12 / 6x6 (768-px images).
//
// Names: cuda/<model>/<scope>/<variant>
//   scope    flow (the flow forward on precomputed feature maps) or e2e (EfficientNet-B5 extractor at
//            768/384/192 + flow, from a [16, 3, 768, 768] image batch; only when validflow/features is present)
//   variant  fp32 (TF32 off) | tf32 | bf16_autocast | bf16_cast | fp16_autocast | fp16_cast |
//            graph_tf32 | graph_bf16_cast | graph_fp16_cast (CUDA-graph replay of the flow forward)
// Timing: CUDA events (cudaEventDefault) on the current stream around each iteration, reported with
// UseManualTime; warm-up (cuDNN autotuning with cudnn.benchmark on, graph capture) is excluded.
// Counters: items_per_second = FPS (images/s), GFLOP/s (flow FLOPs from forward_macs), params_M (flow),
// peak_MiB (peak memory allocated by the caching allocator during the timed loop).
// Finite checks are off (their .item() syncs the device and is not allowed during graph capture).
// After the runs a markdown table mirroring the paper's Table 5 is printed (and written to
// --table_out=<file> when given).
//
// Built against a LibTorch without CUDA, or run without a CUDA device, it prints why and exits 0.
#include <validflow/models/precision.hpp>
#include <validflow/validflow.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#if defined(VALIDFLOW_BENCH_WITH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#if __has_include(<validflow/features/extractor.hpp>)
#include <validflow/features.hpp>
#define VALIDFLOW_BENCH_HAVE_FEATURES 1
#endif

using namespace validflow;

#if defined(VALIDFLOW_BENCH_WITH_CUDA)
namespace {

constexpr int64_t kBatch = 16, kChannels = 304, kHidden = 1024, kImage = 768;
const MapSizes kMaps{{24, 24}, {12, 12}, {6, 6}};

AnyFlow make_model(const std::string& name) {
  torch::manual_seed(0);
  AnyFlow m;
  if (name == "csflow6") {
    m = CSFlow(CSFlowOptions().channels(kChannels).blocks(6).hidden_channels(kHidden));
  } else {
    m = ValidFlow(ValidFlowOptions().channels(kChannels).modules(3).hidden_channels(kHidden));
  }
  torch::NoGradGuard no_grad;
  for (auto& p : m.module().named_parameters()) {  // gammas are zero at init: make every coupling do real work
    const auto leaf = p.key().substr(p.key().rfind('.') + 1);
    if (leaf.rfind("gamma", 0) == 0) p.value().fill_(0.2);
  }
  m.module().to(torch::kCUDA);
  m.module().eval();
  return m;
}

/// Records CUDA events around one iteration and reports the elapsed time (rapidsai/cudf's cuda_event_timer).
class CudaEventTimer {
 public:
  explicit CudaEventTimer(benchmark::State& state) : state_(state), start_(cudaEventDefault), stop_(cudaEventDefault) {
    start_.record(at::cuda::getCurrentCUDAStream());
  }
  ~CudaEventTimer() {
    stop_.record(at::cuda::getCurrentCUDAStream());
    stop_.synchronize();
    state_.SetIterationTime(static_cast<double>(start_.elapsed_time(stop_)) / 1000.0);
  }

 private:
  benchmark::State& state_;
  at::cuda::CUDAEvent start_, stop_;
};

struct Variant {
  bool tf32 = false;
  bool graph = false;
  bool autocast = false;
  bool cast = false;
  Precision precision = Precision::Float32;
};

Variant parse_variant(std::string v) {
  Variant r;
  if (v.rfind("graph_", 0) == 0) {
    r.graph = true;
    v = v.substr(6);
  }
  if (v == "tf32") r.tf32 = true;
  if (v.rfind("bf16", 0) == 0) r.precision = Precision::BFloat16;
  if (v.rfind("fp16", 0) == 0) r.precision = Precision::Float16;
  r.autocast = v.find("autocast") != std::string::npos;
  r.cast = v.find("cast") != std::string::npos && !r.autocast;
  // Low precision leaves the remaining fp32 matmuls/convs (e.g. in the extractor) to TF32 as well.
  if (r.precision != Precision::Float32) r.tf32 = true;
  return r;
}

void set_tf32(bool on) {
  at::globalContext().setAllowTF32CuDNN(on);
  at::globalContext().setAllowTF32CuBLAS(on);
}

void BM_Cuda(benchmark::State& state, const std::string& model_name, bool e2e, const std::string& variant_name) {
  const auto v = parse_variant(variant_name);
  set_finite_checks(false);
  set_tf32(v.tf32);
  at::globalContext().setBenchmarkCuDNN(true);
  torch::NoGradGuard no_grad;
  auto model = make_model(model_name);
  const double macs = model->forward_macs(kMaps);
  const int64_t params = trainable_parameter_count(model.module());

  torch::manual_seed(1);
  TensorList x;
  for (const auto& hw : kMaps) x.push_back(torch::randn({kBatch, kChannels, hw[0], hw[1]}, torch::kCUDA));

  std::shared_ptr<ReducedPrecisionFlow> cast;
  if (v.cast) cast = std::make_shared<ReducedPrecisionFlow>(model, v.precision, torch::Device(torch::kCUDA));
  std::function<FlowResult(const TensorList&)> flow = [&](const TensorList& in) {
    if (v.cast) return cast->forward(in);
    if (v.autocast) return forward_at_precision(*model, in, v.precision);
    return model->forward(in);
  };

  std::function<void()> step;
  std::shared_ptr<at::cuda::CUDAGraph> graph;
  FlowResult graph_out;
#if defined(VALIDFLOW_BENCH_HAVE_FEATURES)
  features::MultiScaleExtractor extractor{nullptr};
  torch::Tensor images;
#endif
  if (e2e) {
#if defined(VALIDFLOW_BENCH_HAVE_FEATURES)
    extractor = features::make_csflow_extractor("", kImage, 3);  // random weights: speed does not depend on them
    extractor->to(torch::kCUDA);
    extractor->eval();
    images = torch::rand({kBatch, 3, kImage, kImage}, torch::kCUDA);
    step = [&] {
      TensorList feats;
      if (v.precision != Precision::Float32) {
        validflow::detail::AutocastRegion autocast(torch::Device(torch::kCUDA), precision_dtype(v.precision));
        feats = extractor->forward(images);
      } else {
        feats = extractor->forward(images);
      }
      for (auto& f : feats) f = f.to(torch::kFloat32);
      auto out = flow(feats);
      benchmark::DoNotOptimize(out);
    };
#else
    state.SkipWithError("validflow/features is not available in this build");
    return;
#endif
  } else if (v.graph) {
    // Capture on a side stream after warm-up there (cuDNN autotuning and allocations happen outside the capture).
    auto side = c10::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < 3; ++i) {
        auto warm = flow(x);
        benchmark::DoNotOptimize(warm);
      }
      side.synchronize();
      graph = std::make_shared<at::cuda::CUDAGraph>();
      graph->capture_begin();
      graph_out = flow(x);
      graph->capture_end();
    }
    torch::cuda::synchronize();
    step = [&] { graph->replay(); };
  } else {
    step = [&] {
      auto out = flow(x);
      benchmark::DoNotOptimize(out);
    };
  }

  for (int i = 0; i < 3; ++i) step();  // warm-up: cuDNN autotuning, allocator growth
  torch::cuda::synchronize();
  const auto device = static_cast<c10::DeviceIndex>(0);
  c10::cuda::CUDACachingAllocator::resetPeakStats(device);
  for (auto _ : state) {
    CudaEventTimer timer(state);
    step();
  }
  torch::cuda::synchronize();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  state.counters["peak_MiB"] = static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs * kBatch * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["params_M"] = static_cast<double>(params) / 1e6;
  set_tf32(false);
  set_finite_checks(true);
}

/// Console output plus a Table-5-like markdown table of this run.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.error_occurred) continue;
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      auto get = [&](const char* key) {
        const auto it = run.counters.find(key);
        return it == run.counters.end() ? 0.0 : static_cast<double>(it->second);
      };
      rows_[run.run_name.function_name] = {get("items_per_second"), get("params_M"), get("peak_MiB")};
    }
  }

  std::string table() const {
    std::ostringstream t;
    t << "| Method | Variant | Params (M) | Flow-only FPS | End-to-end FPS | Flow peak memory (MiB) |\n"
      << "|---|---|---|---|---|---|\n";
    for (const auto* model : {"csflow6", "validflow3"}) {
      for (const auto& [name, row] : rows_) {
        const std::string prefix = std::string("cuda/") + model + "/flow/";
        if (name.rfind(prefix, 0) != 0) continue;
        const auto variant = name.substr(prefix.size());
        const auto e2e = rows_.find(std::string("cuda/") + model + "/e2e/" + variant);
        char line[512];
        std::snprintf(line, sizeof line, "| %s | %s | %.2f | %.1f | %s | %.0f |\n",
                      std::strcmp(model, "csflow6") == 0 ? "CS-Flow (6 blocks)" : "ValidFlow (n = 3)", variant.c_str(),
                      row.params_m, row.fps, e2e == rows_.end() ? "—" : std::to_string(e2e->second.fps).c_str(),
                      row.peak_mib);
        t << line;
      }
    }
    return t.str();
  }

 private:
  struct Row {
    double fps = 0, params_m = 0, peak_mib = 0;
  };
  std::map<std::string, Row> rows_;
};

void register_all() {
  for (const auto* model : {"csflow6", "validflow3"}) {
    for (const auto* variant : {"fp32", "tf32", "bf16_autocast", "bf16_cast", "fp16_autocast", "fp16_cast",
                                "graph_tf32", "graph_bf16_cast", "graph_fp16_cast"}) {
      const auto name = std::string("cuda/") + model + "/flow/" + variant;
      benchmark::RegisterBenchmark(name.c_str(), BM_Cuda, model, false, variant)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->MinTime(2.0);
    }
#if defined(VALIDFLOW_BENCH_HAVE_FEATURES)
    for (const auto* variant : {"fp32", "tf32", "bf16_autocast", "fp16_autocast"}) {
      const auto name = std::string("cuda/") + model + "/e2e/" + variant;
      benchmark::RegisterBenchmark(name.c_str(), BM_Cuda, model, true, variant)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->MinTime(2.0);
    }
#endif
  }
}

}  // namespace
#endif  // VALIDFLOW_BENCH_WITH_CUDA

int main(int argc, char** argv) {
  std::string table_out;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--table_out=", 12) == 0) {
      table_out = argv[i] + 12;
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      --i;
    }
  }
#if !defined(VALIDFLOW_BENCH_WITH_CUDA)
  (void)argc;
  (void)argv;
  std::printf("bench_cuda: this LibTorch (%s) was built without CUDA; nothing to measure.\n", TORCH_VERSION);
  return 0;
#else
  if (!torch::cuda::is_available()) {
    std::printf("bench_cuda: LibTorch %s has CUDA support but no CUDA device is available; nothing to measure.\n",
                TORCH_VERSION);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) benchmark::AddCustomContext("gpu", prop.name);
#if !defined(VALIDFLOW_BENCH_HAVE_FEATURES)
  std::printf("note: validflow/features is not in this build: end-to-end (extractor + flow) FPS is not measured.\n");
#endif
  register_all();
  TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto table = reporter.table();
  std::printf("\n%s", table.c_str());
  std::printf("Paper (Table 5, RTX 3080 Ti, batch 16): CS-Flow 370.50 M / 100 FPS, ValidFlow 162.89 M / 122 FPS.\n");
  if (!table_out.empty()) std::ofstream(table_out) << table;
  benchmark::Shutdown();
  return 0;
#endif
}
