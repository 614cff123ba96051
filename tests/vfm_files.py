"""validflow's own container (include/validflow/io/tensor_archive.hpp) read and rewritten from Python, for the tests
that feed the program and the Triton backend well-formed files that lie (checksums recomputed): the bad-input table
(tests/cli/bad_inputs.py) and the Triton model-load test (tests/triton/test_model_load.py)."""
import json
import struct
import zlib


def read_archive(path):
    b = open(path, "rb").read()
    header_len = struct.unpack_from("<Q", b, 16)[0]
    header = json.loads(b[24:24 + header_len])
    payload = b[(24 + header_len + 63) // 64 * 64:]
    return b[:12], header, payload


def write_archive(path, prefix, header, payload):
    """Rewrites a validflow file with consistent checksums (a well-formed file that lies)."""
    for table in ("tensors", "blobs"):
        for e in header[table]:
            e["crc32"] = zlib.crc32(payload[e["offset"]:e["offset"] + e["size"]]) & 0xFFFFFFFF
    text = json.dumps(header).encode()
    out = prefix[:12] + struct.pack("<IQ", zlib.crc32(text) & 0xFFFFFFFF, len(text)) + text
    out += b"\0" * ((len(out) + 63) // 64 * 64 - len(out))
    open(path, "wb").write(out + payload)


def edited(src, dst, edit_header=None, tensor=None, edit_bytes=None):
    prefix, header, payload = read_archive(src)
    if edit_header:
        edit_header(header)
    if tensor:
        e = next(e for e in header["tensors"] if e["name"] == tensor)
        payload = payload[:e["offset"]] + edit_bytes(payload[e["offset"]:e["offset"] + e["size"]]) + \
            payload[e["offset"] + e["size"]:]
    write_archive(dst, prefix, header, payload)


def flow_weight(path):
    """The name of the first 4-D float32 tensor of a model file's flow (a conv weight)."""
    return next(e["name"] for e in read_archive(path)[1]["tensors"] if e["name"].startswith("flow.")
                and e["dtype"] == "float32" and len(e["shape"]) == 4)


def extreme_first_value(b):
    """A float32 tensor's bytes with its first value 3e38: finite, but the flow overflows."""
    return struct.pack("<f", 3e38) + b[4:]


def not_a_permutation(b):
    """An int64 permutation's bytes with its first entry a copy of the second (one channel twice, one never)."""
    values = list(struct.unpack("<%dq" % (len(b) // 8), b))
    values[0] = values[1]
    return struct.pack("<%dq" % len(values), *values)


def tensor_named(path, suffix):
    return next(e["name"] for e in read_archive(path)[1]["tensors"] if e["name"].endswith(suffix))
