// The Triton backend's contract without a server (CTest label triton): model-configuration validation on the JSON
// Triton 2.51 hands to the backend, the per-request input checks, the API-version rule, the backend settings and
// the model repository writer. The same code then runs inside the real server in test_server.py and friends.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "model_config.hpp"
#include "model_repository.hpp"
#include "test_util.hpp"  // tests/: TempDir

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

namespace vt = validflow::triton;
namespace fs = std::filesystem;
using nlohmann::json;
using validflow::test::TempDir;

namespace {

// The configuration JSON of a model written by write_model_repository, as Triton 2.51 passed it to
// TRITONBACKEND_ModelConfig (GET /v2/models/demo/config returns the same; recorded from the real server).
const char* const kTritonConfig = R"({"name":"demo","platform":"","backend":"validflow","runtime":"",
"version_policy":{"latest":{"num_versions":1}},"max_batch_size":8,"input":[{"name":"IMAGE","data_type":"TYPE_UINT8",
"format":"FORMAT_NONE","dims":[-1,-1,3],"is_shape_tensor":false,"allow_ragged_batch":true,"optional":false,
"is_non_linear_format_io":false},{"name":"THRESHOLD","data_type":"TYPE_FP32","format":"FORMAT_NONE","dims":[1],
"is_shape_tensor":false,"allow_ragged_batch":false,"optional":true,"is_non_linear_format_io":false}],"output":[
{"name":"SCORE","data_type":"TYPE_FP32","dims":[1],"label_filename":"","is_shape_tensor":false,
"is_non_linear_format_io":false},{"name":"NORMALIZED_SCORE","data_type":"TYPE_FP32","dims":[1],"label_filename":"",
"is_shape_tensor":false,"is_non_linear_format_io":false},{"name":"ANOMALOUS","data_type":"TYPE_BOOL","dims":[1],
"label_filename":"","is_shape_tensor":false,"is_non_linear_format_io":false},{"name":"ANOMALY_MAP",
"data_type":"TYPE_FP32","dims":[-1,-1],"label_filename":"","is_shape_tensor":false,"is_non_linear_format_io":false}],
"batch_input":[],"batch_output":[],"optimization":{"priority":"PRIORITY_DEFAULT","input_pinned_memory":{"enable":true},
"output_pinned_memory":{"enable":true},"gather_kernel_buffer_threshold":0,"eager_batching":false},
"dynamic_batching":{"preferred_batch_size":[8],"max_queue_delay_microseconds":2000,"preserve_ordering":false,
"priority_levels":0,"default_priority_level":0,"priority_queue_policy":{}},"instance_group":[{"name":"demo_0",
"kind":"KIND_CPU","count":1,"gpus":[],"secondary_devices":[],"profile":[],"passive":false,"host_policy":""}],
"default_model_filename":"","cc_model_filenames":{},"metric_tags":{},"parameters":{"model_file":{"string_value":
"model.vfm"},"max_image_side":{"string_value":"4096"},"precision":{"string_value":"fp32"}},"model_warmup":[]})";

json config() { return json::parse(kTritonConfig); }

std::string error_of(const json& c) {
  try {
    vt::parse_model_config(c);
  } catch (const vt::ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

json& tensor(json& c, const char* list, const std::string& name) {
  for (auto& t : c[list])
    if (t["name"] == name) return t;
  throw std::runtime_error("no tensor " + name);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("config: the exported configuration as Triton passes it is accepted") {
  const vt::ModelSettings s = vt::parse_model_config(config());
  CHECK(s.name == "demo");
  CHECK(s.max_batch_size == 8);
  CHECK(s.model_file == "model.vfm");
  CHECK(s.precision == "fp32");
  CHECK(s.max_image_side == 4096);
  CHECK_FALSE(s.threshold.has_value());
  CHECK(s.threshold_input);
  CHECK(s.outputs == std::vector<std::string>{"SCORE", "NORMALIZED_SCORE", "ANOMALOUS", "ANOMALY_MAP"});
}

TEST_CASE("config: IMAGE_BYTES beside IMAGE, or alone") {
  json c = config();
  const json bytes = {{"name", "IMAGE_BYTES"}, {"data_type", "TYPE_STRING"}, {"dims", {1}}, {"optional", true}};
  c["input"].push_back(bytes);
  CHECK(error_of(c) == "config IMAGE and IMAGE_BYTES must both be optional: true (a request carries one of them)");
  tensor(c, "input", "IMAGE")["optional"] = true;
  const auto s = vt::parse_model_config(c);
  CHECK((s.raw_input && s.encoded_input));
  tensor(c, "input", "IMAGE_BYTES")["data_type"] = "TYPE_UINT8";
  CHECK(error_of(c) == "config IMAGE_BYTES must have data_type TYPE_STRING, not TYPE_UINT8");
  c = config(), c["input"].erase(0), c["input"].push_back(bytes);
  CHECK(error_of(c) == "config IMAGE_BYTES must not be optional (it is the only image input)");
  tensor(c, "input", "IMAGE_BYTES")["optional"] = false;
  CHECK((!vt::parse_model_config(c).raw_input && vt::parse_model_config(c).encoded_input));
}

TEST_CASE("requests: IMAGE_BYTES items (4-byte little-endian length, then the file)") {
  vt::ModelSettings s = vt::parse_model_config(config());
  s.max_encoded_bytes = 10;
  const auto info = [](std::vector<int64_t> shape, std::string type = "BYTES") {
    return vt::InputInfo{"IMAGE_BYTES", type, shape, 0};
  };
  CHECK_FALSE(vt::check_image_bytes_input(info({2, 1}), s));
  CHECK(*vt::check_image_bytes_input(info({2, 1}, "UINT8"), s) == "IMAGE_BYTES must be BYTES, not UINT8");
  CHECK(*vt::check_image_bytes_input(info({2}), s) ==
        "IMAGE_BYTES must have shape [batch, 1] (one encoded image per item), not [2]");
  CHECK(*vt::check_image_bytes_input(info({9, 1}), s) == "IMAGE_BYTES batch 9 exceeds max_batch_size 8");
  const auto element = [](const std::string& bytes) {
    const auto n = static_cast<uint32_t>(bytes.size());
    return std::string{char(n & 0xFF), char(n >> 8 & 0xFF), char(n >> 16 & 0xFF), char(n >> 24)} + bytes;
  };
  const auto split = [&](const std::string& buffer, int64_t count, std::vector<std::string_view>& out) {
    return vt::split_bytes_elements(reinterpret_cast<const uint8_t*>(buffer.data()), buffer.size(), count,
                                    s.max_encoded_bytes, out);
  };
  std::vector<std::string_view> items;
  const std::string two = element("abc") + element("0123456789");
  CHECK_FALSE(split(two, 2, items));
  REQUIRE(items.size() == 2);
  CHECK(items[0] == "abc");
  CHECK(items[1] == "0123456789");
  CHECK(*split(two, 3, items) == "IMAGE_BYTES item 2: the tensor ends before its length");
  CHECK(*split(two, 1, items) == "IMAGE_BYTES holds 14 bytes after its last item");
  CHECK(*split(element("0123456789A"), 1, items) == "IMAGE_BYTES item 0 holds 11 bytes, above max_encoded_bytes 10");
  CHECK(*split(element("") + element("a"), 2, items) == "IMAGE_BYTES item 0 is empty (no image file)");
  CHECK(*split(element("abc").substr(0, 5), 1, items) == "IMAGE_BYTES item 0 says 3 bytes, the tensor holds 1");
}

TEST_CASE("warm-up sample: fixed, and recognised only whole") {
  const std::string sample = vt::warmup_sample(8);
  REQUIRE(sample.size() == 8 * 8 * 3);
  CHECK(sample == vt::warmup_sample(8));
  const auto* bytes = reinterpret_cast<const uint8_t*>(sample.data());
  CHECK(vt::is_warmup_sample(bytes, 8, 8));
  CHECK_FALSE(vt::is_warmup_sample(bytes, 8, 4));
  std::string changed = sample;
  changed.back() = static_cast<char>(changed.back() ^ 1);
  CHECK_FALSE(vt::is_warmup_sample(reinterpret_cast<const uint8_t*>(changed.data()), 8, 8));
  CHECK(vt::warmup_sample_file_name(384) == "validflow_warmup_384x384.rgb");
}

TEST_CASE("config: parameters") {
  json c = config();
  c["parameters"]["threshold"] = {{"string_value", "2.5"}};
  c["parameters"]["pixel_threshold"] = {{"string_value", "1.25"}};
  c["parameters"]["intra_op_threads"] = {{"string_value", "2"}};
  c["parameters"]["max_encoded_bytes"] = {{"string_value", "1000000"}};
  c["parameters"]["precision"] = {{"string_value", "bf16"}};
  c["parameters"]["max_image_side"] = {{"string_value", "1024"}};
  const auto s = vt::parse_model_config(c);
  CHECK(s.threshold == 2.5);
  CHECK(s.pixel_threshold == 1.25);
  CHECK(s.intra_op_threads == 2);
  CHECK(s.max_encoded_bytes == 1000000);
  CHECK(s.precision == "bf16");
  CHECK(s.max_image_side == 1024);
  c["parameters"].erase("model_file");
  CHECK(vt::parse_model_config(c).model_file.empty());  // then the version directory's only file
}

TEST_CASE("config: int64 fields written as strings (protobuf JSON) are read too") {
  json c = config();
  c["max_batch_size"] = "4";
  tensor(c, "input", "IMAGE")["dims"] = {"-1", "-1", "3"};
  CHECK(vt::parse_model_config(c).max_batch_size == 4);
}

TEST_CASE("config: every refusal names the field and the problem") {
  json c;
  c = config(), tensor(c, "input", "IMAGE")["data_type"] = "TYPE_FP32";
  CHECK(error_of(c) == "config IMAGE must have data_type TYPE_UINT8, not TYPE_FP32");
  c = config(), tensor(c, "input", "IMAGE")["dims"] = {-1, -1};
  CHECK(error_of(c) ==
        "config IMAGE must have dims [-1, -1, 3], not [-1, -1] (the batch dimension comes from "
        "max_batch_size)");
  c = config(), tensor(c, "input", "IMAGE")["dims"] = {256, 256, 3};  // a fixed size is allowed
  CHECK(error_of(c) == "(accepted)");
  c = config(), tensor(c, "input", "IMAGE")["dims"] = {0, 256, 3};
  CHECK(error_of(c).find("config IMAGE must have dims") == 0);
  c = config(), tensor(c, "input", "IMAGE")["optional"] = true;
  CHECK(error_of(c) == "config IMAGE must not be optional (it is the only image input)");
  c = config(), tensor(c, "input", "THRESHOLD")["optional"] = false;
  CHECK(error_of(c) == "config THRESHOLD must be optional: true");
  c = config(), tensor(c, "input", "THRESHOLD")["dims"] = {2};
  CHECK(error_of(c).find("config THRESHOLD must have dims [1], not [2]") == 0);
  c = config(), c["input"].push_back({{"name", "MASK"}, {"data_type", "TYPE_BOOL"}, {"dims", {1}}});
  CHECK(error_of(c) == "config input 'MASK' is unknown (inputs: IMAGE and/or IMAGE_BYTES, optional THRESHOLD)");
  c = config(), c["input"].erase(0);
  CHECK(error_of(c) ==
        "config has no input IMAGE (TYPE_UINT8, dims [-1, -1, 3]) or IMAGE_BYTES (TYPE_STRING, dims [1])");
  c = config(), tensor(c, "output", "ANOMALOUS")["data_type"] = "TYPE_INT8";
  CHECK(error_of(c) == "config ANOMALOUS must have data_type TYPE_BOOL, not TYPE_INT8");
  c = config(), tensor(c, "output", "ANOMALY_MAP")["name"] = "HEATMAP";
  CHECK(error_of(c) ==
        "config output 'HEATMAP' is unknown (outputs: SCORE, NORMALIZED_SCORE, ANOMALOUS, ANOMALY_MAP, DEFECT_MASK)");
  c = config(), c["output"] = json::array();
  CHECK(error_of(c) == "config has no outputs (SCORE, NORMALIZED_SCORE, ANOMALOUS, ANOMALY_MAP, DEFECT_MASK)");
  c = config(), c["max_batch_size"] = 0;
  CHECK(error_of(c) == "config max_batch_size must be at least 1 (the backend expects a batch dimension), not 0");
  c = config(), tensor(c, "input", "IMAGE")["reshape"] = {{"shape", {1}}};
  CHECK(error_of(c) == "config IMAGE: reshape is not supported");
  c = config(), c["parameters"]["threshold"] = {{"string_value", "high"}};
  CHECK(error_of(c) == "config parameter threshold must be a finite number, not 'high'");
  c = config(), c["parameters"]["threshold"] = {{"string_value", "inf"}};
  CHECK(error_of(c) == "config parameter threshold must be a finite number, not 'inf'");
  c = config(), c["parameters"]["threshold"] = {{"string_value", "1.5x"}};
  CHECK(error_of(c) == "config parameter threshold must be a finite number, not '1.5x'");
  c = config(), c["parameters"]["precision"] = {{"string_value", "fp16"}};
  CHECK(error_of(c) == "config parameter precision must be fp32 or bf16, not 'fp16'");
  c = config(), c["parameters"]["max_image_side"] = {{"string_value", "-3"}};
  CHECK(error_of(c) == "config parameter max_image_side must be a positive integer, not '-3'");
  c = config(), c["parameters"]["model_file"] = {{"string_value", "../other/model.vfm"}};
  CHECK(error_of(c) ==
        "config parameter model_file must be a file name in the version directory, not "
        "'../other/model.vfm'");
  c = config(), c["parameters"]["treshold"] = {{"string_value", "3"}};
  CHECK(error_of(c) ==
        "config parameter 'treshold' is unknown (parameters: model_file, threshold, pixel_threshold, precision, "
        "max_image_side, max_input_size, max_encoded_bytes, intra_op_threads)");
  c = config(), c["parameters"]["pixel_threshold"] = {{"string_value", "nan"}};
  CHECK(error_of(c) == "config parameter pixel_threshold must be a finite number, not 'nan'");
  c = config(), c["parameters"]["intra_op_threads"] = {{"string_value", "0"}};
  CHECK(error_of(c) == "config parameter intra_op_threads must be a positive integer, not '0'");
  c = config(), c["parameters"]["intra_op_threads"] = {{"string_value", "5000"}};
  CHECK(error_of(c) == "config parameter intra_op_threads must be at most 1024, not 5000");
  c = config(), c["parameters"]["max_encoded_bytes"] = {{"string_value", "4294967296"}};
  CHECK(error_of(c) == "config parameter max_encoded_bytes must be below 2 GiB, not 4294967296");
  c = config(), c["parameters"]["threshold"] = {{"int_value", 3}};
  CHECK(error_of(c) == "config parameter threshold has no string_value");
}

TEST_CASE("requests: IMAGE checks") {
  const vt::ModelSettings s = vt::parse_model_config(config());
  const auto image = [](std::vector<int64_t> shape, uint64_t bytes, std::string type = "UINT8") {
    return vt::InputInfo{"IMAGE", type, shape, bytes};
  };
  CHECK_FALSE(vt::check_image_input(image({2, 64, 48, 3}, 2 * 64 * 48 * 3), s));
  CHECK(*vt::check_image_input(image({1, 4, 4, 3}, 48, "FP32"), s) == "IMAGE must be UINT8, not FP32");
  CHECK(*vt::check_image_input(image({4, 4, 3}, 48), s) ==
        "IMAGE must have shape [batch, height, width, 3], not [4, 4, 3]");
  CHECK(*vt::check_image_input(image({1, 4, 4, 1}, 16), s) ==
        "IMAGE must have shape [batch, height, width, 3], not [1, 4, 4, 1]");
  CHECK(*vt::check_image_input(image({1, 0, 4, 3}, 0), s) == "IMAGE has an empty dimension: shape [1, 0, 4, 3]");
  CHECK(*vt::check_image_input(image({9, 4, 4, 3}, 9 * 48), s) == "IMAGE batch 9 exceeds max_batch_size 8");
  CHECK(*vt::check_image_input(image({1, 4097, 4, 3}, 4097 * 12), s) ==
        "IMAGE height and width must be at most max_image_side 4096, not 4097 x 4");
  CHECK(*vt::check_image_input(image({1, 4, 4, 3}, 47), s) == "IMAGE holds 47 bytes, its shape [1, 4, 4, 3] needs 48");
  // Enormous dimensions do not overflow the byte count: the side limit refuses them first.
  CHECK(vt::check_image_input(image({1, int64_t(1) << 40, int64_t(1) << 40, 3}, 12), s)->find("max_image_side") !=
        std::string::npos);
  vt::ModelSettings unlimited = s;
  unlimited.max_image_side = std::numeric_limits<int64_t>::max();
  CHECK(*vt::check_image_input(image({1, int64_t(1) << 40, int64_t(1) << 40, 3}, 12), unlimited) ==
        "IMAGE shape [1, 1099511627776, 1099511627776, 3] is too large");
}

TEST_CASE("requests: THRESHOLD checks") {
  CHECK_FALSE(vt::check_threshold_input({"THRESHOLD", "FP32", {2, 1}, 8}, 2));
  CHECK(*vt::check_threshold_input({"THRESHOLD", "FP64", {2, 1}, 16}, 2) == "THRESHOLD must be FP32, not FP64");
  CHECK(*vt::check_threshold_input({"THRESHOLD", "FP32", {1, 1}, 4}, 2) ==
        "THRESHOLD must have shape [2, 1] (one per image), not [1, 1]");
  CHECK(*vt::check_threshold_input({"THRESHOLD", "FP32", {2, 1}, 4}, 2) == "THRESHOLD holds 4 bytes, needs 8");
  CHECK_FALSE(vt::check_threshold_value(-3.5f));
  CHECK(vt::check_threshold_value(std::numeric_limits<float>::quiet_NaN()));
  CHECK(vt::check_threshold_value(std::numeric_limits<float>::infinity()));
}

TEST_CASE("API version: same major, server minor at least ours") {
  CHECK_FALSE(vt::check_api_version(1, 19, 1, 19));
  CHECK_FALSE(vt::check_api_version(1, 20, 1, 19));
  CHECK(*vt::check_api_version(1, 18, 1, 19) ==
        "built for TRITONBACKEND API 1.19 (needs a server with API major 1, minor >= 19); this Triton server has API "
        "1.18");
  CHECK(vt::check_api_version(2, 19, 1, 19));
  CHECK(vt::check_api_version(0, 30, 1, 19));
}

TEST_CASE("backend config: --backend-config=validflow,intra-op-threads=N") {
  CHECK(vt::parse_backend_config(json::object()).intra_op_threads == 0);
  // Triton adds its own settings to cmdline; they are ignored.
  const json c = {
      {"cmdline", {{"auto-complete-config", "true"}, {"backend-directory", "/opt"}, {"intra-op-threads", "2"}}}};
  CHECK(vt::parse_backend_config(c).intra_op_threads == 2);
  try {
    vt::parse_backend_config({{"cmdline", {{"intra-op-threads", "0"}}}});
    FAIL("accepted 0 threads");
  } catch (const vt::ConfigError& e) {
    CHECK(std::string(e.what()) == "backend config intra-op-threads must be a positive integer, not '0'");
  }
}

TEST_CASE("repository: the writer's files") {
  TempDir tmp;
  const fs::path model = tmp.path / "detector.vfm";
  std::ofstream(model, std::ios::binary) << std::string("model bytes\0\x01\x02", 14);
  vt::RepositoryOptions o;
  o.name = "bottles";
  const auto entry = vt::write_model_repository(model, tmp.path / "repo", o);
  CHECK(entry.config == tmp.path / "repo" / "bottles" / "config.pbtxt");
  CHECK(entry.model_file == tmp.path / "repo" / "bottles" / "1" / "model.vfm");
  CHECK(slurp(entry.model_file) == slurp(model));
  const std::string text = slurp(entry.config);
  CHECK(text == vt::model_config_text(o, "model.vfm"));
  for (const char* line : {"name: \"bottles\"\n", "backend: \"validflow\"\n", "max_batch_size: 8\n",
                           "    dims: [ -1, -1, 3 ]\n", "    data_type: TYPE_BOOL\n", "    dims: [ -1, -1 ]\n",
                           "    optional: true\n", "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n",
                           "    count: 1\n    kind: KIND_CPU\n", "value: { string_value: \"model.vfm\" }"})
    CHECK(text.find(line) != std::string::npos);
  CHECK(text.find("threshold\"") == std::string::npos);
  CHECK(text.find("name: \"IMAGE_BYTES\"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n    optional: true") !=
        std::string::npos);
  CHECK(text.find("model_warmup") == std::string::npos);  // warmup_size 0
  // The configuration the writer writes is one the backend accepts (IMAGE and IMAGE_BYTES both optional).
  // No temporary files are left behind.
  size_t files = 0;
  for (const auto& f : fs::recursive_directory_iterator(tmp.path / "repo")) files += f.is_regular_file();
  CHECK(files == 2);

  SECTION("warm-up sample, threads and pixel threshold") {
    o.overwrite = true;
    o.warmup_size = 16;
    o.intra_op_threads = 2;
    o.pixel_threshold = 1.5;
    vt::write_model_repository(model, tmp.path / "repo", o);
    const std::string with = slurp(entry.config);
    CHECK(with.find("model_warmup [\n  {\n    name: \"validflow_warmup\"\n    batch_size: 1\n    inputs {\n      key: "
                    "\"IMAGE\"\n      value {\n        data_type: TYPE_UINT8\n        dims: [ 16, 16, 3 ]\n        "
                    "input_data_file: \"validflow_warmup_16x16.rgb\"") != std::string::npos);
    const fs::path sample = tmp.path / "repo" / "bottles" / "warmup" / "validflow_warmup_16x16.rgb";
    CHECK(slurp(sample) == vt::warmup_sample(16));
    CHECK(with.find("key: \"intra_op_threads\"\n    value: { string_value: \"2\" }") != std::string::npos);
    CHECK(with.find("key: \"pixel_threshold\"\n    value: { string_value: \"1.5\" }") != std::string::npos);
    o.warmup_size = 8;  // another input size: the old sample goes once the new configuration is in place
    vt::write_model_repository(model, tmp.path / "repo", o);
    CHECK_FALSE(fs::exists(sample));
    CHECK(fs::exists(sample.parent_path() / "validflow_warmup_8x8.rgb"));
    o.warmup_size = 5000;
    CHECK_THROWS_WITH(vt::write_model_repository(model, tmp.path / "repo", o),
                      "warm-up size must be in 0 .. max_image_side, not 5000");
  }

  SECTION("an existing entry is not replaced unless asked") {
    try {
      vt::write_model_repository(model, tmp.path / "repo", o);
      FAIL("overwrote");
    } catch (const vt::RepositoryError& e) {
      CHECK(std::string(e.what()) == entry.config.string() + " already exists (overwrite it, or choose another name)");
    }
    o.overwrite = true;
    o.instance_count = 3;
    o.gpu = true;
    o.dynamic_batching = false;
    o.threshold = 0.1 + 0.2;  // needs all 17 digits
    vt::write_model_repository(model, tmp.path / "repo", o);
    const std::string again = slurp(entry.config);
    CHECK(again.find("    count: 3\n    kind: KIND_GPU\n") != std::string::npos);
    CHECK(again.find("dynamic_batching") == std::string::npos);
    CHECK(again.find("key: \"threshold\"\n    value: { string_value: \"0.30000000000000004\" }") != std::string::npos);
  }
  SECTION("a new version next to the old one: the configuration is rewritten, version 1 stays") {
    o.version = 2;
    CHECK_THROWS_AS(vt::write_model_repository(model, tmp.path / "repo", o), vt::RepositoryError);  // config exists
    o.overwrite = true;
    const auto v2 = vt::write_model_repository(model, tmp.path / "repo", o);
    CHECK(v2.model_file == tmp.path / "repo" / "bottles" / "2" / "model.vfm");
    CHECK(fs::exists(entry.model_file));
  }
}

TEST_CASE("repository: an entry is replaced whole, and only a validflow one") {
  TempDir tmp;
  const fs::path model = tmp.path / "detector.vfm";
  std::ofstream(model, std::ios::binary) << "first model";
  const fs::path repo = tmp.path / "repo";
  vt::RepositoryOptions o;
  o.name = "bottles";
  o.overwrite = true;
  const auto entry = vt::write_model_repository(model, repo, o);
  std::ofstream(entry.model_file.parent_path() / "stale.txt") << "left by hand";
  fs::create_directories(repo / "bottles" / "2");
  std::ofstream(repo / "bottles" / "2" / "model.vfm") << "version 2";
  const auto listing = [&] {
    std::vector<std::string> files;
    for (const auto& f : fs::recursive_directory_iterator(repo))
      files.push_back(fs::relative(f.path(), repo).string() + (f.is_regular_file() ? "=" + slurp(f.path()) : ""));
    std::sort(files.begin(), files.end());
    return files;
  };

  SECTION("replaced: the version directory holds the new file only, other versions stay, no staging is left") {
    std::ofstream(model, std::ios::binary | std::ios::trunc) << "second model";
    o.max_batch_size = 4;
    vt::write_model_repository(model, repo, o);
    CHECK(listing() == std::vector<std::string>{"bottles", "bottles/1", "bottles/1/model.vfm=second model", "bottles/2",
                                                "bottles/2/model.vfm=version 2",
                                                "bottles/config.pbtxt=" + vt::model_config_text(o, "model.vfm")});
  }
  SECTION("staging folders of killed exports are removed, a running one's are kept") {
    const fs::path dead = repo / "bottles" / ".export.validflow-tmp.999999999.0";  // beyond pid_max: no such process
    const fs::path alive = repo / "bottles" / ".export.validflow-tmp.1.0";         // pid 1 exists
    const fs::path unmarked = repo / "bottles" / ".export.validflow-tmp.999999999.1";  // not staged by us: kept
    for (const auto& d : {dead, alive}) {
      fs::create_directories(d / "version");
      std::ofstream(d / validflow::io::kOwnedFolderMarker) << "staged";
    }
    fs::create_directories(unmarked);
    vt::write_model_repository(model, repo, o);
    CHECK_FALSE(fs::exists(dead));
    CHECK(fs::exists(alive));
    CHECK(fs::exists(unmarked));
  }
  SECTION("a refused write leaves the entry as it was") {
    const auto before = listing();
    CHECK_THROWS_AS(vt::write_model_repository(tmp.path / "missing.vfm", repo, o), vt::RepositoryError);
    CHECK(listing() == before);
    o.precision = "fp8";
    CHECK_THROWS_AS(vt::write_model_repository(model, repo, o), vt::RepositoryError);
    CHECK(listing() == before);
  }
  SECTION("another backend's entry, or a folder without config.pbtxt, is never replaced") {
    std::ofstream(entry.config, std::ios::trunc) << "name: \"bottles\"\nbackend: \"onnxruntime\"\n";
    const auto before = listing();
    try {
      vt::write_model_repository(model, repo, o);
      FAIL("replaced another backend's entry");
    } catch (const vt::RepositoryError& e) {
      CHECK(std::string(e.what()) == entry.config.string() +
                                         " is not a validflow model's configuration (backend \"validflow\"): not "
                                         "replaced (choose another name)");
    }
    CHECK(listing() == before);
    fs::remove(entry.config);
    try {
      vt::write_model_repository(model, repo, o);
      FAIL("replaced a folder without config.pbtxt");
    } catch (const vt::RepositoryError& e) {
      CHECK(std::string(e.what()) ==
            (repo / "bottles").string() + " exists without a config.pbtxt: not replaced (choose another name)");
    }
  }
  SECTION("a repository that is a file") {
    std::ofstream(tmp.path / "file") << "x";
    try {
      vt::write_model_repository(model, tmp.path / "file", o);
      FAIL("wrote into a file");
    } catch (const vt::RepositoryError& e) {
      CHECK(std::string(e.what()) == (tmp.path / "file").string() + " is not a directory");
    }
  }
}

TEST_CASE("repository: refusals") {
  TempDir tmp;
  const fs::path model = tmp.path / "m.vfm";
  std::ofstream(model) << "x";
  const auto error_of_write = [&](vt::RepositoryOptions o, fs::path file) -> std::string {
    try {
      vt::write_model_repository(file, tmp.path / "repo", o);
    } catch (const vt::RepositoryError& e) {
      return e.what();
    }
    return "(written)";
  };
  vt::RepositoryOptions o;
  CHECK(error_of_write(o, tmp.path / "none.vfm") ==
        "model file " + (tmp.path / "none.vfm").string() + " does not exist");
  o.name = "../escape";
  CHECK(error_of_write(o, model) == "model name '../escape' must not be empty or start with '.'");
  o.name = "a/b";
  CHECK(error_of_write(o, model) == "model name 'a/b' may only hold letters, digits, '_', '-' and '.'");
  o.name = "ok";
  o.max_batch_size = 0;
  CHECK(error_of_write(o, model) == "max_batch_size must be at least 1, not 0");
  o.max_batch_size = 8, o.instance_count = 0;
  CHECK(error_of_write(o, model) == "instance count must be at least 1, not 0");
  o.instance_count = 1, o.threshold = std::numeric_limits<double>::quiet_NaN();
  CHECK(error_of_write(o, model) == "threshold must be finite");
  o.threshold.reset(), o.precision = "int8";
  CHECK(error_of_write(o, model) == "precision must be fp32 or bf16, not 'int8'");
  CHECK_FALSE(fs::exists(tmp.path / "repo"));  // nothing written by a refused export
}
