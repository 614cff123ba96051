"""Serving throughput and latency of the validflow backend in the real Triton server, next to `validflow predict` on
the same images in the same run (docs/serving.md). Not a CTest test: scripts/triton_bench.sh runs it.

For each model configuration (1 or 2 CPU instances, dynamic batching on or off) one server is started; after a
warm-up, `--clients` concurrent clients send `--requests` one-image requests each, over HTTP and then over gRPC;
every response is checked against the sequential result. A single client (concurrency 1) gives the unloaded latency.
`validflow predict` runs on the same image files at --batch-size 1 and 8.

Usage (inside the venv of scripts/triton_env.sh):
  bench_serving.py --backend-dir DIR --repo REPO --model NAME --expected predictions.json --validflow BIN
                   --model-file FILE --work DIR [--clients 8] [--requests 50] [--threads 2]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from host_info import cpu_model  # noqa: E402
from triton_harness import (TritonServer, batching_stats, check, config_variant, infer_one, load_expected,  # noqa: E402
                            load_image, main_wrapper, make_client, results_of, run_load)


def predict_speed(args, paths, batch_size):
    """`validflow predict` end to end on the image files: its own images/s and the process wall time."""
    out = os.path.join(args.work, f"predict-b{batch_size}")
    command = [args.validflow, "predict", "--model", args.model_file, "--out", out, "--batch-size", str(batch_size)]
    command += paths
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    check(run.returncode == 0, f"{' '.join(command[:6])} ... failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    text = run.stdout + run.stderr
    rates = re.findall(r"([0-9.]+) images/s", text)
    check(rates, f"validflow predict printed no images/s:\n{text}")
    return {"batch_size": batch_size, "images": len(paths), "images_per_s": float(rates[-1]), "wall_s": wall}


def triton_runs(args, images, sequential):
    rows = []
    for instances in (1, 2):
        threads = max(1, args.threads // instances)
        for dynamic in (True, False):
            name = f"{args.model}_i{instances}_{'db' if dynamic else 'nodb'}"
            repo = os.path.join(args.work, "bench-repo", name)
            os.makedirs(repo, exist_ok=True)
            config_variant(os.path.join(args.repo, args.model), os.path.join(repo, args.model), instances=instances,
                           dynamic_batching=dynamic)
            server = TritonServer(repo, args.backend_dir, os.path.join(args.work, f"bench-{name}.log"),
                                  extra_args=[f"--backend-config=validflow,intra-op-threads={threads}"])
            with server:
                run_load(server, args.model, images, sequential, args.clients, max(2, args.requests // 10),
                         ["http"], args.deadline)  # warm-up
                for protocols, clients in ((["http"], 1), (["http"], args.clients), (["grpc"], args.clients)):
                    before = batching_stats(server, args.model)
                    r = run_load(server, args.model, images, sequential, clients, args.requests, protocols,
                                 args.deadline)
                    after = batching_stats(server, args.model)
                    check(not r["failures"] and r["ok"] == r["requests"],
                          f"{name} {protocols[0]}: {len(r['failures'])} failures, {r['ok']}/{r['requests']} ok: "
                          f"{r['failures'][:3]}")
                    row = {"instances": instances, "threads_per_instance": threads, "dynamic_batching": dynamic,
                           "protocol": protocols[0], "clients": clients, "requests": r["requests"],
                           "images_per_s": r["images_per_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                           "mean_batch": (after[0] - before[0]) / max(after[1] - before[1], 1)}
                    rows.append(row)
                    print(f"  {instances} instance(s) x {threads} thread(s), dynamic batching "
                          f"{'on ' if dynamic else 'off'}, {row['protocol']:4s}, {clients} client(s): "
                          f"{row['images_per_s']:6.2f} images/s, p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, "
                          f"mean batch {row['mean_batch']:.2f}", flush=True)
                check(server.stop() == 0, f"{name}: the server did not exit cleanly")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend-dir", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--expected", required=True)
    parser.add_argument("--validflow", required=True)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--threads", type=int, default=2, help="LibTorch threads in total (predict and each server)")
    parser.add_argument("--max-images", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=900.0)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)

    load_start = os.getloadavg()[0]
    predicted = load_expected(args.expected)
    # The demo's test images (all 256 x 256): the first --max-images of them.
    first = load_image(sorted(predicted)[0]).shape
    paths = [p for p in sorted(predicted) if load_image(p).shape == first][: args.max_images]
    images = {p: load_image(p) for p in paths}
    shape = images[paths[0]].shape
    print(f"bench: {len(paths)} images ({shape[1]}x{shape[0]} first), {os.cpu_count()} CPUs "
          f"({cpu_model()}), load average {os.getloadavg()[0]:.2f} at start", flush=True)

    predict = [predict_speed(args, paths, b) for b in (1, 8)]
    for p in predict:
        print(f"  validflow predict --batch-size {p['batch_size']}: {p['images_per_s']:.2f} images/s (its summary), "
              f"{p['wall_s']:.1f} s wall for {p['images']} images including model load", flush=True)

    # Sequential results through Triton once, for the correctness check of every benchmark response.
    repo = os.path.join(args.work, "bench-repo", "sequential")
    os.makedirs(repo, exist_ok=True)
    config_variant(os.path.join(args.repo, args.model), os.path.join(repo, args.model))
    with TritonServer(repo, args.backend_dir, os.path.join(args.work, "bench-sequential.log")) as server:
        client = make_client("http", server)
        sequential = {p: results_of(infer_one(client, "http", args.model, images[p],
                                              ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"]), 1)[0] for p in paths}
        client.close()

    rows = triton_runs(args, images, sequential)
    best_predict = max(p["images_per_s"] for p in predict)
    result = {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_start": load_start,
              "images": len(paths), "image_shape": list(shape), "threads": args.threads, "predict": predict,
              "triton": rows, "load_average_end": os.getloadavg()[0]}
    with open(os.path.join(args.work, "bench.json"), "w") as f:
        json.dump(result, f, indent=1)

    print("\n| instances x threads | dynamic batching | protocol | clients | images/s | p50 ms | p99 ms | mean batch |"
          " Triton / best predict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['instances']} x {r['threads_per_instance']} | {'on' if r['dynamic_batching'] else 'off'} | "
              f"{r['protocol']} | {r['clients']} | {r['images_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['mean_batch']:.2f} | {r['images_per_s'] / best_predict:.2f} |")
    for p in predict:
        print(f"| validflow predict --batch-size {p['batch_size']} | | | | {p['images_per_s']:.2f} | | | | |")
    print(f"\nload average at the end {result['load_average_end']:.2f}; JSON: {os.path.join(args.work, 'bench.json')}")


if __name__ == "__main__":
    main_wrapper(main)
