"""Dense layer forward and backward, as one call each, at the sizes of
fastbp.bench's steps: fastbp vs the NumPy reference vs the GEMMs alone (NumPy's
matmul into preallocated outputs: the floor).

    forward  y = act(x W + b)                     floor: x W
    backward dz = dy act'(y); dx = dz W^T; dW = x^T dz; db   floor: dy W^T, x^T dy
"""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref
from bench.benchutil import rng, run

SIZES = {"32x784-100": (32, 784, 100), "128x784-512": (128, 784, 512),
         "512x1024-1024": (512, 1024, 1024)}
ACTS = [None, "relu", "sigmoid", "tanh"]
DTYPES = {"f32": np.float32, "f64": np.float64}
CONTENDERS = ["fastbp", "numpy", "floor"]


def data(N, I, O, dtype):
    r = rng()
    x = r.standard_normal((N, I)).astype(dtype)
    W = (r.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    b = r.standard_normal(O).astype(dtype)
    dy = r.standard_normal((N, O)).astype(dtype)
    return x, W, b, dy


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("size", list(SIZES))
def test_dense_forward(benchmark, size, dt, act, contender):
    N, I, O = SIZES[size]
    dtype = DTYPES[dt]
    x, W, b, _ = data(N, I, O, dtype)
    y = np.empty((N, O), dtype)
    fns = {"fastbp": lambda: fastbp.dense_forward(x, W, b, act, out=y),
           "numpy": lambda: ref.dense_forward(x, W, b, act),
           "floor": lambda: np.matmul(x, W, out=y)}
    out = run(benchmark, fns[contender], f"dense_forward-{size}-{dt}-{act}", contender)
    if contender != "floor":
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(out, ref.dense_forward(x, W, b, act), rtol=tol, atol=tol)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("size", list(SIZES))
def test_dense_backward(benchmark, size, dt, act, contender):
    N, I, O = SIZES[size]
    dtype = DTYPES[dt]
    x, W, b, dy = data(N, I, O, dtype)
    y = ref.dense_forward(x, W, b, act)
    dx, dW, db, dz = (np.empty_like(x), np.empty_like(W), np.empty_like(b),
                      np.empty_like(dy))

    def floor():
        np.matmul(dy, W.T, out=dx)
        np.matmul(x.T, dy, out=dW)
    fns = {"fastbp": lambda: fastbp.dense_backward(dy, x, W, y, act, dx=dx, dW=dW, db=db, dz=dz),
           "numpy": lambda: ref.dense_backward(dy, x, W, y, act),
           "floor": floor}
    out = run(benchmark, fns[contender], f"dense_backward-{size}-{dt}-{act}", contender)
    if contender != "floor":
        tol = 1e-3 if dtype == np.float32 else 1e-10
        for got, want in zip(out, ref.dense_backward(dy, x, W, y, act)):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
