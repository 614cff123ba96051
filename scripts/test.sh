#!/usr/bin/env bash
# Installs dependencies (apt) and test assets (PyPI, optional), configures, builds and runs the whole test
# suite with CTest. Usage: scripts/test.sh [build-dir]   (default: build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"

"$root/scripts/setup.sh"
"$root/scripts/fetch_assets.sh"
# The `ci` preset (CMakePresets.json): Release, every compiled target with -Wall -Wextra -Werror.
(cd "$root" && cmake --preset ci -B "$build")
cmake --build "$build" --parallel "$(nproc)"
cd "$build"
ctest --output-on-failure --parallel "$(nproc)" --timeout 900
