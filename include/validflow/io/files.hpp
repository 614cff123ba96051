#pragma once
// The one file-system helper of validflow: reading a file, atomic writes, replacing a folder as a whole, the one
// temporary naming scheme and the one cleaner.
// - Atomic file writes: the bytes go to a temporary file next to the target (`<target>.tmp.<pid>.<n>`), are
//   flushed to disk, then renamed over the target. A crash, a kill -9 or a full disk therefore never leaves a
//   half-written file under the target's name, and a failed write never replaces a good file.
// - Folders (reports, synthetic datasets, Triton version directories) are staged complete under a temporary
//   name of the same scheme and put in place by replace_directory.
// - Temporary files and staged folders a killed process left behind are recognised by the scheme and their dead
//   pid, and removed by remove_stale_temp_files; nothing else is ever removed.
// No LibTorch needed (the programs' torch-free parts use it too).
#include <validflow/io/errors.hpp>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

namespace validflow::io {

namespace detail {
inline std::string errno_text(int error) { return std::strerror(error); }

/// The pid of a temporary file of ours (`<name>.tmp.<pid>.<n>`), or -1.
inline long temp_file_pid(const std::string& filename) {
  const auto at = filename.rfind(".tmp.");
  if (at == std::string::npos) return -1;
  const auto rest = filename.substr(at + 5);
  const auto dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size()) return -1;
  for (size_t i = 0; i < rest.size(); ++i)
    if (i != dot && !std::isdigit(static_cast<unsigned char>(rest[i]))) return -1;
  try {
    return std::stol(rest.substr(0, dot));
  } catch (const std::exception&) {
    return -1;
  }
}
}  // namespace detail

/// A fresh temporary name next to `path`: `<path>.tmp.<pid>.<n>`, which remove_stale_temp_files recognises
/// once this process is gone (for files, and for folders staged and renamed into place as a whole).
inline std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

/// A hook called by write_file_atomic after a temporary file's bytes are written and flushed, just before the
/// rename (arguments: target, temporary file). Empty by default. The `validflow` program installs one only when
/// its fault-injection variable is set (the kill -9 rows of tests/cli/bad_inputs.py).
inline std::function<void(const std::string&, const std::string&)>& atomic_write_hook() {
  static std::function<void(const std::string&, const std::string&)> hook;
  return hook;
}

/// The bytes of a regular file. Throws FileError naming the path when it is missing, not a regular file (a
/// folder, a device), unreadable, or fails while being read.
inline std::string read_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw FileError(path, "'" + path + "' not found");
  if (fs::is_directory(path, ec)) throw FileError(path, "'" + path + "' is a directory, not a file");
  if (!fs::is_regular_file(path, ec)) throw FileError(path, "'" + path + "' is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot open '" + path + "' (permission denied?)");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(path, "error while reading '" + path + "'");
  return bytes;
}

/// Writes `bytes` to `path` atomically (see the top of this file); creates parent folders. Throws FileError.
inline void write_file_atomic(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw FileError(path, "cannot create folder " + target.parent_path().string() + ": " + ec.message());
  }
  if (fs::is_directory(target, ec)) throw FileError(path, "cannot write " + path + ": it is a directory");
  const std::string tmp = temp_path_for(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError(path, "cannot write " + path + ": " + detail::errno_text(errno));
  auto fail = [&](const std::string& what, int error) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw FileError(path, what + " " + path + ": " + detail::errno_text(error));
  };
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed for", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot flush", errno);
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw FileError(path, "cannot close " + path + ": " + detail::errno_text(error));
  }
  if (atomic_write_hook()) atomic_write_hook()(path, tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw FileError(path, "cannot rename " + tmp + " to " + path + ": " + detail::errno_text(error));
  }
}

/// Removes the temporary files and staged folders (`*.tmp.<pid>.<n>`) in `folder` whose writing process no
/// longer exists (a run killed while writing). Those of running processes are kept. Symbolic links are never
/// followed or removed. Returns the removed paths; never throws.
inline std::vector<std::string> remove_stale_temp_files(const std::string& folder) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed, stale;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_symlink(type_ec) || (!it->is_regular_file(type_ec) && !it->is_directory(type_ec))) continue;
    const long pid = detail::temp_file_pid(it->path().filename().string());
    if (pid <= 0) continue;
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    stale.push_back(it->path().string());
  }
  for (const auto& path : stale) {
    std::error_code rm_ec;
    if (fs::remove_all(path, rm_ec) > 0 && !rm_ec) removed.push_back(path);
  }
  return removed;
}

/// Puts the complete folder `staging` in the place of `target`. When `target` exists, the two are exchanged in
/// one step where the kernel can (Linux renameat2 RENAME_EXCHANGE: `target` is never missing); elsewhere the old
/// one is first moved aside under a temporary name (a moment without `target`) and put back if the rename fails.
/// The replaced folder is removed afterwards. Throws FileError naming `target`; on failure `target` is as it was
/// and `staging` is left for the caller to remove.
inline void replace_directory(const std::string& staging, const std::string& target) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(staging, ec)))
    throw FileError(target, "cannot replace " + target + ": the staged folder " + staging + " is not there");
  if (!fs::exists(fs::symlink_status(target, ec))) {
    fs::rename(staging, target, ec);
    if (ec) throw FileError(target, "cannot rename " + staging + " to " + target + ": " + ec.message());
    return;
  }
#if defined(__linux__) && defined(RENAME_EXCHANGE)
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staging, ec);  // now the replaced folder
    return;
  }
#endif
  const std::string old = temp_path_for(target);
  fs::rename(target, old, ec);
  if (ec) throw FileError(target, "cannot replace " + target + ": " + ec.message());
  fs::rename(staging, target, ec);
  if (ec) {
    const auto why = ec.message();
    fs::rename(old, target, ec);  // put the previous one back
    throw FileError(target, "cannot rename " + staging + " to " + target + ": " + why);
  }
  fs::remove_all(old, ec);
}

}  // namespace validflow::io
