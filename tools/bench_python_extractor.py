#!/usr/bin/env python3
"""Times the official-style CS-Flow feature extractor in Python (the reference the C++ extractor is compared to).

The extractor is CS-Flow's (marco-rudolph/cs-flow, model.py `FeatureExtractor`): efficientnet_pytorch
EfficientNet cut after the feature block (`eff_ext`), run on the ImageNet-normalised image and on its
nearest-neighbour downsamples (`F.interpolate(x, size)`, taken from the full-resolution normalised tensor),
in eval mode under `torch.no_grad()`. Random weights (timing only; denormals flushed, as in
benchmarks/bench_features.cpp, because random weights drive the deep stack into denormal floats).

Models:
  b5     EfficientNet-B5 cut after block 35, 768/384/192 px (the official CS-Flow extractor)
  lite0  EfficientNet-Lite0 cut after block 14 (ReLU6, no SE; built from efficientnet_pytorch's classes)
  lite2  EfficientNet-Lite2 cut after block 19
Lite models use the same code as B5 with Lite's block list, ReLU6 and the first stage's repeats unscaled,
i.e. the network validflow::features::EfficientNet builds for "efficientnet-lite{0,2}".

Needs only Debian's python3-torch (run it with /usr/bin/python3) and the pure-Python efficientnet_pytorch
0.7.1 sdist on PYTHONPATH, as scripts/fetch_assets.sh unpacks it:
  /usr/bin/python3 -m pip download --no-deps -d /tmp/ep efficientnet_pytorch==0.7.1
  mkdir -p /tmp/ep/src && tar xzf /tmp/ep/efficientnet_pytorch-0.7.1.tar.gz -C /tmp/ep/src --strip-components=1
  PYTHONPATH=/tmp/ep/src /usr/bin/python3 tools/bench_python_extractor.py --model b5 --batch 1 16

With --cpp BENCH_FEATURES (the built benchmarks/bench_features), every repetition of a Python configuration is
followed by the matching C++ benchmark (BM_Extractor/<model>/batch:<B>) in a subprocess, so that both are
measured back to back under the same load, and the C++/Python ratio of each pair is reported (median of the
per-repetition ratios). Prints one line per measurement and a Markdown table; --json writes everything.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_backbone import official_eff_ext  # noqa: E402  (the one copy of CS-Flow's eff_ext)
from host_info import cpu_description  # noqa: E402

MODELS = {
    # name: (family, variant, image size, feature block)
    "b5": ("b", 5, 768, 35),
    "lite0": ("lite", 0, 256, 14),
    "lite2": ("lite", 2, 384, 19),
}
# efficientnet_pytorch's compound coefficients (width, depth, native resolution) and the Lite ones (TF's
# efficientnet_lite_builder), as in include/validflow/features/efficientnet.hpp.
B_PARAMS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260), 3: (1.2, 1.4, 300), 4: (1.4, 1.8, 380),
            5: (1.6, 2.2, 456), 6: (1.8, 2.6, 528), 7: (2.0, 3.1, 600)}
LITE_PARAMS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260), 3: (1.2, 1.4, 280), 4: (1.4, 1.8, 300)}
ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model(torch, family, variant):
    """An efficientnet_pytorch EfficientNet (random weights, eval mode)."""
    try:
        from efficientnet_pytorch import EfficientNet
        from efficientnet_pytorch import utils as eu
    except ImportError:
        sys.exit("needs efficientnet_pytorch 0.7.1 on PYTHONPATH (see the docstring: pip download the sdist, unpack it)")
    if family == "b":
        return EfficientNet.from_name("efficientnet-b%d" % variant).eval()
    width, depth, res = LITE_PARAMS[variant]
    blocks = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
              "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320"]  # no SE
    params = eu.GlobalParams(width_coefficient=width, depth_coefficient=depth, image_size=res, dropout_rate=0.2,
                             num_classes=1000, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
                             drop_connect_rate=0.2, depth_divisor=8, min_depth=None, include_top=True)
    model = EfficientNet(eu.BlockDecoder.decode(blocks), params)
    # Lite: the first stage's repeats are not scaled (efficientnet_pytorch scaled them: drop the extras, which
    # are 16 -> 16 blocks appended after the first one), stem 32 channels, ReLU6 everywhere.
    extra = math.ceil(depth * 1) - 1
    if extra > 0:
        kept = [b for i, b in enumerate(model._blocks) if not (1 <= i <= extra)]
        model._blocks = torch.nn.ModuleList(kept)
    model._swish = torch.nn.ReLU6()
    for b in model._blocks:
        b._swish = torch.nn.ReLU6()
    return model.eval()


class Extractor:
    """CS-Flow's FeatureExtractor: normalise, n scales by F.interpolate (nearest), eff_ext on each."""

    def __init__(self, torch, model, use_layer, image_size, n_scales=3):
        self.torch, self.model, self.use_layer = torch, model, use_layer
        self.image_size, self.n_scales = image_size, n_scales
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, images):
        F = self.torch.nn.functional
        x = (images - self.mean) / self.std
        out = []
        for s in range(self.n_scales):
            size = self.image_size // 2 ** s
            xs = x if s == 0 else F.interpolate(x, size=(size, size))
            out.append(official_eff_ext(self.model, xs, self.use_layer))
        return out


def count_macs(torch, extractor, image_size):
    """Multiply-accumulates of one image through the extractor (convolutions, as efficientnet_macs counts)."""
    macs = [0]

    def hook(module, inputs, output):
        k = module.weight.shape[2] * module.weight.shape[3]
        macs[0] += output.numel() // output.shape[0] * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in extractor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        extractor(torch.rand(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return macs[0]


def run_cpp(binary, model, batch, cpp_args, name="BM_Extractor"):
    """One C++ measurement: <name>/<model>/batch:<batch> of bench_features; returns images/s, GFLOP/s."""
    flt = "^%s/%s/batch:%d(/|$)" % (name, model, batch)
    cmd = [binary, "--benchmark_filter=" + flt, "--benchmark_format=json"] + cpp_args
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    data = json.loads(res.stdout)
    bench = [b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    if not bench:
        raise RuntimeError("bench_features ran nothing for %s:\n%s" % (flt, res.stderr))
    b = bench[0]
    return {"images_per_s": b["items_per_second"], "gflop_per_s": b.get("GFLOP/s", float("nan")),
            "fraction_of_peak": b.get("fraction_of_peak", float("nan")),
            "peak_gflop_per_s": b.get("peak_GFLOP/s", float("nan")),
            "runtime": data.get("context", {}).get("runtime", "")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["b5"], choices=sorted(MODELS))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repetitions", type=int, default=3, help="timed forwards per configuration (median)")
    ap.add_argument("--min-time", type=float, default=0.0,
                    help="repeat the forward inside one repetition until this many seconds passed")
    ap.add_argument("--cpp", metavar="BENCH_FEATURES", help="also run this bench_features binary back to back")
    ap.add_argument("--cpp-arg", action="append", default=[], help="extra argument for bench_features")
    ap.add_argument("--cpp-before", action="store_true",
                    help="also run the C++ state before the speed work in the same run: the reference (unfused) "
                         "path with LibTorch's and glibc's defaults (BM_ExtractorReference, --vf_runtime=default)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = ap.parse_args(argv)

    import torch
    torch.set_flush_denormal(True)  # before the intra-op threads exist, so that they inherit it
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    env = " ".join("%s=%s" % (k, os.environ[k]) for k in ENV_KEYS if k in os.environ) or "none of " + " ".join(ENV_KEYS)
    print("torch %s, %d threads, %s" % (torch.__version__, torch.get_num_threads(), cpu_description()))
    print("environment: %s" % env)
    try:
        print("load average: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    except OSError:
        pass

    results = []
    for name in a.model:
        family, variant, size, layer = MODELS[name]
        model = build_model(torch, family, variant)
        ex = Extractor(torch, model, layer, size)
        macs = count_macs(torch, ex, size)
        gflop = 2.0 * macs / 1e9
        for batch in a.batch:
            x = torch.rand(batch, 3, size, size)
            with torch.no_grad():
                ex(x)  # warm-up (oneDNN primitive creation)
            py, cpp, before = [], [], []
            for _ in range(a.repetitions):
                with torch.no_grad():
                    n, t0 = 0, time.perf_counter()
                    while True:
                        out = ex(x)
                        n += 1
                        dt = time.perf_counter() - t0
                        if dt >= a.min_time:
                            break
                del out
                ips = batch * n / dt
                py.append(ips)
                line = "python  %-6s batch %2d: %8.3f images/s  %7.1f GFLOP/s" % (name, batch, ips, ips * gflop)
                if a.cpp:
                    c = run_cpp(a.cpp, name, batch, a.cpp_arg)
                    if not results and not cpp:
                        print("C++ %s" % c["runtime"])
                    cpp.append(c)
                    line += "   | C++ %8.3f images/s  %7.1f GFLOP/s  (%.1f %% of conv peak)  ratio %.2f" % (
                        c["images_per_s"], c["gflop_per_s"], 100 * c["fraction_of_peak"], c["images_per_s"] / ips)
                if a.cpp and a.cpp_before:
                    c = run_cpp(a.cpp, name, batch, a.cpp_arg + ["--vf_runtime=default"], "BM_ExtractorReference")
                    before.append(c)
                    line += "   | C++ before %8.3f images/s (%.1f %% of peak) ratio %.2f" % (
                        c["images_per_s"], 100 * c["fraction_of_peak"], c["images_per_s"] / ips)
                print(line, flush=True)
            r = {"model": name, "image_size": size, "feature_block": layer, "batch": batch,
                 "gflop_per_image": gflop, "python_images_per_s": py,
                 "python_median_images_per_s": statistics.median(py)}
            if cpp:
                r["cpp"] = cpp
                r["cpp_median_images_per_s"] = statistics.median(c["images_per_s"] for c in cpp)
                r["cpp_median_fraction_of_peak"] = statistics.median(c["fraction_of_peak"] for c in cpp)
                r["ratio_median"] = statistics.median(c["images_per_s"] / p for c, p in zip(cpp, py))
            if before:
                r["cpp_before"] = before
                r["cpp_before_median_images_per_s"] = statistics.median(c["images_per_s"] for c in before)
                r["cpp_before_median_fraction_of_peak"] = statistics.median(c["fraction_of_peak"] for c in before)
                r["before_ratio_median"] = statistics.median(c["images_per_s"] / p for c, p in zip(before, py))
            results.append(r)

    print()
    head = "| model | size | batch | GFLOP/image | Python images/s | Python GFLOP/s |"
    sep = "|---|---|---|---|---|---|"
    if a.cpp and a.cpp_before:
        head += " C++ before images/s | before of conv peak | before / Python |"
        sep += "---|---|---|"
    if a.cpp:
        head += " C++ images/s | C++ GFLOP/s | C++ of conv peak | C++ / Python |"
        sep += "---|---|---|---|"
    print(head)
    print(sep)
    for r in results:
        p = r["python_median_images_per_s"]
        row = "| %s | %d | %d | %.2f | %.3f | %.1f |" % (r["model"], r["image_size"], r["batch"], r["gflop_per_image"],
                                                        p, p * r["gflop_per_image"])
        if a.cpp and a.cpp_before:
            row += " %.3f | %.1f %% | %.2f |" % (r["cpp_before_median_images_per_s"],
                                               100 * r["cpp_before_median_fraction_of_peak"], r["before_ratio_median"])
        if a.cpp:
            c = r["cpp_median_images_per_s"]
            row += " %.3f | %.1f | %.1f %% | **%.2f** |" % (c, c * r["gflop_per_image"],
                                                           100 * r["cpp_median_fraction_of_peak"], r["ratio_median"])
        print(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": a.threads, "cpu": cpu_description(),
                       "environment": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
