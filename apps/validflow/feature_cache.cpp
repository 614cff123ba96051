#include "feature_cache.hpp"

#include <validflow/io/archive_reader.hpp>

#include <fstream>
#include <set>
#include <string>

#include <sys/stat.h>

namespace validflow::app {

std::string file_fingerprint(const std::string& path) {
  if (path.empty()) return "none";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "cannot read weights file '" + path + "'");
  uint64_t hash = 1469598103934665603ull, size = 0;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      hash = (hash ^ static_cast<unsigned char>(buffer[i])) * 1099511628211ull;
    }
    size += static_cast<uint64_t>(in.gcount());
  }
  std::ostringstream s;
  s << size << "-" << std::hex << hash;
  return s.str();
}

/// FNV-1a over every image's and mask's path, size, modification time (ns) and inode: a file that changed under
/// the same name (rewritten, replaced, touched) changes it, without reading the images again.
std::string files_state_fingerprint(const Dataset& dataset) {
  uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](const std::string& text) {
    for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
    hash = (hash ^ 0xFF) * 1099511628211ull;  // a separator
  };
  const auto add = [&](const std::string& path) {
    struct stat st {};
    mix(path);
    if (path.empty() || ::stat(path.c_str(), &st) != 0) return mix("missing");
    mix(std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
        std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino));
  };
  for (const auto* split : {&dataset.train, &dataset.test, &dataset.holdout})
    for (const auto& sample : *split) {
      add(sample.path);
      if (!sample.mask_path.empty()) add(sample.mask_path);
    }
  std::ostringstream s;
  s << std::hex << hash;
  return s.str();
}

nlohmann::json extraction_request(const Dataset& dataset, const std::string& dataset_spec, const ExtractionSpec& e) {
  auto paths = [](const std::vector<Sample>& samples) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& s : samples) files.push_back(s.path);
    return files;
  };
  nlohmann::json test_labels = nlohmann::json::array();  // a label file's cut-off can change them, not the files
  for (const auto& s : dataset.test) test_labels.push_back({s.label, s.type, s.mask_path});
  return {{"dataset", dataset_spec},
          {"train_files", paths(dataset.train)},
          {"test_files", paths(dataset.test)},
          {"test_labels", test_labels},
          {"holdout_files", paths(dataset.holdout)},
          {"files_state", files_state_fingerprint(dataset)},
          {"backbone", features::to_json(e.backbone.resolved())},
          {"weights", e.weights},
          {"weights_fingerprint", file_fingerprint(e.weights)},
          {"fp16", e.fp16}};
}

void save_feature_cache(const FeatureCache& cache, const std::string& path) {
  io::TensorArchive archive;
  archive.kind = kFeatureCacheKind;
  archive.kind_version = kFeatureCacheVersion;
  archive.meta = cache.meta;
  archive.meta["test_samples"] = nlohmann::json::array();
  for (const auto& s : cache.test_samples) {
    archive.meta["test_samples"].push_back(
        {{"path", s.path}, {"label", s.label}, {"type", s.type}, {"mask", s.mask_path}});
  }
  archive.meta["holdout_images"] = cache.holdout.empty() ? 0 : cache.holdout[0].size(0);
  archive.meta["holdout_samples"] = nlohmann::json::array();
  for (const auto& s : cache.holdout_samples) archive.meta["holdout_samples"].push_back(s.path);
  for (const auto& [key, tensor] : cache.backbone_state) archive.tensors.emplace_back("backbone." + key, tensor);
  for (size_t s = 0; s < cache.train.size(); ++s) {
    archive.tensors.emplace_back("train." + std::to_string(s), cache.train[s]);
    archive.tensors.emplace_back("test." + std::to_string(s), cache.test[s]);
    if (!cache.holdout.empty()) archive.tensors.emplace_back("holdout." + std::to_string(s), cache.holdout[s]);
  }
  io::write_archive(path, archive);
}

namespace {

/// The per-scale tensors `name.0` .. `name.<scales-1>` of a feature cache, checked (rank, dtype, sizes, agreement
/// with scale 0) and as float32. Any other `name.*` tensor is refused.
TensorList scale_tensors(const io::ArchiveReader& file, const std::string& name, int64_t scales) {
  const auto found = file.tensors(name + ".");
  TensorList out;
  std::set<std::string> expected;
  for (int64_t s = 0; s < scales; ++s) {
    const auto key = name + "." + std::to_string(s);
    const auto* tensor = found.find(*expected.insert(std::to_string(s)).first);
    if (!tensor) throw file.refuse("missing tensor '" + key + "'");
    const auto& t = *tensor;
    if (t.dim() != 4 || !t.is_floating_point())
      throw file.refuse("tensor '" + key + "' must be a floating-point [N, C, H, W] tensor, got " +
                        validflow::detail::shape_string(t) + " " + c10::toString(t.scalar_type()));
    if ((t.size(0) < 1 && name != "holdout") || t.size(1) < 2 || t.size(2) < 1 || t.size(3) < 1)
      throw file.refuse("tensor '" + key +
                        "' has an empty dimension or fewer than 2 channels: " + validflow::detail::shape_string(t));
    if (s > 0 && (t.size(0) != out[0].size(0) || t.size(1) != out[0].size(1)))
      throw file.refuse("tensor '" + key + "' disagrees with scale 0 in images or channels");
    out.push_back(t.to(torch::kFloat32));
  }
  for (const auto& entry : found)
    if (!expected.count(entry.first))
      throw file.refuse("unexpected tensor '" + name + "." + entry.first + "' (" + std::to_string(scales) + " scales)");
  return out;
}

}  // namespace

FeatureCache feature_cache_from_archive(const io::TensorArchive& archive, const std::string& path) {
  const io::ArchiveReader file(archive, path, "feature cache", kFeatureCacheKind, kFeatureCacheVersion);
  const auto refuse = [&](const std::string& why) { return file.refuse(why); };
  FeatureCache cache;
  file.translate_errors([&] {
    cache.meta = archive.meta;
    const int64_t scales = io::json_integer<int64_t>(cache.meta.at("scales"), "scales");
    if (scales < 1 || scales > 8) throw refuse("invalid number of scales " + std::to_string(scales));
    const int64_t holdout = io::json_integer<int64_t>(cache.meta.at("holdout_images"), "holdout_images");
    if (holdout < 0) throw refuse("negative holdout_images");
    cache.backbone_state = file.tensors("backbone.");
    if (cache.backbone_state.empty()) throw refuse("holds no backbone weights");
    file.check_every_tensor_finite();
    cache.train = scale_tensors(file, "train", scales);
    cache.test = scale_tensors(file, "test", scales);
    if (holdout > 0) cache.holdout = scale_tensors(file, "holdout", scales);
    file.check_every_tensor_used(holdout > 0 ? "backbone.*, train.*, test.* and holdout.*"
                                             : "backbone.*, train.* and test.* (no held-out images)");
    if (cache.train[0].size(1) != cache.test[0].size(1)) throw refuse("train and test features differ in channels");
    for (const auto& s : cache.meta.at("test_samples")) {
      cache.test_samples.push_back({s.at("path").get<std::string>(), io::json_integer<int>(s.at("label"), "label"),
                                    s.at("type").get<std::string>(), s.at("mask").get<std::string>()});
      if (cache.test_samples.back().label != 0 && cache.test_samples.back().label != 1)
        throw refuse("a test sample's label is not 0 or 1");
    }
    if (static_cast<int64_t>(cache.test_samples.size()) != cache.test[0].size(0))
      throw refuse(std::to_string(cache.test_samples.size()) + " test samples for " +
                   std::to_string(cache.test[0].size(0)) + " test feature maps");
    if (holdout > 0 && cache.holdout[0].size(0) != holdout) throw refuse("holdout_images disagrees with the tensors");
    for (const auto& p : cache.meta.at("holdout_samples"))
      cache.holdout_samples.push_back(Sample{p.get<std::string>(), 0, "good", ""});
    if (static_cast<int64_t>(cache.holdout_samples.size()) != holdout)
      throw refuse("holdout_samples disagrees with holdout_images");
  });
  return cache;
}

FeatureCache load_feature_cache(const std::string& path) {
  if (!std::filesystem::exists(path))
    throw FileError(path, "feature cache '" + path + "' not found (run `validflow extract` first)");
  return feature_cache_from_archive(io::parse_archive(io::read_file_bytes(path), path), path);
}

std::optional<FeatureCache> load_matching_cache(const std::string& path, const nlohmann::json& request,
                                                std::string& reason) {
  if (!std::filesystem::exists(path)) {
    reason = "no cache yet";
    return std::nullopt;
  }
  try {
    auto cached = load_feature_cache(path);
    const auto& old = cached.meta.contains("listing") ? cached.meta.at("listing") : cached.meta.at("request");
    if (old == request) return cached;
    const auto field = [](const nlohmann::json& j, const char* key) {
      return j.is_object() && j.contains(key) ? j.at(key) : nlohmann::json();
    };
    const bool same_files = field(old, "train_files") == field(request, "train_files") &&
                            field(old, "test_files") == field(request, "test_files");
    reason = same_files && field(old, "files_state") != field(request, "files_state")
                 ? "stale: images changed since extraction (size, time or file under the same name)"
                 : "stale: extracted for another dataset, backbone, weights, image size or storage type";
  } catch (const std::exception& e) {
    reason = std::string("unreadable: ") + e.what();
  }
  return std::nullopt;
}

features::MultiScaleExtractor make_extractor(const ExtractionSpec& e) {
  return features::build_extractor(e.backbone, e.weights);
}

features::MultiScaleExtractor extractor_of(const FeatureCache& cache) {
  auto extractor =
      features::build_extractor(features::backbone_spec_from_json(cache.meta.at("request").at("backbone")));
  load_state_dict(extractor->backbone.module(), cache.backbone_state);
  extractor->eval();
  return extractor;
}

torch::Tensor image_tensor(const cv::Mat& rgb) {
  if (rgb.type() == CV_8UC3) {
    return torch::from_blob(const_cast<uint8_t*>(rgb.ptr<uint8_t>()), {rgb.rows, rgb.cols, 3},
                            {static_cast<int64_t>(rgb.step[0]), 3, 1}, torch::kByte)
        .clone();
  }
  if (rgb.type() == CV_32FC3) {
    return torch::from_blob(const_cast<float*>(rgb.ptr<float>()), {rgb.rows, rgb.cols, 3},
                            {static_cast<int64_t>(rgb.step[0] / sizeof(float)), 3, 1}, torch::kFloat)
        .permute({2, 0, 1})
        .clone();
  }
  throw std::invalid_argument("image_tensor: expected a CV_8UC3 or CV_32FC3 image");
}

torch::Tensor load_image_batch(const std::vector<Sample>& samples, size_t start, size_t end, int64_t image_size) {
  std::vector<torch::Tensor> images;
  for (size_t i = start; i < end; ++i) images.push_back(image_tensor(decode_image(samples[i].path)));
  return features::prepare_images(images, image_size, image_size);
}

size_t calibrate_random_backbone(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& train,
                                 int64_t image_size, int64_t batch_size, size_t max_images) {
  std::vector<torch::Tensor> batches;
  const size_t n = std::min(train.size(), max_images);
  for (size_t start = 0; start < n; start += static_cast<size_t>(batch_size)) {
    batches.push_back(load_image_batch(train, start, std::min(n, start + static_cast<size_t>(batch_size)), image_size));
  }
  extractor.calibrate_batchnorm(batches);
  return n;
}

TensorList extract_features(features::MultiScaleExtractorImpl& extractor, const std::vector<Sample>& samples,
                            int64_t image_size, int64_t batch_size, bool fp16, const std::string& label) {
  std::vector<TensorList> batches;
  ProgressBar bar(samples.size(), label, {"img"});
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < samples.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(samples.size(), start + static_cast<size_t>(batch_size));
    auto features = extractor.forward(load_image_batch(samples, start, end, image_size));
    if (fp16) {
      for (auto& f : features) f = f.to(torch::kHalf);
    }
    batches.push_back(std::move(features));
    bar.update(end);
  }
  bar.finish();
  TensorList out;
  for (size_t s = 0; s < batches.at(0).size(); ++s) {
    TensorList per_scale;
    for (const auto& b : batches) per_scale.push_back(b[s]);
    out.push_back(torch::cat(per_scale, 0));
  }
  return out;
}

}  // namespace validflow::app
