#pragma once
// Composition of flow layers.
//  * FlowSequence<Layers...>: compile-time composition; e.g. a ValidFlow block is
//    FlowSequence<ActNorm, ChannelShuffle, ParallelAffineCoupling<SubnetR1>>. Built from the layers' options.
//  * FlowStack: run-time composition of any flow modules (e.g. "n blocks of type A then B").
// Both run layers in order for `forward`, in reverse order for `inverse`, and sum the log-dets.
#include <validflow/core/flow.hpp>
#include <validflow/core/subnet.hpp>

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace validflow {
namespace detail {
/// A composed flow's conditional layers must all take the same conditions: `channels` collects them.
inline void agree_on_conditions(std::vector<int64_t>& channels, const FlowModule& layer, const char* where) {
  const auto own = layer.condition_channels();
  if (own.empty()) return;
  if (!channels.empty() && channels != own) {
    throw FlowInputError(std::string(where) + ": conditional layers disagree on their conditions' channels (" +
                         shape_string(torch::IntArrayRef(channels)) + " vs " + shape_string(torch::IntArrayRef(own)) +
                         ")");
  }
  channels = own;
}
}  // namespace detail

template <typename... Layers>
struct FlowSequenceOptions {
  /* implicit */ FlowSequenceOptions(typename Layers::Impl::Options... layer_options)
      : layers(std::move(layer_options)...) {}
  std::tuple<typename Layers::Impl::Options...> layers;
};

template <typename... Layers>
class FlowSequenceImpl : public FlowLayer<FlowSequenceImpl<Layers...>> {
  static_assert(sizeof...(Layers) >= 1, "FlowSequence needs at least one layer");
  static_assert((is_flow_layer_v<Layers> && ...),
                "FlowSequence<Layers...>: every layer must be a module holder whose Impl derives "
                "validflow::FlowModule (FlowResult forward/inverse(const TensorList&)) and is constructible "
                "from `Impl::Options`");

 public:
  using Options = FlowSequenceOptions<Layers...>;

  explicit FlowSequenceImpl(Options options) : options(std::move(options)) { FlowSequenceImpl::reset(); }
  explicit FlowSequenceImpl(typename Layers::Impl::Options... layer_options)
      : FlowSequenceImpl(Options(std::move(layer_options)...)) {}

  void reset() override { register_layers(std::index_sequence_for<Layers...>{}); }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::FlowSequence(" << sizeof...(Layers) << " layers)";
  }

  /// Without conditions: the conditional form with none (conditional layers then refuse the call).
  FlowResult forward(const TensorList& x) override { return conditional_forward(x, {}); }
  FlowResult inverse(const TensorList& z) override { return conditional_inverse(z, {}); }

  double forward_macs(const MapSizes& sizes) const override {
    return std::apply([&](const auto&... layer) { return (0.0 + ... + layer->forward_macs(sizes)); }, layers);
  }

  using FlowModule::forward;  // the conditional forms, forward(x, conditions) and inverse(z, conditions)
  using FlowModule::inverse;

  /// Those of its conditional layers (which must agree); empty if none is conditional.
  std::vector<int64_t> condition_channels() const override {
    std::vector<int64_t> channels;
    std::apply([&](const auto&... layer) { (detail::agree_on_conditions(channels, *layer, "FlowSequence"), ...); },
               layers);
    return channels;
  }

  /// The I-th layer (module holder).
  template <size_t I>
  auto& get() {
    return std::get<I>(layers);
  }

  Options options;
  std::tuple<Layers...> layers{Layers(nullptr)...};

 protected:
  FlowResult conditional_forward(const TensorList& x, const TensorList& conditions) override {
    FlowResult result{x, zero_log_det(x)};
    check_finite(x, "FlowSequence");
    check_conditions(conditions, condition_channels(), x, "FlowSequence");
    NestedFlowCall nested;
    std::apply([&](auto&... layer) { (chain(result, detail::forward_step(*layer, result.tensors, conditions)), ...); },
               layers);
    return result;
  }

  FlowResult conditional_inverse(const TensorList& z, const TensorList& conditions) override {
    FlowResult result{z, zero_log_det(z)};
    check_finite(z, "FlowSequence");
    check_conditions(conditions, condition_channels(), z, "FlowSequence");
    NestedFlowCall nested;
    inverse_from<sizeof...(Layers)>(result, conditions);
    return result;
  }

 private:
  template <size_t... I>
  void register_layers(std::index_sequence<I...>) {
    ((std::get<I>(layers) = this->register_module(std::to_string(I), Layers(std::get<I>(options.layers)))), ...);
  }

  template <size_t N>
  void inverse_from(FlowResult& result, const TensorList& conditions) {
    if constexpr (N > 0) {
      chain(result, detail::inverse_step(*std::get<N - 1>(layers), result.tensors, conditions));
      inverse_from<N - 1>(result, conditions);
    }
  }
};

/// Module holder of FlowSequenceImpl<Layers...>.
template <typename... Layers>
class FlowSequence : public torch::nn::ModuleHolder<FlowSequenceImpl<Layers...>> {
 public:
  using torch::nn::ModuleHolder<FlowSequenceImpl<Layers...>>::ModuleHolder;
  using Impl = FlowSequenceImpl<Layers...>;
};

/// A run-time stack of flow modules of any type. Layers are registered as "0", "1", ...
class FlowStackImpl : public FlowLayer<FlowStackImpl> {
 public:
  FlowStackImpl() = default;

  /// Layers are added with push_back; there is nothing to build from options.
  void reset() override {}

  /// Appends a flow layer: a module holder (e.g. ActNorm(...)), a shared_ptr to an Impl, or an AnyFlow.
  void push_back(AnyFlow layer) {
    TORCH_CHECK(!layer.is_empty(), "FlowStack::push_back: empty module");
    auto channels = condition_channels();
    detail::agree_on_conditions(channels, *layer, "FlowStack::push_back");
    register_module(std::to_string(layers.size()), layer.module_ptr());
    layers.push_back(std::move(layer));
  }

  size_t size() const { return layers.size(); }
  const AnyFlow& operator[](size_t i) const { return layers.at(i); }

  /// Clones every layer (whatever its type) into a new stack.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy = std::make_shared<FlowStackImpl>();
    for (const auto& layer : layers) copy->push_back(layer.clone(device));
    copy->train(this->is_training());
    return copy;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "validflow::FlowStack(" << layers.size() << " layers)";
  }

  double forward_macs(const MapSizes& sizes) const override {
    double total = 0;
    for (const auto& layer : layers) total += layer->forward_macs(sizes);
    return total;
  }

  using FlowModule::forward;  // the conditional forms, forward(x, conditions) and inverse(z, conditions)
  using FlowModule::inverse;

  /// Those of its conditional layers (push_back keeps them in agreement); empty if none is conditional.
  std::vector<int64_t> condition_channels() const override {
    for (const auto& layer : layers) {
      auto channels = layer->condition_channels();
      if (!channels.empty()) return channels;
    }
    return {};
  }

  /// Without conditions: the conditional form with none (conditional layers then refuse the call).
  FlowResult forward(const TensorList& x) override { return conditional_forward(x, {}); }
  FlowResult inverse(const TensorList& z) override { return conditional_inverse(z, {}); }

  std::vector<AnyFlow> layers;

 protected:
  FlowResult conditional_forward(const TensorList& x, const TensorList& conditions) override {
    TORCH_CHECK(!layers.empty(), "FlowStack: the stack is empty");
    FlowResult result{x, zero_log_det(x)};
    check_finite(x, "FlowStack");
    check_conditions(conditions, condition_channels(), x, "FlowStack");
    NestedFlowCall nested;
    for (const auto& layer : layers) chain(result, detail::forward_step(*layer, result.tensors, conditions));
    return result;
  }

  FlowResult conditional_inverse(const TensorList& z, const TensorList& conditions) override {
    TORCH_CHECK(!layers.empty(), "FlowStack: the stack is empty");
    FlowResult result{z, zero_log_det(z)};
    check_finite(z, "FlowStack");
    check_conditions(conditions, condition_channels(), z, "FlowStack");
    NestedFlowCall nested;
    for (auto it = layers.rbegin(); it != layers.rend(); ++it)
      chain(result, detail::inverse_step(**it, result.tensors, conditions));
    return result;
  }
};

TORCH_MODULE(FlowStack);

}  // namespace validflow
