"""``python -m fastbp bench --contention``: the training step on a busy machine.

A user's step rarely runs alone. Each contender (fastbp at its default threads,
fastbp on one thread, the NumPy reference step, PyTorch eager) is timed step by
step, only the step inside the clock, in four scenarios:

* ``quiet``: steps back to back;
* ``gap``: 200 us of the caller's own Python work between two steps (data
  loading, logging), during which fastbp's workers spin, then sleep;
* ``numpy``: a 512x512 float32 NumPy matmul between two steps (the user's own
  preprocessing, on NumPy's BLAS and its threads);
* ``neighbour``: another process keeps one core busy (a plain busy loop).

Contenders take turns in rounds within each scenario, and the table gives the
median per step, the default-threads step over the one-thread step under the
same conditions, and each step over its own quiet time.
"""
import contextlib
import subprocess
import sys
import time

import numpy as np

from . import bench

SCENARIOS = ("quiet", "gap", "numpy", "neighbour")
GAP_S = 200e-6


def _spin(seconds):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass


def _between(scenario):
    if scenario == "gap":
        return lambda: _spin(GAP_S)
    if scenario == "numpy":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((512, 512)).astype(np.float32)
        out = np.empty_like(a)
        return lambda: np.matmul(a, a, out=out)
    return None


@contextlib.contextmanager
def _neighbour(on):
    """A busy process for the block, or nothing."""
    if not on:
        yield
        return
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)  # let it take its core
        yield
    finally:
        p.kill()
        p.wait()


def contenders(size, with_torch):
    """name -> (step, fastbp's threads for it: None for the default)."""
    fns = {"fastbp": (bench.fastbp_step(size), None),
           "fastbp-1t": (bench.fastbp_step(size), 1),
           "numpy": (bench.numpy_step(size), None)}
    if with_torch:
        fns["torch"] = (bench.torch_step(size), None)
    return fns


def _block(fn, threads, k, between):
    """Seconds per step over k steps, each timed alone."""
    import fastbp

    total = 0.0
    with fastbp.local_threads(threads):
        for _ in range(k):
            if between is not None:
                between()
            t0 = time.perf_counter()
            fn()
            total += time.perf_counter() - t0
    return total / k


def run(sizes=("digits", "book", "small", "medium"), rounds=3, block=0.2, with_torch=None):
    """{size: {scenario: {contender: seconds per step}}}."""
    if with_torch is None:
        with_torch = bench.have_torch()
    out = {}
    for size in sizes:
        fns = contenders(size, with_torch)
        out[size] = {}
        for sc in SCENARIOS:
            between = _between(sc)
            samples = {name: [] for name in fns}
            with _neighbour(sc == "neighbour"):
                for _ in range(rounds):
                    for name, (fn, threads) in fns.items():
                        time.sleep(bench.SETTLE)
                        t1 = _block(fn, threads, 3, between)
                        k = max(3, int(block / max(t1 + (GAP_S if between else 0), 1e-6)))
                        samples[name].append(_block(fn, threads, k, between))
            out[size][sc] = {n: float(np.median(v)) for n, v in samples.items()}
    return out


def format_table(res):
    names = list(next(iter(next(iter(res.values())).values())))
    head = f"{'size':<7} {'contender':<10}" + "".join(f" {sc + ' ms':>13}" for sc in SCENARIOS) \
        + "".join(f" {sc + '/1t':>13}" for sc in SCENARIOS) \
        + "".join(f" {sc + '/quiet':>13}" for sc in SCENARIOS[1:])
    lines = [head, "-" * len(head)]
    for size, by in res.items():
        for n in names:
            cells = "".join(f" {by[sc][n] * 1e3:>13.4f}" for sc in SCENARIOS)
            cells += "".join(f" {by[sc][n] / by[sc]['fastbp-1t']:>12.2f}x" for sc in SCENARIOS)
            cells += "".join(f" {by[sc][n] / by['quiet'][n]:>12.2f}x" for sc in SCENARIOS[1:])
            lines.append(f"{size:<7} {n:<10}{cells}")
    return "\n".join(lines)


def main(args):
    import fastbp

    sizes = args.sizes or ["digits", "book", "small", "medium"]
    print(f"fastbp {fastbp.__version__}, {fastbp.get_num_threads()} threads by default, "
          f"BLAS {fastbp.get_blas()}; per-step medians, only the step inside the clock")
    print("scenarios: quiet (back to back), gap (200 us of Python work between steps), "
          "numpy (a 512x512 matmul between steps), neighbour (a busy process)")
    res = run(sizes)
    print(format_table(res))
    return 0
