#pragma once
// AllInOneBlock<Subnet>: FrEIA's AllInOneBlock (FrEIA 0.2, FrEIA/modules/all_in_one_block.py) and anomalib's
// vendored copy (anomalib.models.components.flow.AllInOneBlock, 2.x), computation for computation:
//
//   forward:  [reverse_permutation: x = W^T x]                         W: the permutation (a matrix, see below)
//             x = [x1 | x2], |x1| = C - C/2 (the passive half), |x2| = C/2
//             a = 0.1 * subnet([x1 | conditions]);  s = clamp * tanh(a[:, :|x2|])  [GIN: s -= mean(s)]
//             x2 = x2 * exp(s) + a[:, |x2|:]
//             y = W (psi(global_scale) * [x1 | x2] + global_offset)     [GIN: psi = 1, no scale]
//             log|det| = sum(s) + positions * sum(log psi(global_scale))
//   inverse:  the exact reverse, log-det negated.
//
// psi (global_affine_type): SOFTPLUS 0.1 * softplus(a; beta 0.5), SIGMOID 10 * sigmoid(a - 2), EXP exp(a);
// global_scale starts where psi = global_affine_init. W is a fixed random permutation matrix (permute_soft:
// a random rotation instead), or with learned_householder_permutation = K, w_0 times K learned Householder
// reflections. Parameters and buffers carry FrEIA's names (global_scale, global_offset, w_perm, w_perm_inv or
// w_0, vk_householder, subnet.*), so a FrEIA or anomalib state dict loads as it is (freia/import.hpp).
//
// FrEIA and anomalib compute the same; they differ only in initialisation, which `variant` selects:
//   * freia: the permutation is numpy's legacy `np.random.permutation(C)` (FrEIA draws it from the global numpy
//     state; here from np.random.seed(permutation_seed)), global_scale is computed in float64;
//   * anomalib: `torch.randperm(C)` from a generator seeded with permutation_seed, global_scale in float32.
// Soft permutations (scipy's special_ortho_group in both) are a rotation from the QR of a Gaussian matrix here:
// imported weights carry the matrix, so only fresh initialisations differ.
// Not like FrEIA: an init outside psi's range (e.g. SIGMOID with init >= 10) is an error, not a NaN parameter;
// householder works in float64 (FrEIA multiplies by a float32 identity and fails).
#include <validflow/core/flow.hpp>
#include <validflow/core/numpy_permutation.hpp>
#include <validflow/freia/common.hpp>
#include <validflow/util/state_invariants.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace validflow {

/// FrEIA's global_affine_type: the activation psi of the learned global scale.
enum class GlobalAffineType { softplus, sigmoid, exp };

template <typename SubnetOptions>
struct AllInOneBlockOptions : BlockOptions<AllInOneBlockOptions<SubnetOptions>, SubnetOptions> {
  /// channels >= 2; odd counts split as FrEIA's: the passive half has C - C/2. The block sets the subnet's
  /// in_channels (C - C/2 + conditions) and out_channels (2 * (C/2)).
  /* implicit */ AllInOneBlockOptions(int64_t channels, SubnetOptions subnet = {})
      : BlockOptions<AllInOneBlockOptions<SubnetOptions>, SubnetOptions>(channels, std::move(subnet)) {}
  /// alpha of the soft clamp s = alpha * tanh(.) (FrEIA's affine_clamping).
  TORCH_ARG(double, affine_clamping) = 2.0;
  /// GIN: volume-preserving coupling (s has zero mean), no global scale.
  TORCH_ARG(bool, gin_block) = false;
  /// psi(global_scale) at initialisation.
  TORCH_ARG(double, global_affine_init) = 1.0;
  TORCH_ARG(GlobalAffineType, global_affine_type) = GlobalAffineType::softplus;
  /// A random rotation instead of a permutation.
  TORCH_ARG(bool, permute_soft) = false;
  /// K > 0: W = w_0 times K learned Householder reflections (vk_householder [K, C]).
  TORCH_ARG(int64_t, learned_householder_permutation) = 0;
  /// Apply W^T before the coupling (Putzky et al. 2019).
  TORCH_ARG(bool, reverse_permutation) = false;
  /// Whose initialisation to follow (see the top of this file).
  TORCH_ARG(FreiaVariant, variant) = FreiaVariant::freia;
  /// Seed of the permutation (numpy's legacy seeding for `freia`, a torch generator for `anomalib`).
  TORCH_ARG(uint32_t, permutation_seed) = 0;
};

template <typename Subnet>
class AllInOneBlockImpl : public ConditionalFlowLayer<AllInOneBlockImpl<Subnet>>, public StateInvariants {
  static_assert(is_tensor_subnet_v<Subnet>,
                "AllInOneBlock<Subnet>: Subnet must be a module holder whose Impl has `using Options = ...` with "
                "in_channels(int64_t) / out_channels(int64_t) setters, `torch::Tensor forward(const torch::Tensor&)` "
                "and `double macs(int64_t) const` (see validflow/freia/subnets.hpp)");

 public:
  using SubnetOptions = typename Subnet::Impl::Options;
  using Options = AllInOneBlockOptions<SubnetOptions>;

  explicit AllInOneBlockImpl(Options options) : options(std::move(options)) { AllInOneBlockImpl::reset(); }

  void reset() override {
    const int64_t c = options.channels();
    TORCH_CHECK(c >= 2, "AllInOneBlock: needs at least 2 channels, got ", c);
    freia_detail::check_spatial_dims(options.spatial_dims(), "AllInOneBlock");
    freia_detail::check_condition_channels(options.condition_channels(), "AllInOneBlock");
    TORCH_CHECK(std::isfinite(options.affine_clamping()) && options.affine_clamping() > 0,
                "AllInOneBlock: affine_clamping must be finite and > 0, got ", options.affine_clamping());
    TORCH_CHECK(options.learned_householder_permutation() >= 0 && options.learned_householder_permutation() <= 4096,
                "AllInOneBlock: learned_householder_permutation must be in [0, 4096], got ",
                options.learned_householder_permutation());
    passive = c - c / 2;
    active = c / 2;
    const auto shape = freia_detail::channel_shape(c, options.spatial_dims());
    global_scale = this->register_parameter("global_scale", torch::full(shape, initial_global_scale()));
    global_offset = this->register_parameter("global_offset", torch::zeros(shape));
    const auto w = initial_permutation();
    if (options.learned_householder_permutation() > 0) {
      vk_householder = this->register_parameter("vk_householder",
                                                0.2 * torch::randn({options.learned_householder_permutation(), c}));
      w_0 = this->register_buffer("w_0", w);
    } else {
      auto matrix_shape = freia_detail::channel_shape(c, options.spatial_dims());
      matrix_shape[0] = c;
      w_perm = this->register_buffer("w_perm", w.reshape(matrix_shape));
      w_perm_inv = this->register_buffer("w_perm_inv", w.t().contiguous().reshape(matrix_shape));
    }
    subnet = this->register_module("subnet",
                                   Subnet(SubnetOptions(options.subnet())
                                              .in_channels(passive + freia_detail::total(options.condition_channels()))
                                              .out_channels(2 * active)));
  }

  /// A fixed (not learned) w_perm must be a permutation matrix (permute_soft: a rotation, orthogonal within fp32
  /// rounding; the log-det assumes |det W| = 1) and w_perm_inv its transpose.
  void check_state_invariants() const override {
    if (options.learned_householder_permutation() > 0) return;
    const int64_t c = options.channels();
    const auto w = w_perm.to(torch::kCPU, torch::kFloat64).reshape({c, c});
    if (!w_perm_inv.to(torch::kCPU, torch::kFloat64).reshape({c, c}).allclose(w.t(), 0, 1e-6))
      throw std::invalid_argument("AllInOneBlock buffer w_perm_inv is not the transpose of w_perm");
    if (options.permute_soft()) {
      const double error = (w.mm(w.t()) - torch::eye(c, torch::kFloat64)).abs().max().item<double>();
      if (!(error <= 1e-4))
        throw std::invalid_argument(
            "AllInOneBlock buffer w_perm is not orthogonal (|W W^T - I| = " + std::to_string(error) + ")");
      return;
    }
    const auto index = w.argmax(1);
    const auto exact = torch::zeros({c, c}, torch::kFloat64).scatter_(1, index.unsqueeze(1), 1.0);
    if (!w.equal(exact) || !std::get<0>(index.sort()).equal(torch::arange(c, torch::kLong)))
      throw std::invalid_argument("AllInOneBlock buffer w_perm is not a permutation matrix");
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::AllInOneBlock(channels=" << options.channels() << ", clamp=" << options.affine_clamping()
           << (options.gin_block() ? ", gin" : "")
           << (options.learned_householder_permutation() > 0 ? ", householder" : "")
           << (options.reverse_permutation() ? ", reverse_permutation" : "") << ")";
  }

  double forward_macs(const MapSizes& sizes) const override {
    const auto positions = freia_detail::positions(sizes, options.spatial_dims());
    const double mixes = options.reverse_permutation() ? 2.0 : 1.0;
    return subnet->macs(positions) +
           mixes * static_cast<double>(options.channels() * options.channels()) * static_cast<double>(positions);
  }

  /// W and W^T as [C, C] matrices (for Householder ones, built from the reflections).
  std::pair<torch::Tensor, torch::Tensor> permutation_matrices() const {
    const int64_t c = options.channels();
    if (options.learned_householder_permutation() == 0) return {w_perm.reshape({c, c}), w_perm_inv.reshape({c, c})};
    auto w = w_0;
    const auto eye = torch::eye(c, w_0.options());
    for (int64_t k = 0; k < vk_householder.size(0); ++k) {
      const auto v = vk_householder[k];
      w = torch::mm(w, eye - 2 * torch::outer(v, v) / torch::dot(v, v));
    }
    return {w, w.t()};
  }

  Options options;
  Subnet subnet{nullptr};
  torch::Tensor global_scale, global_offset;
  torch::Tensor w_perm, w_perm_inv;   ///< without Householder reflections
  torch::Tensor w_0, vk_householder;  ///< with them
  int64_t passive = 0, active = 0;

 protected:
  FlowResult conditional_forward(const TensorList& x, const TensorList& conditions) override {
    check(x, conditions);
    NestedFlowCall nested;
    const auto [w, w_inv] = permutation_matrices();
    auto input = x[0];
    if (options.reverse_permutation()) input = freia_detail::mix_channels(input, w_inv);
    auto [coupled, log_det] = couple(input, conditions, /*inverse=*/false);
    const auto [scale, scale_log_det] = global_affine();
    const auto y =
        freia_detail::mix_channels(options.gin_block() ? coupled + global_offset : coupled * scale + global_offset, w);
    return {{y}, log_det + static_cast<double>(freia_detail::positions(y)) * scale_log_det};
  }

  FlowResult conditional_inverse(const TensorList& z, const TensorList& conditions) override {
    check(z, conditions);
    NestedFlowCall nested;
    const auto [w, w_inv] = permutation_matrices();
    const auto [scale, scale_log_det] = global_affine();
    auto unmixed = freia_detail::mix_channels(z[0], w_inv) - global_offset;
    if (!options.gin_block()) unmixed = unmixed / scale;
    auto [x, log_det] = couple(unmixed, conditions, /*inverse=*/true);
    if (options.reverse_permutation()) x = freia_detail::mix_channels(x, w);
    return {{x}, log_det - static_cast<double>(freia_detail::positions(x)) * scale_log_det};
  }

 private:
  void check(const TensorList& x, const TensorList& conditions) const {
    freia_detail::check_block_input(x, options.channels(), options.spatial_dims(), "AllInOneBlock", global_scale,
                                    conditions, options.condition_channels());
  }

  /// The affine coupling of x2 given x1 (and the conditions), in either direction, with its log-det.
  std::pair<torch::Tensor, torch::Tensor> couple(const torch::Tensor& x, const TensorList& conditions, bool inverse) {
    const auto x1 = x.narrow(1, 0, passive);
    const auto x2 = x.narrow(1, passive, active);
    const auto a = 0.1 * subnet->forward(freia_detail::with_conditions(x1, conditions));
    freia_detail::check_subnet_output("AllInOneBlock", a, 2 * active, x);
    auto s = options.affine_clamping() * torch::tanh(a.narrow(1, 0, active));
    if (options.gin_block()) {
      std::vector<int64_t> dims;
      for (int64_t d = 1; d < s.dim(); ++d) dims.push_back(d);
      s = s - s.mean(dims, /*keepdim=*/true);
    }
    const auto t = a.narrow(1, active, active);
    const auto y2 = inverse ? (x2 - t) * torch::exp(-s) : x2 * torch::exp(s) + t;
    const auto log_det = freia_detail::sum_per_sample(s);
    return {torch::cat({x1, y2}, 1), inverse ? -log_det : log_det};
  }

  /// psi(global_scale) and sum(log psi) (GIN: 1 and 0).
  std::pair<torch::Tensor, torch::Tensor> global_affine() const {
    if (options.gin_block()) return {torch::ones_like(global_scale), torch::zeros({}, global_scale.options())};
    torch::Tensor scale;
    switch (options.global_affine_type()) {
      case GlobalAffineType::sigmoid:
        scale = 10 * torch::sigmoid(global_scale - 2.0);
        break;
      case GlobalAffineType::softplus:
        scale =
            0.1 * torch::nn::functional::softplus(global_scale, torch::nn::functional::SoftplusFuncOptions().beta(0.5));
        break;
      case GlobalAffineType::exp:
        scale = torch::exp(global_scale);
        break;
    }
    return {scale, torch::log(scale).sum()};
  }

  /// global_scale such that psi(global_scale) = global_affine_init, computed as the chosen variant does.
  double initial_global_scale() const {
    const double init = options.global_affine_init();
    const auto type = options.global_affine_type();
    const bool in_range = std::isfinite(init) && init > 0 && (type != GlobalAffineType::sigmoid || init < 10);
    TORCH_CHECK(in_range, "AllInOneBlock: global_affine_init ", init, " is outside the range of ",
                type == GlobalAffineType::sigmoid ? "SIGMOID (0, 10)" : "the activation (> 0)");
    if (options.variant() == FreiaVariant::freia) {  // numpy float64
      switch (type) {
        case GlobalAffineType::sigmoid:
          return 2.0 - std::log(10.0 / init - 1.0);
        case GlobalAffineType::softplus:
          return 2.0 * std::log(std::exp(0.5 * 10.0 * init) - 1.0);
        case GlobalAffineType::exp:
          return std::log(init);
      }
    }
    // anomalib: torch float32 scalars
    const auto f = [](double v) { return torch::tensor(static_cast<float>(v)); };
    switch (type) {
      case GlobalAffineType::sigmoid:
        return (2.0 - torch::log(f(10.0 / init - 1.0))).template item<float>();
      case GlobalAffineType::softplus:
        return (2.0 * torch::log(torch::exp(f(0.5 * 10.0 * init)) - 1)).template item<float>();
      case GlobalAffineType::exp:
        return torch::log(f(init)).template item<float>();
    }
    return 0;
  }

  /// W as [C, C] float32: row i has its 1 at column perm[i] (y_i = x_perm[i]); a rotation for permute_soft.
  torch::Tensor initial_permutation() const {
    const int64_t c = options.channels();
    if (options.permute_soft()) {
      const auto qr = torch::linalg_qr(torch::randn({c, c}, torch::kFloat64));
      auto q = std::get<0>(qr) * torch::sign(torch::diagonal(std::get<1>(qr))).unsqueeze(0);
      if (torch::det(q).item<double>() < 0) q.select(1, 0).neg_();  // SO(C), like special_ortho_group
      return q.to(torch::kFloat32);
    }
    std::vector<int64_t> perm;
    if (options.variant() == FreiaVariant::freia) {
      std::mt19937 generator(options.permutation_seed());
      perm = numpy_legacy_permutation(generator, c);
    } else {
      auto generator = at::detail::createCPUGenerator(options.permutation_seed());
      const auto drawn = torch::randperm(c, generator, torch::kLong);
      perm.assign(drawn.template data_ptr<int64_t>(), drawn.template data_ptr<int64_t>() + c);
    }
    auto w = torch::zeros({c, c});
    for (int64_t i = 0; i < c; ++i) w[i][perm[static_cast<size_t>(i)]] = 1.0;
    return w;
  }
};

/// Module holder of AllInOneBlockImpl<Subnet>.
template <typename Subnet>
class AllInOneBlock : public torch::nn::ModuleHolder<AllInOneBlockImpl<Subnet>> {
 public:
  using torch::nn::ModuleHolder<AllInOneBlockImpl<Subnet>>::ModuleHolder;
  using Impl = AllInOneBlockImpl<Subnet>;
};

}  // namespace validflow
