#pragma once
// The error types of files: every file that cannot be read, written or trusted raises a FileError whose
// message names the path and the problem; StateDictError when the tensors of a file do not fit a module
// (every missing, unexpected and mismatched key listed).
#include <validflow/util/error.hpp>

#include <stdexcept>
#include <string>

namespace validflow {

class FileError : public ErrorOf<std::runtime_error, ErrorKind::file> {
 public:
  /// `path` may be empty for in-memory data; `message` should already name the path when it is known.
  FileError(const std::string& path, const std::string& message) : ErrorOf(message), path_(path) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class StateDictError : public FileError {
 public:
  using FileError::FileError;
};

}  // namespace validflow
