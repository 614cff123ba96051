#pragma once
// Small text helpers shared by the library and the programs (no LibTorch needed).
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>

namespace validflow {

/// ASCII lower case.
inline std::string to_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// An integer with thousands separators: 17543204 -> "17,543,204".
inline std::string group_thousands(int64_t v) {
  const std::string s = std::to_string(v);
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && s[i - 1] != '-' && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

/// A CSV field (RFC 4180), quoted when it holds a separator, a quote or a line break; quotes doubled.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char c : s) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace validflow
