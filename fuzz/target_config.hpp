#pragma once
// Fuzz target (fuzz_main.cpp): the JSON descriptions that files carry: flow configurations (flow_config_from_json),
// backbone descriptions (backbone_spec_from_json) and decision rules (decision_rule_from_json). Accepted: a
// value, or the loader's error (FlowConfigError, FeatureError, std::invalid_argument). A value that is accepted
// must survive to_json -> from_json unchanged.
#include <validflow/detect/decision.hpp>
#include <validflow/features/backbone_spec.hpp>
#include <validflow/models/flow_config.hpp>

#include <cstdio>
#include <cstdlib>

namespace validflow::fuzz {

inline int run_config(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const auto c = validflow::flow_config_from_json(j);
    if (validflow::to_json(validflow::flow_config_from_json(validflow::to_json(c))) != validflow::to_json(c))
      std::abort();
    (void)validflow::min_parameter_count(c);
  } catch (const validflow::FlowConfigError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_config: flow config: unexpected exception type: %s\n", e.what());
    std::abort();
  }
  try {
    const auto b = validflow::features::backbone_spec_from_json(j);
    if (validflow::features::to_json(validflow::features::backbone_spec_from_json(validflow::features::to_json(b))) !=
        validflow::features::to_json(b))
      std::abort();
  } catch (const validflow::features::FeatureError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_config: backbone: unexpected exception type: %s\n", e.what());
    std::abort();
  }
  try {
    const auto d = validflow::decision_rule_from_json(j, /*legacy=*/j.is_object() && j.size() == 9);
    if (validflow::to_json(validflow::decision_rule_from_json(validflow::to_json(d))) != validflow::to_json(d))
      std::abort();
    for (double v : {d.threshold - 1e9, d.threshold, d.threshold + 1e9}) {  // the scale is total and bounded
      const double n = d.normalized_score(v, d.threshold);
      if (!(n >= 0 && n <= 1)) std::abort();
    }
  } catch (const std::invalid_argument&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_config: decision rule: unexpected exception type: %s\n", e.what());
    std::abort();
  }
  return 0;
}

}  // namespace validflow::fuzz
