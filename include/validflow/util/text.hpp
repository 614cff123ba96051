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

/// Whether `s` is valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
inline bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = p[i];
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t min_of_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of_length[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

/// A file name as text for JSON and CSV, losslessly: valid UTF-8 is returned as it is; otherwise every byte that
/// is not part of a valid UTF-8 sequence becomes `\xNN` and every backslash `\\` (so the bytes can be recovered;
/// the callers mark such names as escaped).
inline std::string escape_non_utf8(const std::string& s) {
  if (is_valid_utf8(s)) return s;
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len > 1 && i + len <= s.size() && is_valid_utf8(s.substr(i, len))) {
      out += s.substr(i, len);
      i += len;
    } else if (c == '\\') {
      out += "\\\\";
      ++i;
    } else if (len == 1) {
      out += static_cast<char>(c);
      ++i;
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
      ++i;
    }
  }
  return out;
}

}  // namespace validflow
