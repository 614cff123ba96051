// libtriton_validflow.so: a Triton Inference Server backend that serves validflow model files with
// validflow::Detector. The contract (tensors, parameters, errors) is in model_config.hpp and docs/serving.md.
//
// Lifecycle, as Triton drives it:
//   TRITONBACKEND_Initialize            once per process: API-version and enum check, --backend-config settings
//   TRITONBACKEND_ModelInitialize       per model: validates config.pbtxt, finds the model file
//   TRITONBACKEND_ModelInstanceInitialize  per instance (instance_group): loads a Detector on its device
//   TRITONBACKEND_ModelInstanceExecute  per batch of requests (dynamic batching): one Detector call per threshold
//   ...Finalize                         in reverse order
// Nothing throws across the C boundary: every entry point converts exceptions into TRITONSERVER_Error, and Execute
// answers every request it was given (an error response for a bad one, which never affects the others) and releases
// it exactly once.
#include "triton_c_api.h"

#include "model_config.hpp"

#include <validflow/detector.hpp>
#include <validflow/io/errors.hpp>
#include <validflow/io/image_decode.hpp>
#include <validflow/version.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim
#endif

namespace {

namespace vt = validflow::triton;
namespace fs = std::filesystem;

/// A failure to report to Triton with its error code.
class TritonFailure : public std::runtime_error {
 public:
  TritonFailure(TRITONSERVER_Error_Code code, const std::string& message) : std::runtime_error(message), code(code) {}
  TRITONSERVER_Error_Code code;
};

/// Throws a TritonFailure carrying a failed Triton call's code and message.
void check(TRITONSERVER_Error* error, const char* call) {
  if (!error) return;
  const std::string message = std::string(call) + ": " + TRITONSERVER_ErrorMessage(error);
  const TRITONSERVER_Error_Code code = TRITONSERVER_ErrorCode(error);
  TRITONSERVER_ErrorDelete(error);
  throw TritonFailure(code, message);
}

void log_at(TRITONSERVER_LogLevel level, int line, const std::string& message) {
  if (TRITONSERVER_Error* error = TRITONSERVER_LogMessage(level, __FILE__, line, message.c_str()))
    TRITONSERVER_ErrorDelete(error);
}
#define VF_LOG(level, message) log_at(TRITONSERVER_LOG_##level, __LINE__, (message))

/// The Triton error code of a validflow error kind: what the user got wrong (input, configuration, model file, a
/// device or precision this machine lacks) is INVALID_ARG / UNSUPPORTED; the rest is INTERNAL.
TRITONSERVER_Error_Code triton_code(validflow::ErrorKind kind) {
  switch (kind) {
    case validflow::ErrorKind::input:
    case validflow::ErrorKind::config:
    case validflow::ErrorKind::file:
      return TRITONSERVER_ERROR_INVALID_ARG;
    case validflow::ErrorKind::unsupported:
      return TRITONSERVER_ERROR_UNSUPPORTED;
    case validflow::ErrorKind::internal:
      break;
  }
  return TRITONSERVER_ERROR_INTERNAL;
}

/// Runs f and turns whatever it throws into a Triton error whose message starts with 'context'.
template <class F>
TRITONSERVER_Error* guarded(const std::string& context, F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const TritonFailure& e) {
    return TRITONSERVER_ErrorNew(e.code, (context + ": " + e.what()).c_str());
  } catch (const std::exception& e) {  // validflow's one classification (util/error.hpp)
    return TRITONSERVER_ErrorNew(triton_code(validflow::error_kind(e)),
                                 (context + ": " + validflow::error_message(e)).c_str());
  } catch (...) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, (context + ": unknown exception").c_str());
  }
}

/// Parses a Triton message as JSON.
nlohmann::json message_json(TRITONSERVER_Message* message, const char* what) {
  const char* base = nullptr;
  size_t size = 0;
  check(TRITONSERVER_MessageSerializeToJson(message, &base, &size), "TRITONSERVER_MessageSerializeToJson");
  try {
    return size == 0 ? nlohmann::json::object() : nlohmann::json::parse(base, base + size);
  } catch (const nlohmann::json::exception& e) {
    throw TritonFailure(TRITONSERVER_ERROR_INTERNAL, std::string(what) + " is not valid JSON: " + e.what());
  }
}

/// Parses a message the backend owns as JSON and deletes it.
nlohmann::json take_json(TRITONSERVER_Message* message, const char* what) {
  std::unique_ptr<TRITONSERVER_Message, void (*)(TRITONSERVER_Message*)> owner(message, [](TRITONSERVER_Message* m) {
    if (TRITONSERVER_Error* e = TRITONSERVER_MessageDelete(m)) TRITONSERVER_ErrorDelete(e);
  });
  return message_json(message, what);
}

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

/// The header's enum values, named by the running server: a mismatch means the declarations are wrong for it.
void verify_enums() {
  std::vector<std::string> wrong;
  const auto expect = [&](const char* got, const char* want, const char* what) {
    if (!got || std::strcmp(got, want) != 0)
      wrong.push_back(std::string(what) + " is '" + (got ? got : "(null)") + "', expected '" + want + "'");
  };
  const std::pair<TRITONSERVER_DataType, const char*> types[] = {
      {TRITONSERVER_TYPE_BOOL, "BOOL"},     {TRITONSERVER_TYPE_UINT8, "UINT8"},   {TRITONSERVER_TYPE_UINT16, "UINT16"},
      {TRITONSERVER_TYPE_UINT32, "UINT32"}, {TRITONSERVER_TYPE_UINT64, "UINT64"}, {TRITONSERVER_TYPE_INT8, "INT8"},
      {TRITONSERVER_TYPE_INT16, "INT16"},   {TRITONSERVER_TYPE_INT32, "INT32"},   {TRITONSERVER_TYPE_INT64, "INT64"},
      {TRITONSERVER_TYPE_FP16, "FP16"},     {TRITONSERVER_TYPE_FP32, "FP32"},     {TRITONSERVER_TYPE_FP64, "FP64"},
      {TRITONSERVER_TYPE_BYTES, "BYTES"},   {TRITONSERVER_TYPE_BF16, "BF16"}};
  for (const auto& [value, name] : types)
    expect(TRITONSERVER_DataTypeString(value), name, ("data type " + std::to_string(int(value))).c_str());
  const std::pair<TRITONSERVER_MemoryType, const char*> memories[] = {{TRITONSERVER_MEMORY_CPU, "CPU"},
                                                                      {TRITONSERVER_MEMORY_CPU_PINNED, "CPU_PINNED"},
                                                                      {TRITONSERVER_MEMORY_GPU, "GPU"}};
  for (const auto& [value, name] : memories)
    expect(TRITONSERVER_MemoryTypeString(value), name, ("memory type " + std::to_string(int(value))).c_str());
  const std::pair<TRITONSERVER_InstanceGroupKind, const char*> kinds[] = {
      {TRITONSERVER_INSTANCEGROUPKIND_AUTO, "AUTO"},
      {TRITONSERVER_INSTANCEGROUPKIND_CPU, "CPU"},
      {TRITONSERVER_INSTANCEGROUPKIND_GPU, "GPU"},
      {TRITONSERVER_INSTANCEGROUPKIND_MODEL, "MODEL"}};
  for (const auto& [value, name] : kinds)
    expect(TRITONSERVER_InstanceGroupKindString(value), name, ("instance kind " + std::to_string(int(value))).c_str());
  const std::pair<TRITONSERVER_ParameterType, const char*> parameter_types[] = {
      {TRITONSERVER_PARAMETER_STRING, "STRING"},
      {TRITONSERVER_PARAMETER_INT, "INT"},
      {TRITONSERVER_PARAMETER_BOOL, "BOOL"},
      {TRITONSERVER_PARAMETER_DOUBLE, "DOUBLE"},
      {TRITONSERVER_PARAMETER_BYTES, "BYTES"}};
  for (const auto& [value, name] : parameter_types)
    expect(TRITONSERVER_ParameterTypeString(value), name, ("parameter type " + std::to_string(int(value))).c_str());
  const std::pair<TRITONSERVER_Error_Code, const char*> codes[] = {
      {TRITONSERVER_ERROR_UNKNOWN, "Unknown"},
      {TRITONSERVER_ERROR_INTERNAL, "Internal"},
      {TRITONSERVER_ERROR_NOT_FOUND, "Not found"},
      {TRITONSERVER_ERROR_INVALID_ARG, "Invalid argument"},
      {TRITONSERVER_ERROR_UNAVAILABLE, "Unavailable"},
      {TRITONSERVER_ERROR_UNSUPPORTED, "Unsupported"},
      {TRITONSERVER_ERROR_ALREADY_EXISTS, "Already exists"}};
  for (const auto& [value, name] : codes) {
    TRITONSERVER_Error* error = TRITONSERVER_ErrorNew(value, "probe");
    const TRITONSERVER_Error_Code back = TRITONSERVER_ErrorCode(error);
    expect(TRITONSERVER_ErrorCodeString(error), name, ("error code " + std::to_string(int(value))).c_str());
    if (back != value)
      wrong.push_back("error code " + std::to_string(int(value)) + " came back as " + std::to_string(int(back)));
    TRITONSERVER_ErrorDelete(error);
  }
  if (!wrong.empty()) {
    std::string message = "this Triton server's enums differ from the backend's declarations (triton_c_api.h): ";
    for (size_t i = 0; i < wrong.size(); ++i) message += (i ? "; " : "") + wrong[i];
    throw TritonFailure(TRITONSERVER_ERROR_UNSUPPORTED, message);
  }
}

// ---- Metrics: what an inspection server is for, beside Triton's request counts and latencies ----

/// The backend's metric families (one per process, created at TRITONBACKEND_Initialize; empty when the server runs
/// without metrics). Each model gets its metrics of them, labelled model and version.
struct MetricFamilies {
  TRITONSERVER_MetricFamily* images = nullptr;
  TRITONSERVER_MetricFamily* anomalous = nullptr;
  TRITONSERVER_MetricFamily* invalid = nullptr;
  TRITONSERVER_MetricFamily* undecodable = nullptr;
  TRITONSERVER_MetricFamily* score = nullptr;
};
MetricFamilies families;

/// Upper bounds of the normalised-score histogram: 0.5 is every model's threshold, so the buckets read the same for
/// every product ("how many parts were close to the threshold").
constexpr double kScoreBuckets[] = {0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0};

void create_families() {
  const auto family = [](TRITONSERVER_MetricKind kind, const char* name, const char* help) {
    TRITONSERVER_MetricFamily* f = nullptr;
    check(TRITONSERVER_MetricFamilyNew(&f, kind, name, help), "TRITONSERVER_MetricFamilyNew");
    return f;
  };
  families.images = family(TRITONSERVER_METRIC_KIND_COUNTER, "validflow_images_scored",
                           "Images the validflow backend scored (warm-up samples excluded)");
  families.anomalous = family(TRITONSERVER_METRIC_KIND_COUNTER, "validflow_images_anomalous",
                              "Scored images judged anomalous (score at or above the threshold)");
  families.invalid = family(TRITONSERVER_METRIC_KIND_COUNTER, "validflow_invalid_scores",
                            "Images whose score or map was not finite (answered with an error, never a pass)");
  families.undecodable = family(TRITONSERVER_METRIC_KIND_COUNTER, "validflow_undecodable_images",
                                "IMAGE_BYTES items that are not a complete PNG, JPEG, BMP or TIFF within the limits");
  families.score = family(TRITONSERVER_METRIC_KIND_HISTOGRAM, "validflow_normalized_score",
                          "Normalised scores of the scored images (0.5: the threshold)");
}

void delete_families() {
  for (auto* f : {families.images, families.anomalous, families.invalid, families.undecodable, families.score})
    if (f)
      if (TRITONSERVER_Error* e = TRITONSERVER_MetricFamilyDelete(f)) TRITONSERVER_ErrorDelete(e);
  families = MetricFamilies{};
}

/// One model's metrics; all null when the server has no metrics.
class ModelMetrics {
 public:
  ModelMetrics(const std::string& model, uint64_t version) {
    if (!families.images) return;
    const std::string v = std::to_string(version);
    std::unique_ptr<TRITONSERVER_Parameter, void (*)(TRITONSERVER_Parameter*)> model_label(
        TRITONSERVER_ParameterNew("model", TRITONSERVER_PARAMETER_STRING, model.c_str()), TRITONSERVER_ParameterDelete);
    std::unique_ptr<TRITONSERVER_Parameter, void (*)(TRITONSERVER_Parameter*)> version_label(
        TRITONSERVER_ParameterNew("version", TRITONSERVER_PARAMETER_STRING, v.c_str()), TRITONSERVER_ParameterDelete);
    if (!model_label || !version_label) throw TritonFailure(TRITONSERVER_ERROR_INTERNAL, "cannot make metric labels");
    const TRITONSERVER_Parameter* labels[] = {model_label.get(), version_label.get()};
    const auto metric = [&](TRITONSERVER_MetricFamily* family, const TRITONSERVER_MetricArgs* args) {
      TRITONSERVER_Metric* m = nullptr;
      check(TRITONSERVER_MetricNewWithArgs(&m, family, labels, 2, args), "TRITONSERVER_MetricNewWithArgs");
      return m;
    };
    try {
      images_ = metric(families.images, nullptr);
      anomalous_ = metric(families.anomalous, nullptr);
      invalid_ = metric(families.invalid, nullptr);
      undecodable_ = metric(families.undecodable, nullptr);
      TRITONSERVER_MetricArgs* args = nullptr;
      check(TRITONSERVER_MetricArgsNew(&args), "TRITONSERVER_MetricArgsNew");
      std::unique_ptr<TRITONSERVER_MetricArgs, void (*)(TRITONSERVER_MetricArgs*)> owner(
          args, [](TRITONSERVER_MetricArgs* a) {
            if (TRITONSERVER_Error* e = TRITONSERVER_MetricArgsDelete(a)) TRITONSERVER_ErrorDelete(e);
          });
      check(TRITONSERVER_MetricArgsSetHistogram(args, kScoreBuckets, std::size(kScoreBuckets)),
            "TRITONSERVER_MetricArgsSetHistogram");
      score_ = metric(families.score, args);
    } catch (...) {
      release();
      throw;
    }
  }
  ~ModelMetrics() { release(); }
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  /// One scored image (valid or not).
  void scored(const validflow::Prediction& p) const {
    if (!p.valid) return add(invalid_, 1);
    add(images_, 1);
    if (p.anomalous) add(anomalous_, 1);
    if (score_)
      if (TRITONSERVER_Error* e = TRITONSERVER_MetricObserve(score_, p.normalized_score)) TRITONSERVER_ErrorDelete(e);
  }
  void undecodable(int64_t count) const { add(undecodable_, static_cast<double>(count)); }

 private:
  static void add(TRITONSERVER_Metric* m, double value) {
    if (m && value > 0)
      if (TRITONSERVER_Error* e = TRITONSERVER_MetricIncrement(m, value)) TRITONSERVER_ErrorDelete(e);
  }
  void release() {
    for (auto** m : {&images_, &anomalous_, &invalid_, &undecodable_, &score_}) {
      if (*m)
        if (TRITONSERVER_Error* e = TRITONSERVER_MetricDelete(*m)) TRITONSERVER_ErrorDelete(e);
      *m = nullptr;
    }
  }
  TRITONSERVER_Metric* images_ = nullptr;
  TRITONSERVER_Metric* anomalous_ = nullptr;
  TRITONSERVER_Metric* invalid_ = nullptr;
  TRITONSERVER_Metric* undecodable_ = nullptr;
  TRITONSERVER_Metric* score_ = nullptr;
};

struct ModelState {
  std::string name;
  uint64_t version = 0;
  vt::ModelSettings settings;
  fs::path model_file;
  std::unique_ptr<ModelMetrics> metrics;
};

struct InstanceState {
  ModelState* model = nullptr;
  TRITONBACKEND_ModelInstance* instance = nullptr;
  std::string name;
  std::unique_ptr<validflow::Detector> detector;
};

fs::path find_model_file(const fs::path& version_dir, const std::string& configured) {
  std::error_code ec;
  if (!fs::is_directory(version_dir, ec))
    throw TritonFailure(TRITONSERVER_ERROR_NOT_FOUND, "version directory " + version_dir.string() + " does not exist");
  if (!configured.empty()) {
    const fs::path file = version_dir / configured;
    if (!fs::is_regular_file(file, ec))
      throw TritonFailure(TRITONSERVER_ERROR_NOT_FOUND,
                          "model file " + file.string() + " (config parameter model_file) does not exist");
    return file;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(version_dir, ec))
    if (entry.is_regular_file() && entry.path().filename().string().rfind('.', 0) != 0) files.push_back(entry.path());
  if (files.size() != 1)
    throw TritonFailure(TRITONSERVER_ERROR_NOT_FOUND,
                        version_dir.string() + " holds " + std::to_string(files.size()) +
                            " files; name the model file with the config parameter model_file");
  return files.front();
}

// ---- Execute ----

using Failure = std::pair<TRITONSERVER_Error_Code, std::string>;

/// One request of a batch, from parsing to response.
struct Pending {
  TRITONBACKEND_Request* request = nullptr;
  std::optional<Failure> failure;
  int64_t batch = 0;
  std::vector<uint8_t> gathered;                  // the image input's bytes when Triton holds them in several buffers
  std::vector<cv::Mat> decoded;                   // IMAGE_BYTES: the decoded images (RGB, uint8 or float)
  std::vector<validflow::ImageView> images;       // per image: IMAGE's pixels or a decoded image
  int64_t undecodable = 0;                        // IMAGE_BYTES items that could not be decoded
  bool warmup = false;                            // the warm-up sample of model_warmup (left out of the metrics)
  bool untrusted = false;                         // scored, with a score that is not finite (failed, never a pass)
  std::vector<std::optional<double>> thresholds;  // per image
  std::vector<std::string> outputs;               // requested output names
  std::vector<validflow::Prediction> results;
  bool wants_map = false;
};

/// An input's bytes as one CPU block (a view when Triton has them in one buffer, else gathered into 'storage').
const uint8_t* input_bytes(TRITONBACKEND_Input* input, const char* name, uint32_t buffer_count, uint64_t byte_size,
                           std::vector<uint8_t>& storage) {
  const auto buffer_at = [&](uint32_t index, uint64_t* size) {
    const void* data = nullptr;
    TRITONSERVER_MemoryType type = TRITONSERVER_MEMORY_CPU;
    int64_t type_id = 0;
    check(TRITONBACKEND_InputBuffer(input, index, &data, size, &type, &type_id), "TRITONBACKEND_InputBuffer");
    if (type == TRITONSERVER_MEMORY_GPU)
      throw TritonFailure(TRITONSERVER_ERROR_UNSUPPORTED,
                          std::string(name) + " is in GPU memory (CUDA shared memory); send it in system memory");
    return static_cast<const uint8_t*>(data);
  };
  if (buffer_count == 1) {
    uint64_t size = 0;
    const uint8_t* data = buffer_at(0, &size);
    if (size != byte_size)
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, std::string(name) + " buffer holds " + std::to_string(size) +
                                                              " bytes, expected " + std::to_string(byte_size));
    return data;
  }
  storage.resize(byte_size);
  uint64_t offset = 0;
  for (uint32_t i = 0; i < buffer_count; ++i) {
    uint64_t size = 0;
    const uint8_t* data = buffer_at(i, &size);
    if (offset + size > byte_size)
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG,
                          std::string(name) + " buffers hold more than its " + std::to_string(byte_size) + " bytes");
    std::memcpy(storage.data() + offset, data, size);
    offset += size;
  }
  if (offset != byte_size)
    throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, std::string(name) + " buffers hold " + std::to_string(offset) +
                                                            " bytes, expected " + std::to_string(byte_size));
  return storage.data();
}

/// Decodes a request's IMAGE_BYTES items with the library's decoders (validflow/io/image_decode.hpp: the ones
/// `validflow predict` reads files with, so the pixels and the scores are the same). Any bad item fails the request
/// (each request is answered on its own: the others of a dynamic batch are unaffected).
void decode_request_images(Pending& p, TRITONBACKEND_Input* input, const vt::InputInfo& info, uint32_t buffers,
                           const vt::ModelSettings& settings) {
  if (auto problem = vt::check_image_bytes_input(info, settings))
    throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, *problem);
  p.batch = info.shape[0];
  const uint8_t* data = input_bytes(input, vt::kImageBytes, buffers, info.byte_size, p.gathered);
  std::vector<std::string_view> files;
  if (auto problem = vt::split_bytes_elements(data, info.byte_size, p.batch, settings.max_encoded_bytes, files))
    throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, *problem);
  const auto side = static_cast<uint64_t>(settings.max_image_side);
  std::string first_problem;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string name = "IMAGE_BYTES item " + std::to_string(i);
    try {
      cv::Mat m = validflow::io::decode_image_bytes(files[i], name, side * side);
      if (m.rows > settings.max_image_side || m.cols > settings.max_image_side)
        throw validflow::io::ImageDecodeError(name + ": " + std::to_string(m.cols) + " x " + std::to_string(m.rows) +
                                              " pixels, above max_image_side " +
                                              std::to_string(settings.max_image_side));
      p.decoded.push_back(std::move(m));
    } catch (const validflow::io::ImageDecodeError& e) {
      ++p.undecodable;
      if (first_problem.empty()) first_problem = e.what();
    }
  }
  if (!first_problem.empty())
    throw TritonFailure(
        TRITONSERVER_ERROR_INVALID_ARG,
        first_problem + (p.undecodable > 1 ? " (and " + std::to_string(p.undecodable - 1) + " more undecodable items)"
                                           : std::string()));
  for (const auto& m : p.decoded)
    p.images.push_back({m.data, m.rows, m.cols, 3, static_cast<int64_t>(m.step[0]),
                        m.depth() == CV_8U ? validflow::PixelType::uint8 : validflow::PixelType::float32});
}

/// Reads and checks a request's inputs and requested outputs; a problem becomes the request's failure.
void parse_request(Pending& p, const ModelState& model) {
  uint32_t input_count = 0;
  check(TRITONBACKEND_RequestInputCount(p.request, &input_count), "TRITONBACKEND_RequestInputCount");
  TRITONBACKEND_Input* image = nullptr;
  TRITONBACKEND_Input* image_bytes = nullptr;
  TRITONBACKEND_Input* threshold = nullptr;
  vt::InputInfo image_info, bytes_info, threshold_info;
  uint32_t image_buffers = 0, bytes_buffers = 0, threshold_buffers = 0;
  for (uint32_t i = 0; i < input_count; ++i) {
    TRITONBACKEND_Input* input = nullptr;
    check(TRITONBACKEND_RequestInputByIndex(p.request, i, &input), "TRITONBACKEND_RequestInputByIndex");
    const char* name = nullptr;
    TRITONSERVER_DataType datatype = TRITONSERVER_TYPE_INVALID;
    const int64_t* shape = nullptr;
    uint32_t dims = 0, buffers = 0;
    uint64_t bytes = 0;
    check(TRITONBACKEND_InputProperties(input, &name, &datatype, &shape, &dims, &bytes, &buffers),
          "TRITONBACKEND_InputProperties");
    vt::InputInfo info{name ? name : "", TRITONSERVER_DataTypeString(datatype), {shape, shape + dims}, bytes};
    if (info.name == vt::kImage && model.settings.raw_input) {
      image = input, image_info = info, image_buffers = buffers;
    } else if (info.name == vt::kImageBytes && model.settings.encoded_input) {
      image_bytes = input, bytes_info = info, bytes_buffers = buffers;
    } else if (info.name == vt::kThreshold && model.settings.threshold_input) {
      threshold = input, threshold_info = info, threshold_buffers = buffers;
    } else {
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, "unknown input '" + info.name + "'");
    }
  }
  if (image && image_bytes)
    throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, "the request carries both IMAGE and IMAGE_BYTES; send one");
  if (!image && !image_bytes)
    throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, model.settings.encoded_input
                                                            ? "the request has no IMAGE or IMAGE_BYTES input"
                                                            : "the request has no IMAGE input");
  if (image) {
    if (auto problem = vt::check_image_input(image_info, model.settings))
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, *problem);
    p.batch = image_info.shape[0];
    const int64_t height = image_info.shape[1], width = image_info.shape[2];
    const uint8_t* pixels = input_bytes(image, vt::kImage, image_buffers, image_info.byte_size, p.gathered);
    for (int64_t i = 0; i < p.batch; ++i) p.images.push_back({pixels + i * height * width * 3, height, width, 3, 0});
    p.warmup = p.batch == 1 && vt::is_warmup_sample(pixels, height, width);
  } else {
    decode_request_images(p, image_bytes, bytes_info, bytes_buffers, model.settings);
  }

  p.thresholds.assign(p.batch, model.settings.threshold);
  if (threshold) {
    if (auto problem = vt::check_threshold_input(threshold_info, p.batch))
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, *problem);
    std::vector<uint8_t> storage;
    const uint8_t* bytes = input_bytes(threshold, vt::kThreshold, threshold_buffers, threshold_info.byte_size, storage);
    for (int64_t i = 0; i < p.batch; ++i) {
      float value = 0;
      std::memcpy(&value, bytes + i * sizeof(float), sizeof(float));
      if (auto problem = vt::check_threshold_value(value))
        throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, *problem);
      p.thresholds[i] = value;
    }
  }

  uint32_t output_count = 0;
  check(TRITONBACKEND_RequestOutputCount(p.request, &output_count), "TRITONBACKEND_RequestOutputCount");
  for (uint32_t i = 0; i < output_count; ++i) {
    const char* name = nullptr;
    check(TRITONBACKEND_RequestOutputName(p.request, i, &name), "TRITONBACKEND_RequestOutputName");
    p.outputs.emplace_back(name ? name : "");
  }
  if (p.outputs.empty()) p.outputs = model.settings.outputs;
  for (const auto& name : p.outputs) p.wants_map = p.wants_map || name == vt::kAnomalyMap || name == vt::kDefectMask;
}

/// Fault injection for the fail-safe test of tests/triton/test_model_load.py, never set in normal use: with
/// VALIDFLOW_FAULT_NAN_SCORE set, an image whose first four bytes are FA 17 FA 17 gets a NaN score, as a model that
/// overflows on that image would (the load-time probe refuses models that overflow everywhere).
void inject_score_fault(const validflow::ImageView& view, validflow::Prediction& result) {
  static const bool enabled = std::getenv("VALIDFLOW_FAULT_NAN_SCORE") != nullptr;
  static const uint8_t magic[4] = {0xFA, 0x17, 0xFA, 0x17};
  if (!enabled || view.type != validflow::PixelType::uint8 || std::memcmp(view.data, magic, 4) != 0) return;
  result.score = std::nan("");
  result.valid = false;
  result.anomalous = true;
  result.normalized_score = 1;
}

/// Runs the detector on the images of the usable requests: one call per distinct (threshold, maps) pair, so that
/// a dynamic batch of requests without a threshold override is a single batched Detector call. If a call fails
/// for several requests, each request is retried alone so that one bad request cannot fail the others.
void compute(std::vector<Pending>& pending, const validflow::Detector& detector,
             const std::optional<double>& pixel_threshold) {
  using Key = std::tuple<bool, double, bool>;                     // has threshold, threshold, maps
  std::map<Key, std::vector<std::pair<size_t, int64_t>>> groups;  // -> (request, image)
  for (size_t r = 0; r < pending.size(); ++r) {
    Pending& p = pending[r];
    if (p.failure) continue;
    p.results.resize(p.batch);
    for (int64_t i = 0; i < p.batch; ++i) {
      const auto& t = p.thresholds[i];
      groups[Key{t.has_value(), t.value_or(0.0), p.wants_map}].emplace_back(r, i);
    }
  }
  const auto run = [&](const Key& key, const std::vector<std::pair<size_t, int64_t>>& items) {
    std::vector<validflow::ImageView> views;
    for (const auto& [r, i] : items) views.push_back(pending[r].images[i]);
    const std::optional<double> threshold =
        std::get<0>(key) ? std::optional<double>(std::get<1>(key)) : std::optional<double>();
    auto results = detector.predict(
        views,
        validflow::PredictOptions().threshold(threshold).pixel_threshold(pixel_threshold).maps(std::get<2>(key)));
    for (size_t k = 0; k < items.size(); ++k) inject_score_fault(views[k], results[k]);
    for (size_t k = 0; k < items.size(); ++k) pending[items[k].first].results[items[k].second] = std::move(results[k]);
  };
  const auto failure_of = [](const std::exception& e) -> Failure {
    if (validflow::error_kind(e) == validflow::ErrorKind::input) return {TRITONSERVER_ERROR_INVALID_ARG, e.what()};
    return {TRITONSERVER_ERROR_INTERNAL, "the detector failed: " + validflow::error_message(e)};
  };
  for (const auto& [key, items] : groups) {
    try {
      run(key, items);
      continue;
    } catch (const std::exception& e) {
      bool single_request = true;
      for (const auto& item : items) single_request = single_request && item.first == items.front().first;
      if (single_request) {
        pending[items.front().first].failure = failure_of(e);
        continue;
      }
    }
    std::map<size_t, std::vector<std::pair<size_t, int64_t>>> by_request;
    for (const auto& item : items) by_request[item.first].push_back(item);
    for (const auto& [r, own] : by_request) {
      if (pending[r].failure) continue;
      try {
        run(key, own);
      } catch (const std::exception& e) {
        pending[r].failure = failure_of(e);
      }
    }
  }
}

/// Creates one output tensor of the response and fills it.
void write_output(TRITONBACKEND_Response* response, const char* name, TRITONSERVER_DataType type,
                  const std::vector<int64_t>& shape, const void* data, uint64_t bytes) {
  TRITONBACKEND_Output* output = nullptr;
  check(TRITONBACKEND_ResponseOutput(response, &output, name, type, shape.data(), static_cast<uint32_t>(shape.size())),
        "TRITONBACKEND_ResponseOutput");
  void* buffer = nullptr;
  TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  check(TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id), "TRITONBACKEND_OutputBuffer");
  if (memory == TRITONSERVER_MEMORY_GPU)
    throw TritonFailure(
        TRITONSERVER_ERROR_UNSUPPORTED,
        std::string("output ") + name + " was asked for in GPU memory; the backend writes system memory");
  if (bytes) std::memcpy(buffer, data, bytes);
}

void write_outputs(TRITONBACKEND_Response* response, const Pending& p) {
  const int64_t b = p.batch;
  for (const auto& name : p.outputs) {
    if (name == vt::kScore || name == vt::kNormalizedScore) {
      std::vector<float> values(b);
      for (int64_t i = 0; i < b; ++i)
        values[i] = static_cast<float>(name == vt::kScore ? p.results[i].score : p.results[i].normalized_score);
      write_output(response, name.c_str(), TRITONSERVER_TYPE_FP32, {b, 1}, values.data(),
                   values.size() * sizeof(float));
    } else if (name == vt::kAnomalous) {
      std::vector<uint8_t> values(b);  // Triton's BOOL is one byte, 0 or 1
      for (int64_t i = 0; i < b; ++i) values[i] = p.results[i].anomalous ? 1 : 0;
      write_output(response, name.c_str(), TRITONSERVER_TYPE_BOOL, {b, 1}, values.data(), values.size());
    } else if (name == vt::kAnomalyMap || name == vt::kDefectMask) {
      const int64_t height = p.images.front().height, width = p.images.front().width;
      for (const auto& image : p.images)
        if (image.height != height || image.width != width)
          throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG,
                              name +
                                  " [batch, height, width] needs the request's images to have one size; these "
                                  "differ (" +
                                  std::to_string(width) + " x " + std::to_string(height) + " and " +
                                  std::to_string(image.width) + " x " + std::to_string(image.height) +
                                  "): send them in separate requests");
      const size_t plane = static_cast<size_t>(height * width);
      const bool mask = name == vt::kDefectMask;
      for (int64_t i = 0; i < b; ++i)
        if ((mask ? p.results[i].defect_mask.size() : p.results[i].anomaly_map.size()) != plane)
          throw TritonFailure(TRITONSERVER_ERROR_INTERNAL, "the detector returned no anomaly map");
      if (mask) {
        std::vector<uint8_t> values(plane * b);
        for (int64_t i = 0; i < b; ++i) std::memcpy(values.data() + i * plane, p.results[i].defect_mask.data(), plane);
        write_output(response, name.c_str(), TRITONSERVER_TYPE_UINT8, {b, height, width}, values.data(), values.size());
      } else {
        std::vector<float> values(plane * b);
        for (int64_t i = 0; i < b; ++i)
          std::memcpy(values.data() + i * plane, p.results[i].anomaly_map.data(), plane * sizeof(float));
        write_output(response, name.c_str(), TRITONSERVER_TYPE_FP32, {b, height, width}, values.data(),
                     values.size() * sizeof(float));
      }
    } else {
      throw TritonFailure(TRITONSERVER_ERROR_INVALID_ARG, "unknown output '" + name + "'");
    }
  }
}

void send(TRITONBACKEND_Response* response, TRITONSERVER_Error* error, const std::string& model) {
  if (TRITONSERVER_Error* e =
          TRITONBACKEND_ResponseSend(response, VALIDFLOW_TRITONSERVER_RESPONSE_COMPLETE_FINAL, error)) {
    VF_LOG(ERROR, "validflow model '" + model + "': sending a response failed: " + TRITONSERVER_ErrorMessage(e));
    TRITONSERVER_ErrorDelete(e);
  }
}

/// A request with an image whose score or map is not finite fails as a whole: such a part is never passed, and
/// a response never carries NaN (detector.hpp, Prediction::valid).
void fail_untrusted(Pending& p) {
  if (p.failure) return;
  for (size_t i = 0; i < p.results.size(); ++i)
    if (!p.results[i].valid) {
      p.untrusted = true;
      p.failure = Failure{TRITONSERVER_ERROR_INTERNAL, "image " + std::to_string(i) +
                                                           " of the request got a score that is not finite; the model "
                                                           "cannot judge it (an error, never a pass)"};
      return;
    }
}

/// Creates the request's response and fills its outputs; a failure to do so becomes the request's failure.
TRITONBACKEND_Response* prepare_response(Pending& p, const std::string& model) {
  fail_untrusted(p);
  TRITONBACKEND_Response* response = nullptr;
  if (TRITONSERVER_Error* e = TRITONBACKEND_ResponseNew(&response, p.request)) {
    VF_LOG(ERROR, "validflow model '" + model + "': creating a response failed: " + TRITONSERVER_ErrorMessage(e));
    TRITONSERVER_ErrorDelete(e);
    p.failure = Failure{TRITONSERVER_ERROR_INTERNAL, "no response"};
    return nullptr;
  }
  if (!p.failure) {
    try {
      write_outputs(response, p);
    } catch (const TritonFailure& e) {
      p.failure = Failure{e.code, e.what()};
    } catch (const std::exception& e) {
      p.failure = Failure{TRITONSERVER_ERROR_INTERNAL, e.what()};
    }
  }
  return response;
}

/// Sends a prepared response: its outputs, or the request's failure as an error response.
void send_response(TRITONBACKEND_Response* response, const Pending& p, const std::string& model) {
  if (!response) return;
  TRITONSERVER_Error* error = nullptr;
  if (p.failure)
    error = TRITONSERVER_ErrorNew(p.failure->first, ("validflow model '" + model + "': " + p.failure->second).c_str());
  send(response, error, model);
  if (error) TRITONSERVER_ErrorDelete(error);  // ResponseSend does not take ownership of the error
}

void release(TRITONBACKEND_Request* request, const std::string& model) {
  if (TRITONSERVER_Error* e = TRITONBACKEND_RequestRelease(request, VALIDFLOW_TRITONSERVER_REQUEST_RELEASE_ALL)) {
    VF_LOG(ERROR, "validflow model '" + model + "': releasing a request failed: " + TRITONSERVER_ErrorMessage(e));
    TRITONSERVER_ErrorDelete(e);
  }
}

ModelState* model_state(TRITONBACKEND_Model* model) {
  void* state = nullptr;
  check(TRITONBACKEND_ModelState(model, &state), "TRITONBACKEND_ModelState");
  return static_cast<ModelState*>(state);
}

InstanceState* instance_state(TRITONBACKEND_ModelInstance* instance) {
  void* state = nullptr;
  check(TRITONBACKEND_ModelInstanceState(instance, &state), "TRITONBACKEND_ModelInstanceState");
  return static_cast<InstanceState*>(state);
}

}  // namespace

extern "C" {

TRITONSERVER_Error* TRITONBACKEND_Initialize(TRITONBACKEND_Backend* backend) {
  return guarded("validflow backend", [&] {
    uint32_t major = 0, minor = 0;
    check(TRITONBACKEND_ApiVersion(&major, &minor), "TRITONBACKEND_ApiVersion");
    if (auto problem =
            vt::check_api_version(major, minor, VALIDFLOW_TRITONBACKEND_API_MAJOR, VALIDFLOW_TRITONBACKEND_API_MINOR))
      throw TritonFailure(TRITONSERVER_ERROR_UNSUPPORTED, *problem);
    verify_enums();
    TRITONSERVER_Message* message = nullptr;
    check(TRITONBACKEND_BackendConfig(backend, &message), "TRITONBACKEND_BackendConfig");
    // The backend configuration stays owned by Triton (unlike the model configuration).
    const vt::BackendSettings settings = vt::parse_backend_config(message_json(message, "the backend configuration"));
    if (settings.intra_op_threads > 0)
      validflow::Detector::set_intra_op_threads(static_cast<int>(settings.intra_op_threads));
    std::string metrics_note = "custom metrics on";
    try {
      create_families();
    } catch (const TritonFailure& e) {  // a server started with --allow-metrics=false: serve without them
      delete_families();
      metrics_note = std::string("no custom metrics (") + e.what() + ")";
    }
    VF_LOG(INFO, std::string("validflow backend ") + validflow::version_string + ": TRITONBACKEND API " +
                     std::to_string(major) + "." + std::to_string(minor) + " (declared for " +
                     std::to_string(VALIDFLOW_TRITONBACKEND_API_MAJOR) + "." +
                     std::to_string(VALIDFLOW_TRITONBACKEND_API_MINOR) +
                     "), enums verified, LibTorch intra-op threads " +
                     std::to_string(validflow::Detector::intra_op_threads()) + ", CUDA " +
                     (validflow::Detector::cuda_available() ? "available" : "not available") + ", " + metrics_note);
  });
}

TRITONSERVER_Error* TRITONBACKEND_Finalize(TRITONBACKEND_Backend*) {
  delete_families();  // after every model (and its metrics) is finalized
  VF_LOG(INFO, "validflow backend: finalized");
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  std::string context = "validflow model";
  return guarded(context, [&] {
    auto state = std::make_unique<ModelState>();
    const char* name = nullptr;
    check(TRITONBACKEND_ModelName(model, &name), "TRITONBACKEND_ModelName");
    state->name = name;
    context = "validflow model '" + state->name + "'";
    check(TRITONBACKEND_ModelVersion(model, &state->version), "TRITONBACKEND_ModelVersion");
    TRITONBACKEND_ArtifactType artifact = TRITONBACKEND_ARTIFACT_FILESYSTEM;
    const char* location = nullptr;
    check(TRITONBACKEND_ModelRepository(model, &artifact, &location), "TRITONBACKEND_ModelRepository");
    if (artifact != TRITONBACKEND_ARTIFACT_FILESYSTEM)
      throw TritonFailure(TRITONSERVER_ERROR_UNSUPPORTED, "the model repository is not a file system");
    TRITONSERVER_Message* message = nullptr;
    check(TRITONBACKEND_ModelConfig(model, 1, &message), "TRITONBACKEND_ModelConfig");
    state->settings = vt::parse_model_config(take_json(message, "the model configuration"));
    state->model_file =
        find_model_file(fs::path(location) / std::to_string(state->version), state->settings.model_file);
    state->metrics = std::make_unique<ModelMetrics>(state->name, state->version);
    const auto& s = state->settings;
    VF_LOG(INFO,
           context + " version " + std::to_string(state->version) + ": model file " + state->model_file.string() +
               ", max_batch_size " + std::to_string(s.max_batch_size) + ", inputs" + (s.raw_input ? " IMAGE" : "") +
               (s.encoded_input ? " IMAGE_BYTES" : "") +
               (s.threshold ? ", threshold " + std::to_string(*s.threshold) : std::string(", the file's threshold")) +
               (s.pixel_threshold ? ", pixel threshold " + std::to_string(*s.pixel_threshold)
                                  : std::string(", the file's pixel threshold")) +
               ", precision " + s.precision + ", intra-op threads " +
               (s.intra_op_threads > 0 ? std::to_string(s.intra_op_threads) : std::string("of the backend")));
    check(TRITONBACKEND_ModelSetState(model, state.get()), "TRITONBACKEND_ModelSetState");
    state.release();
  });
}

TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  return guarded("validflow model", [&] {
    std::unique_ptr<ModelState> state(model_state(model));
    if (state) VF_LOG(INFO, "validflow model '" + state->name + "': finalized");
  });
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
  std::string context = "validflow instance";
  return guarded(context, [&] {
    auto state = std::make_unique<InstanceState>();
    state->instance = instance;
    const char* name = nullptr;
    check(TRITONBACKEND_ModelInstanceName(instance, &name), "TRITONBACKEND_ModelInstanceName");
    state->name = name;
    context = "validflow instance '" + state->name + "'";
    TRITONBACKEND_Model* model = nullptr;
    check(TRITONBACKEND_ModelInstanceModel(instance, &model), "TRITONBACKEND_ModelInstanceModel");
    state->model = model_state(model);
    TRITONSERVER_InstanceGroupKind kind = TRITONSERVER_INSTANCEGROUPKIND_CPU;
    int32_t device = 0;
    check(TRITONBACKEND_ModelInstanceKind(instance, &kind), "TRITONBACKEND_ModelInstanceKind");
    check(TRITONBACKEND_ModelInstanceDeviceId(instance, &device), "TRITONBACKEND_ModelInstanceDeviceId");
    if (kind == TRITONSERVER_INSTANCEGROUPKIND_MODEL)
      throw TritonFailure(TRITONSERVER_ERROR_UNSUPPORTED,
                          "instance_group kind KIND_MODEL is not supported; use KIND_CPU or KIND_GPU");
    const auto options =
        validflow::DetectorOptions()
            .device(kind == TRITONSERVER_INSTANCEGROUPKIND_GPU ? "cuda:" + std::to_string(device) : "cpu")
            .precision(validflow::parse_precision(state->model->settings.precision))
            .max_input_size(state->model->settings.max_input_size)
            .max_image_pixels(state->model->settings.max_image_side * state->model->settings.max_image_side);
    static_assert(vt::kDefaultMaxInputSize == validflow::kDefaultMaxInputSize);
    state->detector = std::make_unique<validflow::Detector>(state->model->model_file.string(), options);
    char measured[96] = "";
    if (const double speedup = state->detector->precision_speedup(); speedup > 0)
      std::snprintf(measured, sizeof measured, ", %s measured %.2fx the speed of fp32 at load",
                    validflow::to_string(state->detector->precision()).c_str(), speedup);
    VF_LOG(INFO, context + ": " + state->detector->device() + ", image size " +
                     std::to_string(state->detector->image_size()) + ", file threshold " +
                     std::to_string(state->detector->threshold()) + measured);
    check(TRITONBACKEND_ModelInstanceSetState(instance, state.get()), "TRITONBACKEND_ModelInstanceSetState");
    state.release();
  });
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  return guarded("validflow instance", [&] {
    std::unique_ptr<InstanceState> state(instance_state(instance));
    if (!state) return;
    const std::string name = state->name;
    state.reset();
#if defined(__GLIBC__)
    // Each instance ran on its own thread, so glibc kept its detector's memory in that thread's arena after the
    // free: without a trim the server's RSS only grows as models are loaded and unloaded (docs/serving.md,
    // "Many models").
    malloc_trim(0);
#endif
    VF_LOG(INFO, "validflow instance '" + name + "': finalized");
  });
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                       TRITONBACKEND_Request** requests, const uint32_t request_count) {
  // Before the first request is touched an error may go back to Triton, which then keeps the requests.
  InstanceState* state = nullptr;
  if (TRITONSERVER_Error* error = guarded("validflow instance", [&] { state = instance_state(instance); }))
    return error;
  if (!state) return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "validflow instance has no state");
  // From here on the backend owns the requests: every one gets a response and is released, whatever happens.
  const uint64_t exec_start = now_ns();
  std::vector<Pending> pending(request_count);
  for (uint32_t r = 0; r < request_count; ++r) {
    pending[r].request = requests[r];
    try {
      parse_request(pending[r], *state->model);
    } catch (const TritonFailure& e) {
      pending[r].failure = Failure{e.code, e.what()};
    } catch (const std::exception& e) {
      pending[r].failure = Failure{TRITONSERVER_ERROR_INTERNAL, e.what()};
    }
  }
  if (state->model->settings.intra_op_threads > 0)  // this instance's thread only (LibTorch keeps them per thread)
    validflow::Detector::set_intra_op_threads(static_cast<int>(state->model->settings.intra_op_threads));
  const uint64_t compute_start = now_ns();
  try {
    compute(pending, *state->detector, state->model->settings.pixel_threshold);
  } catch (const std::exception& e) {
    for (auto& p : pending)
      if (!p.failure) p.failure = Failure{TRITONSERVER_ERROR_INTERNAL, e.what()};
  }
  const uint64_t compute_end = now_ns();
  // Responses are prepared, statistics reported, and only then sent: a client that asks for the statistics
  // right after its answer sees its request counted.
  const std::string& model = state->model->name;
  std::vector<TRITONBACKEND_Response*> responses(pending.size(), nullptr);
  for (size_t r = 0; r < pending.size(); ++r) responses[r] = prepare_response(pending[r], model);
  if (const ModelMetrics* metrics = state->model->metrics.get())
    for (const auto& p : pending) {
      metrics->undecodable(p.undecodable);
      if (p.warmup || (p.failure && !p.untrusted)) continue;  // only what was scored and answered on its merits
      for (const auto& result : p.results) metrics->scored(result);
    }
  const uint64_t exec_end = now_ns();
  uint64_t batch = 0;
  for (auto& p : pending) {
    if (TRITONSERVER_Error* e = TRITONBACKEND_ModelInstanceReportStatistics(instance, p.request, !p.failure, exec_start,
                                                                            compute_start, compute_end, exec_end))
      TRITONSERVER_ErrorDelete(e);
    if (!p.failure) batch += static_cast<uint64_t>(p.batch);
  }
  if (batch > 0)
    if (TRITONSERVER_Error* e = TRITONBACKEND_ModelInstanceReportBatchStatistics(instance, batch, exec_start,
                                                                                 compute_start, compute_end, exec_end))
      TRITONSERVER_ErrorDelete(e);
  for (size_t r = 0; r < pending.size(); ++r) send_response(responses[r], pending[r], model);
  for (auto& p : pending) release(p.request, state->model->name);
  return nullptr;
}

}  // extern "C"
