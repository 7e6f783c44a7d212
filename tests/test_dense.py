"""fastbp.dense_forward / dense_backward against fastbp.reference."""

import math

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import (ACTS, bwd_in, ALL_SHAPES, DTYPES, NUMGRAD_TOL, assert_close, dense_data,
                      dense_inputs, raises, rel_err, shape_id)


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ALL_SHAPES, ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["b", "nob"])
def test_forward_matches_reference(rng, dtype, activation, shape, bias):
    N, I, O = shape
    x, W, b, _, _ = dense_data(rng, N, I, O, dtype)
    if not bias:
        b = None
    y = fastbp.dense_forward(x, W, b, activation)
    assert_close(y, ref.dense_forward(x, W, b, activation), dtype)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_out_buffer_used_and_returned(rng, dtype, activation):
    x, W, b, _, _ = dense_data(rng, 9, 4, 6, dtype)
    out = np.full((9, 6), 123.0, dtype=dtype)
    y = fastbp.dense_forward(x, W, b, activation, out=out)
    assert y is out
    assert_close(out, ref.dense_forward(x, W, b, activation), dtype)


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ALL_SHAPES, ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(rng, dtype, activation, shape):
    N, I, O = shape
    x, W, _, dy, y = dense_data(rng, N, I, O, dtype, activation)
    dy0, y0, x0, W0 = dy.copy(), y.copy(), x.copy(), W.copy()
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, activation)
    rdx, rdW, rdb = ref.dense_backward(dy0, x0, W0, y0, activation)
    assert_close(dx, rdx, dtype)
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)
    # inputs untouched
    for a, a0 in [(dy, dy0), (x, x0), (W, W0), (y, y0)]:
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_buffers_used_and_returned(rng, dtype, activation):
    N, I, O = 11, 5, 7
    x, W, _, dy, y = dense_data(rng, N, I, O, dtype, activation)
    dx = np.full((N, I), 9.0, dtype)
    dW = np.full((I, O), 9.0, dtype)
    db = np.full(O, 9.0, dtype)
    gdx, gdW, gdb = fastbp.dense_backward(dy, x, W, y, activation, dx=dx, dW=dW, db=db)
    assert gdx is dx and gdW is dW and gdb is db
    rdx, rdW, rdb = ref.dense_backward(dy, x, W, y, activation)
    assert_close(dx, rdx, dtype)
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)


@pytest.mark.parametrize("shape", [(7, 5, 3), (64, 64, 64), (512, 64, 300)], ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_accumulate_adds(rng, dtype, activation, shape):
    N, I, O = shape
    x, W, _, dy, y = dense_data(rng, N, I, O, dtype, activation)
    old_dW = rng.standard_normal((I, O)).astype(dtype)
    old_db = rng.standard_normal(O).astype(dtype)
    dW, db = old_dW.copy(), old_db.copy()
    gdx, gdW, gdb = fastbp.dense_backward(dy, x, W, y, activation, dW=dW, db=db,
                                          accumulate=True)
    assert gdW is dW and gdb is db
    rdx, rdW, rdb = ref.dense_backward(dy, x, W, y, activation)
    assert_close(gdx, rdx, dtype)
    assert_close(dW, old_dW + rdW, dtype)
    assert_close(db, old_db + rdb, dtype)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_dz_workspace(rng, dtype, activation):
    N, I, O = 13, 6, 9
    x, W, _, dy, y = dense_data(rng, N, I, O, dtype, activation)
    dz = np.full((N, O), 5.0, dtype)
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, activation, dz=dz)
    _, act_bwd = ref.ACTIVATIONS[activation]
    assert_close(dz, act_bwd(dy, y), dtype)
    rdx, rdW, rdb = ref.dense_backward(dy, x, W, y, activation)
    assert_close(dx, rdx, dtype)
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)


@pytest.mark.parametrize("shape", [(13, 6, 9), (512, 64, 300)], ids=shape_id)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_dz_is_dy_in_place(rng, dtype, activation, shape):
    N, I, O = shape
    x, W, _, dy, y = dense_data(rng, N, I, O, dtype, activation)
    want = fastbp.dense_backward(dy.copy(), x, W, y, activation)
    got = fastbp.dense_backward(dy, x, W, y, activation, dz=dy)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == np.dtype(dtype)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_need_dx_false(rng, dtype, activation):
    x, W, _, dy, y = dense_data(rng, 10, 4, 3, dtype, activation)
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, activation, need_dx=False)
    assert dx is None
    _, rdW, rdb = ref.dense_backward(dy, x, W, y, activation)
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)


# ---------------------------------------------------------------------------
# dtypes, layouts, edge cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_output_dtype_matches_input(rng, dtype):
    x, W, b, dy, y = dense_data(rng, 5, 4, 3, dtype, "tanh")
    assert fastbp.dense_forward(x, W, b, "tanh").dtype == np.dtype(dtype)
    for g in fastbp.dense_backward(dy, x, W, y, "tanh"):
        assert g.dtype == np.dtype(dtype)


def _layouts(rng, N, I, O, dtype):
    """Non-contiguous versions of x (N, I), W (I, O), b (O,), dy and y (N, O)."""
    xs = rng.standard_normal((2 * N, 2 * I)).astype(dtype)[::2, ::2]
    Ws = rng.standard_normal((2 * I, O)).astype(dtype)[::2]
    bs = rng.standard_normal(2 * O).astype(dtype)[::2]
    xT = rng.standard_normal((I, N)).astype(dtype).T
    WF = np.asfortranarray(rng.standard_normal((I, O)).astype(dtype))
    dyF = np.asfortranarray(rng.standard_normal((N, O)).astype(dtype))
    return {"step2": (xs, Ws, bs), "transposed": (xT, WF, bs), "fortran": (np.asfortranarray(xs), WF, bs)}, dyF


@pytest.mark.parametrize("layout", ["step2", "transposed", "fortran"])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(rng, dtype, activation, layout):
    N, I, O = 9, 5, 4
    cases, dyF = _layouts(rng, N, I, O, dtype)
    x, W, b = cases[layout]
    assert not (x.flags.c_contiguous and W.flags.c_contiguous and b.flags.c_contiguous)
    xc, Wc, bc = (np.ascontiguousarray(a) for a in (x, W, b))
    y = fastbp.dense_forward(x, W, b, activation)
    assert_close(y, ref.dense_forward(xc, Wc, bc, activation), dtype)
    # y as a non-contiguous view too
    yF = np.asfortranarray(y)
    dx, dW, db = fastbp.dense_backward(dyF, x, W, yF, activation)
    rdx, rdW, rdb = ref.dense_backward(np.ascontiguousarray(dyF), xc, Wc, y, activation)
    assert_close(dx, rdx, dtype)
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(rng, dtype, activation):
    I, O = 4, 3
    x = np.zeros((0, I), dtype)
    W = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    y = fastbp.dense_forward(x, W, b, activation)
    assert y.shape == (0, O) and y.dtype == np.dtype(dtype)
    dy = np.zeros((0, O), dtype)
    # buffers full of garbage must come back as zeros
    dW = np.full((I, O), 7.0, dtype)
    db = np.full(O, 7.0, dtype)
    dx, gdW, gdb = fastbp.dense_backward(dy, x, W, y, activation, dW=dW, db=db)
    assert dx.shape == (0, I) and dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dW, np.zeros((I, O), dtype))
    np.testing.assert_array_equal(db, np.zeros(O, dtype))
    # without buffers too
    _, dW2, db2 = fastbp.dense_backward(dy, x, W, y, activation)
    np.testing.assert_array_equal(dW2, 0)
    np.testing.assert_array_equal(db2, 0)
    # accumulate with N = 0 leaves the buffers as they were
    dW3, db3 = np.full((I, O), 2.5, dtype), np.full(O, -1.5, dtype)
    fastbp.dense_backward(dy, x, W, y, activation, dW=dW3, db=db3, accumulate=True)
    np.testing.assert_array_equal(dW3, 2.5)
    np.testing.assert_array_equal(db3, -1.5)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_x_propagates(rng, dtype, activation):
    x, W, b, _, _ = dense_data(rng, 6, 4, 5, dtype)
    x[2, 1] = np.nan
    y = fastbp.dense_forward(x, W, b, activation)
    assert np.isnan(y[2]).all()
    mask = np.ones(6, bool)
    mask[2] = False
    assert np.isfinite(y[mask]).all()
    assert_close(y[mask], ref.dense_forward(x[mask], W, b, activation), dtype)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_inputs(rng, dtype, activation):
    N, I, O = 5, 4, 3

    def misaligned(a):
        buf = np.zeros(a.nbytes + 1, np.uint8)
        m = buf[1:].view(dtype).reshape(a.shape)
        m[...] = a
        return m

    x, W, b, dy, y = dense_data(rng, N, I, O, dtype, activation)
    xm, Wm, dym = misaligned(x), misaligned(W), misaligned(dy)
    assert not (xm.flags.aligned or Wm.flags.aligned or dym.flags.aligned)
    assert_close(fastbp.dense_forward(xm, Wm, b, activation), ref.dense_forward(x, W, b, activation), dtype)
    for g, w in zip(fastbp.dense_backward(dym, xm, Wm, y, activation),
                    ref.dense_backward(dy, x, W, y, activation)):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_width_layers(rng, dtype, activation):
    # O == 0: empty outputs; dx must be zeros (an empty sum), even in a dirty buffer
    x = rng.standard_normal((4, 3)).astype(dtype)
    W = np.zeros((3, 0), dtype)
    y = fastbp.dense_forward(x, W, np.zeros(0, dtype), activation)
    assert y.shape == (4, 0)
    dx, dW, db = fastbp.dense_backward(np.zeros((4, 0), dtype), x, W, y, activation,
                                       dx=np.full((4, 3), 7.0, dtype))
    np.testing.assert_array_equal(dx, 0)
    assert dW.shape == (3, 0) and db.shape == (0,)
    # I == 0: y = act(b) in every row; dW is (0, O), db the column sums
    x = np.zeros((4, 0), dtype)
    W = np.zeros((0, 3), dtype)
    b = rng.standard_normal(3).astype(dtype)
    y = fastbp.dense_forward(x, W, b, activation, out=np.full((4, 3), 9.0, dtype))
    assert_close(y, ref.dense_forward(x, W, b, activation), dtype)
    dy = rng.standard_normal((4, 3)).astype(dtype)
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, activation)
    assert dx.shape == (4, 0) and dW.shape == (0, 3)
    assert_close(db, ref.dense_backward(dy, x, W, y, activation)[2], dtype)


# ---- input checks ----
# Bad inputs raise ValueError/TypeError naming what was expected and given.

# dense_forward

def test_forward_inner_dim_mismatch(rng):
    x, _, b = dense_inputs(rng)
    W = np.ones((5, 2))
    with raises(ValueError, "3 (dim 1) != 5 (dim 0)"):
        fastbp.dense_forward(x, W, b)


def test_forward_wrong_ndim(rng):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, "x must be 2-D, got 1-D array of shape (3,)"):
        fastbp.dense_forward(np.ones(3), W, b)
    with raises(ValueError, "W must be 2-D, got 3-D array of shape (3, 2, 1)"):
        fastbp.dense_forward(x, np.ones((3, 2, 1)), b)
    with raises(ValueError, "b must be 1-D, got 2-D"):
        fastbp.dense_forward(x, W, b[None])


def test_forward_int_x(rng):
    _, W, b = dense_inputs(rng)
    with raises(TypeError, "x must be a float32 or float64 array, got dtype int64"):
        fastbp.dense_forward(np.ones((4, 3), np.int64), W, b)


@pytest.mark.parametrize("bad", [np.float16, np.complex128, np.bool_, object])
def test_forward_other_bad_dtypes(rng, bad):
    _, W, b = dense_inputs(rng)
    with raises(TypeError, "x must be a float32 or float64 array, got dtype"):
        fastbp.dense_forward(np.ones((4, 3), dtype=bad), W, b)


def test_forward_mixed_dtypes(rng):
    x, W, b = dense_inputs(rng)
    with raises(TypeError, "W has dtype float32 but the inputs are float64"):
        fastbp.dense_forward(x, W.astype(np.float32), b)
    with raises(TypeError, "b has dtype float64 but the inputs are float32"):
        fastbp.dense_forward(x.astype(np.float32), W.astype(np.float32), b)


def test_forward_bias_wrong_length(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "b must have shape (2,) to match W (3, 2), got (3,)"):
        fastbp.dense_forward(x, W, np.ones(3))


@pytest.mark.parametrize("act", ["swish", "ReLU", 1, ["relu"]])
def test_forward_unknown_activation(rng, act):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, f"unknown activation {act!r}"):
        fastbp.dense_forward(x, W, b, act)


def test_forward_bad_out(rng):
    x, W, b = dense_inputs(rng)
    with raises(ValueError, "out must have shape (4, 2), got (2, 4)"):
        fastbp.dense_forward(x, W, b, out=np.empty((2, 4)))
    with raises(TypeError, "out must have dtype float64, got float32"):
        fastbp.dense_forward(x, W, b, out=np.empty((4, 2), np.float32))
    with raises(ValueError, "out must be C-contiguous"):
        fastbp.dense_forward(x, W, b, out=np.empty((4, 4))[:, ::2])
    with raises(ValueError, "out must be C-contiguous"):
        fastbp.dense_forward(x, W, b, out=np.asfortranarray(np.empty((4, 2))))
    ro = np.empty((4, 2))
    ro.flags.writeable = False
    with raises(ValueError, "out is read-only"):
        fastbp.dense_forward(x, W, b, out=ro)
    with raises(TypeError, "out must be a numpy.ndarray, got list"):
        fastbp.dense_forward(x, W, b, out=[[0.0] * 2] * 4)


def test_forward_out_overlaps_input(rng):
    buf = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 3))
    with raises(ValueError, "out overlaps x"):
        fastbp.dense_forward(buf, W, None, out=buf)
    big = rng.standard_normal(20)
    x = big[:12].reshape(4, 3)
    with raises(ValueError, "out overlaps x"):
        fastbp.dense_forward(x, W, None, out=big[6:18].reshape(4, 3))
    with raises(ValueError, "out overlaps W"):
        fastbp.dense_forward(rng.standard_normal((3, 3)), W, None, out=W)


# dense_backward

def test_backward_wrong_dy_shape(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "dy must have shape (4, 2) (x rows, W columns), got (4, 3)"):
        fastbp.dense_backward(np.ones((4, 3)), x, W)


def test_backward_missing_y(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "y (the forward output) is required with activation 'relu'"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, None, "relu")


def test_backward_wrong_y_shape(rng):
    x, W, _ = dense_inputs(rng)
    with raises(ValueError, "y must have the shape of dy (4, 2), got (2, 4)"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, np.ones((2, 4)), "tanh")


@pytest.mark.parametrize("given", ["none", "dW", "db"])
def test_backward_accumulate_needs_buffers(rng, given):
    x, W, _ = dense_inputs(rng)
    kw = {}
    if given == "dW":
        kw["dW"] = np.zeros((3, 2))
    if given == "db":
        kw["db"] = np.zeros(2)
    with raises(ValueError, "accumulate=True needs the dW and db buffers"):
        fastbp.dense_backward(np.ones((4, 2)), x, W, accumulate=True, **kw)


def test_backward_dz_partially_overlapping_dy(rng):
    x, W, _ = dense_inputs(rng)
    buf = rng.standard_normal((5, 2))
    dy, dz = buf[:4], buf[1:]
    y = np.tanh(rng.standard_normal((4, 2)))
    with raises(ValueError, "dz overlaps dy"):
        fastbp.dense_backward(dy, x, W, y, "tanh", dz=dz)


def test_backward_buffer_wrong_shape_and_dtype(rng):
    x, W, _ = dense_inputs(rng)
    dy = np.ones((4, 2))
    with raises(ValueError, "dW must have shape (3, 2), got (2, 3)"):
        fastbp.dense_backward(dy, x, W, dW=np.zeros((2, 3)))
    with raises(TypeError, "db must have dtype float64, got float32"):
        fastbp.dense_backward(dy, x, W, db=np.zeros(2, np.float32))
    with raises(ValueError, "dx must have shape (4, 3), got (3, 4)"):
        fastbp.dense_backward(dy, x, W, dx=np.zeros((3, 4)))
    with raises(ValueError, "dx given with need_dx=False"):
        fastbp.dense_backward(dy, x, W, dx=np.zeros((4, 3)), need_dx=False)


def test_backward_output_overlaps_input(rng):
    x, W, _ = dense_inputs(rng, O=3)
    dy = rng.standard_normal((4, 3))
    with raises(ValueError, "dW overlaps W"):
        fastbp.dense_backward(dy, x, W, dW=W)
    with raises(ValueError, "dx overlaps x"):
        fastbp.dense_backward(dy, x, W, dx=x)


def test_backward_mixed_dtypes(rng):
    x, W, _ = dense_inputs(rng)
    with raises(TypeError, "x has dtype float32 but the inputs are float64"):
        fastbp.dense_backward(np.ones((4, 2)), x.astype(np.float32), W)


# ---- the NumPy twin (fastbp.reference) ----
# Against numerical gradients (ref.numerical_gradient, float64) and known values.

# (N, I, O): 1x1, batch 1, primes, a single output.
TWIN_SHAPES = [(1, 1, 1), (1, 4, 3), (7, 5, 3), (3, 2, 1), (2, 1, 5)]


@pytest.mark.parametrize("activation", ACTS)
def test_dense_forward_explicit_loops(activation):
    rng = np.random.default_rng(2)
    x, W, b = dense_inputs(rng, 3, 4, 2, activation)
    fwd = {None: lambda v: v, "relu": lambda v: max(v, 0.0),
           "sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
           "gelu": lambda v: v * (1 + math.erf(v / math.sqrt(2))) / 2,
           "gelu_tanh": lambda v: v * (1 + math.tanh(math.sqrt(2 / math.pi) *
                                                     (v + 0.044715 * v ** 3))) / 2,
           "silu": lambda v: v / (1 + math.exp(-v)),
           }[activation]
    y = ref.dense_forward(x, W, b, activation)
    for n in range(3):
        for o in range(2):
            z = b[o] + sum(x[n, i] * W[i, o] for i in range(4))
            assert y[n, o] == pytest.approx(fwd(z), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(ref.dense_forward(x, W, None, activation),
                               ref.ACTIVATIONS[activation][0](x @ W), rtol=1e-14)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("N,I,O", TWIN_SHAPES)
def test_dense_backward_matches_numerical(activation, N, I, O):
    rng = np.random.default_rng(100 * N + 10 * I + O)
    x, W, b = dense_inputs(rng, N, I, O, activation)
    G = rng.standard_normal((N, O))

    def loss():
        return np.sum(G * ref.dense_forward(x, W, b, activation))

    y = bwd_in(activation, ref.dense_forward(x, W, b, None), ref.dense_forward(x, W, b, activation))
    dx, dW, db = ref.dense_backward(G, x, W, y, activation)
    assert dx.shape == (N, I) and dW.shape == (I, O) and db.shape == (O,)
    assert rel_err(dx, ref.numerical_gradient(loss, x)) < NUMGRAD_TOL
    assert rel_err(dW, ref.numerical_gradient(loss, W)) < NUMGRAD_TOL
    assert rel_err(db, ref.numerical_gradient(loss, b)) < NUMGRAD_TOL


def test_dense_unknown_activation():
    x = np.ones((2, 2))
    with pytest.raises(ValueError):
        ref.dense_forward(x, x, None, "swish")
