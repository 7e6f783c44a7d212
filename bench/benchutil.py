"""Helpers shared by the bench_*.py modules."""
import numpy as np


def run(benchmark, fn, group, contender):
    """Benchmark fn under group/contender; returns fn's last result."""
    benchmark.group = group
    benchmark.extra_info["contender"] = contender
    return benchmark(fn)


def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def rng(seed=0):
    return np.random.default_rng(seed)
