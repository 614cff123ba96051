#!/usr/bin/env python3
"""The bad-input table (docs/reliability.md): the `validflow` program fed bad options, files, images, labels
and kill -9 at several points of its work. Every row asserts
  * the exit code (docs/reliability.md: 0 ok, 2 usage, 3 bad data or files, 4 predict skipped images);
  * a message naming the culprit (the option, file, image or line);
  * no stack trace (`Exception raised from`, `frame #`) and, for errors, exactly one `error:` line;
  * that every file that existed before is byte-identical afterwards, and no temporary file is left behind
    (interrupt rows: the killed run's temporary files are removed by the next run, which succeeds).
It builds a tiny dataset and run (EfficientNet-B0 cut after block 2 at 128 px, random weights, ValidFlow n=1
hidden 8) in WORK first.  Usage: bad_inputs.py VALIDFLOW WORK"""
import hashlib, json, os, shutil, signal, struct, subprocess, sys, time, zipfile, zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vfm_files import edited, extreme_first_value, flow_weight, not_a_permutation, read_archive, tensor_named  # noqa: E402

VALIDFLOW, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ENV = dict(os.environ, OMP_NUM_THREADS="2")
ENV.pop("VALIDFLOW_FAULT_KILL", None)
TRACE = ("Exception raised from", "frame #", "INTERNAL ASSERT", "Traceback", "terminate called")
EXTRACT = ["--backbone", "efficientnet-b0", "--layer", "2", "--image-size", "128", "--weights", "none",
           "--extract-batch-size", "8"]
TRAIN = ["--modules", "1", "--hidden", "8", "--epochs", "2", "--batch-size", "4", "--checkpoint-every", "1"]
TIMEOUT = 300  # a hang is a failure


def run(args, env=None, timeout=TIMEOUT):
    e = dict(ENV, **(env or {}))
    return subprocess.run([VALIDFLOW] + args, capture_output=True, text=True, env=e, timeout=timeout)


def snapshot(*roots):
    """sha256 of every regular file under the roots (symlinks by target name)."""
    out = {}
    for root in roots:
        if os.path.isfile(root):
            out[root] = hashlib.sha256(open(root, "rb").read()).hexdigest()
            continue
        for d, _, files in os.walk(root):
            for f in files:
                p = os.path.join(d, f)
                if os.path.islink(p):
                    out[p] = "link:" + os.readlink(p)
                elif os.path.isfile(p):
                    out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def temp_files(root):
    found = []
    for d, dirs, files in os.walk(root):
        found += [os.path.join(d, n) for n in files + dirs if ".validflow-tmp." in n]
    return found


# ---- fixtures -------------------------------------------------------------------------------------------
def png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def header_only_png(path, width, height):
    """A small, well-formed 8-bit gray PNG whose header claims width x height pixels (its data is far too short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                           + chunk(b"IEND", b""))


def make_dataset(root, rng):
    """folder layout, 64x64: 8 train, 4 good + 2 scratch + 2 spot test images, masks for the defects."""
    shutil.rmtree(root, ignore_errors=True)
    base = lambda: (rng.random((64, 64, 3)) * 60 + 100).astype(np.uint8)
    for i in range(8):
        png(f"{root}/train/good/{i:03d}.png", base())
    for i in range(4):
        png(f"{root}/test/good/{i:03d}.png", base())
    for t in ("scratch", "spot"):
        for i in range(2):
            im, mask = base(), np.zeros((64, 64), np.uint8)
            mask[20:30, 10 + 10 * i:40] = 255
            im[mask > 0] = 250
            png(f"{root}/test/{t}/{i:03d}.png", im)
            png(f"{root}/ground_truth/{t}/{i:03d}_mask.png", mask)


def flip(path, dst, where=0.6):
    b = bytearray(open(path, "rb").read())
    b[int(len(b) * where)] ^= 0x10
    open(dst, "wb").write(bytes(b))


def truncate(path, dst, fraction=0.5):
    b = open(path, "rb").read()
    open(dst, "wb").write(b[:int(len(b) * fraction)])


# ---- the table ------------------------------------------------------------------------------------------
rows, failures = [], []


def check(cls, name, ok, detail=""):
    rows.append((cls, name, ok))
    status = "ok  " if ok else "FAIL"
    print(f"{status} [{cls}] {name}" + ("" if ok else f"\n      {detail}"), flush=True)
    if not ok:
        failures.append(f"[{cls}] {name}: {detail}")


def expect(cls, name, args, code, culprit, watch, env=None, stdout_has=None):
    """Runs args; asserts code, culprit in the output, no trace, one error line, files in `watch` unchanged."""
    before = snapshot(*watch)
    try:
        p = run(args, env)
    except subprocess.TimeoutExpired:
        check(cls, name, False, f"hung (more than {TIMEOUT} s)")
        return None
    out = p.stdout + p.stderr
    problems = []
    if p.returncode != code:
        problems.append(f"exit code {p.returncode}, expected {code}")
    for c in ([culprit] if isinstance(culprit, str) else culprit):
        if c not in out:
            problems.append(f"message does not name {c!r}")
    if stdout_has and stdout_has not in p.stdout:
        problems.append(f"stdout lacks {stdout_has!r}")
    if any(t in out for t in TRACE):
        problems.append("a stack trace was printed")
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    if code in (2, 3) and len(errors) != 1:  # usage errors too: the one documented format
        problems.append(f"{len(errors)} 'error:' lines, expected one")
    after = snapshot(*watch)
    changed = [k for k in before if after.get(k) != before[k]]
    if changed:
        problems.append(f"pre-existing files changed or removed: {changed[:3]}")
    left = [t for w in watch if os.path.isdir(w) for t in temp_files(w)]
    if left:
        problems.append(f"temporary files left: {left[:3]}")
    check(cls, name, not problems, "; ".join(problems) + f"\n      stderr: {p.stderr.strip()[-600:]!r}")
    return p


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    rng = np.random.default_rng(0)
    data, run_dir = f"{WORK}/data", f"{WORK}/run"
    make_dataset(data, rng)
    steps = [["extract", "--dataset", "folder:" + data, "--out", run_dir] + EXTRACT,
             ["train", "--out", run_dir] + TRAIN,
             ["eval", "--out", run_dir, "--heatmaps", "1"],
             ["export", "--out", run_dir, "--to", f"{run_dir}/model.vfm"]]
    for s in steps:
        p = run(s)
        assert p.returncode == 0, f"setup step {s[0]} failed ({p.returncode}): {p.stderr[-3000:]}"
    model, features, ckpt = f"{run_dir}/model.vfm", f"{run_dir}/features.pt", f"{run_dir}/checkpoint.pt"
    bad = f"{WORK}/bad"
    os.makedirs(bad)
    W = [run_dir, data, bad]  # every row: nothing here may change

    # ---- options: refused while parsing, naming the option and the range; nothing read or written ----
    train_opts = [("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "99999999999999999999"), ("--epochs", "nan"),
                  ("--epochs", "2.5"), ("--batch-size", "0"), ("--batch-size", "-3"), ("--batch-size", "100000"),
                  ("--checkpoint-every", "0"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-1"), ("--lr", "inf"),
                  ("--adam-eps", "0"), ("--weight-decay", "-1"), ("--max-grad-norm", "-1"),
                  ("--max-grad-norm", "nan"), ("--hidden", "0"), ("--hidden", "-4"), ("--hidden", "100000000"),
                  ("--kernel-size", "0"), ("--modules", "0"), ("--modules", "100000"), ("--clamp", "0"),
                  ("--clamp", "-3"), ("--clamp", "nan"), ("--clamp", "1e400"), ("--model", "glow")]
    for opt, value in train_opts:
        expect("options", f"train {opt} {value}", ["train", "--out", run_dir, opt, value], 2, opt, W)
    expect("options", "train --kernel-size 4 (even)", ["train", "--out", run_dir, "--kernel-size", "4"], 2,
           ["--kernel-size", "odd"], W)
    expect("options", "train --blocks with --model validflow", ["train", "--out", run_dir, "--blocks", "3"], 2,
           "--blocks", W)
    for opt, value in [("--threads", "0"), ("--threads", "-1"), ("--threads", "100000")]:
        expect("options", f"{opt} {value}", ["train", "--out", run_dir, opt, value], 2, opt, W)
    extract_opts = [("--image-size", "0"), ("--image-size", "100000"), ("--extract-batch-size", "0"),
                    ("--layer", "-2"), ("--holdout", "0.9"), ("--holdout", "nan")]
    for opt, value in extract_opts:
        expect("options", f"extract {opt} {value}",
               ["extract", "--dataset", "folder:" + data, "--out", run_dir, opt, value], 2, opt, W)
    expect("options", "extract --image-size 100 (not a multiple of the stride)",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/size"] + EXTRACT[:4] + ["--image-size", "100",
                                                                                              "--weights", "none"],
           2, ["error: --image-size", "100 must divide by", "nearest valid sizes are 96 and 112"], W)
    expect("options", "extract --image-size 300: the nearest valid sizes named",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/size", "--backbone", "efficientnet-b0",
            "--weights", "none", "--image-size", "300"],
           2, ["error: --image-size", "nearest valid sizes are 256 and 384", "see validflow extract --help"], W)
    no_weights = f"{bad}/no-weights"
    os.makedirs(no_weights)
    expect("options", "extract --backbone efficientnet-b3 without its pretrained weights: refused, never random",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/b3", "--backbone", "efficientnet-b3"], 3,
           ["efficientnet-b3.pt not found", "--weights none", "fetch_assets.sh"], W,
           env={"VALIDFLOW_WEIGHTS_DIR": no_weights})
    expect("options", "extract with the default --backbone auto and no weights installed: refused",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/auto"], 3,
           ["no pretrained weights", "--weights none"], W, env={"VALIDFLOW_WEIGHTS_DIR": no_weights})
    check("options", "extract: no output folder after a refused backbone", not os.path.exists(f"{bad}/b3"))
    expect("options", "extract --layer 99 (beyond the backbone)",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/layer", "--backbone", "efficientnet-b0",
            "--layer", "99", "--weights", "none"], 2, ["--layer", "99"], W)
    expect("options", "extract --backbone resnet50 (unknown)",
           ["extract", "--dataset", "folder:" + data, "--out", f"{bad}/bb", "--backbone", "resnet50"], 2,
           ["--backbone", "resnet50"], W)
    for opt, value in [("--heatmaps", "-1"), ("--map-sigma", "nan"), ("--precision", "fp8")]:
        expect("options", f"eval {opt} {value}", ["eval", "--out", run_dir, opt, value], 2, opt, W)
    for opt, value in [("--target-fpr", "2"), ("--threshold-from", "guess")]:
        expect("options", f"export {opt} {value}", ["export", "--out", run_dir, "--to", f"{bad}/m.vfm", opt, value],
               2, opt, W)
    for opt, value in [("--batch-size", "0"), ("--device", "gpu"), ("--threshold", "nan")]:
        expect("options", f"predict {opt} {value}", ["predict", "--model", model, data, opt, value], 2, opt, W)
    expect("options", "predict --heatmaps without --out", ["predict", "--model", model, "--heatmaps", data], 2,
           "--heatmaps", W)
    expect("options", "check-csflow --tolerance nan", ["check-csflow", model, "--tolerance", "nan"], 2,
           "--tolerance", W)
    expect("options", "info --map-size 0", ["info", "--map-size", "0"], 2, "--map-size", W)
    expect("options", "info --channels 3 (odd)", ["info", "--channels", "3"], 2, "channels", W)
    expect("options", "extract --dataset without KIND:", ["extract", "--dataset", data, "--out", f"{bad}/spec"], 3,
           "KIND:PATH", W)
    labels = f"{bad}/labels"
    os.makedirs(labels)
    good_images = sorted(os.listdir(f"{data}/train/good"))
    open(f"{labels}/missing.csv", "w").write(f"path,label\n{data}/train/good/{good_images[0]},0\nnope.png,1\n")
    expect("labels", "csv: an image that does not exist", ["extract", "--dataset", f"csv:{labels}/missing.csv",
                                                            "--out", f"{bad}/csv1"] + EXTRACT, 3,
           ["image not found", "nope.png", "missing.csv line 3"], W)
    open(f"{labels}/label.csv", "w").write(f"path,label\n{data}/train/good/{good_images[0]},perhaps\n")
    expect("labels", "csv: a label that is no label", ["extract", "--dataset", f"csv:{labels}/label.csv",
                                                        "--out", f"{bad}/csv2"] + EXTRACT, 3,
           ["label.csv line 2", "label 'perhaps'"], W)
    open(f"{labels}/columns.csv", "w").write(f"path,label,colour\n{data}/train/good/{good_images[0]},0,red\n")
    expect("labels", "csv: an unknown column", ["extract", "--dataset", f"csv:{labels}/columns.csv",
                                                 "--out", f"{bad}/csv3"] + EXTRACT, 3, ["unknown column 'colour'"], W)
    csv_rows = ["path,label,type"]
    for d, _, files in sorted(os.walk(data)):
        for f in sorted(files):
            kind = os.path.basename(d)
            if f.endswith(".png") and "ground_truth" not in d:
                csv_rows.append(f"{os.path.relpath(os.path.join(d, f), labels)},{0.0 if kind == 'good' else 0.9},"
                            f"{'' if kind == 'good' else kind}")
    open(f"{labels}/all.csv", "w").write("\n".join(csv_rows) + "\n")
    p = run(["extract", "--dataset", f"csv:{labels}/all.csv", "--out", f"{bad}/csv-ok"] + EXTRACT)
    check("labels", "csv: a labels file of the dataset's images extracts (relative paths, probabilities)",
          p.returncode == 0 and " test (" in p.stderr, p.stderr[-600:])
    shutil.rmtree(f"{bad}/csv-ok", ignore_errors=True)
    expect("options", "extract --label-cutoff 0", ["extract", "--dataset", f"csv:{labels}/label.csv", "--out",
                                                   f"{bad}/csv4", "--label-cutoff", "0"], 2, "--label-cutoff", W)
    expect("options", "extract --dataset unknown:", ["extract", "--dataset", "tiff:" + data, "--out", f"{bad}/spec"],
           3, "unknown dataset kind", W)

    # ---- files: every defect refused before any output is touched, the file named ----
    def case_dir(name, files):
        d = f"{bad}/{name}"
        os.makedirs(d)
        for f in files:
            shutil.copy(f, d)
        return d

    corruptions = {
        "truncated": lambda src, dst: truncate(src, dst),
        "one byte changed": lambda src, dst: flip(src, dst),
        "empty": lambda src, dst: open(dst, "wb").close(),
        "a foreign zip": lambda src, dst: zipfile.ZipFile(dst, "w").writestr("data.pkl", b"\x80\x02}q\x00."),
        "a directory": lambda src, dst: os.makedirs(dst),
        "a text file": lambda src, dst: open(dst, "w").write("hello\n"),
    }
    for what, corrupt in corruptions.items():
        d = case_dir("ckpt-" + what.replace(" ", "-"), [features])
        corrupt(ckpt, f"{d}/checkpoint.pt")
        expect("files", f"eval: checkpoint is {what}", ["eval", "--out", d], 3, "checkpoint.pt", W)
        d = case_dir("feat-" + what.replace(" ", "-"), [ckpt])
        corrupt(features, f"{d}/features.pt")
        expect("files", f"train: features file is {what}", ["train", "--out", d] + TRAIN, 3, "features.pt", W)
        target = f"{bad}/model-{what.replace(' ', '-')}.vfm"
        corrupt(model, target)
        expect("files", f"predict: model file is {what}", ["predict", "--model", target, data], 3, target, W)
    d = case_dir("kinds", [])
    shutil.copy(features, f"{d}/checkpoint.pt")
    shutil.copy(ckpt, f"{d}/features.pt")
    expect("files", "eval: a features file as checkpoint", ["eval", "--out", d], 3,
           ["checkpoint.pt", "validflow-features file, expected a validflow-checkpoint"], W)
    expect("files", "predict: a checkpoint as model file", ["predict", "--model", ckpt, data], 3,
           ["checkpoint.pt", "expected a validflow-model"], W)
    expect("files", "predict: a missing model file", ["predict", "--model", f"{bad}/absent.vfm", data], 3,
           "absent.vfm", W)
    expect("files", "eval: an empty run folder", ["eval", "--out", f"{bad}/nothing"], 3, f"{bad}/nothing", W)
    expect("files", "check-csflow: a model file as golden file", ["check-csflow", model], 3,
           ["model.vfm", "validflow file"], W)
    expect("files", "check-csflow: a directory", ["check-csflow", bad], 3, [bad, "directory"], W)
    # Well-formed files (checksums right) that lie: named key, shape or value.
    d = case_dir("missing-key", [ckpt])
    edited(features, f"{d}/features.pt", edit_header=lambda h: h["tensors"].pop(
        next(i for i, e in enumerate(h["tensors"]) if e["name"] == "test.1")))
    expect("files", "train: features file without 'test.1'", ["train", "--out", d] + TRAIN, 3,
           ["features.pt", "test.1"], W)

    def rank3(h):
        e = next(e for e in h["tensors"] if e["name"] == "train.0")
        e["shape"] = [e["shape"][0] * e["shape"][1], e["shape"][2], e["shape"][3]]
    d = case_dir("rank", [ckpt])
    edited(features, f"{d}/features.pt", edit_header=rank3)
    expect("files", "train: features of the wrong rank", ["train", "--out", d] + TRAIN, 3, ["features.pt", "train.0"], W)

    def nan_bytes(b):
        return struct.pack("<f", float("nan")) + b[4:]
    d = case_dir("nan-features", [ckpt])
    edited(features, f"{d}/features.pt", tensor="test.0", edit_bytes=nan_bytes)
    expect("files", "eval: NaN in the test features", ["eval", "--out", d], 3, ["features.pt", "NaN"], W)
    d = case_dir("nan-weights", [features])
    first_weight = next(e["name"] for e in read_archive(ckpt)[1]["tensors"] if e["name"].startswith("model.")
                        and e["dtype"] == "float32" and e["size"] >= 4)
    edited(ckpt, f"{d}/checkpoint.pt", tensor=first_weight, edit_bytes=nan_bytes)
    expect("files", "eval: NaN in the checkpoint's weights", ["eval", "--out", d], 3,
           ["checkpoint.pt", first_weight, "NaN"], W)
    d = case_dir("hidden", [features])
    edited(ckpt, f"{d}/checkpoint.pt", edit_header=lambda h: h["meta"]["config"].update(hidden=16))
    expect("files", "eval: checkpoint config disagrees with its weights", ["eval", "--out", d], 3, "checkpoint.pt", W)
    d = case_dir("huge", [features])
    edited(ckpt, f"{d}/checkpoint.pt", edit_header=lambda h: h["meta"]["config"].update(hidden=65536, kernel_size=31))
    expect("files", "eval: small checkpoint describing a huge flow", ["eval", "--out", d], 3,
           ["checkpoint.pt", "needs at least"], W)
    d = case_dir("float-epoch", [features])
    edited(ckpt, f"{d}/checkpoint.pt", edit_header=lambda h: h["meta"].update(epoch=1e300))
    expect("files", "eval: checkpoint epoch 1e300", ["eval", "--out", d], 3, ["checkpoint.pt", "epoch"], W)
    target = f"{bad}/big-backbone.vfm"
    edited(model, target, edit_header=lambda h: h["meta"]["backbone"].update(name="efficientnet-b7", layer=54))
    expect("files", "predict: small model file describing a B7 backbone", ["predict", "--model", target, data], 3,
           [target, "needs"], W)
    expect("files", "export --to an existing directory", ["export", "--out", run_dir, "--to", bad], 3, bad, W)

    # ---- images: bad ones are errors naming the file, or listed with --skip-bad-images ----
    def image_case(name, make, code, culprit, skip_code=0):
        root = f"{bad}/img-{name}"
        shutil.copytree(data, root)
        path = make(root)
        expect("images", f"extract: {name}",
               ["extract", "--dataset", "folder:" + root, "--out", f"{root}-run"] + EXTRACT, code,
               culprit(path) if callable(culprit) else culprit, W + [root])
        if code == 3:
            p = expect("images", f"extract --skip-bad-images: {name} (listed)",
                       ["extract", "--dataset", "folder:" + root, "--out", f"{root}-run2", "--skip-bad-images"] +
                       EXTRACT, skip_code, ["skipped", path], W + [root])

    def truncated_jpeg(root):
        p = f"{root}/test/good/cut.jpg"
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(p, quality=90)
        truncate(p, p, 0.7)
        return p

    def truncated_png(root):
        p = f"{root}/train/good/000.png"
        truncate(p, p, 0.8)
        return p

    def corrupt_png(root):
        p = f"{root}/test/spot/001.png"
        flip(p, p, 0.5)
        return p

    def text_png(root):
        p = f"{root}/test/good/notes.png"
        open(p, "w").write("not an image\n")
        return p

    def ppm_png(root):
        p = f"{root}/test/good/netpbm.png"
        open(p, "wb").write(b"P6\n2 2\n255\n" + bytes(12))
        return p

    def empty_png(root):
        p = f"{root}/test/good/empty.png"
        open(p, "wb").close()
        return p

    def dangling(root):
        p = f"{root}/train/good/link.png"
        os.symlink(f"{root}/nowhere.png", p)
        return p

    def mask_size(root):
        p = f"{root}/ground_truth/scratch/001_mask.png"
        png(p, np.zeros((32, 48), np.uint8))
        return p

    def huge_header(root):
        p = f"{root}/test/good/huge.png"
        header_only_png(p, 100000, 100000)
        return p

    for name, make, culprit in [("truncated JPEG", truncated_jpeg, lambda p: [p, "truncated JPEG"]),
                                ("truncated PNG", truncated_png, lambda p: [p, "truncated PNG"]),
                                ("PNG with a changed byte", corrupt_png, lambda p: [p, "CRC"]),
                                ("text file named .png", text_png, lambda p: [p, "not a PNG, JPEG, BMP or TIFF"]),
                                ("Netpbm file named .png", ppm_png, lambda p: [p, "not a PNG, JPEG, BMP or TIFF"]),
                                ("empty .png", empty_png, lambda p: [p, "empty file"]),
                                ("dangling symbolic link", dangling, lambda p: [p, "dangling symbolic link"]),
                                ("PNG header of 100000 x 100000", huge_header, lambda p: [p, "larger than the limit"])]:
        image_case(name, make, 3, culprit)
    root = f"{bad}/img-mask-size"
    shutil.copytree(data, root)
    mask_size(root)
    expect("images", "extract: a mask of another size than its image",
           ["extract", "--dataset", "folder:" + root, "--out", f"{root}-run"] + EXTRACT, 3,
           ["001_mask.png is 48 x 32", "scratch/001.png is 64 x 64"], W + [root])

    def odd_image(name, array):
        def make(root):
            p = f"{root}/test/good/odd.png"
            png(p, array)
            return p
        image_case(name, make, 0, "features")
    odd_image("a 1x1 image (accepted)", np.full((1, 1, 3), 128, np.uint8))
    odd_image("a 16-bit gray image (accepted)", (rng.random((40, 30)) * 65535).astype(np.uint16))
    odd_image("a gray image (accepted)", (rng.random((40, 30)) * 255).astype(np.uint8))
    odd_image("an RGBA image (accepted)", (rng.random((40, 30, 4)) * 255).astype(np.uint8))
    # predict: unreadable images are listed and skipped (exit 4), the rest scored.
    pred = f"{bad}/predict-images"
    os.makedirs(pred)
    shutil.copy(f"{data}/test/good/000.png", pred)
    open(f"{pred}/broken.png", "wb").write(open(f"{data}/test/good/001.png", "rb").read()[:300])
    os.symlink(f"{pred}/gone.png", f"{pred}/dangling.png")
    expect("images", "predict: a truncated image and a dangling link are listed",
           ["predict", "--model", model, pred], 4, ["broken.png", "dangling.png", "truncated PNG"], W,
           stdout_has="1 scored")

    # ---- DAGM labels ----
    def dagm(name, rows):
        root = f"{bad}/dagm-{name}"
        for split in ("Train", "Test"):
            png(f"{root}/{split}/0001.PNG", (rng.random((32, 32)) * 255).astype(np.uint8))
            png(f"{root}/{split}/0002.PNG", (rng.random((32, 32)) * 255).astype(np.uint8))
            png(f"{root}/{split}/Label/0002_label.PNG", np.zeros((32, 32), np.uint8))
            os.makedirs(f"{root}/{split}/Label", exist_ok=True)
            open(f"{root}/{split}/Label/Labels.txt", "w").write(rows)
        return root
    good_rows = "2\n1\t0\t0001.PNG\t0\t0\n2\t1\t0002.PNG\t0\t0002_label.PNG\n"
    for name, rows_text, culprit in [
            ("4 columns", "1\n1\t0\t0001.PNG\t0\n", ["Labels.txt line 2", "4 columns instead of 5"]),
            ("6 columns", good_rows + "3\t0\t0001.PNG\t0\t0\t9\n", ["Labels.txt line 4", "6 columns instead of 5"]),
            ("../ escape", "1\n1\t0\t../../../etc/passwd\t0\t0\n", ["Labels.txt line 2", "leaves the dataset folder"]),
            ("absolute path", "1\n1\t1\t0002.PNG\t0\t/etc/shadow\n", ["Labels.txt line 2", "leaves the dataset"]),
            ("label 2", "1\n1\t2\t0001.PNG\t0\t0\n", ["Labels.txt line 2", "label is not 0 or 1"]),
            ("listed image missing", "1\n1\t0\t0009.PNG\t0\t0\n", "0009.PNG")]:
        root = dagm(name.replace(" ", "-").replace("/", ""), rows_text)
        expect("labels", f"DAGM Labels.txt: {name}",
               ["extract", "--dataset", "dagm:" + root, "--out", f"{root}-run"] + EXTRACT, 3, culprit, W + [root])
    root = dagm("good", good_rows)
    os.remove(f"{root}/Test/Label/Labels.txt")
    expect("labels", "DAGM: Labels.txt missing", ["extract", "--dataset", "dagm:" + root, "--out", f"{root}-run"] +
           EXTRACT, 3, "Labels.txt", W + [root])

    # ---- decisions: a score that cannot be trusted never passes a part ----
    target = f"{bad}/extreme-weight.vfm"
    edited(model, target, tensor=flow_weight(model), edit_bytes=extreme_first_value)
    expect("decisions", "predict: a model file whose one extreme weight makes the flow overflow",
           ["predict", "--model", target, data], 3, [target, "not finite on a probe image"], W)
    nan_out = f"{bad}/nan-predictions"
    p = expect("decisions", "predict: a non-finite score is listed as INVALID, anomalous, exit 6",
               ["predict", "--model", model, "--out", nan_out, "--heatmaps", f"{data}/test/good"], 6,
               ["INVALID", "001.png", "never a pass"], W, env={"VALIDFLOW_FAULT_NAN_SCORE": "001.png"})
    if p is not None:
        problems = []
        try:
            report = json.loads(open(f"{nan_out}/predictions.json").read())  # strict: NaN tokens would fail here
            row = next(r for r in report["images"] if r["path"].endswith("001.png"))
            if not (row["anomalous"] and row["valid"] is False and row["score"] is None and report["invalid"] == 1):
                problems.append(f"row {row}")
            if "NaN" in open(f"{nan_out}/predictions.json").read():
                problems.append("NaN in predictions.json")
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            problems.append(repr(e))
        check("decisions", "predict: the invalid image in predictions.json: anomalous, valid false, score null",
              not problems, "; ".join(problems))
    expect("decisions", "predict without --out: the invalid image on stdout",
           ["predict", "--model", model, f"{data}/test/good/001.png"], 6, ["INVALID", "001.png"], W,
           env={"VALIDFLOW_FAULT_NAN_SCORE": "001.png"}, stdout_has="INVALID")

    # ---- ownership: only what validflow wrote is touched; an output is never an input ----
    for what in ("checkpoint.pt", "features.pt"):
        expect("ownership", f"export --to the run's own {what}", ["export", "--out", run_dir, "--to",
                                                                  f"{run_dir}/{what}"], 3, ["--to", "export reads"], W)
    photo = f"{bad}/owned/photo.png"
    png(photo, np.zeros((8, 8, 3), np.uint8))
    expect("ownership", "export --to a user's file (not a model file)",
           ["export", "--out", run_dir, "--to", photo], 3, [photo, "not a validflow model file"], W)
    user = f"{bad}/owned/run"
    shutil.copytree(run_dir, user)
    users_things = [f"{user}/photos.tmp.999999999.1/a.png", f"{user}/model.vfm.validflow-tmp.999999999.0/b.png",
                    f"{user}/notes.validflow-tmp.999999999.0"]
    for t in users_things:
        os.makedirs(os.path.dirname(t), exist_ok=True)
        open(t, "w").write("a user's data")
    p = run(["export", "--out", user, "--to", f"{user}/model.vfm"])
    p2 = run(["eval", "--out", user])
    kept = [t for t in users_things if os.path.exists(t)]
    check("ownership", "export and eval sweep no user's file or folder that merely looks like a temporary name",
          p.returncode == 0 and p2.returncode == 0 and kept == users_things,
          f"exit {p.returncode}/{p2.returncode}, kept {kept}: {p.stderr[-300:]} {p2.stderr[-300:]}")
    for t in users_things:
        shutil.rmtree(os.path.dirname(t)) if "/photos" in t or "/model.vfm.validflow" in t else os.remove(t)
    inputs = f"{bad}/owned/images"
    shutil.copytree(f"{data}/test", inputs)
    counts = []
    for _ in range(2):
        p = run(["predict", "--model", model, "--out", f"{inputs}/predictions", "--heatmaps", inputs])
        counts.append(p.stdout.split(" scored")[0].split()[-1] if " scored" in p.stdout else p.stderr[-200:])
    check("ownership", "predict --out inside the input folder never scores its own heatmaps",
          counts[0] == counts[1] == "8", f"scored {counts}")
    shutil.rmtree(f"{inputs}/predictions")
    users_out = f"{bad}/owned/users-folder"
    png(f"{users_out}/holiday.png", np.zeros((8, 8, 3), np.uint8))
    expect("ownership", "predict --out a folder of a user's files (it would be replaced)",
           ["predict", "--model", model, "--out", users_out, data], 3, [users_out, "did not write", "holiday.png"], W + [users_out])
    expect("ownership", "predict --out a folder holding an input",
           ["predict", "--model", model, "--out", f"{data}/test", f"{data}/test/good"], 3, ["holds the input"], W)
    again = f"{bad}/owned/again"
    run(["predict", "--model", model, "--out", again, "--heatmaps", data])
    run(["predict", "--model", model, "--out", again, "--heatmaps", f"{data}/test/good"])
    left = sorted(os.path.relpath(os.path.join(d, f), f"{again}/heatmaps")
                  for d, _, files in os.walk(f"{again}/heatmaps") for f in files)
    check("ownership", "a second predict --out replaces the first one's results whole (no stale heatmaps)",
          left == [f"good/{i:03d}.png" for i in range(4)], f"heatmaps {left}")

    # ---- resources: limits derived before allocating ----
    target = f"{bad}/claims-4096.vfm"
    edited(model, target, edit_header=lambda h: h["meta"]["backbone"].update(image_size=4096))
    expect("resources", "predict: a small model file claiming a 4096-px input",
           ["predict", "--model", target, data], 3, [target, "above the limit of 1536 px"], W)
    target = f"{bad}/map-sizes.vfm"
    edited(model, target, edit_header=lambda h: h["meta"].update(feature_map_sizes=[64, 32, 16]))
    expect("resources", "predict: feature-map sizes that are not what the flow was trained on",
           ["predict", "--model", target, data], 3, [target, "trained on feature maps of [64,32,16]"], W)
    big = f"{bad}/big-image"
    os.makedirs(big)
    shutil.copy(f"{data}/test/good/000.png", big)
    header_only_png(f"{big}/huge.png", 16384, 16384)
    expect("resources", "predict: a small PNG of 16384 x 16384 (268 Mpx) is skipped before decoding",
           ["predict", "--model", model, big], 4, ["huge.png", "larger than the limit of 67108864"], W + [big],
           stdout_has="1 scored")
    for value in ("0", "-5", "1e20"):
        expect("resources", f"predict --max-image-pixels {value}",
               ["predict", "--model", model, data, "--max-image-pixels", value], 2, "--max-image-pixels", W)

    # ---- meaning: loaders check what the numbers mean ----
    perm = tensor_named(model, "perm_0")
    target = f"{bad}/not-a-permutation.vfm"
    edited(model, target, tensor=perm, edit_bytes=not_a_permutation)
    expect("meaning", "predict: a model file whose permutation is not one", ["predict", "--model", target, data], 3,
           [target, "is not a permutation"], W)
    d = case_dir("perm", [features])
    ckpt_perm = tensor_named(ckpt, "perm_0")
    edited(ckpt, f"{d}/checkpoint.pt", tensor=ckpt_perm, edit_bytes=not_a_permutation)
    expect("meaning", "eval: a checkpoint whose permutation is not one", ["eval", "--out", d], 3,
           ["checkpoint.pt", "is not a permutation"], W)
    stale = f"{bad}/stale-cache"
    shutil.copytree(data, f"{stale}/data")
    run(["extract", "--dataset", f"folder:{stale}/data", "--out", f"{stale}/run"] + EXTRACT)
    time.sleep(0.01)
    png(f"{stale}/data/test/good/000.png", np.full((64, 64, 3), 7, np.uint8))  # new content, same name
    p = run(["extract", "--dataset", f"folder:{stale}/data", "--out", f"{stale}/run"] + EXTRACT)
    check("meaning", "extract: a cache is not reused when an image changed under the same name",
          p.returncode == 0 and "images changed since extraction" in p.stderr, p.stderr[-400:])
    p = run(["extract", "--dataset", f"folder:{stale}/data", "--out", f"{stale}/run"] + EXTRACT)
    check("meaning", "extract: an up-to-date cache is reused without decoding the images",
          p.returncode == 0 and "reused" in p.stderr and "check images" not in p.stderr, p.stderr[-400:])

    # ---- user errors: one line, the documented exit code, the path named ----
    blocker = f"{bad}/a-file"
    open(blocker, "w").write("x")
    expect("user errors", "eval --out that is a file", ["eval", "--out", blocker], 3, blocker, W)
    expect("user errors", "extract --out under /proc",
           ["extract", "--dataset", "folder:" + data, "--out", "/proc/validflow-test"] + EXTRACT, 3, "/proc", W)
    expect("user errors", "predict --out that is a file", ["predict", "--model", model, "--out", blocker, data], 3,
           [blocker, "not a folder"], W)
    expect("user errors", "export --to under a file", ["export", "--out", run_dir, "--to", f"{blocker}/m.vfm"], 3,
           blocker, W)
    for cmd in (["eval", "--out", ""], ["predict", "--model", model, "--out", "", data]):
        expect("user errors", f"{cmd[0]} --out ''", cmd, 2, ["--out", "must not be empty"], W)
    loop = case_dir("loop", [features])
    os.symlink(f"{loop}/checkpoint.pt", f"{loop}/checkpoint.pt.other")
    os.remove(f"{loop}/features.pt")
    os.symlink(f"{loop}/checkpoint.pt.other", f"{loop}/checkpoint.pt")
    shutil.copy(features, f"{loop}/features.pt")
    expect("user errors", "eval: a checkpoint that is a symbolic-link loop", ["eval", "--out", loop], 3,
           ["checkpoint.pt", "symbolic links"], W)
    expect("user errors", "an unknown command", ["frobnicate", "--out", run_dir], 2,
           ["unknown command 'frobnicate'", "predict"], W)
    for value in ("-1", "18446744073709551616", "1.5"):
        expect("user errors", f"train --seed {value}", ["train", "--out", run_dir, "--seed", value], 2, "--seed", W)
    odd = f"{bad}/odd-names"
    os.makedirs(odd)
    shutil.copy(f"{data}/test/good/000.png", odd.encode() + b"/caf\xe9-\\x.png")  # Latin-1, not UTF-8
    os.mkfifo(f"{odd}/fifo.png")
    os.symlink("/dev/zero", f"{odd}/zero.png")
    os.makedirs(f"{odd}/folder.png")
    p = expect("user errors", "predict: a non-UTF-8 name is scored, a FIFO, a /dev/zero link and a folder named .png "
               "are listed", ["predict", "--model", model, "--out", f"{bad}/odd-out", odd], 4,
               ["fifo.png", "zero.png", "folder.png", "not a regular file"], W, stdout_has="1 scored")
    if p is not None:
        problems = []
        try:
            rows_ = json.loads(open(f"{bad}/odd-out/predictions.json", encoding="utf-8").read())["images"]
            if not (len(rows_) == 1 and rows_[0]["path"].endswith("caf\\xE9-\\\\x.png") and rows_[0].get("path_escaped")):
                problems.append(f"rows {rows_}")
            if "caf\\xE9-\\\\x.png" not in open(f"{bad}/odd-out/predictions.csv", encoding="utf-8").read():
                problems.append("predictions.csv lacks the escaped name")
        except Exception as e:  # noqa: BLE001
            problems.append(repr(e))
        check("user errors", "predict: the non-UTF-8 name written escaped and marked in JSON and CSV", not problems,
              "; ".join(problems))
    latin = f"{bad}/latin1-dataset"
    shutil.copytree(data, latin)
    shutil.copy(f"{data}/train/good/000.png", latin.encode() + b"/train/good/caf\xe9.png")
    expect("user errors", "extract: a file name that is not UTF-8 is named before any work",
           ["extract", "--dataset", "folder:" + latin, "--out", f"{latin}-run"] + EXTRACT, 3,
           ["caf\\xE9.png", "not valid UTF-8"], W)
    if os.path.exists(f"{latin}-run"):
        check("user errors", "extract: no output folder left by the refused run", False, f"{latin}-run exists")
    fifo_data = f"{bad}/fifo-dataset"
    shutil.copytree(data, fifo_data)
    os.mkfifo(f"{fifo_data}/train/good/fifo.png")
    expect("user errors", "extract: a FIFO named like an image is named, not dropped",
           ["extract", "--dataset", "folder:" + fifo_data, "--out", f"{fifo_data}-run"] + EXTRACT, 3,
           ["fifo.png", "not a regular file"], W)
    expect("user errors", "extract --skip-bad-images: the FIFO is listed as skipped",
           ["extract", "--dataset", "folder:" + fifo_data, "--out", f"{fifo_data}-run", "--skip-bad-images"] + EXTRACT,
           0, ["skipped", "fifo.png"], W)

    # ---- interrupts: kill -9 at several points; good files intact; the next run cleans up and succeeds ----
    def interrupt(name, args, kill_at, rerun, intact, temp_expected=True, after=None):
        before = snapshot(*intact)
        if kill_at.startswith("after:"):  # kill -9 from outside once the process printed a line
            marker = kill_at[len("after:"):]
            p = subprocess.Popen([VALIDFLOW] + args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                 env=ENV)
            for line in p.stderr:
                if marker in line:
                    time.sleep(0.05)
                    p.send_signal(signal.SIGKILL)
                    break
            p.stderr.close()
            code = p.wait(timeout=TIMEOUT)
        else:
            code = run(args, {"VALIDFLOW_FAULT_KILL": kill_at}).returncode
        problems = []
        if code != -signal.SIGKILL:
            problems.append(f"not killed (exit code {code})")
        changed = [k for k in before if snapshot(*intact).get(k) != before[k]]
        if changed:
            problems.append(f"good files changed by the killed run: {changed[:3]}")
        left = [t for w in intact if os.path.isdir(w) for t in temp_files(w)]
        if temp_expected and not left:
            problems.append("no temporary file left by the killed write (the kill point was not reached)")
        p = run(rerun)
        if p.returncode != 0:
            problems.append(f"rerun failed ({p.returncode}): {p.stderr.strip()[-400:]}")
        left = [t for w in intact if os.path.isdir(w) for t in temp_files(w)]
        if left:
            problems.append(f"temporary files not removed by the rerun: {left[:3]}")
        if after:
            problems += after()
        check("interrupts", name, not problems, "; ".join(problems))

    kr = f"{WORK}/killed"
    shutil.copytree(run_dir, kr)
    extract_kr = ["extract", "--dataset", "folder:" + data, "--out", kr] + EXTRACT
    interrupt("extract killed while writing features.pt (a new request: --fp16)", extract_kr + ["--fp16"],
              "features.pt:1", extract_kr, [kr])
    interrupt("extract killed while extracting (kill -9 from outside)", extract_kr + ["--fp16"],
              "after:extracting", extract_kr, [kr], temp_expected=False)
    resume = ["train", "--out", kr, "--resume", "--modules", "1", "--hidden", "8", "--epochs", "5", "--batch-size", "4",
              "--checkpoint-every", "1"]
    interrupt("train --resume killed while writing its first checkpoint", resume, "checkpoint.pt:1", resume, [kr],
              after=lambda: [] if json.load(open(f"{kr}/training.json"))["epochs"] == 5 else ["not 5 epochs"])
    shutil.rmtree(kr)
    shutil.copytree(run_dir, kr)
    longer = ["train", "--out", kr, "--resume", "--modules", "1", "--hidden", "8", "--epochs", "400",
              "--batch-size", "4", "--checkpoint-every", "1000"]
    interrupt("train killed mid-training (kill -9 from outside)", longer, "after:model", ["eval", "--out", kr], [kr],
              temp_expected=False)
    interrupt("eval killed while writing the report", ["eval", "--out", kr], "metrics.json:1",
              ["eval", "--out", kr], [kr])
    interrupt("eval killed while writing its last report file", ["eval", "--out", kr], "index.html:1",
              ["eval", "--out", kr], [kr])
    interrupt("export killed while writing the model file", ["export", "--out", kr, "--to", f"{kr}/model.vfm"],
              "model.vfm:1", ["export", "--out", kr, "--to", f"{kr}/model.vfm"], [kr])
    pred_out = f"{kr}/predictions"
    run(["predict", "--model", model, "--out", pred_out, f"{data}/test"])
    interrupt("predict killed while writing predictions.csv",
              ["predict", "--model", model, "--out", pred_out, f"{data}/test"], "predictions.csv:1",
              ["predict", "--model", model, "--out", pred_out, f"{data}/test"], [kr])

    by_class = {}
    for cls, _, ok in rows:
        by_class.setdefault(cls, [0, 0])[0 if ok else 1] += 1
    print("\nbad-input table: %d cases (%s)" % (len(rows), ", ".join(
        f"{c} {n[0] + n[1]}" for c, n in by_class.items())))
    if failures:
        print("%d FAILED:\n  " % len(failures) + "\n  ".join(failures))
        sys.exit(1)
    print("bad_inputs OK")


main()
