// Must NOT compile: a coupling over a type that does not meet the subnet contract. The test checks that the
// one static_assert of ParallelAffineCoupling explains the contract.
#include <validflow/core.hpp>

struct NotASubnetImpl : torch::nn::Module {
  struct Options {};
  torch::Tensor forward(const torch::Tensor& x) { return x; }
};
TORCH_MODULE(NotASubnet);

int main() {
  validflow::ParallelAffineCoupling<NotASubnet> coupling(nullptr);
  return coupling.is_empty() ? 0 : 1;
}
