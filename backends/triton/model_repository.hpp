#pragma once
// Writes a Triton model repository entry for a validflow model file (what `validflow export --triton REPO` does):
//
//   REPO/NAME/config.pbtxt       backend "validflow", the I/O contract, batching, instances, parameters
//   REPO/NAME/VERSION/model.EXT  a copy of the model file
//
// Header-only, C++17, no LibTorch and no Triton needed. Both files are written atomically (validflow::io), so a
// failed export never leaves a half-written repository entry that Triton would try to load.
#include "model_config.hpp"

#include <validflow/io/atomic_file.hpp>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

namespace validflow::triton {

struct RepositoryOptions {
  std::string name = "validflow";     // the model name clients use: [A-Za-z0-9_.-], not starting with '.'
  int64_t version = 1;                // Triton serves the highest version directory by default
  int64_t max_batch_size = 8;         // images per execution (a request may carry up to this many)
  bool dynamic_batching = true;       // let Triton merge concurrent requests into one execution
  int64_t max_queue_delay_us = 2000;  // how long Triton may hold a request to fill a batch
  int64_t instance_count = 1;         // model instances (each one a Detector) per device
  bool gpu = false;                   // KIND_GPU instead of KIND_CPU
  std::optional<double> threshold;    // overrides the model file's image threshold (parameter threshold)
  std::string precision = "fp32";     // fp32 | bf16 (parameter precision)
  int64_t max_image_side = 4096;      // larger IMAGE heights/widths are refused (parameter max_image_side)
  bool overwrite = false;             // replace an existing config.pbtxt and version directory
};

/// What was written.
struct RepositoryEntry {
  std::filesystem::path config;      // REPO/NAME/config.pbtxt
  std::filesystem::path model_file;  // REPO/NAME/VERSION/model.EXT
};

/// An export that cannot be done; what() is one line naming the path or option.
class RepositoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

inline std::string shortest_double(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

inline void check_options(const RepositoryOptions& o) {
  const auto fail = [](const std::string& message) { throw RepositoryError(message); };
  if (o.name.empty() || o.name[0] == '.') fail("model name '" + o.name + "' must not be empty or start with '.'");
  for (char c : o.name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      fail("model name '" + o.name + "' may only hold letters, digits, '_', '-' and '.'");
  if (o.version < 1) fail("model version must be at least 1, not " + std::to_string(o.version));
  if (o.max_batch_size < 1) fail("max_batch_size must be at least 1, not " + std::to_string(o.max_batch_size));
  if (o.max_queue_delay_us < 0) fail("max_queue_delay_us must not be negative");
  if (o.instance_count < 1) fail("instance count must be at least 1, not " + std::to_string(o.instance_count));
  if (o.threshold && !std::isfinite(*o.threshold)) fail("threshold must be finite");
  if (o.precision != "fp32" && o.precision != "bf16") fail("precision must be fp32 or bf16, not '" + o.precision + "'");
  if (o.max_image_side < 1) fail("max_image_side must be at least 1");
}

inline std::string dims_text(const std::vector<int64_t>& dims) {
  std::string s = "[ ";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + " ]";
}

/// Writes bytes to 'target' atomically (validflow::io: a temporary file, fsync, rename).
inline void write_atomic(const std::filesystem::path& target, const std::string& bytes) {
  try {
    io::write_file_atomic(target.string(), bytes);
  } catch (const FileError& e) {
    throw RepositoryError(e.what());
  }
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RepositoryError("cannot read model file " + path.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in && !in.eof()) throw RepositoryError("reading model file " + path.string() + " failed");
  return bytes.str();
}

}  // namespace detail

/// The config.pbtxt text for a model whose file is REPO/NAME/VERSION/model_file_name.
inline std::string model_config_text(const RepositoryOptions& o, const std::string& model_file_name) {
  detail::check_options(o);
  std::ostringstream c;
  c << "# Triton model configuration of a validflow model (written by validflow "
    << "export --triton).\n"
    << "# Contract and tuning: docs/serving.md. Inputs carry a leading batch dimension (max_batch_size).\n"
    << "name: \"" << o.name << "\"\n"
    << "backend: \"validflow\"\n"
    << "max_batch_size: " << o.max_batch_size << "\n"
    << "input [\n"
    << "  {\n    name: \"" << kImage << "\"\n    data_type: " << image_contract().config_type
    << "\n    dims: " << detail::dims_text(image_contract().dims)
    << "\n    allow_ragged_batch: true  # images of different sizes may share one execution\n  },\n"
    << "  {\n    name: \"" << kThreshold << "\"\n    data_type: " << threshold_contract().config_type
    << "\n    dims: " << detail::dims_text(threshold_contract().dims) << "\n    optional: true\n  }\n"
    << "]\n"
    << "output [\n";
  const auto& outputs = output_contracts();
  for (size_t i = 0; i < outputs.size(); ++i)
    c << "  {\n    name: \"" << outputs[i].name << "\"\n    data_type: " << outputs[i].config_type
      << "\n    dims: " << detail::dims_text(outputs[i].dims) << "\n  }" << (i + 1 < outputs.size() ? "," : "") << "\n";
  c << "]\n";
  if (o.dynamic_batching)
    c << "dynamic_batching {\n  max_queue_delay_microseconds: " << o.max_queue_delay_us << "\n}\n";
  c << "instance_group [\n  {\n    count: " << o.instance_count << "\n    kind: " << (o.gpu ? "KIND_GPU" : "KIND_CPU")
    << "\n  }\n]\n"
    << "parameters [\n"
    << "  {\n    key: \"model_file\"\n    value: { string_value: \"" << model_file_name << "\" }\n  },\n"
    << "  {\n    key: \"precision\"\n    value: { string_value: \"" << o.precision << "\" }\n  },\n"
    << "  {\n    key: \"max_image_side\"\n    value: { string_value: \"" << o.max_image_side << "\" }\n  }";
  if (o.threshold)
    c << ",\n  {\n    key: \"threshold\"\n    value: { string_value: \"" << detail::shortest_double(*o.threshold)
      << "\" }\n  }";
  c << "\n]\n";
  return c.str();
}

/// Writes REPO/NAME/config.pbtxt and REPO/NAME/VERSION/model.EXT (EXT: the model file's extension). Refuses to
/// replace an existing config.pbtxt or version directory unless options.overwrite.
inline RepositoryEntry write_model_repository(const std::filesystem::path& model_file,
                                              const std::filesystem::path& repository,
                                              const RepositoryOptions& options) {
  namespace fs = std::filesystem;
  detail::check_options(options);
  std::error_code ec;
  if (!fs::is_regular_file(model_file, ec))
    throw RepositoryError("model file " + model_file.string() + " does not exist");
  const fs::path model_dir = repository / options.name;
  const fs::path version_dir = model_dir / std::to_string(options.version);
  RepositoryEntry entry{model_dir / "config.pbtxt", version_dir / ("model" + model_file.extension().string())};
  if (!options.overwrite) {
    if (fs::exists(entry.config, ec))
      throw RepositoryError(entry.config.string() + " already exists (overwrite it, or choose another name)");
    if (fs::exists(version_dir, ec))
      throw RepositoryError(version_dir.string() + " already exists (overwrite it, or choose another version)");
  }
  fs::create_directories(version_dir, ec);
  if (ec) throw RepositoryError("cannot create " + version_dir.string() + ": " + ec.message());
  if (options.overwrite)  // a replaced version directory holds only the new model file
    for (const auto& old : fs::directory_iterator(version_dir, ec))
      if (old.path() != entry.model_file) fs::remove_all(old.path(), ec);
  detail::write_atomic(entry.model_file, detail::read_file(model_file));
  detail::write_atomic(entry.config, model_config_text(options, entry.model_file.filename().string()));
  return entry;
}

}  // namespace validflow::triton
