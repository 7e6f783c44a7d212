"""Sample weights in the native step (csrc/losses.c, MLP.train_step(sample_weight=))
and in fit (sample_weight=, class_weight=): the loss is sum w_r l_r / sum w_r."""

import numpy as np
import pytest

from fastbp import MLP, optim
from fastbp import reference as ref

from conftest import raises

LOSSES = ["softmax_cross_entropy", "mse", "binary_cross_entropy"]
SIZES = [4, 7, 5, 3]


def data(rng, loss, N, dtype=np.float64, C=SIZES[-1]):
    x = rng.standard_normal((N, SIZES[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        return x, rng.integers(0, C, N)
    if loss == "mse":
        return x, rng.standard_normal((N, C)).astype(dtype)
    return x, rng.random((N, C)).astype(dtype)


def model(loss, dtype=np.float64):
    return MLP(SIZES, ["tanh", "relu"], loss, dtype=dtype, seed=4)


def max_rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_same_params(a, b, rtol):
    for k in a.params:
        assert max_rel(a.params[k], b.params[k]) <= rtol, k


OPTS = [dict(optimizer=optim.SGD(0.1, momentum=0.9, weight_decay=0.01)),
        dict(optimizer=optim.Adam(0.01), clip_norm=0.3)]


@pytest.mark.parametrize("kw", OPTS, ids=["momentum-wd", "adam-clip"])
@pytest.mark.parametrize("loss", LOSSES)
def test_integer_weights_equal_duplicated_rows(loss, kw):
    rng = np.random.default_rng(0)
    a, b = model(loss), model(loss)
    for _ in range(3):
        x, t = data(rng, loss, 6)
        w = np.array([1, 2, 0, 3, 1, 1], np.float64)
        idx = np.repeat(np.arange(6), w.astype(int))
        la = a.train_step(x, t, sample_weight=w, **kw)
        lb = b.train_step(x[idx], t[idx], **kw)
        assert la == pytest.approx(lb, rel=1e-12)
    assert_same_params(a, b, 1e-12)
    # the weights matter: unweighted steps end elsewhere
    c = model(loss)
    rng = np.random.default_rng(0)
    for _ in range(3):
        c.train_step(*data(rng, loss, 6), **kw)
    assert max_rel(c.params["W1"], a.params["W1"]) > 1e-6


@pytest.mark.parametrize("loss", LOSSES)
def test_weight_scale_invariance_and_zero_rows(loss):
    """w and 3.7 w give the same step; rows of weight 0 count as absent."""
    rng = np.random.default_rng(1)
    a, b, c = model(loss), model(loss), model(loss)
    for _ in range(3):
        x, t = data(rng, loss, 7)
        w = rng.random(7) + 0.1
        w[[1, 4]] = 0.0
        keep = w > 0
        la = a.train_step(x, t, 0.1, sample_weight=w)
        lb = b.train_step(x, t, 0.1, sample_weight=3.7 * w)
        lc = c.train_step(x[keep], t[keep], 0.1, sample_weight=w[keep])
        assert la == pytest.approx(lb, rel=1e-12) and la == pytest.approx(lc, rel=1e-12)
    assert_same_params(a, b, 1e-12)
    assert_same_params(a, c, 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", LOSSES)
def test_weighted_step_matches_reference(loss, dtype):
    rng = np.random.default_rng(2)
    m = model(loss, dtype)
    params = m.get_params()
    state = {k: {"v": np.zeros_like(v), "s": np.zeros_like(v)} for k, v in params.items()}
    opt = optim.AdamW(0.01)
    d = dict(opt.options())
    d["name"] = d.pop("optimizer")
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for s in range(3):
        x, t = data(rng, loss, 8, dtype)
        w = (rng.random(8) * 3).astype(dtype)
        got = m.train_step(x, t, optimizer=opt, sample_weight=w, clip_value=0.05)
        want = ref.mlp_train_step(params, x, t, None, ["tanh", "relu"], loss, optimizer=d,
                                  state=state, step=s + 1, sample_weight=w, clip_value=0.05)
        assert got == pytest.approx(want, rel=tol)
    for k in params:
        assert max_rel(m.params[k], params[k]) <= tol * 10, k


@pytest.mark.parametrize("w, exc, msg", [
    (np.ones(5), ValueError, "mlp_step: got 5 sample weights for 6 rows of x"),
    (np.ones((6, 1)), ValueError, "mlp_step: sample_weight must be 1-D, got 2-D array"),
    (np.array([1, 1, -1, 1, 1, 1.0]), ValueError,
     "mlp_step: sample_weight must be finite and >= 0, got -1.0 at index 2"),
    (np.array([1, 1, 1, 1, 1, np.nan]), ValueError,
     "mlp_step: sample_weight must be finite and >= 0, got nan at index 5"),
    (np.array([np.inf, 1, 1, 1, 1, 1]), ValueError,
     "mlp_step: sample_weight must be finite and >= 0, got inf at index 0"),
    (np.zeros(6), ValueError, "mlp_step: the sample weights sum to 0"),
    (np.ones(6, np.complex128), TypeError, "sample_weight must be a float32 or float64 array"),
])
def test_train_step_checks_the_weights_before_anything_changes(w, exc, msg):
    rng = np.random.default_rng(3)
    m = model("softmax_cross_entropy")
    x, t = data(rng, "softmax_cross_entropy", 6)
    opt = optim.SGD(0.1, momentum=0.9)
    m.train_step(x, t, optimizer=opt)
    before, state = m.get_params(), [v.copy() for v in m.optimizer_state["vW"]]
    with raises(exc, msg):
        m.train_step(x, t, optimizer=opt, sample_weight=w)
    for k in before:
        assert np.array_equal(m.params[k], before[k]), k
    for a, b in zip(m.optimizer_state["vW"], state):
        assert np.array_equal(a, b)
    assert m.step_ == 1 and m.optimizer_state["t"] == 1


@pytest.mark.parametrize("wdtype", [np.float32, np.int64])
def test_train_step_converts_weights_of_another_dtype(wdtype):
    """The MLP's dtype rule: weights of another real dtype are converted to the
    model's, giving the step that float64 weights give."""
    rng = np.random.default_rng(3)
    x, t = data(rng, "softmax_cross_entropy", 6)
    w = np.array([1, 2, 0, 3, 1, 1])
    a, b = model("softmax_cross_entropy"), model("softmax_cross_entropy")
    la = a.train_step(x, t, 0.1, sample_weight=w.astype(wdtype))
    lb = b.train_step(x, t, 0.1, sample_weight=w.astype(np.float64))
    assert la == lb
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", LOSSES)
def test_fit_sample_weight_is_duplication(loss):
    """One batch per epoch: a weighted fit equals the fit on duplicated rows."""
    rng = np.random.default_rng(4)
    X, y = data(rng, loss, 10)
    w = rng.integers(0, 4, 10).astype(np.float64)
    idx = np.repeat(np.arange(10), w.astype(int))
    a, b = model(loss), model(loss)
    ha = a.fit(X, y, epochs=4, batch_size=64, optimizer=optim.Adam(0.01), sample_weight=w)
    hb = b.fit(X[idx], y[idx], epochs=4, batch_size=64, optimizer=optim.Adam(0.01))
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-12)
    assert_same_params(a, b, 1e-12)


def test_fit_batches_of_zero_weight_add_nothing():
    """A batch whose rows all weigh 0 gives no loss and no gradient (not 0 / 0):
    with plain SGD, the fit equals the fit on the weighted rows alone."""
    rng = np.random.default_rng(5)
    X, y = data(rng, "softmax_cross_entropy", 8)
    w = np.array([0, 0, 0, 0, 1, 2, 1, 1.0])
    a, b = model("softmax_cross_entropy"), model("softmax_cross_entropy")
    ha = a.fit(X, y, epochs=3, batch_size=4, lr=0.1, shuffle=False, sample_weight=w)
    hb = b.fit(X[4:], y[4:], epochs=3, batch_size=4, lr=0.1, shuffle=False, sample_weight=w[4:])
    assert np.isfinite(ha["loss"]).all() and len(ha["loss"]) == 3
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-12)
    assert_same_params(a, b, 1e-12)
    assert a.step_ == 6  # the zero batches were steps (of zero gradient)
    # the same through class_weight: class 0 weighs nothing
    c = model("softmax_cross_entropy")
    yc = np.array([0, 0, 0, 0, 1, 2, 1, 2])
    h = c.fit(X, yc, epochs=2, batch_size=4, lr=0.1, shuffle=False, class_weight={0: 0.0})
    assert np.isfinite(h["loss"]).all() and np.isfinite(c.params["W1"]).all()


def test_class_weight_dict_and_balanced():
    rng = np.random.default_rng(6)
    X, _ = data(rng, "softmax_cross_entropy", 12)
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    sw = rng.random(12) + 0.5
    kw = dict(epochs=2, batch_size=5, optimizer=optim.SGD(0.1, momentum=0.5), seed=3)
    # a dict: unnamed classes weigh 1; it multiplies sample_weight
    a, b = model("softmax_cross_entropy"), model("softmax_cross_entropy")
    a.fit(X, y, class_weight={1: 3.0, 2: 0.5}, sample_weight=sw, **kw)
    b.fit(X, y, sample_weight=sw * np.array([1.0, 3.0, 0.5])[y], **kw)
    assert_same_params(a, b, 0)
    # "balanced": n / (classes present * count), scikit-learn's rule
    per = 12 / (3 * np.bincount(y))
    try:
        from sklearn.utils.class_weight import compute_class_weight
        np.testing.assert_allclose(per, compute_class_weight("balanced", classes=np.arange(3), y=y),
                                   rtol=1e-15)
    except ImportError:
        pass
    a, b = model("softmax_cross_entropy"), model("softmax_cross_entropy")
    a.fit(X, y, class_weight="balanced", **kw)
    b.fit(X, y, sample_weight=per[y], **kw)
    assert_same_params(a, b, 0)
    c = model("softmax_cross_entropy")
    c.fit(X, y, **kw)
    assert max_rel(c.params["W1"], a.params["W1"]) > 1e-6


@pytest.mark.parametrize("kw, msg", [
    (dict(sample_weight=np.ones(11)), "fit: sample_weight must have shape (12,), got (11,)"),
    (dict(sample_weight=-np.ones(12)), "fit: sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.r_[np.ones(11), np.nan]), "fit: sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.zeros(12)), "fit: the sample weights sum to 0"),
    (dict(class_weight={0: 0.0, 1: 0.0, 2: 0.0}), "fit: the sample weights sum to 0"),
    (dict(class_weight={5: 1.0}), "fit: class_weight names class 5, not in [0, 3)"),
    (dict(class_weight={1: -1.0}), "fit: class_weight[1] must be finite and >= 0"),
    (dict(class_weight="balance"), "fit: class_weight must be a dict or 'balanced', got 'balance'"),
    (dict(class_weight={"a": 1.0}), "fit: class_weight keys must be integer class labels, got 'a'"),
    (dict(class_weight={1.5: 1.0}), "fit: class_weight keys must be integer class labels, got 1.5"),
])
def test_fit_weight_errors(kw, msg):
    rng = np.random.default_rng(7)
    X, y = data(rng, "softmax_cross_entropy", 12)
    m = model("softmax_cross_entropy")
    before = m.get_params()
    with raises(ValueError, msg):
        m.fit(X, y, epochs=1, **kw)
    for k in before:
        assert np.array_equal(m.params[k], before[k])
    assert m.step_ == 0 and m.epoch_ == 0


def test_class_weight_needs_labels():
    rng = np.random.default_rng(8)
    X, t = data(rng, "mse", 6)
    with raises(ValueError, "fit: class_weight needs integer class labels"):
        model("mse").fit(X, t, class_weight="balanced")
