#pragma once
// The one file container of validflow's own files (model files, training checkpoints, feature caches): a
// JSON header (kind, metadata, entry table) and raw little-endian tensor data, every part with a CRC-32.
// It is parsed by this code alone: no pickle, no code of any kind runs while a file is read, every offset and
// size is checked against the file before it is used, and a file that fails any check is refused as a whole
// with a FileError naming the path and the problem. docs/reliability.md states what this guarantees.
//
// Layout:
//   0   magic      8 bytes  89 56 46 41 0D 0A 1A 0A   ("\x89VFA\r\n\x1a\n": catches text-mode mangling)
//   8   version    u32      container version (1)
//   12  header_crc u32      CRC-32 of the header bytes
//   16  header_len u64      length of the header (at most 64 MiB)
//   24  header     JSON     {"kind", "kind_version", "meta", "payload_size",
//                            "tensors": [{"name","dtype","shape","offset","size","crc32"}],
//                            "blobs":   [{"name","offset","size","crc32"}]}
//   P   payload    bytes    P = 24 + header_len rounded up to 64; entry offsets are relative to P, 64-aligned
//   The file ends exactly at P + payload_size (a truncated or extended file is refused).
#include <validflow/io/crc32.hpp>
#include <validflow/io/errors.hpp>
#include <validflow/io/files.hpp>
#include <validflow/io/json_fields.hpp>
#include <validflow/io/named_tensors.hpp>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "validflow's file container is little-endian; this platform is not supported"
#endif

namespace validflow::io {

/// An archive in memory: what a file holds once it was read and verified, or what write_archive writes.
struct TensorArchive {
  std::string kind;          ///< e.g. "validflow-model"; a reader refuses files of another kind
  int64_t kind_version = 1;  ///< the layout of `meta` and of the entry names for this kind
  nlohmann::json meta = nlohmann::json::object();
  NamedTensors tensors;                                    ///< in file order; CPU, contiguous when read
  std::vector<std::pair<std::string, std::string>> blobs;  ///< opaque bytes
};

constexpr uint32_t kArchiveVersion = 1;
constexpr uint64_t kMaxHeaderBytes = 64ull << 20;
constexpr size_t kMaxArchiveEntries = 1u << 20;
constexpr size_t kMaxEntryNameBytes = 1024;
constexpr int64_t kMaxTensorDims = 8;

namespace detail {

inline const unsigned char* archive_magic() {
  static const unsigned char magic[8] = {0x89, 'V', 'F', 'A', '\r', '\n', 0x1a, '\n'};
  return magic;
}

inline uint64_t align64(uint64_t v) { return (v + 63) / 64 * 64; }

struct DtypeName {
  torch::Dtype dtype;
  const char* name;
};
inline const std::vector<DtypeName>& dtype_names() {
  static const std::vector<DtypeName> names = {{torch::kFloat32, "float32"}, {torch::kFloat64, "float64"},
                                               {torch::kFloat16, "float16"}, {torch::kBFloat16, "bfloat16"},
                                               {torch::kInt64, "int64"},     {torch::kInt32, "int32"},
                                               {torch::kInt16, "int16"},     {torch::kInt8, "int8"},
                                               {torch::kUInt8, "uint8"},     {torch::kBool, "bool"}};
  return names;
}
inline std::string dtype_name(torch::Dtype dtype) {
  for (const auto& d : dtype_names())
    if (d.dtype == dtype) return d.name;
  throw std::invalid_argument(std::string("tensor archive: unsupported dtype ") + c10::toString(dtype));
}

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}
template <typename T>
T get(std::string_view bytes, size_t at) {
  T value;
  std::memcpy(&value, bytes.data() + at, sizeof value);
  return value;
}

}  // namespace detail

/// Whether `bytes` start like a validflow archive (model file, checkpoint, feature cache).
inline bool has_archive_magic(std::string_view bytes) {
  return bytes.size() >= 8 && std::memcmp(bytes.data(), detail::archive_magic(), 8) == 0;
}

/// The bytes of an archive (see the top of this file). Tensors may live on any device; they are copied to the
/// CPU. Throws std::invalid_argument for duplicate or empty names and unsupported dtypes.
inline std::string serialize_archive(const TensorArchive& archive) {
  nlohmann::json tensors = nlohmann::json::array(), blobs = nlohmann::json::array();
  std::set<std::string> names;
  auto check_name = [&](const std::string& name) {
    if (name.empty() || name.size() > kMaxEntryNameBytes)
      throw std::invalid_argument("tensor archive: entry names must have 1.." + std::to_string(kMaxEntryNameBytes) +
                                  " bytes");
    if (!names.insert(name).second) throw std::invalid_argument("tensor archive: duplicate entry '" + name + "'");
  };
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : archive.tensors) {
    check_name(name);
    if (!tensor.defined()) throw std::invalid_argument("tensor archive: entry '" + name + "' is undefined");
    auto cpu = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t size = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    tensors.push_back({{"name", name},
                       {"dtype", detail::dtype_name(cpu.scalar_type())},
                       {"shape", cpu.sizes().vec()},
                       {"offset", offset},
                       {"size", size},
                       {"crc32", crc32(cpu.data_ptr(), size)}});
    offset = detail::align64(offset + size);
    data.push_back(std::move(cpu));
  }
  for (const auto& [name, bytes] : archive.blobs) {
    check_name(name);
    blobs.push_back(
        {{"name", name}, {"offset", offset}, {"size", bytes.size()}, {"crc32", crc32(bytes.data(), bytes.size())}});
    offset = detail::align64(offset + bytes.size());
  }
  const nlohmann::json header_json = {{"kind", archive.kind}, {"kind_version", archive.kind_version},
                                      {"meta", archive.meta}, {"payload_size", offset},
                                      {"tensors", tensors},   {"blobs", blobs}};
  const std::string header = header_json.dump();
  std::string out;
  const uint64_t payload_start = detail::align64(24 + header.size());
  out.reserve(payload_start + offset);
  out.append(reinterpret_cast<const char*>(detail::archive_magic()), 8);
  detail::put<uint32_t>(out, kArchiveVersion);
  detail::put<uint32_t>(out, crc32(header.data(), header.size()));
  detail::put<uint64_t>(out, header.size());
  out += header;
  out.resize(payload_start, '\0');
  for (size_t i = 0; i < data.size(); ++i) {
    out.resize(payload_start + tensors[i]["offset"].get<uint64_t>(), '\0');
    out.append(static_cast<const char*>(data[i].data_ptr()), tensors[i]["size"].get<size_t>());
  }
  for (size_t i = 0; i < archive.blobs.size(); ++i) {
    out.resize(payload_start + blobs[i]["offset"].get<uint64_t>(), '\0');
    out += archive.blobs[i].second;
  }
  out.resize(payload_start + offset, '\0');
  return out;
}

namespace detail {
/// The error for a defective archive: names the file and what is wrong with it.
struct ArchiveRefusal {
  const std::string& path;
  FileError operator()(const std::string& why) const {
    return FileError(path, "'" + path + "' is not a valid validflow file: " + why);
  }
};

/// Checks the fixed prefix (magic, version, header length and checksum) and parses the JSON header.
inline nlohmann::json parse_archive_header(std::string_view bytes, const ArchiveRefusal& refuse) {
  if (bytes.size() < 24 || !has_archive_magic(bytes)) {
    if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == 'K')
      throw refuse("it is a zip archive (a torch.save file or a checkpoint of validflow < 0.2), not a validflow file");
    throw refuse(bytes.size() < 24 ? "too short (" + std::to_string(bytes.size()) + " bytes)" : "wrong magic bytes");
  }
  const auto version = get<uint32_t>(bytes, 8);
  if (version != kArchiveVersion)
    throw refuse("container version " + std::to_string(version) + ", this build reads version " +
                 std::to_string(kArchiveVersion));
  const auto header_crc = get<uint32_t>(bytes, 12);
  const auto header_len = get<uint64_t>(bytes, 16);
  if (header_len == 0 || header_len > kMaxHeaderBytes || header_len > bytes.size() - 24)
    throw refuse("header length " + std::to_string(header_len) + " does not fit the file (" +
                 std::to_string(bytes.size()) + " bytes; truncated?)");
  const std::string_view header = bytes.substr(24, header_len);
  if (crc32(header.data(), header.size()) != header_crc) throw refuse("header checksum mismatch (corrupt file)");
  try {
    auto h = nlohmann::json::parse(header.begin(), header.end());
    if (!h.is_object()) throw refuse("the header is not a JSON object");
    return h;
  } catch (const nlohmann::json::exception& e) {
    throw refuse(std::string("unreadable header: ") + e.what());
  }
}

/// A tensor entry's bytes as a tensor of its dtype and shape, which must account for exactly those bytes.
inline torch::Tensor archive_tensor(const nlohmann::json& e, const std::string& name, std::string_view data,
                                    const ArchiveRefusal& refuse) {
  const auto dtype_text = e.at("dtype").get<std::string>();
  const DtypeName* dtype = nullptr;
  for (const auto& d : dtype_names())
    if (dtype_text == d.name) dtype = &d;
  if (!dtype) throw refuse("entry '" + name + "' has unknown dtype '" + dtype_text + "'");
  const auto shape = json_integers<int64_t>(e.at("shape"), "shape");
  if (static_cast<int64_t>(shape.size()) > kMaxTensorDims) throw refuse("entry '" + name + "' has too many dims");
  const auto element = static_cast<uint64_t>(c10::elementSize(dtype->dtype));
  uint64_t numel = 1;
  for (auto d : shape) {
    if (d < 0) throw refuse("entry '" + name + "' has a negative dimension");
    if (d > 0 && numel > std::numeric_limits<uint64_t>::max() / element / static_cast<uint64_t>(d))
      throw refuse("entry '" + name + "' is impossibly large");
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * element != data.size())
    throw refuse("entry '" + name + "': shape and dtype need " + std::to_string(numel * element) +
                 " bytes, the entry has " + std::to_string(data.size()));
  if (dtype->dtype == torch::kBool)
    for (char c : data)
      if (static_cast<unsigned char>(c) > 1) throw refuse("entry '" + name + "' holds bool values other than 0/1");
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype->dtype));
  if (!data.empty()) std::memcpy(t.data_ptr(), data.data(), data.size());
  return t;
}
}  // namespace detail

/// Parses and verifies archive bytes; `path` names the source in messages. Throws FileError on any defect.
inline TensorArchive parse_archive(std::string_view bytes, const std::string& path) {
  const detail::ArchiveRefusal refuse{path};
  const auto h = detail::parse_archive_header(bytes, refuse);
  const uint64_t payload_start = detail::align64(24 + detail::get<uint64_t>(bytes, 16));
  TensorArchive archive;
  try {
    archive.kind = h.at("kind").get<std::string>();
    archive.kind_version = json_integer<int64_t>(h.at("kind_version"), "kind_version");
    archive.meta = h.at("meta");
    const auto payload_size = json_integer<uint64_t>(h.at("payload_size"), "payload_size");
    if (payload_start > bytes.size() || bytes.size() - payload_start != payload_size)
      throw refuse("the file has " + std::to_string(bytes.size()) + " bytes, the header describes " +
                   std::to_string(payload_start) + " + " + std::to_string(payload_size) + " (truncated or extended)");
    const auto& tensors = h.at("tensors");
    const auto& blobs = h.at("blobs");
    if (!tensors.is_array() || !blobs.is_array() || tensors.size() + blobs.size() > kMaxArchiveEntries)
      throw refuse("bad entry table");
    std::set<std::string> names;
    auto entry_bytes = [&](const nlohmann::json& e, std::string& name) -> std::string_view {
      name = e.at("name").get<std::string>();
      if (name.empty() || name.size() > kMaxEntryNameBytes) throw refuse("an entry has an empty or overlong name");
      if (!names.insert(name).second) throw refuse("duplicate entry '" + name + "'");
      const auto offset = json_integer<uint64_t>(e.at("offset"), "offset");
      const auto size = json_integer<uint64_t>(e.at("size"), "size");
      if (offset > payload_size || size > payload_size - offset)
        throw refuse("entry '" + name + "' lies outside the file");
      const std::string_view data = bytes.substr(payload_start + offset, size);
      if (crc32(data.data(), data.size()) != json_integer<uint32_t>(e.at("crc32"), "crc32"))
        throw refuse("checksum mismatch in entry '" + name + "' (corrupt file)");
      return data;
    };
    for (const auto& e : tensors) {
      std::string name;
      const auto data = entry_bytes(e, name);
      archive.tensors.emplace_back(name, detail::archive_tensor(e, name, data, refuse));
    }
    for (const auto& e : blobs) {
      std::string name;
      const auto data = entry_bytes(e, name);
      archive.blobs.emplace_back(name, std::string(data));
    }
  } catch (const nlohmann::json::exception& e) {
    throw refuse(std::string("malformed header: ") + e.what());
  }
  return archive;
}

/// Refuses (FileError) an archive of another kind than `kind` or of a kind_version outside 1..max_kind_version.
inline void check_archive_kind(const TensorArchive& archive, const std::string& path, const std::string& kind,
                               int64_t max_kind_version = std::numeric_limits<int64_t>::max()) {
  if (!kind.empty() && archive.kind != kind)
    throw FileError(path, "'" + path + "' is a " + archive.kind + " file, expected a " + kind + " file");
  if (archive.kind_version < 1 || archive.kind_version > max_kind_version)
    throw FileError(path, "'" + path + "' is a " + archive.kind + " file of version " +
                              std::to_string(archive.kind_version) + "; this build reads versions 1.." +
                              std::to_string(max_kind_version) + " (a newer validflow wrote it)");
}

/// Reads and verifies the archive at `path`; with `kind` set, refuses files of another kind or of a newer
/// kind_version than `max_kind_version`. Throws FileError naming the path.
inline TensorArchive read_archive(const std::string& path, const std::string& kind = "",
                                  int64_t max_kind_version = std::numeric_limits<int64_t>::max()) {
  auto archive = parse_archive(read_file_bytes(path), path);
  check_archive_kind(archive, path, kind, max_kind_version);
  return archive;
}

/// Writes the archive to `path` atomically (temporary file, fsync, rename). Throws FileError.
inline void write_archive(const std::string& path, const TensorArchive& archive) {
  write_file_atomic(path, serialize_archive(archive));
}

}  // namespace validflow::io
