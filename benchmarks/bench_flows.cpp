// CPU benchmarks of the flow layers and models (Google Benchmark).
//
// Names: <kind>/<what>/c<channels>_h<hidden>_b<batch>/<mode>/<variant>
//   kind     conv (the large-conv peak), layer (one flow layer), model (CS-Flow with 6 blocks, ValidFlow n = 3)
//   mode     infer (eval, NoGradGuard, forward only) or train (forward + NLL + backward)
//   variant  fp32 (pre-packed convolution weights, the default inference path) | fp32_eager (LibTorch's own
//            convolutions, which reorder each weight on every call) | fp32_cl (channels_last, eager) |
//            bf16_autocast | bf16_cast | bf16_cast_cl | fp32_checks
// Maps are 24x24, 12x12, 6x6 (768-px images, EfficientNet-B5 block 35); every scale has `channels` channels.
// Counters: items_per_second = images/s; GFLOP/s from the analytic MAC count (2 FLOP per MAC; for train the
// backward is counted as 2x the forward, i.e. 3x in total); params_M; for every inference variant but fp32_eager and
// fp32_checks the error of the latents against the eager fp32 NCHW run of the same weights (rel_err_z = max|dz| /
// max|z|, rel_err_logdet = max over samples of |d log_det| / |log_det|). All timings are wall clock (UseRealTime:
// LibTorch runs intra-op worker threads). One warm-up forward (oneDNN primitive creation) runs before the timed loop.
// Finite checks are off except in `fp32_checks`. After the runs a summary prints the fractions of the conv peak
// measured in the same run and the ratios.
//
//   bench_flows --benchmark_filter=c304 --benchmark_repetitions=3 --benchmark_out=flows.json
#include <validflow/models/precision.hpp>
#include <validflow/validflow.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace validflow;

namespace {

const MapSizes kMaps{{24, 24}, {12, 12}, {6, 6}};

struct Size {
  int64_t channels, hidden, batch;
  std::string tag() const {
    return "c" + std::to_string(channels) + "_h" + std::to_string(hidden) + "_b" + std::to_string(batch);
  }
};

const Size kFull{304, 1024, 16};
const Size kReduced{64, 256, 16};
const Size kFullBatch1{304, 1024, 1};  // one image: where the per-call weight reorders weigh most

TensorList make_inputs(const Size& size) {
  torch::manual_seed(1);
  TensorList x;
  for (const auto& hw : kMaps) x.push_back(torch::randn({size.batch, size.channels, hw[0], hw[1]}));
  return x;
}

/// Non-trivial parameters: the gammas (zero at init, which would make every coupling the identity) are set to
/// 0.2 and ActNorm's scales/biases to small random values, so the outputs depend on every layer.
void make_nontrivial(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    const auto& key = p.key();
    const auto leaf = key.substr(key.rfind('.') + 1);
    if (leaf.rfind("gamma", 0) == 0) p.value().fill_(0.2);
    if (leaf.rfind("log_scale_", 0) == 0 || leaf.rfind("bias_", 0) == 0) p.value().normal_(0.0, 0.05);
  }
}

using Factory = std::function<AnyFlow(const Size&)>;

std::vector<int64_t> channels3(const Size& s) { return {s.channels, s.channels, s.channels}; }

std::map<std::string, Factory> factories() {
  std::map<std::string, Factory> f;
  f["actnorm"] = [](const Size& s) { return ActNorm(ActNormOptions(channels3(s))); };
  f["shuffle"] = [](const Size& s) { return ChannelShuffle(ChannelShuffleOptions(channels3(s))); };
  // CS-Flow's coupling: CrossConvolutions, kernel 3.
  f["coupling_crossconv"] = [](const Size& s) {
    using C = ParallelAffineCoupling<CrossConvolutions>;
    return C(C::Impl::Options(channels3(s), CrossConvolutionsOptions().hidden_channels(s.hidden)).output_clamp(1e6));
  };
  // ValidFlow's FA coupling (r1: depthwise-separable + CBAM) and FB coupling (r2: cross convs + 1<->3 + CBAM).
  f["coupling_r1"] = [](const Size& s) {
    using C = ParallelAffineCoupling<SubnetR1>;
    return C(C::Impl::Options(channels3(s), SubnetR1Options().hidden_channels(s.hidden)).output_clamp(1e6));
  };
  f["coupling_r2"] = [](const Size& s) {
    using C = ParallelAffineCoupling<SubnetR2>;
    return C(C::Impl::Options(channels3(s), SubnetR2Options().hidden_channels(s.hidden)).output_clamp(1e6));
  };
  f["csflow6"] = [](const Size& s) {
    return CSFlow(CSFlowOptions().channels(s.channels).blocks(6).hidden_channels(s.hidden));
  };
  f["validflow3"] = [](const Size& s) {
    return ValidFlow(ValidFlowOptions().channels(s.channels).modules(3).hidden_channels(s.hidden));
  };
  return f;
}

/// fp32 NCHW reference outputs per (what, size), computed once per process.
const FlowResult& reference(const std::string& what, const Size& size, FlowModule& model, const TensorList& x) {
  static std::map<std::string, FlowResult> cache;
  const auto key = what + size.tag();
  auto it = cache.find(key);
  if (it == cache.end()) {
    torch::NoGradGuard no_grad;
    it = cache.emplace(key, model.forward(x)).first;
  }
  return it->second;
}

void set_errors(benchmark::State& state, const FlowResult& out, const FlowResult& ref) {
  double dz = 0, zmax = 0;
  for (size_t s = 0; s < ref.tensors.size(); ++s) {
    dz = std::max(dz,
                  (out.tensors[s].to(torch::kFloat64) - ref.tensors[s].to(torch::kFloat64)).abs().max().item<double>());
    zmax = std::max(zmax, ref.tensors[s].abs().max().item<double>());
  }
  const auto ld = ref.log_det.to(torch::kFloat64);
  state.counters["rel_err_z"] = dz / std::max(zmax, 1e-30);
  state.counters["rel_err_logdet"] =
      ((out.log_det.to(torch::kFloat64) - ld).abs() / ld.abs().clamp_min(1e-30)).max().item<double>();
}

void set_throughput(benchmark::State& state, double macs_per_image, int64_t batch, bool train, int64_t params) {
  const double images = static_cast<double>(state.iterations()) * batch;
  state.SetItemsProcessed(static_cast<int64_t>(images));
  state.counters["GFLOP/s"] =
      benchmark::Counter((train ? 3.0 : 1.0) * 2.0 * macs_per_image * images / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP_per_image"] = 2.0 * macs_per_image / 1e9;
  state.counters["params_M"] = static_cast<double>(params) / 1e6;
}

void BM_Flow(benchmark::State& state, const std::string& what, Size size, bool train, const std::string& variant) {
  torch::manual_seed(0);
  auto model = factories().at(what)(size);
  make_nontrivial(model.module());
  auto x = make_inputs(size);
  // A layer without parameters (ActNorm before init has some; ChannelShuffle has none) needs an input that
  // requires grad for a backward pass to exist.
  if (train && trainable_parameter_count(model.module()) == 0) {
    for (auto& t : x) t.requires_grad_(true);
  }
  const double macs = model->forward_macs(kMaps);
  const int64_t params = trainable_parameter_count(model.module());
  set_finite_checks(variant == "fp32_checks");
  // fp32_eager is LibTorch's own path; channels_last too (the pre-packed path runs NCHW activations).
  const bool packed = variant != "fp32_eager" && variant != "fp32_cl";
  set_packed_convolutions(packed);

  if (train) {
    model.module().train();
    {  // warm-up (also runs ActNorm's data-dependent initialisation)
      torch::NoGradGuard no_grad;
      auto warm = model->forward(x);
      benchmark::DoNotOptimize(warm);
    }
    for (auto _ : state) {
      model.module().zero_grad();
      auto [z, log_det] = model->forward(x);
      auto loss = nll_per_dimension(z, log_det);
      loss.backward();
      benchmark::DoNotOptimize(loss);
    }
  } else {
    model.module().eval();
    torch::NoGradGuard no_grad;
    std::function<FlowResult()> run;
    std::shared_ptr<ReducedPrecisionFlow> cast;
    TensorList xin = x;
    if (variant == "fp32" || variant == "fp32_checks" || variant == "fp32_eager") {
      run = [&] { return model->forward(xin); };
    } else if (variant == "fp32_cl") {
      set_memory_format(model.module(), torch::MemoryFormat::ChannelsLast);
      xin = to_memory_format(x, torch::MemoryFormat::ChannelsLast);
      run = [&] { return model->forward(xin); };
    } else if (variant == "bf16_autocast") {
      run = [&] { return forward_at_precision(*model, xin, Precision::BFloat16); };
    } else if (variant == "bf16_cast" || variant == "bf16_cast_cl") {
      cast = std::make_shared<ReducedPrecisionFlow>(
          model, Precision::BFloat16, torch::nullopt,
          variant == "bf16_cast" ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast);
      run = [&] { return cast->forward(xin); };
    } else {
      state.SkipWithError(("unknown variant " + variant).c_str());
      return;
    }
    if (variant != "fp32_eager" && variant != "fp32_checks") {
      set_packed_convolutions(false);  // the reference is the eager fp32 NCHW path
      // The reference uses the same weights (set_memory_format keeps values; compute it first).
      torch::manual_seed(0);
      auto fresh = factories().at(what)(size);
      make_nontrivial(fresh.module());
      fresh.module().eval();
      const auto& ref = reference(what, size, *fresh, x);
      set_packed_convolutions(packed);
      auto out = run();  // also the warm-up
      set_errors(state, out, ref);
    } else {
      auto warm = run();
      benchmark::DoNotOptimize(warm);
    }
    for (auto _ : state) {
      auto out = run();
      benchmark::DoNotOptimize(out);
    }
  }
  set_finite_checks(true);
  set_packed_convolutions(true);
  set_throughput(state, macs, size.batch, train, params);
}

/// The machine's practical fp32 conv peak: one large 3x3 conv at 24x24, batch 16, as in the flows.
void BM_Conv(benchmark::State& state, int64_t in, int64_t out, bool channels_last, bool bf16, bool packed) {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(in, out, 3).padding(1));
  conv->eval();
  auto x = torch::randn({16, in, 24, 24});
  if (bf16) {
    conv->to(torch::kBFloat16);
    x = x.to(torch::kBFloat16);
  }
  if (channels_last) {
    set_memory_format(*conv, torch::MemoryFormat::ChannelsLast);
    x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  torch::NoGradGuard no_grad;
  PackedConvolutions packs;
  auto run = [&] { return packed ? packs(*conv, x) : conv(x); };
  {
    auto warm = run();
    benchmark::DoNotOptimize(warm);
  }
  for (auto _ : state) {
    auto y = run();
    benchmark::DoNotOptimize(y);
  }
  set_throughput(state, conv_macs(*conv, 24, 24), 16, false, trainable_parameter_count(*conv));
}

/// Console output plus a summary of fractions and ratios computed from this run's results.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.error_occurred) continue;
      const bool aggregate = run.run_type == Run::RT_Aggregate;
      if (aggregate && run.aggregate_name != "median") continue;
      const auto name = run.run_name.function_name;
      auto get = [&](const char* key) {
        const auto it = run.counters.find(key);
        return it == run.counters.end() ? 0.0 : static_cast<double>(it->second);
      };
      auto& r = results_[name];
      if (aggregate || !r.from_median) {
        // Iteration runs without an aggregate: keep the best (least disturbed by the other jobs on this machine).
        const double gflops = get("GFLOP/s"), ips = get("items_per_second");
        if (aggregate) {
          r = {gflops, ips, get("params_M"), true};
        } else if (ips > r.images_per_s) {
          r = {gflops, ips, get("params_M"), false};
        }
      }
    }
  }

  void Summary() const {
    double peak = 0;
    std::string peak_name;
    for (const auto& [name, r] : results_) {
      if (name.rfind("conv/", 0) == 0 && name.find("bf16") == std::string::npos && r.gflops > peak) {
        peak = r.gflops;
        peak_name = name;
      }
    }
    std::printf("\n=== summary (this run; medians where repetitions ran, else best iteration run) ===\n");
    if (peak > 0) std::printf("fp32 conv peak: %.1f GFLOP/s (%s)\n", peak, peak_name.c_str());
    std::printf("%-62s %10s %10s %9s %8s\n", "benchmark", "img/s", "GFLOP/s", "params_M", "of_peak");
    for (const auto& [name, r] : results_) {
      if (name.rfind("conv/", 0) == 0) continue;
      std::printf("%-62s %10.3f %10.1f %9.2f %7.1f%%\n", name.c_str(), r.images_per_s, r.gflops, r.params_m,
                  peak > 0 ? 100.0 * r.gflops / peak : 0.0);
    }
    auto ratio = [&](const std::string& a, const std::string& b, const char* what) {
      const auto ia = results_.find(a), ib = results_.find(b);
      if (ia == results_.end() || ib == results_.end() || ib->second.images_per_s <= 0) return;
      std::printf("%-70s %.3f\n", what, ia->second.images_per_s / ib->second.images_per_s);
    };
    for (const auto& size : {kFull.tag(), kReduced.tag(), kFullBatch1.tag()}) {
      std::printf("--- ratios at %s ---\n", size.c_str());
      const auto vf = "model/validflow3/" + size, cs = "model/csflow6/" + size;
      const auto pv = results_.find(vf + "/infer/fp32"), pc = results_.find(cs + "/infer/fp32");
      if (pv != results_.end() && pc != results_.end() && pc->second.params_m > 0) {
        std::printf("%-70s %.3f\n", "params ValidFlow / CS-Flow", pv->second.params_m / pc->second.params_m);
      }
      ratio(vf + "/infer/fp32", cs + "/infer/fp32", "images/s ValidFlow / CS-Flow (infer fp32)");
      ratio(vf + "/train/fp32", cs + "/train/fp32", "images/s ValidFlow / CS-Flow (train fp32)");
      for (const auto& m : {cs, vf}) {
        ratio(m + "/infer/fp32", m + "/infer/fp32_eager", (m + " pre-packed / eager").c_str());
        ratio(m + "/infer/fp32_cl", m + "/infer/fp32", (m + " channels_last / NCHW").c_str());
        ratio(m + "/infer/bf16_autocast", m + "/infer/fp32", (m + " bf16 autocast / fp32").c_str());
        ratio(m + "/infer/bf16_cast", m + "/infer/fp32", (m + " bf16 cast / fp32").c_str());
        ratio(m + "/infer/bf16_cast_cl", m + "/infer/fp32", (m + " bf16 cast channels_last / fp32").c_str());
        ratio(m + "/infer/fp32", m + "/infer/fp32_checks", (m + " finite checks off / on").c_str());
      }
    }
  }

 private:
  struct Result {
    double gflops = 0, images_per_s = 0, params_m = 0;
    bool from_median = false;
  };
  std::map<std::string, Result> results_;
};

void register_all() {
  auto conv = [](int64_t in, int64_t out, bool cl, bool bf16, bool packed = false) {
    const auto name = "conv/" + std::to_string(in) + "to" + std::to_string(out) + "_k3_24x24_b16/" +
                      (bf16 ? "bf16" : "fp32") + (cl ? "_cl" : "") + (packed ? "_packed" : "");
    benchmark::RegisterBenchmark(name.c_str(), BM_Conv, in, out, cl, bf16, packed)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(1.0);
  };
  for (bool bf16 : {false, true}) {
    for (bool cl : {false, true}) {
      conv(152, 1024, cl, bf16);
      conv(1024, 304, cl, bf16);
    }
  }
  conv(152, 1024, false, false, true);
  conv(1024, 304, false, false, true);
  auto flow = [](const std::string& kind, const std::string& what, const Size& size, bool train,
                 const std::string& variant) {
    const auto name = kind + "/" + what + "/" + size.tag() + "/" + (train ? "train" : "infer") + "/" + variant;
    auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Flow, what, size, train, variant)
                  ->UseRealTime()
                  ->Unit(benchmark::kMillisecond);
    // Full-size models take seconds per batch: one timed iteration per repetition.
    if (size.channels >= 304 && kind == "model") b->Iterations(size.batch == 1 ? 3 : 1);
  };
  for (const auto& size : {kReduced, kFull}) {
    for (const auto* layer : {"actnorm", "shuffle", "coupling_crossconv", "coupling_r1", "coupling_r2"}) {
      flow("layer", layer, size, false, "fp32");
      flow("layer", layer, size, true, "fp32");
    }
    for (const auto* layer : {"coupling_crossconv", "coupling_r1", "coupling_r2"}) {
      flow("layer", layer, size, false, "fp32_cl");
    }
    for (const auto* model : {"csflow6", "validflow3"}) {
      for (const auto* variant : {"fp32", "fp32_checks", "fp32_cl", "bf16_autocast", "bf16_cast", "bf16_cast_cl"}) {
        flow("model", model, size, false, variant);
      }
      flow("model", model, size, true, "fp32");
      flow("model", model, size, false, "fp32_eager");
    }
  }
  for (const auto* model : {"csflow6", "validflow3"}) {
    flow("model", model, kFullBatch1, false, "fp32");
    flow("model", model, kFullBatch1, false, "fp32_eager");
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Random-weight activations can decay into denormals, which the CPU computes far slower; trained weights do
  // not, so flush them to keep timings representative.
  at::globalContext().setFlushDenormal(true);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  // Debian's LibTorch 1.13 (OpenMP) starts with one intra-op thread unless OMP_NUM_THREADS is set: use every
  // CPU by default, as PyTorch does, and say so in the context.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  {
    auto init = torch::ones({64, 64}).matmul(torch::ones({64, 64}));  // initialises the intra-op thread pool
    benchmark::DoNotOptimize(init);
  }
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  register_all();
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.Summary();
  benchmark::Shutdown();
  return 0;
}
