#pragma once
// Helpers shared by the test files.
#include <filesystem>
#include <string>

#include <unistd.h>

namespace validflow::test {

/// A fresh folder under the system's temp folder (unique per process, name and instance), removed with
/// everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name = "tmp")
      : path(std::filesystem::temp_directory_path() /
             ("validflow_test_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string str() const { return path.string(); }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
};

}  // namespace validflow::test
