"""pytest-benchmark suite: fastbp against fastbp.reference and a floor.

Each group holds fastbp, the pure-NumPy reference, a floor (for a training step
the same GEMMs done with NumPy into preallocated outputs; for memory-bound
kernels a copy moving the same bytes) and, when installed, PyTorch CPU.
CI runs these as plain tests with --benchmark-disable (each body runs once and
its result is checked); real timing runs are

    python -m pytest bench -q --benchmark-only --benchmark-warmup=on

and end with a table of each contender's ratio to its group's floor.
"""
import time

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.benchmark)


@pytest.fixture
def settle(request):
    """Before a timed benchmark, sleep so that the BLAS and OpenMP worker
    threads of the previous contender's libraries stop spinning (OpenBLAS
    spins for about 0.1 s after its last call) and do not steal the cores."""
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(0.3)


def pytest_terminal_summary(terminalreporter, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or config.getoption("benchmark_disable", False) or not bs.benchmarks:
        return
    groups = {}
    for b in bs.benchmarks:
        if b.stats is None or getattr(b, "has_error", False):
            continue
        groups.setdefault(b.group, {})[b.extra_info.get("contender", b.name)] = b.stats.median
    tr = terminalreporter
    tr.write_sep("-", "ratio to floor (median time / floor median); < 1 is faster than the floor")
    for g in sorted(groups):
        t = groups[g]
        if "floor" not in t:
            continue
        cells = "  ".join(f"{k} {v / t['floor']:.2f}x" for k, v in sorted(t.items()))
        tr.write_line(f"{g:<28} {cells}")
