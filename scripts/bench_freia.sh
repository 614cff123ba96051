#!/usr/bin/env bash
# FrEIA's blocks: validflow (benchmarks/bench_freia.cpp) next to FrEIA 0.2 itself (tools/bench_freia.py), the
# same sizes and thread count, one after the other on this machine.
#
#   PYTHON=/path/to/venv/bin/python scripts/bench_freia.sh [build-dir] [extra Google Benchmark flags...]
#
# PYTHON must import torch and FrEIA (python3 -m venv V && V/bin/pip install torch FrEIA==0.2 scipy).
# THREADS (default: the number of cores) sets both sides' intra-op threads. Writes bench-results/freia.json
# (FrEIA's times) and bench-results/bench_freia.json (Google Benchmark JSON with freia_ms and speedup counters).
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
"$PYTHON" "$root/tools/bench_freia.py" --out "$out/freia.json" --threads "$THREADS"
OMP_NUM_THREADS="$THREADS" "$build/benchmarks/bench_freia" --freia_times="$out/freia.json" \
  --benchmark_out="$out/bench_freia.json" "$@"
