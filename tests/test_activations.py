"""relu / sigmoid / tanh forward and backward against fastbp.reference."""

import warnings

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import (ACT_NAMES, ACTS, DTYPES, NUMGRAD_TOL, act_kernels, assert_close, bwd_in,
                      rel_err)

# From the registry (fastbp.ops names each activation's kernels): a new activation
# is tested here without being listed. A kernel taking options (gelu's
# approximate=) is called with the registry's own setting of them.
NAMES = ACT_NAMES


FWD = {n: act_kernels(n)[0] for n in NAMES}
BWD = {n: act_kernels(n)[1] for n in NAMES}
RFWD = {n: ref.ACTIVATIONS[n][0] for n in NAMES}
RBWD = {n: ref.ACTIVATIONS[n][1] for n in NAMES}
# 1-D, 2-D, 3-D, and one large enough for the kernels to go parallel.
SHAPES = [(1,), (1000,), (37, 53), (3, 5, 7), (300_000,)]


def _x(rng, shape, dtype):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.flat[::7] = 0  # exact zeros: the ReLU kink
    return x


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_reference(rng, dtype, name, shape):
    x = _x(rng, shape, dtype)
    x0 = x.copy()
    y = FWD[name](x)
    assert_close(y, RFWD[name](x0), dtype)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(rng, dtype, name, shape):
    x = _x(rng, shape, dtype)
    y = bwd_in(name, x, RFWD[name](x).astype(dtype))
    dy = rng.standard_normal(shape).astype(dtype)
    dx = BWD[name](dy, y)
    assert_close(dx, RBWD[name](dy, y), dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_in_place(rng, dtype, name):
    x = _x(rng, (41, 13), dtype)
    want = RFWD[name](x.copy())
    y = FWD[name](x, out=x)
    assert y is x
    assert_close(x, want, dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_in_place_and_out(rng, dtype, name):
    x = _x(rng, (29, 17), dtype)
    y = bwd_in(name, x, RFWD[name](x).astype(dtype))
    dy = rng.standard_normal((29, 17)).astype(dtype)
    want = RBWD[name](dy, y)
    out = np.full_like(dy, 4.0)
    assert BWD[name](dy, y, out=out) is out
    assert_close(out, want, dtype)
    assert BWD[name](dy, y, out=dy) is dy
    assert_close(dy, want, dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_out_buffer(rng, dtype, name):
    x = _x(rng, (8, 9), dtype)
    out = np.full_like(x, 4.0)
    assert FWD[name](x, out=out) is out
    assert_close(out, RFWD[name](x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_gradient_exactly_zero_at_zero(rng, dtype):
    y = np.array([0.0, -0.0, 0.0, 1e-30, 2.0, 0.0], dtype)
    dy = np.array([5.0, -3.0, np.inf, 7.0, 1.5, 1e30], dtype)
    dx = fastbp.relu_backward(dy, y)
    np.testing.assert_array_equal(dx[[0, 1, 5]], 0)
    assert not np.signbit(dx[0])  # 5 * 0 = +0
    assert dx[3] == dtype(7.0) and dx[4] == dtype(1.5)
    # inf * 0 is NaN in the reference product form too
    with np.errstate(invalid="ignore"):
        want = ref.relu_backward(dy, y)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_values(dtype):
    x = np.array([-2.0, -0.0, 0.0, 3.5, -1e-30], dtype)
    y = fastbp.relu_forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 3.5, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_finite(dtype):
    x = np.array([-1000.0, 1000.0, -100.0, 100.0, 0.0], dtype)
    with np.errstate(over="raise"):
        want = ref.sigmoid_forward(x)
    y = fastbp.sigmoid_forward(x)
    assert np.isfinite(y).all()
    assert y[0] == 0 and y[1] == 1 and y[3] == 1 and y[4] == dtype(0.5)
    assert 0 <= y[2] < 1e-40
    assert_close(y, want, dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_forward(dtype, name):
    x = np.array([1.0, np.nan, -1.0, np.nan], dtype)
    y = FWD[name](x)
    np.testing.assert_array_equal(np.isnan(y), [False, True, False, True])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_backward(dtype, name):
    y = np.array([0.5, 0.5, 0.0], dtype)
    dy = np.array([np.nan, 1.0, np.nan], dtype)
    dx = BWD[name](dy, y)
    assert np.isnan(dx[0]) and not np.isnan(dx[1])
    # relu: NaN * 0 is NaN (product form)
    assert np.isnan(dx[2]) == np.isnan(RBWD[name](dy, y)[2])


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 2)], ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(dtype, name, shape):
    x = np.zeros(shape, dtype)
    y = FWD[name](x)
    assert y.shape == shape and y.dtype == np.dtype(dtype)
    dx = BWD[name](x, x)
    assert dx.shape == shape and dx.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input(rng, dtype, name):
    x = _x(rng, (20, 30), dtype)[::2, ::3]
    y = FWD[name](x)
    assert y.shape == x.shape
    assert_close(y, RFWD[name](x), dtype)
    dy = rng.standard_normal((10, 10)).astype(dtype).T
    yy = np.asfortranarray(bwd_in(name, x, RFWD[name](x)))
    assert_close(BWD[name](dy, yy), RBWD[name](dy, yy), dtype)


# x where exp(-x) overflows but sigmoid(x) = exp(x) / (1 + exp(x)) is a
# positive subnormal: the reference's stable split form gives it, the naive
# 1 / (1 + exp(-x)) flushes it to 0.
DEEP_TAIL = {np.float32: [-89.0, -92.0, -95.0], np.float64: [-710.0, -720.0, -735.0]}


@pytest.mark.parametrize("via", ["sigmoid_forward", "dense_forward"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_deep_negative_tail_matches_reference(dtype, via):
    x = np.array(DEEP_TAIL[dtype], dtype)
    with np.errstate(under="ignore"):
        want = ref.sigmoid_forward(x)
    assert (want > 0).all()
    if via == "sigmoid_forward":
        y = fastbp.sigmoid_forward(x)
    else:
        y = fastbp.dense_forward(x[:, None], np.ones((1, 1), dtype), None, "sigmoid")[:, 0]
    # subnormal results carry few significant bits: compare loosely, but not with 0
    np.testing.assert_allclose(y, want, rtol=1e-2, atol=0)


# ---- the NumPy twin (fastbp.reference) ----
# Against numerical gradients (ref.numerical_gradient, float64) and known values.

@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (7, 3)])
def test_activation_backward_matches_numerical(activation, shape):
    rng = np.random.default_rng(1)
    fwd, bwd = ref.ACTIVATIONS[activation]
    x = rng.standard_normal(shape)
    if activation == "relu":
        x = np.where(np.abs(x) < 1e-2, x + 0.1, x)   # keep away from the kink
    G = rng.standard_normal(shape)
    num = ref.numerical_gradient(lambda: np.sum(G * fwd(x)), x)
    ana = bwd(G, bwd_in(activation, x, fwd(x)))
    assert rel_err(ana, num) < NUMGRAD_TOL


def test_activation_forward_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(ref.relu_forward(x), [0, 0, 0, 0.5, 3.0])
    np.testing.assert_allclose(ref.sigmoid_forward(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_allclose(ref.tanh_forward(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_array_equal(ref.ACTIVATIONS[None][0](x), x)


def test_sigmoid_extreme_no_warnings():
    x = np.array([-1e4, -800.0, -50.0, 50.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (np.float64, np.float32):
            y = ref.sigmoid_forward(x.astype(dtype))
            assert y.dtype == dtype
            assert np.all(np.isfinite(y))
            assert np.all((y >= 0) & (y <= 1))
            assert y[0] == 0 and y[-1] == 1
            assert np.all(np.diff(y) >= 0)


def test_nan_propagates():
    x = np.array([np.nan, -1.0, 1.0])
    assert np.isnan(ref.relu_forward(x)[0])
    assert np.isnan(ref.sigmoid_forward(x)[0])
    assert np.isnan(ref.tanh_forward(x)[0])
    dy = np.array([np.nan, np.nan, 1.0])
    y = np.array([1.0, 0.0, 1.0])
    dx = ref.relu_backward(dy, y)
    assert np.isnan(dx[0]) and np.isnan(dx[1]) and dx[2] == 1.0


def test_relu_backward_zero_at_zero():
    dy = np.array([1.0, 2.0, 3.0])
    y = np.array([0.0, 0.5, 0.0])
    np.testing.assert_array_equal(ref.relu_backward(dy, y), [0.0, 2.0, 0.0])


def test_identity_backward_returns_dy():
    dy = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ref.ACTIVATIONS[None][1](dy, dy * 7), dy)
