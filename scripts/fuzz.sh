#!/usr/bin/env bash
# Builds the libFuzzer targets of the loaders (fuzz/) with clang and AddressSanitizer + UndefinedBehaviorSanitizer
# in their own build folder, then fuzzes each target for SECONDS (default 60) starting from the seed corpus
# (fuzz/corpus/<target>/) and the regression inputs (fuzz/regressions/<target>/). Prints executions and
# findings per target; exits 1 if any target crashed, leaked or threw an unexpected exception (the input is
# kept under BUILD/findings/). Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]        fuzz (docs/reliability.md records the runs)
#   scripts/fuzz.sh --ci [SECONDS]               CTest (label fuzz): every seed and regression input once,
#                                                then SECONDS (default 5) of fuzzing per target
# Environment: VALIDFLOW_FUZZ_BUILD (default build-fuzz), VALIDFLOW_FUZZ_JOBS (parallel compile jobs, default 2),
# VALIDFLOW_FUZZ_RUNS (stop a target after this many executions, or SECONDS, whichever comes first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${VALIDFLOW_FUZZ_BUILD:-$root/build-fuzz}"
jobs="${VALIDFLOW_FUZZ_JOBS:-2}"
runs=()
[ -n "${VALIDFLOW_FUZZ_RUNS:-}" ] && runs=(-runs="$VALIDFLOW_FUZZ_RUNS")
all_targets=(archive model_file checkpoint feature_cache state_dict dataset image config results)

ci=0
if [ "${1:-}" = "--ci" ]; then
  ci=1
  shift
  seconds="${1:-5}"
  [ $# -gt 0 ] && shift
else
  seconds="${1:-60}"
  [ $# -gt 0 ] && shift
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

cxx="$(command -v clang++-14 || command -v clang++ || true)"
cc="$(command -v clang-14 || command -v clang || true)"
if [ -z "$cxx" ] || [ -z "$cc" ]; then
  echo "fuzz: clang not found (scripts/setup.sh installs clang-14 and libclang-rt-14-dev)"
  exit 1
fi

# The build is the `fuzz` preset (CMakePresets.json: clang, ASan + UBSan, -fno-sanitize=vptr and why); only the
# compiler found here and the folder are passed.
if [ ! -f "$build/build.ninja" ]; then
  (cd "$root" && cmake --preset fuzz -B "$build" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null)
fi
cmake --build "$build" --target validflow_fuzz -- -j"$jobs" | tail -1
fuzzer="$build/fuzz/validflow_fuzz"

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OPENCV_IO_MAX_IMAGE_PIXELS=4194304  # the image target's limit, for what OpenCV sizes itself (TIFF)
export OMP_NUM_THREADS=1

findings="$build/findings"
mkdir -p "$findings"
failed=0
printf "%-14s %10s %10s %8s %8s %s\n" target executions exec/s seconds corpus result
for t in "${targets[@]}"; do
  if [ "$t" = results ]; then  # the results tool's loader (Python): fuzz/results_loader.py, its own mutator
    t0=$(date +%s)
    status=ok
    if ! python3 "$root/fuzz/results_loader.py" --seconds "$seconds" --findings "$findings" >"$build/fuzz-results.log" 2>&1; then
      status="FINDING (see $build/fuzz-results.log and $findings/)"
      failed=1
    fi
    execs="$(grep -o '[0-9]* inputs' "$build/fuzz-results.log" | grep -o '^[0-9]*' || echo 0)"
    printf "%-14s %10s %10s %8s %8s %s\n" "$t" "$execs" "$((execs / (seconds > 0 ? seconds : 1)))" \
      "$(($(date +%s) - t0))" "-" "$status"
    continue
  fi
  seeds="$root/fuzz/corpus/$t"
  regressions="$root/fuzz/regressions/$t"
  work="$build/corpus/$t"
  mkdir -p "$work" "$regressions"
  log="$build/fuzz-$t.log"
  status=ok
  if [ "$ci" = 1 ]; then
    # Every committed input once (no mutation): a crash that was fixed must stay fixed.
    if ! VALIDFLOW_FUZZ_TARGET="$t" "$fuzzer" -runs=0 "$seeds" "$regressions" >"$log.replay" 2>&1; then
      status="FAILED on a committed input (see $log.replay)"
      failed=1
    fi
  fi
  t0=$(date +%s)
  if ! VALIDFLOW_FUZZ_TARGET="$t" "$fuzzer" -max_total_time="$seconds" "${runs[@]}" -timeout=60 -rss_limit_mb=3072 \
      -print_final_stats=1 -artifact_prefix="$findings/$t-" "$work" "$seeds" "$regressions" >"$log" 2>&1; then
    status="FINDING (see $log and $findings/)"
    failed=1
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)"
  corpus="$(find "$work" -type f | wc -l)"
  printf "%-14s %10s %10s %8s %8s %s\n" "$t" "$execs" "$rate" "$(($(date +%s) - t0))" "$corpus" "$status"
done
if [ "$failed" != 0 ]; then
  echo "fuzz: FAILED (a finding's input is in $findings; add it to fuzz/regressions/<target>/ once fixed)"
  exit 1
fi
echo "fuzz: OK (${#targets[@]} targets, ${seconds} s each, no findings)"
