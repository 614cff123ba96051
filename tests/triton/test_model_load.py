"""Model loading in the real Triton server (CTest triton.model_load):

  1. a backend built for a future TRITONBACKEND API (1.999) is refused at load time with a message naming both
     versions, and the server does not start;
  2. broken model configurations and model files are refused at load time with a one-line message naming the
     problem, while the good model stays loaded and keeps answering correctly.

Usage (inside the venv of scripts/triton_env.sh):
  test_model_load.py --backend-dir DIR --future-backend-dir DIR --repo REPO --model NAME --expected predictions.json
                     --work DIR
"""
import argparse
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from triton_harness import common_arguments  # noqa: E402
from vfm_files import edited, extreme_first_value, flow_weight, not_a_permutation, tensor_named  # noqa: E402
from triton_harness import (TritonServer, check, check_result, config_variant, infer_one, load_expected,  # noqa: E402
                            load_image, main_wrapper, make_client, results_of)


def future_api(args):
    repo = os.path.join(args.work, "future-repo")
    os.makedirs(repo, exist_ok=True)
    config_variant(os.path.join(args.repo, args.model), os.path.join(repo, args.model))
    server = TritonServer(repo, args.future_backend_dir, os.path.join(args.work, "future-server.log"),
                          ready_timeout=120, expect_ready=False)
    with server:
        check(server.exit_code is not None, "the server started with a backend built for TRITONBACKEND API 1.999")
    log = server.log_text()
    needle = ("validflow backend: built for TRITONBACKEND API 1.999 (needs a server with API major 1, minor >= 999); "
              "this Triton server has API 1.19")
    check(needle in log, f"the server log lacks the refusal '{needle}':\n{server.log_tail()}")
    print(f"API version: a backend built for 1.999 is refused (server exit code {server.exit_code}): {needle}")


def load(server, name):
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/{name}/load", data=b"",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, ""
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            body = json.loads(body)["error"]
        except (ValueError, KeyError):
            pass
        return e.code, body


def broken_models(args, expected):
    source = os.path.join(args.repo, args.model)
    repo = os.path.join(args.work, "broken-repo")
    if os.path.exists(repo):
        shutil.rmtree(repo)
    os.makedirs(repo)
    config_variant(source, os.path.join(repo, args.model))

    def variant(name, edit=None, files=None):
        target = config_variant(source, os.path.join(repo, name), name=name)
        if edit:
            path = os.path.join(target, "config.pbtxt")
            with open(path) as f:
                text = f.read()
            new = edit(text)
            check(new != text, f"variant {name}: the edit changed nothing")
            with open(path, "w") as f:
                f.write(new)
        if files:
            files(os.path.join(target, "1"))
        return name

    def corrupt(version_dir):
        (model_file,) = os.listdir(version_dir)
        with open(os.path.join(version_dir, model_file), "r+b") as f:
            size = f.seek(0, 2)
            f.seek(size // 2)
            f.write(b"\x00garbage\xff" * 64)
            f.truncate(size // 2 + 300)

    def model_file_edit(**edit):
        """The model file rewritten with consistent checksums (a well-formed file that lies)."""
        def apply(version_dir):
            (model_file,) = os.listdir(version_dir)
            path = os.path.join(version_dir, model_file)
            resolved = {k: (v(path) if callable(v) and k == "tensor" else v) for k, v in edit.items()}
            edited(path, path, **resolved)
        return apply

    def param(key, value):
        return lambda t: t.replace("parameters [\n", f'parameters [\n  {{ key: "{key}" value: {{ string_value: '
                                                     f'"{value}" }} }},\n', 1)

    cases = [
        (variant("bad_dtype", lambda t: t.replace("TYPE_UINT8", "TYPE_FP32", 1)),
         "config IMAGE must have data_type TYPE_UINT8, not TYPE_FP32"),
        (variant("bad_dims", lambda t: t.replace("dims: [ -1, -1, 3 ]", "dims: [ -1, -1 ]", 1)),
         "config IMAGE must have dims [-1, -1, 3], not [-1, -1]"),
        (variant("bad_output", lambda t: t.replace('name: "ANOMALY_MAP"', 'name: "HEATMAP"', 1)),
         "config output 'HEATMAP' is unknown"),
        (variant("bad_batch", lambda t: re.sub(r"dynamic_batching \{[^}]*\}\n", "",
                                               re.sub(r"max_batch_size: \d+", "max_batch_size: 0", t))),
         "config max_batch_size must be at least 1"),
        (variant("bad_param", param("treshold", "3")), "config parameter 'treshold' is unknown"),
        (variant("bad_threshold", param("threshold", "high")), "config parameter threshold must be a finite number"),
        (variant("bad_precision", lambda t: t.replace('string_value: "fp32"', 'string_value: "fp8"', 1)),
         "config parameter precision must be fp32 or bf16, not 'fp8'"),
        (variant("missing_file", files=lambda d: [os.remove(os.path.join(d, f)) for f in os.listdir(d)]),
         "does not exist"),
        (variant("corrupt_file", files=corrupt), "corrupt_file/1/model.vfm"),
        (variant("extreme_weight", files=model_file_edit(tensor=flow_weight, edit_bytes=extreme_first_value)),
         "not finite on a probe image"),
        (variant("not_a_permutation", files=model_file_edit(tensor=lambda p: tensor_named(p, "perm_0"),
                                                            edit_bytes=not_a_permutation)), "is not a permutation"),
        (variant("claims_4096_px", files=model_file_edit(edit_header=lambda h: h["meta"]["backbone"].update(
            image_size=4096))), "above the limit of 1536 px"),
        (variant("bad_input_size", param("max_input_size", "0")), "config parameter max_input_size must be a positive"),
    ]
    server = TritonServer(repo, args.backend_dir, os.path.join(args.work, "broken-server.log"),
                          extra_args=["--model-control-mode=explicit", f"--load-model={args.model}"],
                          env={"VALIDFLOW_FAULT_NAN_SCORE": "1"})  # the backend's fail-safe fault (backend.cpp)
    paths = sorted(expected)[:1]
    image = load_image(paths[0])
    with server:
        client = make_client("http", server)
        for name, needle in cases:
            status, message = load(server, name)
            check(status == 400, f"loading {name}: HTTP {status}, expected 400 ({message})")
            check(needle in message, f"loading {name}: the error does not say '{needle}': {message}")
            message = message.strip()
            check(len(message.splitlines()) == 1, f"loading {name}: the error is not one line: {message!r}")
            check("Internal:" not in message, f"loading {name}: reported as an internal error: {message}")
            check(client.is_model_ready(args.model), f"after {name} the good model is not ready")
            got = results_of(infer_one(client, "http", args.model, image, ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"]), 1)
            check_result(got[0], expected[paths[0]], 1e-5, f"the good model after {name}")
            print(f"  {name}: refused: {message[:200]}")
        # An image the model cannot judge (a NaN score, injected): an error response, never ANOMALOUS false or NaN.
        untrusted = image.copy()
        untrusted.reshape(-1)[:4] = [0xFA, 0x17, 0xFA, 0x17]
        body = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1] + list(untrusted.shape), "datatype": "UINT8",
                                       "data": untrusted.reshape(-1).tolist()}]}).encode()
        request = urllib.request.Request(f"http://{server.http_url}/v2/models/{args.model}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        check(status == 500 and "not finite" in text and "never a pass" in text,
              f"an untrusted score: HTTP {status}, {text[:300]}")
        check("NaN" not in text and "ANOMALOUS" not in text, f"an untrusted score's response carries a result: {text[:300]}")
        got = results_of(infer_one(client, "http", args.model, image, ["SCORE", "NORMALIZED_SCORE", "ANOMALOUS"]), 1)
        check_result(got[0], expected[paths[0]], 1e-5, "the good model after an untrusted score")
        print(f"  untrusted score: HTTP {status}: {text[:200]}")
        client.close()
        code = server.stop()
    check(code == 0, f"tritonserver exited with {code}")
    print(f"broken models: {len(cases)} of {len(cases)} refused at load time with a one-line message; the good model "
          f"kept answering correctly")


def main():
    parser = argparse.ArgumentParser()
    common_arguments(parser)
    parser.add_argument("--future-backend-dir", required=True)
    args = parser.parse_args()
    future_api(args)
    broken_models(args, load_expected(args.expected))
    print("triton.model_load: all checks passed")


if __name__ == "__main__":
    main_wrapper(main)
