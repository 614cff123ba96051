// Core flow library: ActNorm, ChannelShuffle, soft clamp, ParallelAffineCoupling, FlowSequence, FlowStack.
#include "flow_harness.hpp"

#include <nlohmann/json.hpp>
#include <validflow/validflow.hpp>

#include <fstream>

using namespace validflow;

namespace {

const vft::InputSpec kThreeScales{{16, 16, 16}, {8, 4, 2}, 3};
const vft::InputSpec kTinyThreeScales{{4, 4, 4}, {4, 2, 1}, 2};
const vft::InputSpec kOneScale{{6}, {5}, 3};
const vft::InputSpec kTinyOneScale{{4}, {3}, 2};

vft::HarnessOptions three_scales() { return {kThreeScales, kTinyThreeScales}; }

ConvSubnetOptions small_subnet() { return ConvSubnetOptions().hidden_channels(8); }

using Coupling = ParallelAffineCoupling<ConvSubnet>;
using Block = FlowSequence<ActNorm, ChannelShuffle, Coupling>;

Coupling::Impl::Options coupling_options(const std::vector<int64_t>& channels) {
  return Coupling::Impl::Options(channels, small_subnet());
}

}  // namespace

TEST_CASE("numpy-legacy permutations reproduce the official CS-Flow permutations", "[core][shuffle]") {
  const std::string path = std::string(VALIDFLOW_SHARED_DIR) + "/reference/csflow-permutations.json";
  std::ifstream file(path);
  if (!file) {
    WARN("skipped: " << path << " not found (the shared reference folder is absent)");
    return;
  }
  const auto fixtures = nlohmann::json::parse(file);
  int checked = 0;
  for (const auto& [seed, per_scale] : fixtures["official"].items()) {
    const auto expected = per_scale.get<std::vector<std::vector<int64_t>>>();
    const auto actual = csflow_permutations(static_cast<uint32_t>(std::stoul(seed)), {304, 304, 304});
    CHECK(actual == expected);
    ChannelShuffle shuffle(ChannelShuffleOptions({304, 304, 304}).seed(static_cast<uint32_t>(std::stoul(seed))));
    for (size_t s = 0; s < 3; ++s) {
      CHECK(shuffle->permutations[s].equal(torch::tensor(expected[s], torch::kLong)));
    }
    ++checked;
  }
  CHECK(checked == 8);
  // anomalib's permutations are loaded explicitly (one list shared by the three scales).
  const auto anomalib = fixtures["anomalib"]["0"].get<std::vector<int64_t>>();
  ChannelShuffle shuffle(ChannelShuffleOptions({304, 304, 304}).permutations({anomalib, anomalib, anomalib}));
  auto x = torch::arange(304, torch::kFloat).view({1, 304, 1, 1});
  auto out = shuffle->forward({x, x, x}).tensors;
  CHECK(out[2].flatten().to(torch::kLong).equal(torch::tensor(anomalib, torch::kLong)));
}

TEST_CASE("ChannelShuffle passes the flow harness", "[core][shuffle]") {
  for (const auto& spec : {kThreeScales, kOneScale}) {
    auto options = vft::HarnessOptions{spec, spec.channels.size() == 1 ? kTinyOneScale : kTinyThreeScales};
    options.expect_nonzero_log_det = false;
    vft::check_flow(
        "ChannelShuffle_" + std::to_string(spec.channels.size()),
        [](const auto& c) { return ChannelShuffle(ChannelShuffleOptions(c).seed(3)).ptr(); }, options);
  }
}

TEST_CASE("ChannelShuffle rejects invalid explicit permutations", "[core][shuffle]") {
  CHECK_THROWS_WITH(ChannelShuffle(ChannelShuffleOptions({4}).permutations({{0, 1, 1, 3}})),
                    Catch::Contains("not a permutation"));
  CHECK_THROWS_WITH(ChannelShuffle(ChannelShuffleOptions({4, 4}).permutations({{0, 1, 2, 3}})),
                    Catch::Contains("2 scales"));
}

TEST_CASE("soft clamp is CS-Flow's clamp * 0.636 * atan(s / clamp)", "[core][clamp]") {
  const auto s = torch::tensor({-100.0, -1.0, 0.0, 0.5, 1000.0}, torch::kFloat64);
  const auto clamped = soft_clamp(s, SoftClampOptions());
  CHECK(clamped.allclose(3.0 * 0.636 * torch::atan(s / 3.0)));
  CHECK(clamped.abs().max().item<double>() < 3.0 * 0.636 * M_PI / 2);
  CHECK(soft_clamp(s, SoftClampOptions().clamp(0)).equal(s));
  CHECK(
      soft_clamp(s, SoftClampOptions().clamp(2).constant(2 / M_PI)).allclose(2.0 * (2 / M_PI) * torch::atan(s / 2.0)));
}

TEST_CASE("ActNorm passes the flow harness", "[core][actnorm]") {
  vft::check_flow(
      "ActNorm_3", [](const auto& c) { return ActNorm(ActNormOptions(c)).ptr(); }, three_scales());
  vft::check_flow("ActNorm_1", [](const auto& c) { return ActNorm(ActNormOptions(c)).ptr(); },
                  {kOneScale, kTinyOneScale});
}

TEST_CASE("ActNorm initialises from the first training batch", "[core][actnorm]") {
  torch::manual_seed(0);
  ActNorm norm(ActNormOptions({3, 5}));
  TensorList x{torch::randn({4, 3, 6, 6}) * 3 + 2, torch::randn({4, 5, 3, 3}) * 0.5 - 1};
  REQUIRE_FALSE(norm->is_initialized());
  norm->eval();
  norm->forward(x);
  REQUIRE_FALSE(norm->is_initialized());  // eval mode never initialises
  norm->train();
  const auto z = norm->forward(x).tensors;
  REQUIRE(norm->is_initialized());
  for (const auto& t : z) {
    const auto per_channel = t.transpose(0, 1).reshape({t.size(1), -1});
    CHECK(per_channel.mean(1).abs().max().item<double>() < 1e-5);
    CHECK((per_channel.std(1) - 1).abs().max().item<double>() < 1e-5);
  }
  // A second training batch does not re-initialise.
  const auto before = norm->log_scales[0].clone();
  norm->forward({x[0] * 10, x[1]});
  CHECK(norm->log_scales[0].equal(before));
  // The flag is part of the saved state.
  CHECK(norm->named_buffers().contains("initialized"));
}

TEST_CASE("ActNorm rejects a constant channel at initialisation", "[core][actnorm]") {
  ActNorm norm(ActNormOptions({3}));
  auto x = torch::randn({2, 3, 4, 4});
  x.select(1, 1).fill_(0.5);
  CHECK_THROWS_WITH(norm->forward({x}), Catch::Contains("channel 1 of scale 0"));
  CHECK_FALSE(norm->is_initialized());
}

TEST_CASE("ParallelAffineCoupling passes the flow harness", "[core][coupling]") {
  vft::check_flow(
      "Coupling_ConvSubnet_3", [](const auto& c) { return Coupling(coupling_options(c)).ptr(); }, three_scales());
  vft::check_flow("Coupling_ConvSubnet_1", [](const auto& c) { return Coupling(coupling_options(c)).ptr(); },
                  {kOneScale, kTinyOneScale});
  vft::check_flow(
      "Coupling_noclamp",
      [](const auto& c) { return Coupling(coupling_options(c).soft_clamp(SoftClampOptions().clamp(0))).ptr(); },
      three_scales());
}

TEST_CASE("ParallelAffineCoupling: identity at init, clamps, errors", "[core][coupling]") {
  Coupling coupling(coupling_options({4, 4}).output_clamp(1e6));
  TensorList x{torch::randn({2, 4, 4, 4}), torch::randn({2, 4, 2, 2})};
  const auto result = coupling->forward(x);
  CHECK(vft::equal_lists(result.tensors, x));  // zero-initialised output convs
  CHECK(result.log_det.abs().max().item<double>() == 0);

  // The log-scale is bounded by the soft clamp, whatever the subnet outputs.
  vft::randomize_parameters(*coupling);
  for (auto& p : coupling->s2->parameters()) p.detach().mul_(1e3);
  const auto big = coupling->forward(x);
  const double bound = 3 * 0.636 * M_PI / 2 * (4 * 16 + 4 * 4);
  CHECK(big.log_det.abs().max().item<double>() < bound);

  // Output clamp: outputs never exceed +-output_clamp.
  Coupling clamped(coupling_options({2}).output_clamp(0.5));
  CHECK(clamped->forward({torch::randn({1, 2, 3, 3}) * 10}).tensors[0].abs().max().item<double>() <= 0.5);

  CHECK_THROWS_WITH(Coupling(coupling_options({4, 5})), Catch::Contains("even"));
}

TEST_CASE("FlowSequence block passes the flow harness", "[core][sequence]") {
  auto make = [](const std::vector<int64_t>& c) {
    return Block(ActNormOptions(c), ChannelShuffleOptions(c).seed(1), coupling_options(c)).ptr();
  };
  vft::check_flow("FlowSequence_block", make, three_scales());
  Block block(ActNormOptions({4}), ChannelShuffleOptions({4}), coupling_options({4}));
  CHECK(block->get<2>()->options.channels() == std::vector<int64_t>{4});
  CHECK(block->named_parameters().contains("2.s1.conv_scale0_0.weight"));
}

TEST_CASE("FlowStack of mixed blocks passes the flow harness", "[core][stack]") {
  auto make = [](const std::vector<int64_t>& c) {
    FlowStack stack;
    for (uint32_t k = 0; k < 2; ++k) {
      stack->push_back(Block(ActNormOptions(c), ChannelShuffleOptions(c).seed(k), coupling_options(c)));
    }
    stack->push_back(ChannelShuffle(ChannelShuffleOptions(c).seed(7)));
    stack->push_back(Coupling(coupling_options(c)));
    return stack.ptr();
  };
  vft::check_flow("FlowStack_mixed", make, three_scales());
  CHECK_THROWS_WITH(FlowStack()->forward({torch::randn({1, 2, 2, 2})}), Catch::Contains("empty"));
}

TEST_CASE("NaN/Inf inputs are checked once, at the outermost module", "[core][checks]") {
  ActNorm norm(ActNormOptions({2}));
  norm->eval();  // no data-dependent initialisation (it would reject the non-finite channel itself)
  TensorList bad{torch::full({1, 2, 2, 2}, std::numeric_limits<float>::infinity())};
  CHECK_THROWS_WITH(norm->forward(bad), Catch::Contains("ActNorm: scale 0 contains NaN or Inf"));
  {
    NestedFlowCall nested;  // inside a composite that already checked its input
    CHECK_NOTHROW(norm->forward(bad));
  }
  CHECK_THROWS_AS(norm->forward(bad), FlowInputError);  // the scope ended
  set_finite_checks(false);
  CHECK_NOTHROW(norm->forward(bad));
  set_finite_checks(true);
  FlowStack stack;
  stack->push_back(Block(ActNormOptions({2}), ChannelShuffleOptions({2}), coupling_options({2})));
  CHECK_THROWS_WITH(stack->forward(bad), Catch::Contains("FlowStack: scale 0 contains NaN or Inf"));
}
