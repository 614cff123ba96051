// A user program: builds a 2-block flow on 3 scales and checks the round trip.
#include <validflow/validflow.hpp>

#include <iostream>

int main() {
  using namespace validflow;
  const std::vector<int64_t> channels{8, 8, 8};
  using Block = FlowSequence<ChannelShuffle, ParallelAffineCoupling<ConvSubnet>>;
  FlowStack flow;
  for (uint32_t k = 0; k < 2; ++k) {
    flow->push_back(
        Block(ChannelShuffleOptions(channels).seed(k),
              ParallelAffineCoupling<ConvSubnet>::Impl::Options(channels, ConvSubnetOptions().hidden_channels(16))));
  }
  TensorList x{torch::randn({2, 8, 8, 8}), torch::randn({2, 8, 4, 4}), torch::randn({2, 8, 2, 2})};
  auto [z, log_det] = flow->forward(x);
  auto back = flow->inverse(z).tensors;
  double error = 0;
  for (size_t s = 0; s < x.size(); ++s) error = std::max(error, (back[s] - x[s]).abs().max().item<double>());
  if (error > 1e-5 || log_det.size(0) != 2) return 1;
  std::cout << "validflow " << version_string << " consumer OK (round-trip error " << error << ")\n";
  return 0;
}
