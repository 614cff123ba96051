#pragma once
// Atomic file writes of the `validflow` program: a temporary file next to the target, then rename, so a crash
// or a full disk never leaves a half-written report, feature cache or checkpoint behind.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include <unistd.h>

namespace validflow {
namespace app {

/// A file that could not be written; the message names the path.
class FileWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Writes bytes to path atomically: a temporary file next to it, then rename. Creates parent folders.
inline void write_file_atomic(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  static std::atomic<unsigned> counter{0};
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw FileWriteError("cannot create folder " + target.parent_path().string() + ": " + ec.message());
  }
  const fs::path tmp = target.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw FileWriteError("cannot write " + tmp.string() + " (for " + path + ")");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      throw FileWriteError("write failed for " + path);
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove(tmp, ec2);
    throw FileWriteError("cannot rename " + tmp.string() + " to " + path + ": " + ec.message());
  }
}

}  // namespace app
}  // namespace validflow
