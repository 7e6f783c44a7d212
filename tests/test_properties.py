"""Hypothesis property tests: random shapes and data against fastbp.reference."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import fastbp  # noqa: E402
from fastbp import reference as ref  # noqa: E402

from conftest import ACTS, DTYPES, assert_close, assert_loss_close  # noqa: E402

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)

dims = st.tuples(st.integers(0, 40), st.integers(1, 40), st.integers(1, 40))
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)
acts = st.sampled_from(ACTS)
scales = st.sampled_from([1e-3, 1.0, 10.0])


@SETTINGS
@given(shape=dims, dtype=dtypes, act=acts, seed=seeds, bias=st.booleans(), scale=scales)
def test_dense_forward_property(shape, dtype, act, seed, bias, scale):
    N, I, O = shape
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((N, I))).astype(dtype)
    W = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    y = fastbp.dense_forward(x, W, b, act)
    assert_close(y, ref.dense_forward(x, W, b, act), dtype)


@SETTINGS
@given(shape=dims, dtype=dtypes, act=acts, seed=seeds, accumulate=st.booleans(),
       need_dx=st.booleans())
def test_dense_backward_property(shape, dtype, act, seed, accumulate, need_dx):
    N, I, O = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, I)).astype(dtype)
    W = rng.standard_normal((I, O)).astype(dtype)
    y = np.asarray(ref.dense_forward(x, W, None, act), dtype=dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    dW0 = rng.standard_normal((I, O)).astype(dtype)
    db0 = rng.standard_normal(O).astype(dtype)
    kw = dict(dW=dW0.copy(), db=db0.copy(), accumulate=True) if accumulate else {}
    dx, dW, db = fastbp.dense_backward(dy, x, W, y, act, need_dx=need_dx, **kw)
    rdx, rdW, rdb = ref.dense_backward(dy, x, W, y, act)
    if accumulate:
        rdW, rdb = dW0 + rdW, db0 + rdb
    if need_dx:
        assert_close(dx, rdx, dtype)
    else:
        assert dx is None
    assert_close(dW, rdW, dtype)
    assert_close(db, rdb, dtype)


@SETTINGS
@given(N=st.integers(1, 40), C=st.integers(1, 40), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1e-2, 1.0, 30.0]),
       label_dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.int64, np.uint64]),
       probs=st.booleans())
def test_softmax_cross_entropy_property(N, C, dtype, seed, scale, label_dtype, probs):
    rng = np.random.default_rng(seed)
    z = (scale * rng.standard_normal((N, C))).astype(dtype)
    if probs:
        t = rng.dirichlet(np.ones(C), N).astype(dtype)
    else:
        t = rng.integers(0, C, N).astype(label_dtype)
    loss, dz = fastbp.softmax_cross_entropy(z, t)
    rloss, rdz = ref.softmax_cross_entropy(z, t)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dz, rdz, dtype)


@SETTINGS
@given(N=st.integers(1, 40), rest=st.lists(st.integers(0, 6), max_size=2), dtype=dtypes,
       seed=seeds)
def test_mse_property(N, rest, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = (N, *rest)
    y = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    loss, dy = fastbp.mse_loss(y, t)
    rloss, rdy = ref.mse_loss(y, t)
    assert_loss_close(loss, rloss, dtype)
    assert_close(dy, rdy, dtype)
