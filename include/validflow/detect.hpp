#pragma once
// A trained detector as one file and the API that runs it: model files, decision rules, validflow::Detector.
#include <validflow/detect/decision.hpp>
#include <validflow/detect/detector.hpp>
#include <validflow/detect/model_file.hpp>
