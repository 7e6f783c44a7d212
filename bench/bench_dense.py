"""Dense layer forward/backward per activation at (N, I, O) = (512, 1024, 1024):
fastbp vs reference vs the GEMMs alone (NumPy, preallocated)."""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref
from bench.benchutil import rng, run

N, I, O = 512, 1024, 1024
ACTS = [None, "relu", "sigmoid", "tanh"]


def data(dtype=np.float32):
    r = rng()
    x = r.standard_normal((N, I)).astype(dtype)
    W = (r.standard_normal((I, O)) * 0.03).astype(dtype)
    b = r.standard_normal(O).astype(dtype)
    dy = r.standard_normal((N, O)).astype(dtype)
    return x, W, b, dy


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_dense_forward(benchmark, settle, act, contender):
    x, W, b, _ = data()
    y = np.empty((N, O), np.float32)
    fns = {"fastbp": lambda: fastbp.dense_forward(x, W, b, act, out=y),
           "numpy": lambda: ref.dense_forward(x, W, b, act),
           "floor": lambda: np.matmul(x, W, out=y)}
    out = run(benchmark, fns[contender], f"dense_forward-{act}", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, ref.dense_forward(x, W, b, act), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
@pytest.mark.parametrize("act", ACTS)
def test_dense_backward(benchmark, settle, act, contender):
    x, W, b, dy = data()
    y = ref.dense_forward(x, W, b, act)
    dx, dW, db, dz = (np.empty_like(x), np.empty_like(W), np.empty_like(b),
                      np.empty_like(dy))

    def floor():
        np.matmul(dy, W.T, out=dx)
        np.matmul(x.T, dy, out=dW)
    fns = {"fastbp": lambda: fastbp.dense_backward(dy, x, W, y, act, dx=dx, dW=dW, db=db, dz=dz),
           "numpy": lambda: ref.dense_backward(dy, x, W, y, act),
           "floor": floor}
    out = run(benchmark, fns[contender], f"dense_backward-{act}", contender)
    if contender != "floor":
        for got, want in zip(out, ref.dense_backward(dy, x, W, y, act)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
