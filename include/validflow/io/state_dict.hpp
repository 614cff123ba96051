#pragma once
// PyTorch state dicts: the one reader and writer of `torch.save` files (zip format, PyTorch >= 1.6) and the one
// strict loader into a module. Used for weights that come from Python (EfficientNet backbones, the official
// CS-Flow, the golden parity files); validflow's own files use io/tensor_archive.hpp instead.
//
//  * read_state_dict / write_state_dict: an ordered {name -> tensor} map <-> file. A top-level
//    {"state_dict": ...} or {"model": ...} wrapper is unwrapped, nested dicts are flattened with ".". Files in
//    the legacy (pre-1.6) pickle format are refused with the command that converts them.
//  * load_state_dict: strict copy into any torch::nn::Module: every parameter and buffer present with the same
//    shape, no unknown key unless declared ignorable. A `rename` function maps the module's keys to the file's
//    (how foreign layouts, torchvision's or the official CS-Flow's, are imported). Every problem is listed by
//    key (missing, unexpected, shape mismatches with both shapes) in one StateDictError.
#include <validflow/io/errors.hpp>
#include <validflow/io/files.hpp>
#include <validflow/io/named_tensors.hpp>
#include <validflow/io/pickle_check.hpp>
#include <validflow/io/tensor_archive.hpp>
#include <validflow/io/zip_check.hpp>
#include <validflow/util/modules.hpp>
#include <validflow/util/state_invariants.hpp>

#include <caffe2/serialize/versions.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace validflow {

/// A state dict is named tensors: the one container (io/named_tensors.hpp) of state dicts and archive entries.
using StateDict = NamedTensors;

namespace detail {

/// A tensor that LibTorch's unpickler built must lie inside its storage: the unpickler (1.13) sets a tensor's
/// sizes, strides and offset from the file without checking them against the storage's bytes, so a crafted
/// file could make a later read run past the buffer. Refused here, before any value is read.
inline void check_tensor_in_storage(const torch::Tensor& t, const std::string& key, const std::string& path) {
  const auto bad = [&](const std::string& why) {
    return StateDictError(path, "entry '" + key + "' of '" + path + "' " + why);
  };
  if (t.is_sparse() || t.is_quantized() || t.is_mkldnn() || !t.has_storage())
    throw bad("is not a dense tensor with storage");
  if (t.storage_offset() < 0) throw bad("has a negative storage offset");
  int64_t last = t.storage_offset();  // the largest element index the view touches
  bool empty = false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) < 0 || t.stride(d) < 0) throw bad("has a negative size or stride");
    if (t.size(d) == 0) empty = true;
  }
  if (!empty) {
    for (int64_t d = 0; d < t.dim(); ++d) {
      const auto extent = static_cast<__int128>(t.size(d) - 1) * t.stride(d);
      if (extent > std::numeric_limits<int64_t>::max() - last) throw bad("describes an impossibly large view");
      last += static_cast<int64_t>(extent);
    }
    const auto needed = (static_cast<__int128>(last) + 1) * static_cast<__int128>(t.element_size());
    if (needed > static_cast<__int128>(t.storage().nbytes()))
      throw bad("views " + std::to_string(static_cast<long long>(needed)) + " bytes of a storage of " +
                std::to_string(t.storage().nbytes()) + " (a corrupt or crafted file)");
  }
}

/// Nested dicts deeper than this are refused (flatten_state recurses).
constexpr int kMaxStateDictDepth = 32;

inline void flatten_state(const c10::IValue& value, const std::string& prefix, StateDict& out, const std::string& path,
                          int depth = 0) {
  if (value.isTensor()) {
    check_tensor_in_storage(value.toTensor(), prefix, path);
    out.emplace_back(prefix, value.toTensor());
    return;
  }
  if (value.isGenericDict()) {
    if (depth >= kMaxStateDictDepth)
      throw StateDictError(path, "'" + path + "' nests dicts deeper than " + std::to_string(kMaxStateDictDepth));
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString())
        throw StateDictError(path, "'" + path + "' has a non-string key under '" + prefix + "'");
      const std::string key = entry.key().toStringRef();
      flatten_state(entry.value(), prefix.empty() ? key : prefix + "." + key, out, path, depth + 1);
    }
    return;
  }
  throw StateDictError(path, "entry '" + prefix + "' of '" + path + "' is a " + value.tagKind() + ", not a tensor");
}

}  // namespace detail

/// The layout LibTorch's zip reader (caffe2::serialize::PyTorchStreamReader) requires, checked before it runs:
/// its constructor throws without freeing the zip reader's state (a leak in LibTorch 1.13, found by fuzzing) when
/// the first entry is not inside a folder, or that folder's `version` record is missing, not a number or outside
/// the versions LibTorch reads. Then the pickle (`data.pkl`) against the tensor records (io/pickle_check.hpp).
/// Throws FileError naming the path.
inline void check_torch_save_layout(const std::vector<io::ZipEntry>& entries, std::string_view bytes,
                                    const std::string& path) {
  auto refuse = [&](const std::string& why) {
    return FileError(path, "'" + path + "' is not a valid torch.save zip file: " + why);
  };
  const auto slash = entries.front().name.find('/');
  if (slash == std::string::npos || slash == 0) throw refuse("its first entry is not inside a folder");
  const std::string folder = entries.front().name.substr(0, slash + 1);
  const io::ZipEntry* version = nullptr;
  for (const char* name : {".data/version", "version"})
    for (const auto& e : entries)
      if (!version && e.name == folder + name) version = &e;
  if (!version) throw refuse("no " + folder + "version record");
  std::string text(bytes.substr(static_cast<size_t>(version->data_offset), static_cast<size_t>(version->size)));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  const bool digits = !text.empty() && text.size() <= 4 && text.find_first_not_of("0123456789") == std::string::npos;
  const uint64_t v = digits ? std::stoull(text) : 0;
  if (v < caffe2::serialize::kMinSupportedFileFormatVersion || v > caffe2::serialize::kMaxSupportedFileFormatVersion)
    throw refuse("format version '" + text.substr(0, 16) + "' (LibTorch reads " +
                 std::to_string(caffe2::serialize::kMinSupportedFileFormatVersion) + ".." +
                 std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion) + ")");
  // The pickle, against the records it names (io/pickle_check.hpp).
  std::map<std::string, uint64_t> records;
  const io::ZipEntry* pickle = nullptr;
  for (const auto& e : entries) {
    records.emplace(e.name, e.size);
    if (e.name == folder + "data.pkl") pickle = &e;
  }
  if (!pickle) throw refuse("no " + folder + "data.pkl record");
  io::check_torch_pickle(bytes.substr(static_cast<size_t>(pickle->data_offset), static_cast<size_t>(pickle->size)),
                         folder, records, path);
}

/// Parses the bytes of a `torch.save`d dict of tensors (see the top of this file); `path` names the source in
/// messages. The zip structure and every entry's CRC-32 are checked first (io/zip_check.hpp): LibTorch's reader
/// only sees files whose every byte is verified. Throws FileError / StateDictError naming the path.
inline StateDict parse_state_dict(const std::vector<char>& bytes, const std::string& path) {
  if (bytes.empty()) throw FileError(path, "'" + path + "' is empty");
  // The legacy format starts with a pickled magic number: PROTO 2, LONG1 (0x80 0x02 0x8a 0x0a).
  if (bytes.size() >= 4 && static_cast<unsigned char>(bytes[0]) == 0x80 && static_cast<unsigned char>(bytes[2]) == 0x8a)
    throw FileError(path, "'" + path +
                              "' is in PyTorch's legacy (pre-1.6) serialization format, which LibTorch cannot read; "
                              "convert it once with: python3 tools/export_backbone.py convert '" +
                              path + "' OUT.pt");
  if (bytes.size() < 4 || bytes[0] != 'P' || bytes[1] != 'K') {
    if (io::has_archive_magic(std::string_view(bytes.data(), bytes.size())))
      throw FileError(path,
                      "'" + path + "' is a validflow file (model, checkpoint or features), not a torch.save file");
    throw FileError(path, "'" + path + "' is not a torch.save zip archive");
  }
  const std::string_view view(bytes.data(), bytes.size());
  check_torch_save_layout(io::check_zip(view, path), view, path);
  static const char* const unpickle_hint =
      " (its bytes are intact: every zip entry passed its CRC check, so it holds what LibTorch cannot unpickle; "
      "LibTorch reads flat dicts of tensors, and a file Python saved with other objects or a nested dict such as "
      "{'state_dict': ...} may use a pickle opcode LibTorch 1.13 lacks: if it holds tensors, re-save it with "
      "python3 tools/export_backbone.py convert IN OUT)";
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    // LibTorch 2.x's unpickler checks views against their storage itself (1.13 does not: check_tensor_in_storage).
    const std::string what = e.what_without_backtrace();
    const bool past_storage = what.find("require a storage") != std::string::npos;
    throw FileError(
        path, "cannot read '" + path + "': " + what +
                  (past_storage ? " (a tensor views past its storage: a corrupt or crafted file)" : unpickle_hint));
  } catch (const std::exception& e) {
    throw FileError(path, "cannot read '" + path + "': " + e.what() + unpickle_hint);
  }
  if (!value.isGenericDict())
    throw FileError(path, "'" + path + "' holds a " + value.tagKind() + ", expected a dict of tensors (a state_dict)");
  auto dict = value.toGenericDict();
  for (const char* wrapper : {"state_dict", "model"}) {
    if (dict.size() == 1 && dict.begin()->key().isString() && dict.begin()->key().toStringRef() == wrapper &&
        dict.begin()->value().isGenericDict()) {
      value = dict.begin()->value();
      dict = value.toGenericDict();
    }
  }
  StateDict out;
  out.source = path;
  detail::flatten_state(value, "", out, path);
  return out;
}

/// Reads a `torch.save`d dict of tensors (parse_state_dict of the file's bytes). Throws FileError /
/// StateDictError naming the path.
inline StateDict read_state_dict(const std::string& path) {
  const auto text = io::read_file_bytes(path);
  return parse_state_dict(std::vector<char>(text.begin(), text.end()), path);
}

/// Writes a state dict as a zip archive that Python's `torch.load` and read_state_dict read, atomically.
inline void write_state_dict(const StateDict& state, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [key, tensor] : state) dict.insert(key, tensor.detach().cpu().contiguous());
  const auto bytes = torch::pickle_save(c10::IValue(dict));
  io::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
}

/// The module's parameters and buffers as a state dict (its own key names).
inline StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

/// What a load did.
struct LoadReport {
  std::size_t loaded = 0;            ///< tensors copied into the module
  std::vector<std::string> skipped;  ///< file keys declared ignorable (e.g. blocks cut off by truncation)
};

/// Strict load (see the top of this file). `rename` maps a module key to its key in the file (identity if
/// empty); it returns "" for module entries the file does not provide (they keep their values, e.g. buffers
/// that a layout regenerates). `ignorable` says which file keys the module may lack. Values are converted to
/// the module's dtype. Nothing is copied unless everything fits.
inline LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state,
                                  const std::function<std::string(const std::string&)>& rename = {},
                                  const std::function<bool(const std::string&)>& ignorable = {}) {
  std::vector<std::string> missing, mismatched, unexpected;
  std::vector<std::pair<torch::Tensor, const torch::Tensor*>> copies;
  std::map<std::string, bool> used;
  for (const auto& [own_key, target] : module_state_dict(module)) {
    if (!target.defined()) continue;
    const std::string key = rename ? rename(own_key) : own_key;
    if (key.empty()) continue;
    const auto* source = state.find(key);
    if (!source) {
      missing.push_back(key);
      continue;
    }
    used[key] = true;
    if (source->sizes() != target.sizes()) {
      mismatched.push_back(key + ": file " + detail::shape_string(source->sizes()) + " vs model " +
                           detail::shape_string(target.sizes()));
      continue;
    }
    if (source->is_floating_point() != target.is_floating_point() ||
        (source->scalar_type() == torch::kBool) != (target.scalar_type() == torch::kBool)) {
      mismatched.push_back(key + ": file dtype " + std::string(c10::toString(source->scalar_type())) + " vs model " +
                           c10::toString(target.scalar_type()));
      continue;
    }
    copies.emplace_back(target, source);
  }
  LoadReport report;
  for (const auto& [key, tensor] : state) {
    if (used.count(key)) continue;
    if (ignorable && ignorable(key))
      report.skipped.push_back(key);
    else
      unexpected.push_back(key);
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream m;
    m << "the tensors" << (state.source.empty() ? "" : " of '" + state.source + "'") << " do not fit " << module.name()
      << ":";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      m << " " << keys.size() << " " << what << " (";
      for (std::size_t i = 0; i < keys.size() && i < 8; ++i) m << (i ? ", " : "") << keys[i];
      if (keys.size() > 8) m << ", ... " << keys.size() - 8 << " more";
      m << ");";
    };
    list("missing key(s)", missing);
    list("unexpected key(s)", unexpected);
    list("mismatch(es)", mismatched);
    throw StateDictError(state.source, m.str());
  }
  // Buffers first: the layers' invariants (util/state_invariants.hpp) are over buffers, so a state that breaks one is
  // refused with the module's buffers restored and no parameter touched.
  torch::NoGradGuard no_grad;
  std::set<const void*> buffers;
  for (const auto& b : module.named_buffers(/*recurse=*/true)) buffers.insert(b.value().unsafeGetTensorImpl());
  std::vector<std::pair<torch::Tensor, torch::Tensor>> previous;  // buffer, its value before the load
  for (auto& [target, source] : copies) {
    if (!buffers.count(target.unsafeGetTensorImpl())) continue;
    previous.emplace_back(target, target.clone());
    auto t = target;
    t.copy_(*source);
  }
  try {
    check_state_invariants(module);
  } catch (const std::invalid_argument& e) {
    for (auto& [buffer, value] : previous) buffer.copy_(value);
    throw StateDictError(state.source, std::string("the tensors") +
                                           (state.source.empty() ? "" : " of '" + state.source + "'") +
                                           " break an invariant of " + module.name() + ": " + e.what());
  }
  for (auto& [target, source] : copies) {
    if (buffers.count(target.unsafeGetTensorImpl())) continue;
    auto t = target;
    t.copy_(*source);
  }
  report.loaded = copies.size();
  return report;
}

}  // namespace validflow
