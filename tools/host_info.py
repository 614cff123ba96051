"""The host's CPU as the benchmark and result files record it (one reader of /proc/cpuinfo)."""
import os
import platform


def _cpuinfo_field(name):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model():
    """The CPU's model name as lscpu shows it, else the machine type."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_description():
    """Model, CPU count and the vector-instruction flags (avx*, amx*, fma*) that decide kernel speed."""
    flags = [f for f in _cpuinfo_field("flags").split() if f.startswith(("avx", "amx", "fma"))]
    return "%s, %d CPUs, %s" % (cpu_model(), os.cpu_count() or 0, " ".join(sorted(flags)))
