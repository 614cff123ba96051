#pragma once
// Subnets and model compositions: CS-Flow and ValidFlow, their description (FlowConfig), losses, scores and
// maps, reduced precision, official CS-Flow import. Opt-in, not included here: models/csflow_golden.hpp (the
// parity check against reference outputs, for tests and `validflow check-csflow`).
#include <validflow/models/csflow.hpp>
#include <validflow/models/csflow_import.hpp>
#include <validflow/models/flow_config.hpp>
#include <validflow/models/maps.hpp>
#include <validflow/models/objectives.hpp>
#include <validflow/models/precision.hpp>
#include <validflow/models/scoring.hpp>
#include <validflow/models/validflow_model.hpp>
#include <validflow/subnets/cbam.hpp>
#include <validflow/subnets/conv_subnet.hpp>
#include <validflow/subnets/cross_convolutions.hpp>
#include <validflow/subnets/subnet_r1.hpp>
