#!/usr/bin/env python3
"""Fuzz target of the results tool's loader (tools/paper/tables.py: read_checked with schema.py): mutations of the
committed result and speed files (bytes, and JSON values: NaN, 2.0, strings for numbers, null, {}, deep nesting,
cut-short text) must end in exactly one of two outcomes: the file is accepted and the tables are generated from it
without an error, or the tool stops with one line naming the file (SystemExit). Any other exception is a finding;
its input is written to FINDINGS. Standard library only, seeded: the same seed runs the same inputs.
Usage: results_loader.py [--seconds S] [--runs N] [--seed K] [--findings DIR]"""
import argparse
import contextlib
import copy
import io
import json
import os
import random
import sys
import tempfile
import time
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from paper import config, schema, tables  # noqa: E402

ODD_VALUES = [float("nan"), float("inf"), -float("inf"), 2.0, -1.0, 0, 1, 10 ** 30, -(10 ** 30), True, False, None, "",
              "0.9", "x", [], {}, [1.0], {"a": 1}, 1e-320, 0.5]


def leaves(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            yield from leaves(v, path + (i,))


def set_at(value, path, new):
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


def mutate(rng, seed_value, seed_text):
    kind = rng.randrange(6)
    if kind == 0:  # cut short
        return seed_text[:rng.randrange(len(seed_text))]
    if kind == 1:  # bytes changed
        b = bytearray(seed_text.encode())
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:  # deep nesting
        depth = rng.choice([10, 1000, 100000])
        return "[" * depth + "]" * (depth if rng.random() < 0.5 else 0)
    value = copy.deepcopy(seed_value)
    paths = list(leaves(value))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        try:
            if kind == 3:
                value = set_at(value, path, copy.deepcopy(rng.choice(ODD_VALUES)))
            elif kind == 4 and path:  # a field removed
                parent = value
                for key in path[:-1]:
                    parent = parent[key]
                del parent[path[-1]]
            else:
                value = set_at(value, path, copy.deepcopy(seed_value))  # a whole file where a field was
        except (KeyError, IndexError, TypeError):
            pass
        paths = list(leaves(value))
    return json.dumps(value, allow_nan=True)


def one(path, data, is_speed):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if is_speed:
                config.SPEED = path
                tables.load_speed()
            else:
                value = tables.read_checked(path, schema.check_result, "result file")
                tables.tables_markdown([value])
        return "accepted"
    except SystemExit as e:
        message = str(e.code)
        if "\n" in message or path not in message:
            raise AssertionError("refusal is not one line naming the file: %r" % message)
        return "refused"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--runs", type=int, default=0, help="stop after this many inputs (0: --seconds decides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--findings", default=os.path.join(tempfile.gettempdir(), "validflow-results-findings"))
    a = p.parse_args()
    seeds = []
    results = os.path.join(ROOT, "results", "mtd")
    for name in sorted(os.listdir(results))[:6]:
        with open(os.path.join(results, name)) as f:
            text = f.read()
        seeds.append((json.loads(text), text, False))
    with open(os.path.join(ROOT, "results", "mtd-speed.json")) as f:
        text = f.read()
    seeds.append((json.loads(text), text, True))
    rng = random.Random(a.seed)
    counts = {"accepted": 0, "refused": 0, "findings": 0}
    saved_speed = config.SPEED
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        target = os.path.join(work, "fuzzed.json")
        n = 0
        while (a.runs and n < a.runs) or (not a.runs and time.monotonic() - start < a.seconds):
            seed_value, seed_text, is_speed = rng.choice(seeds)
            data = mutate(rng, seed_value, seed_text)
            n += 1
            try:
                counts[one(target, data, is_speed)] += 1
            except Exception:  # a finding: anything but acceptance or one refusal line
                counts["findings"] += 1
                os.makedirs(a.findings, exist_ok=True)
                kept = os.path.join(a.findings, "results-%d-%d.json" % (a.seed, n))
                with open(kept, "wb" if isinstance(data, bytes) else "w") as f:
                    f.write(data)
                print("FINDING (input kept in %s):\n%s" % (kept, traceback.format_exc()), file=sys.stderr)
    config.SPEED = saved_speed
    print("results_loader: %d inputs in %.1f s: %d accepted, %d refused with one line, %d findings"
          % (n, time.monotonic() - start, counts["accepted"], counts["refused"], counts["findings"]))
    return 1 if counts["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
