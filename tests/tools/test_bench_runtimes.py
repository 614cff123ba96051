#!/usr/bin/env python3
"""Tests of tools/bench_runtimes.py: its options are refused where they are parsed, and the CS-Flow graph it exports
to OpenVINO / ONNX Runtime is the official flow's size (Debian's python3-torch; skipped without it)."""
import os
import subprocess
import sys
import unittest

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, TOOLS)
import bench_runtimes as br  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - Debian's python3-torch is part of setup.sh
    torch = None


class Options(unittest.TestCase):
    def refused(self, *args):
        res = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_runtimes.py")] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertNotIn("Traceback", res.stderr)
        return res.stderr.strip().splitlines()[-1]

    def test_bad_options_name_the_problem(self):
        self.assertIn("--batch 0", self.refused("--models", "csflow", "--batch", "0", "--bench-flows", "/bin/true"))
        self.assertIn("--threads", self.refused("--threads", "0", "--bench-flows", "/bin/true",
                                                "--bench-features", "/bin/true"))
        self.assertIn("--bench-flows", self.refused("--models", "csflow"))
        self.assertIn("--bench-features", self.refused("--models", "b5", "--bench-features", "/nonexistent/bench"))
        self.assertIn("invalid choice", self.refused("--models", "resnet"))


class Timing(unittest.TestCase):
    def test_images_per_second_count_every_image_of_a_batch(self):
        clock = [0.0]

        def run(arrays):  # each call takes 0.5 s of a fake clock
            clock[0] += 0.5

        real = br.time.perf_counter
        br.time.perf_counter = lambda: clock[0]
        try:
            # one warm-up call, then calls until 1 s has passed: 2 calls of 4 images in 1 s.
            self.assertAlmostEqual(br.time_runner(run, [], 4, 1.0), 8.0)
            self.assertAlmostEqual(br.time_runner(run, [], 1, 0.0), 2.0)  # at least one call
        finally:
            br.time.perf_counter = real


@unittest.skipIf(torch is None, "skipped: no torch in this Python")
class Graphs(unittest.TestCase):
    def test_csflow_is_the_official_flow(self):
        flow = br.csflow_flow(torch)
        # ../shared/reference/csflow.md 2.2: 6 blocks (kernels 3,3,3,3,3,5), 304 channels, hidden 1024.
        self.assertEqual(sum(p.numel() for p in flow.parameters()), 370504676)
        small = br.csflow_flow(torch, blocks=2, channels=8, hidden=16)
        x = br.csflow_inputs(torch, 2, channels=8)
        with torch.no_grad():
            z0, z1, z2, log_det = small(*x)
        self.assertEqual([tuple(z.shape) for z in (z0, z1, z2)], [tuple(t.shape) for t in x])
        self.assertEqual(tuple(log_det.shape), (2,))
        self.assertTrue(bool(torch.isfinite(log_det).all()))
        self.assertGreater(float(log_det.abs().sum()), 0.0)  # the gammas are not zero: every subnet contributes


if __name__ == "__main__":
    unittest.main(verbosity=2)
