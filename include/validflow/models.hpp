#pragma once
// Subnets and model compositions: CS-Flow and ValidFlow, losses and scores, official CS-Flow import.
#include <validflow/models/csflow.hpp>
#include <validflow/models/csflow_golden.hpp>
#include <validflow/models/csflow_import.hpp>
#include <validflow/models/flow_config.hpp>
#include <validflow/models/objectives.hpp>
#include <validflow/models/precision.hpp>
#include <validflow/models/scoring.hpp>
#include <validflow/models/validflow_model.hpp>
#include <validflow/subnets/cbam.hpp>
#include <validflow/subnets/conv_subnet.hpp>
#include <validflow/subnets/cross_convolutions.hpp>
#include <validflow/subnets/subnet_r1.hpp>
