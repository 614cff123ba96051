// Must NOT compile: a FlowSequence of a module that is not a flow layer.
#include <validflow/core.hpp>

int main() {
  validflow::FlowSequence<validflow::ActNorm, torch::nn::Linear> sequence(nullptr);
  return sequence.is_empty() ? 0 : 1;
}
