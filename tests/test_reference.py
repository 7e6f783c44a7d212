"""fastbp.reference as a whole: numerical_gradient itself, and float32 inputs
and empty batches across all of its functions.

Each function of the NumPy twin is checked against numerical gradients and
known values in its concern's file (test_activations.py, test_dense.py,
test_losses.py, test_optim.py) under "# ---- the NumPy twin (fastbp.reference) ----".
"""

import math
import warnings

import numpy as np
import pytest

from fastbp import reference as ref

from conftest import ACTS, dense_inputs, rel_err


# ---------------------------------------------------------------------------
# numerical_gradient itself
# ---------------------------------------------------------------------------

def test_numerical_gradient_known_function_and_restores_x():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x0 = x.copy()
    g = ref.numerical_gradient(lambda: np.sum(x ** 3) + np.sum(np.sin(x)), x)
    assert g.shape == x.shape
    assert rel_err(g, 3 * x0 ** 2 + np.cos(x0)) < 1e-8
    np.testing.assert_array_equal(x, x0)


def test_numerical_gradient_float32_default_eps():
    x = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    g = ref.numerical_gradient(lambda: float(np.sum(x.astype(np.float64) ** 2)), x)
    np.testing.assert_allclose(g, 2 * x.astype(np.float64), rtol=1e-5)
    np.testing.assert_array_equal(x, np.array([0.5, -1.0, 2.0], dtype=np.float32))


# ---------------------------------------------------------------------------
# dtypes and empty batches
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTS)
def test_float32_stays_float32(activation):
    rng = np.random.default_rng(9)
    x64, W64, b64 = dense_inputs(rng, 7, 5, 3, activation)
    x, W, b = (a.astype(np.float32) for a in (x64, W64, b64))
    G = rng.standard_normal((7, 3)).astype(np.float32)
    y = ref.dense_forward(x, W, b, activation)
    assert y.dtype == np.float32
    grads = ref.dense_backward(G, x, W, y, activation)
    assert all(g.dtype == np.float32 for g in grads)
    # And they agree with the float64 computation.
    y64 = ref.dense_forward(x64, W64, b64, activation)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-6)
    for g, g64 in zip(grads, ref.dense_backward(G.astype(np.float64), x64, W64, y64, activation)):
        np.testing.assert_allclose(g, g64, rtol=1e-4, atol=1e-5)


def test_float32_losses_and_activations():
    rng = np.random.default_rng(10)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    for fwd, bwd in ref.ACTIVATIONS.values():
        assert fwd(z).dtype == np.float32
        assert bwd(z, fwd(z)).dtype == np.float32
    loss, dz = ref.softmax_cross_entropy(z, np.array([0, 1, 2, 0]))
    assert isinstance(loss, float) and dz.dtype == np.float32
    loss, dz = ref.softmax_cross_entropy(z, rng.dirichlet(np.ones(3), size=4))  # float64 t
    assert dz.dtype == np.float32
    loss, dy = ref.mse_loss(z, np.zeros((4, 3)))
    assert isinstance(loss, float) and dy.dtype == np.float32
    assert ref.one_hot(np.array([1]), 3, np.float32).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = np.zeros((0, 4), dtype=dtype)
        W = np.ones((4, 3), dtype=dtype)
        b = np.ones(3, dtype=dtype)
        for act in ACTS:
            y = ref.dense_forward(x, W, b, act)
            assert y.shape == (0, 3) and y.dtype == dtype
            dx, dW, db = ref.dense_backward(np.zeros((0, 3), dtype), x, W, y, act)
            assert dx.shape == (0, 4) and dW.shape == (4, 3) and db.shape == (3,)
            np.testing.assert_array_equal(dW, 0.0)
            np.testing.assert_array_equal(db, 0.0)

        z = np.zeros((0, 5), dtype=dtype)
        loss, dz = ref.softmax_cross_entropy(z, np.zeros(0, dtype=np.int64))
        assert math.isnan(loss) and dz.shape == (0, 5) and dz.dtype == dtype
        loss, dz = ref.softmax_cross_entropy(z, np.zeros((0, 5)))
        assert math.isnan(loss) and dz.shape == (0, 5)
        loss, dy = ref.mse_loss(z, z)
        assert math.isnan(loss) and dy.shape == (0, 5) and dy.dtype == dtype
        assert ref.clip_by_global_norm([], 1.0) == 0.0
