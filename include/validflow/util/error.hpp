#pragma once
// One error root. Every error the library and its programs throw carries a validflow::Error (its kind) while
// keeping its standard base (std::invalid_argument, std::runtime_error), so `catch (const std::invalid_argument&)`
// and `catch (const validflow::Error&)` both work. error_kind() is the one classification: the CLI turns a kind
// into an exit code, the Triton backend into a Triton error code (docs/architecture.md, "Errors: one policy").
// Needs only c10's exception header (LibTorch's own checks are c10::Error; ~0.6 s to compile), not <torch/torch.h>.
#include <c10/util/Exception.h>

#include <exception>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>

namespace validflow {

/// What went wrong, from the caller's point of view.
enum class ErrorKind {
  input,        ///< a tensor, image or value given to a call: shape, dtype, device, NaN, a non-finite threshold
  config,       ///< an option or a description by data (flow config, backbone spec, decision rule) out of range
  file,         ///< a file missing, unreadable, corrupt, of another kind or version, or not fitting the model
  unsupported,  ///< valid, but not on this machine or build (bf16 without AVX512_BF16, CUDA absent)
  internal,     ///< a bug: anything unexpected
};

inline const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::input:
      return "input";
    case ErrorKind::config:
      return "config";
    case ErrorKind::file:
      return "file";
    case ErrorKind::unsupported:
      return "unsupported";
    case ErrorKind::internal:
      return "internal";
  }
  return "internal";
}

/// The root every validflow error type carries besides its standard base. Not derived from std::exception:
/// the standard base of the concrete type is the one std::exception (no ambiguous what()).
class Error {
 public:
  virtual ~Error() = default;
  virtual ErrorKind kind() const noexcept = 0;
};

/// An error type with a fixed kind on a standard base: `class FileError : public ErrorOf<std::runtime_error,
/// ErrorKind::file>`.
template <typename StdBase, ErrorKind Kind>
class ErrorOf : public StdBase, public Error {
 public:
  using StdBase::StdBase;
  ErrorKind kind() const noexcept override { return Kind; }
};

/// The one classification of an exception: a validflow::Error says its kind; LibTorch's checks (TORCH_CHECK in a
/// module's reset(), a bad value that reached an operator) are config; the standard library's argument errors
/// are input; a file-system error (a path that is a file where a folder is needed, under /proc, a symbolic-link
/// loop, permission denied) is file: it names the user's path; out of memory is unsupported (too large for this
/// machine); everything else is internal.
inline ErrorKind error_kind(const std::exception& e) noexcept {
  if (const auto* ours = dynamic_cast<const Error*>(&e)) return ours->kind();
  if (dynamic_cast<const std::filesystem::filesystem_error*>(&e)) return ErrorKind::file;
  if (dynamic_cast<const c10::Error*>(&e)) return ErrorKind::config;
  if (dynamic_cast<const std::bad_alloc*>(&e)) return ErrorKind::unsupported;
  if (dynamic_cast<const std::invalid_argument*>(&e) || dynamic_cast<const std::out_of_range*>(&e) ||
      dynamic_cast<const std::domain_error*>(&e) || dynamic_cast<const std::length_error*>(&e))
    return ErrorKind::input;
  return ErrorKind::internal;
}

/// The message of an exception as one line for a person: LibTorch's messages lose their C++ backtrace, out of
/// memory says so, and only the first line is kept.
inline std::string error_message(const std::exception& e) {
  std::string message = e.what();
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) message = c10->what_without_backtrace();
  if (dynamic_cast<const std::bad_alloc*>(&e)) message = "out of memory";
  const auto newline = message.find('\n');
  if (newline != std::string::npos) message.resize(newline);
  return message;
}

}  // namespace validflow
