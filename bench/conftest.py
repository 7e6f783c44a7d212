"""pytest-benchmark suite: fastbp against fastbp.reference and a floor.

Each group holds fastbp, the pure-NumPy reference (or the NumPy a user would
write), a floor (for dense layers and steps the same GEMMs done with NumPy into
preallocated outputs, and for the training step the same products called from C
through each installed BLAS provider, the best of them the floor; for memory-bound kernels a parallel copy moving the same
bytes) and, when installed, PyTorch CPU. CI runs these as plain tests with
--benchmark-disable (each body runs once and its result is checked); real
timing runs are

    python -m pytest bench -q --benchmark-only

and end with a table of each contender's ratio to its group's floor, with the
spread of its rounds (interquartile range over median).
"""
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.benchmark)


def pytest_terminal_summary(terminalreporter, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or config.getoption("benchmark_disable", False) or not bs.benchmarks:
        return
    groups = {}
    for b in bs.benchmarks:
        if b.stats is None or getattr(b, "has_error", False):
            continue
        s = b.stats
        steps = b.extra_info.get("steps", 1)  # a call that runs several steps
        groups.setdefault(b.group, {})[b.extra_info.get("contender", b.name)] = (
            s.median / steps, s.iqr / s.median if s.median else 0.0)
    tr = terminalreporter
    tr.write_sep("-", "ratio to floor (median time / floor median; < 1 is faster than the "
                 "floor); (+-x%) is the contender's spread, IQR / median")
    for g in sorted(groups):
        t = groups[g]
        floors = {k: v[0] for k, v in t.items() if k == "floor" or k.startswith("floor-")}
        if not floors:
            continue
        fl = min(floors.values())  # the best provider's floor: the machine's limit
        cells = "  ".join(f"{k} {m / fl:.2f}x (+-{100 * sp:.0f}%)"
                          for k, (m, sp) in sorted(t.items()))
        tr.write_line(f"{g:<34} {cells}")
    peers = {g: t for g, t in groups.items()
             if not any(k.startswith("floor") for k in t) and "sklearn" in t}
    if peers:
        tr.write_sep("-", "speed-up over scikit-learn (its median time / the contender's)")
        for g in sorted(peers):
            t = peers[g]
            sk = t["sklearn"][0]
            cells = "  ".join(f"{k} {sk / m:.2f}x (+-{100 * sp:.0f}%)"
                              for k, (m, sp) in sorted(t.items()) if k != "sklearn")
            tr.write_line(f"{g:<34} {cells}")
