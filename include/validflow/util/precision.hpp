#pragma once
// Inference precisions by name, without LibTorch (the detector facade and the Triton backend take them): the
// enum, its names, and UnsupportedPrecision. What each precision does is in models/precision.hpp.
#include <validflow/util/error.hpp>

#include <stdexcept>
#include <string>

namespace validflow {

enum class Precision { Float32, BFloat16, Float16 };

/// Thrown when a precision is not available for a device (fp16 on CPU) or a name is unknown.
class UnsupportedPrecision : public ErrorOf<std::invalid_argument, ErrorKind::unsupported> {
 public:
  using ErrorOf::ErrorOf;
};

inline std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::BFloat16:
      return "bf16";
    case Precision::Float16:
      return "fp16";
    case Precision::Float32:
      break;
  }
  return "fp32";
}

/// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16"/"half".
inline Precision parse_precision(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "float") return Precision::Float32;
  if (name == "bf16" || name == "bfloat16") return Precision::BFloat16;
  if (name == "fp16" || name == "float16" || name == "half") return Precision::Float16;
  throw UnsupportedPrecision("unknown precision '" + name + "' (expected fp32, bf16 or fp16)");
}

}  // namespace validflow
