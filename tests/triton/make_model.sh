#!/usr/bin/env bash
# Fixture of the Triton tests (CTest triton.model): a small trained detector from `validflow demo` (3 epochs), its
# Triton model repository written by `validflow export --triton`, and `validflow predict`'s results (the reference
# the server's answers are compared with) on the demo's 50 test images (256 x 256) and on 3 images of other sizes
# made from them and 4 in other encodings (PIL, Debian python3-pil).
# Usage: make_model.sh VALIDFLOW WORK_DIR
#   WORK_DIR/demo/ (the run) and model.vfm, WORK_DIR/repo/demo/{config.pbtxt,1/model.vfm},
#   WORK_DIR/predict/predictions.json
set -euo pipefail
validflow="$1"
work="$2"
rm -rf "$work"
mkdir -p "$work"
"$validflow" --threads 2 demo --out "$work/demo" --epochs 3
"$validflow" --threads 2 export --out "$work/demo" --to "$work/demo/model.vfm" --triton "$work/repo" --name demo
cmp "$work/demo/model.vfm" "$work/repo/demo/1/model.vfm"
/usr/bin/python3 - "$work/demo/data/test" "$work/other-sizes" <<'PY'
import os, sys
from PIL import Image
test, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
crack, good = Image.open(os.path.join(test, "crack", "000.png")), Image.open(os.path.join(test, "good", "000.png"))
crack.crop((10, 30, 250, 190)).save(os.path.join(out, "crack000_crop_160x240.png"))   # H x W
good.resize((512, 384), Image.BILINEAR).convert("RGB").save(os.path.join(out, "good000_384x512.png"))
crack.resize((97, 131), Image.BILINEAR).save(os.path.join(out, "crack000_131x97.png"))
PY
# The same crack in every encoding the backend's IMAGE_BYTES input takes (and predict reads): JPEG, BMP, TIFF and a
# 16-bit gray PNG (decoded to float pixels by both).
/usr/bin/python3 - "$work/demo/data/test" "$work/other-formats" <<'PY'
import os, sys
import numpy as np
from PIL import Image
test, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
crack = Image.open(os.path.join(test, "crack", "000.png")).convert("RGB")
crack.save(os.path.join(out, "crack000.jpg"), quality=90)
crack.save(os.path.join(out, "crack000.bmp"))
crack.save(os.path.join(out, "crack000.tif"))
gray16 = (np.asarray(crack.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
Image.fromarray(gray16, mode="I;16").save(os.path.join(out, "crack000_gray16.png"))
PY
"$validflow" --threads 2 predict --model "$work/demo/model.vfm" --out "$work/predict" "$work/demo/data/test" \
  "$work/other-sizes" "$work/other-formats"
test -s "$work/predict/predictions.json"
# A second product for the many-models test: another backbone (EfficientNet-B0, random weights, 128 px) and another
# flow (CS-Flow, 2 blocks), its own repository entry and predict's results.
"$validflow" --threads 2 extract --dataset "folder:$work/demo/data" --backbone efficientnet-b0 --weights none \
  --image-size 128 --out "$work/second"
"$validflow" --threads 2 train --out "$work/second" --model csflow --blocks 2 --hidden 32 --epochs 2
"$validflow" --threads 2 export --out "$work/second" --to "$work/second/model.vfm" --triton "$work/repo" --name second
"$validflow" --threads 2 predict --model "$work/second/model.vfm" --out "$work/predict-second" "$work/demo/data/test"
echo "make_model: $work/repo/demo and $work/predict/predictions.json"
