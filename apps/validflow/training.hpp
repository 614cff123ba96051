#pragma once
// Training of a flow on cached features (the official CS-Flow recipe by default): Adam (lr 2e-4, eps 1e-4,
// weight decay 1e-5, betas 0.9/0.999), batch 16, global gradient-norm clipping at 1.0, NLL per dimension.
//
// Checkpoints hold the model configuration (JSON), the feature layout it was trained on, the model and
// optimizer state, the finished epoch and the loss history. They are written to a temp file and renamed,
// every `checkpoint_every` epochs and at the end. Shuffling uses a generator seeded from (seed, epoch),
// so `--resume` continues an interrupted run exactly. A non-finite loss stops training with a clear message
// and leaves the last good checkpoint in place.
#include <validflow/io/tensor_archive.hpp>
#include <validflow/util/error.hpp>
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
class TrainingDiverged : public ErrorOf<std::runtime_error, ErrorKind::config> {
 public:
  using ErrorOf::ErrorOf;
};

/// Adam's state of one parameter (step 0: none yet).
struct AdamState {
  int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq;
};

struct Checkpoint {
  FlowConfig config;
  nlohmann::json feature_layout;  ///< channels, map sizes, backbone and image size of the training features
  AnyFlow model;
  int64_t epoch = 0;  ///< finished epochs
  std::vector<double> loss_history;
  nlohmann::json train_options;
  std::vector<AdamState> adam_state;  ///< as loaded from a file (empty for a fresh checkpoint)
};

/// The options a checkpoint records (what a resumed run is compared against).
nlohmann::json to_json(const TrainOptions& o);

/// Adam over the model's parameters with the options' learning rate, betas, eps and weight decay.
torch::optim::Adam make_optimizer(torch::nn::Module& model, const TrainOptions& o);

/// The kind of validflow file a checkpoint is (io/tensor_archive.hpp) and its layout version.
constexpr const char* kCheckpointKind = "validflow-checkpoint";
constexpr int64_t kCheckpointVersion = 1;

/// Adam's state as tensors (per parameter, in parameter order): step count and both moment estimates.
void save_checkpoint(const std::string& path, const Checkpoint& c, torch::optim::Adam& optimizer);

/// Loads and verifies a checkpoint: checksums, its configuration, then the model strictly (every key, shape
/// and dtype) and the optimizer state (shapes against the parameters). Throws FileError naming the file.
/// checkpoint_from_archive does the checks after the archive's own (the fuzzer's entry point).
Checkpoint checkpoint_from_archive(const io::TensorArchive& archive, const std::string& path);

/// checkpoint_from_archive of the file at `path`; throws FileError when it is missing or unreadable.
Checkpoint load_checkpoint(const std::string& path);

/// Puts a checkpoint's Adam state into a fresh optimizer over the same model.
void restore_adam_state(torch::optim::Adam& optimizer, const torch::nn::Module& model,
                        const std::vector<AdamState>& states);

/// Trains `checkpoint.model` on `features` until `options.epochs`, writing `checkpoint_path`.
/// With options.resume, training continues from the checkpoint file (same config required).
Checkpoint train_flow(Checkpoint checkpoint, const TensorList& features, const TrainOptions& options,
                      const std::string& checkpoint_path);

}  // namespace validflow::app
