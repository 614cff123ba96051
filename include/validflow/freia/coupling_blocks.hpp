#pragma once
// FrEIA's two-sided affine couplings (FrEIA 0.2, FrEIA/modules/coupling_layers.py), computation for computation:
// GLOWCouplingBlock<Subnet> (one subnet per side predicts [s | t]) and RNVPCouplingBlock<Subnet> (separate s and t
// subnets). With x = [x1 | x2], |x1| = split_len1:
//   forward:  s2, t2 = from [x2 | c];  y1 = exp(s2) * x1 + t2
//             s1, t1 = from [y1 | c];  y2 = exp(s1) * x2 + t1            log|det| = sum(s1) + sum(s2)
//   inverse:  s1, t1 = from [y1 | c];  x2 = (y2 - t1) * exp(-s1);  s2, t2 = from [x2 | c];  x1 = (y1 - t2) * exp(-s2)
// where s = clamp * f(raw s), f the clamp activation: ATAN 0.636 * atan (FrEIA's default), TANH, SIGMOID
// 2 * (sigmoid - 0.5). Subnets carry FrEIA's names: subnet1 / subnet2 (GLOW; subnet1 reads the first half),
// subnet_s1, subnet_t1, subnet_s2, subnet_t2 (RNVP).
// The split follows FrEIA: split_len1 = round(C * split_fraction) with Python's round, half to even, so 5
// channels split 2 + 3 and 7 channels 4 + 3 (AllInOneBlock instead keeps C - C/2 passive); split_channels sets it
// directly.
#include <validflow/core/flow.hpp>
#include <validflow/freia/common.hpp>

#include <cfenv>
#include <cmath>
#include <string>
#include <vector>

namespace validflow {

/// FrEIA's clamp_activation of the two-sided couplings.
enum class ClampActivation { atan, tanh, sigmoid };

template <typename SubnetOptions>
struct CouplingBlockOptions : BlockOptions<CouplingBlockOptions<SubnetOptions>, SubnetOptions> {
  /* implicit */ CouplingBlockOptions(int64_t channels, SubnetOptions subnet = {})
      : BlockOptions<CouplingBlockOptions<SubnetOptions>, SubnetOptions>(channels, std::move(subnet)) {}
  /// s = clamp * f(raw s): the amplification of each value is at most exp(+-clamp).
  TORCH_ARG(double, clamp) = 2.0;
  TORCH_ARG(ClampActivation, clamp_activation) = ClampActivation::atan;
  /// FrEIA's float split_len: split_len1 = round(C * split_fraction), half to even.
  TORCH_ARG(double, split_fraction) = 0.5;
  /// FrEIA's int split_len: split_len1 itself; 0 means use split_fraction.
  TORCH_ARG(int64_t, split_channels) = 0;
};

enum class TwoSidedCoupling { glow, rnvp };

template <typename Subnet, TwoSidedCoupling Kind>
class TwoSidedCouplingImpl : public ConditionalFlowLayer<TwoSidedCouplingImpl<Subnet, Kind>> {
  static_assert(is_tensor_subnet_v<Subnet>,
                "GLOWCouplingBlock / RNVPCouplingBlock<Subnet>: Subnet must be a module holder whose Impl has "
                "`using Options = ...` with in_channels(int64_t) / out_channels(int64_t) setters, "
                "`torch::Tensor forward(const torch::Tensor&)` and `double macs(int64_t) const` "
                "(see validflow/freia/subnets.hpp)");

 public:
  using SubnetOptions = typename Subnet::Impl::Options;
  using Options = CouplingBlockOptions<SubnetOptions>;
  static constexpr const char* kName = Kind == TwoSidedCoupling::glow ? "GLOWCouplingBlock" : "RNVPCouplingBlock";

  explicit TwoSidedCouplingImpl(Options options) : options(std::move(options)) { TwoSidedCouplingImpl::reset(); }

  void reset() override {
    const int64_t c = options.channels();
    TORCH_CHECK(c >= 2, kName, ": needs at least 2 channels, got ", c);
    freia_detail::check_spatial_dims(options.spatial_dims(), kName);
    freia_detail::check_condition_channels(options.condition_channels(), kName);
    TORCH_CHECK(std::isfinite(options.clamp()) && options.clamp() >= 0, kName, ": clamp must be finite and >= 0, got ",
                options.clamp());
    TORCH_CHECK(
        std::isfinite(options.split_fraction()) && options.split_fraction() >= 0 && options.split_fraction() <= 1,
        kName, ": split_fraction must be in [0, 1], got ", options.split_fraction());
    split1 = options.split_channels() > 0 ? options.split_channels() : python_round(c * options.split_fraction());
    TORCH_CHECK(split1 >= 1 && split1 < c, kName, ": the split leaves an empty half (split_len1 ", split1, " of ", c,
                " channels)");
    split2 = c - split1;
    const int64_t cond = freia_detail::total(options.condition_channels());
    const auto make = [&](const char* name, int64_t in, int64_t out) {
      return this->register_module(name, Subnet(SubnetOptions(options.subnet()).in_channels(in).out_channels(out)));
    };
    if constexpr (Kind == TwoSidedCoupling::glow) {
      subnet1 = make("subnet1", split1 + cond, 2 * split2);
      subnet2 = make("subnet2", split2 + cond, 2 * split1);
    } else {
      subnet_s1 = make("subnet_s1", split1 + cond, split2);
      subnet_t1 = make("subnet_t1", split1 + cond, split2);
      subnet_s2 = make("subnet_s2", split2 + cond, split1);
      subnet_t2 = make("subnet_t2", split2 + cond, split1);
    }
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::" << kName << "(channels=" << options.channels() << ", split=" << split1 << "+" << split2
           << ", clamp=" << options.clamp() << ")";
  }

  double forward_macs(const MapSizes& sizes) const override {
    const auto positions = freia_detail::positions(sizes, options.spatial_dims());
    if constexpr (Kind == TwoSidedCoupling::glow) {
      return subnet1->macs(positions) + subnet2->macs(positions);
    } else {
      return subnet_s1->macs(positions) + subnet_t1->macs(positions) + subnet_s2->macs(positions) +
             subnet_t2->macs(positions);
    }
  }

  Options options;
  Subnet subnet1{nullptr}, subnet2{nullptr};                                              ///< GLOW
  Subnet subnet_s1{nullptr}, subnet_t1{nullptr}, subnet_s2{nullptr}, subnet_t2{nullptr};  ///< RNVP
  int64_t split1 = 0, split2 = 0;

 protected:
  FlowResult conditional_forward(const TensorList& x, const TensorList& conditions) override {
    check(x, conditions);
    NestedFlowCall nested;
    const auto x1 = x[0].narrow(1, 0, split1), x2 = x[0].narrow(1, split1, split2);
    const auto [s2, t2] = coefficients(2, freia_detail::with_conditions(x2, conditions), x[0]);
    const auto y1 = torch::exp(s2) * x1 + t2;
    const auto [s1, t1] = coefficients(1, freia_detail::with_conditions(y1, conditions), x[0]);
    const auto y2 = torch::exp(s1) * x2 + t1;
    return {{torch::cat({y1, y2}, 1)}, freia_detail::sum_per_sample(s2) + freia_detail::sum_per_sample(s1)};
  }

  FlowResult conditional_inverse(const TensorList& z, const TensorList& conditions) override {
    check(z, conditions);
    NestedFlowCall nested;
    const auto y1 = z[0].narrow(1, 0, split1), y2 = z[0].narrow(1, split1, split2);
    const auto [s1, t1] = coefficients(1, freia_detail::with_conditions(y1, conditions), z[0]);
    const auto x2 = (y2 - t1) * torch::exp(-s1);
    const auto [s2, t2] = coefficients(2, freia_detail::with_conditions(x2, conditions), z[0]);
    const auto x1 = (y1 - t2) * torch::exp(-s2);
    return {{torch::cat({x1, x2}, 1)}, -freia_detail::sum_per_sample(s1) - freia_detail::sum_per_sample(s2)};
  }

 private:
  static int64_t python_round(double v) {
    const int mode = std::fegetround();
    std::fesetround(FE_TONEAREST);
    const auto r = static_cast<int64_t>(std::nearbyint(v));
    std::fesetround(mode);
    return r;
  }

  void check(const TensorList& x, const TensorList& conditions) const {
    freia_detail::check_block_input(x, options.channels(), options.spatial_dims(), kName,
                                    detail::reference_tensor(*this), conditions, options.condition_channels());
  }

  /// Clamped s and t of `side` (1: from the first half, for the second; 2: the reverse) from its subnet input u.
  std::pair<torch::Tensor, torch::Tensor> coefficients(int side, const torch::Tensor& u, const torch::Tensor& x) {
    const int64_t out = side == 1 ? split2 : split1;
    torch::Tensor s, t;
    if constexpr (Kind == TwoSidedCoupling::glow) {
      const auto a = checked(side == 1 ? subnet1->forward(u) : subnet2->forward(u), 2 * out, x);
      s = a.narrow(1, 0, out);
      t = a.narrow(1, out, out);
    } else {
      s = checked(side == 1 ? subnet_s1->forward(u) : subnet_s2->forward(u), out, x);
      t = checked(side == 1 ? subnet_t1->forward(u) : subnet_t2->forward(u), out, x);
    }
    return {options.clamp() * clamp_activation(s), t};
  }

  static torch::Tensor checked(const torch::Tensor& a, int64_t channels, const torch::Tensor& x) {
    freia_detail::check_subnet_output(kName, a, channels, x);
    return a;
  }

  torch::Tensor clamp_activation(const torch::Tensor& u) const {
    switch (options.clamp_activation()) {
      case ClampActivation::tanh:
        return torch::tanh(u);
      case ClampActivation::sigmoid:
        return 2.0 * (torch::sigmoid(u) - 0.5);
      case ClampActivation::atan:
        break;
    }
    return 0.636 * torch::atan(u);
  }
};

/// Module holder of FrEIA's GLOWCouplingBlock.
template <typename Subnet>
class GLOWCouplingBlock : public torch::nn::ModuleHolder<TwoSidedCouplingImpl<Subnet, TwoSidedCoupling::glow>> {
 public:
  using Impl = TwoSidedCouplingImpl<Subnet, TwoSidedCoupling::glow>;
  using torch::nn::ModuleHolder<Impl>::ModuleHolder;
};

/// Module holder of FrEIA's RNVPCouplingBlock.
template <typename Subnet>
class RNVPCouplingBlock : public torch::nn::ModuleHolder<TwoSidedCouplingImpl<Subnet, TwoSidedCoupling::rnvp>> {
 public:
  using Impl = TwoSidedCouplingImpl<Subnet, TwoSidedCoupling::rnvp>;
  using torch::nn::ModuleHolder<Impl>::ModuleHolder;
};

}  // namespace validflow
