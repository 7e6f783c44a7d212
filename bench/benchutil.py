"""Helpers shared by the bench_*.py modules.

Every contender is timed the way ``python -m fastbp bench`` times a step
(fastbp.bench): settle, warm up, then rounds of blocks of calls lasting about
fastbp.bench.BLOCK seconds, reported per call. The two harnesses give the same
numbers for the same work.
"""
import time

import numpy as np

from fastbp import bench as fbench
from fastbp.bench import parallel_copy

ROUNDS = 7


def copy_floor(nbytes_moved):
    """A parallel copy whose read + write traffic is nbytes_moved."""
    n = int(nbytes_moved) // 8  # float32 elements read (and as many written)
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    return lambda: parallel_copy(src, dst)


def run(benchmark, fn, group, contender):
    """Benchmark fn under group/contender; returns fn's last result."""
    benchmark.group = group
    benchmark.extra_info["contender"] = contender
    # fastbp.bench.fastbp_fit runs `steps` steps a call: the summary's ratios
    # are per step (pytest-benchmark's own table stays per call)
    benchmark.extra_info["steps"] = getattr(fn, "steps", 1)
    if not benchmark.enabled:  # --benchmark-disable: run the body once, as a test
        return benchmark(fn)
    time.sleep(fbench.SETTLE)
    k = fbench.calls_per_block(fn)
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=k, warmup_rounds=1)


def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def rng(seed=0):
    return np.random.default_rng(seed)
