#pragma once
// A trained detector as one file and the API that runs it: model files, decision rules, validflow::TensorDetector
// (header-only, on tensors) and validflow::Detector (its LibTorch-free facade; link validflow::detect).
#include <validflow/detect/decision.hpp>
#include <validflow/detect/heatmap.hpp>
#include <validflow/detect/model_file.hpp>
#include <validflow/detect/tensor_detector.hpp>
#include <validflow/detector.hpp>
