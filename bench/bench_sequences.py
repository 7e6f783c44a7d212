"""fastbp as users call it, in sequences: each group beside the NumPy a user would
write and the GEMMs alone (the floor). A net of 512 x 784-1024-1024-10, float32,
ReLU hidden layers.

    forward3   three dense_forward calls       numpy: max(x W + b, 0) per layer
    backward3  the matching dense_backward     numpy: mask, dz W^T, h^T dz, sums
    predict    MLP.predict                     numpy: the same forward
    mixed      NumPy matmuls with fastbp.relu_forward between them
                                               numpy: the same loop with np.maximum
    overhead   relu_forward on (1, 10): the cost of one call (floor: np.copyto)
"""
import numpy as np
import pytest

import fastbp
from bench.benchutil import rng, run

N, SIZES = 512, [784, 1024, 1024, 10]
L = len(SIZES) - 1


def net():
    model = fastbp.MLP(SIZES, "relu", dtype=np.float32, seed=0)
    for l in range(1, L + 1):  # nonzero biases, so the bias add is real work
        model.params[f"b{l}"][...] = rng(l).standard_normal(SIZES[l]).astype(np.float32) / 10
    W = [model.params[f"W{l}"] for l in range(1, L + 1)]
    b = [model.params[f"b{l}"] for l in range(1, L + 1)]
    x = rng().standard_normal((N, SIZES[0])).astype(np.float32)
    return model, x, W, b


def numpy_forward(x, W, b):
    h = x
    for l in range(L):
        h = h @ W[l] + b[l]
        if l < L - 1:
            h = np.maximum(h, 0)
    return h


def forward_floor(x, W):
    hs = [np.empty((N, s), np.float32) for s in SIZES[1:]]

    def floor():
        h = x
        for l in range(L):
            np.matmul(h, W[l], out=hs[l])
            h = hs[l]
    return floor


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_forward3(benchmark, contender):
    _, x, W, b = net()
    hs = [np.empty((N, s), np.float32) for s in SIZES[1:]]

    def ours():
        h = x
        for l in range(L):
            h = fastbp.dense_forward(h, W[l], b[l], "relu" if l < L - 1 else None, out=hs[l])
        return h
    fns = {"fastbp": ours, "numpy": lambda: numpy_forward(x, W, b), "floor": forward_floor(x, W)}
    out = run(benchmark, fns[contender], "forward3-512x784-1024-1024-10", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, numpy_forward(x, W, b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_backward3(benchmark, contender):
    _, x, W, b = net()
    h1 = np.maximum(x @ W[0] + b[0], 0)
    h2 = np.maximum(h1 @ W[1] + b[1], 0)
    ins, outs = [x, h1, h2], [h1, h2, None]
    dy = rng(9).standard_normal((N, SIZES[-1])).astype(np.float32) / N
    dW = [np.empty_like(w) for w in W]
    db = [np.empty_like(v) for v in b]
    dh = [np.empty((N, s), np.float32) for s in SIZES[1:]]  # dh[l]: gradient of layer l's output

    def ours():
        g = dy
        for l in range(L - 1, -1, -1):
            act = None if l == L - 1 else "relu"
            dx = dh[l - 1] if l > 0 else None
            fastbp.dense_backward(g, ins[l], W[l], outs[l], act, dx=dx, dW=dW[l], db=db[l],
                                  dz=g if act else None, need_dx=l > 0)
            g = dx
        return dW, db

    def numpy():
        g, gW, gb = dy, [None] * L, [None] * L
        for l in range(L - 1, -1, -1):
            dz = g if l == L - 1 else g * (outs[l] > 0)
            gW[l], gb[l] = ins[l].T @ dz, dz.sum(axis=0)
            if l > 0:
                g = dz @ W[l].T
        return gW, gb

    def floor():  # the same five GEMMs, on dy-shaped operands
        g = dy
        for l in range(L - 1, -1, -1):
            np.matmul(ins[l].T, g, out=dW[l])
            if l > 0:
                np.matmul(g, W[l].T, out=dh[l - 1])
                g = dh[l - 1]
    fns = {"fastbp": ours, "numpy": numpy, "floor": floor}
    out = run(benchmark, fns[contender], "backward3-512x784-1024-1024-10", contender)
    if contender != "floor":
        want = numpy()
        for got, exp in zip(out[0] + out[1], want[0] + want[1]):
            np.testing.assert_allclose(got, exp, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_predict(benchmark, contender):
    model, x, W, b = net()
    fns = {"fastbp": lambda: model.predict(x), "numpy": lambda: numpy_forward(x, W, b),
           "floor": forward_floor(x, W)}
    out = run(benchmark, fns[contender], "predict-512x784-1024-1024-10", contender)
    if contender != "floor":
        np.testing.assert_allclose(out, numpy_forward(x, W, b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_mixed_loop(benchmark, contender):
    """NumPy's own GEMMs with fastbp's ReLU between them: fastbp must not slow
    NumPy's next call."""
    _, x, W, _ = net()
    hs = [np.empty((N, s), np.float32) for s in SIZES[1:]]

    def loop(relu):
        h = x
        for l in range(L):
            np.matmul(h, W[l], out=hs[l])
            h = hs[l]
            if relu is not None and l < L - 1:
                relu(h)
        return h
    fns = {"fastbp": lambda: loop(lambda h: fastbp.relu_forward(h, out=h)),
           "numpy": lambda: loop(lambda h: np.maximum(h, 0, out=h)),
           "floor": lambda: loop(None)}
    out = run(benchmark, fns[contender], "mixed-numpy+relu-512x784-1024-1024-10", contender)
    if contender == "fastbp":
        np.testing.assert_allclose(out, loop(lambda h: np.maximum(h, 0, out=h)), rtol=1e-5)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_call_overhead(benchmark, contender):
    x = rng().standard_normal((1, 10)).astype(np.float32)
    y = np.empty_like(x)
    fns = {"fastbp": lambda: fastbp.relu_forward(x, out=y),
           "numpy": lambda: np.maximum(x, 0, out=y),
           "floor": lambda: np.copyto(y, x)}
    run(benchmark, fns[contender], "overhead-relu_forward-1x10", contender)
