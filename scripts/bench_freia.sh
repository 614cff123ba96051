#!/usr/bin/env bash
# FrEIA's blocks: validflow (benchmarks/bench_freia.cpp) next to FrEIA 0.2 itself (tools/bench_freia.py), the
# same sizes and thread count, one after the other on this machine, twice:
#   default  both with LibTorch's defaults;
#   tuned    validflow with configure_cpu_runtime() (--tuned_runtime), and FrEIA's Python process with the same
#            settings through the environment (ATEN_CPU_CAPABILITY=avx512 where the CPU has it, glibc tunables for
#            no mmap per large block and no heap trimming).
#
#   PYTHON=/path/to/venv/bin/python scripts/bench_freia.sh [build-dir] [extra Google Benchmark flags...]
#
# PYTHON must import torch and FrEIA (python3 -m venv V && V/bin/pip install torch FrEIA==0.2 scipy). For a
# like-for-like ratio, build against the same LibTorch as PYTHON's torch (docs/compatibility.md). THREADS
# (default: the number of cores) sets both sides' intra-op threads. Writes bench-results/freia_{default,tuned}.json
# (FrEIA's times) and bench-results/bench_freia_{default,tuned}.json (Google Benchmark JSON with freia_ms and
# speedup counters).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
shift || true
PYTHON="${PYTHON:-python3}"
THREADS="${THREADS:-$(nproc)}"
out="$root/bench-results"
mkdir -p "$out"
if ! "$PYTHON" -c 'import torch, FrEIA' 2>/dev/null; then
  echo "bench_freia.sh: '$PYTHON' cannot import torch and FrEIA; set PYTHON to a virtual environment that has them" >&2
  exit 1
fi
if [[ ! -x "$build/benchmarks/bench_freia" ]]; then
  (cd "$root" && cmake --preset release -B "$build" >/dev/null)
  cmake --build "$build" --target bench_freia
fi
tuned_env=(GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615)
grep -q avx512f /proc/cpuinfo 2>/dev/null && tuned_env+=(ATEN_CPU_CAPABILITY=avx512)
for runtime in default tuned; do
  echo "== $runtime runtime"
  python_env=() cpp_flag=()
  if [[ $runtime == tuned ]]; then python_env=("${tuned_env[@]}") cpp_flag=(--tuned_runtime); fi
  env "${python_env[@]}" "$PYTHON" "$root/tools/bench_freia.py" --out "$out/freia_$runtime.json" --threads "$THREADS"
  OMP_NUM_THREADS="$THREADS" "$build/benchmarks/bench_freia" --freia_times="$out/freia_$runtime.json" \
    "${cpp_flag[@]}" --benchmark_out="$out/bench_freia_$runtime.json" "$@"
done
