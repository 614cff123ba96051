#!/usr/bin/env bash
# The serving numbers of docs/serving.md: Triton (1 and 2 CPU instances, dynamic batching on and off, HTTP and gRPC)
# next to `validflow predict` on the same images in the same run (tests/triton/bench_serving.py). Builds what it
# needs, creates the Triton venv (scripts/triton_env.sh) and reuses the Triton tests' fixture (the demo detector)
# when the tests already made it. Takes a few minutes; results in BUILD/triton-bench/bench.json.
# Usage: scripts/triton_bench.sh [bench_serving.py options, e.g. --clients 8 --requests 30]
#        (build directory: $VALIDFLOW_BUILD, default build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${VALIDFLOW_BUILD:-$root/build}"
[ -f "$build/CMakeCache.txt" ] || (cd "$root" && cmake --preset release -B "$build")
cmake --build "$build" --target validflow_cli triton_validflow
"$root/scripts/triton_env.sh" >/dev/null
work="$build/tests/triton/work"
if [ ! -s "$work/predict/predictions.json" ] || [ ! -f "$work/repo/demo/config.pbtxt" ]; then
  "$root/tests/triton/make_model.sh" "$build/apps/validflow/validflow" "$work"
fi
"$root/tests/triton/run.sh" "$root/tests/triton/bench_serving.py" --backend-dir "$build/triton-backends" \
  --repo "$work/repo" --model demo --expected "$work/predict/predictions.json" \
  --validflow "$build/apps/validflow/validflow" --model-file "$work/demo/model.vfm" --work "$build/triton-bench" "$@"
