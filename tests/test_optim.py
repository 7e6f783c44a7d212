"""sgd_update, clip_by_value, clip_by_global_norm, global_norm vs reference."""

import math
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import reference as ref

from conftest import DTYPES, assert_close, raises

SIZES = [(1,), (7,), (33, 5), (4, 3, 2), (300_000,)]


def _close_norm(got, want, rtol=1e-12):
    assert type(got) is float, type(got)
    np.testing.assert_allclose(got, want, rtol=rtol)


# ---------------------------------------------------------------------------
# sgd
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_matches_reference(rng, dtype, wd, shape):
    p = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    g0 = g.copy()
    want = ref.sgd_update(p.copy(), g, 0.1, wd)
    got = fastbp.sgd_update(p, g, 0.1, wd)
    assert got is p
    assert_close(p, want, dtype)
    np.testing.assert_array_equal(g, g0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_weight_decay_uses_param(dtype):
    # g == 0: p *= (1 - lr * wd)
    q = np.full(4, 2.0, dtype)
    fastbp.sgd_update(q, np.zeros(4, dtype), 0.5, weight_decay=0.1)
    np.testing.assert_allclose(q, 2.0 * 0.95, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_numpy_scalars_and_ints(rng, dtype):
    p = rng.standard_normal(10).astype(dtype)
    g = rng.standard_normal(10).astype(dtype)
    want = ref.sgd_update(p.copy(), g, 1, 0.0)
    fastbp.sgd_update(p, g, np.int64(1), np.float32(0.0))
    assert_close(p, want, dtype)


# ---------------------------------------------------------------------------
# clip_by_value
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [0.0, 0.5, 2.0, np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value_matches_reference(rng, dtype, limit):
    gs = [rng.standard_normal(s).astype(dtype) for s in [(5,), (7, 3), (300_000,)]]
    want = [g.copy() for g in gs]
    ref.clip_by_value(want, limit)
    assert fastbp.clip_by_value(gs, limit) is None
    for g, w in zip(gs, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value_nan_stays_nan(dtype):
    g = np.array([np.nan, 5.0, -5.0, 0.5, np.inf, -np.inf], dtype)
    fastbp.clip_by_value([g], 1.0)
    np.testing.assert_array_equal(g, [np.nan, 1.0, -1.0, 0.5, 1.0, -1.0])


def test_clip_by_value_single_array_and_mixed_dtypes(rng):
    a = rng.standard_normal(20).astype(np.float32) * 4
    b = rng.standard_normal((4, 5)) * 4
    wa, wb = a.copy(), b.copy()
    ref.clip_by_value([wa, wb], 1.5)
    fastbp.clip_by_value(a, 1.5)  # a bare array is a list of one
    fastbp.clip_by_value([b], 1.5)
    np.testing.assert_array_equal(a, wa)
    np.testing.assert_array_equal(b, wb)


# ---------------------------------------------------------------------------
# clip_by_global_norm / global_norm
# ---------------------------------------------------------------------------

def _grads(rng, dtype, scale=1.0):
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in [(10,), (6, 7), (300_000,)]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e30, 0.0])
def test_global_norm_matches_reference(rng, dtype, scale):
    gs = _grads(rng, dtype, scale)
    _close_norm(fastbp.global_norm(gs), ref.global_norm(gs))


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_scales_when_over(rng, dtype):
    gs = _grads(rng, dtype)
    want = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm(want, 5.0)
    assert rnorm > 5.0
    norm = fastbp.clip_by_global_norm(gs, 5.0)
    _close_norm(norm, rnorm)
    for g, w in zip(gs, want):
        assert_close(g, w, dtype)
    _close_norm(fastbp.global_norm(gs), 5.0, rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_untouched_when_under(rng, dtype):
    gs = _grads(rng, dtype)
    before = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm([g.copy() for g in gs], 1e6)
    norm = fastbp.clip_by_global_norm(gs, 1e6)
    _close_norm(norm, rnorm)
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_global_norm_non_finite_leaves_all_unchanged(rng, dtype, bad):
    gs = _grads(rng, dtype, scale=100.0)       # norm >> max_norm
    gs.append(rng.standard_normal(300_000))     # a float64 one too
    gs[1][2, 3] = bad
    before = [g.copy() for g in gs]
    norm = fastbp.clip_by_global_norm(gs, 1.0)
    assert type(norm) is float
    assert not math.isfinite(norm)
    assert math.isnan(norm) == math.isnan(bad)
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()
    assert math.isnan(fastbp.global_norm(gs)) == math.isnan(bad)


@pytest.mark.parametrize("n", [5, 300_000])
def test_clip_global_norm_huge_float64(rng, n):
    g1 = rng.standard_normal(n) * 1e200         # squares overflow float64
    g2 = rng.standard_normal((3, 4)) * 1e199
    m = 1e200
    want = m * float(np.linalg.norm(np.concatenate([g1 / m, (g2 / m).ravel()])))
    assert math.isfinite(want)
    _close_norm(fastbp.global_norm([g1, g2]), want)
    o1, o2 = g1.copy(), g2.copy()
    norm = fastbp.clip_by_global_norm([g1, g2], 2.0)
    _close_norm(norm, want)
    scale = 2.0 / want
    assert_close(g1, o1 * scale, np.float64)
    assert_close(g2, o2 * scale, np.float64)
    _close_norm(fastbp.global_norm([g1, g2]), 2.0)


def test_clip_global_norm_mixed_dtypes(rng):
    gs = [rng.standard_normal(100).astype(np.float32),
          rng.standard_normal((20, 30)),
          rng.standard_normal(300_000).astype(np.float32)]
    want = [g.copy() for g in gs]
    rnorm = ref.clip_by_global_norm(want, 3.0)
    norm = fastbp.clip_by_global_norm(gs, 3.0)
    _close_norm(norm, rnorm)
    for g, w in zip(gs, want):
        assert_close(g, w, g.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm(rng, dtype):
    gs = _grads(rng, dtype)
    want = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs))
    before = [g.copy() for g in gs]
    _close_norm(fastbp.global_norm(gs), want)
    _close_norm(fastbp.global_norm(gs[0]), float(np.linalg.norm(gs[0].astype(np.float64))))
    assert fastbp.global_norm([]) == 0.0
    for g, b in zip(gs, before):
        assert g.tobytes() == b.tobytes()


def test_clip_global_norm_zero_max_norm(rng):
    gs = _grads(rng, np.float64)
    fastbp.clip_by_global_norm(gs, 0.0)
    for g in gs:
        np.testing.assert_array_equal(g, 0)


# ---- input checks ----
# Bad inputs raise ValueError/TypeError naming what was expected and given.

# sgd_update, clip_by_value, clip_by_global_norm

def test_sgd_non_contiguous_param():
    p = np.ones(10)[::2]
    with raises(ValueError, "param must be C-contiguous, aligned and native-endian"):
        fastbp.sgd_update(p, np.ones(5), 0.1)
    np.testing.assert_array_equal(p, 1.0)


def test_sgd_big_endian_param_rejected():
    p = np.ones(4, ">f8")
    with raises(ValueError, "param must be C-contiguous, aligned and native-endian"):
        fastbp.sgd_update(p, np.ones(4), 0.1)


def test_sgd_list_param():
    with raises(TypeError, "param must be a numpy.ndarray (updated in place), got list"):
        fastbp.sgd_update([1.0, 2.0], np.ones(2), 0.1)


def test_sgd_shape_mismatch():
    with raises(ValueError, "grad must have the shape of param (4,), got (2, 2)"):
        fastbp.sgd_update(np.ones(4), np.ones((2, 2)), 0.1)


def test_sgd_grad_dtype_mismatch():
    with raises(TypeError, "grad has dtype float64 but the inputs are float32"):
        fastbp.sgd_update(np.ones(4, np.float32), np.ones(4), 0.1)


@pytest.mark.parametrize("lr, tname", [("0.1", "str"), (None, "NoneType"), (True, "bool"),
                                       (np.ones(1), "ndarray")])
def test_sgd_lr_not_real(lr, tname):
    p = np.ones(3)
    with raises(TypeError, f"lr must be a real number, got {tname}"):
        fastbp.sgd_update(p, np.ones(3), lr)
    np.testing.assert_array_equal(p, 1.0)


def test_sgd_read_only_param_and_overlap():
    p = np.ones(4)
    p.flags.writeable = False
    with raises(ValueError, "param is read-only"):
        fastbp.sgd_update(p, np.ones(4), 0.1)
    q = np.ones(8)
    with raises(ValueError, "param overlaps grad"):
        fastbp.sgd_update(q[:6], q[2:], 0.1)


def test_clip_value_negative_limit():
    with raises(ValueError, "limit must be >= 0, got -1.0"):
        fastbp.clip_by_value([np.ones(3)], -1.0)
    with raises(ValueError, "limit must be >= 0, got nan"):
        fastbp.clip_by_value([np.ones(3)], float("nan"))


def test_clip_value_non_array_grads():
    with raises(TypeError, "grads[1] must be a numpy.ndarray (clipped in place), got list"):
        fastbp.clip_by_value([np.ones(3), [1.0, 2.0]], 1.0)
    with raises(TypeError, "grads must be a list of arrays, got float"):
        fastbp.clip_by_value(1.5, 1.0)


def test_clip_value_int_arrays():
    with raises(TypeError, "grads[0] must be float32 or float64, got dtype int64"):
        fastbp.clip_by_value([np.ones(3, np.int64)], 1.0)


def test_clip_value_non_contiguous_grad_not_partially_clipped():
    a = np.full(4, 5.0)
    b = np.full(10, 5.0)[::2]
    with raises(ValueError, "grads[1] must be C-contiguous"):
        fastbp.clip_by_value([a, b], 1.0)
    # validation happens before any clipping
    np.testing.assert_array_equal(a, 5.0)


def test_clip_global_norm_negative_max_norm():
    g = np.full(3, 5.0)
    with raises(ValueError, "max_norm must be >= 0, got -0.5"):
        fastbp.clip_by_global_norm([g], -0.5)
    with raises(TypeError, "max_norm must be a real number, got str"):
        fastbp.clip_by_global_norm([g], "1")
    np.testing.assert_array_equal(g, 5.0)


# ---- the NumPy twin (fastbp.reference) ----
# Against explicit formulas and edge cases.

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
