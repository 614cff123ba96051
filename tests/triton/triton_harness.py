"""Starts and stops the real Triton Inference Server (2.51, from the PyPI package nvidia-pytriton) for the validflow
backend's tests and benchmarks, and holds what they share: images, expected results, comparisons.

Runs inside the virtual environment of scripts/triton_env.sh. Everything binds to 127.0.0.1 on free ports.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np


class TestFailure(AssertionError):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def server_binary():
    import pytriton  # nvidia-pytriton

    path = os.path.join(os.path.dirname(pytriton.__file__), "tritonserver", "bin", "tritonserver")
    check(os.access(path, os.X_OK), f"the tritonserver binary of nvidia-pytriton is missing: {path}")
    return path


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TritonServer:
    """One tritonserver process. Use as a context manager; stop() returns the exit code."""

    def __init__(self, repository, backend_dir, log_path, extra_args=(), ready_timeout=180, expect_ready=True,
                 env=None):
        self.env = dict(os.environ, **(env or {}))
        self.repository = repository
        self.backend_dir = backend_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.expect_ready = expect_ready
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.process = None
        self.exit_code = None

    @property
    def http_url(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    def command(self):
        # setpriv (util-linux): the server gets SIGTERM when this process dies (a CTest timeout kills the test
        # script with SIGKILL): no orphaned server keeps the CPU, memory and ports.
        launcher = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        return launcher + [server_binary(), "--model-repository", self.repository, "--backend-directory", self.backend_dir,
                "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
                "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--exit-timeout-secs", "30"] + self.extra_args

    def start(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=self.env)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                if self.expect_ready:
                    raise TestFailure(f"tritonserver exited with {self.exit_code} before it was ready; "
                                      f"log {self.log_path}:\n{self.log_tail()}")
                return self
            if self.http_status("/v2/health/ready") == 200:
                return self
            time.sleep(0.25)
        self.kill()
        raise TestFailure(f"tritonserver was not ready within {self.ready_timeout} s; log {self.log_path}:\n"
                          f"{self.log_tail()}")

    def http_status(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
            return None

    def http_json(self, path, body=None):
        request = urllib.request.Request(f"http://{self.http_url}{path}", data=body,
                                         method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stop(self, timeout=90):
        """SIGTERM, as `docker stop` or Kubernetes send it; returns the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            self.exit_code = self.process.returncode if self.process else None
            return self.exit_code
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TestFailure(f"tritonserver did not exit within {timeout} s of SIGTERM; log {self.log_path}")
        finally:
            self._log.close()
        return self.exit_code

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.exit_code is None:
                self.stop()
        finally:
            self.kill()


# ---- Images and expected results ----

def load_image(path):
    """An image file as uint8 [H, W, 3] RGB, as `validflow predict` reads it (PNG decoding is lossless)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_expected(path):
    """validflow predict's predictions.json -> {absolute image path: {score, normalized_score, anomalous}}."""
    with open(path) as f:
        data = json.load(f)
    records = data["images"]
    expected = {}
    for r in records:
        expected[os.path.abspath(r["path"])] = {
            "score": float(r["score"]),
            "normalized_score": float(r["normalized_score"]),
            "anomalous": bool(r["anomalous"]),
        }
    check(expected, f"{path} holds no predictions")
    return expected


def pick_images(expected, count):
    """`count` image paths spread over the sorted list (all defect types and good ones), plus every image whose
    size differs from the first one's."""
    # Raw-pixel tests decode with PIL: only the 8-bit PNGs (lossless, so PIL's pixels are OpenCV's); the other
    # encodings are tested through IMAGE_BYTES, decoded by the backend itself.
    paths = sorted(p for p in expected if p.endswith(".png") and "gray16" not in p)
    first = load_image(paths[0]).shape
    step = max(1, len(paths) // count)
    chosen = paths[::step][:count]
    return chosen + [p for p in paths if p not in chosen and load_image(p).shape != first]


def relative_difference(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def check_result(got, want, tolerance, what):
    d = relative_difference(got["score"], want["score"])
    check(d <= tolerance, f"{what}: score {got['score']!r} differs from {want['score']!r} (relative {d:.2e} > "
                          f"{tolerance})")
    # The normalised score lives in [0, 1] and is a steep linear map of the score near its anchors: compared in
    # absolute terms (a relative test would blow a 1e-7 score difference up near 0).
    d = abs(got["normalized_score"] - want["normalized_score"])
    check(d <= tolerance, f"{what}: normalized_score {got['normalized_score']!r} differs from "
                          f"{want['normalized_score']!r} (absolute {d:.2e} > {tolerance})")
    # Scores equal within `tolerance` (different batching or thread counts reorder float sums) may fall on either
    # side of a threshold they straddle: a differing decision is accepted only there, where both normalized
    # scores are at 0.5 (the threshold) within the tolerance. Anywhere else it is a wrong decision.
    at_threshold = all(abs(r["normalized_score"] - 0.5) <= 2 * tolerance for r in (got, want))
    check(got["anomalous"] == want["anomalous"] or at_threshold,
          f"{what}: anomalous {got['anomalous']} != {want['anomalous']} (normalized scores "
          f"{got['normalized_score']!r} / {want['normalized_score']!r}, not at the threshold)")


def results_of(response, batch):
    """(score, normalized_score, anomalous) per item of a tritonclient InferResult."""
    score = response.as_numpy("SCORE").reshape(batch)
    normalized = response.as_numpy("NORMALIZED_SCORE").reshape(batch)
    anomalous = response.as_numpy("ANOMALOUS").reshape(batch)
    return [{"score": float(score[i]), "normalized_score": float(normalized[i]), "anomalous": bool(anomalous[i])}
            for i in range(batch)]


# ---- Model repository variants (benchmarks and tests) ----

def config_variant(source_dir, target_dir, name=None, instances=None, dynamic_batching=None, threshold=None,
                   max_batch_size=None, warmup=None, parameters=None):
    """Copies a model directory written by `validflow export --triton` and edits its config.pbtxt."""
    if os.path.exists(target_dir):
        shutil.rmtree(target_dir)
    shutil.copytree(source_dir, target_dir)
    path = os.path.join(target_dir, "config.pbtxt")
    with open(path) as f:
        text = f.read()

    def substitute(pattern, replacement, what):
        nonlocal text
        text, n = re.subn(pattern, replacement, text, flags=re.S | re.M)
        check(n == 1, f"config.pbtxt of {source_dir}: cannot set {what} (pattern {pattern!r} found {n} times)")

    if name is not None:
        substitute(r'^name: "[^"]*"', f'name: "{name}"', "the name")
    if instances is not None:
        substitute(r"(instance_group \[\s*\{\s*count: )\d+", rf"\g<1>{instances}", "the instance count")
    if dynamic_batching is False:
        substitute(r"dynamic_batching \{[^}]*\}\n", "", "dynamic batching off")
    if max_batch_size is not None:
        substitute(r"^max_batch_size: \d+", f"max_batch_size: {max_batch_size}", "max_batch_size")
    if threshold is not None:
        substitute(r"parameters \[\n", f'parameters [\n  {{\n    key: "threshold"\n    value: {{ string_value: '
                                       f'"{threshold!r}" }}\n  }},\n', "the threshold")
    for key, value in (parameters or {}).items():
        substitute(r"parameters \[\n", f'parameters [\n  {{\n    key: "{key}"\n    value: {{ string_value: '
                                       f'"{value}" }}\n  }},\n', f"parameter {key}")
    if warmup is False:
        substitute(r"model_warmup \[\n.*?\n\]\n", "", "no model_warmup")
    with open(path, "w") as f:
        f.write(text)
    return target_dir


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100.0
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def common_arguments(parser):
    """The arguments every server test takes from CTest: backend, repository, model, expected results, work folder."""
    parser.add_argument("--backend-dir", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--expected", required=True, help="validflow predict's predictions.json")
    parser.add_argument("--work", required=True)
    return parser


def expected_and_images(args):
    """validflow predict's results (args.expected) and up to args.max_images of its images, decoded."""
    expected = load_expected(args.expected)
    return expected, {p: load_image(p) for p in pick_images(expected, args.max_images)}


def main_wrapper(main):
    """Runs a test's main(): prints FAILED and the reason on a TestFailure, exits non-zero."""
    try:
        main()
    except TestFailure as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)


# ---- Load ----

def make_client(protocol, server):
    if protocol == "http":
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(server.http_url, network_timeout=300.0, connection_timeout=60.0)
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url)


def infer_one(client, protocol, model, image, outputs):
    if protocol == "http":
        import tritonclient.http as m
    else:
        import tritonclient.grpc as m
    batch = image[None]
    i = m.InferInput("IMAGE", list(batch.shape), "UINT8")
    i.set_data_from_numpy(batch)
    return client.infer(model, [i], outputs=[m.InferRequestedOutput(o) for o in outputs])


def run_load(server, model, images, expected, clients, requests, protocols, deadline_s, tolerance=1e-5,
             outputs=("SCORE", "NORMALIZED_SCORE", "ANOMALOUS")):
    """`clients` threads, each with its own client (protocols[k % len(protocols)]), each sending `requests` one-image
    requests (images in turn, each thread from its own offset). Every response is checked against expected[path].
    Stops at the deadline. Returns counts, throughput and latency percentiles (ms)."""
    import threading

    paths = list(images)
    lock = threading.Lock()
    latencies, failures = [], []
    done = [0] * clients
    stop_at = time.monotonic() + deadline_s

    def worker(k):
        protocol = protocols[k % len(protocols)]
        client = make_client(protocol, server)
        try:
            for n in range(requests):
                if time.monotonic() > stop_at:
                    return
                path = paths[(k * 7 + n) % len(paths)]
                t0 = time.perf_counter()
                try:
                    r = infer_one(client, protocol, model, images[path], outputs)
                    got = results_of(r, 1)[0]
                    elapsed = time.perf_counter() - t0
                    check_result(got, expected[path], tolerance, f"{protocol} client {k} request {n}")
                    with lock:
                        latencies.append(elapsed)
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    with lock:
                        failures.append(f"{protocol} client {k} request {n}: {' '.join(str(e).split())[:200]}")
                done[k] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    sent = sum(done)
    return {
        "clients": clients, "requests": clients * requests, "sent": sent, "ok": len(latencies),
        "failures": failures, "wall_s": wall, "images_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
        "timed_out": sent < clients * requests,
    }


def metrics_text(server):
    """The Prometheus text of the server's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30) as response:
        return response.read().decode()


def metric_values(text, name, **labels):
    """{label string: value} of the samples of metric `name` whose labels include `labels`."""
    values = {}
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        label_text = m.group(2) or ""
        have = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            values[label_text] = float(m.group(3))
    return values


def batching_stats(server, model):
    """(requests, executions) Triton counted for the model: their ratio is the mean dynamic batch."""
    stats = server.http_json(f"/v2/models/{model}/stats")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])
