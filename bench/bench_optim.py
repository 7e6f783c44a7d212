"""sgd_update on 4M float32 parameters and clip_by_global_norm: fastbp vs the NumPy
reference vs a parallel copy moving the same bytes (SGD reads p and g, writes p;
the norm reads the gradients once)."""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref
from bench.benchutil import copy_floor, rng, run

n = 4 * 1024 * 1024


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_sgd_update(benchmark, contender):
    r = rng()
    p = r.standard_normal(n).astype(np.float32)
    g = r.standard_normal(n).astype(np.float32)
    p0 = p.copy()
    fns = {"fastbp": lambda: fastbp.sgd_update(p, g, 1e-6, 1e-4),
           "numpy": lambda: ref.sgd_update(p, g, 1e-6, 1e-4),
           "floor": copy_floor(3 * 4 * n)}
    run(benchmark, fns[contender], "sgd_update-4M", contender)
    if contender != "floor":
        assert not np.array_equal(p, p0)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_clip_by_global_norm(benchmark, contender):
    r = rng()
    grads = [r.standard_normal(n // 4).astype(np.float32) for _ in range(4)]
    fns = {"fastbp": lambda: fastbp.clip_by_global_norm(grads, 1e9),
           "numpy": lambda: ref.clip_by_global_norm(grads, 1e9),
           "floor": copy_floor(4 * n)}
    out = run(benchmark, fns[contender], "clip_by_global_norm-4M", contender)
    if contender != "floor":
        want = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        assert abs(out - want) <= 1e-6 * want
