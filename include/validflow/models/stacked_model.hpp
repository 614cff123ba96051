#pragma once
// Shared base of the model compositions: a model is a FlowStack (child "flow") of blocks that the derived
// class builds in reset() from its options; forward, inverse and cost are the stack's.
#include <validflow/core/sequence.hpp>

namespace validflow {

template <typename Derived>
class StackedFlowModel : public FlowLayer<Derived> {
 public:
  FlowResult forward(const TensorList& x) override { return flow->forward(x); }
  FlowResult inverse(const TensorList& z) override { return flow->inverse(z); }
  double forward_macs(const MapSizes& sizes) const override { return flow->forward_macs(sizes); }

  FlowStack flow{nullptr};

 protected:
  /// Registers a new empty stack as child "flow"; the derived reset() then pushes its blocks.
  FlowStack& new_stack() {
    flow = this->register_module("flow", FlowStack());
    return flow;
  }
};

}  // namespace validflow
