#!/usr/bin/env bash
# The main job on a built-in default: installs dependencies (apt), builds the `validflow` program and runs
# `validflow demo`: a synthetic surface-defect dataset -> EfficientNet-Lite0 features -> ValidFlow training ->
# AUROC, pixel AUROC, AUPRO and an HTML report. Needs no download; with pretrained Lite0 weights installed
# (scripts/fetch_assets.sh) the features are ImageNet features, otherwise it says it uses random weights.
# Usage: scripts/demo.sh [output-dir]   (default: validflow-demo)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
out="${1:-validflow-demo}"

"$root/scripts/setup.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target validflow_cli --parallel "$(nproc)"
"$build/examples/validflow/validflow" demo --out "$out"
