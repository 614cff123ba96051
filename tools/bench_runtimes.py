#!/usr/bin/env python3
"""validflow against OpenVINO and ONNX Runtime on the same CPU, in the same run (issue 25).

The same networks, with random weights, are exported from PyTorch to ONNX and timed in
  openvino_f32   OpenVINO, INFERENCE_PRECISION_HINT=f32 (pinned: no silent bf16 on AVX512_BF16 hosts)
  openvino       OpenVINO's defaults (bf16 on hosts with native bf16, else f32)
  onnxruntime    ONNX Runtime's CPU execution provider
each on `--threads` threads, latency mode (one stream), alternating with validflow's own C++ benchmark of the same
stage in a subprocess (Google Benchmark JSON), so every repetition measures all contenders back to back under the
same load. Ratios are validflow's images/s over each contender's, median over the repetitions.

Models (the stages of the detector; sizes as in the paper at 768 px):
  csflow      the official CS-Flow flow: 6 coupling blocks (kernels 3,3,3,3,3,5), 304 channels, hidden 1024,
              maps 24², 12², 6² (cs-flow freia_funcs.py, as ../shared/reference/csflow.md describes it);
              validflow: bench_flows model/csflow6/c304_h1024_b<B>/infer/fp32 (pre-packed) and fp32_eager
  b5          CS-Flow's extractor: EfficientNet-B5 cut after block 35 on the image at 768, 384 and 192 px
              (efficientnet_pytorch, as tools/bench_python_extractor.py builds it);
              validflow: bench_features BM_Extractor/b5/batch:<B>
  detector    b5 then csflow, one graph from the 768-px image to latents and log-det;
              validflow: bench_features BM_Detector/b5/csflow6/end_to_end/batch:<B> (the TensorDetector: it also
              normalises the image and computes the score, the decision and the anomaly map, which the OpenVINO
              and ONNX Runtime graphs leave out)

Needs a virtual environment with torch, onnx, openvino and onnxruntime (pip), plus efficientnet_pytorch 0.7.1 on
PYTHONPATH for b5 (see tools/bench_python_extractor.py), and the built benchmarks:
  python3 -m venv /tmp/rt && /tmp/rt/bin/pip install torch onnx openvino onnxruntime
  PYTHONPATH=/tmp/ep/src /tmp/rt/bin/python tools/bench_runtimes.py --models csflow b5 --batch 1 16 \\
      --bench-flows build/benchmarks/bench_flows --bench-features build/benchmarks/bench_features --json out.json
Prints the host (CPU model and vector flags), one line per measurement and a Markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from host_info import cpu_description  # noqa: E402

CONTENDERS = ("openvino_f32", "openvino", "onnxruntime")


# ----------------------------------------------------------------------------------------------------------------
# The networks, in PyTorch, for export.

def csflow_flow(torch, blocks=6, channels=304, hidden=1024):
    """The official CS-Flow flow (forward only): ParallelPermute, then parallel_glow_coupling_layer with
    CrossConvolutions subnets; gammas 0.2 so that every subnet contributes (they start at 0 in training)."""
    nn, F = torch.nn, torch.nn.functional

    class CrossConvolutions(nn.Module):
        def __init__(self, cin, cout, k):
            super().__init__()
            p = k // 2
            self.conv0 = nn.ModuleList([nn.Conv2d(cin, hidden, k, padding=p) for _ in range(3)])
            self.conv1 = nn.ModuleList([nn.Conv2d(hidden, cout, k, padding=p) for _ in range(3)])
            self.up = nn.ModuleList([nn.Conv2d(hidden, cout, k, padding=p) for _ in range(2)])  # up_conv10, 21
            self.down = nn.ModuleList([nn.Conv2d(hidden, cout, k, padding=p, stride=2) for _ in range(2)])
            self.gamma = nn.Parameter(torch.full((3,), 0.2))

        def forward(self, x0, x1, x2):
            h = [F.leaky_relu(c(x), 0.1) for c, x in zip(self.conv0, (x0, x1, x2))]
            o = [c(t) for c, t in zip(self.conv1, h)]
            up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
            o0 = o[0] + self.up[0](up(h[1]))
            o1 = o[1] + self.down[0](h[0]) + self.up[1](up(h[2]))
            o2 = o[2] + self.down[1](h[1])
            return o0 * self.gamma[0], o1 * self.gamma[1], o2 * self.gamma[2]

    class Coupling(nn.Module):
        def __init__(self, seed, k):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            for s in range(3):
                self.register_buffer("perm%d" % s, torch.randperm(channels, generator=g))
            half = channels // 2
            self.half = half
            self.s1 = CrossConvolutions(half, 2 * half, k)
            self.s2 = CrossConvolutions(half, 2 * half, k)

        @staticmethod
        def log_scale(s):
            return 3.0 * 0.636 * torch.atan(s / 3.0)

        def forward(self, x0, x1, x2):
            xs = [x.index_select(1, getattr(self, "perm%d" % i)) for i, x in enumerate((x0, x1, x2))]
            a = [x[:, :self.half] for x in xs]
            b = [x[:, self.half:] for x in xs]
            r2 = self.s2(*b)
            ls1 = [self.log_scale(r[:, :self.half]) for r in r2]
            y1 = [torch.exp(ls) * x + r[:, self.half:] for ls, x, r in zip(ls1, a, r2)]
            r1 = self.s1(*y1)
            ls2 = [self.log_scale(r[:, :self.half]) for r in r1]
            y2 = [torch.exp(ls) * x + r[:, self.half:] for ls, x, r in zip(ls2, b, r1)]
            out = [torch.clamp(torch.cat([u, v], 1), -1e6, 1e6) for u, v in zip(y1, y2)]
            jac = sum(u.sum((1, 2, 3)) + v.sum((1, 2, 3)) for u, v in zip(ls1, ls2))
            return out[0], out[1], out[2], jac

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            kernels = [3] * (blocks - 1) + [5]
            self.blocks = nn.ModuleList([Coupling(k, kernels[k]) for k in range(blocks)])

        def forward(self, x0, x1, x2):
            jac = 0
            for blk in self.blocks:
                x0, x1, x2, j = blk(x0, x1, x2)
                jac = jac + j
            return x0, x1, x2, jac

    torch.manual_seed(0)
    return Flow().eval()


def csflow_inputs(torch, batch, channels=304):
    torch.manual_seed(1)
    return tuple(torch.randn(batch, channels, s, s) for s in (24, 12, 6))


def b5_extractor(torch):
    from bench_python_extractor import Extractor, build_model
    model = build_model(torch, "b", 5)
    extractor = Extractor(torch, model, 35, 768)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return tuple(extractor(images))

    return Wrapped().eval()


def b5_inputs(torch, batch):
    torch.manual_seed(1)
    return (torch.rand(batch, 3, 768, 768),)


def b5_csflow_detector(torch):
    """Image to latents and log-det: the b5 extractor, then the csflow flow (OpenVINO gets the whole network as
    one graph; validflow's side also decodes nothing but does preprocess, score and map)."""
    extractor, flow = b5_extractor(torch), csflow_flow(torch)

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.extractor, self.flow = extractor, flow

        def forward(self, images):
            return self.flow(*self.extractor(images))

    return Detector().eval()


MODELS = {"csflow": (csflow_flow, csflow_inputs), "b5": (b5_extractor, b5_inputs),
          "detector": (b5_csflow_detector, b5_inputs)}


# ----------------------------------------------------------------------------------------------------------------
# The contenders.

def export_onnx(torch, model, inputs, path):
    names = ["x%d" % i for i in range(len(inputs))]
    kwargs = {"input_names": names, "opset_version": 17}
    warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: still the one for these graphs
    try:
        torch.onnx.export(model, inputs, path, dynamo=False, **kwargs)
    except TypeError:  # torch < 2.5 has no `dynamo`
        torch.onnx.export(model, inputs, path, **kwargs)


def make_runner(kind, onnx_path, threads):
    """A function(inputs as numpy arrays) -> outputs for one contender."""
    if kind.startswith("openvino"):
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if kind == "openvino_f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(onnx_path, "CPU", config)
        request = compiled.create_infer_request()
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = precision.get_type_name() if hasattr(precision, "get_type_name") else str(precision)
        return (lambda arrays: request.infer(list(arrays))), "openvino %s, precision %s" % (ov.__version__, precision)
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return (lambda arrays: session.run(None, dict(zip(names, arrays)))), "onnxruntime %s" % ort.__version__


def time_runner(run, arrays, batch, min_time):
    """Images/s of `run` on a batch of `batch` images, over at least one call and `min_time` seconds, after one
    warm-up call."""
    run(arrays)
    calls, start = 0, time.perf_counter()
    while True:
        run(arrays)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * batch / elapsed


def run_validflow(args, model, batch, variant):
    """validflow's images/s for one stage from its Google Benchmark binary (a subprocess)."""
    if model == "csflow":
        binary = args.bench_flows
        flt = "^model/csflow6/c304_h1024_b%d/infer/%s(/|$)" % (batch, variant)
    elif model == "b5":
        binary = args.bench_features
        flt = "^BM_Extractor/b5/batch:%d(/|$)" % batch
    else:
        binary = args.bench_features
        flt = "^BM_Detector/b5/csflow6/end_to_end/batch:%d(/|$)" % batch
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.NamedTemporaryFile(suffix=".json") as out:  # bench_flows prints its own summary on stdout
        res = subprocess.run([binary, "--benchmark_filter=" + flt, "--benchmark_out=" + out.name,
                              "--benchmark_out_format=json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        if res.returncode != 0:
            raise RuntimeError("%s failed (exit %d):\n%s" % (binary, res.returncode, res.stderr[-2000:]))
        with open(out.name) as f:
            data = json.load(f)
    runs = [b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    if not runs:
        raise RuntimeError("%s ran nothing for %s:\n%s" % (binary, flt, res.stderr))
    return runs[0]["items_per_second"], runs[0].get("rel_err_z", float("nan"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["csflow", "b5"], choices=sorted(MODELS))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per Python-side measurement (default 2)")
    ap.add_argument("--bench-flows", help="the built benchmarks/bench_flows (needed for csflow)")
    ap.add_argument("--bench-features", help="the built benchmarks/bench_features (needed for b5)")
    ap.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    args = ap.parse_args(argv)
    for bad in [b for b in args.batch if not 1 <= b <= 64]:
        ap.error("--batch %d: must be in [1, 64]" % bad)
    if not 1 <= args.threads <= 256 or not 1 <= args.repetitions <= 20 or not 0 <= args.min_time <= 600:
        ap.error("--threads in [1, 256], --repetitions in [1, 20], --min-time in [0, 600]")
    if "csflow" in args.models and not (args.bench_flows and os.access(args.bench_flows, os.X_OK)):
        ap.error("csflow needs --bench-flows BINARY (an executable benchmarks/bench_flows)")
    if {"b5", "detector"} & set(args.models) and not (args.bench_features and os.access(args.bench_features, os.X_OK)):
        ap.error("b5 and detector need --bench-features BINARY (an executable benchmarks/bench_features)")
    try:
        import torch
    except ImportError:
        sys.exit("bench_runtimes: needs torch, onnx, openvino and onnxruntime in this Python (see --help)")
    torch.set_num_threads(args.threads)
    host = cpu_description()
    print("host: %s; %d threads each" % (host, args.threads), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            build, inputs_of = MODELS[name]
            model = build(torch)
            for batch in args.batch:
                inputs = inputs_of(torch, batch)
                path = os.path.join(tmp, "%s_b%d.onnx" % (name, batch))
                with torch.no_grad():
                    export_onnx(torch, model, inputs, path)
                arrays = [t.numpy() for t in inputs]
                runners = {}
                for kind in CONTENDERS:
                    runners[kind] = make_runner(kind, path, args.threads)
                    print("%s b%d: %s" % (name, batch, runners[kind][1]), flush=True)
                variants = {"csflow": ["fp32", "fp32_eager"], "b5": ["fused"], "detector": ["end_to_end"]}[name]
                # Each repetition starts with another contender, so that none always runs first (or right after
                # validflow's subprocess) under a changing load.
                order = list(CONTENDERS) + ["validflow_" + v for v in variants]
                for rep in range(args.repetitions):
                    row = {"model": name, "batch": batch, "repetition": rep}
                    shift = rep % len(order)
                    for key in order[shift:] + order[:shift]:
                        if key in CONTENDERS:
                            row[key] = time_runner(runners[key][0], arrays, batch, args.min_time)
                        else:
                            row[key], _ = run_validflow(args, name, batch, key[len("validflow_"):])
                    results.append(row)
                    print("%s b%d rep %d: %s" % (name, batch, rep, ", ".join(
                        "%s %.3f img/s" % (k, v) for k, v in row.items() if isinstance(v, float))), flush=True)
    print("\n| model | batch | validflow img/s | %s |" % " | ".join("÷ " + k for k in CONTENDERS))
    print("|---|---|---|" + "---|" * len(CONTENDERS))
    summary = []
    for name in args.models:
        for batch in args.batch:
            rows = [r for r in results if r["model"] == name and r["batch"] == batch]
            for key in [k for k in rows[0] if k.startswith("validflow_")]:
                ratios = {k: statistics.median(r[key] / r[k] for r in rows) for k in CONTENDERS}
                ips = statistics.median(r[key] for r in rows)
                summary.append({"model": name, "batch": batch, "validflow": key, "images_per_s": ips,
                                "ratios": ratios})
                print("| %s (%s) | %d | %.3f | %s |" % (name, key[len("validflow_"):], batch, ips,
                                                        " | ".join("%.2f×" % ratios[k] for k in CONTENDERS)))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"host": host, "threads": args.threads, "results": results, "summary": summary}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
