#pragma once
// Umbrella header of the features part: native EfficientNet backbones, weight import, TorchScript
// backbones and the multi-scale extractor of CS-Flow / ValidFlow. See docs/features.md.
#include <validflow/features/backbone.hpp>
#include <validflow/features/efficientnet.hpp>
#include <validflow/features/extractor.hpp>
#include <validflow/features/imagenet_classes.hpp>
#include <validflow/features/info.hpp>
#include <validflow/features/torchscript_backbone.hpp>
#include <validflow/features/weights.hpp>
