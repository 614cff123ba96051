#include "training.hpp"

#include <validflow/io/archive_reader.hpp>

#include <type_traits>

namespace validflow::app {

namespace detail {
/// LibTorch's key of a parameter's optimizer state in the public `Optimizer::state()` map: the TensorImpl's address,
/// printed as a string in LibTorch 1.x, the pointer itself in 2.x.
template <class Optimizer = torch::optim::Adam>
auto optimizer_state_key(const torch::Tensor& p) {
  using Key = typename std::decay_t<decltype(std::declval<Optimizer&>().state())>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}
}  // namespace detail

nlohmann::json to_json(const TrainOptions& o) {
  return {{"epochs", o.epochs},     {"batch_size", o.batch_size},       {"lr", o.lr},
          {"adam_eps", o.adam_eps}, {"weight_decay", o.weight_decay},   {"beta1", o.beta1},
          {"beta2", o.beta2},       {"max_grad_norm", o.max_grad_norm}, {"seed", o.seed}};
}

torch::optim::Adam make_optimizer(torch::nn::Module& model, const TrainOptions& o) {
  return torch::optim::Adam(
      model.parameters(),
      torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps).weight_decay(o.weight_decay));
}

void save_checkpoint(const std::string& path, const Checkpoint& c, torch::optim::Adam& optimizer) {
  io::TensorArchive archive;
  archive.kind = kCheckpointKind;
  archive.kind_version = kCheckpointVersion;
  archive.meta = {{"config", to_json(c.config)},
                  {"feature_layout", c.feature_layout},
                  {"epoch", c.epoch},
                  {"loss_history", c.loss_history},
                  {"train_options", c.train_options}};
  for (const auto& [key, tensor] : module_state_dict(c.model.module()))
    archive.tensors.emplace_back("model." + key, tensor);
  nlohmann::json steps = nlohmann::json::array();
  const auto params = c.model.module().parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto it = optimizer.state().find(detail::optimizer_state_key(params[i]));
    if (it == optimizer.state().end()) {
      steps.push_back(0);
      continue;
    }
    const auto& state = static_cast<const torch::optim::AdamParamState&>(*it->second);
    steps.push_back(state.step());
    archive.tensors.emplace_back("adam." + std::to_string(i) + ".exp_avg", state.exp_avg());
    archive.tensors.emplace_back("adam." + std::to_string(i) + ".exp_avg_sq", state.exp_avg_sq());
  }
  archive.meta["adam_steps"] = steps;
  io::write_archive(path, archive);
}

Checkpoint checkpoint_from_archive(const io::TensorArchive& archive, const std::string& path) {
  const io::ArchiveReader file(archive, path, "checkpoint", kCheckpointKind, kCheckpointVersion);
  const auto refuse = [&](const std::string& why) { return file.refuse(why); };
  Checkpoint c;
  file.translate_errors([&] {
    const auto& meta = archive.meta;
    c.config = flow_config_from_json(meta.at("config"));
    c.feature_layout = meta.at("feature_layout");
    c.epoch = io::json_integer<int64_t>(meta.at("epoch"), "epoch");
    c.loss_history = meta.at("loss_history").get<std::vector<double>>();
    c.train_options = meta.at("train_options");
    if (c.epoch < 0 || static_cast<int64_t>(c.loss_history.size()) != c.epoch)
      throw refuse("epoch " + std::to_string(c.epoch) + " disagrees with its loss history");
    const auto model_state = file.tensors("model."), adam = file.tensors("adam.");
    check_parameters_available(c.config, model_state.element_count());  // before building (flow_config.hpp)
    file.check_every_tensor_finite();  // training never saves a non-finite value (TrainingDiverged)
    c.model = build_flow(c.config);
    load_state_dict(c.model.module(), model_state);
    const auto steps = io::json_integers<int64_t>(meta.at("adam_steps"), "adam_steps");
    const auto params = c.model.module().parameters();
    if (steps.size() != params.size())
      throw refuse("optimizer state for " + std::to_string(steps.size()) + " parameters, the model has " +
                   std::to_string(params.size()));
    size_t adam_tensors = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      if (steps[i] < 0) throw refuse("negative optimizer step count");
      if (steps[i] == 0) {
        c.adam_state.push_back({});
        continue;
      }
      AdamState state{steps[i], {}, {}};
      const std::pair<const char*, torch::Tensor*> moments[] = {{"exp_avg", &state.exp_avg},
                                                                {"exp_avg_sq", &state.exp_avg_sq}};
      for (const auto& [name, target] : moments) {
        const auto key = std::to_string(i) + "." + name;
        const auto* moment = adam.find(key);
        if (!moment) throw refuse("missing tensor 'adam." + key + "'");
        if (moment->sizes() != params[i].sizes() || moment->scalar_type() != params[i].scalar_type())
          throw refuse("tensor 'adam." + key + "' does not match its parameter's shape or dtype");
        *target = *moment;
        ++adam_tensors;
      }
      c.adam_state.push_back(state);
    }
    if (adam_tensors != adam.size()) throw refuse("holds optimizer tensors of no parameter");
    file.check_every_tensor_used("model.* and adam.*");
  });
  return c;
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!std::filesystem::exists(path)) throw FileError(path, "checkpoint '" + path + "' not found");
  return checkpoint_from_archive(io::parse_archive(io::read_file_bytes(path), path), path);
}

void restore_adam_state(torch::optim::Adam& optimizer, const torch::nn::Module& model,
                        const std::vector<AdamState>& states) {
  const auto params = model.parameters();
  for (size_t i = 0; i < params.size() && i < states.size(); ++i) {
    if (states[i].step == 0) continue;
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(states[i].step);
    state->exp_avg(states[i].exp_avg.clone());
    state->exp_avg_sq(states[i].exp_avg_sq.clone());
    optimizer.state()[detail::optimizer_state_key(params[i])] = std::move(state);
  }
}

Checkpoint train_flow(Checkpoint checkpoint, const TensorList& features, const TrainOptions& options,
                      const std::string& checkpoint_path) {
  if (options.resume) {
    auto resumed = load_checkpoint(checkpoint_path);
    if (to_json(resumed.config) != to_json(checkpoint.config)) {
      throw FileError(checkpoint_path, "--resume: checkpoint '" + checkpoint_path +
                                           "' is of another configuration: " + to_json(resumed.config).dump() +
                                           " vs requested " + to_json(checkpoint.config).dump());
    }
    if (resumed.feature_layout != checkpoint.feature_layout) {
      throw FileError(checkpoint_path, "--resume: checkpoint '" + checkpoint_path + "' was trained on other features");
    }
    checkpoint = std::move(resumed);
  }
  checkpoint.train_options = to_json(options);
  auto& flow = checkpoint.model.module();
  auto& flow_view = *checkpoint.model;
  auto optimizer = make_optimizer(flow, options);
  restore_adam_state(optimizer, flow, checkpoint.adam_state);
  const int64_t n = features.at(0).size(0);
  if (n == 0) throw std::invalid_argument("no training features");
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
