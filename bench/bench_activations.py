"""Activation forwards and backward masks (from the forward output) on
(4096, 1024) float32: fastbp vs the NumPy reference vs a parallel copy moving the
same bytes (a forward reads x and writes y: one array each way; a backward reads
dy and y and writes dx)."""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref
from bench.benchutil import copy_floor, rng, run

SHAPE = (4096, 1024)
NBYTES = int(np.prod(SHAPE)) * 4
ACTS = ["relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_backward_mask(benchmark, act, contender):
    r = rng()
    y = getattr(ref, f"{act}_forward")(r.standard_normal(SHAPE).astype(np.float32))
    dy = r.standard_normal(SHAPE).astype(np.float32)
    dx = np.empty_like(dy)
    fns = {"fastbp": lambda: getattr(fastbp, f"{act}_backward")(dy, y, out=dx),
           "numpy": lambda: getattr(ref, f"{act}_backward")(dy, y),
           "floor": copy_floor(3 * NBYTES)}
    out = run(benchmark, fns[contender], f"{act}_backward", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, getattr(ref, f"{act}_backward")(dy, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_forward(benchmark, act, contender):
    x = rng().standard_normal(SHAPE).astype(np.float32)
    y = np.empty_like(x)
    fns = {"fastbp": lambda: getattr(fastbp, f"{act}_forward")(x, out=y),
           "numpy": lambda: getattr(ref, f"{act}_forward")(x),
           "floor": copy_floor(2 * NBYTES)}
    out = run(benchmark, fns[contender], f"{act}_forward", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, getattr(ref, f"{act}_forward")(x), rtol=1e-5, atol=1e-7)
