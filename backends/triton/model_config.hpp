#pragma once
// The validflow Triton backend's contract, without Triton or LibTorch: tensor names and types, the model
// configuration (config.pbtxt, as the JSON Triton hands to the backend) and its validation, the backend's command-line
// settings, and the per-request checks of the IMAGE and THRESHOLD inputs. Every check throws (or returns) a one-line
// message that names the field and the problem; backend.cpp turns them into Triton errors. docs/serving.md documents
// the same contract for users.
#include <nlohmann/json.hpp>
#include <validflow/util/error.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace validflow::triton {

// ---- The I/O contract ----
inline constexpr const char* kImage = "IMAGE";                       // UINT8 [H, W, 3] RGB per item
inline constexpr const char* kImageBytes = "IMAGE_BYTES";            // BYTES [1]: a PNG/JPEG/BMP/TIFF file per item
inline constexpr const char* kThreshold = "THRESHOLD";               // FP32 [1] per item, optional
inline constexpr const char* kScore = "SCORE";                       // FP32 [1]: raw score, mean z^2/2
inline constexpr const char* kNormalizedScore = "NORMALIZED_SCORE";  // FP32 [1]: in [0, 1], 0.5 at the threshold
inline constexpr const char* kAnomalous = "ANOMALOUS";               // BOOL [1]: score >= threshold
inline constexpr const char* kAnomalyMap = "ANOMALY_MAP";            // FP32 [H, W]: at the input's resolution
inline constexpr const char* kDefectMask = "DEFECT_MASK";            // UINT8 [H, W]: 1 where the map >= pixel threshold

struct TensorContract {
  const char* name;
  const char* config_type;  // config.pbtxt spelling
  const char* wire_type;    // protocol spelling (what TRITONSERVER_DataTypeString returns)
  std::vector<int64_t> dims;
};

inline const std::vector<TensorContract>& output_contracts() {
  static const std::vector<TensorContract> outputs{{kScore, "TYPE_FP32", "FP32", {1}},
                                                   {kNormalizedScore, "TYPE_FP32", "FP32", {1}},
                                                   {kAnomalous, "TYPE_BOOL", "BOOL", {1}},
                                                   {kAnomalyMap, "TYPE_FP32", "FP32", {-1, -1}},
                                                   {kDefectMask, "TYPE_UINT8", "UINT8", {-1, -1}}};
  return outputs;
}
inline const TensorContract& image_contract() {
  static const TensorContract image{kImage, "TYPE_UINT8", "UINT8", {-1, -1, 3}};
  return image;
}
inline const TensorContract& image_bytes_contract() {
  static const TensorContract image_bytes{kImageBytes, "TYPE_STRING", "BYTES", {1}};
  return image_bytes;
}
inline const TensorContract& threshold_contract() {
  static const TensorContract threshold{kThreshold, "TYPE_FP32", "FP32", {1}};
  return threshold;
}

/// The warm-up sample `validflow export --triton` writes (REPO/NAME/warmup/, config model_warmup): side x side x 3
/// bytes of a fixed pseudo-random pattern. Triton runs it through each instance at load; the backend recognises it
/// (is_warmup_sample) and leaves it out of its metrics, so a warm-up never counts as an inspected or flagged part.
inline uint8_t warmup_sample_byte(uint64_t index) {
  uint64_t x = (index + 1) * 0x9E3779B97F4A7C15ull;  // splitmix64: cheap, fixed, without structure
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint8_t>(x ^ (x >> 31));
}
inline std::string warmup_sample(int64_t side) {
  std::string bytes(static_cast<size_t>(side * side * 3), '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(warmup_sample_byte(i));
  return bytes;
}
inline std::string warmup_sample_file_name(int64_t side) {
  return "validflow_warmup_" + std::to_string(side) + "x" + std::to_string(side) + ".rgb";
}
/// Whether `pixels` (height x width x 3 bytes) is the warm-up sample.
inline bool is_warmup_sample(const uint8_t* pixels, int64_t height, int64_t width) {
  if (height != width || height < 1) return false;
  const uint64_t n = static_cast<uint64_t>(height * width * 3);
  for (uint64_t i = 0; i < n; ++i)
    if (pixels[i] != warmup_sample_byte(i)) return false;
  return true;
}

/// A configuration the backend cannot serve; what() is one line naming the field.
class ConfigError : public ErrorOf<std::invalid_argument, ErrorKind::config> {
 public:
  using ErrorOf::ErrorOf;
};

/// What the backend needs from a model's configuration.
/// validflow::kDefaultMaxInputSize (detect/predict_options.hpp; this header needs no validflow library headers,
/// backend.cpp asserts they agree).
constexpr int64_t kDefaultMaxInputSize = 1536;
/// The largest encoded image (IMAGE_BYTES item) accepted unless the parameter max_encoded_bytes says otherwise.
constexpr int64_t kDefaultMaxEncodedBytes = int64_t{64} << 20;
/// The bounds of the parameter intra_op_threads (LibTorch threads of an instance while it executes).
constexpr int64_t kMaxIntraOpThreads = 1024;

struct ModelSettings {
  std::string name;
  int64_t max_batch_size = 0;
  std::string model_file;                 // parameter model_file; empty: the only file in the version directory
  std::optional<double> threshold;        // parameter threshold: overrides the model file's image threshold
  std::optional<double> pixel_threshold;  // parameter pixel_threshold: overrides its pixel threshold
  int64_t intra_op_threads = 0;           // parameter intra_op_threads; 0: the backend's (--backend-config)
  int64_t max_encoded_bytes = kDefaultMaxEncodedBytes;  // parameter max_encoded_bytes: larger IMAGE_BYTES refused
  std::string precision = "fp32";                       // parameter precision: fp32 | bf16
  int64_t max_image_side = 4096;                  // parameter max_image_side: larger IMAGE heights/widths are refused
  int64_t max_input_size = kDefaultMaxInputSize;  // parameter max_input_size: larger model input sizes are refused
  bool raw_input = false;                         // the config declares IMAGE (decoded pixels)
  bool encoded_input = false;                     // the config declares IMAGE_BYTES (encoded files)
  bool threshold_input = false;                   // the config declares the optional THRESHOLD input
  std::vector<std::string> outputs;               // the configured outputs, config order
};

namespace detail {

inline std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

/// Triton writes protobuf int64 fields as JSON strings, int32 fields as numbers; accept both.
inline int64_t as_int64(const nlohmann::json& value, const std::string& what) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_string()) {
    const std::string s = value.get<std::string>();
    size_t used = 0;
    try {
      const long long v = std::stoll(s, &used);
      if (used == s.size()) return v;
    } catch (const std::exception&) {
    }
  }
  throw ConfigError(what + " is not an integer: " + value.dump());
}

inline std::vector<int64_t> dims_of(const nlohmann::json& tensor, const std::string& what) {
  std::vector<int64_t> dims;
  if (tensor.contains("dims")) {
    if (!tensor["dims"].is_array()) throw ConfigError(what + ": dims is not a list");
    for (const auto& d : tensor["dims"]) dims.push_back(as_int64(d, what + " dims"));
  }
  return dims;
}

/// The contract's dims with -1 where the configuration may also fix a size (IMAGE's H and W).
inline void check_tensor(const nlohmann::json& tensor, const TensorContract& contract, bool allow_fixed_sizes) {
  const std::string what = std::string("config ") + contract.name;
  const std::string type = tensor.value("data_type", std::string());
  if (type != contract.config_type)
    throw ConfigError(what + " must have data_type " + contract.config_type + ", not " +
                      (type.empty() ? std::string("(none)") : type));
  const auto dims = dims_of(tensor, what);
  bool ok = dims.size() == contract.dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i)
    ok = dims[i] == contract.dims[i] || (allow_fixed_sizes && contract.dims[i] == -1 && dims[i] > 0);
  if (!ok)
    throw ConfigError(what + " must have dims " + dims_string(contract.dims) + ", not " + dims_string(dims) +
                      " (the batch dimension comes from max_batch_size)");
  if (tensor.contains("reshape")) throw ConfigError(what + ": reshape is not supported");
}

inline std::optional<std::string> string_parameter(const nlohmann::json& config, const std::string& key) {
  if (!config.contains("parameters") || !config["parameters"].is_object()) return std::nullopt;
  const auto& parameters = config["parameters"];
  if (!parameters.contains(key)) return std::nullopt;
  const auto& p = parameters[key];
  if (!p.is_object() || !p.contains("string_value") || !p["string_value"].is_string())
    throw ConfigError("config parameter " + key + " has no string_value");
  return p["string_value"].get<std::string>();
}

inline double parse_finite_double(const std::string& text, const std::string& what) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    throw ConfigError(what + " must be a finite number, not '" + text + "'");
  return v;
}

inline int64_t parse_positive_int(const std::string& text, const std::string& what) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v <= 0)
    throw ConfigError(what + " must be a positive integer, not '" + text + "'");
  return v;
}

}  // namespace detail

/// Validates a model configuration (the JSON of TRITONBACKEND_ModelConfig) against the contract and reads the
/// backend's parameters. Throws ConfigError naming the first problem.
inline ModelSettings parse_model_config(const nlohmann::json& config) {
  using detail::check_tensor;
  ModelSettings settings;
  settings.name = config.value("name", std::string());
  settings.max_batch_size =
      config.contains("max_batch_size") ? detail::as_int64(config["max_batch_size"], "config max_batch_size") : 0;
  if (settings.max_batch_size < 1)
    throw ConfigError("config max_batch_size must be at least 1 (the backend expects a batch dimension), not " +
                      std::to_string(settings.max_batch_size));

  bool image_optional = false, bytes_optional = false;
  for (const auto& input : config.value("input", nlohmann::json::array())) {
    const std::string name = input.value("name", std::string());
    if (name == kImage) {
      check_tensor(input, image_contract(), true);
      settings.raw_input = true;
      image_optional = input.value("optional", false);
    } else if (name == kImageBytes) {
      check_tensor(input, image_bytes_contract(), false);
      settings.encoded_input = true;
      bytes_optional = input.value("optional", false);
    } else if (name == kThreshold) {
      check_tensor(input, threshold_contract(), false);
      if (!input.value("optional", false)) throw ConfigError("config THRESHOLD must be optional: true");
      settings.threshold_input = true;
    } else {
      throw ConfigError("config input '" + name +
                        "' is unknown (inputs: IMAGE and/or IMAGE_BYTES, optional THRESHOLD)");
    }
  }
  if (!settings.raw_input && !settings.encoded_input)
    throw ConfigError(
        "config has no input IMAGE (TYPE_UINT8, dims [-1, -1, 3]) or IMAGE_BYTES (TYPE_STRING, dims [1])");
  // A request carries one of the two: with both declared both are optional; with one, it is required.
  if (settings.raw_input && settings.encoded_input && !(image_optional && bytes_optional))
    throw ConfigError("config IMAGE and IMAGE_BYTES must both be optional: true (a request carries one of them)");
  if (settings.raw_input && !settings.encoded_input && image_optional)
    throw ConfigError("config IMAGE must not be optional (it is the only image input)");
  if (settings.encoded_input && !settings.raw_input && bytes_optional)
    throw ConfigError("config IMAGE_BYTES must not be optional (it is the only image input)");

  for (const auto& output : config.value("output", nlohmann::json::array())) {
    const std::string name = output.value("name", std::string());
    const TensorContract* contract = nullptr;
    for (const auto& c : output_contracts())
      if (name == c.name) contract = &c;
    if (!contract)
      throw ConfigError("config output '" + name +
                        "' is unknown (outputs: SCORE, NORMALIZED_SCORE, ANOMALOUS, ANOMALY_MAP, DEFECT_MASK)");
    check_tensor(output, *contract, false);
    settings.outputs.push_back(name);
  }
  if (settings.outputs.empty())
    throw ConfigError("config has no outputs (SCORE, NORMALIZED_SCORE, ANOMALOUS, ANOMALY_MAP, DEFECT_MASK)");

  if (auto v = detail::string_parameter(config, "model_file")) {
    if (v->empty() || v->find('/') != std::string::npos || *v == "." || *v == "..")
      throw ConfigError("config parameter model_file must be a file name in the version directory, not '" + *v + "'");
    settings.model_file = *v;
  }
  if (auto v = detail::string_parameter(config, "threshold"))
    settings.threshold = detail::parse_finite_double(*v, "config parameter threshold");
  if (auto v = detail::string_parameter(config, "pixel_threshold"))
    settings.pixel_threshold = detail::parse_finite_double(*v, "config parameter pixel_threshold");
  if (auto v = detail::string_parameter(config, "precision")) {
    if (*v != "fp32" && *v != "bf16")
      throw ConfigError("config parameter precision must be fp32 or bf16, not '" + *v + "'");
    settings.precision = *v;
  }
  if (auto v = detail::string_parameter(config, "max_image_side"))
    settings.max_image_side = detail::parse_positive_int(*v, "config parameter max_image_side");
  if (auto v = detail::string_parameter(config, "max_input_size"))
    settings.max_input_size = detail::parse_positive_int(*v, "config parameter max_input_size");
  if (auto v = detail::string_parameter(config, "max_encoded_bytes")) {
    settings.max_encoded_bytes = detail::parse_positive_int(*v, "config parameter max_encoded_bytes");
    if (settings.max_encoded_bytes > (int64_t{1} << 31) - 1)
      throw ConfigError("config parameter max_encoded_bytes must be below 2 GiB, not " + *v);
  }
  if (auto v = detail::string_parameter(config, "intra_op_threads")) {
    settings.intra_op_threads = detail::parse_positive_int(*v, "config parameter intra_op_threads");
    if (settings.intra_op_threads > kMaxIntraOpThreads)
      throw ConfigError("config parameter intra_op_threads must be at most " + std::to_string(kMaxIntraOpThreads) +
                        ", not " + *v);
  }
  static const char* const known[] = {"model_file",     "threshold",      "pixel_threshold",   "precision",
                                      "max_image_side", "max_input_size", "max_encoded_bytes", "intra_op_threads"};
  if (config.contains("parameters") && config["parameters"].is_object())
    for (const auto& item : config["parameters"].items()) {
      bool is_known = false;
      for (const char* k : known) is_known = is_known || item.key() == k;
      if (!is_known) {
        std::string list;
        for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        throw ConfigError("config parameter '" + item.key() + "' is unknown (parameters: " + list + ")");
      }
    }
  return settings;
}

/// Settings given on Triton's command line: --backend-config=validflow,intra-op-threads=N.
struct BackendSettings {
  int64_t intra_op_threads = 0;  // 0: LibTorch's default
};

/// Reads the backend configuration JSON ({"cmdline": {...}}); Triton adds its own keys there, which are ignored.
inline BackendSettings parse_backend_config(const nlohmann::json& config) {
  BackendSettings settings;
  if (!config.contains("cmdline") || !config["cmdline"].is_object()) return settings;
  const auto& cmdline = config["cmdline"];
  if (cmdline.contains("intra-op-threads")) {
    const auto& v = cmdline["intra-op-threads"];
    if (!v.is_string()) throw ConfigError("backend config intra-op-threads is not a string");
    settings.intra_op_threads = detail::parse_positive_int(v.get<std::string>(), "backend config intra-op-threads");
  }
  return settings;
}

/// Triton's backend API versioning: the same major version, and a server minor version at least the one the backend
/// was declared against. Returns the refusal message, or nothing when compatible.
inline std::optional<std::string> check_api_version(uint32_t server_major, uint32_t server_minor, uint32_t built_major,
                                                    uint32_t built_minor) {
  if (server_major == built_major && server_minor >= built_minor) return std::nullopt;
  const auto v = [](uint32_t major, uint32_t minor) { return std::to_string(major) + "." + std::to_string(minor); };
  return "built for TRITONBACKEND API " + v(built_major, built_minor) + " (needs a server with API major " +
         std::to_string(built_major) + ", minor >= " + std::to_string(built_minor) + "); this Triton server has API " +
         v(server_major, server_minor);
}

/// The request-level view of one input tensor, as TRITONBACKEND_InputProperties reports it.
struct InputInfo {
  std::string name;
  std::string datatype;  // protocol spelling: UINT8, FP32, ...
  std::vector<int64_t> shape;
  uint64_t byte_size = 0;
};

/// Checks a request's IMAGE input ([B, H, W, 3] UINT8, every size positive, H and W at most max_image_side, bytes
/// matching the shape). Returns the problem, or nothing when the input is usable.
inline std::optional<std::string> check_image_input(const InputInfo& in, const ModelSettings& settings) {
  if (in.datatype != "UINT8") return "IMAGE must be UINT8, not " + in.datatype;
  if (in.shape.size() != 4 || in.shape[3] != 3)
    return "IMAGE must have shape [batch, height, width, 3], not " + detail::dims_string(in.shape);
  for (int64_t d : in.shape)
    if (d <= 0) return "IMAGE has an empty dimension: shape " + detail::dims_string(in.shape);
  if (in.shape[0] > settings.max_batch_size)
    return "IMAGE batch " + std::to_string(in.shape[0]) + " exceeds max_batch_size " +
           std::to_string(settings.max_batch_size);
  if (in.shape[1] > settings.max_image_side || in.shape[2] > settings.max_image_side)
    return "IMAGE height and width must be at most max_image_side " + std::to_string(settings.max_image_side) +
           ", not " + std::to_string(in.shape[1]) + " x " + std::to_string(in.shape[2]);
  uint64_t expected = 3;
  for (int i = 0; i < 3; ++i)
    if (__builtin_mul_overflow(expected, static_cast<uint64_t>(in.shape[i]), &expected))
      return "IMAGE shape " + detail::dims_string(in.shape) + " is too large";
  if (in.byte_size != expected)
    return "IMAGE holds " + std::to_string(in.byte_size) + " bytes, its shape " + detail::dims_string(in.shape) +
           " needs " + std::to_string(expected);
  return std::nullopt;
}

/// Checks a request's IMAGE_BYTES input ([B, 1] BYTES, B at most max_batch_size). Returns the problem, or nothing.
inline std::optional<std::string> check_image_bytes_input(const InputInfo& in, const ModelSettings& settings) {
  if (in.datatype != "BYTES") return "IMAGE_BYTES must be BYTES, not " + in.datatype;
  if (in.shape.size() != 2 || in.shape[0] < 1 || in.shape[1] != 1)
    return "IMAGE_BYTES must have shape [batch, 1] (one encoded image per item), not " + detail::dims_string(in.shape);
  if (in.shape[0] > settings.max_batch_size)
    return "IMAGE_BYTES batch " + std::to_string(in.shape[0]) + " exceeds max_batch_size " +
           std::to_string(settings.max_batch_size);
  return std::nullopt;
}

/// Splits a BYTES tensor's buffer (each element: a 4-byte little-endian length, then that many bytes) into its
/// `count` elements, each at most `max_element` bytes. Fills `elements` (views into `data`) or returns the problem.
inline std::optional<std::string> split_bytes_elements(const uint8_t* data, uint64_t size, int64_t count,
                                                       int64_t max_element, std::vector<std::string_view>& elements) {
  elements.clear();
  uint64_t at = 0;
  for (int64_t i = 0; i < count; ++i) {
    const std::string item = "IMAGE_BYTES item " + std::to_string(i);
    if (size - at < 4) return item + ": the tensor ends before its length";
    const uint64_t length =
        uint64_t{data[at]} | uint64_t{data[at + 1]} << 8 | uint64_t{data[at + 2]} << 16 | uint64_t{data[at + 3]} << 24;
    at += 4;
    if (length == 0) return item + " is empty (no image file)";
    if (length > static_cast<uint64_t>(max_element))
      return item + " holds " + std::to_string(length) + " bytes, above max_encoded_bytes " +
             std::to_string(max_element);
    if (size - at < length)
      return item + " says " + std::to_string(length) + " bytes, the tensor holds " + std::to_string(size - at);
    elements.emplace_back(reinterpret_cast<const char*>(data + at), static_cast<size_t>(length));
    at += length;
  }
  if (at != size) return "IMAGE_BYTES holds " + std::to_string(size - at) + " bytes after its last item";
  return std::nullopt;
}

/// Checks a request's THRESHOLD input against the IMAGE batch ([B, 1] FP32).
inline std::optional<std::string> check_threshold_input(const InputInfo& in, int64_t batch) {
  if (in.datatype != "FP32") return "THRESHOLD must be FP32, not " + in.datatype;
  if (in.shape.size() != 2 || in.shape[0] != batch || in.shape[1] != 1)
    return "THRESHOLD must have shape [" + std::to_string(batch) + ", 1] (one per image), not " +
           detail::dims_string(in.shape);
  if (in.byte_size != static_cast<uint64_t>(batch) * sizeof(float))
    return "THRESHOLD holds " + std::to_string(in.byte_size) + " bytes, needs " +
           std::to_string(static_cast<uint64_t>(batch) * sizeof(float));
  return std::nullopt;
}

/// A THRESHOLD value must be finite.
inline std::optional<std::string> check_threshold_value(float value) {
  if (!std::isfinite(value)) return "THRESHOLD must be finite, not " + std::to_string(value);
  return std::nullopt;
}

}  // namespace validflow::triton
