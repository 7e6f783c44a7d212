"""Tests for fastbp.reference, the pure-NumPy ground truth.

Gradients are checked against central-difference numerical gradients in
float64; the other functions against explicit formulas and edge cases.
"""

import math
import warnings

import numpy as np
import pytest

from fastbp import reference as ref

from conftest import ACTS, NUMGRAD_TOL, dense_inputs, rel_err

# (N, I, O): 1x1, batch 1, primes, a single output.
DENSE_SHAPES = [(1, 1, 1), (1, 4, 3), (7, 5, 3), (3, 2, 1), (2, 1, 5)]


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
# Activations
# ---------------------------------------------------------------------------

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
    ana = bwd(G, fwd(x))
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


# ---------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTS)
def test_dense_forward_explicit_loops(activation):
    rng = np.random.default_rng(2)
    x, W, b = dense_inputs(rng, 3, 4, 2, activation)
    fwd = {None: lambda v: v, "relu": lambda v: max(v, 0.0),
           "sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh}[activation]
    y = ref.dense_forward(x, W, b, activation)
    for n in range(3):
        for o in range(2):
            z = b[o] + sum(x[n, i] * W[i, o] for i in range(4))
            assert y[n, o] == pytest.approx(fwd(z), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(ref.dense_forward(x, W, None, activation),
                               ref.ACTIVATIONS[activation][0](x @ W), rtol=1e-14)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("N,I,O", DENSE_SHAPES)
def test_dense_backward_matches_numerical(activation, N, I, O):
    rng = np.random.default_rng(100 * N + 10 * I + O)
    x, W, b = dense_inputs(rng, N, I, O, activation)
    G = rng.standard_normal((N, O))

    def loss():
        return np.sum(G * ref.dense_forward(x, W, b, activation))

    y = ref.dense_forward(x, W, b, activation)
    dx, dW, db = ref.dense_backward(G, x, W, y, activation)
    assert dx.shape == (N, I) and dW.shape == (I, O) and db.shape == (O,)
    assert rel_err(dx, ref.numerical_gradient(loss, x)) < NUMGRAD_TOL
    assert rel_err(dW, ref.numerical_gradient(loss, W)) < NUMGRAD_TOL
    assert rel_err(db, ref.numerical_gradient(loss, b)) < NUMGRAD_TOL


def test_dense_unknown_activation():
    x = np.ones((2, 2))
    with pytest.raises(ValueError):
        ref.dense_forward(x, x, None, "gelu")


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("N,C", [(1, 1), (1, 4), (7, 3), (5, 11)])
def test_softmax_ce_labels_matches_numerical(label_dtype, N, C):
    rng = np.random.default_rng(N * 31 + C)
    z = rng.standard_normal((N, C)) * 3
    labels = rng.integers(0, C, size=N).astype(label_dtype)
    loss, dz = ref.softmax_cross_entropy(z, labels)
    assert isinstance(loss, float)
    # Naive formula, fine for moderate logits.
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(N), labels.astype(np.intp)]))
    assert loss == pytest.approx(expected, rel=1e-12, abs=1e-15)
    num = ref.numerical_gradient(lambda: ref.softmax_cross_entropy(z, labels)[0], z)
    assert dz.shape == (N, C) and dz.dtype == np.float64
    if C == 1:  # loss is identically 0
        np.testing.assert_array_equal(dz, 0.0)
        np.testing.assert_allclose(num, 0.0, atol=1e-12)
    else:
        assert rel_err(dz, num) < NUMGRAD_TOL


@pytest.mark.parametrize("N,C", [(1, 2), (7, 3), (4, 6)])
def test_softmax_ce_probabilities_matches_numerical(N, C):
    rng = np.random.default_rng(7 * N + C)
    z = rng.standard_normal((N, C)) * 2
    t = rng.dirichlet(np.ones(C), size=N)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    loss, dz = ref.softmax_cross_entropy(z, t)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-np.mean(np.sum(t * logp, axis=1)), rel=1e-12)
    num = ref.numerical_gradient(lambda: ref.softmax_cross_entropy(z, t)[0], z)
    assert rel_err(dz, num) < NUMGRAD_TOL


def test_softmax_ce_labels_equal_one_hot():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, 2, 0])
    oh = ref.one_hot(labels, 4, np.float64)
    np.testing.assert_array_equal(oh.argmax(axis=1), labels)
    np.testing.assert_array_equal(oh.sum(axis=1), 1.0)
    l1, g1 = ref.softmax_cross_entropy(z, labels)
    l2, g2 = ref.softmax_cross_entropy(z, oh)
    assert l1 == pytest.approx(l2, rel=1e-14)
    np.testing.assert_allclose(g1, g2, rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_ce_large_logits(dtype):
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((5, 7)) * 1e4).astype(dtype)
    z[0] = [1e4, -1e4, 0, 0, 0, 0, 0]
    labels = np.array([0, 1, 2, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dz = ref.softmax_cross_entropy(z, labels)
        loss_p, dz_p = ref.softmax_cross_entropy(z, ref.one_hot(labels, 7, dtype))
    assert math.isfinite(loss) and math.isfinite(loss_p)
    assert dz.dtype == dtype and np.all(np.isfinite(dz))
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-6)
    # Exact per-row value: lse - z[label], with lse ~= row max for such gaps.
    z64 = z.astype(np.float64)
    expected = np.mean(z64.max(axis=1) - z64[np.arange(5), labels])
    assert loss == pytest.approx(expected, rel=1e-6)
    # Row 0 alone: correct label at the max gives loss 0, the other gives 2e4.
    assert ref.softmax_cross_entropy(z[:1], np.array([0]))[0] == pytest.approx(0.0, abs=1e-6)
    assert ref.softmax_cross_entropy(z[:1], np.array([1]))[0] == pytest.approx(2e4, rel=1e-6)


def test_softmax_ce_neg_inf_logit_with_zero_target():
    z = np.array([[0.0, -np.inf, 1.0]])
    t = np.array([[0.5, 0.0, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dz = ref.softmax_cross_entropy(z, t)
    assert math.isfinite(loss)
    assert np.all(np.isfinite(dz)) and dz[0, 1] == 0.0
    l2, _ = ref.softmax_cross_entropy(z[:, [0, 2]], t[:, [0, 2]])
    assert loss == pytest.approx(l2, rel=1e-14)


def test_softmax_ce_bad_labels():
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(np.zeros((2, 3)), np.array([-1, 0]))


@pytest.mark.parametrize("shape", [(1,), (1, 1), (4, 3), (7, 2)])
def test_mse_loss_matches_numerical(shape):
    rng = np.random.default_rng(5)
    y = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    loss, dy = ref.mse_loss(y, t)
    assert isinstance(loss, float)
    assert loss == pytest.approx(0.5 * np.sum((y - t) ** 2) / shape[0], rel=1e-14)
    num = ref.numerical_gradient(lambda: ref.mse_loss(y, t)[0], y)
    assert rel_err(dy, num) < NUMGRAD_TOL


# ---------------------------------------------------------------------------
# Optimizer and clipping
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_update(dtype, weight_decay):
    rng = np.random.default_rng(6)
    p = rng.standard_normal((4, 3)).astype(dtype)
    g = rng.standard_normal((4, 3)).astype(dtype)
    p0 = p.copy()
    out = ref.sgd_update(p, g, 0.05, weight_decay=weight_decay)
    assert out is p and p.dtype == dtype
    expected = p0.astype(np.float64) - 0.05 * (g + weight_decay * p0.astype(np.float64))
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(p, expected, rtol=rtol)
    assert not np.array_equal(p, p0)


def test_sgd_weight_decay_uses_old_param():
    p = np.array([2.0])
    ref.sgd_update(p, np.array([0.0]), 0.5, weight_decay=1.0)
    assert p[0] == 1.0  # 2 - 0.5 * (0 + 1 * 2)


def test_clip_by_value():
    a = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, np.nan])
    b = np.array([[10.0, -10.0]], dtype=np.float32)
    a_id = a
    assert ref.clip_by_value([a, b], 1.0) is None
    assert a is a_id
    np.testing.assert_array_equal(a, [-1.0, -0.5, 0.0, 0.5, 1.0, np.nan])
    np.testing.assert_array_equal(b, [[1.0, -1.0]])
    assert b.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_by_global_norm_scales(dtype):
    rng = np.random.default_rng(8)
    grads = [rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)]
    orig = [g.astype(np.float64) for g in grads]
    expected_total = math.sqrt(sum(np.sum(g ** 2) for g in orig))
    total = ref.clip_by_global_norm(grads, 1.0)
    assert isinstance(total, float)
    assert total == pytest.approx(expected_total, rel=1e-12)
    assert total > 1.0
    new_norm = math.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert new_norm == pytest.approx(1.0, rel=1e-6)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    for g, g0 in zip(grads, orig):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, g0 / expected_total, rtol=rtol)


def test_clip_by_global_norm_leaves_small():
    grads = [np.array([0.3, 0.4]), np.array([[0.0]])]
    copies = [g.copy() for g in grads]
    assert ref.clip_by_global_norm(grads, 1.0) == pytest.approx(0.5, rel=1e-15)
    for g, c in zip(grads, copies):
        np.testing.assert_array_equal(g, c)


def test_clip_by_global_norm_float64_accumulation():
    # 1e30**2 overflows float32 but not float64.
    grads = [np.full(4, 1e30, dtype=np.float32)]
    total = ref.clip_by_global_norm(grads, 1.0)
    assert total == pytest.approx(2e30, rel=1e-6)
    np.testing.assert_allclose(grads[0], 0.5, rtol=1e-6)


@pytest.mark.parametrize("bad, expect_nan", [(np.inf, False), (-np.inf, False), (np.nan, True)])
def test_clip_by_global_norm_non_finite(bad, expect_nan):
    grads = [np.array([1.0, 2.0, bad]), np.array([100.0], dtype=np.float32)]
    copies = [g.copy() for g in grads]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = ref.clip_by_global_norm(grads, 1.0)
    if expect_nan:
        assert math.isnan(total)
    else:
        assert total == math.inf
    for g, c in zip(grads, copies):
        np.testing.assert_array_equal(g, c)


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
