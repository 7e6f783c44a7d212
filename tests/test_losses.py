"""softmax_cross_entropy, mse_loss and binary_cross_entropy against fastbp.reference
(and PyTorch's BCEWithLogitsLoss); the model with loss="binary_cross_entropy"."""

import math
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import DTYPES, NUMGRAD_TOL, assert_close, assert_loss_close, raises, rel_err

LABEL_DTYPES = [np.int8, np.uint8, np.int32, np.int64, np.uint64]
# (N, C); the last one is large enough for the kernel to go parallel.
XENT_SHAPES = [(1, 1), (1, 5), (7, 3), (64, 10), (5, 1000), (300, 7), (256, 600)]


def _logits(rng, N, C, dtype, scale=3.0):
    return (scale * rng.standard_normal((N, C))).astype(dtype)


def _probs(rng, N, C, dtype):
    t = rng.dirichlet(np.ones(C), size=N)
    if C > 1:
        t[rng.random((N, C)) < 0.3] = 0  # some exact zeros
        t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-300)
    return t.astype(dtype)


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", XENT_SHAPES, ids=str)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_labels_matches_reference(rng, dtype, label_dtype, shape):
    N, C = shape
    C = min(C, 127)  # int8 labels
    z = _logits(rng, N, C, dtype)
    labels = rng.integers(0, C, N).astype(label_dtype)
    z0 = z.copy()
    loss, dz = fastbp.softmax_cross_entropy(z, labels)
    rloss, rdz = ref.softmax_cross_entropy(z0, labels)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)
    np.testing.assert_array_equal(z, z0)


@pytest.mark.parametrize("shape", XENT_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_probs_matches_reference(rng, dtype, shape):
    N, C = shape
    z = _logits(rng, N, C, dtype)
    t = _probs(rng, N, C, dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    rloss, rdz = ref.softmax_cross_entropy(z, t)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_labels_equal_one_hot_probs(rng, dtype):
    z = _logits(rng, 20, 6, dtype)
    labels = rng.integers(0, 6, 20)
    l1, g1 = fastbp.softmax_cross_entropy(z, labels)
    l2, g2 = fastbp.softmax_cross_entropy(z, ref.one_hot(labels, 6, dtype))
    assert_loss_close(l1, l2, dtype)
    assert_close(g1, g2, dtype)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_gradient_rows_sum_to_zero(rng, dtype, target):
    N, C = 50, 31
    z = _logits(rng, N, C, dtype)
    t = rng.integers(0, C, N) if target == "labels" else _probs(rng, N, C, dtype)
    _, dz = fastbp.softmax_cross_entropy(z, t)
    tol = 1e-15 if dtype == np.float64 else 1e-7
    np.testing.assert_allclose(dz.astype(np.float64).sum(axis=1), 0, atol=tol * C)


@pytest.mark.parametrize("shape", [(300, 500), (300, 7), (200, 40)], ids=str)
@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_out_logits_in_place(rng, dtype, target, shape):
    """Row by row (C = 500) and in chunks of several rows (few classes)."""
    N, C = shape
    z = _logits(rng, N, C, dtype)
    t = rng.integers(0, C, N) if target == "labels" else _probs(rng, N, C, dtype)
    rloss, rdz = ref.softmax_cross_entropy(z.copy(), t)
    loss, dz = fastbp.softmax_cross_entropy(z, t, out=z)
    assert dz is z
    assert_loss_close(loss, rloss, dtype)
    assert_close(z, rdz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_out_buffer(rng, dtype):
    z = _logits(rng, 9, 4, dtype)
    labels = rng.integers(0, 4, 9)
    out = np.full_like(z, 3.0)
    loss, dz = fastbp.softmax_cross_entropy(z, labels, out=out)
    assert dz is out
    assert_close(out, ref.softmax_cross_entropy(z, labels)[1], dtype)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_huge_logits_finite(rng, dtype, target):
    N, C = 8, 5
    z = np.where(rng.random((N, C)) < 0.5, -1e4, 1e4).astype(dtype)
    z[:, 0] = 1e4  # every row has a +1e4 entry
    z[0] = -1e4    # and one row is all -1e4
    t = rng.integers(0, C, N) if target == "labels" else _probs(rng, N, C, dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    rloss, rdz = ref.softmax_cross_entropy(z, t)
    assert math.isfinite(loss) and np.isfinite(dz).all()
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_empty_batch(dtype, target):
    z = np.zeros((0, 4), dtype)
    t = np.zeros(0, np.int64) if target == "labels" else np.zeros((0, 4), dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    assert type(loss) is float and math.isnan(loss)
    assert dz.shape == (0, 4) and dz.dtype == np.dtype(dtype)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("nan_col", [0, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_nan_logits_give_nan_loss(rng, dtype, nan_col, target):
    z = _logits(rng, 4, 3, dtype)
    z[1, nan_col] = np.nan
    t = np.array([2, 2, 0, 1]) if target == "labels" else _probs(rng, 4, 3, dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    assert math.isnan(loss)
    assert np.isnan(dz[1]).all()
    assert np.isfinite(dz[[0, 2, 3]]).all()


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("col", [0, 5, 17, 36])  # in the vector body and in the tail
@pytest.mark.parametrize("bad", ["nan", "-nan", "+inf", "all -inf"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_nonfinite_rows_are_nan_wide(rng, dtype, bad, col, target):
    """Rows wide enough for the vectorized exp: a NaN of either sign, a +inf
    logit, or a row of -inf make that row's loss and gradient NaN (as
    exp(z - max) does in exact arithmetic) and leave the other rows exact."""
    N, C = 5, 37
    z = _logits(rng, N, C, dtype)
    if bad == "all -inf":
        z[2] = -np.inf
    else:
        z[2, col] = {"nan": np.nan, "-nan": np.copysign(np.nan, -1.0), "+inf": np.inf}[bad]
    t = rng.integers(0, C, N) if target == "labels" else _probs(rng, N, C, dtype)
    for inplace in (False, True):
        zz = z.copy()
        loss, dz = fastbp.softmax_cross_entropy(zz, t, out=zz if inplace else None)
        assert math.isnan(loss)
        assert np.isnan(dz[2]).all()
        good = [0, 1, 3, 4]
        _, rdz = ref.softmax_cross_entropy(z[good], t[good])
        assert_close(dz[good] * (N / len(good)), rdz, dtype)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bad", ["nan", "+inf", "all -inf"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_few_classes_nonfinite_row_in_a_later_chunk(rng, dtype, bad, weighted):
    """Few classes go in chunks of rows (csrc/losses.c, fbp_xent_few_labels): a
    non-finite row far into the batch is NaN, in place or not, weighted or not,
    and every other row, before and after it in its chunk, stays exact."""
    N, C, row = 200, 10, 151
    z = _logits(rng, N, C, dtype)
    if bad == "all -inf":
        z[row] = -np.inf
    else:
        z[row, 3] = {"nan": np.nan, "+inf": np.inf}[bad]
    labels = rng.integers(0, C, N)
    good = np.arange(N) != row
    for inplace in (False, True):
        zz = z.copy()
        loss, dz = fastbp.softmax_cross_entropy(zz, labels, out=zz if inplace else None)
        assert math.isnan(loss)
        assert np.isnan(dz[row]).all()
        _, rdz = ref.softmax_cross_entropy(z[good], labels[good])
        assert_close(dz[good] * (N / (N - 1)), rdz, dtype)
    if weighted:  # through the training step, whose loss takes row weights
        m = fastbp.MLP([C, C], "identity", dtype=dtype)
        w = rng.random(N).astype(dtype) + 0.5
        params = {k: v.copy() for k, v in m.params.items()}
        lm = m.train_step(z[good], labels[good], lr=0.1, sample_weight=w[good])
        lr_ = ref.mlp_train_step(params, z[good], labels[good], 0.1, "identity",
                                 "softmax_cross_entropy", sample_weight=w[good])
        assert_loss_close(lm, lr_, dtype)
        for k in params:
            assert_close(m.params[k], params[k], dtype)


@pytest.mark.parametrize("target", ["labels", "probs"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_minus_inf_logits_get_zero_probability(rng, dtype, target):
    """-inf logits below a finite max are masked classes: probability 0, finite loss."""
    N, C = 6, 41
    z = _logits(rng, N, C, dtype)
    z[:, ::3] = -np.inf
    labels = rng.integers(0, C // 3, N) * 3 + 1  # never a masked class
    t = labels if target == "labels" else np.eye(C, dtype=dtype)[labels]
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    rloss, rdz = ref.softmax_cross_entropy(z, t)
    assert np.isfinite(loss)
    assert_loss_close(loss, rloss, dtype)
    assert (dz[:, ::3] == 0).all()
    assert_close(dz, rdz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_loss_is_python_float(rng, dtype):
    z = _logits(rng, 3, 4, dtype)
    loss, _ = fastbp.softmax_cross_entropy(z, np.array([0, 1, 3]))
    assert type(loss) is float


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_labels_as_list(rng, dtype):
    z = _logits(rng, 3, 4, dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, [0, 3, 1])
    rloss, rdz = ref.softmax_cross_entropy(z, np.array([0, 3, 1]))
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_non_contiguous_inputs(rng, dtype):
    z = _logits(rng, 20, 12, dtype)[::2, ::3]
    labels = rng.integers(0, 4, 20)[::2]
    t = _probs(rng, 4, 10, dtype).T
    for target in (labels, t):
        loss, dz = fastbp.softmax_cross_entropy(z, target)
        rloss, rdz = ref.softmax_cross_entropy(np.ascontiguousarray(z), target)
        assert_loss_close(loss, rloss, dtype)
        assert_close(dz, rdz, dtype)


# ---------------------------------------------------------------------------
# mse
# ---------------------------------------------------------------------------

MSE_SHAPES = [(1,), (17,), (5, 3), (40, 1), (4, 3, 5), (2000, 100)]


@pytest.mark.parametrize("shape", MSE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_reference(rng, dtype, shape):
    y = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    loss, dy = fastbp.mse_loss(y, t)
    rloss, rdy = ref.mse_loss(y, t)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dy, rdy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_out_and_in_place(rng, dtype):
    y = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.standard_normal((6, 4)).astype(dtype)
    rloss, rdy = ref.mse_loss(y, t)
    out = np.full_like(y, 2.0)
    loss, dy = fastbp.mse_loss(y, t, out=out)
    assert dy is out
    assert_close(out, rdy, dtype)
    loss, dy = fastbp.mse_loss(y, t, out=y)
    assert dy is y
    assert_loss_close(loss, rloss, dtype)
    assert_close(y, rdy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_empty_and_nan(rng, dtype):
    loss, dy = fastbp.mse_loss(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert type(loss) is float and math.isnan(loss)
    assert dy.shape == (0, 3) and dy.dtype == np.dtype(dtype)
    y = np.array([1.0, np.nan, 2.0], dtype)
    loss, dy = fastbp.mse_loss(y, np.zeros(3, dtype))
    assert math.isnan(loss)
    np.testing.assert_array_equal(np.isnan(dy), [False, True, False])


# ---- input checks ----
# Bad inputs raise ValueError/TypeError naming what was expected and given.

# softmax_cross_entropy

@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.uint64])
def test_xent_label_too_large(rng, dtype):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "labels must be in [0, 4), got values in [0, 4]"):
        fastbp.softmax_cross_entropy(z, np.array([0, 4, 1], dtype))


def test_xent_negative_label(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "labels must be in [0, 4), got values in [-1, 2]"):
        fastbp.softmax_cross_entropy(z, np.array([0, -1, 2], np.int8))


def test_xent_float_labels(rng):
    z = rng.standard_normal((3, 4))
    with raises(TypeError, "1-D targets must be integer class labels, got dtype float64"):
        fastbp.softmax_cross_entropy(z, np.array([0.0, 1.0, 2.0]))


def test_xent_bool_labels(rng):
    z = rng.standard_normal((3, 4))
    with raises(TypeError, "1-D targets must be integer class labels, got dtype bool"):
        fastbp.softmax_cross_entropy(z, np.array([True, False, True]))


def test_xent_wrong_label_count(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "got 2 labels for 3 rows of logits"):
        fastbp.softmax_cross_entropy(z, np.array([0, 1]))


def test_xent_3d_target(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "got 3-D array of shape (3, 4, 1)"):
        fastbp.softmax_cross_entropy(z, np.ones((3, 4, 1)))
    with raises(ValueError, "got 0-D array of shape ()"):
        fastbp.softmax_cross_entropy(z, np.int64(1))


def test_xent_prob_target_wrong_shape_or_dtype(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "probability targets must have the logits' shape (3, 4), got (3, 5)"):
        fastbp.softmax_cross_entropy(z, np.full((3, 5), 0.2))
    with raises(TypeError, "target has dtype float32 but the inputs are float64"):
        fastbp.softmax_cross_entropy(z, np.full((3, 4), 0.25, np.float32))
    with raises(TypeError, "target must be a float32 or float64 array, got dtype int64"):
        fastbp.softmax_cross_entropy(z, np.zeros((3, 4), np.int64))


def test_xent_zero_classes():
    with raises(ValueError, "logits must have at least one class, got shape (3, 0)"):
        fastbp.softmax_cross_entropy(np.zeros((3, 0)), np.zeros(3, np.int64))


def test_xent_logits_wrong_ndim():
    with raises(ValueError, "logits must be 2-D, got 1-D"):
        fastbp.softmax_cross_entropy(np.zeros(3), np.zeros(3, np.int64))


def test_xent_bad_out(rng):
    z = rng.standard_normal((3, 4))
    with raises(ValueError, "out must have shape (3, 4), got (4, 3)"):
        fastbp.softmax_cross_entropy(z, np.array([0, 1, 2]), out=np.empty((4, 3)))
    t = np.full((3, 4), 0.25)
    with raises(ValueError, "out overlaps target"):
        fastbp.softmax_cross_entropy(z, t, out=t)


# mse_loss

def test_mse_shape_mismatch():
    with raises(ValueError, "target must have the shape of pred (3, 2), got (2, 3)"):
        fastbp.mse_loss(np.ones((3, 2)), np.ones((2, 3)))


def test_mse_0d_pred():
    with raises(ValueError, "pred must have a batch dimension, got a 0-D array"):
        fastbp.mse_loss(np.float64(1.0), np.float64(1.0))


def test_mse_mixed_dtypes():
    with raises(TypeError, "target has dtype float32 but the inputs are float64"):
        fastbp.mse_loss(np.ones(3), np.ones(3, np.float32))


# ---- the NumPy twin (fastbp.reference) ----
# Against numerical gradients (ref.numerical_gradient, float64) and known values.

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


# ---- losses beyond float32's range ---------------------------------------------------------

def test_float32_losses_beyond_float32_range_are_finite_and_agree():
    """The loss is a Python float accumulated in float64 (kernel and reference
    alike): float32 inputs whose loss exceeds 3.4e38 give that loss, not inf
    (before, the kernel said 6.8e38 and the reference inf)."""
    z = np.array([[-3e38, 3e38], [0.0, 1.0]], np.float32)
    labels = np.array([0, 1])
    loss, dz = fastbp.softmax_cross_entropy(z, labels)
    rloss, rdz = ref.softmax_cross_entropy(z, labels)
    assert np.isfinite(loss) and loss == pytest.approx(rloss, rel=1e-6)
    assert loss == pytest.approx((6e38 + np.log1p(np.exp(-1.0))) / 2, rel=1e-6)
    np.testing.assert_allclose(dz, rdz, rtol=1e-6, atol=1e-7)
    y = np.full((2, 3), 1e20, np.float32)
    t = -y
    loss, _ = fastbp.mse_loss(y, t)
    rloss, _ = ref.mse_loss(y, t)
    assert np.isfinite(loss) and loss == pytest.approx(rloss, rel=1e-6)
    assert loss == pytest.approx(0.5 * 6 * (2e20) ** 2 / 2, rel=1e-6)


# ---------------------------------------------------------------------------
# binary cross-entropy (sigmoid + BCE, fused): the kernel
# ---------------------------------------------------------------------------

BCE_SHAPES = [(1, 1), (7, 1), (5, 3), (64, 10), (256, 600)]  # the last goes parallel


def _bce_data(rng, N, C, dtype, scale=4.0):
    z = (scale * rng.standard_normal((N, C))).astype(dtype)
    t = rng.random((N, C))
    t[rng.random((N, C)) < 0.5] = 0.0  # hard 0/1 labels among soft targets
    t[rng.random((N, C)) < 0.3] = 1.0
    return z, t.astype(dtype)


@pytest.mark.parametrize("shape", BCE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_reference(rng, dtype, shape):
    z, t = _bce_data(rng, *shape, dtype)
    z0 = z.copy()
    loss, dz = fastbp.binary_cross_entropy(z, t)
    rloss, rdz = ref.binary_cross_entropy(z, t)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)
    np.testing.assert_array_equal(z, z0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_out_and_in_place(rng, dtype):
    z, t = _bce_data(rng, 9, 4, dtype)
    rloss, rdz = ref.binary_cross_entropy(z, t)
    out = np.full_like(z, 7.0)
    loss, dz = fastbp.binary_cross_entropy(z, t, out=out)
    assert dz is out
    assert_close(out, rdz, dtype)
    loss, dz = fastbp.binary_cross_entropy(z, t, out=z)  # the gradient over the logits
    assert dz is z
    assert_loss_close(loss, rloss, dtype)
    assert_close(z, rdz, dtype)
    with raises(ValueError, "binary_cross_entropy: out overlaps target in memory"):
        fastbp.binary_cross_entropy(z, t, out=t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_empty_batch_is_nan(dtype):
    loss, dz = fastbp.binary_cross_entropy(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert type(loss) is float and math.isnan(loss)
    assert dz.shape == (0, 3) and dz.dtype == np.dtype(dtype)
    assert math.isnan(ref.binary_cross_entropy(np.zeros((0, 3), dtype), np.zeros((0, 3)))[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_finite_and_exact_at_large_logits(dtype):
    """max(z, 0) - t z + log1p(exp(-|z|)): at |z| = 800 exp(-800) is 0 in either
    dtype, so each term is exactly max(z, 0) - t z and sigmoid is exactly 0 or 1
    (the naive -t log s - (1 - t) log(1 - s) gives inf and nan there)."""
    z = np.array([[800.0, -800.0, 800.0, -800.0, 800.0]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0, 0.5]], dtype)
    loss, dz = fastbp.binary_cross_entropy(z, t)
    assert loss == 800.0 + 800.0 + 0.0 + 0.0 + 400.0
    np.testing.assert_array_equal(dz, np.array([[1.0, -1.0, 0.0, 0.0, 0.5]], dtype))
    rloss, rdz = ref.binary_cross_entropy(z, t)
    assert rloss == loss
    np.testing.assert_array_equal(rdz, dz)
    z2 = np.repeat(z, 4, axis=0)
    loss, dz = fastbp.binary_cross_entropy(z2, np.repeat(t, 4, axis=0))
    assert loss == 2000.0 and np.array_equal(dz[0], np.array([0.25, -0.25, 0, 0, 0.125], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_terms_accurate_over_the_logit_range(dtype):
    """The kernel's exp and log1p (csrc/fbp_math.h, fbp_log1p_unit_*) in the
    working precision: the loss of a single logit is its term softplus(z) - t z,
    within 2 units in the last place of the dtype of a double-precision
    math.log1p reference (the terms are sums of non-negative parts), or within
    the smallest normal number where exp(-|z|) underflows the dtype."""
    z = np.concatenate([np.linspace(-60, 60, 1201), [-800.0, -104.0, -88.0, 1e-30, 0.0,
                                                     -1e-30, 88.0, 104.0, 800.0]])
    z = z.astype(dtype)
    eps = float(np.finfo(dtype).eps)
    for tv in (0.0, 0.25, 1.0):
        t = np.full((1, 1), tv, dtype)
        for v in z:
            v64 = float(v)
            want = max(v64, 0.0) - tv * v64 + math.log1p(math.exp(-abs(v64)))
            got, _ = fastbp.binary_cross_entropy(np.full((1, 1), v, dtype), t)
            assert abs(got - want) <= 2 * eps * want + np.finfo(dtype).tiny, (v64, tv, got, want)


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (6, 1)])
def test_bce_reference_matches_numerical(shape):
    rng = np.random.default_rng(6)
    z, t = _bce_data(rng, *shape, np.float64, scale=2.0)
    loss, dz = ref.binary_cross_entropy(z, t)
    s = 1 / (1 + np.exp(-z))
    assert loss == pytest.approx(-np.sum(t * np.log(s) + (1 - t) * np.log(1 - s)) / shape[0],
                                 rel=1e-12)
    num = ref.numerical_gradient(lambda: ref.binary_cross_entropy(z, t)[0], z)
    assert rel_err(dz, num) < NUMGRAD_TOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    z, t = _bce_data(rng, 33, 5, dtype, scale=10.0)
    zt = torch.tensor(z, requires_grad=True)
    want = torch.nn.BCEWithLogitsLoss(reduction="sum")(zt, torch.tensor(t)) / z.shape[0]
    want.backward()
    loss, dz = fastbp.binary_cross_entropy(z, t)
    assert_loss_close(loss, want.item(), dtype)
    assert_close(dz, zt.grad.numpy(), dtype)


def test_bce_input_checks():
    z = np.zeros((4, 3))
    with raises(ValueError, "binary_cross_entropy: target must have the shape of logits (4, 3), "
                            "got (4, 2)"):
        fastbp.binary_cross_entropy(z, np.zeros((4, 2)))
    with raises(TypeError, "binary_cross_entropy: target has dtype float32 but the inputs are "
                           "float64"):
        fastbp.binary_cross_entropy(z, np.zeros((4, 3), np.float32))
    with raises(ValueError, "binary_cross_entropy: logits must be 2-D, got 1-D array"):
        fastbp.binary_cross_entropy(np.zeros(4), np.zeros(4))
    with raises(TypeError, "logits must be a float32 or float64 array, got dtype int64"):
        fastbp.binary_cross_entropy(np.zeros((4, 3), np.int64), z)


# ---------------------------------------------------------------------------
# the model with loss="binary_cross_entropy" (multi-label C > 1, binary C = 1)
# ---------------------------------------------------------------------------

def _bce_model_batch(rng, sizes, dtype, N=9):
    x = rng.standard_normal((N, sizes[0])).astype(dtype)
    t = (rng.random((N, sizes[-1])) < 0.4).astype(dtype)
    t[0] = 0.3  # a soft target too
    return x, t


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("C", [1, 4], ids=["binary", "multilabel"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_model_train_step_matches_reference(dtype, C, opt):
    from fastbp import MLP, optim

    rng = np.random.default_rng(7)
    sizes = [5, 8, 6, C]
    model = MLP(sizes, ["relu", "tanh"], "binary_cross_entropy", dtype=dtype, seed=3)
    params = model.get_params()
    state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}
    o = optim.SGD(0.2, momentum=0.9, weight_decay=0.01) if opt == "sgd" else optim.Adam(0.02)
    d = o.options()
    d["name"] = d.pop("optimizer")
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for s in range(4):
        x, t = _bce_model_batch(rng, sizes, dtype)
        if C == 1 and s % 2:
            t = t[:, 0]  # (N,) targets for one output
        got = model.train_step(x, t, optimizer=o)
        want = ref.mlp_train_step(params, x, t, None, ["relu", "tanh"], "binary_cross_entropy",
                                  optimizer=d, state=state, step=s + 1)
        np.testing.assert_allclose(got, want, rtol=tol)
    for k in params:
        assert_close(model.params[k], params[k], dtype, scale=10)
    assert not np.allclose(params["W1"], MLP(sizes, ["relu", "tanh"], "binary_cross_entropy",
                                             dtype=dtype, seed=3).params["W1"])


@pytest.mark.parametrize("C", [1, 3])
def test_bce_model_loss_and_gradient_match_torch(C):
    torch = pytest.importorskip("torch")
    from fastbp import MLP

    rng = np.random.default_rng(8)
    sizes = [4, 7, C]
    model = MLP(sizes, "sigmoid", "binary_cross_entropy", dtype=np.float64, seed=1)
    x, t = _bce_model_batch(rng, sizes, np.float64, N=11)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    z = torch.sigmoid(torch.tensor(x) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    want = torch.nn.BCEWithLogitsLoss(reduction="sum")(z, torch.tensor(t)) / x.shape[0]
    want.backward()
    assert model.loss(x, t) == pytest.approx(want.item(), rel=1e-12)
    grads = model.gradient(x, t)
    for k in p:
        np.testing.assert_allclose(grads[k], p[k].grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_model_predict_proba_and_score(dtype, C):
    from fastbp import MLP

    rng = np.random.default_rng(9)
    model = MLP([4, 6, C], "tanh", "binary_cross_entropy", dtype=dtype, seed=2, init=1.0)
    x = rng.standard_normal((50, 4)).astype(dtype)
    z = model.predict(x)
    proba = model.predict_proba(x)
    assert proba.shape == (50, C) and proba.dtype == np.dtype(dtype)
    assert_close(proba, ref.sigmoid_forward(z), dtype)
    t = (rng.random((50, C)) < 0.5).astype(dtype)
    right = np.all((proba > 0.5) == (t >= 0.5), axis=1)
    assert 0 < right.mean() < 1  # a score that can be wrong both ways
    assert model.score(x, t) == right.mean()
    if C == 1:
        assert model.score(x, t[:, 0]) == right.mean()


def test_bce_model_fit_and_target_checks():
    from fastbp import MLP

    rng = np.random.default_rng(10)
    X = rng.standard_normal((120, 3))
    y = (X[:, :2] > 0).astype(np.float64)  # two labels, learnable
    model = MLP([3, 16, 2], "tanh", "binary_cross_entropy", dtype=np.float64, seed=0)
    h = model.fit(X, y, epochs=30, batch_size=16, lr=0.5)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert model.score(X, y) > 0.9
    # the running accuracy counts rows whose every output is right, as score does
    assert 0 < h["accuracy"][-1] <= 1 and h["accuracy"][-1] > h["accuracy"][0]
    frozen = model.fit(X, y, epochs=1, batch_size=16, lr=0.0, validation=(X, y))
    assert frozen["accuracy"][0] == frozen["val_accuracy"][0] == model.score(X, y)
    before = model.get_params()
    with raises(ValueError, "fit: binary_cross_entropy targets must be in [0, 1], got values "
                            "in [0.0, 2.0]"):
        model.fit(X, y * 2, epochs=1)
    with raises(ValueError, "fit: targets must have shape (120, 2), got (120, 3)"):
        model.fit(X, np.zeros((120, 3)), epochs=1)
    for k in before:
        assert np.array_equal(model.params[k], before[k])
    binary = MLP([3, 8, 1], "relu", "binary_cross_entropy", dtype=np.float32, seed=0)
    h = binary.fit(X, y[:, 0], epochs=20, batch_size=16, lr=0.5)  # (n,) targets, one output
    assert binary.score(X, y[:, 0]) > 0.9 and h["accuracy"][-1] > 0.8


# ---- Poisson (log link): scikit-learn's MLPRegressor(loss="poisson") ---------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_loss_matches_the_reference_and_sklearn(dtype):
    from sklearn.neural_network._base import poisson_loss as sk_poisson

    rng = np.random.default_rng(5)
    z = rng.standard_normal((37, 3)).astype(dtype)
    t = rng.poisson(np.exp(z)).astype(dtype)
    t[0] = 0                                           # xlogy(0, 0) = 0
    loss, dz = fastbp.poisson_loss(z, t)
    rloss, rdz = ref.poisson_loss(z, t)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert dz.dtype == dtype
    np.testing.assert_allclose(loss, rloss, rtol=tol)
    np.testing.assert_allclose(dz, rdz, rtol=tol * 10, atol=tol / 10)
    # scikit-learn's formula on the means exp(z), in float64
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    np.testing.assert_allclose(loss, sk_poisson(t64, np.exp(z64)), rtol=tol)
    # the gradient is the loss's derivative (central differences, float64)
    if dtype == np.float64:
        e = 1e-6
        for idx in [(0, 0), (5, 2), (36, 1)]:
            zp, zm = z64.copy(), z64.copy()
            zp[idx] += e
            zm[idx] -= e
            num = (ref.poisson_loss(zp, t64)[0] - ref.poisson_loss(zm, t64)[0]) / (2 * e)
            np.testing.assert_allclose(dz[idx], num, rtol=1e-6)
    # a perfect prediction has loss 0
    mu = np.full((4, 2), 3.0, dtype)
    assert abs(fastbp.poisson_loss(np.log(mu), mu)[0]) < 1e-5


def test_poisson_loss_checks_like_the_other_losses():
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"target must have the shape of logmean \(3, 2\)"):
        fastbp.poisson_loss(z, np.zeros((3, 1)))
    with pytest.raises(TypeError, match="float32"):
        fastbp.poisson_loss(z, np.zeros((3, 2), np.float32))
    # exp(0) - 1 * 0 + xlogy(1, 1) - 1 = 0 per output; t = 0: exp(0) = 1 per output
    assert fastbp.poisson_loss(z, np.ones((3, 2)))[0] == 0.0
    assert fastbp.poisson_loss(z, np.zeros((3, 2)))[0] == 2.0
    zz = z.copy()
    loss, out = fastbp.poisson_loss(zz, np.zeros((3, 2)), out=zz)   # in place
    assert out is zz and np.all(zz == 1 / 3)
