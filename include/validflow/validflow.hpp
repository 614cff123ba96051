#pragma once
// Umbrella header of validflow: everything the library offers (opt-in extras are listed in features.hpp and
// models.hpp).
#include <validflow/compat.hpp>
#include <validflow/core.hpp>
#include <validflow/detect.hpp>
#include <validflow/eval/metrics.hpp>
#include <validflow/features.hpp>
#include <validflow/freia.hpp>
#include <validflow/io.hpp>
#include <validflow/models.hpp>
#include <validflow/runtime.hpp>
#include <validflow/version.hpp>
