#!/usr/bin/env bash
# Checks that every C++ file git tracks is formatted with the tree's .clang-format (clang-format 14).
# `scripts/check_format.sh --fix` formats them in place. Run by CTest (test `format`) and so by CI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
formatter="$(command -v clang-format-14 || command -v clang-format || true)"
if [ -z "$formatter" ]; then
  echo "check_format: clang-format not found (apt-get install clang-format-14)"
  exit 1
fi
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.hpp' '*.cpp' '*.h' '*.cu')
if [ "${1:-}" = "--fix" ]; then
  "$formatter" -i "${files[@]}"
  echo "check_format: formatted ${#files[@]} files"
  exit 0
fi
if ! "$formatter" --dry-run -Werror "${files[@]}" 2>/tmp/check_format.$$; then
  grep -o '^[^:]*:[0-9]*' /tmp/check_format.$$ | sort -u | head -20
  rm -f /tmp/check_format.$$
  echo "check_format: the files above are not formatted; run scripts/check_format.sh --fix"
  exit 1
fi
rm -f /tmp/check_format.$$
echo "check_format: ${#files[@]} files formatted"
