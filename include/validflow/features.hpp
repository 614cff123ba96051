#pragma once
// Umbrella header of the features part: native EfficientNet backbones, weight import, preprocessing (the one
// resize), the multi-scale extractor of CS-Flow / ValidFlow and its description. See docs/features.md.
// Opt-in, not included here: features/torchscript_backbone.hpp (needs LibTorch's TorchScript runtime),
// features/info.hpp (what `validflow info --backbone` prints), features/imagenet_classes.hpp (class names).
#include <validflow/features/backbone.hpp>
#include <validflow/features/backbone_spec.hpp>
#include <validflow/features/efficientnet.hpp>
#include <validflow/features/extractor.hpp>
#include <validflow/features/preprocess.hpp>
#include <validflow/features/weights.hpp>
