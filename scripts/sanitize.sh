#!/usr/bin/env bash
# Builds the unit tests (validflow_tests) and the program with AddressSanitizer + UndefinedBehaviorSanitizer
# (GCC, the compiler LibTorch was built with; -O1 -g) in their own build folder and runs the Catch2 suite and
# the bad-input table (tests/cli/bad_inputs.py) against them. Any sanitizer report fails the run. Suppressions
# (tests/sanitizers/*.supp) cover only reports proven to lie inside LibTorch, each with its reason.
# Usage: scripts/sanitize.sh [catch2 test spec...]   (default: every test case and the bad-input table; with a
# spec only those test cases, and the program is not built: the loaders' subset is
# scripts/sanitize.sh "[io],[errors],[datasets],[detect],[pipeline]"; docs/reliability.md: the cost)
# Environment: VALIDFLOW_SANITIZE_BUILD (default build-sanitize), VALIDFLOW_SANITIZE_JOBS (default 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${VALIDFLOW_SANITIZE_BUILD:-$root/build-sanitize}"
jobs="${VALIDFLOW_SANITIZE_JOBS:-2}"

if [ ! -f "$build/build.ninja" ]; then  # the `sanitizers` preset (CMakePresets.json) in this folder
  (cd "$root" && cmake --preset sanitizers -B "$build" >/dev/null)
fi
start=$(date +%s)
targets=(validflow_tests)
[ $# -eq 0 ] && targets+=(validflow_cli)
cmake --build "$build" --target "${targets[@]}" -- -j"$jobs" | tail -1
built=$(date +%s)

supp="$root/tests/sanitizers"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:strict_init_order=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
export OMP_NUM_THREADS=2

status=0
echo "sanitize: Catch2 suite"
if ! "$build/tests/validflow_tests" "$@"; then status=1; fi
tests_done=$(date +%s)
if [ $# -eq 0 ]; then
  echo "sanitize: bad-input table against the sanitized program"
  if ! /usr/bin/python3 "$root/tests/cli/bad_inputs.py" "$build/apps/validflow/validflow" "$build/bad-inputs"; then
    status=1
  fi
fi
end=$(date +%s)
echo "sanitize: build $((built - start)) s, Catch2 suite $((tests_done - built)) s, bad-input table $((end - tests_done)) s"
if [ "$status" != 0 ]; then
  echo "sanitize: FAILED (a test failed or a sanitizer reported; see above)"
  exit 1
fi
echo "sanitize: OK (no sanitizer report)"
