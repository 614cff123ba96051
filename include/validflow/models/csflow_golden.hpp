#pragma once
// Parity check against reference outputs of the official CS-Flow code ("golden" files, docs/models.md): a
// torch.save dict with the official weights under `param.`, the inputs `input.{s}`,
// and the official outputs `z.{s}`, `log_jac_det`, `score`, `loss` (float32) and `z64.{s}`, `log_jac_det64`,
// `score64`, `loss64` (float64, same weights and inputs). Used by the tests and by `validflow check-csflow`.
#include <validflow/models/csflow_import.hpp>
#include <validflow/models/objectives.hpp>

#include <string>

namespace validflow {

/// Errors of one quantity: max absolute difference and relative error. Relative error is
/// max|a - b| / max|b| for latents (elements near zero would make an element-wise ratio meaningless) and
/// max over elements of |a - b| / |b| for log-dets, scores and the loss.
struct ParityError {
  double max_abs = 0;
  double max_rel = 0;
};

struct ParityReport {
  CSFlowOptions options;
  torch::Dtype dtype = torch::kFloat32;
  ParityError z, log_det, score, loss;
  /// Permutations compared with the file's `perm.*` entries (when present): all equal.
  bool permutations_match = true;
  int64_t permutations_checked = 0;
  double worst_rel() const { return std::max({z.max_rel, log_det.max_rel, score.max_rel, loss.max_rel}); }
};

namespace detail {

inline void track_error(ParityError& error, const torch::Tensor& ours, const torch::Tensor& reference,
                        bool relative_to_max) {
  const auto ref = reference.to(torch::kFloat64);
  const auto diff = (ours.to(torch::kFloat64) - ref).abs();
  error.max_abs = std::max(error.max_abs, diff.max().item<double>());
  const double rel = relative_to_max ? diff.max().item<double>() / std::max(ref.abs().max().item<double>(), 1e-300)
                                     : (diff / ref.abs().clamp_min(1e-300)).max().item<double>();
  error.max_rel = std::max(error.max_rel, rel);
}

}  // namespace detail

/// Imports the official weights of a golden dict, runs the model in `dtype` on its inputs and compares.
inline ParityReport check_csflow_golden(const StateDict& golden, torch::Dtype dtype) {
  ParityReport report;
  report.dtype = dtype;
  auto model = import_official_csflow(golden, "param.");
  report.options = model->options;
  model->to(dtype);
  model->eval();
  const std::string suffix = dtype == torch::kFloat64 ? "64" : "";
  TensorList inputs;
  for (int64_t s = 0; s < model->options.scales(); ++s) {
    inputs.push_back(golden.at("input." + std::to_string(s)).to(dtype));
  }
  torch::NoGradGuard no_grad;
  const auto [z, log_det] = model->forward(inputs);
  for (size_t s = 0; s < z.size(); ++s) {
    detail::track_error(report.z, z[s], golden.at("z" + suffix + "." + std::to_string(s)), true);
  }
  detail::track_error(report.log_det, log_det, golden.at("log_jac_det" + suffix), false);
  detail::track_error(report.score, image_scores(z), golden.at("score" + suffix), false);
  detail::track_error(report.loss, nll_per_dimension(z, log_det).reshape({1}), golden.at("loss" + suffix).reshape({1}),
                      false);
  for (int64_t k = 0; k < model->options.blocks(); ++k) {
    auto& shuffle = *model->block(static_cast<size_t>(k)).get<0>();
    for (int64_t s = 0; s < model->options.scales(); ++s) {
      const auto key = "perm.module_list." + std::to_string(3 + 2 * k) + ".perm." + std::to_string(s);
      const auto* perm = golden.find(key);
      if (!perm) continue;
      report.permutations_match = report.permutations_match && perm->to(torch::kLong).equal(shuffle.permutations[s]);
      ++report.permutations_checked;
    }
  }
  return report;
}

}  // namespace validflow
