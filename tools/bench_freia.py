#!/usr/bin/env python3
"""Times FrEIA 0.2's blocks at the sizes of benchmarks/bench_freia.cpp (inference: eval, no_grad, forward), so the
C++ benchmark can print FrEIA's time next to its own from the same run (scripts/bench_freia.sh runs both).

Writes {"torch": version, "threads": n, "cases": {name: median seconds per forward}} as JSON.
Needs torch, FrEIA==0.2 (a virtual environment; see tools/freia_parity.py).
"""
import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

import FrEIA.modules as Fm


def subnet_fc(c_in, c_out):
    return nn.Sequential(nn.Linear(c_in, 2 * c_in), nn.ReLU(), nn.Linear(2 * c_in, c_out))


def subnet_conv3(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding="same"), nn.ReLU(), nn.Conv2d(c_in, c_out, 3, padding="same"))


# name -> (block factory(dims_in, dims_c), input shape with batch, condition shape with batch or None).
# Keep in step with kCases in benchmarks/bench_freia.cpp.
CASES = {
    "allinone_fastflow/c64_64x64_b8": (
        lambda d, c: Fm.AllInOneBlock(d, subnet_constructor=subnet_conv3, affine_clamping=2.0), (8, 64, 64, 64), None),
    "allinone_cflow/c256_cond128_n4096": (
        lambda d, c: Fm.AllInOneBlock(d, dims_c=c, subnet_constructor=subnet_fc, affine_clamping=1.9,
                                      permute_soft=True), (4096, 256), (4096, 128)),
    "glow_conv/c64_64x64_b8": (
        lambda d, c: Fm.GLOWCouplingBlock(d, subnet_constructor=subnet_conv3), (8, 64, 64, 64), None),
    "rnvp_fc/c256_cond128_n4096": (
        lambda d, c: Fm.RNVPCouplingBlock(d, dims_c=c, subnet_constructor=subnet_fc), (4096, 256), (4096, 128)),
    "permute_random/c256_n4096": (lambda d, c: Fm.PermuteRandom(d, seed=0), (4096, 256), None),
    "actnorm/c64_64x64_b8": (lambda d, c: Fm.ActNorm(d), (8, 64, 64, 64), None),
}


def time_case(make, shape, cond_shape, repetitions):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    c = [torch.randn(*cond_shape)] if cond_shape else []
    block = make([tuple(shape[1:])], [tuple(cond_shape[1:])] if cond_shape else [])
    block.eval()
    times = []
    with torch.no_grad():
        call = (lambda: block([x], c=c)) if c else (lambda: block([x]))
        for _ in range(3):
            call()
        for _ in range(repetitions):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--repetitions", type=int, default=20)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cases = {}
    for name, (make, shape, cond_shape) in CASES.items():
        cases[name] = time_case(make, shape, cond_shape, args.repetitions)
        print("bench_freia.py: %-36s %.3f ms" % (name, cases[name] * 1e3))
    with open(args.out + ".tmp", "w") as f:  # then renamed: an interrupted run leaves no half-written file
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "cases": cases}, f, indent=1)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
