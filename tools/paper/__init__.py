"""tools/reproduce_paper.py in modules: the grid runner (runner), the seed statistics (statistics), the generated
tables and claims of docs/results.md (tables), the same-session speed measurement (speed), the shared paths and
labels (config) and the command line (cli). Only the Python standard library."""
import os
import sys

# host_info.py lies beside the package, in tools/ (the folder reproduce_paper.py and the tests put on sys.path).
_TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
