"""What a factory line needs from the validflow backend, in the real Triton server (CTest triton.serving):

  1. encoded input: IMAGE_BYTES (PNG, JPEG, BMP, TIFF, 16-bit PNG as sent by a camera) decoded in the backend gives
     `validflow predict`'s numbers for the same files (relative <= 1e-5), over HTTP and gRPC; bytes per image;
  2. bad or oversized encoded images fail their own request only, also when sent concurrently with good ones into
     one dynamic batch; images of different sizes share a request (maps need one size);
  3. parameters: pixel_threshold (DEFECT_MASK == ANOMALY_MAP >= it), threshold, intra_op_threads (logged);
  4. custom metrics on /metrics: images scored, anomalous, invalid (fault injection), undecodable, the score
     histogram, each equal to what the test sent, warm-up samples left out;
  5. warm-up: first-request latency of a fresh server with and without model_warmup.

Usage (inside the venv of scripts/triton_env.sh):
  test_serving.py --backend-dir DIR --repo REPO --model NAME --expected predictions.json --work DIR
"""
import argparse
import os
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton_harness import (TritonServer, check, check_result, common_arguments,  # noqa: E402
                            config_variant, load_expected, load_image, main_wrapper, metric_values, metrics_text,
                            results_of)

TOLERANCE = 1e-5
SCORES = ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def bytes_input(module, files):
    i = module.InferInput("IMAGE_BYTES", [len(files), 1], "BYTES")
    i.set_data_from_numpy(np.array([[f] for f in files], dtype=np.object_))
    return i


def infer_bytes(client, model, files, outputs=SCORES, module=httpclient):
    return client.infer(model, [bytes_input(module, files)],
                        outputs=[module.InferRequestedOutput(o) for o in outputs])


class Sent:
    """What the test sent to the metrics' model: the numbers /metrics must show."""

    def __init__(self):
        self.scored, self.anomalous, self.undecodable, self.invalid = 0, 0, 0, 0
        self.normalized = []
        self.lock = threading.Lock()

    def add(self, results):
        with self.lock:
            self.scored += len(results)
            self.anomalous += sum(r["anomalous"] for r in results)
            self.normalized += [r["normalized_score"] for r in results]


def check_encoded(http, grpc, model, expected, sent):
    encoded = sorted(p for p in expected if "other-formats" in p or "other-sizes" in p)
    encoded += sorted(p for p in expected if p.endswith("/000.png"))  # the first image of every class
    ratios = {}
    for path in encoded:
        data = read(path)
        got = results_of(infer_bytes(http, model, [data]), 1)[0]
        check_result(got, expected[path], TOLERANCE, f"IMAGE_BYTES {os.path.relpath(path, os.path.dirname(os.path.dirname(path)))}")
        sent.add([got])
        with Image.open(path) as decoded:
            w, h = decoded.size
        ratios.setdefault(os.path.splitext(path)[1], []).append(h * w * 3 / len(data))
    got = results_of(infer_bytes(grpc, model, [read(encoded[0])], module=grpcclient), 1)[0]
    check_result(got, expected[encoded[0]], TOLERANCE, "IMAGE_BYTES over gRPC")
    sent.add([got])
    # The same PNG as raw pixels and as a file: the same numbers (both are predict's).
    png = next(p for p in encoded if p.endswith("/000.png"))
    image = load_image(png)
    raw = httpclient.InferInput("IMAGE", [1] + list(image.shape), "UINT8")
    raw.set_data_from_numpy(image[None])
    r_raw = results_of(http.infer(model, [raw], outputs=[httpclient.InferRequestedOutput(o) for o in SCORES]), 1)[0]
    r_file = results_of(infer_bytes(http, model, [read(png)]), 1)[0]
    check(r_raw == r_file, f"IMAGE and IMAGE_BYTES of {png} differ: {r_raw} / {r_file}")
    sent.add([r_raw, r_file])
    kinds = ", ".join(f"{ext} {np.mean(v):.1f}x" for ext, v in sorted(ratios.items()))
    print(f"encoded input: {len(encoded)} files (PNG 8-bit and 16-bit gray, JPEG, BMP, TIFF, 4 sizes) over HTTP and "
          f"one over gRPC equal validflow predict's results; IMAGE and IMAGE_BYTES of one PNG give identical numbers; "
          f"raw bytes per encoded byte: {kinds}")
    return ratios


def check_mixed_sizes(http, model, expected, sent):
    paths = sorted(p for p in expected if "other-sizes" in p)
    files = [read(p) for p in paths]
    results = results_of(infer_bytes(http, model, files), len(files))
    for path, got in zip(paths, results):
        check_result(got, expected[path], TOLERANCE, f"mixed-size request {os.path.basename(path)}")
    sent.add(results)
    try:
        infer_bytes(http, model, files, outputs=SCORES + ["ANOMALY_MAP"])
        raise AssertionError("a mixed-size request with ANOMALY_MAP succeeded")
    except InferenceServerException as e:
        check("one size" in str(e), f"mixed sizes with ANOMALY_MAP: {e}")
    print(f"mixed sizes: one IMAGE_BYTES request of {len(files)} images of different sizes is scored per image; "
          f"asking it for ANOMALY_MAP is refused ('needs the request's images to have one size')")


def bad_files(good_png):
    import io

    big = io.BytesIO()
    Image.new("RGB", (5000, 2)).save(big, format="PNG")
    return [
        ("truncated PNG", good_png[: len(good_png) // 2], "truncated PNG"),
        ("random bytes", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
         "not a PNG, JPEG, BMP or TIFF"),
        ("a GIF", b"GIF89a" + bytes(64), "not a PNG, JPEG, BMP or TIFF"),
        ("a PNG with a broken CRC", good_png[:40] + bytes([good_png[40] ^ 0xFF]) + good_png[41:], "CRC"),
        ("a 5000 x 2 PNG (above max_image_side 4096)", big.getvalue(), "above max_image_side 4096"),
        ("a 40-byte PNG claiming 100000 x 100000 pixels", png_claiming(100000, 100000), "larger than the limit"),
    ]


def png_claiming(width, height):
    """A structurally valid PNG (right CRCs) whose header claims width x height: refused before any decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def check_bad_encoded(server, http, model, expected, sent):
    good_path = sorted(p for p in expected if p.endswith("/000.png"))[0]
    good = read(good_path)
    cases = bad_files(good)
    for what, data, needle in cases:
        try:
            infer_bytes(http, model, [data])
            raise AssertionError(f"IMAGE_BYTES '{what}' succeeded")
        except InferenceServerException as e:
            check(needle.lower() in str(e).lower(), f"IMAGE_BYTES '{what}': the error lacks '{needle}': {e}")
            print(f"  {what}: {' '.join(str(e).split())[:140]}")
        sent.undecodable += 1
    # A request of one good and one bad image fails as a whole (one response per request), naming the item.
    try:
        infer_bytes(http, model, [good, cases[0][1]])
        raise AssertionError("a request with one bad item succeeded")
    except InferenceServerException as e:
        check("IMAGE_BYTES item 1" in str(e), f"the error does not name item 1: {e}")
    sent.undecodable += 1
    # An empty item and a declared length beyond the tensor: refused before decoding.
    try:
        infer_bytes(http, model, [b""])
        raise AssertionError("an empty IMAGE_BYTES item succeeded")
    except InferenceServerException as e:
        check("is empty" in str(e), f"empty item: {e}")

    # Concurrent good and bad requests (dynamic batching merges them): each answered on its own.
    errors, wrong, done = [], [], []
    clients = [httpclient.InferenceServerClient(server.http_url, network_timeout=120.0) for _ in range(6)]

    def worker(k):
        for n in range(6):
            bad = (k + n) % 3 == 0
            try:
                r = infer_bytes(clients[k], model, [cases[(k + n) % len(cases)][1] if bad else good])
                if bad:
                    wrong.append(f"client {k} request {n}: a bad image was answered")
                else:
                    got = results_of(r, 1)[0]
                    check_result(got, expected[good_path], TOLERANCE, f"concurrent good request {k}/{n}")
                    sent.add([got])
                    done.append(1)
            except InferenceServerException as e:
                (errors if bad else wrong).append(f"client {k} request {n}: {e}")
            except AssertionError as e:
                wrong.append(str(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    check(not wrong, f"concurrent good and bad requests: {wrong[:3]}")
    sent.undecodable += len(errors)
    stats = http.get_inference_statistics(model)["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}
    print(f"bad encoded images: {len(cases)} kinds refused with their reason; concurrently, {len(done)} good requests "
          f"answered right and {len(errors)} bad ones refused, each on its own; executions by batch size "
          f"{dict(sorted(batches.items()))}")
    check(batches, "Triton reports no batch statistics for the model")


def check_parameters(server, http, model, params_model, threads_model, expected, pixel_threshold):
    path = sorted(p for p in expected if "crack" in p and p.endswith("/000.png"))[0]
    data = read(path)
    r = infer_bytes(http, params_model, [data], outputs=SCORES + ["ANOMALY_MAP", "DEFECT_MASK"])
    amap, mask = r.as_numpy("ANOMALY_MAP")[0], r.as_numpy("DEFECT_MASK")[0]
    check(mask.dtype == np.uint8 and mask.shape == amap.shape, f"DEFECT_MASK {mask.dtype} {mask.shape}")
    check(np.array_equal(mask, (amap >= np.float32(pixel_threshold)).astype(np.uint8)),
          "DEFECT_MASK is not ANOMALY_MAP >= the config parameter pixel_threshold")
    share = float(mask.mean())
    check(0.05 < share < 0.95, f"the pixel threshold at the map's median flags {share:.0%} of the pixels")
    got = results_of(r, 1)[0]
    check(got["anomalous"] and got["normalized_score"] > 0.5, "the config parameter threshold (below every score)")
    check(abs(got["score"] - expected[path]["score"]) <= TOLERANCE * abs(expected[path]["score"]),
          "a threshold parameter changed the raw score")
    got = results_of(infer_bytes(http, threads_model, [data]), 1)[0]
    check_result(got, expected[path], TOLERANCE, "the model with intra_op_threads 1")
    log = server.log_text()
    check(f"validflow model '{threads_model}' version 1" in log and "intra-op threads 1" in log,
          "the backend did not log intra-op threads 1 for the threads model")
    print(f"parameters: pixel_threshold {pixel_threshold:.6g} -> DEFECT_MASK == ANOMALY_MAP >= it ({share:.0%} of "
          f"the pixels); threshold below every score -> ANOMALOUS, raw score unchanged; intra_op_threads 1 logged and "
          f"the same numbers")


def check_metrics(server, http, model, expected, sent):
    # An image whose score is not finite (fault injection, VALIDFLOW_FAULT_NAN_SCORE): an error, counted invalid.
    image = load_image(sorted(p for p in expected if p.endswith("/000.png"))[0]).copy()
    image.reshape(-1)[:4] = [0xFA, 0x17, 0xFA, 0x17]
    raw = httpclient.InferInput("IMAGE", [1] + list(image.shape), "UINT8")
    raw.set_data_from_numpy(image[None])
    try:
        http.infer(model, [raw])
        raise AssertionError("an image with a non-finite score was answered")
    except InferenceServerException as e:
        check("not finite" in str(e), f"untrusted score: {e}")
    sent.invalid += 1
    text = metrics_text(server)
    labels = {"model": model, "version": "1"}

    def value(name):
        values = metric_values(text, name, **labels)
        check(len(values) == 1, f"/metrics has {len(values)} samples of {name} for {labels}")
        return next(iter(values.values()))

    for name, kind in (("validflow_images_scored", "counter"), ("validflow_normalized_score", "histogram")):
        check(f"# TYPE {name} {kind}" in text, f"/metrics lacks '# TYPE {name} {kind}'")
    got = {"scored": value("validflow_images_scored"), "anomalous": value("validflow_images_anomalous"),
           "invalid": value("validflow_invalid_scores"), "undecodable": value("validflow_undecodable_images"),
           "histogram count": value("validflow_normalized_score_count")}
    want = {"scored": sent.scored, "anomalous": sent.anomalous, "invalid": sent.invalid,
            "undecodable": sent.undecodable, "histogram count": sent.scored}
    check(got == want, f"/metrics shows {got}, the test sent {want} (warm-up samples must not count)")
    below = value_of_bucket(text, labels, "0.5")
    want_below = sum(1 for s in sent.normalized if s <= 0.5)
    check(below == want_below, f"histogram bucket le=0.5 holds {below}, {want_below} scores were <= 0.5")
    total = metric_values(text, "validflow_normalized_score_sum", **labels)
    check(abs(next(iter(total.values())) - sum(sent.normalized)) <= 1e-4 * max(1.0, sum(sent.normalized)),
          "histogram sum differs from the sum of the normalised scores")
    print(f"metrics: /metrics shows {int(got['scored'])} images scored, {int(got['anomalous'])} anomalous, "
          f"{int(got['invalid'])} invalid, {int(got['undecodable'])} undecodable and a histogram of "
          f"{int(got['histogram count'])} normalised scores ({below} at or below 0.5): exactly what was sent, the "
          f"warm-up sample left out")


def value_of_bucket(text, labels, le):
    values = metric_values(text, "validflow_normalized_score_bucket", le=le, **labels)
    check(len(values) == 1, f"no histogram bucket le={le}")
    return int(next(iter(values.values())))


def first_request_ms(args, repo, name, image_path, log_name):
    """Starts a server on `repo`; returns (seconds to ready, ms of the first request, ms of the second, the successful
    requests Triton counted, warm-up samples included)."""
    t0 = time.monotonic()
    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, log_name))
    with server:
        ready = time.monotonic() - t0
        http = httpclient.InferenceServerClient(server.http_url, network_timeout=300.0)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            infer_bytes(http, name, [read(image_path)])
            times.append((time.perf_counter() - t) * 1e3)
        stats = http.get_inference_statistics(name)["model_stats"][0]
        http.close()
    return ready, times[0], times[1], int(stats["inference_stats"]["success"]["count"])


def main():
    parser = argparse.ArgumentParser()
    common_arguments(parser)
    args = parser.parse_args()
    expected = load_expected(args.expected)
    source = os.path.join(args.repo, args.model)
    check("model_warmup" in read(os.path.join(source, "config.pbtxt")).decode(),
          "validflow export --triton wrote no model_warmup")

    # Warm-up: a fresh server per variant, so no kernel is warm from another model.
    image_path = sorted(p for p in expected if p.endswith("/000.png"))[0]
    warm_repo, cold_repo = os.path.join(args.work, "warm-repo"), os.path.join(args.work, "cold-repo")
    config_variant(source, os.path.join(warm_repo, args.model))
    config_variant(source, os.path.join(cold_repo, args.model), warmup=False)
    cold = first_request_ms(args, cold_repo, args.model, image_path, "cold.log")
    warm = first_request_ms(args, warm_repo, args.model, image_path, "warm.log")
    print(f"warm-up: without model_warmup the first request took {cold[1]:.0f} ms (the second {cold[2]:.0f} ms, "
          f"ready after {cold[0]:.1f} s); with it {warm[1]:.0f} ms (second {warm[2]:.0f} ms, ready after "
          f"{warm[0]:.1f} s)")
    # Reported, not asserted (timings belong in benchmarks): the Detector's load-time probe (docs/reliability.md)
    # already runs the model once per instance, so on CPU model_warmup adds little; it is the documented,
    # server-visible warm-up (GPUs, future backends' lazy initialisation).
    check(cold[3] == 2 and warm[3] == 3, f"Triton counted {cold[3]} / {warm[3]} executions without / with warm-up for "
                                        f"2 requests each: the warm-up sample did not run (once) at load")

    repo = os.path.join(args.work, "serving-repo")
    config_variant(source, os.path.join(repo, args.model))
    crack = sorted(p for p in expected if "crack" in p and p.endswith("/000.png"))[0]
    lowest = min(v["score"] for v in expected.values())
    # The variant with parameters threshold (below every score) and pixel_threshold (the median of the crack's map,
    # which a first request gives) is loaded once that is known (explicit mode).
    params, threads = args.model + "_params", args.model + "_threads"
    config_variant(source, os.path.join(repo, threads), name=threads, parameters={"intra_op_threads": 1})
    sent = Sent()
    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, "serving.log"),
                          env={"VALIDFLOW_FAULT_NAN_SCORE": "1"},
                          extra_args=["--model-control-mode", "explicit", "--load-model", args.model,
                                      "--load-model", threads])
    with server:
        http = httpclient.InferenceServerClient(server.http_url, network_timeout=120.0)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        amap = infer_bytes(http, args.model, [read(crack)], outputs=SCORES + ["ANOMALY_MAP"])
        sent.add(results_of(amap, 1))
        pixel_threshold = float(np.median(amap.as_numpy("ANOMALY_MAP")[0]))
        config_variant(source, os.path.join(repo, params), name=params,
                       threshold=lowest / 2 if lowest > 0 else lowest - 1.0,
                       parameters={"pixel_threshold": repr(pixel_threshold)})
        http.load_model(params)
        check_encoded(http, grpc, args.model, expected, sent)
        check_mixed_sizes(http, args.model, expected, sent)
        check_bad_encoded(server, http, args.model, expected, sent)
        check_parameters(server, http, args.model, params, threads, expected, pixel_threshold)
        check_metrics(server, http, args.model, expected, sent)
        http.close()
        grpc.close()
    print("triton.serving: all checks passed")


if __name__ == "__main__":
    main_wrapper(main)
