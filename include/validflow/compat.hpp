#pragma once
// LibTorch version switches. Built on TORCH_VERSION_MAJOR/MINOR only: Debian's 1.13.1 reports 1.13.0.
#include <torch/version.h>

#define VALIDFLOW_TORCH_VERSION_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
