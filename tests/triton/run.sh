#!/usr/bin/env bash
# Runs a Triton test script with the python of the virtual environment that scripts/triton_env.sh creates (CTest
# test triton.env, the fixture of every other Triton test). A missing environment is a failure, never a skip.
set -euo pipefail
venv="${VALIDFLOW_TRITON_VENV:-$HOME/.cache/validflow/triton-venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "FAILED: no Triton test environment in $venv (scripts/triton_env.sh creates it; see the output of triton.env)"
  exit 1
fi
exec "$venv/bin/python" "$@"
