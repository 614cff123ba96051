#pragma once
// The subnet contract of the couplings (the "s/t network"). A subnet type `S` (a module holder) works in
// ParallelAffineCoupling<S> when:
//   * `typename S::Impl::Options` is default-constructible and has the setters
//     `in_channels(std::vector<int64_t>)` and `out_channels(std::vector<int64_t>)`, one entry per scale;
//     the coupling sets both, the user sets everything else (widths, kernel sizes, ...);
//   * `S::Impl` is constructible from its Options and has `TensorList forward(const TensorList&)` that
//     returns, per scale, `out_channels[s]` channels at the input's spatial size. For a coupling, the
//     first half of the output channels is the log-scale s, the second half the shift t;
//   * `S::Impl` has `double macs(const MapSizes&) const`: multiply-accumulates of one sample's forward.
#include <validflow/core/flow.hpp>

#include <type_traits>
#include <utility>

namespace validflow {
namespace detail {

template <typename, typename = void>
struct is_subnet : std::false_type {};

template <typename S>
struct is_subnet<S,
                 std::void_t<typename S::Impl::Options,
                             decltype(std::declval<typename S::Impl::Options&>().in_channels(std::vector<int64_t>{})),
                             decltype(std::declval<typename S::Impl::Options&>().out_channels(std::vector<int64_t>{})),
                             decltype(std::declval<typename S::Impl&>().forward(std::declval<const TensorList&>())),
                             decltype(std::declval<const typename S::Impl&>().macs(std::declval<const MapSizes&>()))>>
    : std::is_same<decltype(std::declval<typename S::Impl&>().forward(std::declval<const TensorList&>())), TensorList> {
};

template <typename, typename = void>
struct is_flow_layer : std::false_type {};

template <typename L>
struct is_flow_layer<L, std::void_t<typename L::Impl::Options>>
    : std::integral_constant<bool, std::is_base_of_v<FlowModule, typename L::Impl> &&
                                       std::is_constructible_v<typename L::Impl, typename L::Impl::Options>> {};

}  // namespace detail

template <typename S>
inline constexpr bool is_subnet_v = detail::is_subnet<S>::value;

/// A flow layer: a module holder whose Impl derives FlowModule and is built from `Impl::Options`.
template <typename L>
inline constexpr bool is_flow_layer_v = detail::is_flow_layer<L>::value;

/// Checks that a subnet returned what the coupling asked for.
inline void check_subnet_output(const TensorList& out, const TensorList& in, const std::vector<int64_t>& channels,
                                const std::string& name) {
  if (out.size() != in.size()) {
    detail::throw_input_error(name, "returned ", out.size(), " scales for ", in.size(), " inputs");
  }
  for (size_t s = 0; s < out.size(); ++s) {
    if (out[s].size(1) != channels[s] || out[s].size(2) != in[s].size(2) || out[s].size(3) != in[s].size(3)) {
      detail::throw_input_error(name, "scale ", s, ": returned shape ", detail::shape_string(out[s]), ", expected ",
                                channels[s], " channels at ", in[s].size(2), "x", in[s].size(3));
    }
  }
}

}  // namespace validflow
