"""The JSON files of the grid (results, timings, speed) and the fingerprints of features and program."""
import hashlib
import json
import os


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json_atomic(path, value):
    tmp = "%s.validflow-tmp.%d.0" % (path, os.getpid())  # the C++ writers' scheme (include/validflow/io/files.hpp)
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)

