#pragma once
// Whole numbers read from the JSON of a file, without undefined behaviour. nlohmann's get<int64_t>() accepts a
// JSON float and converts it with a static_cast, which is undefined for a value out of range (`1e300`, found
// by fuzzing the file loaders under UBSan) and silently truncates `2.5` to 2; get<uint32_t>() of a large value
// wraps. Every integer field of validflow's files (archive headers, flow and backbone descriptions, caches,
// checkpoints) is read through json_integer instead: a JSON integer that fits the target type, else a
// nlohmann::json::type_error / out_of_range, so every loader's existing `catch (json::exception)` names the
// file and the field.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace validflow::io {

/// The value of `j` as an integer of type Int: `j` must be a JSON integer (not a float, not a bool) in Int's
/// range. `field` (e.g. "epoch") is named in the error. Throws nlohmann::json::type_error or out_of_range.
template <typename Int>
Int json_integer(const nlohmann::json& j, const std::string& field = "") {
  const std::string what = field.empty() ? "" : "field '" + field + "': ";
  static_assert(std::is_integral_v<Int> && !std::is_same_v<Int, bool>, "json_integer reads whole numbers");
  if (j.is_number_unsigned()) {
    const auto v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<Int>::max()))
      throw nlohmann::json::out_of_range::create(406, what + "integer " + std::to_string(v) + " is too large", &j);
    return static_cast<Int>(v);
  }
  if (j.is_number_integer()) {  // a signed value (parsed non-negative numbers are number_unsigned)
    const auto v = j.get<int64_t>();
    if constexpr (std::is_unsigned_v<Int>) {
      if (v < 0) throw nlohmann::json::out_of_range::create(406, what + "negative value " + std::to_string(v), &j);
    } else {
      if (v < static_cast<int64_t>(std::numeric_limits<Int>::min()) ||
          v > static_cast<int64_t>(std::numeric_limits<Int>::max()))
        throw nlohmann::json::out_of_range::create(406, what + "integer " + std::to_string(v) + " is out of range", &j);
    }
    return static_cast<Int>(v);
  }
  throw nlohmann::json::type_error::create(302, what + "type must be an integer, but is " + j.type_name(), &j);
}

/// A JSON array of integers (json_integer each). Throws nlohmann::json::type_error or out_of_range.
template <typename Int>
std::vector<Int> json_integers(const nlohmann::json& j, const std::string& field = "") {
  if (!j.is_array())
    throw nlohmann::json::type_error::create(
        302, (field.empty() ? "" : "field '" + field + "': ") + "type must be an array, but is " + j.type_name(), &j);
  std::vector<Int> out;
  out.reserve(j.size());
  for (const auto& v : j) out.push_back(json_integer<Int>(v, field));
  return out;
}

}  // namespace validflow::io
