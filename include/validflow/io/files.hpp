#pragma once
// The one file-system helper of validflow: reading a file, atomic writes, replacing a folder as a whole, the one
// temporary naming scheme and the one cleaner.
// - Atomic file writes: the bytes go to a temporary file next to the target (`<target>.validflow-tmp.<pid>.<n>`),
//   are flushed to disk, then renamed over the target. A crash, a kill -9 or a full disk therefore never leaves a
//   half-written file under the target's name, and a failed write never replaces a good file.
// - Folders (reports, predictions, synthetic datasets, Triton version directories) are staged complete under a
//   temporary name of the same scheme, made by make_staging_directory (which puts the marker file
//   `.validflow-owned` inside), and put in place by replace_directory; the marker stays, so a later run knows the
//   folder is its own to replace.
// - Only what validflow wrote is ever removed: remove_stale_temp_files(folder, outputs) removes the temporary
//   files `<output>.validflow-tmp.<pid>.<n>` of the given outputs whose process is gone (regular files only) and
//   staged folders of that name that hold the marker; nothing else, no symbolic link, no other name.
// No LibTorch needed (the programs' torch-free parts use it too).
#include <validflow/io/errors.hpp>

#include <algorithm>
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

/// The marker of validflow's temporary names: `<name>.validflow-tmp.<pid>.<n>`.
constexpr const char* kTempMarker = ".validflow-tmp.";
/// The file inside every folder validflow stages (and so in every folder it put in place as a whole).
constexpr const char* kOwnedFolderMarker = ".validflow-owned";

namespace detail {
inline std::string errno_text(int error) { return std::strerror(error); }

/// The pid of one temporary suffix (`<base>.validflow-tmp.<pid>.<n>`) with `base` set, or -1.
inline long strip_temp_suffix(const std::string& filename, std::string& base) {
  const std::string marker = kTempMarker;
  const auto at = filename.rfind(marker);
  if (at == std::string::npos || at == 0) return -1;
  const auto rest = filename.substr(at + marker.size());
  const auto dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size() || dot > 10 || rest.size() - dot > 11) return -1;
  for (size_t i = 0; i < rest.size(); ++i)
    if (i != dot && !std::isdigit(static_cast<unsigned char>(rest[i]))) return -1;
  base = filename.substr(0, at);
  return std::stol(rest.substr(0, dot));  // at most 10 digits: fits a long
}

/// The pid of a temporary name of ours, or -1, with `base` the output it belongs to. The suffix may repeat: the
/// atomic write of a staged file (`model.vfm.validflow-tmp.P.0`) is `model.vfm.validflow-tmp.P.0.validflow-tmp.P.1`.
inline long temp_file_pid(const std::string& filename, std::string* base = nullptr) {
  std::string name = filename, shorter;
  long pid = strip_temp_suffix(name, shorter);
  if (pid < 0) return -1;
  while (strip_temp_suffix(shorter, name) >= 0) std::swap(shorter, name);
  if (base) *base = shorter;
  return pid;
}
}  // namespace detail

/// A fresh temporary name next to `path`: `<path>.validflow-tmp.<pid>.<n>`, which remove_stale_temp_files
/// recognises once this process is gone (for files, and for folders made by make_staging_directory).
inline std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + kTempMarker + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

/// Whether `folder` holds validflow's marker (it was staged by make_staging_directory).
inline bool is_owned_directory(const std::string& folder) {
  std::error_code ec;
  const auto marker = std::filesystem::symlink_status(std::filesystem::path(folder) / kOwnedFolderMarker, ec);
  return std::filesystem::is_regular_file(marker);
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
  const auto status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)  // a symbolic-link loop, a folder we may not enter, ...
    throw FileError(path, "cannot read '" + path + "': " + ec.message());
  if (!fs::exists(status)) throw FileError(path, "'" + path + "' not found");
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

/// Creates a fresh staging folder for `target` (temp_path_for, parent folders included) with validflow's marker
/// file inside; returns its path. Throws FileError naming `target`.
inline std::string make_staging_directory(const std::string& target) {
  namespace fs = std::filesystem;
  const std::string staging = temp_path_for(target);
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) throw FileError(target, "cannot create " + staging + ": " + ec.message());
  std::ofstream marker(fs::path(staging) / kOwnedFolderMarker);
  marker << "written by validflow: this folder is replaced as a whole by the command that wrote it\n";
  if (!marker) throw FileError(target, "cannot write in " + staging);
  return staging;
}

/// Removes from `folder` what a killed run of ours left of the `outputs` (file or folder names in `folder`):
/// regular files `<output>.validflow-tmp.<pid>.<n>` and folders of that name holding validflow's marker, whose
/// process no longer exists. Anything else (another name, a live process's file, a link, a folder without the
/// marker) is kept. Returns the removed paths; never throws.
inline std::vector<std::string> remove_stale_temp_files(const std::string& folder,
                                                        const std::vector<std::string>& outputs) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed, stale;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    std::string base;
    const long pid = detail::temp_file_pid(it->path().filename().string(), &base);
    if (pid <= 0 || std::find(outputs.begin(), outputs.end(), base) == outputs.end()) continue;
    std::error_code type_ec;
    const auto status = it->symlink_status(type_ec);
    const bool ours = fs::is_regular_file(status) || (fs::is_directory(status) && is_owned_directory(it->path()));
    if (!ours) continue;
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    stale.push_back(it->path().string());
  }
  for (const auto& path : stale) {
    std::error_code rm_ec;
    if (fs::remove_all(path, rm_ec) > 0 && !rm_ec) removed.push_back(path);
  }
  return removed;
}

/// Whether `a` and `b` are the same file or folder (by device and inode; false when either does not exist).
inline bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  const bool same = std::filesystem::equivalent(a, b, ec);
  return !ec && same;
}

/// Whether `path` is `folder` or lies inside it (by file identity of `path`'s existing ancestors).
inline bool is_within(const std::string& path, const std::string& folder) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::path p = fs::absolute(path, ec); !ec && !p.empty(); p = p.parent_path()) {
    if (same_file(p.string(), folder)) return true;
    if (p == p.parent_path()) break;
  }
  return false;
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
