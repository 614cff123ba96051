#pragma once
// The one container of named tensors: an ordered list of (name, tensor) with lookup by name and unique names.
// A state dict (io/state_dict.hpp) and the tensors of a validflow archive (io/tensor_archive.hpp) are both this.
#include <validflow/io/errors.hpp>

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace validflow {

/// Named tensors in order (file order when read), with lookup by name; names are unique. State dicts
/// (io/state_dict.hpp: `StateDict` is this type) and the tensors of a validflow archive (io/tensor_archive.hpp).
class NamedTensors {
 public:
  using Entry = std::pair<std::string, torch::Tensor>;

  NamedTensors() = default;
  NamedTensors(std::initializer_list<Entry> entries) {
    for (const auto& e : entries) emplace_back(e.first, e.second);
  }

  /// Appends an entry; throws StateDictError on a duplicate key.
  void emplace_back(std::string key, torch::Tensor tensor) {
    if (!index_.emplace(key, entries_.size()).second)
      throw StateDictError(source, "duplicate key '" + key + "'" + where());
    entries_.emplace_back(std::move(key), std::move(tensor));
  }
  bool contains(const std::string& key) const { return index_.count(key) > 0; }
  /// The tensor of `key`, or nullptr.
  const torch::Tensor* find(const std::string& key) const {
    const auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  /// The tensor of `key`; throws StateDictError naming the key and the file.
  const torch::Tensor& at(const std::string& key) const {
    if (const auto* t = find(key)) return *t;
    throw StateDictError(source, "missing key '" + key + "'" + where());
  }
  size_t size() const { return entries_.size(); }
  /// The number of elements of all tensors (what a loader checks against a model's size before building it).
  int64_t element_count() const {
    int64_t n = 0;
    for (const auto& entry : entries_) n += entry.second.numel();
    return n;
  }
  bool empty() const { return entries_.empty(); }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  const Entry& operator[](size_t i) const { return entries_.at(i); }
  /// Replaces the tensor of `key`, or appends it.
  void set(const std::string& key, torch::Tensor tensor) {
    const auto it = index_.find(key);
    if (it == index_.end())
      emplace_back(key, std::move(tensor));
    else
      entries_[it->second].second = std::move(tensor);
  }
  /// Removes `key` if present.
  void erase(const std::string& key) {
    if (!index_.count(key)) return;
    NamedTensors kept;
    kept.source = source;
    for (auto& e : entries_)
      if (e.first != key) kept.emplace_back(e.first, e.second);
    *this = std::move(kept);
  }
  /// Renames every key (e.g. to another layout's names).
  void rename_keys(const std::function<std::string(const std::string&)>& rename) {
    NamedTensors renamed;
    renamed.source = source;
    for (auto& [key, tensor] : entries_) renamed.emplace_back(rename(key), tensor);
    *this = std::move(renamed);
  }

  /// The file it was read from ("" for one built in memory), for messages.
  std::string source;

 private:
  std::string where() const { return source.empty() ? "" : " in '" + source + "'"; }
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace validflow
