#pragma once
// The single source of the library version; CMake parses these three lines.
#define VALIDFLOW_VERSION_MAJOR 0
#define VALIDFLOW_VERSION_MINOR 2
#define VALIDFLOW_VERSION_PATCH 0

#define VALIDFLOW_VERSION_AT_LEAST(major, minor, patch)                                           \
  ((VALIDFLOW_VERSION_MAJOR * 10000 + VALIDFLOW_VERSION_MINOR * 100 + VALIDFLOW_VERSION_PATCH) >= \
   ((major)*10000 + (minor)*100 + (patch)))

namespace validflow {
inline constexpr const char* version_string = "0.2.0";
}  // namespace validflow
