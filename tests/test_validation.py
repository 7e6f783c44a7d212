"""The cross-cutting input-handling suite: what every entry point accepts or
refuses alike (Python lists, big-endian arrays, the out-overlap test shared
by all kernels).

The per-kernel input checks (bad shapes, dtypes, buffers, labels, limits)
live in each concern's file under "# ---- input checks ----":
test_dense.py, test_losses.py, test_optim.py.
"""

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import DTYPES, assert_close, dense_inputs, raises

f64 = np.float64


# ---------------------------------------------------------------------------
# accepted inputs: Python lists, big-endian arrays
# ---------------------------------------------------------------------------

def test_python_lists_of_floats_are_accepted():
    x = [[1.0, 2.0], [3.0, -4.0]]
    W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]
    b = [0.1, 0.2, 0.3]
    y = fastbp.dense_forward(x, W, b, "relu")
    assert_close(y, ref.dense_forward(np.array(x), np.array(W), np.array(b), "relu"), f64)
    assert_close(fastbp.tanh_forward([0.5, -2.0]), np.tanh([0.5, -2.0]), f64)
    loss, d = fastbp.mse_loss([1.0, 2.0], [0.0, 0.0])
    assert loss == 1.25


def test_python_lists_of_ints_rejected():
    with raises(TypeError, "x must be a float32 or float64 array, got dtype int64"):
        fastbp.dense_forward([[1, 2]], [[1.0], [2.0]], None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_big_endian_inputs(rng, dtype):
    be = np.dtype(dtype).newbyteorder(">")
    x, W, b = dense_inputs(rng, 6, 5, 4, dtype=dtype)
    dy = rng.standard_normal((6, 4)).astype(dtype)
    y = fastbp.dense_forward(x.astype(be), W.astype(be), b.astype(be), "sigmoid")
    assert y.dtype == np.dtype(dtype) and y.dtype.isnative
    want = ref.dense_forward(x, W, b, "sigmoid")
    assert_close(y, want, dtype)
    grads = fastbp.dense_backward(dy.astype(be), x.astype(be), W, y.astype(be), "sigmoid")
    for g, w in zip(grads, ref.dense_backward(dy, x, W, y, "sigmoid")):
        assert_close(g, w, dtype)
    labels = np.array([0, 3, 1, 2, 2, 0], ">i8")
    loss, dz = fastbp.softmax_cross_entropy(x[:, :4].astype(be), labels)
    rloss, rdz = ref.softmax_cross_entropy(x[:, :4], labels.astype(np.int64))
    np.testing.assert_allclose(loss, rloss, rtol=1e-12 if dtype == f64 else 1e-5)
    assert_close(dz, rdz, dtype)
    loss, dp = fastbp.mse_loss(x.astype(be), np.zeros_like(x).astype(be))
    assert_close(dp, ref.mse_loss(x, np.zeros_like(x))[1], dtype)
    assert_close(fastbp.relu_backward(dy.astype(be), y.astype(be)), ref.relu_backward(dy, y), dtype)


# ---------------------------------------------------------------------------
# out must not overlap the inputs (one check, shared by every kernel)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("start, overlaps", [(12, False), (11, True), (1, True), (0, False)])
def test_out_overlap_is_exact_at_the_edges(rng, start, overlaps):
    """Contiguous arrays get an exact interval test: an out that starts right
    after x is fine, one shared element is refused, a shifted alias is refused,
    and another view of exactly x's memory runs in place like x itself."""
    big = rng.standard_normal(40)
    x = big[:12].reshape(4, 3)
    want = np.maximum(x, 0)
    out = big[start:start + 12].reshape(4, 3)
    if overlaps:
        with raises(ValueError, "out overlaps x"):
            fastbp.relu_forward(x, out=out)
    else:
        fastbp.relu_forward(x, out=out)
        np.testing.assert_array_equal(out, want)

