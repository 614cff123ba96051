#!/usr/bin/env python3
"""Golden files of FrEIA 0.2 and anomalib's AllInOneBlock for the C++ parity test (tests/test_freia.cpp).

Builds small SequenceINNs with the real FrEIA (and anomalib's vendored AllInOneBlock), gives every learned
parameter random non-trivial values (global affine and subnets away from their initialisation; ActNorm
initialised from data, then moved), and writes one `torch.save` file per case and precision:

    inn.module_list.K.*   the SequenceINN's state dict under the prefix "inn." (as inside a larger model)
    x, c0                 input and condition (c0 absent for unconditional cases)
    z, log_det            inn(x, c=[c0])
    z_in, x_rev, log_det_rev   inn(z_in, c=[c0], rev=True)
    step.K.out, step.K.log_det   block K alone on step.(K-1).out (x for K = 0), for per-block figures

The C++ test builds the same networks from validflow's blocks (its table must match CASES below), imports the
weights with load_freia_sequence and compares. Run by hand in a virtual environment (CI uses the committed files):

    python3 -m venv /tmp/freia && /tmp/freia/bin/pip install torch FrEIA==0.2 scipy numpy
    /tmp/freia/bin/pip download --no-deps anomalib==2.7.0 -d /tmp/anomalib
    /tmp/freia/bin/python tools/freia_parity.py --anomalib-wheel /tmp/anomalib/anomalib-2.7.0-py3-none-any.whl \\
        --out tests/golden/freia
"""
import argparse
import importlib.metadata
import importlib.util
import math
import os
import sys
import tempfile
import zipfile

import torch
from torch import nn

import FrEIA.framework as Ff
import FrEIA.modules as Fm

ANOMALIB_BLOCK = "anomalib/models/components/flow/all_in_one_block.py"


def anomalib_all_in_one(wheel):
    """anomalib's AllInOneBlock, loaded from the wheel's one file (anomalib itself needs far more packages)."""
    folder = tempfile.mkdtemp()
    with zipfile.ZipFile(wheel) as archive:
        path = archive.extract(ANOMALIB_BLOCK, folder)
    spec = importlib.util.spec_from_file_location("anomalib_all_in_one_block", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AllInOneBlock


def subnet_fc(c_in, c_out):
    """CFlow-AD's subnet_fc (validflow::FcSubnet with its defaults)."""
    return nn.Sequential(nn.Linear(c_in, 2 * c_in), nn.ReLU(), nn.Linear(2 * c_in, c_out))


def subnet_conv(kernel, hidden=None):
    """FastFlow's subnet_conv (validflow::Conv2dSubnet; hidden None = c_in, FastFlow's hidden_ratio 1.0)."""
    def make(c_in, c_out):
        h = hidden or c_in
        return nn.Sequential(nn.Conv2d(c_in, h, kernel, padding="same"), nn.ReLU(),
                             nn.Conv2d(h, c_out, kernel, padding="same"))
    return make


def all_in_one_vectors(block):
    return [dict(module=block, cond=0, subnet_constructor=subnet_fc, affine_clamping=1.9),
            dict(module=block, cond=0, subnet_constructor=subnet_fc, global_affine_type="SIGMOID",
                 global_affine_init=0.8, reverse_permutation=True),
            dict(module=block, cond=0, subnet_constructor=subnet_fc, global_affine_type="EXP",
                 learned_householder_permutation=2),
            dict(module=block, cond=0, subnet_constructor=subnet_fc, gin_block=True, permute_soft=True)]


def all_in_one_images(block):
    return [dict(module=block, subnet_constructor=subnet_conv(3 if k % 2 == 0 else 1), affine_clamping=2.0)
            for k in range(3)]


def cases(anomalib_block):
    """name -> (input shape, condition shape or None, blocks). Keep in step with kCases in tests/test_freia.cpp."""
    return {
        "freia_allinone_vectors": ((7,), (3,), all_in_one_vectors(Fm.AllInOneBlock)),
        "freia_allinone_images": ((5, 4, 4), None, all_in_one_images(Fm.AllInOneBlock)),
        "anomalib_allinone_vectors": ((7,), (3,), all_in_one_vectors(anomalib_block)),
        "anomalib_allinone_images": ((5, 4, 4), None, all_in_one_images(anomalib_block)),
        "freia_couplings_vectors": ((5,), (2,), [
            dict(module=Fm.GLOWCouplingBlock, cond=0, subnet_constructor=subnet_fc, clamp=1.5),
            dict(module=Fm.PermuteRandom, seed=2),
            dict(module=Fm.RNVPCouplingBlock, cond=0, subnet_constructor=subnet_fc, clamp_activation="TANH"),
            dict(module=Fm.ActNorm),
            dict(module=Fm.GLOWCouplingBlock, cond=0, subnet_constructor=subnet_fc, clamp_activation="SIGMOID",
                 split_len=0.4)]),
        "freia_couplings_images": ((6, 3, 3), None, [
            dict(module=Fm.GLOWCouplingBlock, subnet_constructor=subnet_conv(3, hidden=6)),
            dict(module=Fm.PermuteRandom, seed=5),
            dict(module=Fm.RNVPCouplingBlock, subnet_constructor=subnet_conv(1, hidden=4))]),
    }


def build(shape, cond_shape, blocks):
    inn = Ff.SequenceINN(*shape)
    for spec in blocks:
        spec = dict(spec)
        module = spec.pop("module")
        cond = spec.pop("cond", None)
        if cond is not None:
            inn.append(module, cond=cond, cond_shape=cond_shape, **spec)
        else:
            inn.append(module, **spec)
    return inn


def randomize(inn, x, c):
    """Non-trivial values for every learned parameter (fixed permutation matrices stay as they are)."""
    with torch.no_grad():
        inn(x, c=c)  # ActNorm initialises from this batch
        for name, p in inn.named_parameters():
            if not p.requires_grad or not p.is_floating_point():
                continue
            if name.endswith("global_scale"):
                p.add_(torch.randn_like(p) * 0.3)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))
            else:
                p.normal_(0.0, 0.3)


def block_steps(inn, x, c):
    """Each block alone: step.K.out / step.K.log_det of module K on step.(K-1).out (x for K = 0), for the
    per-block parity figures."""
    steps, h = {}, (x,)
    for k, module in enumerate(inn.module_list):
        if inn.conditions[k] is None:
            h, j = module(h, rev=False)
        else:
            h, j = module(h, c=[c[inn.conditions[k]]], rev=False)
        steps["step.%d.out" % k] = h[0].clone()
        steps["step.%d.log_det" % k] = (torch.zeros(x.shape[0], dtype=x.dtype) + j).clone()
    return steps


def write_case(name, shape, cond_shape, blocks, dtype, out_dir, seed):
    torch.manual_seed(seed)
    import numpy as np
    np.random.seed(seed)
    batch = 3
    inn = build(shape, cond_shape, blocks).to(dtype)  # built in float32: anomalib's block needs that
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # FrEIA's Householder product multiplies by torch.eye in the default dtype
    try:
        x = torch.randn(batch, *shape)
        c = [torch.randn(batch, *cond_shape[:1], *shape[1:])] if cond_shape else []
        randomize(inn, x, c)
        inn.eval()
        with torch.no_grad():
            z, log_det = inn(x, c=c)
            z_in = torch.randn_like(z)
            x_rev, log_det_rev = inn(z_in, c=c, rev=True)
            steps = block_steps(inn, x, c)
    finally:
        torch.set_default_dtype(previous)
    record = {"inn." + key: value.detach().clone() for key, value in inn.state_dict().items()}
    record.update({"x": x, "z": z, "log_det": log_det.reshape(batch), "z_in": z_in, "x_rev": x_rev,
                   "log_det_rev": log_det_rev.reshape(batch)})
    record.update(steps)
    if c:
        record["c0"] = c[0]
    suffix = "fp64" if dtype == torch.float64 else "fp32"
    path = os.path.join(out_dir, "%s_%s.pt" % (name, suffix))
    torch.save(record, path + ".tmp")
    os.replace(path + ".tmp", path)
    print("freia_parity: %s (%d tensors, log-det %s)" % (path, len(record), log_det.tolist()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anomalib-wheel", required=True, help="anomalib-2.x wheel (pip download --no-deps)")
    parser.add_argument("--out", required=True, help="folder for the golden files")
    args = parser.parse_args()
    version = importlib.metadata.version("FrEIA")
    if version != "0.2":
        sys.exit("freia_parity: FrEIA 0.2 expected, found %s" % version)
    os.makedirs(args.out, exist_ok=True)
    block = anomalib_all_in_one(args.anomalib_wheel)
    for seed, (name, (shape, cond_shape, blocks)) in enumerate(sorted(cases(block).items())):
        for dtype in (torch.float32, torch.float64):
            write_case(name, shape, cond_shape, blocks, dtype, args.out, seed)


if __name__ == "__main__":
    main()
