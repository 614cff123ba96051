"""`speed`: the flow of every finished run timed in one session (results/mtd-speed.json)."""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile

from host_info import cpu_description

from . import config
from .files import read_json, write_json_atomic
from .tables import cmd_tables, load_results


def cmd_speed(a):
    """Times the flow of every finished run on the grid's test features in one session: round-robin over the
    runs, `rounds` times, so that a changing load hits every configuration alike; each run's median goes to
    results/mtd-speed.json. Every timing also re-checks the run's image AUROC (same checkpoint, same scores)."""
    if not os.path.exists(a.validflow):
        sys.exit("validflow program %s not found (build it, or pass --validflow)" % a.validflow)
    finished = [r for r in load_results() if os.path.exists(os.path.join(a.work, r["run"], "checkpoint.pt"))]
    if not finished:
        sys.exit("no finished run has its checkpoint under %s" % a.work)
    timings = {r["run"]: [] for r in finished}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="validflow-speed-") as tmp:
        for round_index in range(a.rounds):
            for r in finished:
                out = os.path.join(tmp, r["run"])
                os.makedirs(out, exist_ok=True)
                for name in ("features.pt", "checkpoint.pt"):
                    link = os.path.join(out, name)
                    if not os.path.exists(link):
                        os.symlink(os.path.realpath(os.path.join(a.work, r["run"], name)), link)
                done = subprocess.run([a.validflow, "eval", "--out", out, "--heatmaps", "0", "--threads",
                                       str(a.threads)], stdout=subprocess.DEVNULL)
                if done.returncode != 0:
                    sys.exit("%s: `validflow eval` failed (exit %d); nothing written" % (r["run"], done.returncode))
                metrics = read_json(os.path.join(out, "report", "metrics.json"))
                if abs(metrics["image_auroc"] - r["metrics"]["image_auroc"]) > 1e-6:
                    sys.exit("%s: image AUROC %.6f now, %.6f in its result file: the work folder does not hold "
                             "that run's checkpoint" % (r["run"], metrics["image_auroc"], r["metrics"]["image_auroc"]))
                timings[r["run"]].append(metrics["scoring_images_per_second"])
                print("round %d/%d %-45s %7.1f img/s" % (round_index + 1, a.rounds, r["run"],
                                                          timings[r["run"]][-1]), flush=True)
    speed = {"what": "images/s of the flow scoring the %d cached test features (`validflow eval`, maps included), "
                     "median of the rounds" % finished[0]["metrics"]["n_test"],
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "host": cpu_description(), "threads": a.threads, "rounds": a.rounds,
             "load_average_before": [round(x, 2) for x in load_before],
             "load_average_after": [round(x, 2) for x in os.getloadavg()],
             "runs": {run: {"images_per_second": sorted(v), "median": sorted(v)[len(v) // 2]}
                      for run, v in timings.items()}}
    write_json_atomic(config.SPEED, speed)
    print("wrote %s" % os.path.relpath(config.SPEED, config.ROOT))
    cmd_tables(argparse.Namespace(check=False))
