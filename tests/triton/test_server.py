"""The validflow backend in the real Triton server (CTest triton.server):

  1. readiness, server and model metadata, model configuration, the backend's load-time log;
  2. HTTP (binary tensors, and JSON tensors) and gRPC inference on the demo's images equal `validflow predict`'s
     predictions.json (relative <= 1e-5), batched requests equal single ones, the THRESHOLD input and the config
     parameter threshold decide as documented;
  3. bad requests: each gets an error response, the server stays ready and answers the next good request right;
  4. statistics: Triton counted exactly the successful requests;
  5. shutdown on SIGTERM: models unloaded, the backend finalized, exit code 0.

Usage (inside the venv of scripts/triton_env.sh):
  test_server.py --backend-dir DIR --repo REPO --model NAME --expected predictions.json --work DIR
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton_harness import common_arguments, expected_and_images  # noqa: E402
from triton_harness import (TritonServer, check, check_result, config_variant,  # noqa: E402
                            main_wrapper, results_of)

TOLERANCE = 1e-5
OUTPUTS = ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS", "ANOMALY_MAP"]


def http_infer(client, model, images, threshold=None, outputs=None, binary=True):
    batch = np.stack(images)
    image = httpclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    image.set_data_from_numpy(batch, binary_data=binary)
    inputs = [image]
    if threshold is not None:
        t = httpclient.InferInput("THRESHOLD", [len(images), 1], "FP32")
        t.set_data_from_numpy(np.full((len(images), 1), threshold, np.float32), binary_data=binary)
        inputs.append(t)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    return client.infer(model, inputs, outputs=requested)


def grpc_infer(client, model, images):
    batch = np.stack(images)
    image = grpcclient.InferInput("IMAGE", list(batch.shape), "UINT8")
    image.set_data_from_numpy(batch)
    return client.infer(model, [image])


def raw_http(server, model, header, binary=b"", header_length=None, content=None):
    """POSTs an inference request byte for byte; returns (HTTP status, body)."""
    header_bytes = json.dumps(header).encode()
    body = content if content is not None else header_bytes + binary
    headers = {"Content-Type": "application/octet-stream"}
    if content is None:
        headers["Inference-Header-Content-Length"] = str(header_length or len(header_bytes))
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def check_metadata(server, http, model, log):
    check(http.is_server_live() and http.is_server_ready(), "server not live/ready")
    check(http.is_model_ready(model), f"model {model} not ready")
    meta = http.get_server_metadata()
    check(meta["version"] == "2.51.0", f"server version {meta['version']}, expected 2.51.0 (nvidia-pytriton 0.7.0)")
    for ext in ("binary_tensor_data", "model_configuration", "statistics"):
        check(ext in meta["extensions"], f"server lacks extension {ext}")
    m = http.get_model_metadata(model)
    check(m["platform"] == "validflow", f"model platform {m['platform']!r}")
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in m["inputs"]}
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in m["outputs"]}
    check(inputs == {"IMAGE": ("UINT8", [-1, -1, -1, 3]), "IMAGE_BYTES": ("BYTES", [-1, 1]),
                     "THRESHOLD": ("FP32", [-1, 1])}, f"model inputs {inputs}")
    check(outputs == {"SCORE": ("FP32", [-1, 1]), "NORMALIZED_SCORE": ("FP32", [-1, 1]),
                      "ANOMALOUS": ("BOOL", [-1, 1]), "ANOMALY_MAP": ("FP32", [-1, -1, -1]),
                      "DEFECT_MASK": ("UINT8", [-1, -1, -1])}, f"model outputs {outputs}")
    c = http.get_model_config(model)
    check(c["backend"] == "validflow", f"config backend {c['backend']!r}")
    check(c["max_batch_size"] >= 2, f"config max_batch_size {c['max_batch_size']}")
    check("dynamic_batching" in c, "config has no dynamic_batching")
    check(c["instance_group"][0]["kind"] == "KIND_CPU", f"instance kind {c['instance_group'][0]['kind']}")
    check("model_file" in c["parameters"], "config has no parameter model_file")
    check("TRITONBACKEND API 1.19 (declared for 1.19), enums verified" in log,
          "the backend did not log the verified API version and enums")
    print(f"metadata: Triton {meta['version']}, TRITONBACKEND API 1.19 verified; model {model}: inputs {sorted(inputs)}, "
          f"outputs {sorted(outputs)}, max_batch_size {c['max_batch_size']}, dynamic batching, "
          f"{c['instance_group'][0]['count']} CPU instance(s)")
    return c["max_batch_size"]


def check_inference(http, grpc, model, images, expected, maps):
    """Every image over HTTP (binary), gRPC and HTTP JSON equals predict's result; maps agree across protocols."""
    good, worst_score, worst_normalized = 0, 0.0, 0.0
    for path, image in images.items():
        want = expected[path]
        r_http = http_infer(http, model, [image])
        got_http = results_of(r_http, 1)[0]
        check_result(got_http, want, TOLERANCE, f"HTTP {os.path.basename(path)}")
        # As check_result compares them: the score relative, the normalised score (in [0, 1]) absolute.
        worst_score = max(worst_score, abs(got_http["score"] - want["score"]) / max(abs(want["score"]), 1e-12))
        worst_normalized = max(worst_normalized, abs(got_http["normalized_score"] - want["normalized_score"]))
        maps[path] = r_http.as_numpy("ANOMALY_MAP")[0]
        map_http = r_http.as_numpy("ANOMALY_MAP")
        check(map_http.shape == (1,) + image.shape[:2], f"ANOMALY_MAP shape {map_http.shape} for image {image.shape}")
        check(map_http.dtype == np.float32 and np.isfinite(map_http).all(), "ANOMALY_MAP is not finite float32")
        r_grpc = grpc_infer(grpc, model, [image])
        check_result(results_of(r_grpc, 1)[0], want, TOLERANCE, f"gRPC {os.path.basename(path)}")
        check(np.array_equal(r_grpc.as_numpy("ANOMALY_MAP"), map_http), "gRPC and HTTP anomaly maps differ")
        good += 2
    # JSON tensors (no binary extension) on one image: same numbers.
    path, image = next(iter(images.items()))
    r_json = http_infer(http, model, [image], binary=False, outputs=["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"])
    check_result(results_of(r_json, 1)[0], expected[path], TOLERANCE, "HTTP JSON tensors")
    good += 1
    sizes = sorted({f"{i.shape[0]}x{i.shape[1]}" for i in images.values()})
    print(f"inference: {len(images)} images ({', '.join(sizes)}) over HTTP (binary) and gRPC, one over HTTP JSON: "
          f"scores, normalised scores and decisions equal validflow predict's (largest differences: score relative "
          f"{worst_score:.1e}, normalised score absolute {worst_normalized:.1e}, limit {TOLERANCE:g}); anomaly maps "
          f"[1, H, W] at each image's size, identical over HTTP and gRPC")
    return good


def check_batches(http, model, images, expected, max_batch, maps):
    """A request of several same-size images equals the single-image results; outputs can be chosen."""
    by_size = {}
    for path, image in images.items():
        by_size.setdefault(image.shape, []).append(path)
    paths = max(by_size.values(), key=len)[:max_batch]
    check(len(paths) >= 2, "the test images need at least two of the same size for a batched request")
    r = http_infer(http, model, [images[p] for p in paths])
    for path, got in zip(paths, results_of(r, len(paths))):
        check_result(got, expected[path], TOLERANCE, f"batched {os.path.basename(path)}")
    batched_maps = r.as_numpy("ANOMALY_MAP")
    check(batched_maps.shape == (len(paths),) + images[paths[0]].shape[:2], "batched map shape")
    for k, path in enumerate(paths):
        single = maps[path]
        d = np.abs(batched_maps[k] - single).max() / max(np.abs(single).max(), 1e-12)
        check(d <= 1e-4, f"the map of {os.path.basename(path)} in a batch differs from its single-image map by {d:.1e}")
    r = http_infer(http, model, [images[paths[0]]], outputs=["SCORE"])
    check(r.as_numpy("SCORE") is not None and r.as_numpy("ANOMALY_MAP") is None, "only SCORE was asked for")
    print(f"batching: a request of {len(paths)} images equals the single-image results (scores and maps); a request "
          f"for SCORE alone gets SCORE alone")
    return 2


def check_thresholds(http, model, images, expected, strict_model):
    path, image = next(iter(images.items()))
    score = expected[path]["score"]
    low, high = score * (1 - 1e-3) - 1e-6, score * (1 + 1e-3) + 1e-6
    r_low = results_of(http_infer(http, model, [image], threshold=low), 1)[0]
    r_high = results_of(http_infer(http, model, [image], threshold=high), 1)[0]
    check(r_low["anomalous"] and not r_high["anomalous"],
          f"THRESHOLD {low} / {high} around score {score} decided {r_low['anomalous']} / {r_high['anomalous']}")
    check(r_low["normalized_score"] > 0.5 > r_high["normalized_score"],
          f"normalised scores {r_low['normalized_score']} / {r_high['normalized_score']} do not straddle 0.5")
    check(relative_difference_ok(r_low["score"], score), "THRESHOLD changed the raw score")
    # Two images in one request, each with its own threshold.
    batch = http_infer(http, model, [image, image], outputs=["ANOMALOUS"])  # both decided by the file's threshold
    check(batch.as_numpy("ANOMALOUS").ravel().tolist() == [expected[path]["anomalous"]] * 2, "batch decisions")
    two = httpclient.InferInput("IMAGE", [2] + list(image.shape), "UINT8")
    two.set_data_from_numpy(np.stack([image, image]))
    t = httpclient.InferInput("THRESHOLD", [2, 1], "FP32")
    t.set_data_from_numpy(np.array([[low], [high]], np.float32))
    r = http.infer(model, [two, t], outputs=[httpclient.InferRequestedOutput("ANOMALOUS")])
    check(r.as_numpy("ANOMALOUS").ravel().tolist() == [True, False], "per-image THRESHOLD in one request")
    # The config parameter threshold (model strict_model: a threshold below every score).
    r_strict = results_of(http_infer(http, strict_model, [image]), 1)[0]
    check(r_strict["anomalous"] and r_strict["normalized_score"] > 0.5, "config parameter threshold not applied")
    check(relative_difference_ok(r_strict["score"], score), "config threshold changed the raw score")
    print(f"thresholds: THRESHOLD just below / above the score ({score:.6g}) flips ANOMALOUS and moves "
          f"NORMALIZED_SCORE across 0.5, per image within a request; the config parameter threshold applies")
    return 4  # successful requests to 'model' (the strict model's is not counted there)


def relative_difference_ok(a, b):
    return abs(a - b) <= TOLERANCE * max(abs(b), 1e-12)


def bad_requests(server, http, grpc, model, image, want, max_batch):
    """Each case must fail with an error; afterwards the server is ready and a good request is right."""
    h, w = image.shape[:2]
    raw = image.tobytes()

    def http_case(inputs_fn, outputs=None):
        def run():
            http.infer(model, inputs_fn(), outputs=outputs)
        return run

    def http_input(name, array, datatype, shape=None):
        i = httpclient.InferInput(name, shape or list(array.shape), datatype)
        i.set_data_from_numpy(array)
        return i

    def grpc_input(name, array, datatype):
        i = grpcclient.InferInput(name, list(array.shape), datatype)
        i.set_data_from_numpy(array)
        return i

    def raw_case(header, binary=b"", header_length=None, content=None):
        def run():
            status, body = raw_http(server, model, header, binary, header_length, content)
            if status == 200:
                return
            raise InferenceServerException(msg=f"HTTP {status}: {body}")
        return run

    image_header = lambda shape, size: {"inputs": [{"name": "IMAGE", "shape": shape, "datatype": "UINT8",
                                                    "parameters": {"binary_data_size": size}}]}
    cases = [
        ("wrong datatype (IMAGE as FP32)", http_case(lambda: [http_input("IMAGE", image[None].astype(np.float32), "FP32")]),
         "FP32"),
        ("wrong datatype over gRPC (IMAGE as INT32)", lambda: grpc.infer(model, [grpc_input("IMAGE", image[None].astype(np.int32), "INT32")]),
         "INT32"),
        ("wrong rank (IMAGE [1, H, W])", http_case(lambda: [http_input("IMAGE", image[None, :, :, 0], "UINT8")]),
         "shape"),
        ("wrong rank (IMAGE [H, W, 3] without batch dimension)", raw_case(image_header([h, w, 3], len(raw)), raw),
         ""),
        ("4 channels", http_case(lambda: [http_input("IMAGE", np.zeros((1, h, w, 4), np.uint8), "UINT8")]), "shape"),
        ("zero-sized height", http_case(lambda: [http_input("IMAGE", np.zeros((1, 0, w, 3), np.uint8), "UINT8")]),
         "empty dimension"),
        ("zero-sized over gRPC", lambda: grpc.infer(model, [grpc_input("IMAGE", np.zeros((1, h, 0, 3), np.uint8), "UINT8")]),
         "empty dimension"),
        ("enormous dimensions, 12 bytes of data", raw_case(image_header([1, 100000, 100000, 3], 12), bytes(12)), ""),
        ("a side above max_image_side", http_case(lambda: [http_input("IMAGE", np.zeros((1, 2, 5000, 3), np.uint8), "UINT8")]),
         "max_image_side"),
        (f"batch {max_batch + 1} over max_batch_size {max_batch}",
         http_case(lambda: [http_input("IMAGE", np.zeros((max_batch + 1, 8, 8, 3), np.uint8), "UINT8")]), "batch"),
        ("unknown input name", http_case(lambda: [http_input("IMAGE", image[None], "UINT8"),
                                                  http_input("PIXELS", image[None], "UINT8")]), "PIXELS"),
        ("IMAGE missing (only THRESHOLD)", http_case(lambda: [http_input("THRESHOLD", np.ones((1, 1), np.float32), "FP32")]),
         "no IMAGE or IMAGE_BYTES"),
        ("unknown output", http_case(lambda: [http_input("IMAGE", image[None], "UINT8")],
                                     outputs=[httpclient.InferRequestedOutput("HEATMAP")]), "HEATMAP"),
        ("THRESHOLD NaN", http_case(lambda: [http_input("IMAGE", image[None], "UINT8"),
                                             http_input("THRESHOLD", np.full((1, 1), np.nan, np.float32), "FP32")]),
         "THRESHOLD must be finite"),
        ("THRESHOLD for 2 images, 1 image", http_case(lambda: [http_input("IMAGE", image[None], "UINT8"),
                                                               http_input("THRESHOLD", np.ones((2, 1), np.float32), "FP32")]),
         "batch size"),
        ("truncated binary body", raw_case(image_header([1, h, w, 3], len(raw)), raw[: len(raw) // 2]), ""),
        ("header length beyond the body", raw_case(image_header([1, h, w, 3], len(raw)), raw[:10], header_length=10 ** 6),
         ""),
        ("malformed JSON", raw_case(None, content=b'{"inputs": [{"name": "IMAGE", "shape": [1,'), ""),
    ]
    for what, run, needle in cases:
        message = None
        try:
            run()
        except InferenceServerException as e:
            message = " ".join(str(e).split())
            check(needle.lower() in message.lower(), f"bad request '{what}': the error does not mention "
                                                     f"'{needle}': {message}")
        else:
            raise AssertionError(f"bad request '{what}' succeeded")
        check(http.is_server_ready() and http.is_model_ready(model), f"after '{what}' the server is not ready")
        check_result(results_of(http_infer(http, model, [image]), 1)[0], want, TOLERANCE, f"the good request after '{what}'")
        print(f"  {what}: {message[:150]}")
    print(f"bad requests: {len(cases)} of {len(cases)} got an error response; the server stayed ready and answered "
          f"the good request after each one correctly")
    return len(cases)


def check_statistics(http, model, successes):
    stats = http.get_inference_statistics(model)["model_stats"]
    s = next(m for m in stats if m["name"] == model)
    count = int(s["inference_stats"]["success"]["count"])
    # Triton counts the model_warmup samples too: one per warm-up entry and instance.
    c = http.get_model_config(model)
    warmups = len(c.get("model_warmup", [])) * sum(int(g["count"]) for g in c["instance_group"])
    check(count == successes + warmups, f"Triton counted {count} successful requests of {model}, the test sent "
                                        f"{successes} (and {warmups} warm-up samples)")
    print(f"statistics: Triton counted {count} successful requests, as many as sent plus {warmups} warm-up sample(s) "
          f"({s['inference_stats']['fail']['count']} failures reached the backend)")


def main():
    parser = argparse.ArgumentParser()
    common_arguments(parser)
    parser.add_argument("--max-images", type=int, default=8)
    args = parser.parse_args()

    expected, images = expected_and_images(args)
    # The repository under test plus a variant whose config parameter threshold lies below every score.
    repo = os.path.join(args.work, "server-repo")
    os.makedirs(repo, exist_ok=True)
    config_variant(os.path.join(args.repo, args.model), os.path.join(repo, args.model))
    strict = args.model + "_strict"
    lowest = min(v["score"] for v in expected.values())
    config_variant(os.path.join(args.repo, args.model), os.path.join(repo, strict), name=strict,
                   threshold=lowest / 2 if lowest > 0 else lowest - 1.0)

    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, "server.log"))
    with server:
        http = httpclient.InferenceServerClient(server.http_url, network_timeout=120.0)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        max_batch = check_metadata(server, http, args.model, server.log_text())
        maps = {}
        successes = check_inference(http, grpc, args.model, images, expected, maps)
        successes += check_batches(http, args.model, images, expected, max_batch, maps)
        successes += check_thresholds(http, args.model, images, expected, strict)
        first = next(iter(images))
        n_bad = bad_requests(server, http, grpc, args.model, images[first], expected[first], max_batch)
        successes += n_bad  # one good request after each bad one
        check_statistics(http, args.model, successes)
        http.close()
        grpc.close()
        code = server.stop()
    log = server.log_text()
    check(code == 0, f"tritonserver exited with {code} after SIGTERM; log {server.log_path}")
    for line in (f"successfully unloaded '{args.model}' version 1", f"validflow model '{args.model}': finalized",
                 "validflow backend: finalized"):
        check(line in log, f"the server log lacks '{line}' after shutdown")
    for bad in ("Segmentation fault", "Aborted", "free(): invalid", "terminate called"):
        check(bad not in log, f"the server log shows '{bad}'")
    print("shutdown: SIGTERM -> models unloaded, instances and backend finalized, exit code 0")
    print("triton.server: all checks passed")


if __name__ == "__main__":
    main_wrapper(main)
