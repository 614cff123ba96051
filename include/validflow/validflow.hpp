#pragma once
// Umbrella header of validflow: everything the library offers.
#include <validflow/compat.hpp>
#include <validflow/core.hpp>
#include <validflow/eval/metrics.hpp>
#include <validflow/features.hpp>
#include <validflow/models.hpp>
#include <validflow/version.hpp>
