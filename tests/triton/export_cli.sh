#!/usr/bin/env bash
# CTest triton.export: `validflow export --triton REPO [--name NAME] [--triton-max-batch-size N]
# [--triton-instances N]` on the run of the fixture triton.model (tests/triton/make_model.sh): the options reach
# config.pbtxt, the repository holds a copy of the model file, a second export replaces the entry, and wrong
# options are usage errors (exit 2, one line naming the option) that write nothing.
# Usage: export_cli.sh VALIDFLOW RUN_DIR WORK_DIR
set -euo pipefail
validflow="$1"
run="$2"
work="$3"
rm -rf "$work"
mkdir -p "$work"
fail() {
  echo "FAILED: $*"
  exit 1
}

# Usage errors: exit 2, the option named, nothing written.
refused() {  # refused "expected message" args...
  local expected="$1" rc=0
  shift
  "$validflow" export --out "$run" --to "$work/refused.vfm" "$@" >"$work/out.txt" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || fail "export $* exited with $rc, not 2: $(cat "$work/out.txt")"
  grep -qF -- "$expected" "$work/out.txt" || fail "export $*: no '$expected' in: $(cat "$work/out.txt")"
  [ ! -e "$work/refused.vfm" ] && [ ! -e "$work/repo" ] || fail "export $* wrote files"
  echo "refused: export $* -> $(head -n 1 "$work/out.txt")"
}
refused "--name: model name 'a/b' may only hold letters, digits, '_', '-' and '.'" --triton "$work/repo" --name a/b
refused "--name: model name '.hidden' must not be empty or start with '.'" --triton "$work/repo" --name .hidden
refused "--name requires --triton" --name bottles
refused "--triton-instances requires --triton" --triton-instances 2
refused "--triton-max-batch-size: value 0 is not in [1, 256]" --triton "$work/repo" --triton-max-batch-size 0
refused "--triton-instances: value 65 is not in [1, 64]" --triton "$work/repo" --triton-instances 65

# A repository entry with non-default options.
"$validflow" export --out "$run" --to "$work/model.vfm" --triton "$work/repo" --name bottles-2.a \
  --triton-max-batch-size 4 --triton-instances 3 --triton-threads 2 >"$work/out.txt" 2>&1 ||
  fail "export: $(cat "$work/out.txt")"
config="$work/repo/bottles-2.a/config.pbtxt"
grep -qF "triton    $config and $work/repo/bottles-2.a/1/model.vfm" "$work/out.txt" ||
  fail "export did not report the repository entry: $(cat "$work/out.txt")"
cmp "$work/model.vfm" "$work/repo/bottles-2.a/1/model.vfm" || fail "the repository's model file differs from --to's"
for line in 'name: "bottles-2.a"' 'backend: "validflow"' 'max_batch_size: 4' '    count: 3' '    kind: KIND_CPU' \
  'value: { string_value: "model.vfm" }' 'key: "intra_op_threads"' 'name: "IMAGE_BYTES"' 'model_warmup [' \
  'input_data_file: "validflow_warmup_256x256.rgb"'; do
  grep -qF -- "$line" "$config" || fail "$config lacks '$line'"
done
sample="$work/repo/bottles-2.a/warmup/validflow_warmup_256x256.rgb"
[ "$(stat -c %s "$sample")" -eq $((256 * 256 * 3)) ] || fail "the warm-up sample $sample is not 256 x 256 x 3 bytes"
# The files: config.pbtxt, the model file and the warm-up sample.
[ "$(find "$work/repo" -type f | wc -l)" -eq 3 ] || fail "the repository holds other files: $(find "$work/repo")"

# Exported again with the defaults: the entry is replaced (as --to's file is), nothing else is left.
"$validflow" export --out "$run" --to "$work/model.vfm" --triton "$work/repo" --name bottles-2.a >"$work/out.txt" 2>&1 ||
  fail "second export: $(cat "$work/out.txt")"
grep -qF 'max_batch_size: 8' "$config" && grep -qF '    count: 1' "$config" || fail "the second export did not replace $config"
cmp "$work/model.vfm" "$work/repo/bottles-2.a/1/model.vfm" || fail "the replaced model file differs from --to's"
[ "$(find "$work/repo" -type f | wc -l)" -eq 3 ] || fail "the replaced entry holds other files: $(find "$work/repo")"
# Without warm-up: no model_warmup, and the unused sample is removed.
"$validflow" export --out "$run" --to "$work/model.vfm" --triton "$work/repo" --name bottles-2.a --no-triton-warmup \
  >"$work/out.txt" 2>&1 || fail "export --no-triton-warmup: $(cat "$work/out.txt")"
grep -qF 'model_warmup' "$config" && fail "--no-triton-warmup wrote model_warmup"
[ ! -e "$sample" ] || fail "--no-triton-warmup left the unused sample $sample"
"$validflow" export --out "$run" --to "$work/x.vfm" --triton-threads 2 >"$work/out.txt" 2>&1 && fail "--triton-threads without --triton"
grep -qF -- "--triton-threads requires --triton" "$work/out.txt" || fail "--triton-threads: $(cat "$work/out.txt")"

# The default name.
"$validflow" export --out "$run" --to "$work/model.vfm" --triton "$work/repo" >"$work/out.txt" 2>&1 ||
  fail "export with the default name: $(cat "$work/out.txt")"
[ -f "$work/repo/validflow/config.pbtxt" ] && [ -f "$work/repo/validflow/1/model.vfm" ] ||
  fail "no entry $work/repo/validflow/"
# Refused before the work, nothing written (exit 3, one line): a repository that is a file; an entry of another
# backend. A failed export (a run that is not one) leaves the good entry as it was.
refused_target() {  # refused_target "expected line" args...
  local expected="$1" rc=0
  shift
  rm -f "$work/third.vfm"
  "$validflow" export --to "$work/third.vfm" "$@" >"$work/out.txt" 2>&1 || rc=$?
  [ "$rc" -eq 3 ] || fail "export $* exited with $rc, not 3: $(cat "$work/out.txt")"
  [ "$(grep -c '^error: ' "$work/out.txt")" -eq 1 ] && grep -qxF -- "$expected" "$work/out.txt" ||
    fail "export $*: not the one line '$expected' in: $(cat "$work/out.txt")"
  [ ! -e "$work/third.vfm" ] || fail "export $* wrote $work/third.vfm"
  ! find "$work" -name '*.validflow-tmp.*' -o -name '.export.*' | grep -q . || fail "export $* left temporary files"
  echo "refused: export $* -> $expected"
}
touch "$work/not-a-folder"
refused_target "error: --triton $work/not-a-folder: $work/not-a-folder is not a directory (nothing written)" \
  --out "$run" --triton "$work/not-a-folder"
mkdir -p "$work/repo/onnx"
printf 'name: "onnx"\nbackend: "onnxruntime"\n' >"$work/repo/onnx/config.pbtxt"
refused_target "error: --triton $work/repo: $work/repo/onnx/config.pbtxt is not a validflow model's configuration \
(backend \"validflow\"): not replaced (choose another name) (nothing written)" --out "$run" --triton "$work/repo" --name onnx
cp -r "$work/repo" "$work/repo-before"
rc=0
"$validflow" export --out "$work/no-run" --to "$work/third.vfm" --triton "$work/repo" --name bottles-2.a \
  >"$work/out.txt" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || fail "export of a missing run exited with $rc, not 3: $(cat "$work/out.txt")"
diff -r "$work/repo-before" "$work/repo" >/dev/null || fail "a failed export changed the repository"
echo "triton.export: all checks passed"
