#!/usr/bin/env bash
# Installs every build/test dependency of validflow from Debian 12 packages. Idempotent: packages that are
# already installed are skipped. Run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang-format-14
  libtorch-dev libopenblas0-pthread   # LibTorch 1.13 (CPU); OpenBLAS instead of the slow reference BLAS
  catch2 libbenchmark-dev             # tests and benchmarks
  libopencv-dev libcli11-dev nlohmann-json3-dev  # the validflow program (image I/O, CLI, JSON)
  python3-skimage python3-pil         # real sample photographs; PIL: the reference of the one resize
  python3-torch python3-pip           # tools/export_backbone.py: converts PyPI weights for the C++ side
  python3-venv                        # scripts/triton_env.sh: the Triton tests' server and clients (PyPI)
  libb64-0d                           # perf_analyzer (tritonclient's binary) links libb64
  clang-14 libclang-rt-14-dev         # scripts/fuzz.sh: libFuzzer with AddressSanitizer + UBSan (CTest label fuzz)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
echo "setup: done"
