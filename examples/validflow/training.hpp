#pragma once
// Training of a flow on cached features (the official CS-Flow recipe by default): Adam (lr 2e-4, eps 1e-4,
// weight decay 1e-5, betas 0.9/0.999), batch 16, global gradient-norm clipping at 1.0, NLL per dimension.
//
// Checkpoints hold the model configuration (JSON), the feature layout it was trained on, the model and
// optimizer state, the finished epoch and the loss history. They are written to a temp file and renamed,
// every `checkpoint_every` epochs and at the end. Shuffling uses a generator seeded from (seed, epoch),
// so `--resume` continues an interrupted run exactly. A non-finite loss stops training with a clear message
// and leaves the last good checkpoint in place.
#include "atomic_file.hpp"
#include "progress.hpp"

#include <validflow/validflow.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>
#include <string>

namespace validflow::app {

struct TrainOptions {
  int64_t epochs = 60;
  int64_t batch_size = 16;
  double lr = 2e-4;
  double adam_eps = 1e-4;
  double weight_decay = 1e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double max_grad_norm = 1.0;
  uint64_t seed = 0;
  int64_t checkpoint_every = 10;
  bool resume = false;
  bool quiet = false;
};

/// A flow that stops with a non-finite loss.
class TrainingDiverged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Checkpoint {
  FlowConfig config;
  nlohmann::json feature_layout;  ///< channels, map sizes, backbone and image size of the training features
  AnyFlow model;
  int64_t epoch = 0;  ///< finished epochs
  std::vector<double> loss_history;
  nlohmann::json train_options;
};

inline nlohmann::json to_json(const TrainOptions& o) {
  return {{"epochs", o.epochs},     {"batch_size", o.batch_size},       {"lr", o.lr},
          {"adam_eps", o.adam_eps}, {"weight_decay", o.weight_decay},   {"beta1", o.beta1},
          {"beta2", o.beta2},       {"max_grad_norm", o.max_grad_norm}, {"seed", o.seed}};
}

inline torch::optim::Adam make_optimizer(torch::nn::Module& model, const TrainOptions& o) {
  return torch::optim::Adam(
      model.parameters(),
      torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay));
}

inline void save_checkpoint(const std::string& path, const Checkpoint& c, torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  c.model.module().save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  const nlohmann::json meta = {{"format", "validflow-checkpoint-1"}, {"config", to_json(c.config)},
                               {"feature_layout", c.feature_layout}, {"epoch", c.epoch},
                               {"loss_history", c.loss_history},     {"train_options", c.train_options}};
  archive.write("meta", c10::IValue(meta.dump()));
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, bytes.str());
}

/// Loads a checkpoint: rebuilds the model from its stored configuration, then its weights. If
/// `optimizer_archive` is given, the optimizer state is read into it.
inline Checkpoint load_checkpoint(const std::string& path,
                                  torch::serialize::InputArchive* optimizer_archive = nullptr) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("checkpoint '" + path + "' not found");
  Checkpoint c;
  torch::serialize::InputArchive archive, model_archive;
  try {
    archive.load_from(path);
    c10::IValue meta_value;
    archive.read("meta", meta_value);
    const auto meta = nlohmann::json::parse(meta_value.toStringRef());
    if (meta.at("format") != "validflow-checkpoint-1") throw std::runtime_error("unknown checkpoint format");
    c.config = flow_config_from_json(meta.at("config"));
    c.feature_layout = meta.at("feature_layout");
    c.epoch = meta.at("epoch").get<int64_t>();
    c.loss_history = meta.at("loss_history").get<std::vector<double>>();
    c.train_options = meta.at("train_options");
    archive.read("model", model_archive);
    if (optimizer_archive) archive.read("optimizer", *optimizer_archive);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + path +
                             "' is corrupt or not a validflow checkpoint: " + std::string(e.what()).substr(0, 200));
  }
  c.model = build_flow(c.config);
  try {
    c.model.module().load(model_archive);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + path +
                             "' does not match its own configuration: " + std::string(e.what()).substr(0, 200));
  }
  return c;
}

/// Trains `checkpoint.model` on `features` until `options.epochs`, writing `checkpoint_path`.
/// With options.resume, training continues from the checkpoint file (same config required).
inline Checkpoint train_flow(Checkpoint checkpoint, const TensorList& features, const TrainOptions& options,
                             const std::string& checkpoint_path) {
  torch::serialize::InputArchive optimizer_archive;
  if (options.resume) {
    auto resumed = load_checkpoint(checkpoint_path, &optimizer_archive);
    if (to_json(resumed.config) != to_json(checkpoint.config)) {
      throw std::runtime_error("--resume: checkpoint '" + checkpoint_path + "' is of another configuration: " +
                               to_json(resumed.config).dump() + " vs requested " + to_json(checkpoint.config).dump());
    }
    if (resumed.feature_layout != checkpoint.feature_layout) {
      throw std::runtime_error("--resume: checkpoint '" + checkpoint_path + "' was trained on other features");
    }
    checkpoint = std::move(resumed);
  }
  checkpoint.train_options = to_json(options);
  auto& flow = checkpoint.model.module();
  auto& flow_view = *checkpoint.model;
  auto optimizer = make_optimizer(flow, options);
  if (options.resume) optimizer.load(optimizer_archive);
  const int64_t n = features.at(0).size(0);
  if (n == 0) throw std::runtime_error("no training features");
  const int64_t batches = (n + options.batch_size - 1) / options.batch_size;
  flow.train();
  ProgressBar bar(static_cast<size_t>((options.epochs - checkpoint.epoch) * batches), "train",
                  {"batch", options.quiet ? ProgressOptions::Mode::silent : ProgressOptions::Mode::automatic});
  for (int64_t epoch = checkpoint.epoch; epoch < options.epochs; ++epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 generator(options.seed * 1000003ull + static_cast<uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), generator);
    const auto index = torch::tensor(order, torch::kLong);
    double epoch_loss = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const auto rows = index.slice(0, b * options.batch_size, std::min(n, (b + 1) * options.batch_size));
      TensorList batch;
      for (const auto& f : features) batch.push_back(f.index_select(0, rows));
      optimizer.zero_grad();
      const auto [z, log_det] = flow_view.forward(batch);
      auto loss = nll_per_dimension(z, log_det);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        throw TrainingDiverged("training diverged: the loss became " + std::to_string(value) + " at epoch " +
                               std::to_string(epoch + 1) + ", batch " + std::to_string(b + 1) + "; the last good " +
                               "checkpoint ('" + checkpoint_path + "', epoch " + std::to_string(checkpoint.epoch) +
                               ") is kept. Try a lower --lr or a smaller --clamp.");
      }
      loss.backward();
      torch::nn::utils::clip_grad_norm_(flow.parameters(), options.max_grad_norm);
      optimizer.step();
      epoch_loss += value * static_cast<double>(rows.size(0));
      char message[96];
      std::snprintf(message, sizeof message, "epoch %lld/%lld loss %.4f", static_cast<long long>(epoch + 1),
                    static_cast<long long>(options.epochs), value);
      bar.tick(message);
    }
    checkpoint.loss_history.push_back(epoch_loss / static_cast<double>(n));
    checkpoint.epoch = epoch + 1;
    if (checkpoint.epoch % options.checkpoint_every == 0 || checkpoint.epoch == options.epochs) {
      save_checkpoint(checkpoint_path, checkpoint, optimizer);
    }
  }
  bar.finish();
  if (checkpoint.epoch == options.epochs && !std::filesystem::exists(checkpoint_path)) {
    save_checkpoint(checkpoint_path, checkpoint, optimizer);
  }
  return checkpoint;
}

}  // namespace validflow::app
