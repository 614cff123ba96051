"""The serving numbers measured with the field's tool, perf_analyzer (Triton 2.51's, from the tritonclient wheel),
against the real server (CTest triton.perf, scripts/triton_perf.sh for the full table of docs/serving.md).

One server holds two copies of the exported demo model: `<model>_batching` (dynamic batching as exported) and
`<model>_no_batching` (without). For each input form -- raw pixels (`IMAGE`, UINT8 [H, W, 3]) and the camera's file
(`IMAGE_BYTES`: JPEG at quality 90 and/or PNG of the same images) -- and each concurrency, perf_analyzer sends
one-image requests over real test images and reports throughput and p50/p99 latency. perf_analyzer fails on any
error response, so every run also says that no request failed; afterwards the server's own counters must show no
undecodable image and no invalid score, and the batching model must have merged requests (fewer executions than
images) while the other never did.

perf_analyzer asks for every output (it has no option to choose), so these numbers include the anomaly map and the
defect mask: the heaviest answer a client can ask for.

Usage (inside the venv of scripts/triton_env.sh):
  perf_serving.py --backend-dir DIR --repo REPO --model NAME --expected predictions.json --work DIR
                  [--inputs raw,jpeg] [--concurrency 1,2,4,8] [--window-requests 24] [--stability 100]
                  [--protocol grpc] [--threads 2]
"""
import argparse
import base64
import csv
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from host_info import cpu_description  # noqa: E402
from triton_harness import (TritonServer, batching_stats, check, common_arguments, config_variant,  # noqa: E402
                            load_expected, main_wrapper, metric_values, metrics_text)

INPUT_FORMS = ("raw", "jpeg", "png")


def perf_analyzer_binary():
    """tritonclient's perf_analyzer and the library path holding the libcudart.so.12 it links."""
    import nvidia.cuda_runtime  # nvidia-cuda-runtime-cu12, installed by scripts/triton_env.sh

    binary = os.path.join(os.path.dirname(sys.executable), "perf_analyzer")
    check(os.access(binary, os.X_OK), f"tritonclient's perf_analyzer is missing: {binary} (scripts/triton_env.sh)")
    return binary, os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib")


def test_images(expected, count):
    """`count` of the 256 x 256 demo test images, spread over good and defective ones."""
    paths = sorted(p for p in expected if "/demo/data/test/" in p and p.endswith(".png"))
    check(len(paths) >= count, f"the predictions hold {len(paths)} demo test images, fewer than {count}")
    step = len(paths) // count
    return paths[::step][:count]


def encode(pixels, form):
    if form == "raw":
        return pixels.tobytes()
    out = io.BytesIO()
    if form == "jpeg":
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    else:
        Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def write_input_data(path, images, form):
    """perf_analyzer's --input-data JSON: one entry per image, sent in turn. A BYTES tensor's "b64" content is its
    serialized form (each element a 4-byte little-endian length, then the bytes), as Triton's binary protocol has
    it; raw pixels are the UINT8 tensor's bytes with their shape."""
    entries, sizes = [], []
    for pixels in images:
        data = encode(pixels, form)
        sizes.append(len(data))
        if form == "raw":
            entries.append({"IMAGE": {"b64": base64.b64encode(data).decode(), "shape": list(pixels.shape)}})
        else:
            serialized = len(data).to_bytes(4, "little") + data
            entries.append({"IMAGE_BYTES": {"b64": base64.b64encode(serialized).decode(), "shape": [1]}})
    with open(path, "w") as f:
        json.dump({"data": entries}, f)
    return sizes


def run_perf_analyzer(args, server, model, data_file, concurrency, csv_path, log_path):
    binary, cudart = perf_analyzer_binary()
    url = server.grpc_url if args.protocol == "grpc" else server.http_url
    command = [binary, "-m", model, "-u", url, "-i", args.protocol, "-b", "1",
               "--concurrency-range", f"{concurrency}:{concurrency}", "--input-data", data_file,
               "--measurement-mode", "count_windows", "--measurement-request-count", str(args.window_requests),
               "--stability-percentage", str(args.stability),
               "--max-trials", str(args.max_trials), "-f", csv_path]
    env = dict(os.environ, LD_LIBRARY_PATH=cudart + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        run = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=args.run_timeout)
    with open(log_path) as f:
        text = f.read()
    # perf_analyzer exits non-zero on an error response and when its windows never agree within
    # --stability-percentage (then it reports nothing).
    hint = (" (windows never agreed: a busy host; raise --stability or --window-requests)"
            if "Failed to obtain stable measurement" in text else "")
    check(run.returncode == 0, f"perf_analyzer -m {model} --concurrency-range {concurrency} failed "
                               f"({run.returncode}){hint}; log {log_path}:\n{text[-3000:]}")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    check(len(rows) == 1, f"{csv_path}: {len(rows)} rows, expected one")
    row = rows[0]
    return {
        "infer_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
        "server_queue_ms": float(row["Server Queue"]) / 1e3,
        "server_compute_ms": (float(row["Server Compute Input"]) + float(row["Server Compute Infer"])
                              + float(row["Server Compute Output"])) / 1e3,
        "seconds": time.monotonic() - t0,
    }


def main():
    parser = argparse.ArgumentParser()
    common_arguments(parser)
    parser.add_argument("--inputs", default="raw,jpeg", help="comma-separated: raw, jpeg, png")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--images", type=int, default=8, help="distinct test images sent in turn")
    parser.add_argument("--window-requests", type=int, default=24,
                        help="requests per measurement window (perf_analyzer's count_windows mode)")
    parser.add_argument("--stability", type=int, default=100,
                        help="perf_analyzer's --stability-percentage: how far 3 consecutive windows may differ")
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer's --max-trials")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--threads", type=int, default=2, help="LibTorch intra-op threads of the one instance")
    parser.add_argument("--run-timeout", type=int, default=300, help="seconds one perf_analyzer run may take")
    args = parser.parse_args()
    forms = [f for f in args.inputs.split(",") if f]
    check(forms and all(f in INPUT_FORMS for f in forms), f"--inputs: each of {INPUT_FORMS}, not {args.inputs!r}")
    levels = [int(c) for c in args.concurrency.split(",")]
    check(levels and all(1 <= c <= 64 for c in levels), f"--concurrency: 1 .. 64 each, not {args.concurrency!r}")
    check(4 <= args.window_requests <= 100000, f"--window-requests must be in 4 .. 100000, not {args.window_requests}")
    check(1 <= args.stability <= 1000, f"--stability must be in 1 .. 1000, not {args.stability}")
    os.makedirs(args.work, exist_ok=True)

    paths = test_images(load_expected(args.expected), args.images)
    images = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths]
    data_files, sizes = {}, {}
    for form in forms:
        data_files[form] = os.path.join(args.work, f"input-{form}.json")
        sizes[form] = write_input_data(data_files[form], images, form)

    repo = os.path.join(args.work, "repo")
    models = {True: f"{args.model}_batching", False: f"{args.model}_no_batching"}
    for batching, name in models.items():
        config_variant(os.path.join(args.repo, args.model), os.path.join(repo, name), name=name, instances=1,
                       dynamic_batching=batching)
    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, "server.log"),
                          extra_args=[f"--backend-config=validflow,intra-op-threads={args.threads}"])
    rows = []
    with server:
        for form in forms:
            for batching in (True, False):
                model = models[batching]
                for c in levels:
                    before = batching_stats(server, model)
                    tag = f"{form}-{'b' if batching else 'nb'}-c{c}"
                    r = run_perf_analyzer(args, server, model, data_files[form], c,
                                          os.path.join(args.work, f"{tag}.csv"), os.path.join(args.work, f"{tag}.log"))
                    after = batching_stats(server, model)
                    requests, executions = after[0] - before[0], after[1] - before[1]
                    r.update(input=form, batching=batching, concurrency=c, requests=requests,
                             mean_batch=requests / max(1, executions))
                    rows.append(r)
                    print(f"  {form:4s} {'batching   ' if batching else 'no batching'} concurrency {c}: "
                          f"{r['infer_per_s']:6.1f} infer/s, p50 {r['p50_ms']:6.1f} ms, p99 {r['p99_ms']:6.1f} ms, "
                          f"mean batch {r['mean_batch']:.2f} "
                          f"[{r['seconds']:.0f} s]", flush=True)
        text = metrics_text(server)
        for batching, model in models.items():
            undecodable = sum(metric_values(text, "validflow_undecodable_images", model=model).values())
            invalid = sum(metric_values(text, "validflow_invalid_scores", model=model).values())
            scored = sum(metric_values(text, "validflow_images_scored", model=model).values())
            check(undecodable == 0 and invalid == 0,
                  f"{model}: {undecodable} undecodable images, {invalid} invalid scores under perf_analyzer")
            requests, executions = batching_stats(server, model)
            check(scored >= requests - 1, f"{model}: {scored} images scored of {requests} requests")  # - warm-up
            if batching:
                check(executions < requests, f"{model}: dynamic batching never merged requests "
                                             f"({requests} requests in {executions} executions)")
            else:
                check(executions == requests, f"{model}: without dynamic batching {requests} requests ran in "
                                              f"{executions} executions")

    raw_bytes = images[0].nbytes
    print(f"\nperf_analyzer 2.51 ({args.protocol}, one-image requests, {len(images)} distinct "
          f"{images[0].shape[1]} x {images[0].shape[0]} images, every output), 1 instance x {args.threads} "
          f"threads; CPU: {cpu_description()}")
    print("| input | bytes per image | dynamic batching | concurrency | infer/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mean_size = sum(sizes[r["input"]]) / len(sizes[r["input"]])
        print(f"| {r['input']} | {mean_size:,.0f} ({raw_bytes / mean_size:.1f}x fewer) | "
              f"{'on' if r['batching'] else 'off'} | {r['concurrency']} | {r['infer_per_s']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['mean_batch']:.2f} |"
              .replace(f"{raw_bytes:,.0f} (1.0x fewer)", f"{raw_bytes:,.0f}"))
    result = {"cpu": cpu_description(), "protocol": args.protocol, "threads": args.threads, "window_requests": args.window_requests,
              "stability_percentage": args.stability,
              "image_shape": list(images[0].shape), "bytes_per_image": {f: sizes[f] for f in forms}, "rows": rows}
    out = os.path.join(args.work, "perf.json")
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"results: {out}")
    print("triton.perf: all checks passed")


if __name__ == "__main__":
    main_wrapper(main)
