#!/usr/bin/env python3
"""Runs the grid that checks the paper's relative claims on MTD (Tables 3, 6 and 7) on one set of cached
features, one JSON result per run under results/mtd/, and regenerates the tables of docs/results.md.

Every run trains a flow on the same features (`validflow train`), scores the test split (`validflow eval`)
and writes results/mtd/<run>.json: configuration, seed, metrics, parameters, times, library version, git
commit, feature fingerprint and host. A run whose result file exists is skipped, and an interrupted run
continues from its last checkpoint (`--resume`, bit-exact), so the grid can be stopped and continued in
another session. Only the Python standard library is used.

  tools/reproduce_paper.py run --features DIR/features.pt [--jobs N] [--only RUN ...] [--commit]
                               [--ablation-seeds N] [--longer-seeds N]  # more seeds for Tables 6/7; 240 epochs
  tools/reproduce_paper.py list [--ablation-seeds N] [--longer-seeds N]
  tools/reproduce_paper.py speed --work DIR  # times every finished run's flow in one session
  tools/reproduce_paper.py tables [--check] # rewrites the generated part of docs/results.md
                                [--results DIR] [--doc FILE] [--speed-file FILE | --no-speed]  # other paths

The generated part holds the three tables, the flow speed of one same-session measurement, and every relative
claim of the paper tested over the seeds: two variants of one model (ValidFlow against ValidFlow) with Student's t
on the seed spread pooled over that model's configurations, two different models with Welch's t.
"""
import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from host_info import cpu_description, cpu_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "mtd")
DOC = os.path.join(ROOT, "docs", "results.md")
SPEED = os.path.join(ROOT, "results", "mtd-speed.json")

# The protocol shared by every run (docs/results.md): the paper's MTD recipe at a width that trains in well
# under an hour on 2 CPU cores.
PROTOCOL = {"epochs": 60, "hidden": 128, "batch_size": 16, "lr": 2e-4, "weight_decay": 1e-5}

# (table, label) of the Table 3 configurations: the keys of results and claims.
VALIDFLOW = ("table3", "ValidFlow n = 3")
CSFLOW4 = ("table3", "CS-Flow, 4 blocks (official default)")
CSFLOW6 = ("table3", "CS-Flow, 6 blocks (paper's Table 5)")

# Longer training: the official CS-Flow code trains 240 epochs (4 meta-epochs of 60), the paper's MTD protocol 60.
# Each such run continues its 60-epoch run of seed 0 (no learning-rate schedule, the Adam state is in the
# checkpoint and each epoch's shuffle depends only on seed and epoch, so this equals a 240-epoch run) and is scored
# after every 60 epochs.
LONGER_EPOCHS = 240
STAGE_EPOCHS = 60
CSFLOW4_LONGER = ("longer", "CS-Flow, 4 blocks, 240 epochs (the official schedule)")
VALIDFLOW_LONGER = ("longer", "ValidFlow n = 3, 240 epochs")
CSFLOW6_LONGER = ("longer", "CS-Flow, 6 blocks, 240 epochs")


def grid(ablation_seeds=1, longer_seeds=0):
    """(run id, table, label, model arguments, seed) in the order they run: the head-to-head first, and in it the
    closest pair (ValidFlow and the 6-block CS-Flow) with all its seeds before the 4-block CS-Flow, so that a grid
    cut short still answers the question the seed spread has to decide. Tables 7 and 6 follow with seed 0, then,
    with ablation_seeds > 1, with each further seed in turn: every configuration gets its second seed before any
    gets a third. The longer-training runs of Table 3's configurations (longer_seeds seeds of each) come before the
    further ablation seeds: they test the head-to-head, which matters more than the ablations' small effects."""
    closest_pair = [("validflow-n3", VALIDFLOW[1], ["--model", "validflow", "--modules", "3"]),
                    ("csflow-6", CSFLOW6[1], ["--model", "csflow", "--blocks", "6"])]
    official = ("csflow-4", CSFLOW4[1], ["--model", "csflow", "--blocks", "4"])
    runs = [("%s-seed%d" % (name, seed), "table3", label, args, seed)
            for seed in (0, 1, 2) for name, label, args in closest_pair]
    runs += [("%s-seed%d" % (official[0], seed), "table3", official[1], official[2], seed) for seed in (0, 1, 2)]
    n3 = ["--model", "validflow", "--modules", "3"]
    ablations = [("validflow-n3-no-fb-cbam", "table7", "FB without CBAM", n3 + ["--no-fb-cbam"]),
                 ("validflow-n3-no-long-branches", "table7", "FB without the 1<->3 branches", n3 + ["--no-long-branches"]),
                 ("validflow-n3-no-fb-cbam-no-long-branches", "table7", "FB without both",
                  n3 + ["--no-fb-cbam", "--no-long-branches"])]
    ablations += [("validflow-n%d" % n, "table6", "n = %d" % n, ["--model", "validflow", "--modules", str(n)])
                  for n in (1, 2, 4, 5)]
    later_seeds = []
    for seed in range(ablation_seeds):
        seeded = [("%s-seed%d" % (name, seed), table, label, args, seed) for name, table, label, args in ablations]
        if seed == 0:
            runs += seeded
        else:
            later_seeds += seeded
    longer = [("csflow-4", CSFLOW4_LONGER[1], official[2]), ("validflow-n3", VALIDFLOW_LONGER[1], closest_pair[0][2]),
              ("csflow-6", CSFLOW6_LONGER[1], closest_pair[1][2])]
    runs += [("%s-e%d-seed%d" % (name, LONGER_EPOCHS, seed), "longer", label, args, seed)
             for seed in range(longer_seeds) for name, label, args in longer]
    return runs + later_seeds




def epochs_of(table):
    return LONGER_EPOCHS if table == "longer" else PROTOCOL["epochs"]


def continued_from(run_id, table):
    """The protocol run whose 60-epoch checkpoint a longer run continues."""
    return run_id.replace("-e%d-" % LONGER_EPOCHS, "-") if table == "longer" else None


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json_atomic(path, value):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def depth_flag_for(validflow):
    """ValidFlow's depth is --modules since 0.2; binaries built before took --blocks for both models."""
    help_text = subprocess.run([validflow, "train", "--help"], capture_output=True, text=True).stdout
    return "--modules" if "--modules" in help_text else "--blocks"


class RunFailed(Exception):
    """A run whose program step failed: one line for the user; the other runs go on."""


# Result files and docs/results.md are written by one run at a time (runs in parallel share them).
RESULTS_LOCK = threading.Lock()


# The programs running now, so that an interrupted driver stops them instead of leaving them to write into run
# folders that the next driver resumes.
CHILDREN, CHILDREN_LOCK = set(), threading.Lock()


def run_step(command, run_id, log_path):
    """Runs one program step of a run. Its output goes to the terminal, or to the run's log file when several runs
    share the terminal (their progress bars would interleave)."""
    with open(log_path, "a") if log_path else contextlib.nullcontext() as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None)
        with CHILDREN_LOCK:
            CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            with CHILDREN_LOCK:
                CHILDREN.discard(child)
    if code != 0:
        raise RunFailed("%s: `validflow %s` failed (exit %d)%s" % (
            run_id, command[1], code, "; its output is in " + log_path if log_path else ""))


def run_one(run, a, features, fingerprint, log_path=None):
    run_id, table, label, model_args, seed = run
    if model_args[:2] == ["--model", "validflow"] and depth_flag_for(a.validflow) == "--blocks":
        model_args = [("--blocks" if arg == "--modules" else arg) for arg in model_args]
    out = os.path.join(a.work, run_id)
    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "features.pt")
    if not os.path.exists(link):
        os.symlink(features, link)
    epochs = epochs_of(table)
    source = continued_from(run_id, table)
    if source:
        start_from(source, out, a.work)
    times_path = os.path.join(out, "driver-times.json")
    times = read_json(times_path) if os.path.exists(times_path) else {"train_seconds": [], "eval_seconds": []}
    # Scored after every STAGE_EPOCHS epochs (once for the protocol's 60): the AUROC as training goes on.
    for stage in range(STAGE_EPOCHS, epochs + 1, STAGE_EPOCHS):
        if stage < epochs and os.path.exists(stage_metrics_path(out, stage)):
            continue
        train = [a.validflow, "train", "--out", out, "--seed", str(seed), "--epochs", str(stage),
                 "--hidden", str(PROTOCOL["hidden"]), "--batch-size", str(PROTOCOL["batch_size"]),
                 "--lr", str(PROTOCOL["lr"]), "--weight-decay", str(PROTOCOL["weight_decay"]),
                 "--threads", str(a.threads)] + model_args
        if os.path.exists(os.path.join(out, "checkpoint.pt")):
            train.append("--resume")
        print("[%s] %s: %s%s" % (datetime.datetime.now().strftime("%H:%M:%S"), run_id, " ".join(train),
                                 " (output: %s)" % log_path if log_path else ""), flush=True)
        start = time.time()
        run_step(train, run_id, log_path)
        times["train_seconds"].append(time.time() - start)
        write_json_atomic(times_path, times)
        trained = len(read_json(os.path.join(out, "training.json"))["loss_history"])
        if trained != stage:  # a checkpoint beyond the stage would score the wrong epoch
            raise RunFailed("%s: the checkpoint in %s is at epoch %d, expected %d; remove the run folder to start it "
                            "again" % (run_id, out, trained, stage))
        start = time.time()
        run_step([a.validflow, "eval", "--out", out, "--heatmaps", "3", "--threads", str(a.threads)], run_id, log_path)
        times["eval_seconds"].append(time.time() - start)
        write_json_atomic(times_path, times)
        if epochs > STAGE_EPOCHS:
            write_json_atomic(stage_metrics_path(out, stage), read_json(os.path.join(out, "report", "metrics.json")))

    training = read_json(os.path.join(out, "training.json"))
    metrics = read_json(os.path.join(out, "report", "metrics.json"))
    result = {
        "run": run_id, "table": table, "label": label, "seed": seed, "model_arguments": model_args,
        "protocol": dict(PROTOCOL, epochs=epochs), "config": training["config"],
        "train_options": training["train_options"],
        "parameters": training["parameters"], "gflops_per_image": training["gflops_per_image"],
        "training_images": training["training_images"],
        "training_seconds": sum(times["train_seconds"]), "training_calls": len(times["train_seconds"]),
        "threads": a.threads, "parallel_runs": a.jobs,
        "final_loss": training["loss_history"][-1], "loss_history": training["loss_history"],
        "metrics": metrics, "flow_images_per_second": metrics.get("scoring_images_per_second"),
        "library_version": training["library_version"], "git_commit": a.git_commit,
        "program": {"file": os.path.abspath(a.validflow), "sha256": a.program_sha256},
        "features": {"file": os.path.relpath(features, ROOT) if features.startswith(ROOT) else features,
                     "sha256": fingerprint},
        "host": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if epochs > STAGE_EPOCHS:
        result["metrics_by_epoch"] = {str(stage): read_json(stage_metrics_path(out, stage))
                                      for stage in range(STAGE_EPOCHS, epochs + 1, STAGE_EPOCHS)}
    if source:
        result["continued_from"] = source
        result["training_seconds"] += read_json(os.path.join(RESULTS, source + ".json"))["training_seconds"]
    with RESULTS_LOCK:
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, run_id + ".json")
        write_json_atomic(path, result)
        print("[%s] %s: image AUROC %.4f, %.0f s training" % (
            datetime.datetime.now().strftime("%H:%M:%S"), run_id, metrics["image_auroc"], result["training_seconds"]),
            flush=True)
        if a.commit:
            commit_result(path, run_id)


def stage_metrics_path(out, stage):
    return os.path.join(out, "metrics-epoch%d.json" % stage)


def start_from(source, out, work):
    """A longer run starts from its protocol run's 60-epoch checkpoint and takes that run's scores for epoch 60."""
    source_result = os.path.join(RESULTS, source + ".json")
    if not os.path.exists(source_result):
        raise RunFailed("%s: it continues %s, which has not finished yet" % (os.path.basename(out), source))
    if not os.path.exists(stage_metrics_path(out, STAGE_EPOCHS)):
        write_json_atomic(stage_metrics_path(out, STAGE_EPOCHS), read_json(source_result)["metrics"])
    if not os.path.exists(os.path.join(out, "checkpoint.pt")):
        source_dir = os.path.join(work, source)
        if len(read_json(os.path.join(source_dir, "training.json"))["loss_history"]) != STAGE_EPOCHS:
            raise RunFailed("%s: %s holds no %d-epoch checkpoint" % (os.path.basename(out), source_dir, STAGE_EPOCHS))
        for name in ("training.json", "checkpoint.pt"):  # the checkpoint last: its presence means "copied"
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(out, name + ".tmp"))
            os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))


def regenerate_tables_from_disk():
    """Runs `tables` of the tool as it is on disk now, not this long-running driver's code, which may be hours
    older than the table format CTest results.tables_generated expects. Returns None, or why it failed."""
    speed = ["--speed-file", SPEED] if os.path.exists(SPEED) else ["--no-speed"]  # not measured yet
    tables = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reproduce_paper.py"), "tables", "--results",
                             RESULTS, "--doc", DOC] + speed, capture_output=True, text=True)
    if tables.returncode == 0:
        return None
    return ((tables.stderr or tables.stdout).strip().splitlines() or ["exit %d" % tables.returncode])[-1]


def commit_result(path, run_id):
    """Regenerates the tables (from the tool on disk) and commits them with the result files (other staged work
    stays staged); retries while git is busy. The two go together: CTest results.tables_generated checks that
    they agree. Any earlier result that could not be committed goes in too."""
    failed = regenerate_tables_from_disk()
    if failed:
        print("WARNING: %s is written but not committed: regenerating the tables failed (%s); run "
              "`tools/reproduce_paper.py tables` and commit results/mtd and docs/results.md by hand"
              % (path, failed), file=sys.stderr)
        return
    paths = [os.path.relpath(os.path.dirname(path), ROOT), os.path.relpath(DOC, ROOT)]
    for attempt in range(30):
        add = subprocess.run(["git", "-C", ROOT, "add", "--"] + paths, capture_output=True, text=True)
        if add.returncode == 0:
            done = subprocess.run(["git", "-C", ROOT, "commit", "-q", "-m", "results/mtd: %s" % run_id, "--"] + paths,
                                  capture_output=True, text=True)
            if done.returncode == 0:
                return
        time.sleep(10)
    print("WARNING: could not commit %s; commit it and docs/results.md by hand" % paths[0], file=sys.stderr)


def cmd_run(a):
    features = os.path.abspath(a.features)
    if not os.path.exists(features):
        sys.exit("features file %s not found (validflow extract --dataset mtd:PATH --backbone efficientnet-lite2 "
                 "--image-size 384 --out DIR)" % features)
    if not os.path.exists(a.validflow):
        sys.exit("validflow program %s not found (build it, or pass --validflow)" % a.validflow)
    fingerprint = sha256_of(features)
    # The driver's checkout when the grid starts; the program may be an older build, which its sha256 identifies.
    a.git_commit = git_commit()
    a.program_sha256 = sha256_of(a.validflow)
    runs = [r for r in grid(a.ablation_seeds, a.longer_seeds) if not a.only or r[0] in a.only]
    if a.only and len(runs) != len(a.only):
        sys.exit("unknown run(s): %s (see: tools/reproduce_paper.py list)" %
                 ", ".join(sorted(set(a.only) - {r[0] for r in runs})))
    # Every run of one grid compares models on identical features: new runs on other features would make the
    # tables mix them.
    others = sorted({r["features"]["sha256"] for r in load_results()} - {fingerprint})
    if others:
        sys.exit("results/mtd holds runs on other features (sha256 %s...), these are %s...: continue with the same "
                 "features file (docs/results.md names it), or move the old results away to start a new grid" %
                 (", ".join(o[:12] for o in others), fingerprint[:12]))
    # Likewise one build of the program (recorded since the --ablation-seeds runs; older results name none).
    builds = sorted({r["program"]["sha256"] for r in load_results() if "program" in r} - {a.program_sha256})
    if builds:
        sys.exit("results/mtd holds runs of another validflow build (sha256 %s...), %s is %s...: continue with the "
                 "same program, or move the old results away to start a new grid" %
                 (", ".join(b[:12] for b in builds), a.validflow, a.program_sha256[:12]))
    pending = [run for run in runs if not os.path.exists(os.path.join(RESULTS, run[0] + ".json"))]
    failures = run_pending(pending, a, features, fingerprint)
    failed = regenerate_tables_from_disk()
    if failed:
        print("WARNING: regenerating the tables failed (%s)" % failed, file=sys.stderr)
    if failures:
        sys.exit("%d of %d runs failed (the others finished):\n  %s" % (len(failures), len(pending),
                                                                        "\n  ".join(failures)))


def last_progress_line(log_path):
    """The last line a run's program wrote (its progress bar redraws with carriage returns)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "starting"
    lines = [line.strip() for line in tail.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1] if lines else "starting"


def stop_children():
    """Terminates the running programs (a training loses at most the epochs since its last checkpoint)."""
    with CHILDREN_LOCK:
        running = list(CHILDREN)
    for child in running:
        child.terminate()
    for child in running:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def interrupt(signum, frame):
    raise KeyboardInterrupt


def run_pending(pending, a, features, fingerprint):
    """Runs `a.jobs` runs at a time, in grid order, until all are done or the driver is interrupted; returns the
    one-line errors of the runs that failed. On 2 cores, two runs with 1 thread each train 1.5x as many batches per
    second as one run with 2 threads (small convolutions scale poorly across threads). With several jobs each run's output goes to its own log file, and the driver
    prints every run's latest progress line every `a.progress_seconds`."""
    parallel = a.jobs > 1
    active, active_lock, finished = {}, threading.Lock(), threading.Event()

    def job(run):
        log_path = os.path.join(a.work, run[0], "driver.log") if parallel else None
        if log_path:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with active_lock:
            active[run[0]] = log_path
        try:
            run_one(run, a, features, fingerprint, log_path)
        except (OSError, ValueError, KeyError) as e:  # the program's outputs missing or unreadable
            raise RunFailed("%s: %s: %s" % (run[0], type(e).__name__, e)) from e
        finally:
            with active_lock:
                del active[run[0]]

    def report_progress():
        while not finished.wait(a.progress_seconds):
            with active_lock:
                running = sorted(active.items())
            for run_id, log_path in running:
                print("[%s] %s: %s" % (datetime.datetime.now().strftime("%H:%M:%S"), run_id,
                                       last_progress_line(log_path)), flush=True)

    monitor = threading.Thread(target=report_progress, daemon=True)
    if parallel:
        monitor.start()
    failures = []
    pool = ThreadPoolExecutor(max_workers=a.jobs)
    previous_handler = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the driver like Ctrl-C
    try:
        for run, future in [(run, pool.submit(job, run)) for run in pending]:
            try:
                future.result()
            except RunFailed as e:
                print("FAILED %s" % e, file=sys.stderr, flush=True)
                failures.append(str(e))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)  # start no further run
        stop_children()
        pool.shutdown(wait=True)
        sys.exit("interrupted: the finished runs are saved; run the same command again to continue (interrupted "
                 "runs resume from their last checkpoint)")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        finished.set()
    pool.shutdown(wait=True)
    return failures


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
    write_json_atomic(SPEED, speed)
    print("wrote %s" % os.path.relpath(SPEED, ROOT))
    cmd_tables(argparse.Namespace(check=False))


def cmd_list(a):
    for run_id, table, label, args, seed in grid(a.ablation_seeds, a.longer_seeds):
        done = os.path.exists(os.path.join(RESULTS, run_id + ".json"))
        print("%-45s %-7s %-5s %s" % (run_id, table, "done" if done else "-", label))


# ------------------------------------------------------------------------------------------------------------
# Tables

PAPER_TABLE3 = {VALIDFLOW[1]: 99.6, CSFLOW4[1]: 99.3, CSFLOW6[1]: None}
PAPER_TABLE6 = {1: 99.53, 2: 99.57, 3: 99.63, 4: 99.63, 5: 99.49}
# MVTec AD means: CBAM and branches 99.21, branches only 99.01, CBAM only 98.97, neither 98.80.
PAPER_TABLE7 = {"ValidFlow n = 3": 99.21, "FB without CBAM": 99.01, "FB without the 1<->3 branches": 98.97,
                "FB without both": 98.80}
TYPES = ["blowhole", "break", "crack", "fray", "uneven"]

# The paper's relative claims: (claim, configuration A, configuration B, the paper's A and B, expected sign of
# A - B: +1 "A is better", 0 "A and B are equal").
CLAIMS = [
    ("ValidFlow beats CS-Flow (Table 3)", VALIDFLOW, CSFLOW4, (99.6, 99.3), +1),
    ("ValidFlow beats CS-Flow with 6 blocks (not in the paper: the same-size-class rival)", VALIDFLOW, CSFLOW6, None,
     +1),
    ("n = 3 beats n = 1 (Table 6)", VALIDFLOW, ("table6", "n = 1"), (99.63, 99.53), +1),
    ("n = 3 beats n = 2 (Table 6)", VALIDFLOW, ("table6", "n = 2"), (99.63, 99.57), +1),
    ("n = 3 and n = 4 are equal (Table 6)", VALIDFLOW, ("table6", "n = 4"), (99.63, 99.63), 0),
    ("n = 3 beats n = 5 (Table 6)", VALIDFLOW, ("table6", "n = 5"), (99.63, 99.49), +1),
    ("CBAM in FB helps, with the 1↔3 branches (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without CBAM"),
     (99.21, 99.01), +1),
    ("the 1↔3 branches help, with CBAM (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without the 1<->3 branches"),
     (99.21, 98.97), +1),
    ("CBAM in FB helps, without the branches (Table 7, MVTec AD)", ("table7", "FB without the 1<->3 branches"),
     ("table7", "FB without both"), (98.97, 98.80), +1),
    ("the 1↔3 branches help, without CBAM (Table 7, MVTec AD)", ("table7", "FB without CBAM"), ("table7", "FB without both"),
     (99.01, 98.80), +1),
    ("CBAM and the branches together help (Table 7, MVTec AD)", VALIDFLOW, ("table7", "FB without both"), (99.21, 98.80), +1),
    ("ValidFlow (60 epochs) beats CS-Flow trained for the official 240 epochs (not in the paper)", VALIDFLOW,
     CSFLOW4_LONGER, None, +1),
    ("ValidFlow beats CS-Flow, both trained for 240 epochs (not in the paper)", VALIDFLOW_LONGER, CSFLOW4_LONGER, None,
     +1),
    ("ValidFlow beats CS-Flow with 6 blocks, both trained for 240 epochs (not in the paper)", VALIDFLOW_LONGER,
     CSFLOW6_LONGER, None, +1),
]
ALPHA = 0.05


def mean_std(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                    -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a, b, x):
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """Two-sided p-value of Student's t with df (possibly fractional) degrees of freedom."""
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_critical(df, alpha=0.05):
    """The |t| whose two-sided p is alpha (bisection on t_two_sided_p)."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > alpha else (lo, mid)
    return (lo + hi) / 2


def pooled_seed_spread(groups):
    """Within-configuration standard deviation pooled over every configuration with two or more seeds, and its
    degrees of freedom: the seed spread used for configurations that have a single seed."""
    ss, df = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            m = sum(values) / len(values)
            ss += sum((v - m) ** 2 for v in values)
            df += len(values) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def compare(a, b, pooled, same_model=False):
    """Difference of the means of a and b (lists of values over seeds) with a two-sided test. Two variants of one
    model (same_model) are tested with Student's t on the seed spread pooled over that model's configurations
    (pooled = (std, df)): they are assumed to vary alike across seeds, and the pool has far more degrees of freedom
    than either side. Two different models are tested with Welch's t when both sides have two or more seeds (their
    spreads may differ), else with the pooled spread. Returns (difference, p, how, half-width of the (1 - ALPHA)
    confidence interval of the difference); p and the half-width are None while no spread is known."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    spread, df = pooled
    if len(a) >= 2 and len(b) >= 2 and not (same_model and spread is not None):
        va, vb = mean_std(a)[1] ** 2 / len(a), mean_std(b)[1] ** 2 / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return diff, (0.0 if diff else 1.0), "Welch", 0.0
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        how = "Welch, df %.1f" % df
    elif spread is None:
        return diff, None, "no seed spread yet", None
    else:
        se, how = spread * math.sqrt(1.0 / len(a) + 1.0 / len(b)), "pooled spread, df %d" % df
    if se == 0:
        return diff, (0.0 if diff else 1.0), how, 0.0
    return diff, t_two_sided_p(diff / se, df), how, t_critical(df, ALPHA) * se


def pct(x):
    return "%.2f" % (100 * x)


def fmt_mean_std(values):
    m, s = mean_std(values)
    return "%.2f ± %.2f" % (100 * m, 100 * s) if s is not None else "%.2f" % (100 * m)


RESULT_FIELDS = ("run", "table", "label", "seed", "config", "metrics", "features")


def load_results():
    """Every result file of RESULTS; a file that is not one (corrupt, cut short, another kind of JSON) stops the
    tables with one line naming it, rather than a traceback or tables that silently leave it out."""
    results = []
    if os.path.isdir(RESULTS):
        for name in sorted(os.listdir(RESULTS)):
            if name.endswith(".json"):
                path = os.path.join(RESULTS, name)
                try:
                    value = read_json(path)
                except (OSError, UnicodeDecodeError, ValueError) as e:
                    sys.exit("%s: not a readable result file (%s)" % (path, e))
                missing = [field for field in RESULT_FIELDS if not isinstance(value, dict) or field not in value]
                if missing:
                    sys.exit("%s: not a result file of tools/reproduce_paper.py run (no %s)"
                             % (path, ", ".join(missing)))
                results.append(value)
    return results


def load_speed():
    return read_json(SPEED) if SPEED and os.path.exists(SPEED) else None


def timed_rounds(runs, speed):
    """Per run of `runs` timed by `speed`: (median images/s, every round's images/s)."""
    timed = speed["runs"] if speed else {}
    return [(timed[r["run"]]["median"], timed[r["run"]]["images_per_second"]) for r in runs if r["run"] in timed]


def group_row(label, runs, paper, speed):
    aurocs = [r["metrics"]["image_auroc"] for r in runs]
    seeds = ", ".join("%s (seed %d)" % (pct(r["metrics"]["image_auroc"]), r["seed"]) for r in
                      sorted(runs, key=lambda r: r["seed"]))
    per_type = " / ".join(pct(mean_std([r["metrics"]["image_auroc_per_type"][t] for r in runs])[0]) for t in TYPES)
    pixel = mean_std([r["metrics"]["pixel_auroc"] for r in runs])[0]
    aupro = mean_std([r["metrics"]["aupro"] for r in runs])[0]
    minutes = mean_std([r["training_seconds"] / 60 for r in runs])[0]
    timed = [median for median, _ in timed_rounds(runs, speed)]
    return "| %s | %s | %s | %s | %s | %s | %s | %s | %.1f M | %.2f | %.0f | %s | %s |" % (
        label, "%.2f" % paper if paper is not None else "–", fmt_mean_std(aurocs), len(runs), seeds, per_type,
        pct(pixel), pct(aupro), runs[0]["parameters"] / 1e6, runs[0]["gflops_per_image"], minutes,
        "%.0f" % (sum(timed) / len(timed)) if timed else "–", final_loss_text(runs))


def final_loss_text(runs):
    """The training loss at the last epoch and its fall over the last 10 epochs, means over the seeds."""
    histories = [r["loss_history"] for r in runs if len(r.get("loss_history", [])) > 10]
    if len(histories) != len(runs):
        return "–"
    last = sum(h[-1] for h in histories) / len(histories)
    fall = sum(h[-11] - h[-1] for h in histories) / len(histories)
    return "%.3f (−%.3f)" % (last, fall) if fall >= 0 else "%.3f (+%.3f)" % (last, -fall)


HEADER = ("| configuration | paper | image AUROC (ours, mean ± std) | seeds | each seed | per type: blowhole / break / "
          "crack / fray / uneven | pixel AUROC | AUPRO | parameters | GFLOP/image | training min ¹ | flow img/s ² | "
          "final loss ³ |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def tables_markdown(results):
    if not results:
        return "No finished runs yet: `scripts/reproduce_paper.sh` writes them.\n"
    by_label = {}
    for r in results:
        by_label.setdefault((r["table"], r["label"]), []).append(r)
    lines = []
    speed = load_speed()
    first = results[0]
    hosts = sorted({r["host"]["cpu"] for r in results})
    lines.append("Generated by `tools/reproduce_paper.py tables` from the %d result files in `results/mtd/` "
                 "(features `%s`, sha256 %s…; protocol: %s epochs, hidden %d, batch %d, Adam lr %g, weight decay %g; "
                 "host: %s). Do not edit by hand.\n" % (
                     len(results), first["features"]["file"], first["features"]["sha256"][:12],
                     PROTOCOL["epochs"], PROTOCOL["hidden"], PROTOCOL["batch_size"], PROTOCOL["lr"],
                     PROTOCOL["weight_decay"], "; ".join(hosts)))
    lines.append("### Table 3 on MTD: ValidFlow vs CS-Flow (image AUROC, %)\n")
    lines.append(HEADER)
    for label in PAPER_TABLE3:
        runs = by_label.get(("table3", label))
        if runs:
            lines.append(group_row(label, runs, PAPER_TABLE3[label], speed))
    lines.append("\nThe paper's 99.3 for CS-Flow is its Table 3 entry for CS-Flow (the official configuration); the "
                 "paper gives no MTD AUROC for its 6-block CS-Flow (Table 5 compares only size and speed).\n")

    lines.append("### Table 6 on MTD: number n of FA+FB modules\n")
    lines.append(HEADER)
    for n in (1, 2, 3, 4, 5):
        label, table = ("ValidFlow n = 3", "table3") if n == 3 else ("n = %d" % n, "table6")
        runs = by_label.get((table, label))
        if runs:
            lines.append(group_row("n = %d" % n + (" (the Table 3 runs)" if n == 3 else ""), runs, PAPER_TABLE6[n], speed))
    lines.append("")

    lines.append("### Table 7 on MTD: CBAM and the scale-1↔3 branches in FB\n")
    lines.append("The paper's Table 7 is measured on MVTec AD (not available here); its numbers are shown for the "
                 "direction of each effect only.\n")
    lines.append(HEADER)
    for label, paper in PAPER_TABLE7.items():
        table = "table3" if label == "ValidFlow n = 3" else "table7"
        runs = by_label.get((table, label))
        if runs:
            lines.append(group_row(label + (" (full FB; the Table 3 runs)" if table == "table3" else ""), runs, paper, speed))
    side_by_side = sorted(r["run"] for r in results if r.get("parallel_runs", 1) > 1)
    lines.append("\n¹ Training minutes were measured while other jobs shared the 2 cores, with a varying load, and "
                 "count only the training calls that finished (a run resumed from a checkpoint lost the interrupted "
                 "call's time): they are not comparable between runs. GFLOP/image is the flow's analytic forward cost.%s\n"
                 % (" These runs shared the cores with other runs of the grid (`run --jobs`): %s."
                    % ", ".join(side_by_side) if side_by_side else ""))
    if speed:
        lines.append("² Flow images/s: %s, measured by `tools/reproduce_paper.py speed` in one session (%s; %s; %d "
                     "threads; round-robin over the runs, %d rounds; load average %.1f before, %.1f after), mean over "
                     "the seeds; runs finished after that session show –. Ratios within this column are comparable.\n"
                     % (speed["what"], speed["date"][:10], speed["host"], speed["threads"], speed["rounds"],
                        speed["load_average_before"][0], speed["load_average_after"][0]))
    else:
        lines.append("² Flow images/s: not measured yet (`tools/reproduce_paper.py speed`).\n")
    lines.append("³ Training loss (negative log-likelihood per dimension; lower is a closer fit) at the last epoch "
                 "(%d in the protocol), mean over the seeds, and in brackets its change over the last 10 epochs: a "
                 "large fall means the flow was still far from converged when training ended.\n" % PROTOCOL["epochs"])
    lines.append(longer_markdown(by_label))
    lines.append(claims_markdown(by_label, speed))
    return "\n".join(lines) + "\n"


def verdict(diff, p, sign, paper_diff=None, half=None):
    """The verdict on a claim that A beats B (sign +1) or equals it (sign 0); for a claim with the paper's own
    difference (points), also whether that size lies outside our confidence interval: "does it help at all" can be
    undecided while "does it help as much as the paper says" is not."""
    if p is None:
        return "undecided: one seed on each side, no seed spread measured yet"
    significant = p < ALPHA
    if sign == 0:
        return "**contradicted**: they differ" if significant else "consistent: no difference beyond the seed spread"
    if not significant:
        text = "undecided: within the seed spread"
    else:
        text = "**supported**" if diff > 0 else "**contradicted**: the opposite holds"
    if paper_diff is not None and half is not None:
        if paper_diff > 100 * (diff + half):
            text += "; an effect as large as the paper's (%+.2f) is ruled out" % paper_diff
        elif paper_diff < 100 * (diff - half) and diff > 0:
            text += "; by more than the paper's %+.2f" % paper_diff
    return text


def model_of(runs):
    """The model a configuration's runs train ("validflow" or "csflow"): its seed spread is pooled with the other
    configurations of that model."""
    return runs[0]["config"]["model"]


MODEL_NAMES = {"validflow": "ValidFlow", "csflow": "CS-Flow"}


def claims_markdown(by_label, speed):
    """The paper's relative claims against our runs, each with a two-sided test at ALPHA over the seeds."""
    def aurocs(key):
        return metric_values(by_label, key, "image_auroc")

    models = sorted({model_of(runs) for runs in by_label.values()}, reverse=True)  # validflow first
    lines = ["### The paper's claims, tested on our runs\n",
             "Differences of mean image AUROC (points), each tested two-sided at %g. Two variants of one model "
             "(every Table 6 and 7 claim: ValidFlow against ValidFlow) use Student's t with the seed spread pooled "
             "over all configurations of that model that have two or more seeds: they are assumed to vary alike "
             "across seeds, and the pool has more degrees of freedom than any one configuration. ValidFlow against "
             "CS-Flow uses Welch's t, since the two models' spreads differ (below), or, while a side has one seed, "
             "the spread pooled over both. *Supported* and *contradicted* need p < %g; everything else is within "
             "what the seeds can decide. Where the paper gives its difference, the verdict also says when that size lies "
             "outside our confidence interval: the direction of an effect can be undecided while the paper's size "
             "of it is ruled out.\n" % (ALPHA, ALPHA)]
    spreads = []
    for key, runs in sorted(by_label.items()):
        values = aurocs(key)
        if len(values) >= 2:
            spreads.append("%s: std %.2f, range %s–%s over %d seeds" % (
                key[1], 100 * mean_std(values)[1], pct(min(values)), pct(max(values)), len(values)))
    pools = {model: pooled_over(by_label, {model}, "image_auroc") for model in models}
    measured = [(model, pool) for model, pool in pools.items() if pool[0] is not None]
    if spreads:
        lines.append("Seed spread of the image AUROC: " + "; ".join(spreads) + ". Pooled over the configurations "
                     "of one model: " + "; ".join("%s std %.2f (df %d)" % (MODEL_NAMES.get(m, m), 100 * pool[0],
                                                                            pool[1]) for m, pool in measured) + ".\n")
        model, (spread, df) = measured[0]
        smallest = [(n1, n2, 100 * t_critical(df, ALPHA) * spread * math.sqrt(1.0 / n1 + 1.0 / n2))
                    for n1, n2 in ((1, 3), (2, 2), (2, 3), (3, 3))]
        ablation = [abs(paper[0] - paper[1]) for _, _, b_key, paper, _ in CLAIMS if b_key[0] in ("table6", "table7")]
        lines.append("With %s's pooled spread, the smallest difference of means between two of its variants that "
                     "the test can decide is %s points; the paper's Table 6 and Table 7 differences are %.2f–%.2f "
                     "points.\n" % (MODEL_NAMES.get(model, model), ", ".join(
                         "%.2f (%d seed%s against %d)" % (d, n1, "s" if n1 > 1 else "", n2) for n1, n2, d in smallest),
                         min(ablation), max(ablation)))
    else:
        lines.append("Seed spread: not measured yet (no configuration has two seeds).\n")
    lines.append("| claim | paper | ours: A − B | 95 %% CI of A − B | seeds A / B | p (test) | verdict |\n"
                 "|---|---|---|---|---|---|---|".replace("95 %%", "%g %%" % (100 * (1 - ALPHA))))
    for claim, a_key, b_key, paper, sign in CLAIMS:
        paper_text = "%.2f vs %.2f (%+.2f)" % (paper[0], paper[1], paper[0] - paper[1]) if paper else "–"
        tested = contrast(by_label, a_key, b_key, "image_auroc")
        if not tested:
            lines.append("| %s | %s | – | – | %d / %d | – | not run yet |" % (
                claim, paper_text, len(by_label.get(a_key, [])), len(by_label.get(b_key, []))))
            continue
        a_values, b_values, (diff, p, how, half) = tested
        lines.append("| %s | %s | %s | %s | %d / %d | %s | %s |" % (
            claim, paper_text, difference_text(a_values, b_values, diff), interval_text(diff, half), len(a_values),
            len(b_values), "–" if p is None else "%.3f (%s)" % (p, how),
            verdict(diff, p, sign, paper[0] - paper[1] if paper else None, half)))
    lines.append("")
    lines.append(aupro_markdown(by_label))
    lines.append(size_speed_markdown(by_label, speed))
    return "\n".join(lines)


def longer_markdown(by_label):
    """The longer-training runs: the scores after every STAGE_EPOCHS epochs, beside the protocol's runs."""
    longer = [(key, runs) for key, runs in sorted(by_label.items(), reverse=True) if key[0] == "longer"]
    if not longer:
        return ""
    stages = [str(stage) for stage in range(STAGE_EPOCHS, LONGER_EPOCHS + 1, STAGE_EPOCHS)]
    lines = ["### Longer training: CS-Flow's official %d epochs\n" % LONGER_EPOCHS,
             "The paper's MTD protocol trains %d epochs; the official CS-Flow code trains %d (4 meta-epochs of 60), "
             "and after %d epochs CS-Flow's loss still falls %s (³). These runs continue "
             "the protocol's runs of the same seed to %d epochs (no learning-rate schedule; the Adam state is in "
             "the checkpoint) and score the test split after every %d, means over the seeds: does CS-Flow catch up "
             "on its own schedule?\n"
             % (PROTOCOL["epochs"], LONGER_EPOCHS, PROTOCOL["epochs"], fall_ratio_text(by_label), LONGER_EPOCHS,
                STAGE_EPOCHS),
             "| configuration | seeds | image AUROC after %s epochs | AUPRO after %s epochs | pixel AUROC | "
             "final loss ³ | training min ¹ |\n|---|---|---|---|---|---|---|" % (" / ".join(stages), " / ".join(stages))]
    for (table, label), runs in longer:
        def by_stage(metric):
            return " / ".join(pct(sum(r["metrics_by_epoch"][stage][metric] for r in runs) / len(runs))
                              for stage in stages)
        lines.append("| %s | %d | %s | %s | %s | %s | %.0f |" % (
            label, len(runs), by_stage("image_auroc"), by_stage("aupro"),
            pct(sum(r["metrics"]["pixel_auroc"] for r in runs) / len(runs)), final_loss_text(runs),
            sum(r["training_seconds"] for r in runs) / len(runs) / 60))
    lines.append("")
    return "\n".join(lines)


def fall_ratio_text(by_label):
    """How much faster the 4-block CS-Flow's loss falls over the protocol's last 10 epochs than ValidFlow's."""
    def fall(key):
        runs = by_label.get(key, [])
        return sum(r["loss_history"][-11] - r["loss_history"][-1] for r in runs) / len(runs) if runs else None
    cs, vf = fall(CSFLOW4), fall(VALIDFLOW)
    return "%.1f× as fast as ValidFlow's" % (cs / vf) if cs and vf and vf > 0 else "(ValidFlow not run yet)"


def metric_values(by_label, key, metric):
    return [r["metrics"][metric] for r in by_label[key]]


def pooled_over(by_label, models, metric):
    """The seed spread of metric pooled over the configurations of the given models."""
    return pooled_seed_spread([metric_values(by_label, key, metric) for key, runs in by_label.items()
                               if model_of(runs) in models])


def contrast(by_label, a_key, b_key, metric):
    """(A's values, B's values, compare(...)) of configurations A and B in metric, or None if one is not run."""
    a, b = by_label.get(a_key), by_label.get(b_key)
    if not a or not b:
        return None
    a_values, b_values = metric_values(by_label, a_key, metric), metric_values(by_label, b_key, metric)
    pooled = pooled_over(by_label, {model_of(a), model_of(b)}, metric)
    return a_values, b_values, compare(a_values, b_values, pooled, model_of(a) == model_of(b))


def difference_text(a_values, b_values, diff):
    return "%s − %s = %+.2f" % (pct(sum(a_values) / len(a_values)), pct(sum(b_values) / len(b_values)), 100 * diff)


def interval_text(diff, half):
    return "–" if half is None else "%+.2f … %+.2f" % (100 * (diff - half), 100 * (diff + half))


def aupro_markdown(by_label):
    """The same contrasts on AUPRO, which the paper does not report: where the variants differ in their maps."""
    lines = ["Not claimed by the paper: the same contrasts on AUPRO (FPR ≤ 30 %%, the localisation metric), tested "
             "the same way with AUPRO's own seed spread (pooled std: %s).\n" % "; ".join(
                 "%s %.2f (df %d)" % (MODEL_NAMES.get(m, m), 100 * pool[0], pool[1])
                 for m, pool in ((m, pooled_over(by_label, {m}, "aupro")) for m in ("validflow", "csflow"))
                 if pool[0] is not None) or "not measured yet",
             "| contrast | ours: A − B | %g %% CI of A − B | seeds A / B | p (test) | finding |\n"
             "|---|---|---|---|---|---|" % (100 * (1 - ALPHA))]
    tested_any = False
    for claim, a_key, b_key, _, _ in CLAIMS:
        tested = contrast(by_label, a_key, b_key, "aupro")
        if not tested:
            continue
        tested_any = True
        a_values, b_values, (diff, p, how, half) = tested
        if p is None:
            finding = "undecided: no seed spread measured yet"
        elif p < ALPHA:
            finding = "**A's maps are better**" if diff > 0 else "**B's maps are better**"
        else:
            finding = "no difference beyond the seed spread"
        lines.append("| %s | %s | %s | %d / %d | %s | %s |" % (
            contrast_name(a_key, b_key), difference_text(a_values, b_values, diff), interval_text(diff, half),
            len(a_values), len(b_values), "–" if p is None else "%.3f (%s)" % (p, how), finding))
    lines.append("")
    return "\n".join(lines) if tested_any else ""


def contrast_name(a_key, b_key):
    return "%s vs %s" % (a_key[1], b_key[1])


def size_speed_markdown(by_label, speed):
    """Table 5's claims: ValidFlow n = 3 against CS-Flow with 6 blocks, in parameters and speed."""
    v, c = by_label.get(VALIDFLOW), by_label.get(CSFLOW6)
    lines = ["Size and speed (the paper's Table 5: ValidFlow n = 3 against CS-Flow with 6 blocks, EfficientNet-B5, "
             "hidden width per its Fig. 2; FPS on a GPU at batch 16, backbone included):\n",
             "| claim | paper | ours | verdict |\n|---|---|---|---|"]
    if not v or not c:
        lines.append("| fewer parameters, faster | 162.89 M vs 370.50 M; 122 vs 100 FPS | – | not run yet |")
        return "\n".join(lines) + "\n"
    pv, pc = v[0]["parameters"], c[0]["parameters"]
    lines.append("| fewer parameters | 162.89 M vs 370.50 M (×0.44) | %.1f M vs %.1f M (×%.2f, exact count) | %s |" % (
        pv / 1e6, pc / 1e6, pv / pc, "**supported**" if pv < pc else "**contradicted**"))
    timed = [timed_rounds(runs, speed) for runs in (v, c)]
    if not timed[0] or not timed[1]:
        lines.append("| faster | 122 vs 100 FPS (×1.22) | – | not measured yet |")
    else:
        # The same statistic as the tables' column (mean over seeds of each run's median); every round for overlap.
        means = [sum(median for median, _ in t) / len(t) for t in timed]
        rounds = [[x for _, xs in t for x in xs] for t in timed]
        ratio = means[0] / means[1]
        lines.append("| faster | 122 vs 100 FPS (×1.22) | flow only, CPU: %.0f vs %.0f img/s (×%.2f; slowest round of "
                     "ValidFlow %.0f, fastest of CS-Flow %.0f) ² | %s |" % (
                         means[0], means[1], ratio, min(rounds[0]), max(rounds[1]), speed_verdict(*rounds)))
    return "\n".join(lines) + "\n"


def speed_verdict(validflow_rounds, csflow_rounds):
    """Decided only when every timed round of one model beat every round of the other (rounds of one session)."""
    if min(validflow_rounds) > max(csflow_rounds):
        return "**supported** (every round of ValidFlow faster than every round of CS-Flow)"
    if max(validflow_rounds) < min(csflow_rounds):
        return "**contradicted** (every round of CS-Flow faster than every round of ValidFlow)"
    return "undecided: the rounds overlap (a verdict needs every round of one faster than every round of the other)"


BEGIN = "<!-- BEGIN GENERATED: tools/reproduce_paper.py tables -->"
END = "<!-- END GENERATED -->"


def cmd_tables(a):
    if not os.path.isfile(DOC):
        sys.exit("%s not found: the tables are generated into its marked section" % DOC)
    with open(DOC) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit("%s has no generated section (%s ... %s)" % (DOC, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    generated = tables_markdown(load_results())
    new_text = head + BEGIN + "\n" + generated + END + tail
    if getattr(a, "check", False):
        if new_text != text:
            sys.exit("%s: the generated tables differ from what %s/*.json give: run "
                     "`tools/reproduce_paper.py tables` (never edit them by hand)"
                     % (os.path.relpath(DOC, ROOT), os.path.relpath(RESULTS, ROOT)))
        print("tables of %s match the %d result files" % (os.path.relpath(DOC, ROOT), len(load_results())))
        return
    tmp = DOC + ".tmp"
    with open(tmp, "w") as f:
        f.write(new_text)
    os.replace(tmp, DOC)
    print("tables of %s regenerated from %d result files" % (os.path.relpath(DOC, ROOT), len(load_results())))


def main(argv=None):
    global RESULTS, SPEED, DOC  # `tables --results/--speed-file/--doc` point the tool elsewhere
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    program = argparse.ArgumentParser(add_help=False)
    program.add_argument("--validflow", default=os.path.join(ROOT, "build", "examples", "validflow", "validflow"))
    program.add_argument("--work", default=os.path.join(ROOT, "out", "reproduce"), help="run folders (checkpoints, reports)")
    program.add_argument("--threads", type=int, default=2)
    seeds = argparse.ArgumentParser(add_help=False)
    seeds.add_argument("--ablation-seeds", type=int, default=1,
                       help="training seeds of each Table 6 and Table 7 configuration (Table 3 has 3 seeds)")
    seeds.add_argument("--longer-seeds", type=int, default=0,
                       help="also continue the first N seeds of Table 3's runs (CS-Flow-4, ValidFlow, CS-Flow-6) to %d "
                            "epochs (CS-Flow's official schedule), scored every %d" % (LONGER_EPOCHS, STAGE_EPOCHS))
    r = sub.add_parser("run", parents=[program, seeds],
                       help="run the missing runs of the grid (in order), then regenerate the tables")
    r.add_argument("--features", required=True, help="features.pt of `validflow extract` (MTD, Lite2, 384 px)")
    r.add_argument("--only", nargs="+", help="run only these runs (ids from `list`)")
    r.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time, each with --threads threads (2 cores: --jobs 2 --threads 1)")
    r.add_argument("--progress-seconds", type=float, default=60.0,
                   help="with several jobs: how often each run's latest progress line is printed")
    r.add_argument("--commit", action="store_true",
                   help="git-commit each result file, with the tables regenerated by the tool on disk, as soon as it "
                        "is written")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("list", parents=[seeds], help="the grid and which runs are done").set_defaults(fn=cmd_list)
    v = sub.add_parser("speed", parents=[program],
                       help="time the flow of every finished run in one session (results/mtd-speed.json)")
    v.add_argument("--rounds", type=int, default=3)
    v.set_defaults(fn=cmd_speed)
    t = sub.add_parser("tables", help="regenerate the tables of docs/results.md")
    t.add_argument("--check", action="store_true", help="only check that they are up to date (exit 1 if not)")
    # Where a driver (or a test) keeps its results: the driver runs `tables` of the tool on disk with its own paths.
    t.add_argument("--results", help="folder of the result files (default: results/mtd)")
    speed_source = t.add_mutually_exclusive_group()
    speed_source.add_argument("--speed-file", help="speed measurements (default: results/mtd-speed.json, if measured)")
    speed_source.add_argument("--no-speed", action="store_true", help="tables without speed measurements")
    t.add_argument("--doc", help="the document with the generated section (default: docs/results.md)")
    t.set_defaults(fn=cmd_tables)
    a = p.parse_args(argv)
    if a.command in ("run", "speed") and not 1 <= a.threads <= 256:
        p.error("--threads must be in 1..256")
    if a.command in ("run", "list") and not 1 <= a.ablation_seeds <= 10:
        p.error("--ablation-seeds must be in 1..10")
    if a.command in ("run", "list") and not 0 <= a.longer_seeds <= 3:
        p.error("--longer-seeds must be in 0..3 (Table 3 has 3 seeds to continue)")
    if a.command == "run" and not 1 <= a.jobs <= 64:
        p.error("--jobs must be in 1..64")
    if a.command == "run" and not (math.isfinite(a.progress_seconds) and 0.1 <= a.progress_seconds <= 3600):
        p.error("--progress-seconds must be in 0.1..3600")
    if a.command == "run" and a.jobs * a.threads > (os.cpu_count() or 1):
        print("note: %d jobs x %d threads = %d threads on %d cores: the runs will slow each other down"
              % (a.jobs, a.threads, a.jobs * a.threads, os.cpu_count() or 1), file=sys.stderr)
    if a.command == "speed" and not 1 <= a.rounds <= 100:
        p.error("--rounds must be in 1..100")
    if a.command == "tables":
        # A mistyped path must not regenerate the tables from no results: each one given has to exist.
        for option, value, exists in (("--results", a.results, os.path.isdir), ("--speed-file", a.speed_file,
                                      os.path.isfile), ("--doc", a.doc, os.path.isfile)):
            if value is not None and not exists(value):
                p.error("%s %s: no such %s" % (option, value, "folder" if option == "--results" else "file"))
        RESULTS = os.path.abspath(a.results) if a.results else RESULTS
        SPEED = None if a.no_speed else os.path.abspath(a.speed_file) if a.speed_file else SPEED
        DOC = os.path.abspath(a.doc) if a.doc else DOC
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
