// Subnets (CBAM, CrossConvolutions, r1, r2), CS-Flow and ValidFlow compositions, official CS-Flow import/parity.
#include "flow_harness.hpp"

#include <validflow/models/csflow_golden.hpp>
#include <validflow/validflow.hpp>

#include <cstdio>
#include <fstream>

using namespace validflow;

namespace {

const vft::InputSpec kSpec{{16, 16, 16}, {8, 4, 2}, 3};
const vft::InputSpec kTiny{{4, 4, 4}, {4, 2, 1}, 2};
const vft::HarnessOptions kOptions{kSpec, kTiny};

std::string golden_path() { return std::string(VALIDFLOW_SHARED_DIR) + "/golden/csflow_golden_A.pt"; }

bool golden_available() {
  if (std::ifstream(golden_path())) return true;
  WARN("skipped: " << golden_path() << " not found (the shared golden folder is absent)");
  return false;
}

TensorList inputs(const vft::InputSpec& spec) { return vft::random_inputs(spec, torch::kFloat32, spec.batch); }

}  // namespace

TEST_CASE("CBAM: channel then spatial attention", "[subnets][cbam]") {
  CBAM cbam(CBAMOptions(32).reduction(16));
  CHECK(cbam->mlp_reduce->options.out_channels() == 2);
  auto x = torch::randn({2, 32, 5, 7});
  CHECK(cbam(x).sizes() == x.sizes());
  {
    // All-zero attention layers give sigmoid(0) * sigmoid(0) = 1/4 everywhere.
    torch::NoGradGuard no_grad;
    for (auto& p : cbam->parameters()) p.zero_();
  }
  CHECK(cbam(x).allclose(x * 0.25));
  {
    // A spatial conv that reads only the channel-max map: attention follows the pixel's largest value.
    torch::NoGradGuard no_grad;
    cbam->spatial->weight.select(1, 1)[0][3][3] = 1.0;
  }
  const auto refined = x * 0.5;
  const auto expected = refined * torch::sigmoid(refined.amax(1, true));
  CHECK(cbam(x).allclose(expected, 1e-5, 1e-6));
}

TEST_CASE("CrossConvolutions coupling passes the flow harness", "[subnets][cross]") {
  vft::check_flow(
      "Coupling_CrossConvolutions",
      [](const auto& c) {
        return ParallelAffineCoupling<CrossConvolutions>(
                   ParallelAffineCoupling<CrossConvolutions>::Impl::Options(
                       c, CrossConvolutionsOptions().hidden_channels(8).kernel_size(3)))
            .ptr();
      },
      kOptions);
  vft::check_flow(
      "Coupling_CrossConvolutions_k5",
      [](const auto& c) {
        return ParallelAffineCoupling<CrossConvolutions>(
                   ParallelAffineCoupling<CrossConvolutions>::Impl::Options(
                       c, CrossConvolutionsOptions().hidden_channels(8).kernel_size(5)))
            .ptr();
      },
      kOptions);
}

TEST_CASE("r2 (FB subnet) coupling passes the flow harness", "[subnets][r2]") {
  vft::check_flow(
      "Coupling_R2",
      [](const auto& c) {
        return ParallelAffineCoupling<SubnetR2>(ParallelAffineCoupling<SubnetR2>::Impl::Options(
                                                    c, SubnetR2Options().hidden_channels(8).cbam_reduction(4)))
            .ptr();
      },
      kOptions);
}

TEST_CASE("r1 (FA subnet) coupling passes the flow harness", "[subnets][r1]") {
  vft::check_flow(
      "Coupling_R1",
      [](const auto& c) {
        return ParallelAffineCoupling<SubnetR1>(ParallelAffineCoupling<SubnetR1>::Impl::Options(
                                                    c, SubnetR1Options().hidden_channels(8).cbam_reduction(4)))
            .ptr();
      },
      kOptions);
  vft::check_flow("Coupling_R1_1scale",
                  [](const auto& c) {
                    return ParallelAffineCoupling<SubnetR1>(ParallelAffineCoupling<SubnetR1>::Impl::Options(
                                                                c, SubnetR1Options().hidden_channels(8).cbam(false)))
                        .ptr();
                  },
                  {{{6}, {5}, 3}, {{4}, {3}, 2}});
}

TEST_CASE("subnet structure: names, depthwise convs, branches, sizes", "[subnets]") {
  const std::vector<int64_t> in{4, 4, 4}, out{8, 8, 8};
  SubnetR1 r1(SubnetR1Options().in_channels(in).out_channels(out).hidden_channels(16));
  CHECK(r1->input_convs[0]->depthwise->options.groups() == 4);
  CHECK(r1->named_parameters().contains("conv_scale2_1.pointwise.weight"));
  CHECK(r1->named_parameters().contains("cbam0.spatial.weight"));
  CHECK_FALSE(r1->named_parameters().contains("up_conv10.weight"));  // no cross-scale links in r1

  CrossConvolutions r2(SubnetR2Options().in_channels(in).out_channels(out).hidden_channels(16));
  CHECK(r2->named_parameters().contains("up_conv20.weight"));
  CHECK(r2->down_conv02->options.stride()->at(0) == 4);
  CrossConvolutions cs(CrossConvolutionsOptions().in_channels(in).out_channels(out).hidden_channels(16));
  CHECK(cs->named_parameters().size() == 23);  // the official subnet's 23 entries
  CHECK_FALSE(cs->named_parameters().contains("up_conv20.weight"));

  // The 1<->3 branches carry information from scale 0 straight to scale 2 (and back) in a single subnet.
  torch::manual_seed(0);
  vft::randomize_parameters(*r2);
  TensorList x{torch::randn({1, 4, 8, 8}), torch::randn({1, 4, 4, 4}), torch::randn({1, 4, 2, 2})};
  auto x_changed = x;
  x_changed[0] = x[0] + 1;
  CHECK_FALSE(r2->forward(x)[2].allclose(r2->forward(x_changed)[2]));
  vft::randomize_parameters(*cs);
  CHECK(cs->forward(x)[2].allclose(cs->forward(x_changed)[2]));  // CS-Flow: scales 0 and 2 never connect

  CHECK_THROWS_WITH(cs->forward({x[0], x[1], torch::randn({1, 4, 3, 3})}), Catch::Contains("halve"));
  CHECK_THROWS_WITH(CrossConvolutions(SubnetR2Options().in_channels({4, 4}).out_channels({8, 8})),
                    Catch::Contains("3 scales"));
}

TEST_CASE("CS-Flow model passes the flow harness and starts as a permutation", "[models][csflow]") {
  vft::check_flow(
      "CSFlow",
      [](const auto& c) {
        return CSFlow(
                   CSFlowOptions().channels(c[0]).scales(static_cast<int64_t>(c.size())).blocks(2).hidden_channels(8))
            .ptr();
      },
      kOptions);
  CSFlow model(CSFlowOptions().channels(16).blocks(3).hidden_channels(8));
  CHECK(model->options.resolved_kernel_sizes() == std::vector<int64_t>{3, 3, 5});
  CHECK(model->block(2).get<1>()->s1->options.kernel_size() == 5);
  const auto x = inputs(kSpec);
  const auto [z, log_det] = model->forward(x);
  CHECK(log_det.abs().max().item<double>() == 0);  // zero gammas: the flow is a pure permutation
  for (size_t s = 0; s < 3; ++s) CHECK(z[s].pow(2).sum().item<double>() == Approx(x[s].pow(2).sum().item<double>()));
}

TEST_CASE("ValidFlow model passes the flow harness", "[models][validflow]") {
  auto make = [](bool actnorm) {
    return [actnorm](const std::vector<int64_t>& c) {
      return ValidFlow(
                 ValidFlowOptions().channels(c[0]).modules(1).hidden_channels(8).cbam_reduction(4).actnorm(actnorm))
          .ptr();
    };
  };
  vft::check_flow("ValidFlow", make(true), kOptions);
  vft::check_flow("ValidFlow_noactnorm", make(false), kOptions);

  ValidFlow model(ValidFlowOptions().channels(16).modules(2).hidden_channels(8).cbam_reduction(4));
  CHECK(model->flow->size() == 4);  // FA, FB, FA, FB
  CHECK((*model->flow)[2].as<ValidFlowImpl::FABlock::Impl>() != nullptr);
  CHECK((*model->flow)[3].as<ValidFlowImpl::FBBlock::Impl>() != nullptr);
  model->eval();  // ActNorm uninitialised + zero gammas: identity up to the permutations
  CHECK(model->forward(inputs(kSpec)).log_det.abs().max().item<double>() == 0);
  CHECK_THROWS_WITH(ValidFlow(ValidFlowOptions().channels(16).scales(2).hidden_channels(8)),
                    Catch::Contains("3 scales"));
  ValidFlow two_scales(ValidFlowOptions().channels(16).scales(2).hidden_channels(8).long_branches(false));
  CHECK(two_scales->forward({torch::randn({2, 16, 4, 4}), torch::randn({2, 16, 2, 2})}).tensors.size() == 2);
}

TEST_CASE("ablation switches change the architecture", "[models][validflow]") {
  auto count = [](ValidFlowOptions o) {
    return trainable_parameter_count(*ValidFlow(o.channels(16).hidden_channels(8).cbam_reduction(4)));
  };
  const auto full = count(ValidFlowOptions());
  CHECK(count(ValidFlowOptions().fb_cbam(false)) < full);
  CHECK(count(ValidFlowOptions().long_branches(false)) < full);
  CHECK(count(ValidFlowOptions().actnorm(false)) < full);
  CHECK(count(ValidFlowOptions().modules(5)) > full);
}

TEST_CASE("CS-Flow trainable parameters match the official model", "[models][csflow][params]") {
  // 304 channels, hidden 1024: 4 blocks (official default) and 6 blocks (the ValidFlow paper's 370.50 M).
  CHECK(trainable_parameter_count(*CSFlow(CSFlowOptions().blocks(4))) == 275227288);
  CHECK(trainable_parameter_count(*CSFlow(CSFlowOptions().blocks(6))) == 370504676);
}

TEST_CASE("loss, score and anomaly map definitions", "[models][objectives]") {
  TensorList z{torch::full({2, 2, 2, 2}, 1.0), torch::full({2, 2, 1, 1}, 2.0)};
  const auto log_det = torch::tensor({1.0, 3.0});
  // D = 8 + 2 = 10; per sample 1/2 ||z||^2 = (8 + 8) / 2 = 8.
  CHECK(nll_per_dimension(z, log_det).item<double>() == Approx(((8 - 1.0) + (8 - 3.0)) / 2 / 10));
  CHECK(image_scores(z).allclose(torch::full({2}, 0.8)));
  CHECK(anomaly_maps(z).sizes() == torch::IntArrayRef{2, 2, 2});
  CHECK_THROWS(nll_per_dimension(z, torch::zeros({3})));
}

TEST_CASE("official CS-Flow weights reproduce the official outputs", "[models][csflow][parity]") {
  if (!golden_available()) return;
  const auto golden = read_state_dict(golden_path());
  const auto options = infer_csflow_options(golden, "param.");
  CHECK(options.channels() == 16);
  CHECK(options.hidden_channels() == 32);
  CHECK(options.blocks() == 2);
  CHECK(options.kernel_sizes() == std::vector<int64_t>{3, 5});
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const auto report = check_csflow_golden(golden, dtype);
    const double tolerance = dtype == torch::kFloat32 ? 1e-5 : 1e-10;
    CAPTURE(dtype, report.z.max_rel, report.log_det.max_rel, report.score.max_rel, report.loss.max_rel);
    CHECK(report.z.max_rel <= tolerance);
    CHECK(report.log_det.max_rel <= tolerance);
    CHECK(report.score.max_rel <= tolerance);
    CHECK(report.loss.max_rel <= tolerance);
    CHECK(report.permutations_checked == 6);
    CHECK(report.permutations_match);
    std::printf("[parity] %s: rel err z %.2e  log-det %.2e  score %.2e  loss %.2e\n",
                dtype == torch::kFloat32 ? "float32" : "float64", report.z.max_rel, report.log_det.max_rel,
                report.score.max_rel, report.loss.max_rel);
  }
  // The true inverse reproduces the inputs from the official latents.
  auto model = import_official_csflow(golden, "param.");
  model->to(torch::kFloat64);
  TensorList z;
  for (int s = 0; s < 3; ++s) z.push_back(golden.at("z64." + std::to_string(s)));
  const auto x = model->inverse(z).tensors;
  for (int s = 0; s < 3; ++s)
    CHECK(x[s].allclose(golden.at("input." + std::to_string(s)).to(torch::kFloat64), 1e-9, 1e-9));
}

TEST_CASE("official CS-Flow import rejects bad state dicts", "[models][csflow][import]") {
  CHECK_THROWS_WITH(read_state_dict("/nonexistent/weights.pt"), Catch::Contains("/nonexistent/weights.pt"));
  if (!golden_available()) return;
  const auto golden = read_state_dict(golden_path());

  auto missing = golden;
  missing.erase("param.module_list.6.s2.up_conv21.bias");
  CHECK_THROWS_WITH(import_official_csflow(missing, "param."), Catch::Contains("module_list.6.s2.up_conv21.bias"));

  auto wrong_shape = golden;
  wrong_shape.set("param.module_list.4.s1.down_conv12.weight", torch::zeros({16, 32, 5, 5}));
  CHECK_THROWS_WITH(import_official_csflow(wrong_shape, "param."), Catch::Contains("down_conv12.weight"));

  // A bad conv_scale0_0 is named itself, not the other scales' convs that differ from it.
  auto bad_first = golden;
  const auto& first = golden.at("param.module_list.4.s1.conv_scale0_0.weight");
  bad_first.set("param.module_list.4.s1.conv_scale0_0.weight",
                torch::zeros({first.size(0), first.size(1) + 2, first.size(2), first.size(3)}));
  CHECK_THROWS_WITH(
      import_official_csflow(bad_first, "param."),
      Catch::Contains("module_list.4.s1.conv_scale0_0.weight has shape") && !Catch::Contains("conv_scale1_0"));

  auto extra = golden;
  extra.set("param.module_list.4.s1.extra_conv.weight", torch::zeros({1}));
  CHECK_THROWS_WITH(import_official_csflow(extra, "param."), Catch::Contains("unexpected key"));

  CHECK_THROWS_WITH(import_official_csflow(golden, "nothing."), Catch::Contains("no key matches"));

  // A truncated file is reported as such.
  std::ifstream in(golden_path(), std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string truncated = "truncated_golden.pt";
  {
    std::ofstream out(truncated, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  CHECK_THROWS_WITH(read_state_dict(truncated),
                    Catch::Contains("not a valid torch.save zip file") && Catch::Contains("(truncated?)"));
  std::remove(truncated.c_str());
}
