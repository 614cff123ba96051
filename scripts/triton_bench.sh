#!/usr/bin/env bash
# The serving numbers of docs/serving.md, against the real Triton server. Builds what it needs, creates the Triton
# venv (scripts/triton_env.sh) and reuses the Triton tests' fixture (the demo detector) when the tests already made it.
#   scripts/triton_bench.sh [OPTIONS]       Triton (1 and 2 CPU instances, dynamic batching on and off, HTTP and
#                                           gRPC) next to `validflow predict` on the same images in the same run
#                                           (tests/triton/bench_serving.py; BUILD/triton-bench/bench.json)
#   scripts/triton_bench.sh perf [OPTIONS]  perf_analyzer: raw / JPEG / PNG input, dynamic batching on and off,
#                                           concurrency 1, 2, 4, 8 (tests/triton/perf_serving.py;
#                                           BUILD/triton-perf/perf.json)
# OPTIONS go to the Python script (e.g. --clients 8 --requests 30; perf: --window-requests 100 --protocol http).
# Takes a few minutes. Build directory: $VALIDFLOW_BUILD, default build.
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
common=(--backend-dir "$build/triton-backends" --repo "$work/repo" --model demo
        --expected "$work/predict/predictions.json")
if [ "${1:-}" = perf ]; then
  shift
  "$root/tests/triton/run.sh" "$root/tests/triton/perf_serving.py" "${common[@]}" --work "$build/triton-perf" \
    --inputs raw,jpeg,png --window-requests 60 --stability 25 --max-trials 10 "$@"
else
  "$root/tests/triton/run.sh" "$root/tests/triton/bench_serving.py" "${common[@]}" \
    --validflow "$build/apps/validflow/validflow" --model-file "$work/demo/model.vfm" --work "$build/triton-bench" "$@"
fi
