"""Load test of the validflow backend in the real Triton server (CTest triton.load): `--clients` concurrent clients
(half HTTP, half gRPC) each send `--requests` one-image requests on loopback, with dynamic batching on. Every
response must equal the sequential result for its image (relative <= 1e-5); none may fail or be lost; two CPU
model instances serve concurrently, with dynamic batching as exported. The test stops
by itself at `--deadline` seconds (and then fails). Prints throughput, p50/p99 latency and the mean dynamic batch.

Usage (inside the venv of scripts/triton_env.sh):
  test_load.py --backend-dir DIR --repo REPO --model NAME --expected predictions.json --work DIR
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton_harness import common_arguments, expected_and_images  # noqa: E402
from triton_harness import (TritonServer, batching_stats, check, check_result, config_variant, infer_one,  # noqa: E402
                            main_wrapper, make_client, results_of, run_load)


def main():
    parser = argparse.ArgumentParser()
    common_arguments(parser)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds for the whole load")
    parser.add_argument("--max-images", type=int, default=16)
    args = parser.parse_args()

    predicted, images = expected_and_images(args)
    repo = os.path.join(args.work, "load-repo")
    os.makedirs(repo, exist_ok=True)
    # Two CPU instances (two Detectors executing concurrently), dynamic batching as exported.
    config_variant(os.path.join(args.repo, args.model), os.path.join(repo, args.model), instances=2)
    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, "load-server.log"),
                          extra_args=["--backend-config=validflow,intra-op-threads=1"])
    with server:
        # The sequential result of every image (and it equals validflow predict's).
        client = make_client("http", server)
        sequential = {}
        for p in images:
            sequential[p] = results_of(infer_one(client, "http", args.model, images[p],
                                                 ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"]), 1)[0]
            check_result(sequential[p], predicted[p], 1e-5, f"sequential {os.path.basename(p)}")
        client.close()
        before = batching_stats(server, args.model)
        r = run_load(server, args.model, images, sequential, args.clients, args.requests, ["http", "grpc"],
                     args.deadline)
        after = batching_stats(server, args.model)
        check(server.http_status("/v2/health/ready") == 200, "the server is not ready after the load")
        code = server.stop()
    requests, executions = after[0] - before[0], after[1] - before[1]
    log = server.log_text()
    check("validflow instance '" + args.model + "_0_0'" in log and "validflow instance '" + args.model + "_0_1'" in log,
          "the server did not start two model instances")
    print(f"load: {r['clients']} clients (HTTP and gRPC) x {args.requests} requests of one image "
          f"({len(images)} distinct images of {len({i.shape for i in images.values()})} sizes): "
          f"{r['ok']} correct, {len(r['failures'])} failed, {r['requests'] - r['sent']} not sent in {r['wall_s']:.1f} s")
    print(f"load: {r['images_per_s']:.1f} images/s, latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; "
          f"Triton ran {requests} requests in {executions} executions (mean dynamic batch "
          f"{requests / max(executions, 1):.2f})")
    for f in r["failures"][:10]:
        print(f"  failure: {f}")
    check(not r["timed_out"], f"the load did not finish within {args.deadline} s")
    check(not r["failures"], f"{len(r['failures'])} of {r['requests']} requests failed")
    check(r["ok"] == r["requests"], f"{r['requests'] - r['ok']} responses lost")
    check(requests == r["requests"], f"Triton counted {requests} requests, the clients sent {r['requests']}")
    check(code == 0, f"tritonserver exited with {code} after SIGTERM")
    print("triton.load: all checks passed")


if __name__ == "__main__":
    main_wrapper(main)
