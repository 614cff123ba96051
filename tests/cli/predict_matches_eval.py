#!/usr/bin/env python3
"""After `validflow demo --out RUN` (a CTest fixture): `validflow predict` on the run's test images gives the
scores `eval` gave for the same images (relative difference <= 1e-5 in fp32), writes its files as documented,
and the exit code says when images were skipped.  Usage: predict_matches_eval.py VALIDFLOW RUN"""
import csv, json, os, shutil, subprocess, sys

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
