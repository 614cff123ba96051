#pragma once
// The single source of the library version; CMake parses these three lines.
#define VALIDFLOW_VERSION_MAJOR 0
#define VALIDFLOW_VERSION_MINOR 2
#define VALIDFLOW_VERSION_PATCH 0

#define VALIDFLOW_VERSION_AT_LEAST(major, minor, patch)                                           \
  ((VALIDFLOW_VERSION_MAJOR * 10000 + VALIDFLOW_VERSION_MINOR * 100 + VALIDFLOW_VERSION_PATCH) >= \
   ((major)*10000 + (minor)*100 + (patch)))

#define VALIDFLOW_DETAIL_STR(x) #x
#define VALIDFLOW_DETAIL_VERSION(major, minor, patch) \
  VALIDFLOW_DETAIL_STR(major) "." VALIDFLOW_DETAIL_STR(minor) "." VALIDFLOW_DETAIL_STR(patch)

namespace validflow {
/// "MAJOR.MINOR.PATCH", made from the three numbers above (the version is written once).
inline constexpr const char* version_string =
    VALIDFLOW_DETAIL_VERSION(VALIDFLOW_VERSION_MAJOR, VALIDFLOW_VERSION_MINOR, VALIDFLOW_VERSION_PATCH);
}  // namespace validflow
