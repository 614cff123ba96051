#!/usr/bin/env bash
# Builds bench_cuda against the LibTorch inside the Python torch package and runs it.
#
#   scripts/bench_gpu.sh [--build-only] [extra bench_cuda / Google Benchmark flags...]
#
# Environment: PYTHON (default python3; must `import torch`), BUILD_DIR (default build-gpu),
# OUT_DIR (default bench-results), CUDA_HOME (default /usr/local/cuda; TorchConfig needs the CUDA toolkit).
# Writes $OUT_DIR/bench_cuda.json (Google Benchmark JSON) and $OUT_DIR/bench_cuda.md (Table-5-like markdown).
# Without a CUDA device (or with a CPU-only torch) bench_cuda prints why and exits 0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILD_DIR="${BUILD_DIR:-$here/build-gpu}"
OUT_DIR="${OUT_DIR:-$here/bench-results}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
build_only=0
if [[ "${1:-}" == "--build-only" ]]; then build_only=1; shift; fi

if ! torch_info="$("$PYTHON" -c 'import torch, os; print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__)); print(torch.__version__); print(torch.version.cuda or "none")' 2>/dev/null | tail -4)"; then
  echo "bench_gpu.sh: '$PYTHON' cannot import torch; install it (pip install torch) or set PYTHON" >&2
  exit 1
fi
{ read -r cmake_prefix; read -r torch_root; read -r torch_version; read -r torch_cuda; } <<< "$torch_info"
echo "torch $torch_version (CUDA $torch_cuda) from $torch_root"

if [[ -x "$CUDA_HOME/bin/nvcc" ]]; then
  export PATH="$CUDA_HOME/bin:$PATH"
  export CUDACXX="${CUDACXX:-$CUDA_HOME/bin/nvcc}"
fi
# The pip wheel loads its CUDA libraries (cuDNN, NCCL, ...) from site-packages/nvidia/*/lib through its RPATH;
# tell the linker too, or it may resolve them to older copies registered with ldconfig (seen: an old NCCL in
# /usr/local/cuda/lib -> "undefined reference to ncclCommMemStats").
linker_flags=""
nvidia_dirs="$(ls -d "$torch_root"/../nvidia/*/lib 2>/dev/null | paste -sd: || true)"
[[ -n "$nvidia_dirs" ]] && linker_flags="-Wl,-rpath-link,$nvidia_dirs"
generator=()
command -v ninja > /dev/null || generator=(-G "Unix Makefiles")  # the preset asks for Ninja

# The torch root goes into CMAKE_PREFIX_PATH too: TorchConfig looks libtorch.so up with find_library, which
# would otherwise pick a system LibTorch (e.g. Debian's libtorch-dev) before the pip one.
# The `gpu-bench` preset (CMakePresets.json); only what depends on this machine is passed.
(cd "$here" && cmake --preset gpu-bench -B "$BUILD_DIR" "${generator[@]}" \
  "-DCMAKE_PREFIX_PATH=$cmake_prefix;$torch_root" "-DCMAKE_EXE_LINKER_FLAGS=$linker_flags")
cmake --build "$BUILD_DIR" --target bench_cuda -j "$(nproc)"
[[ $build_only == 1 ]] && { echo "built $BUILD_DIR/benchmarks/cuda/bench_cuda"; exit 0; }

mkdir -p "$OUT_DIR"
"$BUILD_DIR/benchmarks/cuda/bench_cuda" \
  --benchmark_out="$OUT_DIR/bench_cuda.json" --benchmark_out_format=json \
  --table_out="$OUT_DIR/bench_cuda.md" "$@"
if [[ -f "$OUT_DIR/bench_cuda.md" ]]; then
  echo "results: $OUT_DIR/bench_cuda.json, $OUT_DIR/bench_cuda.md"
fi
