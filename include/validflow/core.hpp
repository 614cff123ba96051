#pragma once
// The core flow library: contract, layers and composition.
#include <validflow/core/actnorm.hpp>
#include <validflow/core/affine_coupling.hpp>
#include <validflow/core/channel_shuffle.hpp>
#include <validflow/core/flow.hpp>
#include <validflow/core/numpy_permutation.hpp>
#include <validflow/core/sequence.hpp>
#include <validflow/core/soft_clamp.hpp>
#include <validflow/core/subnet.hpp>
