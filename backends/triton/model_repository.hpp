#pragma once
// Writes a Triton model repository entry for a validflow model file (what `validflow export --triton REPO` does):
//
//   REPO/NAME/config.pbtxt       backend "validflow", the I/O contract, batching, instances, parameters
//   REPO/NAME/VERSION/model.EXT  a copy of the model file
//   REPO/NAME/warmup/validflow_warmup_SxS.rgb  the warm-up sample of model_warmup (one per input size S)
//
// Header-only, C++17, no LibTorch and no Triton needed. The entry is staged and renamed into place (see
// write_model_repository), so a failed export never leaves a half-written entry that Triton would try to load, and a
// refused one leaves the old entry as it was.
#include <validflow/util/error.hpp>
#include "model_config.hpp"

#include <validflow/io/files.hpp>

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
  std::string name = "validflow";         // the model name clients use: [A-Za-z0-9_.-], not starting with '.'
  int64_t version = 1;                    // Triton serves the highest version directory by default
  int64_t max_batch_size = 8;             // images per execution (a request may carry up to this many)
  bool dynamic_batching = true;           // let Triton merge concurrent requests into one execution
  int64_t max_queue_delay_us = 2000;      // how long Triton may hold a request to fill a batch
  int64_t instance_count = 1;             // model instances (each one a Detector) per device
  bool gpu = false;                       // KIND_GPU instead of KIND_CPU
  std::optional<double> threshold;        // overrides the model file's image threshold (parameter threshold)
  std::optional<double> pixel_threshold;  // overrides its pixel threshold (parameter pixel_threshold)
  int64_t intra_op_threads = 0;           // LibTorch threads per instance (parameter intra_op_threads); 0: not written
  bool encoded_input = true;              // declare IMAGE_BYTES (encoded PNG/JPEG/BMP/TIFF) beside IMAGE
  int64_t warmup_size = 0;                // model_warmup with a warmup_size^2 sample (the model's input size); 0: none
  std::string precision = "fp32";         // fp32 | bf16 (parameter precision)
  int64_t max_image_side = 4096;          // larger IMAGE heights/widths are refused (parameter max_image_side)
  bool overwrite = false;                 // replace an existing validflow entry (config.pbtxt, version directory)
  std::string model_file_name;  // the file in the version directory; "" = "model" + the model file's extension
};

/// What was written.
struct RepositoryEntry {
  std::filesystem::path config;      // REPO/NAME/config.pbtxt
  std::filesystem::path model_file;  // REPO/NAME/VERSION/model.EXT
};

/// An export that cannot be done; what() is one line naming the path or option.
class RepositoryError : public ErrorOf<std::runtime_error, ErrorKind::file> {
 public:
  using ErrorOf::ErrorOf;
};

/// Why `name` cannot be a Triton model name written here ("" when it can): one line.
inline std::string model_name_problem(const std::string& name) {
  if (name.empty() || name[0] == '.') return "model name '" + name + "' must not be empty or start with '.'";
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      return "model name '" + name + "' may only hold letters, digits, '_', '-' and '.'";
  return "";
}

/// Throws RepositoryError (one line, naming the option) when `o` cannot be written; what the writer checks first.
inline void check_repository_options(const RepositoryOptions& o) {
  const auto fail = [](const std::string& message) { throw RepositoryError(message); };
  if (const auto problem = model_name_problem(o.name); !problem.empty()) fail(problem);
  if (o.version < 1) fail("model version must be at least 1, not " + std::to_string(o.version));
  if (o.max_batch_size < 1) fail("max_batch_size must be at least 1, not " + std::to_string(o.max_batch_size));
  if (o.max_queue_delay_us < 0) fail("max_queue_delay_us must not be negative");
  if (o.instance_count < 1) fail("instance count must be at least 1, not " + std::to_string(o.instance_count));
  if (o.threshold && !std::isfinite(*o.threshold)) fail("threshold must be finite");
  if (o.pixel_threshold && !std::isfinite(*o.pixel_threshold)) fail("pixel threshold must be finite");
  if (o.intra_op_threads < 0 || o.intra_op_threads > kMaxIntraOpThreads)
    fail("intra-op threads must be in 0 .. " + std::to_string(kMaxIntraOpThreads));
  if (o.warmup_size < 0 || o.warmup_size > o.max_image_side)
    fail("warm-up size must be in 0 .. max_image_side, not " + std::to_string(o.warmup_size));
  if (o.precision != "fp32" && o.precision != "bf16") fail("precision must be fp32 or bf16, not '" + o.precision + "'");
  if (o.max_image_side < 1) fail("max_image_side must be at least 1");
}

namespace detail {

inline std::string shortest_double(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
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

}  // namespace detail

/// The config.pbtxt text for a model whose file is REPO/NAME/VERSION/model_file_name.
inline std::string model_config_text(const RepositoryOptions& o, const std::string& model_file_name) {
  check_repository_options(o);
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
    << "\n    allow_ragged_batch: true  # images of different sizes may share one execution"
    << (o.encoded_input ? "\n    optional: true  # a request carries IMAGE or IMAGE_BYTES" : "") << "\n  },\n";
  if (o.encoded_input)
    c << "  {\n    name: \"" << kImageBytes << "\"\n    data_type: " << image_bytes_contract().config_type
      << "\n    dims: " << detail::dims_text(image_bytes_contract().dims)
      << "\n    optional: true  # PNG, JPEG, BMP or TIFF file bytes, decoded by the backend\n  },\n";
  c << "  {\n    name: \"" << kThreshold << "\"\n    data_type: " << threshold_contract().config_type
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
  if (o.warmup_size > 0)
    c << "model_warmup [\n  {\n    name: \"validflow_warmup\"\n    batch_size: 1\n    inputs {\n      key: \"" << kImage
      << "\"\n      value {\n        data_type: " << image_contract().config_type << "\n        dims: [ "
      << o.warmup_size << ", " << o.warmup_size << ", 3 ]\n        input_data_file: \""
      << warmup_sample_file_name(o.warmup_size) << "\"\n      }\n    }\n  }\n]\n";
  c << "instance_group [\n  {\n    count: " << o.instance_count << "\n    kind: " << (o.gpu ? "KIND_GPU" : "KIND_CPU")
    << "\n  }\n]\n"
    << "parameters [\n"
    << "  {\n    key: \"model_file\"\n    value: { string_value: \"" << model_file_name << "\" }\n  },\n"
    << "  {\n    key: \"precision\"\n    value: { string_value: \"" << o.precision << "\" }\n  },\n"
    << "  {\n    key: \"max_image_side\"\n    value: { string_value: \"" << o.max_image_side << "\" }\n  }";
  const auto parameter = [&](const char* key, const std::string& value) {
    c << ",\n  {\n    key: \"" << key << "\"\n    value: { string_value: \"" << value << "\" }\n  }";
  };
  if (o.threshold) parameter("threshold", detail::shortest_double(*o.threshold));
  if (o.pixel_threshold) parameter("pixel_threshold", detail::shortest_double(*o.pixel_threshold));
  if (o.intra_op_threads > 0) parameter("intra_op_threads", std::to_string(o.intra_op_threads));
  c << "\n]\n";
  return c.str();
}

namespace detail {

/// Whether `config` is a config.pbtxt of this backend (what write_model_repository wrote, or written by hand).
inline bool is_validflow_config(const std::filesystem::path& config) {
  std::ifstream in(config);
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find_first_not_of(" \t");
    if (at != std::string::npos && line.compare(at, 8, "backend:") == 0)
      return line.find("\"validflow\"", at) != std::string::npos;
  }
  return false;
}

}  // namespace detail

/// Throws RepositoryError (one line) when REPO/NAME cannot take the entry write_model_repository(…, repository,
/// options) would write; nothing is written. Checked: the options; REPO and REPO/NAME, where they exist, are
/// directories; an existing entry is replaced only with options.overwrite, and only when its config.pbtxt is a
/// validflow one (an entry of another backend, or a folder without config.pbtxt, is never replaced).
inline void check_repository_target(const std::filesystem::path& repository, const RepositoryOptions& options) {
  namespace fs = std::filesystem;
  check_repository_options(options);
  std::error_code ec;
  if (fs::exists(repository, ec) && !fs::is_directory(repository, ec))
    throw RepositoryError(repository.string() + " is not a directory");
  const fs::path model_dir = repository / options.name;
  const fs::path config = model_dir / "config.pbtxt";
  const fs::path version_dir = model_dir / std::to_string(options.version);
  if (!fs::exists(model_dir, ec)) return;
  if (!fs::is_directory(model_dir, ec)) throw RepositoryError(model_dir.string() + " exists and is not a directory");
  if (fs::exists(config, ec)) {
    if (!options.overwrite)
      throw RepositoryError(config.string() + " already exists (overwrite it, or choose another name)");
    if (!fs::is_regular_file(config, ec) || !detail::is_validflow_config(config))
      throw RepositoryError(config.string() +
                            " is not a validflow model's configuration (backend \"validflow\"): "
                            "not replaced (choose another name)");
  } else if (!fs::is_empty(model_dir, ec)) {
    throw RepositoryError(model_dir.string() + " exists without a config.pbtxt: not replaced (choose another name)");
  }
  if (fs::exists(version_dir, ec)) {
    if (!options.overwrite)
      throw RepositoryError(version_dir.string() + " already exists (overwrite it, or choose another version)");
    if (!fs::is_directory(version_dir, ec))
      throw RepositoryError(version_dir.string() + " exists and is not a directory");
  }
}

/// Writes REPO/NAME/config.pbtxt and REPO/NAME/VERSION/model.EXT (EXT: the model file's extension, or
/// options.model_file_name). Refuses (check_repository_target) to replace an existing entry unless
/// options.overwrite, and never replaces another backend's entry. The entry is staged first in a folder
/// REPO/NAME/.export.validflow-tmp.PID.N (not a version number: Triton ignores it), the version directory then replaces
/// the old one in one rename (Linux: an atomic exchange, io::replace_directory) and config.pbtxt in another, so a
/// server never sees a partly written model file, and a failure before the renames leaves the old entry as it was.
/// Other version directories are kept; staging folders of killed exports (dead pid) are removed.
inline RepositoryEntry write_model_repository(const std::filesystem::path& model_file,
                                              const std::filesystem::path& repository,
                                              const RepositoryOptions& options) {
  namespace fs = std::filesystem;
  check_repository_target(repository, options);
  std::error_code ec;
  if (!fs::is_regular_file(model_file, ec))
    throw RepositoryError("model file " + model_file.string() + " does not exist");
  const fs::path model_dir = repository / options.name;
  const fs::path version_dir = model_dir / std::to_string(options.version);
  const std::string file_name =
      options.model_file_name.empty() ? "model" + model_file.extension().string() : options.model_file_name;
  const RepositoryEntry entry{model_dir / "config.pbtxt", version_dir / file_name};
  std::string bytes;
  try {
    bytes = io::read_file_bytes(model_file.string());
  } catch (const FileError& e) {
    throw RepositoryError(std::string("model file: ") + e.what());
  }

  // The staging folder's name (io::make_staging_directory: `.export.validflow-tmp.PID.N`) starts with a dot, so Triton
  // never takes it for a version directory; io::remove_stale_temp_files removes those of killed exports.
  if (fs::is_directory(model_dir, ec)) io::remove_stale_temp_files(model_dir.string(), {".export"});
  fs::path staged_version, staged_config;
  fs::path created;  // the outermost folder this call creates (removed again when the write fails)
  for (fs::path p = model_dir; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created = p;
    if (p == p.parent_path()) break;
  }
  fs::path staging;
  try {
    try {
      staging = io::make_staging_directory((model_dir / ".export").string());
    } catch (const FileError& e) {
      throw RepositoryError(e.what());
    }
    staged_version = staging / "version";
    staged_config = staging / "config.pbtxt";
    fs::create_directories(staged_version, ec);
    if (ec) throw RepositoryError("cannot create " + staged_version.string() + ": " + ec.message());
    detail::write_atomic(staged_version / file_name, bytes);
    detail::write_atomic(staged_config, model_config_text(options, file_name));
    try {
      io::replace_directory(staged_version.string(), version_dir.string());
    } catch (const FileError& e) {
      throw RepositoryError(e.what());
    }
    if (options.warmup_size > 0) {  // beside older samples until the new config is in place, then those go
      const fs::path warmup_dir = model_dir / "warmup";
      fs::create_directories(warmup_dir, ec);
      if (ec) throw RepositoryError("cannot create " + warmup_dir.string() + ": " + ec.message());
      detail::write_atomic(warmup_dir / warmup_sample_file_name(options.warmup_size),
                           warmup_sample(options.warmup_size));
    }
    fs::rename(staged_config, entry.config, ec);
    if (ec)
      throw RepositoryError("cannot rename " + staged_config.string() + " to " + entry.config.string() + ": " +
                            ec.message());
  } catch (...) {
    if (!created.empty() || !staging.empty()) fs::remove_all(created.empty() ? staging : created, ec);
    throw;
  }
  fs::remove_all(staging, ec);                     // the replaced version directory, if any
  if (fs::is_directory(model_dir / "warmup", ec))  // samples of earlier input sizes
    for (const auto& file : fs::directory_iterator(model_dir / "warmup", ec)) {
      const std::string name = file.path().filename().string();
      if (name.rfind("validflow_warmup_", 0) == 0 && name != warmup_sample_file_name(options.warmup_size))
        fs::remove(file.path(), ec);
    }
  return entry;
}

}  // namespace validflow::triton
