#!/usr/bin/env python3
"""After `validflow demo --out RUN` (a CTest fixture): `validflow predict` on the run's test images gives the
scores `eval` gave for the same images (relative difference <= 1e-5 in fp32), writes its files as documented,
and the exit code says when images were skipped.  Usage: predict_matches_eval.py VALIDFLOW RUN"""
import csv, json, os, shutil, struct, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vfm_files import read_archive  # noqa: E402

validflow, run = sys.argv[1], sys.argv[2]
model = os.path.join(run, "model.vfm")
out = os.path.join(run, "predict-test")
shutil.rmtree(out, ignore_errors=True)
test_dir = os.path.join(run, "data", "test")
p = subprocess.run([validflow, "predict", "--model", model, "--out", out, "--heatmaps", "--batch-size", "7", test_dir],
                   capture_output=True, text=True)
print(p.stdout, p.stderr[-2000:])
assert p.returncode == 0, "predict failed with exit code %d" % p.returncode

eval_scores = {r["path"]: float(r["score"]) for r in csv.DictReader(open(os.path.join(run, "report", "scores.csv")))}
rows = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
assert len(rows) == len(eval_scores), (len(rows), len(eval_scores))
worst = max(abs(float(r["score"]) - eval_scores[r["path"]]) / abs(eval_scores[r["path"]]) for r in rows)
print("predict vs eval: %d images, largest relative score difference %.3g" % (len(rows), worst))
assert worst <= 1e-5, worst
report = json.load(open(os.path.join(out, "predictions.json")))
assert report["images"][0]["heatmap"] and os.path.exists(os.path.join(out, report["images"][0]["heatmap"]))
assert all(0.0 <= r["normalized_score"] <= 1.0 for r in report["images"])
assert all(r["anomalous"] == (r["score"] >= report["threshold"]) for r in report["images"])
assert report["skipped"] == [] and report["images_per_second"] > 0

# The CSV is lossless: its scores are the JSON's, digit for digit (17 significant digits).
by_path = {r["path"]: r for r in report["images"]}
assert all(float(r["score"]) == by_path[r["path"]]["score"] for r in rows), "CSV scores are rounded"
assert all(float(r["normalized_score"]) == by_path[r["path"]]["normalized_score"] for r in rows)
# Heatmaps keep the image's path below the folder given: test/<type>/<name>.png, so the defect type stays visible.
for r in rows:
    rel = os.path.relpath(r["path"], os.path.dirname(test_dir))
    assert r["heatmap"] == os.path.join("heatmaps", os.path.splitext(rel)[0] + ".png"), (r["path"], r["heatmap"])
    assert os.path.exists(os.path.join(out, r["heatmap"]))
with open(os.path.join(out, rows[0]["heatmap"]), "rb") as f:  # PNG IHDR: [image | overlay] over a legend
    width, height = struct.unpack(">II", f.read(24)[16:24])
assert width == 2 * 256 and height > 256, (width, height)
# Normalised scores: the model file's robust scale, the threshold at 0.5 (docs/usage.md, export).
decision = read_archive(model)[1]["meta"]["decision"]
assert decision["normalization"] == "robust", decision
t, low, high = decision["threshold"], decision["score_low"], decision["score_high"]
assert low < t < high
for r in report["images"]:
    s = r["score"]
    expected = 0.5 - 0.5 * (t - s) / (t - low) if s < t else 0.5 + 0.5 * (s - t) / (high - t)
    assert abs(r["normalized_score"] - min(1.0, max(0.0, expected))) <= 1e-12, (r, expected)

# An unreadable image and a missing path: listed, skipped, exit code 4; the rest still scored.
bad = os.path.join(run, "bad-images")
shutil.rmtree(bad, ignore_errors=True)
os.makedirs(bad)
open(os.path.join(bad, "broken.png"), "wb").write(b"\x89PNG\r\n\x1a\nnot really")
shutil.copy(rows[0]["path"], os.path.join(bad, "good.png"))
p = subprocess.run([validflow, "predict", "--model", model, bad, os.path.join(run, "does-not-exist")],
                   capture_output=True, text=True)
print(p.stdout, p.stderr[-2000:])
assert p.returncode == 4, p.returncode
assert "broken.png" in p.stderr and "does-not-exist" in p.stderr
assert "1 scored" in p.stdout and "2 skipped" in p.stdout
print("predict_matches_eval OK")
