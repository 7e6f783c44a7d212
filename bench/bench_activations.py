"""Activation masks (backward from the forward output) and forwards on
(4096, 1024) float32: fastbp vs reference vs a parallel copy (fastbp._core.copy) moving the same bytes
(a backward reads dy and y and writes dx: a memcpy of 1.5 arrays)."""
import numpy as np
import pytest

import fastbp
from fastbp import _core
from fastbp import reference as ref
from bench.benchutil import rng, run

SHAPE = (4096, 1024)
ACTS = ["relu", "sigmoid", "tanh"]


def _floor(n_arrays_moved):
    """A copy whose read+write traffic equals n_arrays_moved arrays of SHAPE."""
    n = int(np.prod(SHAPE) * n_arrays_moved / 2)
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    return lambda: _core.copy(src, dst)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_backward_mask(benchmark, settle, act, contender):
    r = rng()
    y = getattr(ref, f"{act}_forward")(r.standard_normal(SHAPE).astype(np.float32))
    dy = r.standard_normal(SHAPE).astype(np.float32)
    dx = np.empty_like(dy)
    fns = {"fastbp": lambda: getattr(fastbp, f"{act}_backward")(dy, y, out=dx),
           "numpy": lambda: getattr(ref, f"{act}_backward")(dy, y),
           "floor": _floor(3)}
    out = run(benchmark, fns[contender], f"{act}_backward", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, getattr(ref, f"{act}_backward")(dy, y), rtol=1e-6)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_forward(benchmark, settle, act, contender):
    x = rng().standard_normal(SHAPE).astype(np.float32)
    y = np.empty_like(x)
    fns = {"fastbp": lambda: getattr(fastbp, f"{act}_forward")(x, out=y),
           "numpy": lambda: getattr(ref, f"{act}_forward")(x),
           "floor": _floor(2)}
    out = run(benchmark, fns[contender], f"{act}_forward", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, getattr(ref, f"{act}_forward")(x), rtol=1e-5, atol=1e-7)
