#error "validflow/detector.hpp must not include <torch/torch.h>"
