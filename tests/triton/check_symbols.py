"""The backend library against the real server library (CTest triton.symbols): every Triton symbol that
libtriton_validflow.so imports (declared in backends/triton/triton_c_api.h) is exported by Triton 2.51's
libtritonserver, and the backend exports the TRITONBACKEND entry points and nothing else.

Usage (inside the venv of scripts/triton_env.sh): check_symbols.py BACKEND_LIBRARY
"""
import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton_harness import check, main_wrapper  # noqa: E402

ENTRY_POINTS = {"TRITONBACKEND_Initialize", "TRITONBACKEND_Finalize", "TRITONBACKEND_ModelInitialize",
                "TRITONBACKEND_ModelFinalize", "TRITONBACKEND_ModelInstanceInitialize",
                "TRITONBACKEND_ModelInstanceFinalize", "TRITONBACKEND_ModelInstanceExecute"}


def dynamic_symbols(library, defined):
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, library], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def main():
    backend = sys.argv[1]
    import pytriton

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(pytriton.__file__)), "nvidia_pytriton.libs",
                                  "libtritonserver*.so*"))
    check(len(libs) == 1, f"expected one libtritonserver in nvidia_pytriton.libs, found {libs}")
    server_exports = dynamic_symbols(libs[0], True)
    imports = {s for s in dynamic_symbols(backend, False) if s.startswith("TRITON")}
    missing = sorted(imports - server_exports)
    check(not missing, f"the backend imports symbols the server does not export: {missing}")
    exports = {s for s in dynamic_symbols(backend, True) if not s.startswith("_")}
    check(exports == ENTRY_POINTS, f"the backend exports {sorted(exports ^ ENTRY_POINTS)} beyond/short of the "
                                   f"entry points")
    print(f"symbols: all {len(imports)} Triton functions the backend imports are exported by {os.path.basename(libs[0])}; "
          f"the backend exports exactly the {len(ENTRY_POINTS)} TRITONBACKEND entry points")


if __name__ == "__main__":
    main_wrapper(main)
