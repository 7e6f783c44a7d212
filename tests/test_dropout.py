"""Dropout in the native training step (csrc/dropout.c, csrc/fbp_rng.h): the
masks are a pure function of (seed, step, layer, row, column), so the step is
bitwise the same on any thread count and equals reference.mlp_train_step with
dropout= and drop_key=; evaluation (predict, loss, gradient) never drops.
The step's allocation-freedom with dropout is in test_model.py
(test_train_step_with_every_option_allocates_nothing)."""

import numpy as np
import pytest

import fastbp
from fastbp import MLP, optim
from fastbp import reference as ref
from fastbp.model import epoch_order

from conftest import raises

# N * 600 for N = 256: the dropout pass, the loss and the optimizer have several
# parts, which the suite splits over the threads (conftest.py)
BIG = [20, 600, 300, 5]
N_BIG = 256


def make_data(sizes, N, dtype, seed=0, steps=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((N, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], N))
            for _ in range(steps)]


def params_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def train(threads, dropout=(0.3, 0.5), steps=3, dtype=np.float32):
    old = fastbp.get_num_threads()
    fastbp.set_num_threads(threads)
    try:
        model = MLP(BIG, "relu", dtype=dtype, seed=7, dropout=list(dropout))
        for x, t in make_data(BIG, N_BIG, dtype, steps=steps):
            model.train_step(x, t, optimizer=optim.Adam(1e-3), clip_norm=1.0)
        return model
    finally:
        fastbp.set_num_threads(old)


def test_masks_do_not_depend_on_the_thread_count(restore_threads):
    if fastbp._core.cpu_count() < 2:
        pytest.skip("needs 2 cores for a parallel step")
    one, two = train(1), train(2)
    assert params_equal(one.params, two.params)
    ws1, ws2 = one._engine.ws, two._engine.ws
    for k1, k2 in zip(ws1.keep, ws2.keep):
        assert np.array_equal(k1, k2)
    assert not params_equal(one.params, train(1, dropout=(0.3, 0.4)).params)


def test_threadpoolctl_limits_give_the_same_step():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastbp.get_num_threads() == 1
        one = train(1)
    assert params_equal(one.params, train(fastbp.get_num_threads()).params)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("opt", [lambda: optim.SGD(0.1, momentum=0.9),
                                 lambda: optim.AdamW(0.01, weight_decay=0.1)], ids=["sgd", "adamw"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_matches_reference(loss, opt, dtype, tol):
    sizes, rates, seed = [5, 16, 12, 3], [0.25, 0.5], 11
    acts = ["tanh", "sigmoid"]
    model = MLP(sizes, acts, loss, dtype=dtype, seed=seed, dropout=rates)
    params = model.get_params()
    plain = model.get_params()                     # the reference without dropout
    state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}
    plain_state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}
    rng = np.random.default_rng(3)
    for step in range(4):
        x = rng.standard_normal((9, 5)).astype(dtype)
        t = rng.integers(0, 3, 9) if loss != "mse" else rng.standard_normal((9, 3)).astype(dtype)
        o = opt()
        kw = dict(optimizer=dict(name=o.name, **o.__dict__), step=step + 1, clip_value=0.5)
        got = model.train_step(x, t, optimizer=o, clip_value=0.5)
        want = ref.mlp_train_step(params, x, t, None, acts, loss, state=state, dropout=rates,
                                  drop_key=(seed, step, 0), **kw)
        ref.mlp_train_step(plain, x, t, None, acts, loss, state=plain_state, **kw)
        np.testing.assert_allclose(got, want, rtol=tol)
    for k in params:
        scale = float(np.max(np.abs(params[k])))
        np.testing.assert_allclose(model.params[k], params[k], rtol=tol, atol=tol * scale,
                                   err_msg=k)
    # the comparison sees the masks: without them the parameters end elsewhere
    assert max(float(np.max(np.abs(model.params[k] - plain[k]))) for k in plain) > 1e-3


def test_mask_is_the_reference_mask():
    """The step's keep mask, element by element, is reference.dropout_keep of
    (seed, step, layer, row0 = 0)."""
    sizes, rates = [4, 33, 17, 2], [0.2, 0.6]
    model = MLP(sizes, "relu", dtype=np.float64, seed=123, dropout=rates)
    data = make_data(sizes, 10, np.float64, steps=3)
    for step, (x, t) in enumerate(data):
        model.train_step(x, t, 0.01)
        ws = model._engine.ws
        for layer, p in enumerate(rates):
            want = ref.dropout_keep(123, step, layer, 0, 10, sizes[layer + 1], p)
            assert np.array_equal(ws.keep[layer][:10], want), (step, layer)
        assert ws.keep[2] is None                     # the output layer never drops


def test_keys_are_distinct():
    """Each of seed, step, layer and row changes the mask (a key collision would
    repeat one)."""
    base = ref.dropout_keep(1, 5, 0, 0, 64, 64, 0.5)
    for other in (ref.dropout_keep(2, 5, 0, 0, 64, 64, 0.5),
                  ref.dropout_keep(1, 6, 0, 0, 64, 64, 0.5),
                  ref.dropout_keep(1, 5, 1, 0, 64, 64, 0.5),
                  ref.dropout_keep(1, 5, 0, 64, 64, 64, 0.5)):
        assert 0.4 < np.mean(base != other) < 0.6
    # row0 shifts rows: rows 8.. of a batch are rows 0.. of one that starts at 8
    assert np.array_equal(ref.dropout_keep(1, 5, 0, 0, 64, 64, 0.5)[8:],
                          ref.dropout_keep(1, 5, 0, 8, 56, 64, 0.5))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_is_one_minus_p(p):
    model = MLP(BIG, "relu", dtype=np.float32, seed=2, dropout=[p, 0.0])
    (x, t), = make_data(BIG, N_BIG, np.float32)
    model.train_step(x, t, 0.01)
    keep = model._engine.ws.keep[0][:N_BIG]
    # 153600 draws: the standard deviation of the fraction is below 0.0013
    assert abs(keep.mean() - (1 - p)) < 0.01
    # and no row or column is degenerate
    assert 0 < keep.mean(axis=0).min() and keep.mean(axis=0).max() < 1
    assert 0 < keep.mean(axis=1).min() and keep.mean(axis=1).max() < 1
    hd, h = model._engine.ws.hd[0][:N_BIG], model._engine.ws.h[0][:N_BIG]
    np.testing.assert_array_equal(hd, h * keep * np.float32(1 / (1 - p)))


def test_zero_rate_layers_are_untouched():
    sizes = [6, 10, 8, 3]
    data = make_data(sizes, 12, np.float64, steps=3)
    zero = MLP(sizes, "tanh", dtype=np.float64, seed=1, dropout=[0.0, 0.0])
    plain = MLP(sizes, "tanh", dtype=np.float64, seed=1)
    half = MLP(sizes, "tanh", dtype=np.float64, seed=1, dropout=[0.0, 0.5])
    params = half.get_params()
    for step, (x, t) in enumerate(data):
        zero.train_step(x, t, 0.1, momentum=0.9)
        plain.train_step(x, t, 0.1, momentum=0.9)
        half.train_step(x, t, 0.1)
        ref.mlp_train_step(params, x, t, 0.1, "tanh", "softmax_cross_entropy",
                           dropout=[0.0, 0.5], drop_key=(1, step, 0))
    assert params_equal(zero.params, plain.params)
    assert zero._engine.ws.hd is None              # no dropout buffers at all
    assert half._engine.ws.keep[0] is None and half._engine.ws.hd[0] is None
    for k in params:
        np.testing.assert_allclose(half.params[k], params[k], rtol=1e-12, atol=1e-13)


def test_evaluation_ignores_dropout():
    sizes = [6, 10, 8, 3]
    (x, t), = make_data(sizes, 12, np.float64)
    drop = MLP(sizes, "relu", dtype=np.float64, seed=1, dropout=0.5)
    plain = MLP(sizes, "relu", dtype=np.float64, seed=1)
    drop.train_step(x, t, 0.1)                     # leaves masks in the workspace
    plain.set_params(drop.get_params())
    assert np.array_equal(drop.predict(x), plain.predict(x))
    assert np.array_equal(drop.predict_proba(x), plain.predict_proba(x))
    assert drop.loss(x, t, 0.01) == plain.loss(x, t, 0.01)
    assert drop.score(x, t) == plain.score(x, t)
    gd, gp = drop.gradient(x, t), plain.gradient(x, t)
    assert params_equal(gd, gp)
    # and the training step does drop: its loss is not the plain loss
    assert drop.train_step(x, t, 0.0) != plain.train_step(x, t, 0.0)


def test_fit_with_dropout_is_its_steps():
    """fit's batches carry the model's step counter into the key: fit equals
    train_step over the same batches, bitwise."""
    sizes = [6, 10, 8, 3]
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((50, 6)), rng.integers(0, 3, 50)
    a = MLP(sizes, "relu", dtype=np.float64, seed=4, dropout=[0.3, 0.2])
    b = MLP(sizes, "relu", dtype=np.float64, seed=4, dropout=[0.3, 0.2])
    a.fit(X, y, epochs=2, batch_size=16, optimizer=optim.Adam(0.01), seed=9)
    for epoch in range(2):
        order = epoch_order(50, 9, epoch)
        for s in range(0, 50, 16):
            idx = order[s:s + 16]
            b.train_step(X[idx], y[idx], optimizer=optim.Adam(0.01))
    assert a.step_ == b.step_ == 8
    assert params_equal(a.params, b.params)


def test_dropout_rates_are_checked():
    with raises(ValueError, "MLP: dropout rates must be in [0, 1), got 1.0"):
        MLP([3, 4, 2], dropout=1.0)
    with raises(ValueError, "MLP: dropout rates must be in [0, 1), got -0.1"):
        MLP([3, 4, 2], dropout=[-0.1])
    with raises(ValueError, "MLP: got 1 dropout rates for 2 hidden layers"):
        MLP([3, 4, 4, 2], dropout=[0.5])
    with raises(TypeError, "MLP: dropout must be a rate or a list of rates, got 'high'"):
        MLP([3, 4, 2], dropout="high")
    assert repr(MLP([3, 4, 2], dropout=0.5)).endswith("dropout=0.5)")
