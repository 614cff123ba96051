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
import os
import sys

# The code is the package tools/paper/ (runner, statistics, tables, speed, config, cli); this file is its entry point.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper import cli  # noqa: E402


def main(argv=None):
    return cli.main(argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
