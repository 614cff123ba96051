#pragma once
// The one reader of validflow's own archives (model files, checkpoints, feature caches): the kind check, named
// metadata, tensors by prefix, "every tensor used", "every tensor finite", and the translation of whatever a
// loader's checks throw into one FileError that names the file. The three loaders say only what is theirs.
#include <validflow/io/errors.hpp>
#include <validflow/io/named_tensors.hpp>
#include <validflow/io/tensor_archive.hpp>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <set>
#include <string>

namespace validflow::io {

class ArchiveReader {
 public:
  /// Refuses an archive of another kind or of a newer version. `what` names the file in errors ("model file").
  ArchiveReader(const TensorArchive& archive, std::string path, std::string what, const std::string& kind,
                int64_t max_kind_version)
      : archive_(archive), path_(std::move(path)), what_(std::move(what)) {
    check_archive_kind(archive_, path_, kind, max_kind_version);
  }

  const TensorArchive& archive() const { return archive_; }
  const nlohmann::json& meta() const { return archive_.meta; }

  /// The error of this file: "<what> '<path>': <why>".
  FileError refuse(const std::string& why) const { return FileError(path_, what_ + " '" + path_ + "': " + why); }

  /// A metadata field as T; a missing or mistyped one is refused by name.
  template <typename T>
  T meta(const std::string& key) const {
    const auto it = archive_.meta.find(key);
    if (it == archive_.meta.end()) throw refuse("missing metadata field '" + key + "'");
    try {
      return it->template get<T>();
    } catch (const nlohmann::json::exception&) {
      throw refuse("metadata field '" + key + "' has the wrong type");
    }
  }

  /// The tensors whose names start with `prefix` (prefix removed, in file order, `source` this file); they count
  /// as used.
  NamedTensors tensors(const std::string& prefix) const {
    NamedTensors out;
    out.source = path_;
    for (const auto& [name, t] : archive_.tensors) {
      if (name.rfind(prefix, 0) != 0) continue;
      out.emplace_back(name.substr(prefix.size()), t);
      used_.insert(name);
    }
    return out;
  }

  /// Refuses the file if a tensor was not taken by tensors(prefix): `expected` says what the file may hold.
  void check_every_tensor_used(const std::string& expected) const {
    for (const auto& entry : archive_.tensors)
      if (!used_.count(entry.first)) throw refuse("holds tensor '" + entry.first + "' outside " + expected);
  }

  /// Refuses the file if a floating-point tensor holds NaN or Inf (validflow never writes one).
  void check_every_tensor_finite() const {
    for (const auto& [key, tensor] : archive_.tensors)
      if (tensor.is_floating_point() && !torch::isfinite(tensor).all().item<bool>())
        throw refuse("tensor '" + key + "' holds NaN or Inf values");
  }

  /// Runs a loader's checks and turns what they throw into one FileError of this file: malformed metadata, a
  /// description out of range (FlowConfigError, FeatureError, a decision rule), tensors that do not fit
  /// (StateDictError), a LibTorch check. A FileError of this file passes unchanged.
  template <typename Read>
  auto translate_errors(Read&& read) const -> decltype(read()) {
    try {
      return read();
    } catch (const nlohmann::json::exception& e) {
      throw refuse(std::string("invalid metadata: ") + e.what());
    } catch (const StateDictError& e) {
      throw refuse(e.what());
    } catch (const FileError&) {
      throw;
    } catch (const std::invalid_argument& e) {
      throw refuse(e.what());
    } catch (const c10::Error& e) {
      throw refuse(e.what_without_backtrace());
    }
  }

 private:
  const TensorArchive& archive_;
  std::string path_;
  std::string what_;
  mutable std::set<std::string> used_;
};

}  // namespace validflow::io
