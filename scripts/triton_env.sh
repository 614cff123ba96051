#!/usr/bin/env bash
# Creates the Python virtual environment of the Triton tests and benchmarks (never a system-wide pip):
#   nvidia-pytriton 0.7.0        ships Triton Inference Server 2.51.0's tritonserver binary and libraries
#   tritonclient[http,grpc] 2.51.0  the HTTP and gRPC clients of the same release, and its perf_analyzer binary
#   nvidia-cuda-runtime-cu12 12.6.77  libcudart.so.12, which perf_analyzer links (Triton 2.51's CUDA; no GPU used);
#                                     perf_analyzer's other library, libb64, is Debian's libb64-0d (scripts/setup.sh)
#   pillow                       decodes the test images (PNG: lossless, so the pixels equal OpenCV's)
# Location: $VALIDFLOW_TRITON_VENV (default ~/.cache/validflow/triton-venv). Idempotent: a stamp file records what
# was installed. Prints the venv's python path on its last line. Exits non-zero, with the reason, when the venv or
# the packages cannot be installed: the Triton tests then fail (they do not skip).
# Usage: scripts/triton_env.sh
set -euo pipefail
venv="${VALIDFLOW_TRITON_VENV:-$HOME/.cache/validflow/triton-venv}"
requirements=("nvidia-pytriton==0.7.0" "tritonclient[http,grpc]==2.51.0" "nvidia-cuda-runtime-cu12==12.6.77" "pillow")
stamp="$venv/.validflow-requirements"
python=/usr/bin/python3

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${requirements[*]}" ]; then
  echo "triton_env: ready in $venv"
  echo "$venv/bin/python"
  exit 0
fi
if ! "$python" -m venv --help >/dev/null 2>&1; then
  echo "triton_env: ERROR: $python has no venv module (apt-get install python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || { echo "triton_env: ERROR: cannot create the virtual environment $venv" >&2; exit 1; }
fi
echo "triton_env: installing ${requirements[*]} into $venv"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q "${requirements[@]}"; then
  echo "triton_env: ERROR: pip could not install ${requirements[*]} (is PyPI reachable?)" >&2
  exit 1
fi
server="$("$venv/bin/python" -c 'import os, pytriton; print(os.path.join(os.path.dirname(pytriton.__file__), "tritonserver", "bin", "tritonserver"))')"
if [ ! -x "$server" ]; then
  echo "triton_env: ERROR: nvidia-pytriton installed but $server is missing" >&2
  exit 1
fi
# perf_analyzer (tests/triton/perf_serving.py) runs with the venv's libcudart on its library path.
cudart="$("$venv/bin/python" -c 'import os, nvidia.cuda_runtime as m; print(os.path.join(list(m.__path__)[0], "lib"))')"
if ! LD_LIBRARY_PATH="$cudart" "$venv/bin/perf_analyzer" --version >/dev/null 2>&1; then
  echo "triton_env: ERROR: tritonclient's perf_analyzer does not run (libb64-0d missing? scripts/setup.sh):" >&2
  LD_LIBRARY_PATH="$cudart" ldd "$venv/bin/perf_analyzer" | grep "not found" >&2 || true
  exit 1
fi
echo "${requirements[*]}" >"$stamp"
echo "triton_env: ready in $venv (server $server)"
echo "$venv/bin/python"
