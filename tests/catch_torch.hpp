#pragma once
// Include torch before Catch2: Debian's LibTorch pulls in glog, whose CHECK macro would replace Catch's.
#include <torch/torch.h>
#ifdef CHECK
#undef CHECK
#endif
#include <catch2/catch.hpp>
