#!/usr/bin/env python3
"""Tests of tools/reproduce_paper.py (the package tools/paper/): statistics, generated claims, grid runner, speed and
commits (standard library only)."""
import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import reproduce_paper as rp  # noqa: E402  (the entry point: its command line)
from paper import config, files, runner, speed, statistics, tables  # noqa: E402


def result(table, label, seed, auroc, run=None, parameters=1000000):
    return {"run": run or "%s-%s-seed%d" % (table, label, seed), "table": table, "label": label, "seed": seed,
            "parameters": parameters, "gflops_per_image": 1.0, "training_seconds": 60.0,
            "loss_history": [1.0 - 0.01 * epoch for epoch in range(60)],
            "config": {"model": "csflow" if label.startswith("CS-Flow") else "validflow"},
            "metrics": {"image_auroc": auroc, "pixel_auroc": 0.7, "aupro": 0.5,
                        "image_auroc_per_type": {t: auroc for t in tables.TYPES}},
            "features": {"file": "f.pt", "sha256": "0" * 64}, "host": {"cpu": "test"}}


def stand_in_workspace(test, program_text):
    """A scratch folder with a results folder path, results.md and an executable stand-in for the validflow program
    (test.tmp, test.program, test.work); config's paths point there until the test ends."""
    test.tmp = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, test.tmp)
    saved = (config.RESULTS, config.SPEED, config.DOC)

    def restore():
        config.RESULTS, config.SPEED, config.DOC = saved
    test.addCleanup(restore)
    config.RESULTS, config.SPEED = os.path.join(test.tmp, "results"), os.path.join(test.tmp, "speed.json")
    config.DOC = os.path.join(test.tmp, "results.md")
    with open(config.DOC, "w") as f:
        f.write("intro\n%s\n%s\n" % (tables.BEGIN, tables.END))
    test.program = os.path.join(test.tmp, "validflow")
    with open(test.program, "w") as f:
        f.write(program_text)
    os.chmod(test.program, os.stat(test.program).st_mode | stat.S_IEXEC)
    test.work = os.path.join(test.tmp, "work")


def read(path):
    with open(path) as f:
        return f.read()


def claim_rows(markdown):
    """claim text -> verdict cell of the generated claims table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("claim", "---"):
            rows[cells[0]] = cells[6]
    return rows


class Statistics(unittest.TestCase):
    def test_t_distribution_matches_the_tables(self):
        # Two-sided 5 % critical values of Student's t (any statistics table) and a few exact p-values.
        for t, df in [(12.7062, 1), (4.302653, 2), (2.776445, 4), (2.228139, 10), (1.959964, 1e7)]:
            self.assertAlmostEqual(statistics.t_two_sided_p(t, df), 0.05, places=5)
        # df = 3 in closed form: p = 1 - (2 / pi) (atan(t / sqrt 3) + (t / sqrt 3) / (1 + t^2 / 3)) = 0.3910022 at t = 1.
        self.assertAlmostEqual(statistics.t_two_sided_p(1.0, 3), 0.3910022, places=6)
        self.assertAlmostEqual(statistics.t_two_sided_p(-1.0, 3), 0.3910022, places=6)
        self.assertEqual(statistics.t_two_sided_p(0.0, 5), 1.0)
        self.assertLess(statistics.t_two_sided_p(50.0, 2.5), 1e-3)

    def test_critical_value_inverts_the_p_value(self):
        self.assertAlmostEqual(statistics.t_critical(4), 2.776445, places=5)
        self.assertAlmostEqual(statistics.t_critical(2, 0.01), 9.924843, places=5)

    def test_welch(self):
        a, b = [0.980, 0.982, 0.978], [0.970, 0.974, 0.966]
        diff, p, how, half = statistics.compare(a, b, (None, 0))
        self.assertAlmostEqual(diff, 0.01, places=12)
        # Sample variances 4e-6 and 1.6e-5: se^2 = va + vb, df = (va + vb)^2 / ((va^2 + vb^2) / 2).
        va, vb = 4e-6 / 3, 1.6e-5 / 3
        df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / 2)
        self.assertIn("Welch, df %.1f" % df, how)
        self.assertAlmostEqual(p, statistics.t_two_sided_p(0.01 / (va + vb) ** 0.5, df), places=12)
        self.assertLess(p, 0.05)
        self.assertAlmostEqual(half, statistics.t_critical(df) * (va + vb) ** 0.5, places=9)
        self.assertGreater(diff - half, 0)  # p < 0.05: the interval excludes 0

    def test_single_seed_uses_the_pooled_spread_or_stays_undecided(self):
        self.assertIsNone(statistics.compare([0.98], [0.97], (None, 0))[1])
        spread, df = statistics.pooled_seed_spread([[0.98, 0.99], [0.90, 0.92, 0.94], [0.5]])
        self.assertEqual(df, 3)
        self.assertAlmostEqual(spread, ((0.00005 + 0.0008) / 3) ** 0.5, places=12)
        diff, p, how, half = statistics.compare([0.98], [0.97], (spread, df))
        self.assertAlmostEqual(p, statistics.t_two_sided_p(0.01 / (spread * 2 ** 0.5), 3), places=12)
        self.assertIn("pooled", how)
        self.assertAlmostEqual(half, 3.182446 * spread * 2 ** 0.5, places=5)  # t(0.975, df 3) from a table
        self.assertIsNone(statistics.compare([0.98], [0.97], (None, 0))[3])

    def test_verdicts(self):
        self.assertTrue(statistics.verdict(0.01, 0.01, +1).startswith("**supported"))
        self.assertTrue(statistics.verdict(-0.01, 0.01, +1).startswith("**contradicted"))
        self.assertTrue(statistics.verdict(0.01, 0.2, +1).startswith("undecided"))
        self.assertTrue(statistics.verdict(0.01, None, +1).startswith("undecided"))
        self.assertTrue(statistics.verdict(0.01, 0.01, 0).startswith("**contradicted"))
        self.assertTrue(statistics.verdict(0.01, 0.2, 0).startswith("consistent"))


class SpeedVerdict(unittest.TestCase):
    def test_decided_only_when_the_rounds_do_not_overlap(self):
        self.assertTrue(tables.speed_verdict([80, 82, 81], [70, 79.9]).startswith("**supported**"))
        self.assertTrue(tables.speed_verdict([60, 62], [70, 79.9]).startswith("**contradicted**"))
        self.assertTrue(tables.speed_verdict([80, 90], [70, 84]).startswith("undecided: the rounds overlap"))


class GeneratedClaims(unittest.TestCase):
    def setUp(self):
        self.saved_speed = config.SPEED
        config.SPEED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such-speed-file.json")

    def tearDown(self):
        config.SPEED = self.saved_speed

    def test_claims_follow_the_results(self):
        v, c4, c6 = config.VALIDFLOW[1], "CS-Flow, 4 blocks (official default)", "CS-Flow, 6 blocks (paper's Table 5)"
        results = [result("table3", v, s, x, parameters=16) for s, x in enumerate([0.980, 0.981, 0.979])]
        results += [result("table3", c4, s, x) for s, x in enumerate([0.930, 0.935, 0.940])]
        results += [result("table3", c6, s, x, parameters=32) for s, x in enumerate([0.975, 0.985, 0.965])]
        # ValidFlow's seed std 0.001 (df 2): one seed of n = 1 at 0.94 is clearly worse than n = 3 (t = 35), one of
        # n = 2 at 1.0 clearly better (t = -17), one of n = 4 at 0.9801 the same (t = -0.09).
        results += [result("table6", "n = 1", 0, 0.94), result("table6", "n = 2", 0, 1.0),
                    result("table6", "n = 4", 0, 0.9801)]
        markdown = tables.tables_markdown(results)
        rows = claim_rows(markdown)
        self.assertTrue(rows["ValidFlow beats CS-Flow (Table 3)"].startswith("**supported"))
        self.assertTrue(rows[tables.CLAIMS[1][0]].startswith("undecided"))
        self.assertEqual(rows["n = 3 beats n = 1 (Table 6)"], "**supported**; by more than the paper's +0.10")
        self.assertTrue(rows["n = 3 beats n = 2 (Table 6)"].startswith("**contradicted"))
        self.assertTrue(rows["n = 3 and n = 4 are equal (Table 6)"].startswith("consistent"))
        self.assertEqual(rows["n = 3 beats n = 5 (Table 6)"], "not run yet")
        self.assertIn("98.00 ± 0.10", markdown)
        self.assertIn("| 0.410 (−0.100) |", markdown)  # the loss at epoch 60 and its fall over epochs 51-60
        self.assertIn("Pooled over the configurations of one model: ValidFlow std 0.10 (df 2); CS-Flow std 0.79 (df 4)",
                      markdown)
        self.assertIn("the smallest difference of means between two of its variants that the test can decide is 0.50 "
                      "(1 seed against 3)", markdown)
        self.assertIn("| fewer parameters |", markdown)
        self.assertIn("**supported** |", markdown.split("| fewer parameters |")[1].splitlines()[0])
        self.assertIn("not measured yet", markdown)
        self.assertIn("| n = 3 beats n = 1 (Table 6) | 99.63 vs 99.53 (+0.10) | 98.00 − 94.00 = +4.00 | +3.50 … +4.50 |",
                      markdown)  # t(0.975, df 2) 4.303 x 0.1 x sqrt(4/3) = 0.497

    def test_the_papers_effect_size_is_checked_against_the_interval(self):
        # diff +0.20 points, CI +0.10 ... +0.30 (fractions below): a paper's +0.41 is ruled out, +0.05 exceeded.
        self.assertEqual(statistics.verdict(0.002, 0.2, +1, 0.41, 0.001),
                         "undecided: within the seed spread; an effect as large as the paper's (+0.41) is ruled out")
        self.assertEqual(statistics.verdict(0.002, 0.01, +1, 0.05, 0.001), "**supported**; by more than the paper's +0.05")
        self.assertEqual(statistics.verdict(0.002, 0.01, +1, 0.25, 0.001), "**supported**")
        self.assertEqual(statistics.verdict(0.002, 0.01, +1, None, 0.001), "**supported**")
        self.assertEqual(statistics.verdict(-0.002, 0.01, +1, -0.5, 0.001), "**contradicted**: the opposite holds")
        self.assertEqual(statistics.verdict(0.0, 0.9, 0, 0.0, 0.001), "consistent: no difference beyond the seed spread")

    def test_aupro_contrasts_find_which_maps_are_better(self):
        v = config.VALIDFLOW[1]
        results = [result("table3", v, s, 0.98) for s in range(3)]
        for r, aupro in zip(results, [0.520, 0.525, 0.530]):
            r["metrics"]["aupro"] = aupro
        deeper, ablated = result("table6", "n = 5", 0, 0.98), result("table7", "FB without CBAM", 0, 0.98)
        deeper["metrics"]["aupro"], ablated["metrics"]["aupro"] = 0.450, 0.526
        markdown = tables.tables_markdown(results + [deeper, ablated])
        self.assertIn("AUPRO's own seed spread (pooled std: ValidFlow 0.50 (df 2))", markdown)
        rows = {line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if " vs " in line}
        self.assertIn("52.50 − 45.00 = +7.50", rows["ValidFlow n = 3 vs n = 5"])
        self.assertTrue(rows["ValidFlow n = 3 vs n = 5"].endswith("| **A's maps are better** |"))
        self.assertTrue(rows["ValidFlow n = 3 vs FB without CBAM"].endswith("| no difference beyond the seed spread |"))

    def test_variants_of_one_model_are_tested_on_that_models_spread_alone(self):
        # ValidFlow varies by 0.05 points across seeds, CS-Flow-4 by 3: pooled over both models, a 0.5-point loss
        # of an ablation would hide in CS-Flow-4's spread (p = 0.76); ValidFlow's own spread decides it (t = 8.7).
        v, c4 = config.VALIDFLOW[1], config.CSFLOW4[1]
        results = [result("table3", v, s, x) for s, x in enumerate([0.9800, 0.9805, 0.9795])]
        results += [result("table3", c4, s, x) for s, x in enumerate([0.90, 0.93, 0.96])]
        results += [result("table7", "FB without CBAM", 0, 0.975)]
        rows = claim_rows(tables.tables_markdown(results))
        claim = "CBAM in FB helps, with the 1↔3 branches (Table 7, MVTec AD)"
        self.assertTrue(rows[claim].startswith("**supported"), rows[claim])
        self.assertTrue(rows["ValidFlow beats CS-Flow (Table 3)"].startswith("undecided"))  # Welch: 2 + 3 points
        all_pooled = statistics.pooled_seed_spread([[0.9800, 0.9805, 0.9795], [0.90, 0.93, 0.96]])
        self.assertGreater(statistics.compare([0.9800, 0.9805, 0.9795], [0.975], all_pooled)[1], 0.5)

    def test_two_seeded_variants_of_one_model_use_the_pool_not_welch(self):
        diff, p, how, half = statistics.compare([0.980, 0.982], [0.975, 0.977], (0.001, 9), same_model=True)
        self.assertEqual(how, "pooled spread, df 9")
        self.assertAlmostEqual(p, statistics.t_two_sided_p(0.005 / 0.001, 9), places=12)
        self.assertIn("Welch", statistics.compare([0.980, 0.982], [0.975, 0.977], (0.001, 9))[2])


FAKE_EVAL = """#!/usr/bin/env python3
# A stand-in for `validflow eval`: writes OUT/report/metrics.json with the AUROC read from OUT/checkpoint.pt.
import json, os, sys
out = sys.argv[sys.argv.index("--out") + 1]
auroc = float(open(os.path.join(out, "checkpoint.pt")).read())
os.makedirs(os.path.join(out, "report"), exist_ok=True)
ips = 100.0 if auroc > 0.95 else 50.0
json.dump({"image_auroc": auroc, "scoring_images_per_second": ips}, open(os.path.join(out, "report", "metrics.json"), "w"))
"""


class Speed(unittest.TestCase):
    """`speed` against a stand-in program: every finished run timed each round, its AUROC re-checked, the medians
    written and the tables regenerated from them."""

    def setUp(self):
        stand_in_workspace(self, FAKE_EVAL)
        os.makedirs(config.RESULTS)
        for r in [result("table3", config.VALIDFLOW[1], 0, 0.98, run="v0", parameters=16),
                  result("table3", config.CSFLOW6[1], 0, 0.93, run="c0", parameters=32)]:
            r["metrics"]["n_test"] = 582
            with open(os.path.join(config.RESULTS, r["run"] + ".json"), "w") as f:
                json.dump(r, f)
            os.makedirs(os.path.join(self.work, r["run"]))
            for name, text in (("checkpoint.pt", str(r["metrics"]["image_auroc"])), ("features.pt", "")):
                with open(os.path.join(self.work, r["run"], name), "w") as f:
                    f.write(text)

    def speed(self):
        speed.cmd_speed(argparse.Namespace(validflow=self.program, work=self.work, threads=1, rounds=2))

    def test_medians_and_tables(self):
        self.speed()
        measured = json.loads(read(config.SPEED))
        self.assertEqual(measured["runs"]["v0"]["images_per_second"], [100.0, 100.0])
        self.assertEqual(measured["runs"]["c0"]["median"], 50.0)
        doc = read(config.DOC)
        self.assertIn("100 vs 50 img/s (×2.00", doc)
        self.assertIn("| 1.00 | 1 | 100 |", doc)  # GFLOP, training minutes, flow img/s of ValidFlow's row

    def test_a_checkpoint_that_is_not_the_run_is_refused(self):
        with open(os.path.join(self.work, "c0", "checkpoint.pt"), "w") as f:
            f.write("0.5")
        with self.assertRaises(SystemExit) as e:
            self.speed()
        self.assertIn("c0: image AUROC 0.500000 now, 0.930000", str(e.exception.code))
        self.assertFalse(os.path.exists(config.SPEED))


# A stand-in for `validflow train` and `eval`: records when each train ran (to see runs overlap), fails for
# CS-Flow with 6 blocks, and writes the files the driver reads.
FAKE_PROGRAM = """#!/usr/bin/env python3
import json, os, sys, time
if "--help" in sys.argv:
    print("--modules N  depth of ValidFlow")
    sys.exit(0)
command, out = sys.argv[1], sys.argv[sys.argv.index("--out") + 1]
def arg(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None
if command == "train":
    if arg("--blocks") == "6":
        print("error: out of memory", file=sys.stderr)
        sys.exit(3)
    start = time.time()
    with open(os.path.join(os.path.dirname(out), "pids"), "a") as f:
        f.write("%%d\\n" %% os.getpid())
    print("train: 1/2 (50%%)", end="", flush=True)
    time.sleep(float(os.environ.get("FAKE_TRAIN_SECONDS", "0.6")))
    print("\\rtrain: 2/2 (100%%) threads " + arg("--threads"), flush=True)
    with open(os.path.join(os.path.dirname(out), "intervals.txt"), "a") as f:
        f.write("%%f %%f\\n" %% (start, time.time()))
    json.dump({"config": {"model": arg("--model")}, "train_options": {"seed": int(arg("--seed"))}, "parameters": 10, "gflops_per_image": 1.0,
               "training_images": 4, "loss_history": [1.0 / (1 + e) for e in range(int(arg("--epochs")))],
               "library_version": "test"},
              open(os.path.join(out, "training.json"), "w"))
    open(os.path.join(out, "checkpoint.pt"), "w").write("x")
else:
    os.makedirs(os.path.join(out, "report"), exist_ok=True)
    epochs = len(json.load(open(os.path.join(out, "training.json")))["loss_history"])
    json.dump({"image_auroc": 0.9 + epochs / 10000, "pixel_auroc": 0.8, "aupro": 0.5, "n_test": 4, "scoring_images_per_second": 10.0,
               "image_auroc_per_type": {t: 0.9 for t in %s}}, open(os.path.join(out, "report", "metrics.json"), "w"))
""" % repr(list(tables.TYPES))


class RunGrid(unittest.TestCase):
    """`run` against a stand-in program: runs in parallel, each with its own log; a failing run is reported in one
    line while the others finish; result files and tables written."""

    def setUp(self):
        stand_in_workspace(self, FAKE_PROGRAM)
        self.full_grid = runner.grid
        self.features = os.path.join(self.tmp, "features.pt")
        with open(self.features, "w") as f:
            f.write("features")
        full = runner.grid()
        self.validflow_runs = [run for run in full if run[0].startswith("validflow-n3-seed")]
        self.runs = self.validflow_runs + [next(run for run in full if run[0] == "csflow-6-seed0")]  # it fails
        runner.grid = lambda ablation_seeds=1, longer_seeds=0: self.runs

    def tearDown(self):
        runner.grid = self.full_grid

    def run_grid(self, jobs):
        runner.cmd_run(argparse.Namespace(features=self.features, validflow=self.program, work=self.work, threads=1,
                                      only=None, commit=False, jobs=jobs, progress_seconds=0.1,
                                      ablation_seeds=1, longer_seeds=0))

    def intervals(self):
        with open(os.path.join(self.work, "intervals.txt")) as f:
            return sorted(tuple(map(float, line.split())) for line in f)

    def test_parallel_runs_overlap_and_a_failure_is_one_line(self):
        printed = io.StringIO()
        with self.assertRaises(SystemExit) as e, contextlib.redirect_stdout(printed):
            self.run_grid(jobs=2)
        self.assertIn("] validflow-n3-seed0: train: 1/2 (50%)", printed.getvalue())  # the progress report
        message = str(e.exception.code)
        self.assertIn("1 of 4 runs failed", message)
        self.assertIn("csflow-6-seed0: `validflow train` failed (exit 3); its output is in", message)
        self.assertIn("out of memory", read(os.path.join(self.work, "csflow-6-seed0", "driver.log")))
        done = sorted(os.listdir(config.RESULTS))
        self.assertEqual(done, ["validflow-n3-seed0.json", "validflow-n3-seed1.json", "validflow-n3-seed2.json"])
        saved = json.loads(read(os.path.join(config.RESULTS, "validflow-n3-seed1.json")))
        self.assertEqual((saved["seed"], saved["threads"], saved["parallel_runs"]), (1, 1, 2))
        self.assertEqual(saved["program"]["sha256"], files.sha256_of(self.program))
        self.assertIn("threads 1", read(os.path.join(self.work, "validflow-n3-seed1", "driver.log")))
        spans = self.intervals()
        self.assertTrue(any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])),
                        "no two runs overlapped: %s" % spans)
        self.assertIn("90.60 ± 0.00", read(config.DOC))  # the tables regenerated from the three ValidFlow results
        self.assertIn("shared the cores with other runs of the grid (`run --jobs`): validflow-n3-seed0, "
                      "validflow-n3-seed1, validflow-n3-seed2.", read(config.DOC))

    def test_an_interrupted_driver_stops_its_programs_and_starts_no_more_runs(self):
        os.environ["FAKE_TRAIN_SECONDS"] = "60"
        self.addCleanup(os.environ.pop, "FAKE_TRAIN_SECONDS")
        pids_path = os.path.join(self.work, "pids")

        def terminate_when_two_trainings_run():
            while not (os.path.exists(pids_path) and len(read(pids_path).split()) == 2):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=terminate_when_two_trainings_run, daemon=True).start()
        started = time.time()
        with self.assertRaises(SystemExit) as e:
            self.run_grid(jobs=2)
        self.assertLess(time.time() - started, 30)
        self.assertIn("interrupted: the finished runs are saved", str(e.exception.code))
        for pid in map(int, read(pids_path).split()):
            with self.assertRaises(ProcessLookupError):  # terminated and reaped
                os.kill(pid, 0)
        self.assertFalse(os.path.exists(os.path.join(self.work, "validflow-n3-seed2")))  # never started
        self.assertFalse(os.path.exists(config.RESULTS) and os.listdir(config.RESULTS))
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)  # the driver's handler is gone

    def test_one_job_runs_one_at_a_time_and_skips_finished_runs(self):
        self.runs = self.validflow_runs
        self.run_grid(jobs=1)
        spans = self.intervals()
        self.assertEqual(len(spans), 3)
        self.assertTrue(all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])))
        self.assertFalse(os.path.exists(os.path.join(self.work, "validflow-n3-seed0", "driver.log")))
        self.run_grid(jobs=2)  # all finished: nothing runs again
        self.assertEqual(len(self.intervals()), 3)

    def test_runs_of_another_program_build_are_refused(self):
        self.runs = self.validflow_runs[:1]
        self.run_grid(jobs=1)
        with open(self.program, "a") as f:
            f.write("# rebuilt\n")
        self.runs = self.validflow_runs[:2]
        with self.assertRaises(SystemExit) as e:
            self.run_grid(jobs=1)
        self.assertIn("results/mtd holds runs of another validflow build", str(e.exception.code))
        self.assertEqual(len(self.intervals()), 1)  # nothing ran


    def test_a_longer_run_continues_its_60_epoch_run_and_is_scored_every_60_epochs(self):
        base = self.validflow_runs[0]
        longer = next(run for run in self.full_grid(2, longer_seeds=1) if run[0] == "validflow-n3-e240-seed0")
        self.runs = [longer]
        with self.assertRaises(SystemExit) as e:  # its 60-epoch run has not finished
            self.run_grid(jobs=1)
        self.assertIn("it continues validflow-n3-seed0, which has not finished yet", str(e.exception.code))
        self.runs = [base, longer]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            self.run_grid(jobs=1)
        trains = [line for line in printed.getvalue().splitlines() if "validflow-n3-e240-seed0: " in line and " train " in line]
        self.assertEqual([line.split("--epochs ")[1].split()[0] for line in trains], ["120", "180", "240"])
        self.assertTrue(all(line.endswith("--resume") for line in trains))
        self.assertEqual(len(self.intervals()), 4)  # 60 epochs once, then three continuations
        saved = json.loads(read(os.path.join(config.RESULTS, "validflow-n3-e240-seed0.json")))
        self.assertEqual(saved["continued_from"], "validflow-n3-seed0")
        self.assertEqual(saved["protocol"]["epochs"], 240)
        self.assertEqual(len(saved["loss_history"]), 240)
        self.assertEqual({e: m["image_auroc"] for e, m in saved["metrics_by_epoch"].items()},
                         {"60": 0.906, "120": 0.912, "180": 0.918, "240": 0.924})
        self.assertIn("| ValidFlow n = 3, 240 epochs | 1 | 90.60 / 91.20 / 91.80 / 92.40 |", read(config.DOC))


class GridOrder(unittest.TestCase):
    def test_further_ablation_seeds_come_after_every_configuration_has_the_previous_one(self):
        one, three = runner.grid(), runner.grid(3)
        self.assertEqual(three[:len(one)], one)  # the 16-run grid unchanged, first
        ids = [run[0] for run in three]
        self.assertEqual(len(ids), len(set(ids)))
        ablations = [run for run in three if run[1] != "table3"]
        self.assertEqual(len(ablations), 3 * 7)
        self.assertEqual([run[4] for run in ablations], sorted(run[4] for run in ablations))  # seed by seed
        self.assertTrue(all(run[0].endswith("-seed%d" % run[4]) for run in three))

    def test_longer_runs_come_before_the_further_seeds(self):
        ids = [run[0] for run in runner.grid(2, longer_seeds=2)]
        self.assertEqual(ids[:16], [run[0] for run in runner.grid()])
        self.assertEqual(ids[16:22], ["csflow-4-e240-seed0", "validflow-n3-e240-seed0", "csflow-6-e240-seed0",
                                      "csflow-4-e240-seed1", "validflow-n3-e240-seed1", "csflow-6-e240-seed1"])
        self.assertEqual(len(ids), 16 + 6 + 7)
        self.assertEqual([run[0] for run in runner.grid(1, longer_seeds=2)][16:], ids[16:22])
        self.assertEqual(runner.continued_from("csflow-6-e240-seed1", "longer"), "csflow-6-seed1")
        for run_id, table, _, _, _ in runner.grid(3, longer_seeds=3):  # every run a longer one continues is in the grid
            if table == "longer":
                self.assertIn(runner.continued_from(run_id, table), ids + ["csflow-4-seed2", "validflow-n3-seed2",
                                                                       "csflow-6-seed2"])


class CommitResult(unittest.TestCase):
    """`run --commit` commits each result with tables regenerated by the tool as it is on disk (a driver that runs
    for days has older code in memory), picks up a result an earlier commit missed, and commits nothing when the
    tables cannot be regenerated."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.saved = (config.ROOT, config.RESULTS, config.DOC, config.SPEED)
        config.ROOT = self.tmp
        config.SPEED = os.path.join(self.tmp, "results", "mtd-speed.json")
        config.RESULTS = os.path.join(self.tmp, "results", "mtd")
        config.DOC = os.path.join(self.tmp, "docs", "results.md")
        os.makedirs(os.path.join(self.tmp, "tools"))
        os.makedirs(os.path.dirname(config.DOC))
        os.makedirs(config.RESULTS)
        tools = os.path.dirname(os.path.abspath(rp.__file__))  # the entry point and its package tools/paper/
        shutil.copytree(tools, os.path.join(self.tmp, "tools"), dirs_exist_ok=True,
                        ignore=lambda folder, names: [n for n in names if n == "__pycache__" or n.endswith(".pyc")])
        with open(config.DOC, "w") as f:
            f.write("intro\n%s\nstale tables\n%s\n" % (tables.BEGIN, tables.END))
        self.git("init", "-q")
        self.git("config", "user.name", "test")
        self.git("config", "user.email", "test@example.com")
        self.git("add", ".")
        self.git("commit", "-qm", "start")

    def tearDown(self):
        config.ROOT, config.RESULTS, config.DOC, config.SPEED = self.saved
        shutil.rmtree(self.tmp)

    def git(self, *args):
        return subprocess.run(["git", "-C", self.tmp] + list(args), check=True, capture_output=True,
                              text=True).stdout

    def write_result(self, run_id, auroc):
        path = os.path.join(config.RESULTS, run_id + ".json")
        files.write_json_atomic(path, result("table3", "ValidFlow n = 3", int(run_id[-1]), auroc, run=run_id))
        return path

    def test_tables_come_from_the_tool_on_disk(self):
        missed = self.write_result("validflow-n3-seed0", 0.98)  # written earlier, its commit failed
        path = self.write_result("validflow-n3-seed1", 0.97)
        in_memory, tables.cmd_tables = tables.cmd_tables, None  # the driver's in-memory code must not write the tables
        try:
            runner.commit_result(path, "validflow-n3-seed1")
        finally:
            tables.cmd_tables = in_memory
        committed = self.git("show", "--name-only", "--format=%s", "HEAD").split()
        self.assertEqual(committed[0], "results/mtd:")
        self.assertIn("results/mtd/validflow-n3-seed0.json", committed)
        self.assertIn("results/mtd/validflow-n3-seed1.json", committed)
        self.assertIn("docs/results.md", committed)
        self.assertEqual(self.git("status", "--porcelain"), "")
        self.assertNotIn("stale tables", read(config.DOC))
        self.assertIn("97.50 ± 0.71", read(config.DOC))
        check = subprocess.run([sys.executable, os.path.join(self.tmp, "tools", "reproduce_paper.py"), "tables",
                                "--check"], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertTrue(os.path.exists(missed))

    def test_a_mistyped_path_is_refused_before_the_tables_are_touched(self):
        self.write_result("validflow-n3-seed0", 0.98)
        for args, culprit in ((["--results", os.path.join(self.tmp, "results", "mdt")], "--results"),
                              (["--doc", os.path.join(self.tmp, "docs", "result.md")], "--doc"),
                              (["--speed-file", os.path.join(self.tmp, "speed.json")], "--speed-file")):
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit):
                rp.main(["tables"] + args)
            self.assertIn("error: %s %s: no such" % (culprit, args[1]), stderr.getvalue())
            self.assertEqual((config.RESULTS, config.DOC), (os.path.join(self.tmp, "results", "mtd"),
                                                    os.path.join(self.tmp, "docs", "results.md")))
            self.assertIn("stale tables", read(config.DOC))

    def test_a_file_that_is_not_a_result_is_named(self):
        self.write_result("validflow-n3-seed0", 0.98)
        good = result("table3", "ValidFlow n = 3", 1, 0.97)

        def edited(path, value):
            r = json.loads(json.dumps(good))
            parent = r
            for key in path[:-1]:
                parent = parent[key]
            if value is KeyError:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            return json.dumps(r, allow_nan=True)
        cases = [('{"run": "x"', "not a readable result file"),
                 ('{"run": "x"}', "result has no field 'table'"),
                 ("[" * 100000 + "]" * 100000, "nested too deeply"),
                 (edited(["metrics"], {}), "result.metrics has no field 'image_auroc'"),
                 (edited(["metrics"], None), "result.metrics must be an object, not NoneType"),
                 (edited(["seed"], "1"), "result.seed must be a whole number, not '1'"),
                 (edited(["seed"], True), "result.seed must be a whole number, not True"),
                 (edited(["metrics", "image_auroc"], "0.9"), "result.metrics.image_auroc must be a number, not str"),
                 (edited(["metrics", "image_auroc"], float("nan")), "result.metrics.image_auroc must be finite"),
                 (edited(["metrics", "image_auroc"], 2.0), "result.metrics.image_auroc must be in [0, 1], not 2.0"),
                 (edited(["metrics", "image_auroc_per_type", "crack"], -0.1), "image_auroc_per_type.crack must be in"),
                 (edited(["parameters"], KeyError), "result has no field 'parameters'")]
        for text, why in cases:
            with open(os.path.join(config.RESULTS, "broken.json"), "w") as f:
                f.write(text)
            with self.assertRaises(SystemExit) as refused:
                tables.cmd_tables(argparse.Namespace(check=False))
            self.assertIn("broken.json: ", str(refused.exception.code))
            self.assertIn(why, str(refused.exception.code))
            self.assertNotIn("\n", str(refused.exception.code))
            self.assertIn("stale tables", read(config.DOC))
        os.remove(os.path.join(config.RESULTS, "broken.json"))
        os.makedirs(os.path.join(config.RESULTS, "folder.json"))  # a directory where a file is expected
        with self.assertRaises(SystemExit) as refused:
            tables.cmd_tables(argparse.Namespace(check=False))
        self.assertIn("folder.json: not a readable result file", str(refused.exception.code))
        os.rmdir(os.path.join(config.RESULTS, "folder.json"))
        with open(config.SPEED, "w") as f:
            f.write('{"runs": {"validflow-n3-seed0": {"median": 3')  # a speed file cut short
        with self.assertRaises(SystemExit) as refused:
            tables.cmd_tables(argparse.Namespace(check=False))
        self.assertIn("speed.json: not a readable speed file", str(refused.exception.code))
        os.remove(config.SPEED)
        for name in os.listdir(config.RESULTS):  # an empty results folder: refused, the tables kept
            os.remove(os.path.join(config.RESULTS, name))
        with self.assertRaises(SystemExit) as refused:
            tables.cmd_tables(argparse.Namespace(check=False))
        self.assertIn("holds no result files", str(refused.exception.code))
        self.assertIn("stale tables", read(config.DOC))

    def test_the_loader_survives_fuzzing(self):
        """fuzz/results_loader.py for a fixed number of inputs: acceptance or one refusal line, nothing else."""
        fuzzer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz", "results_loader.py")
        p = subprocess.run([sys.executable, fuzzer, "--runs", "3000", "--seed", "1", "--findings", self.tmp],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("0 findings", p.stdout)

    def test_nothing_is_committed_when_the_tables_fail(self):
        with open(os.path.join(self.tmp, "tools", "reproduce_paper.py"), "a") as f:
            f.write("\ndef broken(:\n")  # the tool on disk mid-edit
        path = self.write_result("validflow-n3-seed0", 0.98)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            runner.commit_result(path, "validflow-n3-seed0")
        self.assertIn("written but not committed", stderr.getvalue())
        self.assertIn("SyntaxError", stderr.getvalue())
        self.assertEqual(self.git("log", "--format=%s"), "start\n")
        self.assertIn("stale tables", read(config.DOC))


if __name__ == "__main__":
    unittest.main(verbosity=2)
